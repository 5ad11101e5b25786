"""Uncertainty for per-user metrics: bootstrap intervals and paired comparisons.

Users are the unit of resampling: two models evaluated on the same users are compared on
their per-user differences, which is far more sensitive than comparing two intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def format_interval(value: Interval | dict | None) -> str:
    """ "mean [low, high]" of an interval or its saved dict (`Interval.to_dict`); "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        value = Interval(value["mean"], value["low"], value["high"], value.get("n", 0))
    return str(value)


def bootstrap_intervals(
    columns: dict[str, np.ndarray],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Means and percentile bootstrap intervals of several per-user columns at once.

    All columns share the same resamples of users (drawn as multinomial counts, so every
    resample's mean is one matrix product); NaN values (users without a relevant video) are
    left out of their column's means.
    """
    names = list(columns)
    if not names:
        return {}
    values = np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in names])
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    n = values.shape[0]
    if n == 0:
        return {c: Interval(float("nan"), float("nan"), float("nan"), 0) for c in names}
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    counts = counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ filled) / (counts @ present)
        alpha = (1 - confidence) / 2
        low, high = np.nanquantile(means, [alpha, 1 - alpha], axis=0)
    out = {}
    for j, name in enumerate(names):
        k = int(present[:, j].sum())
        mean = float(filled[:, j].sum() / k) if k else float("nan")
        out[name] = Interval(mean, float(low[j]), float(high[j]), k)
    return out


def bootstrap_interval(
    values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Mean and percentile bootstrap interval of the mean of one per-user column."""
    return bootstrap_intervals({"x": values}, n_resamples, confidence, seed)["x"]


@dataclass(frozen=True)
class PairedComparison:
    """B minus A on the users both were evaluated on."""

    metric: str
    difference: Interval
    p_value: float  # two-sided Wilcoxon signed-rank test on per-user differences
    b_better: int
    a_better: int
    ties: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["difference"] = self.difference.to_dict()
        return d


def paired_comparison(
    metric: str, a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> PairedComparison:
    """Compare aligned per-user values of two runs (same users, same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs aligned users; got {a.shape} vs {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = b[keep] - a[keep]
    nonzero = diff[diff != 0]
    p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) > 0 else 1.0
    return PairedComparison(
        metric=metric,
        difference=bootstrap_interval(diff, n_resamples=n_resamples, seed=seed),
        p_value=p,
        b_better=int((diff > 0).sum()),
        a_better=int((diff < 0).sum()),
        ties=int((diff == 0).sum()),
    )

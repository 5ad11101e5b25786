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


def bootstrap_interval(
    values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Mean and percentile bootstrap interval of the mean; NaN values (users without a
    relevant video) are left out."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    # Resample in chunks so memory stays bounded for many users.
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(values.mean()), float(low), float(high), n)


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

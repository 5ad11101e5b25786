"""The report's figures: each function takes plain numbers and returns a matplotlib Figure.

Figures are drawn with the non-interactive Agg canvas directly (no pyplot state), so the
report can be built in a headless process or a thread without touching a global backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

WIDTH = 9.0


@dataclass
class Estimate:
    """A value with an optional 95% interval, as one bar or point of a figure."""

    label: str
    mean: float
    low: float | None = None
    high: float | None = None


def png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _errors(estimates: Sequence[Estimate]) -> np.ndarray | None:
    if all(e.low is None for e in estimates):
        return None
    return np.array(
        [
            [e.mean - (e.low if e.low is not None else e.mean) for e in estimates],
            [(e.high if e.high is not None else e.mean) - e.mean for e in estimates],
        ]
    ).clip(min=0)


def _interval_bars(axes, estimates: list[Estimate], color: str) -> None:
    """One horizontal bar per estimate, its 95% interval as an error bar, labelled."""
    positions = np.arange(len(estimates))
    axes.barh(
        positions,
        [e.mean for e in estimates],
        xerr=_errors(estimates),
        capsize=3,
        color=color,
        ecolor="#222222",
    )
    axes.set_yticks(positions, [e.label for e in estimates])


def leaderboard_figure(estimates: Sequence[Estimate], metric: str, title: str) -> Figure:
    """Horizontal bars, best on top, with 95% intervals as error bars."""
    ordered = sorted(estimates, key=lambda e: e.mean)
    figure = Figure(figsize=(WIDTH, 0.45 * len(ordered) + 1.2))
    axes = figure.add_subplot()
    _interval_bars(axes, ordered, "#4C72B0")
    axes.set_xlabel(f"{metric} (mean, 95% interval)")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    return figure


def relative_losses(losses: Sequence[float | None]) -> np.ndarray:
    """Each loss over the first recorded one (missing: NaN). Models minimise different
    objectives (a Mult-VAE's loss is in the hundreds, BPR's below one), so on one axis only
    their shapes compare; a first loss that is not positive leaves them as they are."""
    values = np.array([np.nan if v is None else v for v in losses], dtype=np.float64)
    finite = values[np.isfinite(values)]
    return values / finite[0] if len(finite) and finite[0] > 0 else values


def training_curves_figure(histories: dict[str, list[dict]]) -> Figure:
    """Loss relative to each model's first epoch (left) and every validation score the models
    recorded (right) per epoch."""
    figure = Figure(figsize=(WIDTH + 3, 3.8))
    loss_axes, validation_axes = figure.subplots(1, 2)
    for model, history in histories.items():
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        losses = [h.get("loss") for h in history]
        if any(v is not None for v in losses):
            loss_axes.plot(epochs, relative_losses(losses), marker=".", label=model)
        for key in sorted({k for h in history for k in h if k.startswith("validation")}):
            points = [(e, h[key]) for e, h in zip(epochs, history, strict=True) if key in h]
            validation_axes.plot(*zip(*points, strict=True), marker=".", label=f"{model} {key}")
    loss_axes.set(title="training loss", xlabel="epoch", ylabel="loss / first epoch's loss")
    validation_axes.set(title="validation score", xlabel="epoch")
    for axes in (loss_axes, validation_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    return figure


def popularity_coverage_figure(
    labels: Sequence[str],
    accuracy: Sequence[float],
    popularity: Sequence[float | None],
    coverage: Sequence[float | None],
    metric: str,
    popularity_name: str,
) -> Figure:
    """Accuracy against the mean popularity percentile of the top-K and against catalogue
    coverage: a model that only wins by recommending hits sits top right of the left panel."""
    figure = Figure(figsize=(WIDTH + 3, 4.2))
    panels = figure.subplots(1, 2)
    for axes, xs, xlabel in (
        (panels[0], popularity, f"{popularity_name} (mean popularity percentile of top-K)"),
        (panels[1], coverage, "catalogue coverage@10"),
    ):
        for label, x, y in zip(labels, xs, accuracy, strict=True):
            if x is None:
                continue
            axes.scatter([x], [y], s=40)
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        axes.set(xlabel=xlabel, ylabel=metric)
        axes.grid(alpha=0.3)
    figure.suptitle(f"{metric} vs popularity and coverage")
    return figure


def tuning_history_figure(studies: dict[str, list[tuple[int, float]]], metric: str) -> Figure:
    """Each finished trial's tune-set value (dots) and the best so far (line), per study."""
    figure = Figure(figsize=(WIDTH, 4.2))
    axes = figure.add_subplot()
    for name, trials in studies.items():
        numbers = np.array([n for n, _ in trials])
        values = np.array([v for _, v in trials])
        (line,) = axes.plot(numbers, np.maximum.accumulate(values), label=name)
        axes.scatter(numbers, values, s=14, color=line.get_color(), alpha=0.6)
    axes.set(title=f"tuning history ({metric} on the tune set)", xlabel="trial", ylabel=metric)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def regression_errors_figure(
    mae: Sequence[Estimate], rmse: Sequence[Estimate], title: str
) -> Figure:
    """MAE and RMSE of the watch-ratio predictions, lower is better, with intervals."""
    figure = Figure(figsize=(WIDTH + 3, 0.45 * len(mae) + 1.6))
    for axes, estimates, name in zip(
        figure.subplots(1, 2), (mae, rmse), ("MAE", "RMSE"), strict=True
    ):
        _interval_bars(axes, estimates, "#DD8452")
        axes.set_xlabel(f"{name} (lower is better)")
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle(title)
    return figure

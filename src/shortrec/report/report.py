"""`shortrec report`: one self-contained HTML page (plus its PNGs) about a folder of runs.

The page carries everything inline (figures as base64 data URIs, CSS in the head), so it can
be mailed, attached to an issue or opened offline. Sections whose data does not exist yet
(no tuning study, no regression model) say so instead of disappearing.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import optuna

from shortrec.evaluation.statistics import format_interval
from shortrec.io import atomic_write_bytes, atomic_write_text
from shortrec.report import plots
from shortrec.runs import CONFIG_FILE, Run, list_runs, recommend_from_run

SECTIONS = {
    "leaderboard": "Leaderboard",
    "training-curves": "Training curves",
    "popularity-coverage": "Accuracy vs popularity and coverage",
    "tuning-history": "Tuning history",
    "examples": "Top-10 examples",
    "regression-errors": "Watch-ratio regression errors",
    "simulation": "Feed simulation",
}


@dataclass
class Section:
    key: str
    body: list[str] = field(default_factory=list)  # HTML fragments, in order

    def html(self) -> str:
        return (
            f'<section id="{self.key}">\n<h2>{SECTIONS[self.key]}</h2>\n'
            + "\n".join(self.body)
            + "\n</section>"
        )


@dataclass
class ModelResult:
    """One model's line of the leaderboard and the run that represents it."""

    model: str
    run_dir: Path
    summary: dict  # metric -> {"mean", "low", "high", "n"}
    coverage: float | None
    train_seconds: float | None
    peak_rss_mb: float | None
    paired: dict | None = None  # {"difference": {...}, "p_value": ...} vs the baseline


def _escape(value: object) -> str:
    return html.escape(str(value))


def _shorten(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class _Figures:
    """Writes each figure as a PNG file and returns the <img> that embeds it."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.files: list[Path] = []

    def img(self, name: str, figure, alt: str) -> str:
        data = plots.png_bytes(figure)
        path = self.out_dir / f"{name}.png"
        atomic_write_bytes(path, data)
        self.files.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        return f'<img src="data:image/png;base64,{encoded}" alt="{_escape(alt)}">'


def results_from_benchmark(benchmark: dict, runs_dir: Path) -> list[ModelResult]:
    """Rows of a benchmark; each model is represented by its first seed's run, looked up in
    `runs_dir` and then in the folder the benchmark wrote its runs to."""

    def run_dir(name: str) -> Path:
        here = runs_dir / name
        return here if here.exists() else Path(benchmark["config"]["runs_dir"]) / name

    return [
        ModelResult(
            model=row["model"],
            run_dir=run_dir(row["runs"][0]),
            summary=row["summary"],
            coverage=row.get("coverage@10"),
            train_seconds=row.get("train_seconds"),
            peak_rss_mb=row.get("peak_rss_mb"),
            paired=row.get("paired"),
        )
        for row in benchmark["rows"]
    ]


def results_from_runs(runs_dir: Path, on: str) -> list[ModelResult]:
    """The latest run per model evaluated on `on` (benchmarks are the honest source; this is
    the quick look at a folder of runs)."""
    latest: dict[str, tuple[Path, dict]] = {}
    for run in list_runs(runs_dir):
        metrics = run.metrics
        if on in metrics:
            latest[run.config.model] = (run.path, metrics)
    return [
        ModelResult(
            model=model,
            run_dir=run_dir,
            summary=metrics[on]["summary"],
            coverage=metrics[on]["aggregate"].get("coverage@10"),
            train_seconds=metrics.get("train_seconds"),
            peak_rss_mb=metrics.get("peak_rss_mb"),
        )
        for model, (run_dir, metrics) in latest.items()
    ]


def _estimate(label: str, value: dict | None) -> plots.Estimate | None:
    if value is None:
        return None
    return plots.Estimate(label, value["mean"], value.get("low"), value.get("high"))


def leaderboard_section(
    results: list[ModelResult], metric: str, label: str, baseline: str | None, figures
) -> Section:
    section = Section("leaderboard")
    estimates = [e for r in results if (e := _estimate(r.model, r.summary.get(metric)))]
    section.body.append(f'<p class="note">{_escape(label)}</p>')
    section.body.append(
        figures.img(
            "leaderboard",
            plots.leaderboard_figure(estimates, metric, f"{metric} by model"),
            f"{metric} by model",
        )
    )
    shown = [m for m in ("ndcg@10", "graded_ndcg@10", "recall@20", "mrr") if m != metric]
    header = [
        "model",
        metric,
        *shown,
        "coverage@10",
        f"Δ{metric} vs {baseline or 'baseline'} [95% CI]",
        "p",
        "train s",
        "peak MB",
    ]
    rows = ["<tr>" + "".join(f"<th>{_escape(h)}</th>" for h in header) + "</tr>"]
    ordered = sorted(results, key=lambda r: -r.summary.get(metric, {"mean": float("-inf")})["mean"])
    for r in ordered:
        intervals = [format_interval(r.summary.get(m)) for m in (metric, *shown)]
        paired = r.paired
        cells = [
            *intervals,
            _fmt(r.coverage, 3),
            "-" if paired is None else format_interval(paired["difference"]),
            "-" if paired is None else f"{paired['p_value']:.2g}",
            _fmt(r.train_seconds, 1),
            _fmt(r.peak_rss_mb, 0),
        ]
        rows.append(
            f"<tr><td>{_escape(r.model)}</td>"
            + "".join(f'<td class="num">{_escape(c)}</td>' for c in cells)
            + "</tr>"
        )
    section.body.append("<table>" + "\n".join(rows) + "</table>")
    return section


def training_history(run_dir: Path) -> list[dict] | None:
    """Per-epoch records ({epoch, loss, validation...}) of the model's fit report."""
    if not (run_dir / CONFIG_FILE).exists():  # a benchmark's run that is not here
        return None
    return Run(run_dir).metrics.get("fit", {}).get("history") or None


def training_curves_section(results: list[ModelResult], figures) -> Section:
    section = Section("training-curves")
    histories = {r.model: h for r in results if (h := training_history(r.run_dir))}
    if not histories:
        section.body.append('<p class="empty">No model recorded a per-epoch history.</p>')
        return section
    section.body.append(
        figures.img("training_curves", plots.training_curves_figure(histories), "training curves")
    )
    return section


def popularity_coverage_section(results: list[ModelResult], metric: str, figures) -> Section:
    section = Section("popularity-coverage")
    with_metric = [r for r in results if metric in r.summary]
    popularity_keys = sorted(
        {k for r in with_metric for k in r.summary if k.startswith("popularity@")}
    )
    if not with_metric or not popularity_keys:
        section.body.append('<p class="empty">No evaluation recorded popularity.</p>')
        return section
    key = popularity_keys[-1]
    figure = plots.popularity_coverage_figure(
        [r.model for r in with_metric],
        [r.summary[metric]["mean"] for r in with_metric],
        [r.summary.get(key, {}).get("mean") for r in with_metric],
        [r.coverage for r in with_metric],
        metric,
        key,
    )
    section.body.append(figures.img("popularity_coverage", figure, "accuracy vs popularity"))
    return section


def tuning_studies(storage: str | None) -> dict[str, list[tuple[int, float]]]:
    """Finished trials (number, value) of every study in the storage; {} without one."""
    if storage is None:
        return {}
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        return {}
    studies = {}
    for name in optuna.get_all_study_names(storage=storage):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if trials:
            studies[name] = [(t.number, float(t.value)) for t in trials]
    return studies


def tuning_section(storage: str | None, metric: str, figures) -> Section:
    section = Section("tuning-history")
    studies = tuning_studies(storage)
    if not studies:
        section.body.append('<p class="empty">No tuning study found (run `shortrec tune`).</p>')
        return section
    section.body.append(
        figures.img(
            "tuning_history", plots.tuning_history_figure(studies, metric), "tuning history"
        )
    )
    rows = ["<tr><th>study</th><th>finished trials</th><th>best tune value</th></tr>"]
    for name, trials in studies.items():
        best = max(v for _, v in trials)
        rows.append(
            f"<tr><td>{_escape(name)}</td><td class='num'>{len(trials)}</td>"
            f"<td class='num'>{best:.4f}</td></tr>"
        )
    section.body.append("<table>" + "\n".join(rows) + "</table>")
    return section


def _example_users(run_dir: Path, count: int) -> list[int]:
    """The first `count` users of the matrix the protocol evaluates on (small_matrix for
    kuairec), so every model is shown for the same people."""
    data = Run(run_dir).data()
    source = data.small_matrix if data.small_matrix.height else data.big_matrix
    return sorted(source["user_id"].unique().to_list())[:count]


def examples_section(results: list[ModelResult], users: int, k: int) -> Section:
    section = Section("examples")
    runnable = [r for r in results if (r.run_dir / "model").exists()]
    if not runnable or users < 1:
        section.body.append('<p class="empty">No saved model to recommend with.</p>')
        return section
    user_ids = _example_users(runnable[0].run_dir, users)
    protocol = Run(runnable[0].run_dir).config.experiment.protocol
    matrix = "small" if protocol == "kuairec" else "big"
    tables = {r.model: recommend_from_run(r.run_dir, user_ids, k) for r in runnable}
    section.body.append(
        f'<p class="note">Top-{k} unseen videos from the {matrix} matrix for '
        f"{len(user_ids)} users, each model's representative run.</p>"
    )
    for user in user_ids:
        section.body.append(f'<h3>user {user}</h3>\n<div class="examples">')
        for model, table in tables.items():
            items = []
            for row in table.filter(table["user_id"] == user).iter_rows(named=True):
                caption = _shorten(row.get("caption") or f"video {row['video_id']}")
                category = row.get("first_level_category_name") or ", ".join(
                    row.get("categories") or []
                )
                tags = row.get("tag_names") or row.get("tags")
                detail = " · ".join(
                    str(x)
                    for x in (category or None, f"tags {list(tags)}" if tags else None)
                    if x is not None
                )
                items.append(
                    f"<li>{_escape(caption)} <span class='category'>{_escape(detail)}</span></li>"
                )
            section.body.append(
                f"<div class='model'><b>{_escape(model)}</b><ol>" + "".join(items) + "</ol></div>"
            )
        section.body.append("</div>")
    return section


def regression_results(runs_dir: Path) -> list[tuple[str, dict]]:
    """(label, errors) for every evaluation entry of the latest run per model holding MAE and
    RMSE of watch-ratio predictions."""
    latest: dict[str, tuple[Path, dict]] = {}
    for run in list_runs(runs_dir):
        metrics = run.metrics
        entries = {
            k: v for k, v in metrics.items() if isinstance(v, dict) and "mae" in v and "rmse" in v
        }
        if entries:
            latest[run.config.model] = (run.path, entries)
    return [
        (f"{model} ({key})", errors)
        for model, (_, entries) in latest.items()
        for key, errors in entries.items()
    ]


def _error_estimate(label: str, errors: dict, name: str) -> plots.Estimate:
    value = errors[name]
    if isinstance(value, dict):  # an Interval dict
        return plots.Estimate(label, value["mean"], value.get("low"), value.get("high"))
    interval = errors.get(f"{name}_interval")
    low, high = interval if interval else (None, None)
    return plots.Estimate(label, float(value), low, high)


def regression_section(runs_dir: Path, figures) -> Section:
    section = Section("regression-errors")
    results = regression_results(runs_dir)
    if not results:
        section.body.append('<p class="empty">No run recorded watch-ratio regression errors.</p>')
        return section
    capped = all("mae_capped" in errors for _, errors in results)
    suffix = "_capped" if capped else ""
    mae = [_error_estimate(label, errors, f"mae{suffix}") for label, errors in results]
    rmse = [_error_estimate(label, errors, f"rmse{suffix}") for label, errors in results]
    title = "watch-ratio errors" + (" (ratio capped)" if capped else "")
    section.body.append(
        figures.img("regression_errors", plots.regression_errors_figure(mae, rmse, title), title)
    )
    return section


def simulation_section(runs_dir: Path, figures) -> Section:
    """`shortrec simulate` results: watch time and sessions per model, beside offline NDCG."""
    from shortrec.leaderboard import simulation_cells, simulation_header, simulation_rows

    section = Section("simulation")
    rows, on = [], None
    for on in ("test", "tune"):
        try:
            rows = simulation_rows(runs_dir, on, "watch_seconds", "popular")
            break
        except ValueError:
            continue
    if not rows:
        section.body.append('<p class="empty">No run was simulated (run `shortrec simulate`).</p>')
        return section
    section.body.append(
        f'<p class="note">Every {on} user of small_matrix watches a feed from each run: '
        "means over users with 95% bootstrap intervals, paired difference in watch time against "
        "popularity, and against the same model without live events (views not posted back, "
        "so it scores every step from the big_matrix history alone).</p>"
    )
    estimates = [e for r in rows if (e := _estimate(r["model"], r["summary"].get("watch_seconds")))]
    section.body.append(
        figures.img(
            "simulation",
            plots.leaderboard_figure(estimates, "watch seconds", "watch time per session"),
            "watch time per session by model",
        )
    )
    header = simulation_header(on, "watch_seconds", "popular")
    lines = ["<tr>" + "".join(f"<th>{_escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        model, *cells = simulation_cells(r, "watch_seconds")
        lines.append(
            f"<tr><td>{_escape(model)}</td>"
            + "".join(f'<td class="num">{_escape(c)}</td>' for c in cells)
            + "</tr>"
        )
    section.body.append("<table>" + "\n".join(lines) + "</table>")
    return section


def build_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    benchmark_dir: str | Path | None = None,
    storage: str | None = None,
    metric: str = "ndcg@10",
    example_users: int = 3,
    k: int = 10,
) -> Path:
    """Write `index.html` and the figures' PNGs into `out_dir`; returns the HTML path."""
    from shortrec.benchmark import read_benchmark
    from shortrec.tuning import default_storage

    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    figures = _Figures(out_dir)
    baseline = None
    if benchmark_dir is not None:
        benchmark = read_benchmark(benchmark_dir)
        results = results_from_benchmark(benchmark, runs_dir)
        baseline = benchmark["baseline"]
        seeds = benchmark["config"]["seeds"]
        label = (
            f"Test set, full ranking; mean over {seeds} seeds with 95% bootstrap intervals "
            f"over users; paired difference against the best baseline ({baseline})."
        )
    else:
        on = "test" if results_from_runs(runs_dir, "test") else "tune"
        results = results_from_runs(runs_dir, on)
        label = (
            f"{on} set, latest run of each model with 95% bootstrap intervals over users "
            "(run `shortrec benchmark` for seed-averaged, tuned results)."
        )
    if not results:
        raise ValueError(
            f"no evaluated run in {runs_dir}; train models (`shortrec train`) or run "
            "`shortrec benchmark` first"
        )
    sections = [
        leaderboard_section(results, metric, label, baseline, figures),
        training_curves_section(results, figures),
        popularity_coverage_section(results, metric, figures),
        tuning_section(storage or default_storage(runs_dir), metric, figures),
        examples_section(results, example_users, k),
        regression_section(runs_dir, figures),
        simulation_section(runs_dir, figures),
    ]
    template = Template(resources.files("shortrec.report").joinpath("template.html").read_text())
    page = template.substitute(
        title="shortrec report",
        subtitle=_escape(
            f"{len(results)} models · runs from {runs_dir} · generated "
            f"{time.strftime('%Y-%m-%d %H:%M')}"
        ),
        nav="".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS.items()),
        sections="\n".join(s.html() for s in sections),
    )
    path = out_dir / "index.html"
    atomic_write_text(path, page)
    return path

"""The benchmark: every model's chosen configuration, several seeds, the test set opened once.

Per model the hyperparameters are the best of its tuning study (selected on the tune set) or
the defaults; each seed trains one run in a fresh process (so its peak memory is its own) and
evaluates it on tune and, once, on test. Seeds are combined per user before anything else:
the interval is a bootstrap over users of the seed-averaged per-user values, and the paired
difference against the best baseline is taken on those same users.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from rich.table import Table

from shortrec.evaluation.statistics import (
    bootstrap_interval,
    format_interval,
    paired_comparison,
)
from shortrec.io import atomic_write_text
from shortrec.models import REGISTRY, default_models, model_class
from shortrec.runs import Experiment, Run, RunConfig, apply_preset, as_run, load_data, train_run
from shortrec.tracking import open_tracker
from shortrec.tuning import TuneConfig, best_hyperparameters, load_study, tune

BASELINES = ("popular", "recent-popular")
SHOWN_METRICS = ("ndcg@10", "graded_ndcg@10", "recall@20", "mrr")
BENCHMARK_FILE = "benchmark.json"


@dataclass
class BenchmarkConfig:
    """`preset`: a named preset of the models that have one (their hyperparameters, unless
    a study's best replaces them); the run options it names (protocol, like rule) become the
    benchmark's, except those listed in `keep`. The test set is always ranked in full."""

    experiment: Experiment
    models: list[str] = field(default_factory=default_models)
    seeds: int = 3
    metric: str = "ndcg@10"
    runs_dir: str = "runs"
    out_dir: str = "benchmark"
    from_study: bool = True  # best hyperparameters of each model's study, when it exists
    storage: str | None = None  # tuning database; None -> sqlite:///<runs_dir>/tuning.db
    tune_trials: int = 0  # > 0: first tune every model with this same budget
    tune_timeout: float | None = None
    isolate: bool = True  # one fresh process per run: honest peak memory
    track: str | None = None  # "mlflow[:URI]": every run (and tuning trial) mirrored
    preset: str | None = None
    keep: tuple[str, ...] = ()
    preset_params: dict[str, dict] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.experiment, dict):
            self.experiment = Experiment(**self.experiment)
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        if not self.preset:
            return
        having = [m for m in self.models if self.preset in model_class(m).presets()]
        if not having:
            raise ValueError(f"none of the models {self.models} has a preset {self.preset!r}")
        for model in having:
            params, self.experiment, _ = apply_preset(
                model, self.preset, {}, self.experiment, keep=(*self.keep, "sampled")
            )
            self.preset_params[model] = params


def _with_baselines(models: list[str]) -> list[str]:
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(sorted(REGISTRY))}")
    return list(dict.fromkeys([*models, *BASELINES]))


def _tune_config(config: BenchmarkConfig, model: str) -> TuneConfig:
    return TuneConfig(
        model=model,
        experiment=config.experiment,
        trials=config.tune_trials,
        timeout=config.tune_timeout,
        storage=config.storage,
        metric=config.metric,
        runs_dir=config.runs_dir,
        track=config.track,
    )


def chosen_hyperparameters(config: BenchmarkConfig, model: str) -> tuple[dict, str]:
    """(hyperparameters, where they came from: the study's best trial, the preset or the
    defaults)."""
    if config.from_study:
        study = load_study(_tune_config(config, model))
        best = best_hyperparameters(study) if study is not None else None
        if best is not None:
            return best, f"study {study.study_name}"
    if model in config.preset_params:
        return dict(config.preset_params[model]), f"preset {config.preset}"
    return {}, "defaults"


def _train_and_test(config_json: str, runs_dir: str, track: str | None = None) -> str:
    """One benchmark run: fit, evaluate on tune, open test once. Top-level so a fresh
    process can run it."""
    run = train_run(
        RunConfig.from_json(config_json), runs_dir, evaluate_on=("tune", "test"), progress=False,
        track=track, track_tags={"benchmark": "1"},
    )  # fmt: skip
    return str(run.path)


def train_runs(
    configs: list[RunConfig], runs_dir: str, isolate: bool = True, track: str | None = None
) -> list[Run]:
    """Train and test each configuration; `isolate` gives each run a process of its own."""
    if not isolate:
        return [Run(_train_and_test(c.to_json(), runs_dir, track)) for c in configs]
    context = multiprocessing.get_context("spawn")
    run_dirs = []
    for config in configs:  # one process per run: ru_maxrss is that run's peak alone
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            job = pool.submit(_train_and_test, config.to_json(), runs_dir, track)
            run_dirs.append(Run(job.result()))
    return run_dirs


def seed_averaged(runs: list[Run | Path], which: str) -> pl.DataFrame:
    """Per-user metrics averaged over the seeds' runs (users evaluated in every run)."""
    frames = [as_run(run).per_user(which) for run in runs]
    metrics = [c for c in frames[0].columns if c != "user_id"]
    stacked = pl.concat([f.select("user_id", *metrics) for f in frames])
    return (
        stacked.group_by("user_id")
        .agg(pl.len().alias("_runs"), *(pl.col(m).mean() for m in metrics))
        .filter(pl.col("_runs") == len(frames))
        .drop("_runs")
        .sort("user_id")
    )


def _mean_of(runs: list[Run], path: tuple[str, ...]) -> float | None:
    values = []
    for run in runs:
        value = run.metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(float(value))
    return float(np.mean(values)) if values else None


def _model_row(model: str, params: dict, source: str, run_dirs: list[Run], metric: str) -> dict:
    test = seed_averaged(run_dirs, "test")
    metrics = [c for c in test.columns if c != "user_id"]
    peaks = [r.metrics.get("peak_rss_mb") for r in run_dirs]
    return {
        "model": model,
        "hyperparameters": params,
        "source": source,
        "seeds": len(run_dirs),
        "runs": [r.name for r in run_dirs],
        "users": test.height,
        "tune": _mean_of(run_dirs, ("tune", "summary", metric, "mean")),
        "summary": {m: bootstrap_interval(test[m].to_numpy()).to_dict() for m in metrics},
        "coverage@10": _mean_of(run_dirs, ("test", "aggregate", "coverage@10")),
        "train_seconds": _mean_of(run_dirs, ("train_seconds",)),
        "peak_rss_mb": max((p for p in peaks if p is not None), default=None),
        "paired": None,
    }


def _paired(base: pl.DataFrame, other: pl.DataFrame, metric: str) -> dict:
    joined = base.select("user_id", metric).join(
        other.select("user_id", metric), on="user_id", suffix="_model"
    )
    comparison = paired_comparison(
        metric, joined[metric].to_numpy(), joined[f"{metric}_model"].to_numpy()
    )
    return comparison.to_dict()


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Tune (if asked), train every model with every seed, test once, aggregate, write
    `benchmark.json` and `benchmark.md` into `out_dir`; returns the benchmark as a dict."""
    models = _with_baselines(config.models)
    tracker = open_tracker(config.track)  # fails before any training when MLflow is missing
    track = None if tracker is None else str(tracker.spec)  # the URI resolved here, once
    if config.tune_trials > 0:
        data = load_data(config.experiment.resolved_data_dir)
        for model in models:  # the same budget for every model
            tune(_tune_config(config, model), data=data)
    chosen = {model: chosen_hyperparameters(config, model) for model in models}
    configs = [
        RunConfig(
            model=model, experiment=config.experiment, params=dict(chosen[model][0]), seed=seed
        )  # fmt: skip
        for model in models
        for seed in range(config.seeds)
    ]
    run_dirs = train_runs(configs, config.runs_dir, config.isolate, track)
    by_model = {
        m: run_dirs[i * config.seeds : (i + 1) * config.seeds] for i, m in enumerate(models)
    }
    rows = [_model_row(m, *chosen[m], by_model[m], config.metric) for m in models]
    baseline = max((r for r in rows if r["model"] in BASELINES), key=lambda r: r["tune"] or 0.0)
    base_users = seed_averaged(by_model[baseline["model"]], "test")
    for row in rows:
        if row is not baseline:
            row["paired"] = _paired(
                base_users, seed_averaged(by_model[row["model"]], "test"), config.metric
            )
    rows.sort(key=lambda r: -r["summary"].get(config.metric, {"mean": -np.inf})["mean"])
    result = {
        "config": dataclasses.asdict(config) | {"models": models},
        "metric": config.metric,
        "baseline": baseline["model"],
        "rows": rows,
    }
    out = Path(config.out_dir)
    atomic_write_text(out / BENCHMARK_FILE, json.dumps(result, indent=2, default=float))
    atomic_write_text(out / "benchmark.md", benchmark_markdown(result))
    return result


def read_benchmark(directory: str | Path) -> dict:
    path = Path(directory) / BENCHMARK_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no benchmark ({BENCHMARK_FILE} missing)")
    return json.loads(path.read_text())


def _cells(row: dict, metrics: tuple[str, ...]) -> list[str]:
    paired = row["paired"]
    seconds, peak = row["train_seconds"], row["peak_rss_mb"]
    return [
        row["model"],
        str(row["seeds"]),
        str(row["users"]),
        *(format_interval(row["summary"].get(m)) for m in metrics),
        "-" if row["coverage@10"] is None else f"{row['coverage@10']:.3f}",
        "-" if paired is None else format_interval(paired["difference"]),
        "-" if paired is None else f"{paired['p_value']:.2g}",
        "-" if seconds is None else f"{seconds:.1f}",
        "-" if peak is None else f"{peak:.0f}",
    ]


def _header(result: dict) -> list[str]:
    return [
        "model",
        "seeds",
        "users",
        *SHOWN_METRICS,
        "coverage@10",
        f"Δ{result['metric']} vs {result['baseline']} [95% CI]",
        "p",
        "train s",
        "peak MB",
    ]


def benchmark_markdown(result: dict) -> str:
    header = _header(result)
    lines = [
        f"Test set, full ranking, mean over seeds with 95% bootstrap intervals over users; "
        f"paired differences against the best baseline on tune ({result['baseline']}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cells(r, SHOWN_METRICS)) + " |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def benchmark_table(result: dict) -> Table:
    table = Table(title=f"benchmark on test (full ranking), sorted by {result['metric']}")
    for column in _header(result):
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(*_cells(row, SHOWN_METRICS))
    return table

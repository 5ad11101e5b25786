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

from shortrec.data.labels import LikeRule
from shortrec.evaluation.statistics import (
    bootstrap_interval,
    format_interval,
    paired_comparison,
)
from shortrec.io import atomic_write_text
from shortrec.models import REGISTRY
from shortrec.runs import RunConfig, load_data, per_user_metrics, read_metrics, train_run
from shortrec.tuning import TuneConfig, best_hyperparameters, load_study, tune

BASELINES = ("popular", "recent-popular")
SHOWN_METRICS = ("ndcg@10", "graded_ndcg@10", "recall@20", "mrr")
EXCLUDED_BY_DEFAULT = ("oracle",)  # needs a synthetic world's ground truth
BENCHMARK_FILE = "benchmark.json"


def default_models() -> list[str]:
    return [name for name in REGISTRY if name not in EXCLUDED_BY_DEFAULT]


@dataclass
class BenchmarkConfig:
    data_dir: str
    models: list[str] = field(default_factory=default_models)
    protocol: str = "kuairec"
    like_rule: LikeRule = field(default_factory=LikeRule)
    seeds: int = 3
    metric: str = "ndcg@10"
    runs_dir: str = "runs"
    out_dir: str = "benchmark"
    from_study: bool = True  # best hyperparameters of each model's study, when it exists
    storage: str | None = None  # tuning database; None -> sqlite:///<runs_dir>/tuning.db
    tune_trials: int = 0  # > 0: first tune every model with this same budget
    tune_timeout: float | None = None
    isolate: bool = True  # one fresh process per run: honest peak memory


def _with_baselines(models: list[str]) -> list[str]:
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(sorted(REGISTRY))}")
    return list(dict.fromkeys([*models, *BASELINES]))


def _tune_config(config: BenchmarkConfig, model: str) -> TuneConfig:
    return TuneConfig(
        model=model,
        data_dir=config.data_dir,
        protocol=config.protocol,
        like_rule=config.like_rule,
        trials=config.tune_trials,
        timeout=config.tune_timeout,
        storage=config.storage,
        metric=config.metric,
        runs_dir=config.runs_dir,
    )


def chosen_hyperparameters(config: BenchmarkConfig, model: str) -> tuple[dict, str]:
    """(hyperparameters, where they came from: the study's best trial or the defaults)."""
    if config.from_study:
        study = load_study(_tune_config(config, model))
        best = best_hyperparameters(study) if study is not None else None
        if best is not None:
            return best, f"study {study.study_name}"
    return {}, "defaults"


def _train_and_test(config_json: str, runs_dir: str) -> str:
    """One benchmark run: fit, evaluate on tune, open test once. Top-level so a fresh
    process can run it."""
    run_dir = train_run(
        RunConfig.from_json(config_json), runs_dir, evaluate_on=("tune", "test"), progress=False
    )
    return str(run_dir)


def train_runs(configs: list[RunConfig], runs_dir: str, isolate: bool = True) -> list[Path]:
    """Train and test each configuration; `isolate` gives each run a process of its own."""
    if not isolate:
        return [Path(_train_and_test(c.to_json(), runs_dir)) for c in configs]
    context = multiprocessing.get_context("spawn")
    run_dirs = []
    for config in configs:  # one process per run: ru_maxrss is that run's peak alone
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            run_dirs.append(Path(pool.submit(_train_and_test, config.to_json(), runs_dir).result()))
    return run_dirs


def seed_averaged(run_dirs: list[Path], which: str) -> pl.DataFrame:
    """Per-user metrics averaged over the seeds' runs (users evaluated in every run)."""
    frames = [per_user_metrics(run, which) for run in run_dirs]
    metrics = [c for c in frames[0].columns if c != "user_id"]
    stacked = pl.concat([f.select("user_id", *metrics) for f in frames])
    return (
        stacked.group_by("user_id")
        .agg(pl.len().alias("_runs"), *(pl.col(m).mean() for m in metrics))
        .filter(pl.col("_runs") == len(frames))
        .drop("_runs")
        .sort("user_id")
    )


def _mean_of(run_dirs: list[Path], path: tuple[str, ...]) -> float | None:
    values = []
    for run in run_dirs:
        value = read_metrics(run)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(float(value))
    return float(np.mean(values)) if values else None


def _model_row(model: str, params: dict, source: str, run_dirs: list[Path], metric: str) -> dict:
    test = seed_averaged(run_dirs, "test")
    metrics = [c for c in test.columns if c != "user_id"]
    peaks = [read_metrics(r).get("peak_rss_mb") for r in run_dirs]
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
    if config.tune_trials > 0:
        data = load_data(config.data_dir)
        for model in models:  # the same budget for every model
            tune(_tune_config(config, model), data=data)
    chosen = {model: chosen_hyperparameters(config, model) for model in models}
    configs = [
        RunConfig(
            model=model,
            params=dict(chosen[model][0]),
            data_dir=config.data_dir,
            protocol=config.protocol,
            like_rule=config.like_rule,
            seed=seed,
        )
        for model in models
        for seed in range(config.seeds)
    ]
    run_dirs = train_runs(configs, config.runs_dir, config.isolate)
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

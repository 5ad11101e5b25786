"""`shortrec tune MODELS` (Optuna studies on the tune set) and `shortrec benchmark`."""

from __future__ import annotations

from pathlib import Path

import typer

from shortrec.cli.app import app
from shortrec.cli.options import (
    data_option,
    given,
    like_rule_option,
    preset_option,
    protocol_option,
    runs_dir_option,
    storage_option,
    track_option,
    user_errors,
)
from shortrec.data.labels import LikeRule

# A study's errors a user can act on: a bad metric name (KeyError), a broken database.
STUDY_ERRORS = (KeyError, RuntimeError)


@app.command("tune")
def tune_command(
    ctx: typer.Context,
    models: list[str] = typer.Argument(
        ..., help="Models to tune, or 'all' (every model but the reference ones: the oracle)."
    ),
    data: Path = data_option(),
    protocol: str = protocol_option(),
    like_rule: LikeRule = like_rule_option(),
    preset: str | None = preset_option(),
    trials: int = typer.Option(
        20, help="Budget: finished trials per model study, over all workers and restarts."
    ),
    timeout: float | None = typer.Option(None, help="Seconds per model for this invocation."),
    storage: str | None = storage_option(
        "Optuna database URL shared by workers "
        "(default sqlite:///RUNS_DIR/tuning.db; e.g. postgresql://...)."
    ),
    study_name: str | None = typer.Option(
        None, help="Study name (default MODEL-DATA-PROTOCOL); one model only."
    ),
    metric: str = typer.Option(
        "ndcg@10", help="Tune-set metric to maximise (the test set is never used)."
    ),
    runs_dir: Path = runs_dir_option(help="Where trial runs (and the default database) go."),
    seed: int = typer.Option(0, help="Seed of the sampler and of every trial's model."),
    track: str | None = track_option(),
) -> None:
    """Search hyperparameters on the tune set with Optuna; rerun the same command to resume."""
    from shortrec.runs import Experiment
    from shortrec.tuning import study_summary, tune_models

    with user_errors(*STUDY_ERRORS):
        studies = tune_models(
            models, Experiment(str(data), protocol, like_rule), trials=trials, timeout=timeout,
            storage=storage, study_name=study_name, metric=metric, runs_dir=str(runs_dir),
            seed=seed, preset=preset, keep=given(ctx, "protocol", "like_rule"), track=track,
        )  # fmt: skip
        for study in studies:
            typer.echo(study_summary(study, metric))


@app.command("benchmark")
def benchmark_command(
    ctx: typer.Context,
    data: Path = data_option("Prepared release dir."),
    models: str | None = typer.Option(
        None,
        help="Comma-separated models (default: all but the reference ones, the oracle); "
        "popular and recent-popular are always added.",
    ),
    seeds: int = typer.Option(3, help="Runs per model, seeds 0..N-1."),
    protocol: str = protocol_option(),
    like_rule: LikeRule = like_rule_option(),
    preset: str | None = preset_option(),
    metric: str = typer.Option("ndcg@10", help="Metric to rank by and pair on."),
    runs_dir: Path = runs_dir_option(help="Where runs go."),
    out: Path = typer.Option(Path("benchmark"), help="Folder for benchmark.md and benchmark.json."),
    from_study: bool = typer.Option(
        True,
        "--from-study/--defaults",
        help="Best hyperparameters of each model's study (when it exists), or the defaults.",
    ),
    storage: str | None = storage_option(),
    tune_trials: int = typer.Option(
        0, help="First tune every model with this same budget of trials."
    ),
    tune_timeout: float | None = typer.Option(
        None, help="Tuning seconds per model (with --tune-trials)."
    ),
    isolate: bool = typer.Option(
        True,
        "--isolate/--no-isolate",
        help="Train each run in a fresh process, so peak memory is its own.",
    ),
    track: str | None = track_option(),
) -> None:
    """Train every model's chosen configuration with several seeds; evaluate test once."""
    from rich.console import Console

    from shortrec.benchmark import BenchmarkConfig, benchmark_table, run_benchmark
    from shortrec.models import default_models
    from shortrec.runs import Experiment

    with user_errors(*STUDY_ERRORS):
        config = BenchmarkConfig(
            experiment=Experiment(str(data), protocol, like_rule),
            models=[m.strip() for m in (models or "").split(",") if m.strip()] or default_models(),
            seeds=seeds, metric=metric, runs_dir=str(runs_dir), out_dir=str(out),
            from_study=from_study, storage=storage, tune_trials=tune_trials,
            tune_timeout=tune_timeout, isolate=isolate, preset=preset,
            keep=given(ctx, "protocol", "like_rule"), track=track,
        )  # fmt: skip
        result = run_benchmark(config)
    Console(width=240).print(benchmark_table(result))
    typer.echo(f"wrote {out / 'benchmark.md'} and {out / 'benchmark.json'}")

"""Benchmark: chosen configurations, several seeds, test opened once, one honest table."""

from __future__ import annotations

import json

import numpy as np
import optuna
import polars as pl
import pytest
from tiny_release import write_tiny_release
from typer.testing import CliRunner

from shortrec.benchmark import (
    BenchmarkConfig,
    benchmark_markdown,
    read_benchmark,
    run_benchmark,
    seed_averaged,
    train_runs,
)
from shortrec.cli import app
from shortrec.runs import Experiment, Run, RunConfig
from shortrec.tuning import TuneConfig, best_hyperparameters, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    world = write_tiny_release(root / "world")
    runs = root / "runs"
    study = tune(
        TuneConfig(
            model="recent-popular", experiment=Experiment(str(world)), runs_dir=str(runs), trials=3
        )
    )
    config = BenchmarkConfig(
        experiment=Experiment(str(world)),
        models=["ease", "random"],
        seeds=2,
        runs_dir=str(runs),
        out_dir=str(root / "out"),
        isolate=False,
    )
    return run_benchmark(config), study, root


def _row(result, model):
    return next(r for r in result["rows"] if r["model"] == model)


def test_every_model_and_both_baselines_run_with_every_seed(benchmark):
    result, _, root = benchmark
    assert {r["model"] for r in result["rows"]} == {"ease", "random", "popular", "recent-popular"}
    for row in result["rows"]:
        assert row["seeds"] == 2 and len(row["runs"]) == 2
        seeds = {
            json.loads((root / "runs" / run / "config.json").read_text())["seed"]
            for run in row["runs"]
        }
        assert seeds == {0, 1}
        for run in row["runs"]:
            metrics = Run(root / "runs" / run).metrics
            assert metrics["test"]["mode"] == "full-ranking"
            assert row["train_seconds"] is not None and row["peak_rss_mb"] > 0


def test_rows_are_sorted_and_ease_beats_the_best_baseline(benchmark):
    result, _, _ = benchmark
    means = [r["summary"]["ndcg@10"]["mean"] for r in result["rows"]]
    assert means == sorted(means, reverse=True)
    tune_of = {r["model"]: r["tune"] for r in result["rows"]}
    assert result["baseline"] == max(("popular", "recent-popular"), key=tune_of.get)
    ease = _row(result, "ease")
    assert ease["paired"]["difference"]["mean"] > 0
    assert ease["paired"]["difference"]["low"] > 0  # the planted taste groups are learnable
    assert _row(result, result["baseline"])["paired"] is None


def test_hyperparameters_come_from_the_study_when_it_exists(benchmark):
    result, study, _ = benchmark
    recent = _row(result, "recent-popular")
    assert recent["source"] == f"study {study.study_name}"
    assert recent["hyperparameters"] == best_hyperparameters(study)
    assert _row(result, "ease")["source"] == "defaults"


def test_interval_is_over_seed_averaged_users(benchmark):
    result, _, root = benchmark
    ease = _row(result, "ease")
    runs = [root / "runs" / r for r in ease["runs"]]
    per_seed = [np.nanmean(pl.read_parquet(r / "per_user_test.parquet")["ndcg@10"]) for r in runs]
    assert ease["summary"]["ndcg@10"]["mean"] == pytest.approx(np.mean(per_seed))
    assert ease["users"] == seed_averaged(runs, "test").height


def test_outputs_are_written(benchmark):
    result, _, root = benchmark
    assert read_benchmark(root / "out")["rows"] == json.loads(json.dumps(result["rows"]))
    markdown = (root / "out" / "benchmark.md").read_text()
    assert f"Δndcg@10 vs {result['baseline']}" in markdown
    assert markdown.count("\n| ") == len(result["rows"]) + 1
    assert benchmark_markdown(result) == markdown


def test_seed_averaged_keeps_users_of_every_run(tmp_path):
    for name, users, values in (("a", [1, 2, 3], [0.0, 0.5, 1.0]), ("b", [2, 3], [1.0, 0.0])):
        run = Run.create(tmp_path, RunConfig.build("popular", tmp_path), path=tmp_path / name)
        run.write_per_user("test", pl.DataFrame({"user_id": users, "ndcg@10": values}))
    averaged = seed_averaged([tmp_path / "a", tmp_path / "b"], "test")
    assert averaged["user_id"].to_list() == [2, 3]
    assert averaged["ndcg@10"].to_list() == [0.75, 0.5]


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        run_benchmark(BenchmarkConfig(experiment=Experiment(str(tmp_path)), models=["nope"]))


@pytest.mark.slow
def test_cli_benchmark(tmp_path):
    world = write_tiny_release(tmp_path / "world")
    out = tmp_path / "out"
    args = [
        "benchmark",
        "--data",
        str(world),
        "--models",
        "popular",
        "--seeds",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(out),
        "--defaults",
        "--no-isolate",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "benchmark on test" in result.output
    rows = read_benchmark(out)["rows"]
    assert {r["model"] for r in rows} == {"popular", "recent-popular"}
    bad = CliRunner().invoke(app, ["benchmark", "--data", str(world), "--seeds", "0"])
    assert bad.exit_code == 2 and "--seeds" in bad.output


def test_isolated_runs_train_in_a_fresh_process(tmp_path):
    world = write_tiny_release(tmp_path / "world")
    config = RunConfig.build("popular", str(world), {})
    (run_dir,) = train_runs([config], str(tmp_path / "runs"), isolate=True)
    metrics = Run(run_dir).metrics
    assert metrics["test"]["mode"] == "full-ranking" and metrics["peak_rss_mb"] > 0


def test_tune_trials_gives_every_model_the_same_budget(tmp_path):
    from shortrec.tuning import load_study

    world = write_tiny_release(tmp_path / "world")
    config = BenchmarkConfig(
        experiment=Experiment(str(world)),
        models=["ease"],
        seeds=1,
        tune_trials=2,
        isolate=False,
        runs_dir=str(tmp_path / "runs"),
        out_dir=str(tmp_path / "out"),
    )
    result = run_benchmark(config)
    for model, trials in (("ease", 2), ("recent-popular", 2), ("popular", 1)):
        study = load_study(
            TuneConfig(model=model, experiment=Experiment(str(world)), runs_dir=config.runs_dir)
        )
        assert len(study.trials) == trials  # popular has nothing to tune: one trial
        assert _row(result, model)["source"] == f"study {study.study_name}"

"""The Python API (`import shortrec as sr`): the CLI's own code, the same checks and errors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import shortrec as sr
from shortrec.cli import app
from shortrec.leaderboard import compare_runs, leaderboard_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sr.synth(
        scale="tiny", seed=0, workdir=tmp_path_factory.mktemp("api") / "world", log=None
    )


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("api-runs")


@pytest.fixture(scope="module")
def ease(data, runs_dir):
    return sr.train("ease", data, runs_dir=runs_dir, test=True, progress=False, l2=200)


@pytest.fixture(scope="module")
def popular(data, runs_dir):
    return sr.train("popular", data, runs_dir=runs_dir, test=True, progress=False)


def test_train_returns_a_run_with_metrics_and_intervals(ease):
    assert ease.config.model == "ease" and ease.config.params["l2"] == 200.0
    on_disk = json.loads((ease.path / "metrics.json").read_text())
    assert ease.metrics == on_disk
    ndcg = ease.metrics["test"]["summary"]["ndcg@10"]
    assert ndcg["low"] <= ndcg["mean"] <= ndcg["high"]
    summary = ease.summary("test").filter(pl.col("metric") == "ndcg@10").row(0, named=True)
    assert summary == {"metric": "ndcg@10", **{k: ndcg[k] for k in ("mean", "low", "high")}}
    assert ease.per_user("test").height == ease.metrics["test"]["aggregate"]["users"]
    with pytest.raises(ValueError, match="no 'simulation_test' evaluation"):
        ease.summary("simulation_test")


def test_the_same_run_as_the_cli(data, ease, tmp_path):
    flags = ["--runs-dir", str(tmp_path), "--test", "--no-progress", "--l2", "200"]
    result = CliRunner().invoke(app, ["train", "ease", "--data", str(data.path), *flags])
    assert result.exit_code == 0, result.output
    (cli_run,) = sr.list_runs(tmp_path)
    assert cli_run.config.params == ease.config.params
    assert cli_run.config.experiment == ease.config.experiment
    a, b = cli_run.per_user("test"), ease.per_user("test")
    assert np.allclose(a["ndcg@10"].to_numpy(), b["ndcg@10"].to_numpy())


def test_recommend_is_a_frame_with_captions_and_categories(ease, data):
    user = int(data.tables.small_matrix["user_id"].min())
    top = ease.recommend([user], k=5)
    assert top.height == 5 and top["user_id"].unique().to_list() == [user]
    assert top["rank"].to_list() == [1, 2, 3, 4, 5]
    assert {"caption", "first_level_category_name"} <= set(top.columns)
    assert top["caption"].null_count() < top.height


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"lambda_": 3}, r"ease has no hyperparameter\(s\) lambda_; it has .*l2"),
        ({"l2": "big"}, r"ease hyperparameter l2 \(--l2\) must be float, got 'big'"),
        ({"num_threads": 1.5}, r"hyperparameter num_threads \(--num-threads\) must be int"),
        ({"num_threads": True}, r"must be int, got True"),
        ({"weighting": "nope"}, r"invalid ease hyperparameters: weighting must be one of"),
        ({"l2": -1.0}, r"invalid ease hyperparameters: l2 must be"),
    ],
)
def test_hyperparameters_are_checked_like_flags(data, tmp_path, hyperparameters, message):
    with pytest.raises(ValueError, match=message):
        sr.train("ease", data, runs_dir=tmp_path, progress=False, **hyperparameters)


def test_errors_are_the_clis(data, tmp_path):
    with pytest.raises(ValueError) as raised:
        sr.train("ease", data, runs_dir=tmp_path, preset="nope")
    result = CliRunner().invoke(app, ["train", "ease", "--data", str(data.path), "--runs-dir",
                                      str(tmp_path), "--preset", "nope"])  # fmt: skip
    assert result.exit_code == 2 and f"error: {raised.value}" in result.output
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        sr.train("nope", data)
    with pytest.raises(FileNotFoundError, match="not a prepared KuaiRec release"):
        sr.load(tmp_path)
    with pytest.raises(ValueError, match="--track must be mlflow"):
        sr.train("popular", data, runs_dir=tmp_path, track="nope")


def test_an_int_for_a_float_hyperparameter_becomes_a_float(data, tmp_path):
    run = sr.train("ease", data, runs_dir=tmp_path, progress=False, l2=100)
    assert run.config.params["l2"] == 100.0 and isinstance(run.config.params["l2"], float)


def test_leaderboard_and_compare_frames(ease, popular, runs_dir):
    board = sr.leaderboard(runs_dir, on="test")
    rows = leaderboard_rows(runs_dir, "test", "ndcg@10", "popular")
    assert board["model"].to_list() == [r["model"] for r in rows]
    assert board["ndcg@10"].to_list() == [r["summary"]["ndcg@10"]["mean"] for r in rows]
    assert (board["ndcg@10_low"] <= board["ndcg@10"]).all()
    ease_row = board.filter(pl.col("model") == "ease").row(0, named=True)
    paired = next(r for r in rows if r["model"] == "ease")["paired"]
    assert ease_row["delta"] == paired.difference.mean and ease_row["p_value"] == paired.p_value
    assert board.filter(pl.col("model") == "popular")["delta"].to_list() == [None]

    table = sr.compare(popular, ease, on="test")
    expected = compare_runs(popular.path, ease.path, "test", ["ndcg@10", "graded_ndcg@10",
                                                               "recall@20"])  # fmt: skip
    assert table["metric"].to_list() == [c.metric for c in expected]
    assert table["difference"].to_list() == [c.difference.mean for c in expected]


def test_import_a_csv_log_and_export_to_recbole(tmp_path):
    rng = np.random.default_rng(0)
    log = pl.DataFrame({"user": rng.integers(0, 30, 600), "item": rng.integers(0, 40, 600),
                        "stars": rng.integers(1, 6, 600), "ts": np.arange(600) * 60})  # fmt: skip
    log.write_csv(tmp_path / "log.csv")
    data = sr.import_log(tmp_path / "log.csv", tmp_path / "prepared", user="user", item="item",
                         rating="stars", time="ts")  # fmt: skip
    assert data.report.signal == "rating" and data.report.suggested_like_rule == "threshold:0.8"
    assert sr.load(data.path).views.height == data.report.interactions
    run = sr.train("popular", data, runs_dir=tmp_path / "runs", protocol="leave-last-out",
                   like_rule=data.report.suggested_like_rule, progress=False)  # fmt: skip
    assert str(run.config.experiment.like_rule) == "threshold:0.8"
    written = sr.export_recbole(data, tmp_path / "recbole", name="log")
    assert any(p.name == "log.inter" for p in written)


def test_api_names_survive_importing_same_named_modules():
    import shortrec.leaderboard  # noqa: F401  (a submodule named like the function)

    assert callable(sr.leaderboard) and sr.leaderboard.__module__ == "shortrec.api"
    with pytest.raises(AttributeError):
        sr.no_such_name  # noqa: B018


def test_tune_and_benchmark_from_python(data, tmp_path):
    study = sr.tune("recent-popular", data, trials=2, runs_dir=tmp_path / "runs")
    assert len(study.trials) == 2 and study.study_name.startswith("recent-popular-")
    table = sr.benchmark(data, models=["recent-popular"], seeds=1, runs_dir=tmp_path / "runs",
                         out=tmp_path / "bench", isolate=False)  # fmt: skip
    assert sorted(table["model"].to_list()) == ["popular", "recent-popular"]
    assert (tmp_path / "bench" / "benchmark.json").is_file()
    row = table.filter(pl.col("model") == "recent-popular").row(0, named=True)
    assert row["source"].startswith("study ")  # the study's best trial, not the defaults
    assert row["ndcg@10_low"] <= row["ndcg@10"] <= row["ndcg@10_high"]
    assert callable(sr.benchmark)

"""Experiment tracking: runs mirrored to a real MLflow file store, read back through MLflow."""

from __future__ import annotations

import json
import os
import sys

import pytest
from tiny_release import write_tiny_release
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.runs import Experiment, RunConfig, list_runs, train_run
from shortrec.tracking import TrackingError, TrackSpec, final_metrics, metric_name, open_tracker

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # tests never phone home
mlflow = pytest.importorskip("mlflow", reason="tracking tests need MLflow (shortrec[tracking])")
from mlflow.tracking import MlflowClient  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("tracking") / "world")


def _runs(uri: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shortrec")
    assert experiment is not None, "no shortrec experiment in the store"
    return client, client.search_runs([experiment.experiment_id])


def test_spec_parsing_and_names(tmp_path):
    assert TrackSpec.parse("mlflow").uri == (tmp_path.cwd() / "mlruns").resolve().as_uri()
    assert TrackSpec.parse(f"mlflow:{tmp_path}/store").uri == (tmp_path / "store").as_uri()
    assert TrackSpec.parse("mlflow:sqlite:///x.db").uri == "sqlite:///x.db"
    assert TrackSpec.parse("mlflow:http://127.0.0.1:5000").uri == "http://127.0.0.1:5000"
    with pytest.raises(TrackingError, match="--track must be mlflow"):
        TrackSpec.parse("wandb")
    assert metric_name("ndcg@10") == "ndcg_at_10"
    flat = final_metrics(
        {
            "test": {"summary": {"ndcg@10": {"mean": 0.5, "low": 0.4, "high": 0.6}}},
            "train_seconds": 2,
        }
    )
    assert flat == {"test/ndcg_at_10": 0.5, "test/ndcg_at_10.low": 0.4,
                    "test/ndcg_at_10.high": 0.6, "train_seconds": 2.0}  # fmt: skip


def test_train_run_logs_params_epochs_intervals_and_the_run_folder(world, tmp_path):
    uri = (tmp_path / "mlruns").as_uri()
    config = RunConfig(model="bpr", params={"epochs": 3, "factors": 8},
                       experiment=Experiment(str(world)))  # fmt: skip
    run = train_run(
        config, tmp_path / "runs", evaluate_on=("tune", "test"), progress=False,
        track=f"mlflow:{uri}",
    )  # fmt: skip
    client, found = _runs(uri)
    assert len(found) == 1
    tracked = found[0]
    assert tracked.info.status == "FINISHED"
    assert tracked.info.run_name == run.name
    params = tracked.data.params
    assert params["model"] == "bpr" and params["hp.epochs"] == "3" and params["hp.factors"] == "8"
    assert params["protocol"] == "kuairec"
    assert params["like_rule"] == str(run.config.experiment.like_rule)
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest and len(params["data_manifest_hash"]) == 32
    metrics = run.metrics
    for which in ("tune", "test"):
        summary = metrics[which]["summary"]["ndcg@10"]
        assert tracked.data.metrics[f"{which}/ndcg_at_10"] == pytest.approx(summary["mean"])
        assert tracked.data.metrics[f"{which}/ndcg_at_10.low"] == pytest.approx(summary["low"])
        assert tracked.data.metrics[f"{which}/ndcg_at_10.high"] == pytest.approx(summary["high"])
    history = client.get_metric_history(tracked.info.run_id, "epoch/validation_ndcg_at_10")
    epochs = metrics["fit"]["history"]
    assert [m.step for m in history] == [e["epoch"] for e in epochs]
    assert [m.value for m in history] == pytest.approx([e["validation_ndcg@10"] for e in epochs])
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id, "run")}
    assert {"run/config.json", "run/metrics.json", "run/model",
            "run/per_user_test.parquet"} <= artifacts  # fmt: skip
    assert tracked.data.tags["shortrec.run_dir"] == str(run.path.resolve())


def test_cli_train_tune_and_benchmark_track(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "popular", "--data", str(world), "--runs-dir", "r1",
                                 "--no-progress", "--track", "mlflow"])  # fmt: skip
    assert result.exit_code == 0, result.output
    client, found = _runs((tmp_path / "mlruns").as_uri())  # the default: ./mlruns
    assert [r.data.params["model"] for r in found] == ["popular"]

    store = (tmp_path / "store").as_uri()
    result = runner.invoke(app, ["tune", "recent-popular", "--data", str(world), "--runs-dir",
                                 "r2", "--trials", "2", "--track", f"mlflow:{store}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    _, found = _runs(store)
    assert sorted(r.data.tags["tuning.trial"] for r in found) == ["0", "1"]
    assert {r.data.tags["tuning.study"] for r in found} == {"recent-popular-world-kuairec"}
    assert {r.data.params["hp.half_life_days"] for r in found} == {
        json.dumps(run.config.params["half_life_days"]) for run in list_runs(tmp_path / "r2")
    }

    result = runner.invoke(app, ["benchmark", "--data", str(world), "--models", "popular",
                                 "--seeds", "1", "--runs-dir", "r3", "--out", "bench",
                                 "--no-isolate", "--track", f"mlflow:{store}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    _, found = _runs(store)
    benchmarked = [r for r in found if r.data.tags.get("benchmark") == "1"]
    assert sorted(r.data.params["model"] for r in benchmarked) == ["popular", "recent-popular"]
    assert all("test/ndcg_at_10.low" in r.data.metrics for r in benchmarked)


def test_a_missing_mlflow_is_a_clear_error_before_training(world, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(TrackingError, match=r"pip install 'shortrec\[tracking\]'"):
        open_tracker(f"mlflow:{tmp_path / 'mlruns'}")
    result = CliRunner().invoke(app, ["train", "popular", "--data", str(world), "--runs-dir",
                                      str(tmp_path / "runs"), "--track", "mlflow"])  # fmt: skip
    assert result.exit_code == 2
    assert "needs MLflow, which is not installed" in result.output
    assert list_runs(tmp_path / "runs") == []  # nothing trained


def test_an_unusable_store_fails_before_training(world, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    with pytest.raises(TrackingError, match="cannot use that tracking store"):
        train_run(RunConfig(model="popular", experiment=Experiment(str(world))),
                  tmp_path / "runs", progress=False, track=f"mlflow:{blocker}")  # fmt: skip
    assert list_runs(tmp_path / "runs") == []

"""The run folder (`shortrec.runs.Run`) and the run config: what a run records, how it finds
its data from any working directory and after being moved, presets, the one seed.

The end-to-end test drives the real CLI in subprocesses started in other directories."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
from conftest import free_port

from shortrec.benchmark import BenchmarkConfig
from shortrec.data.labels import LikeRule
from shortrec.models import default_models
from shortrec.runs import Experiment, Run, RunConfig, list_runs, train_run
from shortrec.tuning import TuneConfig


@pytest.fixture
def world(tiny_release: Path) -> Path:
    return tiny_release


def test_a_trained_run_records_config_metrics_per_user_and_model(world, tmp_path):
    run = train_run(
        RunConfig.build("ease", world, {"l2": 30.0, "seed": 4}), tmp_path, progress=False
    )
    assert list_runs(tmp_path) == [run]
    raw = json.loads((run.path / "config.json").read_text())
    assert raw["seed"] == 4 and "seed" not in raw["params"]  # the seed is stored once
    assert raw["params"]["l2"] == 30.0
    assert raw["data_dir"] == str(world) and raw["resolved_data_dir"] == str(world.resolve())
    assert run.config.model == "ease" and run.model().seed == 4
    assert run.metrics["tune"]["mode"] == "full-ranking" and run.metrics["train_seconds"] > 0
    assert run.per_user("tune")["user_id"].n_unique() == run.metrics["tune"]["aggregate"]["users"]
    with pytest.raises(FileNotFoundError, match="shortrec evaluate .* --on test"):
        run.per_user("test")
    assert run.data_dir == world.resolve()
    run.evaluate("test", progress=False)
    assert Run(run.path).metrics["test"]["mode"] == "full-ranking"  # recorded in the folder
    user = int(run.per_user("test")["user_id"][0])
    top = run.recommend([user], k=3)
    assert top["user_id"].to_list() == [user] * 3 and top["rank"].to_list() == [1, 2, 3]


def test_record_keeps_other_keys_and_writes_atomically(world, tmp_path):
    run = Run.create(tmp_path, RunConfig.build("popular", world))
    run.record("a", {"x": 1})
    run.record("b", 2.5)
    run.write_per_user(
        "simulation_test", pl.DataFrame({"user_id": [1, 2], "watch_seconds": [3.0, 4.0]})
    )
    assert run.metrics == {"a": {"x": 1}, "b": 2.5}
    assert run.per_user("simulation_test")["watch_seconds"].to_list() == [3.0, 4.0]
    assert sorted(p.name for p in run.path.iterdir()) == [
        "config.json",
        "metrics.json",
        "per_user_simulation_test.parquet",
    ]  # fmt: skip  (no temporary file left behind)


def test_a_run_is_refused_clearly_when_it_is_not_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        Run(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not a valid run config"):
        _ = Run(tmp_path).config


def test_data_is_found_from_any_directory_and_after_a_move(world, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(world, home / "data")
    monkeypatch.chdir(home)
    run = Run.create("runs", RunConfig.build("popular", "data"))  # relative, as users type
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Run(home / run.path).data_dir == (home / "data").resolve()
    moved = tmp_path / "moved"
    shutil.move(home, moved)  # the runs folder with its data beside it
    assert Run(moved / run.path).data_dir == (moved / "data").resolve()
    shutil.rmtree(moved / "data")
    with pytest.raises(FileNotFoundError, match="its data 'data' is not found"):
        _ = Run(moved / run.path).data_dir


def test_configs_of_earlier_versions_still_read(tmp_path):
    legacy = {
        "model": "ease", "params": {"l2": 5.0, "seed": 3}, "data_dir": str(tmp_path),
        "protocol": "temporal", "like_rule": {"kind": "threshold", "threshold": 0.7},
        "seed": 3, "label": "", "sampled": None,
    }  # fmt: skip
    config = RunConfig.from_dict(legacy)
    assert config.seed == 3 and config.params == {"l2": 5.0}
    assert config.experiment.protocol == "temporal"
    assert str(config.experiment.like_rule) == "threshold:0.7"
    assert RunConfig.from_json(config.to_json()) == config


def test_presets_resolve_in_the_run_config():
    config = RunConfig.build("sasrec", "data", preset="paper-ml-1m")
    assert config.experiment.protocol == "leave-last-out" and config.sampled == 100
    assert config.experiment.like_rule == LikeRule(kind="all")
    assert config.params["maxlen"] == 200 and config.preset == "paper-ml-1m"
    mine = RunConfig.build(
        "sasrec", "data", {"maxlen": 20}, preset="paper-ml-1m", protocol="temporal"
    )
    assert mine.params["maxlen"] == 20 and mine.experiment.protocol == "temporal"  # given wins
    with pytest.raises(ValueError, match="has no preset 'paper-x'.*paper-ml-1m"):
        RunConfig.build("sasrec", "data", preset="paper-x")
    tune = TuneConfig(model="sasrec", experiment=Experiment("data"), preset="paper-ml-1m")
    assert tune.experiment.protocol == "leave-last-out" and tune.preset_params["maxlen"] == 200
    kept = TuneConfig(
        model="sasrec", experiment=Experiment("data"), preset="paper-ml-1m", keep=("protocol",)
    )
    assert kept.experiment.protocol == "kuairec"
    bench = BenchmarkConfig(Experiment("data"), models=["sasrec", "ease"], preset="paper-ml-1m")
    assert bench.experiment.protocol == "leave-last-out" and list(bench.preset_params) == ["sasrec"]


def test_an_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="protocol must be one of kuairec"):
        Experiment("data", protocol="random")


def test_reference_models_are_declared_and_left_out_of_the_defaults():
    assert "oracle" not in default_models() and "ease" in default_models()


# --- the real CLI from other working directories -------------------------------------------


def shortrec(*args: object, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "shortrec.cli", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def serve_and_ask(run: Path, cwd: Path) -> dict:
    """Start `shortrec serve --run RUN` in `cwd`, ask it for a user's feed, stop it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shortrec.cli", "serve", "--run", str(run), "--port", str(port)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "server did not start within 90 s"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        return httpx.get(f"{url}/users/0/recommendations?k=3").json()
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.slow
def test_commands_work_on_a_run_from_another_directory_and_after_a_move(tiny_synth_raw, tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(tiny_synth_raw, project / "data" / "raw")
    shortrec("data", "prepare", "data/raw", "--out", "data/prepared", "--no-progress", cwd=project)
    trained = shortrec("train", "popular", "--data", "data/prepared", "--runs-dir", "runs",
                       "--no-progress", cwd=project)  # fmt: skip
    run_name = Path(re.search(r"run: (\S+)", trained.stdout).group(1))
    assert not run_name.is_absolute()  # as the user typed it: relative to the project

    for root in (project, tmp_path / "moved"):
        if root != project:
            shutil.move(project, root)  # runs and data together
        run = root / run_name
        recs = shortrec(
            "recommend", run, "--k", "3", "--out", elsewhere / "recs.csv", cwd=elsewhere
        )
        assert "wrote" in recs.stdout and pl.read_csv(elsewhere / "recs.csv").height > 0
        evaluated = shortrec("evaluate", run, "--on", "test", "--no-progress", cwd=elsewhere)
        assert evaluated.stdout.startswith("test (full-ranking): ndcg@10")
        simulated = shortrec("simulate", run, "--steps", "3", "--no-progress", cwd=elsewhere)
        assert "watch ratios from world" in simulated.stdout  # the world found beside the data
        served = serve_and_ask(run, cwd=elsewhere)
        assert len(served["items"]) == 3

    shutil.rmtree(tmp_path / "moved" / "data")
    missing = shortrec("recommend", tmp_path / "moved" / run_name, cwd=elsewhere, ok=False)
    assert missing.returncode == 2 and "its data 'data/prepared' is not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert os.listdir(elsewhere) == ["recs.csv"]  # nothing written where the commands ran

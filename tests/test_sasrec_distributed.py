"""Data-parallel SASRec: two CPU processes (gloo) train as well as one, and resume exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from shortrec.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from tiny_release import write_tiny_release  # noqa: E402

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).parents[1] / "src")
SETTINGS = ["--epochs", "6", "--eval-every", "2", "--hidden-size", "32", "--no-progress",
            "--test", "--seed", "0"]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_two_processes_score_within_the_single_process_interval(tmp_path):
    world = write_tiny_release(tmp_path / "world")
    common = ["train", "sasrec", "--data", str(world), *SETTINGS]
    single = CliRunner().invoke(app, [*common, "--runs-dir", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    done = subprocess.run(
        [sys.executable, "-m", "shortrec.cli", *common, "--runs-dir", str(tmp_path / "two"),
         "--nproc", "2"],
        capture_output=True, text=True, env=env(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (one,), (two,) = (list((tmp_path / d).iterdir()) for d in ("one", "two"))  # rank 0 only
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (one, two)]
    assert metrics[0]["fit"]["world_size"] == 1 and metrics[1]["fit"]["world_size"] == 2
    interval = metrics[0]["test"]["summary"]["ndcg@10"]
    assert interval["low"] <= metrics[1]["test"]["summary"]["ndcg@10"]["mean"] <= interval["high"]
    assert list((two / "checkpoints").glob("checkpoint.pt"))


RESUME_SCRIPT = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from fitting import training
from test_sasrec import cyclic_views, small_model
from shortrec.data.splits import leave_last_out_split
from shortrec.models.base import FitContext

dist.init_process_group("gloo")  # one group for all three fits
split = leave_last_out_split(cyclic_views(n_users=60))
data = training(split.train, split.validation)
out = sys.argv[1]
def fit(epochs, folder):
    context = FitContext(checkpoint_dir=f"{{out}}/{{folder}}", progress=False)
    return small_model(epochs=epochs, eval_every=1).fit(data, context)
full = fit(4, "a")
fit(2, "b")
resumed = fit(4, "b")
if dist.get_rank() == 0:
    torch.save({{"full": full.net_.state_dict(), "resumed": resumed.net_.state_dict(),
                "report": resumed.fit_report_}}, f"{{out}}/result.pt")
dist.destroy_process_group()
"""


def test_a_resumed_two_process_run_matches_an_uninterrupted_one(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).parent)))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(tmp_path)],
        capture_output=True, text=True, env=env(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    assert result["report"]["world_size"] == 2 and result["report"]["epochs_this_run"] == 2
    for name, tensor in result["full"].items():
        assert torch.equal(tensor, result["resumed"][name]), name
    # Only rank 0 wrote checkpoints, holding both ranks' random streams.
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert len(saved["random"]) == 2 and saved["settings"]["world_size"] == 2

"""End to end through the real CLI: `shortrec train sasrec ...` on small generated data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shortrec.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from tiny_release import write_tiny_release  # noqa: E402

pytestmark = pytest.mark.slow
FAST = ["--epochs", "2", "--eval-every", "1", "--hidden-size", "16", "--maxlen", "10",
        "--no-progress"]  # fmt: skip


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir())


def test_train_sasrec_with_explicit_negatives_on_a_release(tmp_path):
    world = write_tiny_release(tmp_path / "world")
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app,
        ["train", "sasrec", "--data", str(world), "--runs-dir", str(runs),
         "--explicit-negatives", "--weighted-dislike", "3", *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    params = json.loads(next(run.rglob("model.json")).read_text())["params"]
    assert params["explicit_negatives"] is True and params["weighted_dislike"] == 3.0
    assert list((run / "checkpoints").rglob("checkpoint.pt"))  # the run's checkpoint folder


def test_paper_setup_from_a_sasrec_text_file(tmp_path):
    # 40 users, 12 views each, over 300 items (enough never-seen ones for sampled-100).
    lines = [f"{u} {(u * 7 + t) % 300 + 1}" for u in range(1, 41) for t in range(12)]
    data = tmp_path / "toy.txt"
    data.write_text("\n".join(lines) + "\n")
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app,
        ["train", "sasrec", "--data", str(data), "--preset", "paper-ml-1m",
         "--runs-dir", str(runs), *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # The preset sets the paper's protocol too; sampled results print HR@10 beside NDCG@10.
    assert "(sampled-100): ndcg@10" in result.output and "hitrate@10" in result.output
    (run,) = run_dirs(runs)
    config = json.loads((run / "config.json").read_text())
    assert config["protocol"] == "leave-last-out" and config["sampled"] == 100
    assert config["like_rule"]["kind"] == "all"
    params = json.loads(next(run.rglob("model.json")).read_text())["params"]
    assert params["dropout"] == 0.2  # from the preset
    assert params["attention_sink"] is False and params["explicit_negatives"] is False
    assert params["maxlen"] == 10  # an explicit flag wins over the preset's 200


def test_an_interrupted_run_resumes_in_its_folder(tmp_path):
    world = write_tiny_release(tmp_path / "world")
    runs = tmp_path / "runs"
    common = ["train", "sasrec", "--data", str(world), "--runs-dir", str(runs), "--eval-every",
              "1", "--hidden-size", "16", "--maxlen", "10", "--no-progress"]  # fmt: skip
    first = CliRunner().invoke(app, [*common, "--epochs", "1", "--patience", "9"])
    assert first.exit_code == 0, first.output
    (run,) = run_dirs(runs)
    resumed = CliRunner().invoke(app, [*common, "--epochs", "3", "--patience", "9",
                                       "--resume", str(run)])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert run_dirs(runs) == [run]  # no new folder
    fit = json.loads((run / "metrics.json").read_text())["fit"]
    assert fit["epochs_this_run"] == 2 and [r["epoch"] for r in fit["history"]] == [1, 2, 3]
    other = CliRunner().invoke(app, ["train", "ease", "--data", str(world), "--resume", str(run)])
    assert other.exit_code == 2 and "that run trained sasrec" in other.output

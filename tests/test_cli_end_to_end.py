"""The real CLI, end to end, on a tiny synthetic world: synth -> prepare -> train ->
evaluate -> leaderboard -> compare -> recommend -> quickstart."""

import json
import re
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from shortrec.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def run_dir_of(result) -> Path:
    return Path(re.search(r"run: (\S+)", result.output).group(1))


def test_train_evaluate_leaderboard_compare_recommend(tiny_synth_world: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    data = tiny_synth_world / "prepared"
    popular = run_dir_of(invoke("train", "popular", "--data", data, "--runs-dir", runs, "--test"))
    oracle = run_dir_of(invoke("train", "oracle", "--data", data, "--runs-dir", runs, "--test"))
    ease = run_dir_of(invoke("train", "ease", "--data", data, "--runs-dir", runs, "--l2", "50"))
    config = json.loads((ease / "config.json").read_text())
    assert config["params"]["l2"] == 50.0 and config["like_rule"]["kind"] == "duration"
    metrics = json.loads((ease / "metrics.json").read_text())
    assert "tune" in metrics and "test" not in metrics  # test is opened only when asked
    assert metrics["tune"]["mode"] == "full-ranking"
    invoke("evaluate", ease, "--on", "test")
    assert "test" in json.loads((ease / "metrics.json").read_text())

    board = invoke("leaderboard", "--runs-dir", runs, "--on", "test").output
    models = [line.split("│")[1].strip() for line in board.splitlines() if line.startswith("│")]
    assert models.index("oracle") < models.index("popular")  # sorted by NDCG@10
    assert "full-ranking" in board

    compared = invoke("compare", popular, oracle, "--on", "test", "--metric", "ndcg@10").output
    assert compared.startswith("ndcg@10: B-A") and "p=" in compared

    out = tmp_path / "recs.csv"
    invoke("recommend", ease, "--k", "5", "--out", out)
    recs = pl.read_csv(out)
    assert recs.group_by("user_id").len()["len"].max() == 5
    history = pl.read_parquet(data / "big_matrix.parquet").select("user_id", "video_id")
    assert recs.join(history, on=["user_id", "video_id"]).height == 0  # nothing seen again


def test_sampled_mode_is_labelled_and_refused_on_a_full_matrix(
    tiny_synth_world: Path, tmp_path: Path
):
    runs = tmp_path / "runs"
    data = tiny_synth_world / "prepared"
    refused = runner.invoke(
        app, ["train", "popular", "--data", str(data), "--runs-dir", str(runs), "--sampled", "100"]
    )
    assert refused.exit_code == 2 and "never-interacted" in refused.output
    result = invoke(
        "train", "popular", "--data", data, "--runs-dir", runs,
        "--protocol", "leave-last-out", "--sampled", "20",
    )  # fmt: skip
    assert "sampled-20" in result.output
    run = run_dir_of(result)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tune:sampled-20"]["mode"] == "sampled-20" and "tune" not in metrics
    invoke("evaluate", run, "--on", "tune", "--sampled", "0")  # the same model, full ranking
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tune"]["mode"] == "full-ranking"
    assert (
        metrics["tune"]["summary"]["ndcg@10"]["mean"]
        < metrics["tune:sampled-20"]["summary"]["ndcg@10"]["mean"]
    )  # full ranking is the harder, honest number


def test_user_mistakes_get_clean_errors(tmp_path: Path):
    missing = runner.invoke(app, ["train", "popular", "--data", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a prepared KuaiRec release" in missing.output
    bad_rule = runner.invoke(app, ["train", "popular", "--like-rule", "median"])
    assert bad_rule.exit_code == 2 and "--like-rule" in bad_rule.output


def test_quickstart_on_tiny_world(tmp_path: Path):
    result = invoke(
        "quickstart", "--scale", "tiny", "--workdir", tmp_path / "qs",
        "--runs-dir", tmp_path / "runs", "--models", "random,popular,oracle,ease",
    )  # fmt: skip
    assert "leaderboard on test" in result.output
    assert "top-10 small_matrix videos for user" in result.output
    assert len(list((tmp_path / "runs").iterdir())) == 4

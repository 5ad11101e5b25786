"""The HTML report: every section, figures embedded and written, renders in a real browser."""

from __future__ import annotations

import base64
import json
import re

import optuna
import pytest
from tiny_release import write_tiny_release
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.report.report import SECTIONS, build_report
from shortrec.runs import Experiment, Run, RunConfig, train_run
from shortrec.tuning import TuneConfig, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained runs with test evaluations, a tuning study, a recorded training history and
    recorded regression errors."""
    root = tmp_path_factory.mktemp("report")
    world = write_tiny_release(root / "world")
    runs_dir = root / "runs"
    tune(
        TuneConfig(
            model="recent-popular",
            experiment=Experiment(str(world)),
            runs_dir=str(runs_dir),
            trials=3,
        )
    )
    trained = {
        model: train_run(
            RunConfig.build(model, str(world), {}),
            runs_dir,
            evaluate_on=("tune", "test"),
            progress=False,
        )
        for model in ("popular", "ease", "random")
    }
    # As an epoch-trained model and a watch-ratio regressor would record them.
    metrics = Run(trained["ease"]).metrics
    metrics["fit"] = {
        "history": [
            {"epoch": e, "loss": 1.0 / e, "validation_ndcg@10": 0.1 * e} for e in range(1, 6)
        ]
    }
    (trained["ease"] / "metrics.json").write_text(json.dumps(metrics))
    metrics = Run(trained["random"]).metrics
    metrics["regression_test"] = {
        "mae": 0.5,
        "rmse": 0.8,
        "mae_interval": [0.45, 0.55],
        "rmse_interval": [0.7, 0.9],
    }
    (trained["random"] / "metrics.json").write_text(json.dumps(metrics))
    return runs_dir


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("page")
    return build_report(runs, out)


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_every_section_is_present_with_its_figure(page):
    html = page.read_text()
    for key in SECTIONS:
        assert f'<section id="{key}">' in html
    # leaderboard, training curves, popularity/coverage, tuning history, regression errors
    images = _images(html)
    assert len(images) == 5
    assert all(image.startswith(PNG_MAGIC) for image in images)
    assert sorted(p.name for p in page.parent.glob("*.png")) == sorted(
        [
            "leaderboard.png",
            "training_curves.png",
            "popularity_coverage.png",
            "tuning_history.png",
            "regression_errors.png",
        ]
    )
    assert "<img" in html.split('id="training-curves"')[1].split("</section>")[0]


def test_page_is_self_contained(page):
    html = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "<script" not in html


def test_leaderboard_and_examples_name_every_model(page):
    html = page.read_text()
    leaderboard = html.split('id="leaderboard"')[1].split("</section>")[0]
    for model in ("popular", "ease", "random"):
        assert f"<td>{model}</td>" in leaderboard
    # its tuning trials were never evaluated on test, so they are not on a test leaderboard
    assert "<td>recent-popular</td>" not in leaderboard
    assert "test set" in leaderboard
    examples = html.split('id="examples"')[1].split("</section>")[0]
    assert examples.count("<h3>user ") == 3
    # captions and categories of the recommended videos are shown
    assert re.search(r"(cooking|football|cats) clip #\d+", examples)
    assert examples.count("<li>") == 3 * 3 * 10


def test_sections_without_data_say_so(tmp_path):
    world = write_tiny_release(tmp_path / "world")
    train_run(
        RunConfig.build("popular", str(world), {}),
        tmp_path / "runs",
        progress=False,
    )
    html = build_report(tmp_path / "runs", tmp_path / "out").read_text()
    assert "No model recorded a per-epoch history" in html
    assert "No tuning study found" in html
    assert "No run recorded watch-ratio regression errors" in html
    assert "tune set" in html  # without a test evaluation the leaderboard says it is tune
    with pytest.raises(ValueError, match="no evaluated run"):
        build_report(tmp_path / "empty", tmp_path / "out2")


def test_report_from_a_benchmark(tmp_path, runs):
    from shortrec.benchmark import BenchmarkConfig, run_benchmark

    world = json.loads(next(runs.glob("*-popular-*/config.json")).read_text())["data_dir"]
    run_benchmark(
        BenchmarkConfig(
            experiment=Experiment(world),
            models=["popular"],
            seeds=2,
            isolate=False,
            runs_dir=str(tmp_path / "runs"),
            out_dir=str(tmp_path / "b"),
        )
    )
    html = build_report(
        tmp_path / "runs", tmp_path / "out", benchmark_dir=tmp_path / "b"
    ).read_text()
    assert "mean over 2 seeds" in html
    assert "Δndcg@10 vs" in html


@pytest.mark.slow
def test_cli_report(runs, tmp_path):
    result = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "index.html").exists()
    missing = CliRunner().invoke(
        app,
        [
            "report",
            "--runs-dir",
            str(runs),
            "--benchmark",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path),
        ],
    )
    assert missing.exit_code == 2 and "holds no benchmark" in missing.output


@pytest.mark.browser
def test_report_renders_in_headless_chromium(page, tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from matplotlib.image import imread

    from shortrec.report.browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium binary on this machine (apt-get install chromium)")
    shot = tmp_path / "report.png"
    check = check_page(page, shot)
    assert check.images == 5
    assert check.broken_images == []
    assert check.sections == list(SECTIONS)
    assert check.external_resources == []
    assert shot.read_bytes().startswith(PNG_MAGIC)
    full_height = imread(shot).shape[0]
    check_page(page, shot, height=500)
    assert imread(shot).shape[0] == 500 < full_height


def test_training_curves_put_losses_of_different_scales_on_one_relative_axis():
    from shortrec.report.plots import relative_losses, training_curves_figure

    histories = {
        "multvae": [{"epoch": e, "loss": 400.0 - 10 * e} for e in range(1, 6)],
        "bpr": [{"epoch": e, "loss": 0.7 / e} for e in range(1, 6)],
        "ease": [{"epoch": 1}],  # no loss recorded: no curve
    }
    lines = training_curves_figure(histories).axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["multvae", "bpr"]
    for line in lines:
        assert line.get_ydata()[0] == pytest.approx(1.0)
    assert lines[1].get_ydata()[-1] == pytest.approx(0.2)  # 0.14 / 0.7
    assert relative_losses([None, 2.0, 1.0]).tolist()[1:] == [1.0, 0.5]
    assert relative_losses([-3.0, -4.0]).tolist() == [-3.0, -4.0]  # not positive: as recorded

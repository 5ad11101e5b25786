"""`shortrec data report`: a KuaiRec-format world and imported logs, through the real CLI; the
figures' numbers (Lorenz/Gini, the like rule's buckets) checked against direct computations;
logs without watch ratio, durations or times degrade section by section; the page renders in
headless Chromium."""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.calibration import TARGETS
from shortrec.data.labels import LikeRule
from shortrec.report import data_report
from shortrec.report.data_report import SECTIONS, lorenz, write_data_report

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def _section(html: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', html, re.S)
    assert match, key
    return match.group(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    invoke("data", "synth", "--out", root / "raw", "--scale", "tiny", "--seed", "0",
           "--no-calibration", "--no-progress")  # fmt: skip
    invoke("data", "prepare", root / "raw", "--out", root / "prepared", "--no-progress")
    return root / "prepared"


@pytest.fixture(scope="module")
def world_page(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("page")
    output = invoke("data", "report", world, "--out", out)
    assert f"wrote {out / 'index.html'}" in output
    return out / "index.html"


def test_world_report_has_every_section_and_figure(world_page):
    html = world_page.read_text()
    assert re.findall(r'<section id="([^"]+)"', html) == list(SECTIONS)
    images = _images(html)
    assert len(images) == 6 and all(image.startswith(PNG_MAGIC) for image in images)
    written = sorted(p.name for p in world_page.parent.glob("*.png"))
    assert written == sorted(
        f"{n}.png"
        for n in ("watch_ratio", "popularity", "activity", "like_rate", "timeline", "calibration")
    )
    assert 'class="empty"' not in html  # a KuaiRec world has everything
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained


def test_world_report_renders_every_calibration_row(world_page):
    calibration = _section(world_page.read_text(), "calibration")
    for target in TARGETS:
        assert f"<td>{escape(target.label)}</td>" in calibration, target.label
    assert re.search(r"\d+ of \d+ checked statistics within tolerance", calibration)


def test_world_report_states_the_rule_and_its_like_share(world, world_page):
    html = world_page.read_text()
    assert "duration:0.8" in _section(html, "watch-ratio")
    share = re.search(r"(\d+\.\d)% of the judged big_matrix views are liked", html)
    big = pl.read_parquet(world / "big_matrix.parquet")
    rule = LikeRule().fit(big)
    assert float(share.group(1)) == pytest.approx(100 * rule.liked(big).mean(), abs=0.05)


def test_polars_buckets_match_the_like_rule(world):
    """The report labels views in polars; the labels must be the rule's own."""
    big = pl.read_parquet(world / "big_matrix.parquet")
    rule = LikeRule().fit(big)
    data = data_report._open(world)
    labelled = data_report._with_labels(data, rule).collect()
    expected = rule.label(big.filter(pl.col("watch_ratio").is_not_null()))
    assert labelled.height == expected.height
    np.testing.assert_array_equal(labelled["liked"].to_numpy(), expected["liked"].to_numpy())
    np.testing.assert_array_equal(labelled["disliked"].to_numpy(), expected["disliked"].to_numpy())


def test_sorted_first_occurrences_match_the_loaders(world):
    from shortrec.data.dataset import first_occurrences

    path = world / "big_matrix.parquet"
    mask = data_report.first_occurrences_sorted(path)
    assert 0 < (~mask).sum() < len(mask)  # the tiny world has duplicates
    np.testing.assert_array_equal(mask, first_occurrences(path).to_numpy())


def test_lorenz_curve_and_gini():
    _, share, gini = lorenz(np.full(10, 7))
    assert gini == pytest.approx(0.0) and share[5] == pytest.approx(0.5)
    _, share, gini = lorenz(np.array([0, 0, 0, 100]))
    assert gini == pytest.approx(0.75) and share[3] == 0.0  # (n - 1) / n: one video has all
    rng = np.random.default_rng(0)
    counts = rng.pareto(1.5, 500) + 1
    pairs = np.abs(counts[:, None] - counts[None, :]).sum() / (2 * len(counts) ** 2 * counts.mean())
    assert lorenz(counts)[2] == pytest.approx(pairs, rel=1e-9)  # the mean-difference definition


def test_html_out_puts_the_pngs_beside_it(world, tmp_path):
    page = write_data_report(
        world, tmp_path / "reports" / "world.html", LikeRule.parse("threshold:0.7")
    )
    assert page == tmp_path / "reports" / "world.html"
    assert (tmp_path / "reports" / "world_watch_ratio.png").read_bytes().startswith(PNG_MAGIC)
    assert "threshold:0.7" in _section(page.read_text(), "watch-ratio")


def test_an_imported_log_without_signal_durations_or_times(tmp_path):
    lines = [f"{u} {(u * 7 + t) % 50 + 1}" for u in range(1, 21) for t in range(6)]
    (tmp_path / "toy.txt").write_text("\n".join(lines) + "\n")
    invoke("data", "import", tmp_path / "toy.txt", "--format", "sasrec", "--out", tmp_path / "d")
    invoke("data", "report", tmp_path / "d", "--out", tmp_path / "page")
    html = (tmp_path / "page" / "index.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', html) == list(SECTIONS)
    assert "has no watch ratio" in _section(html, "watch-ratio")
    assert "Like rule `all`" in _section(html, "like-rate")
    assert "no times" in _section(html, "timeline")
    assert "cannot be counted" in _section(html, "activity")
    assert "Not a KuaiRec-format release" in _section(html, "calibration")
    assert len(_images(html)) == 2  # popularity, activity (views per user)


def test_an_imported_recbole_log_with_ratings_and_genres(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    rng = np.random.default_rng(0)
    users, items = np.repeat(np.arange(1, 21), 8), rng.integers(1, 31, 160)
    pl.DataFrame({
        "user_id:token": users, "item_id:token": items,
        "rating:float": rng.integers(1, 6, 160).astype(float),
        "timestamp:float": 1_600_000_000.0 + np.arange(160) * 3_600.0,
    }).write_csv(folder / "toy.inter", separator="\t")  # fmt: skip
    pl.DataFrame({
        "item_id:token": np.arange(1, 31),
        "title:token_seq": [f"Item {i}" for i in range(1, 31)],
        "genre:token_seq": ["Comedy Drama" if i % 2 else "Horror" for i in range(1, 31)],
    }).write_csv(folder / "toy.item", separator="\t")  # fmt: skip
    invoke("data", "import", folder, "--format", "recbole", "--out", tmp_path / "d")
    invoke("data", "report", tmp_path / "d", "--out", tmp_path / "page")
    html = (tmp_path / "page" / "index.html").read_text()
    assert "has no video durations" in _section(html, "watch-ratio")
    assert "threshold:0.8" in _section(html, "watch-ratio")  # the import's suggestion
    like_rate = _section(html, "like-rate")
    assert (
        "item table field &#x27;genre&#x27;" in like_rate
        and "by duration is not drawn" in like_rate
    )
    assert "no times" not in _section(html, "timeline")
    names = data_report._open(tmp_path / "d").names
    assert set(names["category"]) == {"Comedy", "Drama", "Horror"}


def test_bad_input_is_refused_by_name(tmp_path):
    result = runner.invoke(app, ["data", "report", str(tmp_path / "nothing"), "--out",
                                 str(tmp_path / "page")])  # fmt: skip
    assert result.exit_code == 2 and "nothing" in result.output
    result = runner.invoke(app, ["data", "report", str(tmp_path), "--out", str(tmp_path / "p"),
                                 "--like-rule", "sometimes"])  # fmt: skip
    assert result.exit_code == 2 and "--like-rule must be" in result.output


@pytest.mark.browser
def test_data_report_renders_in_headless_chromium(world, world_page, tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from matplotlib.image import imread

    from shortrec.report.browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium binary on this machine (apt-get install chromium)")
    check = check_page(world_page)
    assert check.images == 6 and check.broken_images == []
    assert check.sections == list(SECTIONS)
    assert check.external_resources == []
    shot = tmp_path / "data_report.png"
    output = invoke("data", "report", world, "--out", tmp_path / "page", "--screenshot", shot,
                    "--screenshot-height", 400)  # fmt: skip
    assert "6 figures rendered in Chromium" in output
    assert shot.read_bytes().startswith(PNG_MAGIC) and imread(shot).shape[0] == 400

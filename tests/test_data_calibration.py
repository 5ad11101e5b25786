"""Calibration report: statistics from the CSVs, scaled targets, pass/fail and the CLI."""

from __future__ import annotations

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.calibration import (
    TARGETS,
    Check,
    Target,
    all_passed,
    calibrate,
    compute_stats,
    release_stats,
    report_table,
)
from shortrec.data.schema import INTERACTION_COLUMNS


def test_stats_are_computed_from_the_csv_files(tiny_synth_raw):
    stats = compute_stats(tiny_synth_raw)
    big = pl.read_csv(tiny_synth_raw / "big_matrix.csv", schema=INTERACTION_COLUMNS)
    small = pl.read_csv(tiny_synth_raw / "small_matrix.csv", schema=INTERACTION_COLUMNS)
    assert stats["big_rows"] == big.height
    assert stats["small_rows"] == small.height
    assert stats["big_duplicate_rate"] == pytest.approx(1 - big.unique().height / big.height)
    assert stats["small_null_rate"] == pytest.approx(small["time"].null_count() / small.height)
    assert stats["big_wr_median"] == pytest.approx(big["watch_ratio"].median())
    assert stats["big_wr_ge1"] == pytest.approx((big["watch_ratio"] >= 1).mean())
    assert stats["big_date_min"] == 20200705 and stats["small_date_max"] == 20200905
    # sizes come from world.json (videos nobody viewed still count)
    assert stats["big_users"] == 200 and stats["big_videos"] == 300


def test_size_targets_are_scaled_to_the_world(tiny_synth_raw):
    checks = {c.target.key: c for c in calibrate(tiny_synth_raw)}
    share = (200 * 300) / (7176 * 10728)
    assert checks["big_rows"].expected == pytest.approx(12_530_806 * share)
    assert checks["small_rows"].expected == pytest.approx(4_676_570 * (60 * 100) / (1411 * 3327))
    assert checks["user_rows_median"].expected == pytest.approx(1846.5 * 300 / 10728)
    assert checks["big_density"].expected == pytest.approx(0.16277)  # not scaled
    # the world is built to the published shape, even at tiny scale
    for key in ("big_rows", "small_rows", "big_density", "big_duplicate_rate", "big_date_min"):
        assert checks[key].passed, (key, checks[key])


def test_check_pass_fail_and_info_rows():
    target = Target("x", "x", 100.0, "test", tolerance=0.10)
    assert Check(target, 100.0, 109.0).passed
    assert not Check(target, 100.0, 111.0).passed
    assert Check(target, 100.0, 89.5).relative_difference == pytest.approx(-0.105)
    info = Target("y", "y", 1.0, "test", tolerance=None)
    assert Check(info, 1.0, 50.0).passed and not Check(info, 1.0, 50.0).checked
    exact = Target("d", "d", 20200705, "test", tolerance=0.0)
    assert Check(exact, 20200705, 20200705).passed and not Check(exact, 20200705, 20200706).passed
    assert not Check(target, 100.0, float("nan")).passed
    days = Target("t", "t", -11.6, "test", tolerance=0.5, absolute=True)
    assert Check(days, -11.6, -11.2).passed and not Check(days, -11.6, -11.0).passed
    assert Check(days, -11.6, -11.2).difference == pytest.approx(0.4)


def test_every_target_names_its_source_and_the_table_has_the_report_columns(tiny_synth_raw):
    assert all(t.source for t in TARGETS) and len({t.key for t in TARGETS}) == len(TARGETS)
    console = Console(record=True, width=200)
    console.print(report_table(calibrate(tiny_synth_raw)))
    text = console.export_text()
    for column in ("statistic", "target", "synthetic", "rel. diff", "check"):
        assert column in text
    assert "(scaled by big_cells)" in text and "pass" in text


@pytest.mark.slow
def test_cli_calibrate_is_strict_only_when_asked(tiny_synth_raw, tmp_path):
    ok = CliRunner().invoke(app, ["data", "calibrate", str(tiny_synth_raw)])
    assert ok.exit_code == 0, ok.output
    assert "big watch_ratio median" in ok.output
    # a release whose watch ratios are all zero fails the distribution checks
    for name in ("big_matrix.csv", "small_matrix.csv"):
        frame = pl.read_csv(tiny_synth_raw / name, schema=INTERACTION_COLUMNS)
        frame.with_columns(pl.lit(0.0).alias("watch_ratio")).write_csv(tmp_path / name)
    loose = CliRunner().invoke(app, ["data", "calibrate", str(tmp_path)])
    strict = CliRunner().invoke(app, ["data", "calibrate", str(tmp_path), "--strict"])
    assert loose.exit_code == 0 and strict.exit_code == 1
    assert not all_passed(calibrate(tmp_path))
    table = CliRunner().invoke(app, ["data", "calibrate", str(tiny_synth_raw), "--markdown"])
    assert table.exit_code == 0 and table.output.startswith("| statistic | real KuaiRec |")
    assert len(table.output.splitlines()) == len(TARGETS) + 2
    missing = CliRunner().invoke(app, ["data", "calibrate", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "big_matrix.csv is missing" in missing.output


def _views(rows: list[tuple]) -> pl.DataFrame:
    columns = ("user_id", "video_id", "play_duration", "video_duration", "time", "date",
               "timestamp", "watch_ratio")  # fmt: skip
    return pl.DataFrame(rows, schema=INTERACTION_COLUMNS, orient="row").select(columns)


def test_new_statistics_on_a_hand_made_release():
    day = 1_593_878_400.0  # 2020-07-05 00:00 local
    a = (1, 10, 500, 1000, "2020-07-05 00:00:10.000", 20200705, day + 10, 0.5)
    b = (1, 11, 4000, 1000, "2020-07-05 00:01:00.000", 20200705, day + 60, 4.0)
    skewed = (1, 12, 0, 1000, "2020-06-23 08:00:00.000", 20200706, day - 11.667 * 86400, 0.0)
    late = (2, 10, 900, 1000, "2020-09-10 07:00:00.000", 20200905, day + 67.29 * 86400, 0.9)
    big = _views([a, b, a, skewed, late, late])  # one duplicate apart, one right after
    small = _views(
        [(1, 20, 1, 1000, None, None, None, 0.001)] * 1
        + [(1, 21, 2, 1000, "2020-07-05 00:00:10.000", 20200705.0, day + 10, 0.002)]
    )
    stats = release_stats(big, small)
    assert stats["big_duplicates_adjacent"] == pytest.approx(0.5)
    assert stats["big_user_days"] == 3  # (1, Jul 5), (1, Jul 6), (2, Sep 5)
    assert stats["big_user_day_median"] == 2
    assert stats["small_user_days"] == 1  # the row without a date does not count
    assert stats["big_time_min"] == pytest.approx(-11.667, abs=1e-6)
    assert stats["big_time_max"] == pytest.approx(67.29, abs=1e-6)
    assert stats["big_date_mismatch"] == pytest.approx(3 / 6)  # the skewed and late rows
    assert stats["big_wr_max"] == 4.0 and stats["big_play_max"] == 4000
    assert stats["video_rows_max"] == 2  # video 10: a and late (dedup)

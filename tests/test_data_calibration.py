"""Calibration report: statistics from the CSVs, scaled targets, pass/fail and the CLI."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.calibration import (
    LEARNABILITY_TARGETS,
    TARGETS,
    Check,
    Target,
    all_passed,
    calibrate,
    compute_stats,
    release_stats,
    report_table,
)
from shortrec.data.learnability import (
    REAL_BUCKET_EDGES_MS,
    like_buckets,
    like_thresholds,
    ndcg_at_10,
    random_ndcg_at_10,
    real_range_thresholds,
    tune_users,
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
    assert len(table.output.splitlines()) == len(calibrate(tiny_synth_raw)) + 2
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


def test_like_buckets_grow_by_15_percent_and_merge_until_each_is_full():
    durations = np.r_[np.full(30, 1000.0), np.full(30, 1200.0), np.full(25, 2000.0),
                      np.full(5, 9000.0)]  # fmt: skip
    edges = like_buckets(durations, min_views=20)
    # fine edges 1150, 1322.5, ...: 1 s and 1.2 s fill one bucket each, 2 s a third; the 5
    # views at 9 s cannot fill a fourth and fold into the third (its edge opens up).
    assert edges[:2] == pytest.approx([1150.0, 1322.5])
    assert np.isinf(edges[-1]) and len(edges) == 3
    ratios = np.r_[np.linspace(0, 1, 30), np.linspace(0, 2, 30), np.linspace(0, 3, 30)]
    _, thresholds = like_thresholds(durations, ratios, min_views=20)
    assert thresholds[0] == pytest.approx(np.quantile(ratios[:30], 0.8))
    assert thresholds[2] == pytest.approx(np.quantile(ratios[60:], 0.8))


def test_thresholds_are_compared_per_real_length_range_whatever_the_world_merged():
    edges = np.asarray(REAL_BUCKET_EDGES_MS)
    # 600 views in the real 151.7-174.5 s range, 600 above it, and a thin range below.
    durations = np.r_[np.full(600, 160_000.0), np.full(600, 250_000.0), np.full(50, 140_000.0)]
    ratios = np.r_[np.linspace(0, 0.1, 600), np.linspace(0, 0.05, 600), np.full(50, 0.3)]
    # The world's own rule merged all three into one bucket (one threshold for all).
    merged_edges, merged = like_thresholds(durations, ratios, min_views=10_000)
    assert len(merged_edges) == 1
    per_range = real_range_thresholds(durations, ratios, merged_edges, merged, min_views=100)
    assert len(per_range) == len(edges) + 1
    assert per_range[-2] == pytest.approx(np.quantile(ratios[:600], 0.8))
    assert per_range[-1] == pytest.approx(np.quantile(ratios[600:1200], 0.8))
    # 131.9-151.7 s holds 50 views, under min_views: the merged bucket's threshold stands.
    assert per_range[-3] == pytest.approx(merged[0])


def test_reference_ndcg_and_the_random_expectation():
    relevant = np.zeros((2, 20), bool)
    relevant[0, [0, 1]] = True
    relevant[1, 19] = True
    scores = -np.arange(20.0)[None, :].repeat(2, 0)  # video 0 first
    assert ndcg_at_10(scores, relevant) == pytest.approx([1.0, 0.0])
    rng = np.random.default_rng(0)
    draws = [ndcg_at_10(rng.random((2, 20)), relevant) for _ in range(4000)]
    assert random_ndcg_at_10(relevant) == pytest.approx(np.mean(draws, 0), abs=0.01)
    share = tune_users(np.arange(5000)).mean()
    assert 0.18 < share < 0.22
    assert (tune_users(np.arange(50)) == tune_users(np.arange(50))).all()


def test_learnability_rows_run_on_a_tiny_world_and_fail_strict_when_too_easy(
    tiny_synth_raw, tmp_path
):
    checks = {c.target.key: c for c in calibrate(tiny_synth_raw)}
    assert {t.key for t in LEARNABILITY_TARGETS} <= set(checks)
    assert all(t.source for t in LEARNABILITY_TARGETS)
    genuine = checks["lrn_popularity_ndcg"].actual
    # The world's popularity is read on all its small_matrix users; the tune-user one is shown.
    assert checks["lrn_popularity_ndcg"].checked and not checks["lrn_popularity_ndcg_tune"].checked
    assert 0.0 < checks["lrn_random_ndcg_test"].actual < 0.5 and genuine < 0.6
    assert checks["lrn_train_positive"].actual == pytest.approx(0.2, abs=0.01)
    # An easy release: in small_matrix, users like exactly the videos most viewed in big_matrix.
    big = pl.read_csv(tiny_synth_raw / "big_matrix.csv", schema=INTERACTION_COLUMNS)
    small = pl.read_csv(tiny_synth_raw / "small_matrix.csv", schema=INTERACTION_COLUMNS)
    # The hash's tune draw is checked as a share of users against its binomial spread, and
    # the rows as rows per user.
    in_tune = tune_users(small["user_id"].unique().to_numpy())
    spread = np.sqrt(0.2 * 0.8 / len(in_tune))
    assert checks["lrn_tune_share_sd"].actual == pytest.approx((in_tune.mean() - 0.2) / spread)
    assert checks["lrn_tune_rows_per_user"].actual * in_tune.sum() == pytest.approx(
        checks["lrn_tune_rows"].actual
    )
    assert not checks["lrn_tune_rows"].checked
    viewers = big.group_by("video_id").agg(pl.col("user_id").n_unique().alias("n"))
    head = viewers.filter(pl.col("video_id").is_in(small["video_id"].unique().implode()))
    head = head.sort("n", descending=True).head(15)["video_id"]
    easy = small.with_columns(
        pl.when(pl.col("video_id").is_in(head.implode()))
        .then(50.0)
        .otherwise(0.0)
        .alias("watch_ratio")
    )
    big.write_csv(tmp_path / "big_matrix.csv")
    easy.write_csv(tmp_path / "small_matrix.csv")
    (tmp_path / "world.json").write_text((tiny_synth_raw / "world.json").read_text())
    too_easy = {c.target.key: c for c in calibrate(tmp_path)}
    assert too_easy["lrn_popularity_ndcg"].actual > 0.9
    assert not too_easy["lrn_popularity_ndcg"].passed
    strict = CliRunner().invoke(app, ["data", "calibrate", str(tmp_path), "--strict"])
    assert strict.exit_code == 1 and "reference popularity" in strict.output
    fast = CliRunner().invoke(app, ["data", "calibrate", str(tiny_synth_raw), "--no-learnability"])
    assert fast.exit_code == 0 and "reference popularity" not in fast.output

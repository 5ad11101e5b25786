"""How close a KuaiRec-format release is to the published statistics of the real one.

A synthetic world is only a useful stand-in if its files look like the real files where it
matters: sizes, density, the watch_ratio distribution and its tail, activity skew per user, per
video and per user-day, duplicates and where they sit, nulls, and the time range.
The targets are quoted from kuairec_reference_stats.md (official README and statistics
notebook, paper, public analyses of the real files) and embedded here, so the check needs
nothing but the release. Smaller worlds scale the size-dependent targets by their share of
users and videos. Extremes (a maximum, the first and last timestamp) are single rows, so they
get wider or absolute tolerances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from shortrec.data.schema import INTERACTION_COLUMNS

REAL_BIG_USERS, REAL_BIG_VIDEOS = 7176, 10728
REAL_SMALL_USERS, REAL_SMALL_VIDEOS = 1411, 3327
# Timestamps are checked in days from the first date's local midnight (2020-07-05 00:00 at
# UTC+8), so their tolerance reads in days.
FIRST_DAY_EPOCH_S = 1_593_878_400
_DAY_S = 86_400


THRESHOLD_TOLERANCE = 0.15
# Real like thresholds per length bucket of the reference split (kuairec_reference_stats.md).
REAL_THRESHOLDS: tuple[tuple[str, float], ...] = (
    ("<=3.5 s", 3.0894), ("3.5-4.0 s", 2.6224), ("4.0-4.6 s", 2.3066), ("4.6-5.3 s", 2.0557),
    ("5.3-6.1 s", 1.8622), ("6.1-7.0 s", 1.69), ("7.0-8.1 s", 1.4861), ("8.1-9.3 s", 1.295),
    ("9.3-10.7 s", 1.1435), ("10.7-12.3 s", 1.0289), ("12.3-14.1 s", 0.9128),
    ("14.1-16.2 s", 0.784), ("16.2-18.6 s", 0.6639), ("18.6-21.4 s", 0.5715),
    ("21.4-24.7 s", 0.4876), ("24.7-28.4 s", 0.4227), ("28.4-32.6 s", 0.3658),
    ("32.6-37.5 s", 0.3049), ("37.5-43.1 s", 0.2756), ("43.1-49.6 s", 0.246),
    ("49.6-57.0 s", 0.2115), ("57.0-65.6 s", 0.1911), ("65.6-75.4 s", 0.1631),
    ("75.4-86.7 s", 0.1397), ("86.7-114.7 s", 0.1094), ("114.7-131.9 s", 0.0955),
    ("131.9-151.7 s", 0.0767), ("151.7-174.5 s", 0.0719), (">174.5 s", 0.0514),
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """One published statistic. `scaled_by` names what it grows with in a smaller world:
    "big_cells", "small_cells", "videos" (per-user counts), "users" (per-video counts),
    "small_videos" and "small_users" likewise in small_matrix."""

    key: str
    label: str
    value: float
    source: str
    tolerance: float | None = 0.10  # relative; None = reported, not checked
    scaled_by: str = ""
    absolute: bool = False  # the tolerance is in the statistic's own unit


TARGETS: tuple[Target, ...] = (
    Target("big_rows", "big_matrix rows", 12_530_806, "official README", scaled_by="big_cells"),
    Target("small_rows", "small_matrix rows", 4_676_570, "official README",
           scaled_by="small_cells"),
    Target("big_density", "big_matrix density (rows / cells)", 0.16277, "official README"),
    Target("small_density", "small_matrix density", 0.9962, "official README; njbabani"),
    Target("big_distinct_pairs", "big_matrix distinct (user, video) pairs", 10_300_969,
           "KRAFT ALS matrix nnz", scaled_by="big_cells"),
    Target("big_duplicate_rate", "big_matrix exact duplicate rows", 965_819 / 12_530_806,
           "Amine-Mike; LabbeClement"),
    Target("small_null_rate", "small_matrix rows without time", 181_992 / 4_676_570,
           "Amine-Mike; njbabani; TIDJK94"),
    Target("big_wr_mean", "big watch_ratio mean", 0.9445059, "SolideSpoke; CharlesPrioux"),
    Target("big_wr_p25", "big watch_ratio p25", 0.3148246, "SolideSpoke; CharlesPrioux"),
    Target("big_wr_median", "big watch_ratio median", 0.723471, "SolideSpoke; njbabani"),
    Target("big_wr_p75", "big watch_ratio p75", 1.177644, "SolideSpoke; CharlesPrioux"),
    Target("big_wr_ge1", "big watch_ratio share >= 1.0", 0.3382, "zhl-2022 data_report"),
    Target("big_wr_lt01", "big watch_ratio share < 0.1", 0.0888, "Same3000", tolerance=0.25),
    Target("big_wr_zero", "big (dedup) watch_ratio share == 0", 0.01919,
           "CharlesPrioux/gabcal07 minus RickHolaaa (derived)", tolerance=0.25),
    Target("small_wr_mean", "small watch_ratio mean", 0.9070695, "SolideSpoke; CharlesPrioux"),
    Target("small_wr_p25", "small watch_ratio p25", 0.4675769, "SolideSpoke; CharlesPrioux"),
    Target("small_wr_median", "small watch_ratio median", 0.7691666, "SolideSpoke"),
    Target("small_wr_p75", "small watch_ratio p75", 1.12059, "SolideSpoke; CharlesPrioux"),
    Target("small_wr_ge1", "small watch_ratio share >= 1.0", 0.3240, "zhl-2022 data_report"),
    Target("user_rows_median", "big rows per user, median", 1846.5, "official stats notebook",
           scaled_by="videos"),
    Target("video_rows_median", "big dedup rows per video, median", 228, "gabcal07; Same3000",
           scaled_by="users"),
    Target("big_date_min", "big date min", 20200705, "QihangStudio", tolerance=0.0),
    Target("big_date_max", "big date max", 20200905, "QihangStudio", tolerance=0.0),
    Target("small_date_min", "small date min", 20200705, "QihangStudio", tolerance=0.0),
    Target("small_date_max", "small date max", 20200905, "QihangStudio", tolerance=0.0),
    Target("big_duration_median", "big video_duration median (ms)", 9636,
           "official stats notebook"),
    Target("big_duration_p25", "big video_duration p25 (ms)", 7434, "official stats notebook"),
    Target("big_duration_p75", "big video_duration p75 (ms)", 12179, "official stats notebook"),
    # The feed's length mix of views beyond the quartiles: real views lean longer (the
    # row-weighted 9th decile is 24.2 s against 20.1 s per video) than the world's, whose
    # exposure falls off above 60 s; reported, not yet modelled (README).
    Target("big_duration_mean", "big video_duration mean (ms)", 14621.57,
           "official stats notebook", tolerance=None),
    Target("big_duration_std", "big video_duration std (ms)", 19834.74,
           "official stats notebook", tolerance=None),
    Target("big_duration_p90", "big video_duration p90 (ms, row-weighted decile, approx.)",
           24240, "Akilson Final_Report (+-3 ms)", tolerance=None),
    Target("small_corr_duration_wr", "small corr(video_duration, watch_ratio)", -0.1624,
           "armleth data_preprocessing", tolerance=0.5),
    # Popularity curve and its head: distinct (dedup) rows per video.
    Target("video_rows_p25", "big dedup rows per video, p25", 36, "gabcal07",
           tolerance=0.25, scaled_by="users"),
    Target("video_rows_p75", "big dedup rows per video, p75", 1971, "gabcal07",
           scaled_by="users"),
    Target("video_rows_std", "big dedup rows per video, std", 1461.14, "gabcal07",
           scaled_by="users"),
    Target("video_rows_max", "big dedup rows of the most-viewed video", 24173,
           "gabcal07; Same3000", tolerance=0.15, scaled_by="users"),
    # Activity per (user, date): every row in big_matrix, rows with a date in small_matrix.
    Target("big_user_days", "big (user, date) groups", 188_322, "official stats notebook",
           scaled_by="users"),
    Target("big_user_day_p25", "big rows per user-day, p25", 19, "official stats notebook",
           scaled_by="videos"),
    Target("big_user_day_median", "big rows per user-day, median", 42,
           "official stats notebook", scaled_by="videos"),
    Target("big_user_day_p75", "big rows per user-day, p75", 83, "official stats notebook",
           scaled_by="videos"),
    Target("big_user_day_std", "big rows per user-day, std", 78.75224,
           "official stats notebook", scaled_by="videos"),
    Target("small_user_days", "small (user, date) groups", 86_671, "official stats notebook",
           scaled_by="small_users"),
    Target("small_user_day_p25", "small rows per user-day, p25", 28, "official stats notebook",
           scaled_by="small_videos"),
    Target("small_user_day_median", "small rows per user-day, median", 47,
           "official stats notebook", scaled_by="small_videos"),
    Target("small_user_day_p75", "small rows per user-day, p75", 70, "official stats notebook",
           scaled_by="small_videos"),
    Target("small_user_day_std", "small rows per user-day, std", 32.608372,
           "official stats notebook", scaled_by="small_videos"),
    # The watch_ratio tail. p95 is not published for big_matrix: 2.40 interpolates the
    # published shares >= 2 (7.49%) and >= 3 (2.76%) log-linearly. The share >= 2 is itself
    # estimated from rounded plot labels, so it gets a wider tolerance. The maximum is one row
    # (seeds 0-2 of the full synthetic world put it between 260 and 500): reported only.
    Target("big_wr_std", "big watch_ratio std", 1.674601, "SolideSpoke"),
    Target("big_wr_ge2", "big watch_ratio share >= 2", 0.0749,
           "Same3000 floored shares + zhl-2022 (derived)", tolerance=0.2),
    Target("big_wr_p95", "big watch_ratio p95", 2.40, "Same3000 floored shares (derived)"),
    Target("big_wr_p99", "big (dedup) watch_ratio p99", 4.7948, "njbabani (event-dedup)"),
    Target("big_wr_max", "big watch_ratio max", 573.4571, "SolideSpoke; njbabani",
           tolerance=None),
    Target("big_play_max", "big play_duration max (ms)", 999_639, "LabbeClement; QihangStudio"),
    # One 2.2-hour play of a 14 s video: reported, too freak a row to check.
    Target("small_play_max", "small play_duration max (ms)", 7_988_155, "TIDJK94",
           tolerance=None),
    # Timestamps run past the date labels (a date is a log partition, not the event day).
    Target("big_time_min", "big first timestamp (days from 2020-07-05 00:00 local)",
           (1_592_872_451.373 - FIRST_DAY_EPOCH_S) / _DAY_S, "TIDJK94; RickHolaaa",
           tolerance=0.5, absolute=True),
    Target("big_time_max", "big last timestamp (days from 2020-07-05 00:00 local)",
           (1_599_694_332.427 - FIRST_DAY_EPOCH_S) / _DAY_S, "TIDJK94; RickHolaaa",
           tolerance=0.5, absolute=True),
    Target("small_time_min", "small first timestamp (days from 2020-07-05 00:00 local)",
           (1_593_800_606.06 - FIRST_DAY_EPOCH_S) / _DAY_S, "PERCY-1417; LabbeClement",
           tolerance=0.5, absolute=True),
    Target("small_time_max", "small last timestamp (days from 2020-07-05 00:00 local)",
           (1_599_321_443.683 - FIRST_DAY_EPOCH_S) / _DAY_S, "PERCY-1417; LabbeClement",
           tolerance=0.5, absolute=True),
    Target("big_date_mismatch", "big rows filed under another date than their local day",
           0.001, "njbabani prepare.py (~0.1%)", tolerance=0.5),
    # Exact duplicates are not written next to their original in the real file.
    Target("big_duplicates_adjacent", "big duplicate rows right after their original", 0.0,
           "issue 10 audit of the real file", tolerance=0.05, absolute=True),
)  # fmt: skip

# Learnability: the reference study's split, label and models on the real release
# (njbabani/kuairec-recsys split_summary.json and results, as quoted in issue 16 and
# kuairec_reference_stats.md; the protocol is in shortrec.data.learnability). NDCG@10 ranks
# all small_matrix videos, so it does not scale with size.
_NJB = "njbabani split_summary.json"
_NJB_RESULTS = "njbabani results (issue 16)"
LEARNABILITY_TARGETS: tuple[Target, ...] = (
    Target("lrn_random_ndcg_test", "reference random, NDCG@10 (test users)", 0.149, _NJB_RESULTS),
    # The real popularity figure is the mean over its 299 tune users, an estimate of the
    # block's figure; a world's own 20% draw of users adds its sampling error again (about
    # +-5% at full scale), so the world is read on all its small_matrix users, as issue 16's
    # table did; its tune-user figure is reported.
    Target("lrn_popularity_ndcg", "reference popularity by distinct viewers, NDCG@10 (all "
           "users; real: tune users)", 0.184, _NJB_RESULTS),
    Target("lrn_popularity_ndcg_tune", "reference popularity by distinct viewers, NDCG@10 "
           "(tune users)", 0.184, _NJB_RESULTS, tolerance=None),
    Target("lrn_als_ndcg_test", "reference ALS on liked views, NDCG@10 (test users)", 0.271,
           _NJB_RESULTS),
    Target("lrn_small_positive", "share of small_matrix views liked (train-fitted rule)", 0.154,
           _NJB_RESULTS),
    Target("lrn_tune_positive", "share liked, tune users", 0.162, _NJB),
    Target("lrn_test_positive", "share liked, test users", 0.152, _NJB),
    Target("lrn_train_positive", "share liked, train views (0.2 by construction)", 0.20, _NJB),
    Target("lrn_train_rows", "train rows (event-dedup big before 2020-08-30)", 9_722_996, _NJB,
           scaled_by="big_cells"),
    Target("lrn_train_users", "train users", 7176, _NJB, scaled_by="users"),
    Target("lrn_train_videos", "train videos", 9246, _NJB, scaled_by="videos"),
    Target("lrn_valid_rows", "validation rows (from 2020-08-30)", 1_839_806, _NJB,
           scaled_by="big_cells"),
    Target("lrn_valid_users", "validation users", 6922, _NJB, scaled_by="users"),
    Target("lrn_valid_videos", "validation videos", 5476, _NJB, scaled_by="videos"),
    Target("lrn_valid_cold_videos", "validation videos never in train", 1482, _NJB,
           scaled_by="videos"),
    Target("lrn_valid_cold_rows", "validation rows of videos never in train", 0.1252, _NJB),
    # The protocol's buckets are merged by view counts, so how many it makes depends on how
    # thinly the long lengths are viewed (real: 86.7-99.7 s held under 10,000 views, each of
    # the three ranges above 131.9 s over 10,000); reported, the thresholds are compared per
    # real range.
    Target("lrn_buckets", "like-rule length buckets (>= 10,000 train views each)", 29, _NJB,
           tolerance=None),
    Target("lrn_valid_repeat_rows", "validation rows repeating an earlier pair", 0.1375, _NJB),
    # The tune/test rows are rows per user times the users the md5 hash of the ids puts in each
    # group. The real block's draw (299 of 1,411 users, 21.2%) is +1.1 sd of the hash's
    # binomial(1,411, 0.2); a world's ids are other ids and draw their own share (at full scale
    # one sd is 5.3% of the tune rows). So the structure is checked (rows per tune and test
    # user, and the positive rates above), the share of users against that binomial spread
    # (within 3 sd of 20%), and the row counts are reported.
    Target("lrn_tune_rows_per_user", "tune rows per tune user", 990_908 / 299, _NJB,
           scaled_by="small_videos"),
    Target("lrn_test_rows_per_user", "test rows per test user", 3_685_662 / 1112, _NJB,
           scaled_by="small_videos"),
    Target("lrn_tune_share_sd", "tune share of small_matrix users, in sd of binomial(users, "
           "0.2) from 20% (real 299 of 1,411: +1.12)", 0.0, _NJB, tolerance=3.0, absolute=True),
    Target("lrn_tune_rows", "tune rows (20% of small_matrix users by hash)", 990_908, _NJB,
           tolerance=None, scaled_by="small_cells"),
    Target("lrn_test_rows", "test rows (80% of small_matrix users by hash)", 3_685_662, _NJB,
           tolerance=None, scaled_by="small_cells"),
) + tuple(
    Target(f"lrn_threshold_{i:02d}", f"like threshold (p80 watch_ratio), {span}", value, _NJB,
           tolerance=THRESHOLD_TOLERANCE)
    for i, (span, value) in enumerate(REAL_THRESHOLDS)
)  # fmt: skip


@dataclass(frozen=True)
class Check:
    target: Target
    expected: float  # the target, scaled to this release's size
    actual: float

    @property
    def difference(self) -> float:
        """What the tolerance is compared with: absolute or relative, as the target says."""
        if self.target.absolute:
            return self.actual - self.expected
        return self.relative_difference

    @property
    def relative_difference(self) -> float:
        if self.expected == 0:
            return 0.0 if self.actual == 0 else float("inf")
        return (self.actual - self.expected) / abs(self.expected)

    @property
    def checked(self) -> bool:
        return self.target.tolerance is not None

    @property
    def passed(self) -> bool:
        if not self.checked or not np.isfinite(self.actual):
            return not self.checked
        return abs(self.difference) <= self.target.tolerance + 1e-12


def _read_matrix(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: calibration needs the KuaiRec CSV files")
    return pl.read_csv(path, schema=INTERACTION_COLUMNS)


def _watch_ratio_stats(prefix: str, ratio: pl.Series) -> dict[str, float]:
    return {
        f"{prefix}_wr_mean": ratio.mean(),
        f"{prefix}_wr_p25": ratio.quantile(0.25, "linear"),
        f"{prefix}_wr_median": ratio.median(),
        f"{prefix}_wr_p75": ratio.quantile(0.75, "linear"),
        f"{prefix}_wr_ge1": (ratio >= 1.0).mean(),
        f"{prefix}_wr_lt01": (ratio < 0.1).mean(),
    }


def _user_day_stats(prefix: str, frame: pl.DataFrame) -> dict[str, float]:
    rows = frame.filter(pl.col("date").is_not_null()).group_by("user_id", "date").len()["len"]
    return {
        f"{prefix}_user_days": rows.len(),
        f"{prefix}_user_day_p25": rows.quantile(0.25, "linear"),
        f"{prefix}_user_day_median": rows.median(),
        f"{prefix}_user_day_p75": rows.quantile(0.75, "linear"),
        f"{prefix}_user_day_std": rows.std(),
    }


def _time_stats(prefix: str, frame: pl.DataFrame) -> dict[str, float]:
    days = (frame["timestamp"] - FIRST_DAY_EPOCH_S) / _DAY_S
    return {f"{prefix}_time_min": days.min(), f"{prefix}_time_max": days.max()}


def _date_mismatch(frame: pl.DataFrame) -> float:
    """Share of rows whose date label is not the Asia/Shanghai day of their timestamp."""
    local_day = ((pl.col("timestamp") + 8 * 3600) // _DAY_S).cast(pl.Int64)
    label_day = pl.col("date").cast(pl.Int64).cast(pl.String).str.to_date("%Y%m%d").cast(pl.Int64)
    timed = frame.filter(pl.col("timestamp").is_not_null())
    return timed.select((local_day != label_day).mean()).item() if timed.height else float("nan")


def _adjacent_duplicates(frame: pl.DataFrame, duplicates: int) -> float:
    """Share of exact duplicate rows written right after an identical row."""
    if duplicates == 0:
        return 0.0
    same = pl.all_horizontal(pl.col(c).eq_missing(pl.col(c).shift(1)) for c in frame.columns)
    return frame.select(same.sum()).item() / duplicates


def compute_stats(directory: str | Path, learnability: bool = True) -> dict[str, float]:
    """The calibration statistics of the big_matrix.csv and small_matrix.csv in `directory`,
    plus the sizes used to scale the targets, and (`learnability`) the reference protocol's
    figures (shortrec.data.learnability)."""
    directory = Path(directory)
    big = _read_matrix(directory / "big_matrix.csv")
    small = _read_matrix(directory / "small_matrix.csv")
    stats = release_stats(big, small)
    stats.update(_world_sizes(directory))
    if learnability:
        from shortrec.data.learnability import MIN_BUCKET_VIEWS, learnability_stats

        # A smaller world fills its length buckets in proportion to its size.
        min_views = max(100, round(MIN_BUCKET_VIEWS * scale_factors(stats)["big_cells"]))
        stats.update(learnability_stats(big, small, min_bucket_views=min_views))
    return stats


def _distinct_pairs(frame: pl.DataFrame) -> int:
    """Distinct (user, video) pairs: ids packed into one integer when they fit (a tenth of
    the memory of a two-column unique at full scale)."""
    ids = frame.select(
        pl.min_horizontal(pl.min("user_id", "video_id")).alias("low"),
        pl.max_horizontal(pl.max("user_id", "video_id")).alias("high"),
    )
    low, high = ids.row(0)
    if low is None or low < 0 or high >= 1 << 31:
        return frame.select("user_id", "video_id").unique().height
    return frame.select((pl.col("user_id") * (1 << 32) + pl.col("video_id")).n_unique()).item()


def release_stats(
    big: pl.DataFrame, small: pl.DataFrame, dedup: pl.DataFrame | None = None
) -> dict[str, float]:
    """The calibration statistics of two interaction tables (KuaiRec columns and dtypes).
    `dedup`: big without its exact duplicate rows, when the caller has it already (the data
    report gets it from streamed row hashes, cheaper than `big.unique()`)."""
    big_users, big_videos = big["user_id"].n_unique(), big["video_id"].n_unique()
    small_users, small_videos = small["user_id"].n_unique(), small["video_id"].n_unique()
    dedup = big.unique() if dedup is None else dedup
    per_video = dedup.group_by("video_id").len()["len"]
    stats = {
        "big_users": big_users,
        "big_videos": big_videos,
        "small_users": small_users,
        "small_videos": small_videos,
        "big_rows": big.height,
        "small_rows": small.height,
        "big_density": big.height / max(big_users * big_videos, 1),
        "small_density": small.height / max(small_users * small_videos, 1),
        "big_distinct_pairs": _distinct_pairs(big),
        "big_duplicate_rate": 1.0 - dedup.height / max(big.height, 1),
        "small_null_rate": small["timestamp"].null_count() / max(small.height, 1),
        **_watch_ratio_stats("big", big["watch_ratio"]),
        "big_wr_zero": (dedup["watch_ratio"] == 0).mean(),
        **_watch_ratio_stats("small", small["watch_ratio"]),
        "user_rows_median": big.group_by("user_id").len()["len"].median(),
        "video_rows_median": per_video.median(),
        "big_date_min": big["date"].min(),
        "big_date_max": big["date"].max(),
        "small_date_min": small["date"].min(),
        "small_date_max": small["date"].max(),
        "big_duration_median": big["video_duration"].median(),
        "big_duration_p25": big["video_duration"].quantile(0.25, "linear"),
        "big_duration_p75": big["video_duration"].quantile(0.75, "linear"),
        "big_duration_mean": big["video_duration"].mean(),
        "big_duration_std": big["video_duration"].std(),
        "big_duration_p90": big["video_duration"].quantile(0.9, "linear"),
        "small_corr_duration_wr": small.select(
            pl.corr(pl.col("video_duration").cast(pl.Float64), "watch_ratio")
        ).item(),
        "video_rows_p25": per_video.quantile(0.25, "linear"),
        "video_rows_p75": per_video.quantile(0.75, "linear"),
        "video_rows_std": per_video.std(),
        "video_rows_max": per_video.max(),
        **_user_day_stats("big", big),
        **_user_day_stats("small", small),
        "big_wr_std": big["watch_ratio"].std(),
        "big_wr_ge2": (big["watch_ratio"] >= 2.0).mean(),
        "big_wr_p95": big["watch_ratio"].quantile(0.95, "linear"),
        "big_wr_p99": dedup["watch_ratio"].quantile(0.99, "linear"),
        "big_wr_max": big["watch_ratio"].max(),
        "big_play_max": big["play_duration"].max(),
        "small_play_max": small["play_duration"].max(),
        **_time_stats("big", big),
        **_time_stats("small", small),
        "big_date_mismatch": _date_mismatch(big),
        "big_duplicates_adjacent": _adjacent_duplicates(big, big.height - dedup.height),
    }
    return {k: float(v) if v is not None else float("nan") for k, v in stats.items()}


def _world_sizes(directory: Path) -> dict[str, float]:
    """Sizes a synthetic world was built for (world.json), which count videos nobody viewed."""
    path = directory / "world.json"
    if not path.exists():
        return {}
    sizes = json.loads(path.read_text()).get("sizes", {})
    keys = {"n_users": "big_users", "n_videos": "big_videos", "n_small_users": "small_users",
            "n_small_videos": "small_videos"}  # fmt: skip
    return {stat: float(sizes[key]) for key, stat in keys.items() if key in sizes}


def scale_factors(stats: dict[str, float]) -> dict[str, float]:
    """How much smaller this release is than the real one, per kind of size."""
    users = stats["big_users"] / REAL_BIG_USERS
    videos = stats["big_videos"] / REAL_BIG_VIDEOS
    small_cells = (stats["small_users"] * stats["small_videos"]) / (
        REAL_SMALL_USERS * REAL_SMALL_VIDEOS
    )
    small_users = stats["small_users"] / REAL_SMALL_USERS
    small_videos = stats["small_videos"] / REAL_SMALL_VIDEOS
    return {"": 1.0, "users": users, "videos": videos, "big_cells": users * videos,
            "small_cells": small_cells, "small_users": small_users,
            "small_videos": small_videos}  # fmt: skip


def calibrate(
    directory: str | Path, stats: dict[str, float] | None = None, learnability: bool = True
) -> list[Check]:
    """Compare the release in `directory` with every target (the learnability ones when
    `learnability` and the stats have them)."""
    stats = compute_stats(directory, learnability) if stats is None else stats
    factors = scale_factors(stats)
    targets = TARGETS + (LEARNABILITY_TARGETS if learnability and "lrn_buckets" in stats else ())
    return [
        Check(target=t, expected=t.value * factors[t.scaled_by], actual=stats[t.key])
        for t in targets
    ]


def _number(x: float) -> str:
    if not np.isfinite(x):
        return str(x)
    if abs(x) >= 1000 or float(x).is_integer():
        return f"{x:,.0f}"
    return f"{x:.4f}"


def _tolerance(target: Target) -> str:
    return f"±{target.tolerance:g}" if target.absolute else f"±{target.tolerance:.0%}"


def report_table(checks: list[Check], title: str = "Calibration against KuaiRec 2.0"):
    """A rich table: statistic, target, synthetic, relative difference, pass/fail."""
    from rich.table import Table

    table = Table(title=title)
    for name, justify in (("statistic", "left"), ("target", "right"), ("synthetic", "right"),
                          ("rel. diff", "right"), ("check", "center")):  # fmt: skip
        table.add_column(name, justify=justify)
    scaled = False
    for check in checks:
        label = check.target.label
        if check.target.scaled_by:
            label += f" (scaled by {check.target.scaled_by})"
            scaled = scaled or check.expected != check.target.value
        if not check.checked:
            verdict = "info"
        elif check.passed:
            verdict = f"[green]pass[/green] ({_tolerance(check.target)})"
        else:
            verdict = f"[red]FAIL[/red] ({_tolerance(check.target)})"
        table.add_row(
            label,
            _number(check.expected),
            _number(check.actual),
            _difference_text(check),
            verdict,
        )
    if scaled:
        table.caption = (
            "Sizes scaled to this release: big_cells = users x videos share of 7,176 x 10,728; "
            "small_cells likewise of 1,411 x 3,327; per-user counts by the video share, "
            "per-video counts by the user share (small_videos, small_users: of small_matrix)."
        )
    return table


def _difference_text(check: Check) -> str:
    return f"{check.difference:+.2f}" if check.target.absolute else f"{check.difference:+.1%}"


def markdown_table(checks: list[Check]) -> str:
    """The report as a Markdown table (the README's calibration table)."""
    lines = ["| statistic | real KuaiRec | synthetic | diff | tolerance |", "|---|---|---|---|---|"]
    for check in checks:
        label = check.target.label + (" (scaled)" if check.expected != check.target.value else "")
        tolerance = _tolerance(check.target) if check.checked else "reported"
        verdict = "" if check.passed else " **FAIL**"
        lines.append(
            f"| {label} | {_number(check.expected)} | {_number(check.actual)} | "
            f"{_difference_text(check)} | {tolerance}{verdict} |"
        )
    return "\n".join(lines) + "\n"


def all_passed(checks: list[Check]) -> bool:
    return all(check.passed for check in checks)

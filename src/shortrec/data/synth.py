"""A synthetic KuaiRec 2.0 release with a known ground truth.

The real interaction files are large and not always at hand; a synthetic world in the exact
file format (same columns, types and quirks) lets the whole toolkit run, and its planted
taste model (synth_taste) gives an oracle: the noise-free expected watch_ratio of every
small_matrix pair. Exposure in big_matrix is missing-not-at-random (biased to popular videos
and to each user's taste); small_matrix is the fully observed block, disjoint from big_matrix.

Exposure is taste-driven (`exposure_taste`: the production feed shows users what it believes
they like, with a per-pair exposure weight exp(exposure_taste * (appeal + belief error))), so
who saw what in big_matrix reveals taste, but only in part: the feed's belief carries its own
low-rank error (`exposure_belief_sd`), and a video's reach is only loosely tied to its quality
(`exposure_quality_corr`). Because exposure selects pairs of high appeal, big_matrix play
times are re-centred on the world's average appeal (`recentre_exposure`); the feed's own
level is then `big_view_context.log_shift`. This keeps the calibrated watch_ratio
distribution independent of how taste-driven exposure is, and leaves every ranking unchanged.

Videos have a life in the feed (`video_life_days`): each is uploaded on some calendar day,
collected or not, and is shown for a few days only, longer when it does well
(`video_life_reach`), so the last window (from 2020-08-30, the reference study's validation
split) brings videos never seen before, each with few rows, and most older ones are no longer
shown. A video reaches in proportion to the traffic of its life, of which only the part on
collected dates is logged, and a user sees it only on days both are in the feed. A new upload
is ramped up (`video_ramp_share`, `video_ramp_power`): trial exposure, then growth over its
life, so a video new in the last window is caught in its growth and has few rows there.
small_matrix videos stay in the feed throughout. Repeat views are partly same-day re-watches
(`rewatch_share`), and the exact duplicates are two date partitions delivered twice
(`REDELIVERED_DATES`). The feed plays a video on in a loop: a big_matrix replay adds a Pareto
number of whole plays of the video (`ViewContext.replay_loops`), which gives the real
watch_ratio tail above its 95th percentile.

What makes small_matrix hard to predict from big_matrix, as in the real release (the
learnability rows of `shortrec data calibrate`): views there were forced, so a large part of
each watch time is momentary noise (`TasteParams.noise_sd`); taste has an idiosyncratic
per-pair part that no tag, category or factor explains (`TasteParams.pair_sd`); and big_matrix
exposure and popularity reveal that taste only partly (above).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from shortrec.data.schema import GROUND_TRUTH_COLUMNS, GROUND_TRUTH_FILE
from shortrec.data.synth_side import (
    CATEGORY_IDS,
    item_categories_frame,
    parse_int_lists,
    read_real_side_files,
    synth_captions,
    synth_categories,
    synth_item_daily_features,
    synth_social_network,
    synth_tags,
    synth_user_features,
)
from shortrec.data.synth_taste import TasteModel, TasteParams, ViewContext
from shortrec.io import atomic_path, atomic_write_text

WORLD_FILE = "world.json"
REAL_USERS, REAL_VIDEOS = 7176, 10728


@dataclass(frozen=True)
class Scale:
    name: str
    n_users: int
    n_videos: int
    n_small_users: int
    n_small_videos: int


SCALES: dict[str, Scale] = {
    "tiny": Scale("tiny", 200, 300, 60, 100),
    "small": Scale("small", 1500, 2000, 300, 500),
    "full": Scale("full", REAL_USERS, REAL_VIDEOS, 1411, 3327),
}

# Reference shapes (kuairec_reference_stats.md), as (quantile, value) knots of an inverse CDF.
# Raw big_matrix rows per user: min, quartiles and max are published; the tail between p75
# and max is set so the mean comes out at the published 1,746.
USER_ROWS_KNOTS = ((0, 100), (0.25, 883), (0.5, 1846.5), (0.75, 2461), (0.95, 3400),
                   (0.995, 5500), (1.0, 16015))  # fmt: skip
# Deduplicated big_matrix rows per video: quartiles published (1 / 36 / 228 / 1,971); tail
# set so the mean comes out near the published 1,078.
VIDEO_VIEWS_KNOTS = ((0, 1), (0.25, 36), (0.5, 228), (0.75, 1971), (0.9, 3600), (0.98, 5500),
                     (1.0, 7000))  # fmt: skip
# Per-video length (ms): published deciles; ends at the published extremes.
DURATION_KNOTS = ((0, 140), (0.01, 3000), (0.1, 4836), (0.2, 6036), (0.3, 7002), (0.4, 8034),
                  (0.5, 9174), (0.6, 10404), (0.7, 11532), (0.8, 13632), (0.9, 20064),
                  (0.97, 60000), (0.995, 180000), (1.0, 315072))  # fmt: skip
SMALL_MIN_DURATION_MS = 3067  # shortest video of the real small_matrix
RAW_ROWS_PER_PAIR = 12_530_806 / 10_300_969
DEDUP_ROWS_PER_PAIR = 11_564_987 / 10_300_969

# Rows per day (digitised from the official date plots): big_matrix has three windows,
# small_matrix every day from Jul 5 to Sep 5.
BIG_DAY_ROWS = {
    "2020-07-05": 186111, "2020-07-06": 213889, "2020-07-07": 252778, "2020-07-08": 275000,
    "2020-07-09": 302778, "2020-07-10": 313889, "2020-07-11": 297222, "2020-07-12": 308333,
    "2020-08-01": 630556, "2020-08-02": 630556, "2020-08-03": 663889, "2020-08-04": 636111,
    "2020-08-05": 1280556, "2020-08-06": 663889, "2020-08-07": 591667, "2020-08-08": 641667,
    "2020-08-09": 586111, "2020-08-10": 569444, "2020-08-27": 363889, "2020-08-28": 375000,
    "2020-08-29": 391667, "2020-08-30": 352778, "2020-08-31": 669444, "2020-09-01": 291667,
    "2020-09-02": 263889, "2020-09-03": 230556, "2020-09-04": 175000, "2020-09-05": 152778,
}  # fmt: skip
# The two spikes of the daily plot, about twice their neighbours, are where the exact duplicates
# are: these dates' log partitions were delivered (almost) twice. Their excess (~1.0M rows) is
# the published 965,819 duplicates, and without it the last window holds the 15.9% of
# event-dedup rows that the reference split counts from 2020-08-30 on.
REDELIVERED_DATES = ("2020-08-05", "2020-08-31")
SMALL_DAY_ROWS = (
    28056,
    38056,
    51944,
    56944,
    66389,
    71389,
    69722,
    77500,
    79167,
    70833,
    79167,
    89722,
    93056,
    100278,
    99722,
    111389,
    85278,
    91389,
    83056,
    80278,
    79722,
    74167,
    78611,
    100278,
    120833,
    128056,
    126944,
    110278,
    108611,
    114167,
    109167,
    115833,
    118056,
    110278,
    111389,
    98611,
    100833,
    71389,
    58611,
    73056,
    87500,
    70833,
    63056,
    60833,
    65278,
    68611,
    70833,
    55833,
    49722,
    48056,
    45833,
    33611,
    33056,
    36944,
    30278,
    35278,
    28611,
    24722,
    19722,
    14722,
    10278,
    4722,
    2500,
)  # fmt: skip  (2020-07-05 .. 2020-09-05)
# Share of rows per local hour 00..23 (Asia/Shanghai).
BIG_HOUR_SHARE = (
    3.12, 3.31, 3.16, 3.04, 3.26, 3.84, 4.51, 5.12, 5.48, 5.76, 5.95, 5.68,
    5.45, 5.20, 4.96, 4.84, 4.50, 4.10, 3.79, 3.69, 3.59, 3.16, 2.52, 1.94,
)  # fmt: skip
SMALL_HOUR_SHARE = (
    4.33, 4.52, 4.27, 3.97, 3.82, 4.05, 4.74, 5.44, 5.75, 5.69, 5.69, 5.43,
    5.27, 4.79, 4.44, 4.11, 3.74, 3.47, 3.37, 3.14, 2.98, 2.74, 2.36, 1.89,
)  # fmt: skip
SHANGHAI_OFFSET_S = 8 * 3600  # Asia/Shanghai had no daylight saving in 2020
# First and last timestamps of the real files (local time): a few events carry a skewed device
# clock, so timestamps run past the dates they are filed under.
BIG_TIME_RANGE = ("2020-06-23T08:34:11.373", "2020-09-10T07:32:12.427")
SMALL_TIME_RANGE = ("2020-07-04T02:23:26.060", "2020-09-05T23:57:23.683")


@dataclass
class SynthConfig:
    """Everything that determines a world; written to world.json beside the files."""

    scale: str = "small"
    seed: int = 0
    side_files: str | None = None
    taste: TasteParams = field(default_factory=TasteParams)
    # big_matrix views come from the production feed: more zero plays, swipes and early exits,
    # and a heavier replay tail than in the fully observed small_matrix block (its published
    # p25 is 0.31 against small_matrix's 0.47). log_shift is relative to the re-centred appeal.
    # The feed plays a video on in a loop: a replay is a Pareto(replay_tail) number of whole
    # plays of the video on top of the view's own play time, which gives the real tail above
    # the 95th percentile (share >= 3 of 2.76%, dedup p99 4.79; a Pareto multiple of the play
    # time, as in small_matrix, leaves it at ~4.0).
    # The feed's logger keeps plays under 1,000 s (the real big_matrix maximum is 999,639 ms).
    big_view_context: ViewContext = field(
        default_factory=lambda: ViewContext(
            log_shift=0.24, noise_sd=0.34, zero_rate=0.0192, skip_rate=0.015, replay_rate=0.03,
            exit_rate=0.36, replay_tail=1.05, max_play_ms=999_639, replay_loops=True,
        )
    )  # fmt: skip
    # How strongly big_matrix exposure follows what the feed believes of a user's taste
    # (exposure weight exp(x * (appeal + belief error))).
    exposure_taste: float = 4.0
    recentre_exposure: float = 1.0  # share of the exposed appeal surplus taken out of play time
    # What the feed believes of a user's taste is wrong by a low-rank error of this sd
    # (log-seconds), so exposure reveals taste only in part.
    exposure_belief_sd: float = 0.4
    exposure_belief_factors: int = 16
    exposure_quality_corr: float = 0.65  # rank correlation of a video's exposure and quality
    # The feed shows very short videos less: the real row-weighted length deciles sit above the
    # per-video ones (p10 6,066 vs 4,836 ms). Weight of log length in the popularity copula.
    exposure_duration_corr: float = 0.2
    small_video_popularity_bias: float = 0.5  # small_matrix videos favour popular ones
    review_rate: float = DEDUP_ROWS_PER_PAIR - 1  # repeat views per distinct pair
    # Share of repeat views that are re-watches the same day as the pair's first view (the
    # rest come on any day of the video's life): the real validation window has 13.75% rows
    # repeating a pair, between the 10.9% of same-day repeats and the ~17% of spread ones.
    rewatch_share: float = 0.5
    # Repeat views pile up on the most-viewed videos: the real top video has 24,173 distinct
    # rows from at most 7,176 users. Extra views per viewer of the video ranked r: enough for
    # the top one to reach top_video_rows (scaled by the user share) times r ** -top_repeat_decay,
    # taken out of the other videos' repeats.
    top_video_rows: float = 24_173
    top_repeat_decay: float = 1.0
    # Exact duplicate rows per distinct row, all of them in the REDELIVERED_DATES partitions.
    duplicate_rate: float = 965_819 / 11_564_987
    small_missing_rate: float = 17_827 / (1411 * 3327)  # unobserved cells of small_matrix
    small_null_rate: float = 181_992 / 4_676_570  # small rows with empty time/date/timestamp
    category_run_share: float = 0.6  # views that come in same-category runs within a day
    # Gamma shape of a user's per-day activity in big_matrix (5: the real user-day quartiles
    # once the dates hold their published rows; 3 left too many light days, p25 17 for 19).
    day_activity_shape: float = 5.0
    # small_matrix users were shown the whole block on a schedule: far steadier days (real
    # rows per user-day: std 32.6 around a mean of 51.9, against 78.8 around 66.5 in big).
    small_day_activity_shape: float = 10.0
    # Users skip whole days: 6.3% of big_matrix's user x date cells and 2.5% of small_matrix's
    # are empty in the real files, more than a user's activity level alone leaves empty.
    absent_day_rate: float = 0.055
    small_absent_day_rate: float = 0.02
    # Videos are uploaded every calendar day and stay in the feed 1 + floor(Exp(this)) days
    # at average reach (0: always): 1,482 of the real 5,476 videos shown from 2020-08-30 were
    # never shown before it.
    video_life_days: float = 2.0
    # The feed keeps what does well: log mean life per sd of reach. 1.4 (was 1.2): a video
    # that will reach far lives long, so when it is new in the last window most of its life
    # is after the log, which keeps the validation rows on new videos near the real 12.5%
    # with less spread between worlds (few big new videos).
    video_life_reach: float = 1.4
    # A new upload is ramped up: trial exposure first, then accelerating growth, full traffic
    # only after this share of its life (day k of a life ramping for r days gets
    # ((k + 1) / (r + 1)) ** video_ramp_power of the full traffic; share 1: it grows all its
    # life), so a video new in the last window, caught in its growth, has fewer rows there
    # than its reach alone gives it (12.5% of the real validation rows are on new videos;
    # 14-16% on seeds 0-2 without the ramp).
    video_ramp_share: float = 1.0
    video_ramp_power: float = 3.0
    # A video's reach grows with the feed traffic of its life (exponent of the life's rows).
    exposure_life_weight: float = 1.0
    # The feed rarely pushes multi-minute videos: popularity copula weight of log length above
    # 60 s (the real split has under 10,000 training views of 87-100 s videos).
    exposure_long_penalty: float = 0.8
    clock_skew_share: float = 0.0005  # events whose timestamp is off by hours to days
    ipf_iterations: int = 20  # strongly taste-driven exposure needs more to fit video targets
    # Per-date factors on the users' days, refitted this many times, keep big_matrix's rows
    # per date on the published daily plot (lives and ramp-ups alone push rows to the ends of
    # the windows: the last days of the log +10-30% without them); 0: no correction.
    calendar_iterations: int = 4

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {self.scale!r}")
        if isinstance(self.taste, dict):
            self.taste = TasteParams(**self.taste)
        if isinstance(self.big_view_context, dict):
            self.big_view_context = ViewContext(**self.big_view_context)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "sizes": dataclasses.asdict(SCALES[self.scale])}


@dataclass
class Release:
    """The tables of a synthetic release, ready to write."""

    tables: dict[str, pl.DataFrame]  # file stem -> frame, in KuaiRec's column order
    ground_truth: pl.DataFrame
    config: SynthConfig


# --- helpers -----------------------------------------------------------------------------------


def _inverse_cdf(knots: tuple, uniform: np.ndarray) -> np.ndarray:
    """Piecewise log-linear quantile function through (quantile, value) knots."""
    q, value = np.array(knots, dtype=np.float64).T
    return np.exp(np.interp(uniform, q, np.log(value)))


def _ranks01(x: np.ndarray) -> np.ndarray:
    """Mid-ranks in (0, 1): a Gaussian copula step that keeps a marginal exact."""
    return (np.argsort(np.argsort(x, kind="stable"), kind="stable") + 0.5) / len(x)


def _hash01(*keys: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic number in [0, 1) per key tuple (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        x = np.full(np.broadcast(*keys).shape, np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
        for key in keys:
            x = (x ^ np.asarray(key).astype(np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
            x ^= x >> np.uint64(31)
            x *= np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _day_epochs(dates: list[str]) -> np.ndarray:
    """Unix time of local midnight of each date."""
    days = np.array(dates, dtype="datetime64[D]").astype("datetime64[s]").astype(np.int64)
    return days - SHANGHAI_OFFSET_S


def _date_ints(dates: list[str]) -> np.ndarray:
    return np.array([int(d.replace("-", "")) for d in dates], dtype=np.int64)


def _small_dates() -> list[str]:
    first = np.datetime64("2020-07-05")
    return [str(first + np.timedelta64(i, "D")) for i in range(len(SMALL_DAY_ROWS))]


# --- world -------------------------------------------------------------------------------------


@dataclass
class _World:
    user_ids: np.ndarray
    video_ids: np.ndarray
    small_users: np.ndarray  # positions into user_ids
    small_videos: np.ndarray  # positions into video_ids
    taste: TasteModel
    tags: list[list[int]]
    category_code: np.ndarray  # dense first-level category index per video
    user_target: np.ndarray  # distinct big_matrix videos per user
    video_target: np.ndarray  # distinct big_matrix users per video
    side: dict[str, pl.DataFrame]
    # First and last big_matrix date (index into BIG_DAY_ROWS) on which each video is shown.
    video_window: np.ndarray | None = None  # (videos, 2) int64
    # Relative traffic of each video on each big_matrix date: 0 outside its life, lower while
    # it ramps up after its upload, 1 at full traffic.
    video_day_traffic: np.ndarray | None = None  # (videos, dates) float32


def _choose_ids(rng: np.random.Generator, scale: Scale) -> tuple[np.ndarray, np.ndarray]:
    if scale.n_users == REAL_USERS and scale.n_videos == REAL_VIDEOS:
        return np.arange(REAL_USERS), np.arange(REAL_VIDEOS)
    users = np.sort(rng.choice(REAL_USERS, scale.n_users, replace=False))
    videos = np.sort(rng.choice(REAL_VIDEOS, scale.n_videos, replace=False))
    return users.astype(np.int64), videos.astype(np.int64)


def _build_world(config: SynthConfig, rng: np.random.Generator) -> _World:
    scale = SCALES[config.scale]
    user_ids, video_ids = _choose_ids(rng, scale)
    n_u, n_v = len(user_ids), len(video_ids)
    if config.side_files:
        side = read_real_side_files(Path(config.side_files), user_ids, video_ids)
        tags = parse_int_lists(side["item_categories"]["feat"])
        category = side["kuairec_caption_category"]["first_level_category_id"].cast(pl.Int64)
        category = category.to_numpy()
    else:
        tags = synth_tags(rng, n_v)
        category = synth_categories(rng, tags)
        side = {
            "item_categories": item_categories_frame(video_ids, tags),
            "kuairec_caption_category": synth_captions(rng, video_ids, category),
            "user_features": synth_user_features(rng, user_ids),
        }
    duration = np.round(_inverse_cdf(DURATION_KNOTS, rng.random(n_v))).astype(np.int64)
    category_codes = np.unique(np.concatenate([CATEGORY_IDS, category]))
    category_code = np.searchsorted(category_codes, category)
    taste = TasteModel.sample(
        config.taste, rng, n_u, duration, tags, category_code, len(category_codes)
    )

    # Activity: the published per-user shape, more active for "full_active" users.
    degree = side["user_features"]["user_active_degree"].to_numpy()
    shift = np.select(
        [degree == "full_active", degree == "high_active", degree == "middle_active"],
        [0.3, -0.8, -1.5],
        -0.3,
    )
    user_u = _ranks01(rng.standard_normal(n_u) + shift)
    user_target = _inverse_cdf(USER_ROWS_KNOTS, user_u) / RAW_ROWS_PER_PAIR * n_v / REAL_VIDEOS
    # Popularity: the published per-video shape, correlated with quality (exposure bias) and
    # lower for videos shorter than 7 s, down to 1 s (the real row-weighted length deciles sit
    # above the per-video ones below the median; sub-second clips still get shown, and give
    # the real extreme watch ratios).
    rho = config.exposure_quality_corr
    shortness = np.clip(np.log(duration / 7_000.0), np.log(1 / 7), 0.0)
    appeal_z = rho * taste.quality / taste.params.quality_sd + np.sqrt(
        1 - rho**2
    ) * rng.standard_normal(n_v)
    # small_matrix's videos favour popular ones (by appeal: the feed's length bias is its own).
    weight = (
        _inverse_cdf(VIDEO_VIEWS_KNOTS, _ranks01(appeal_z)) ** config.small_video_popularity_bias
    )
    small_videos = rng.choice(n_v, scale.n_small_videos, replace=False, p=weight / weight.sum())
    # The real block has no video under 3,067 ms: each shorter pick (~1%) gives way to the
    # unpicked video of admissible length closest to it in popularity.
    picked = np.zeros(n_v, bool)
    picked[small_videos] = True
    for video in np.flatnonzero(picked & (duration < SMALL_MIN_DURATION_MS)):
        admissible = np.flatnonzero(~picked & (duration >= SMALL_MIN_DURATION_MS))
        picked[video] = False
        picked[admissible[np.argmin(np.abs(weight[admissible] - weight[video]))]] = True
    small_videos = np.flatnonzero(picked)
    small_users = np.sort(rng.choice(n_u, scale.n_small_users, replace=False))
    longness = np.maximum(np.log(duration / 60_000.0), 0.0)
    z = (
        appeal_z
        + config.exposure_duration_corr * shortness / max(shortness.std(), 1e-9)
        - config.exposure_long_penalty * longness
    )
    # Lives: the feed keeps a video that does well for longer. A life that runs past either
    # end of the log, or through a gap between its windows, has only part of its viewers
    # logged. small_matrix videos stay in the feed for the whole log, as they did in the block;
    # their own life only sets how far the feed pushes them to other users (a whole-log push
    # for all of them would show them to nearly everyone, and exposure would say nothing of
    # taste).
    video_window, logged_share, life_traffic, upload, ramp_days = _video_windows(
        config, rng, (z - z.mean()) / max(z.std(), 1e-9)
    )
    video_window[small_videos] = (0, len(BIG_DAY_ROWS) - 1)
    logged_share[small_videos] = 1.0
    upload[small_videos] = -(10**6)  # long in the feed: at full traffic throughout
    date_offset = np.array(list(BIG_DAY_ROWS), "datetime64[D]") - np.datetime64("2020-07-05")
    date_index = np.arange(len(BIG_DAY_ROWS))
    in_life = (date_index >= video_window[:, :1]) & (date_index <= video_window[:, 1:])
    age = date_offset.astype(np.int64)[None, :] - upload[:, None]
    ramp = _ramp(age, ramp_days[:, None], config.video_ramp_power)
    video_day_traffic = (in_life * ramp).astype(np.float32)
    # A video reaches in proportion to the traffic of its life, of which only the logged share
    # is in the release. The published per-video shape is that of the logged rows, so it is
    # laid over the logged reach by rank.
    logged_reach = (
        _inverse_cdf(VIDEO_VIEWS_KNOTS, _ranks01(z))
        * life_traffic**config.exposure_life_weight
        * logged_share
    )
    video_target = (
        _inverse_cdf(VIDEO_VIEWS_KNOTS, _ranks01(logged_reach))
        / DEDUP_ROWS_PER_PAIR * n_u / REAL_USERS
    )  # fmt: skip
    return _World(
        user_ids, video_ids, small_users, small_videos, taste, tags, category_code,
        user_target, video_target, side, video_window, video_day_traffic,
    )  # fmt: skip


def _ramp(age_days: np.ndarray, ramp_days: np.ndarray, power: float) -> np.ndarray:
    """Traffic of a video `age_days` after its upload, relative to its full traffic, when it
    ramps up for `ramp_days`."""
    share = (np.asarray(age_days, np.float64) + 1.0) / (ramp_days + 1.0)
    return np.clip(share, 0.0, 1.0) ** power


def _video_windows(
    config: SynthConfig, rng: np.random.Generator, reach_z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each video's life in the feed, in calendar days: uploads arrive at a steady rate every
    day, collected or not, and a video stays floor(Exp(mean)) more days, the mean
    video_life_days x exp(video_life_reach x its standardised reach `reach_z`). The
    release holds the videos whose life meets a collected date, so the videos uploaded during
    the last window are new there, older ones have mostly left the feed, and what a life spends
    in the gaps between the three windows is not logged. Returns the first and last collected
    date (index into BIG_DAY_ROWS) of each life, the share of the life's traffic that falls on
    collected dates (an uncollected day carries an average collected day's traffic), the
    life's traffic (rows; ramped up over the first `video_ramp_share` of the life), its upload
    day (days after 2020-07-05) and how many days it ramps up."""
    dates = np.array(list(BIG_DAY_ROWS), dtype="datetime64[D]")
    n_dates, n_videos = len(dates), len(reach_z)
    window = np.tile(np.array([0, n_dates - 1], np.int64), (n_videos, 1))
    if not config.video_life_days:
        never = np.full(n_videos, -(10**6))
        return window, np.ones(n_videos), np.ones(n_videos), never, np.zeros(n_videos)
    rows = _event_day_rows(config)[0]
    mean_life = config.video_life_days * np.exp(config.video_life_reach * reach_z)
    pad = 60  # days before and after the log from which a life can still reach into it
    days = np.arange(dates[0] - pad, dates[-1] + pad + 1)
    collected = np.isin(days, dates)
    traffic = np.full(len(days), rows.mean())
    traffic[collected] = rows
    cum_traffic = np.r_[0.0, np.cumsum(traffic)]
    cum_logged = np.r_[0.0, np.cumsum(traffic * collected)]
    cum_dates = np.r_[0, np.cumsum(collected)]
    enter, leave = np.zeros(n_videos, np.int64), np.zeros(n_videos, np.int64)
    pending = np.arange(n_videos)
    while len(pending):  # each video's life, given that it meets the log
        start = rng.integers(0, len(days), len(pending))
        end = start + np.floor(rng.exponential(mean_life[pending]))
        end = np.minimum(end.astype(np.int64), len(days) - 1)
        enter[pending], leave[pending] = start, end
        pending = pending[cum_dates[end + 1] == cum_dates[start]]
    window[:, 0] = cum_dates[enter]
    window[:, 1] = cum_dates[leave + 1] - 1
    life = cum_traffic[leave + 1] - cum_traffic[enter]
    logged = cum_logged[leave + 1] - cum_logged[enter]
    ramp_days = config.video_ramp_share * (leave - enter + 1)
    for age in range(int(np.ceil(ramp_days.max(initial=0.0)))):  # the days still ramping up
        day = np.minimum(enter + age, len(days) - 1)
        ramp = _ramp(age, ramp_days, config.video_ramp_power)
        missing = traffic[day] * (1.0 - ramp) * (enter + age <= leave)
        life -= missing
        logged -= missing * collected[day]
    return window, logged / life, life, enter - pad, ramp_days


def _event_day_rows(config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """(distinct events per big_matrix date, share of them written twice): the published
    per-date rows, less the copies of the REDELIVERED_DATES partitions, whose re-delivered
    share gives `duplicate_rate` copies per distinct row overall."""
    rows = np.array(list(BIG_DAY_ROWS.values()), np.float64)
    twice = np.isin(list(BIG_DAY_ROWS), REDELIVERED_DATES)
    rate = config.duplicate_rate
    share = rate * rows.sum() / max(rows[twice].sum() - rate * rows[~twice].sum(), 1e-9)
    share = min(share, 1.0)
    return np.where(twice, rows / (1.0 + share), rows), np.where(twice, share, 0.0)


def _user_day_weights(
    rng: np.random.Generator,
    n_users: int,
    day_rows: np.ndarray,
    shape: float,
    absent_rate: float,
) -> np.ndarray:
    """(users, days) share of each user's activity per collected day: the published per-day
    counts times a gamma(`shape`) factor per user-day, whole days skipped at `absent_rate`."""
    absent = rng.random((n_users, len(day_rows))) < absent_rate
    weight = (
        np.asarray(day_rows, np.float64)[None, :]
        * rng.gamma(shape, size=(n_users, len(day_rows)))
        * np.where(absent, 1e-9, 1.0)
    )
    return weight / weight.sum(1, keepdims=True)


def _exposure_pairs(
    world: _World, config: SynthConfig, rng: np.random.Generator, day_weight: np.ndarray
):
    """Distinct big_matrix (user, video) positions: independent draws with probability
    min(1, a_u * b_v * exp(taste * appeal) * active_uv), a and b fitted (IPF) to the activity
    targets. active_uv is the user's activity (`day_weight`) over the video's life, each day
    weighted by the video's traffic then (`video_day_traffic`): a user sees a video only on
    the days both are in the feed, and less while it ramps up."""
    n_u, n_v = world.taste.n_users, world.taste.n_videos
    barred_users = np.zeros(n_u, bool)
    barred_users[world.small_users] = True
    barred_videos = np.zeros(n_v, bool)
    barred_videos[world.small_videos] = True
    allowed_per_user = n_v - barred_users * len(world.small_videos)
    allowed_per_video = n_u - barred_videos * len(world.small_users)
    user_target = np.minimum(world.user_target, 0.9 * allowed_per_user)
    video_target = np.minimum(world.video_target, 0.9 * allowed_per_video)
    video_target *= user_target.sum() / video_target.sum()
    video_target = np.minimum(video_target, 0.95 * allowed_per_video)

    weight = np.multiply(world.taste.appeal_matrix(), np.float32(config.exposure_taste))
    if config.exposure_belief_sd:
        # The feed shows what it believes a user likes: true appeal plus its own low-rank error.
        k = config.exposure_belief_factors
        scale = np.float32(config.exposure_taste * config.exposure_belief_sd / np.sqrt(k))
        user_error = rng.standard_normal((n_u, k)).astype(np.float32) * scale
        video_error = rng.standard_normal((n_v, k)).astype(np.float32)
        for lo in range(0, n_u, 1024):
            weight[lo : lo + 1024] += user_error[lo : lo + 1024] @ video_error.T
    np.exp(weight, out=weight)
    if world.video_day_traffic is not None:
        days = day_weight.astype(np.float32)
        traffic = world.video_day_traffic.T
        for lo in range(0, n_u, 1024):
            weight[lo : lo + 1024] *= days[lo : lo + 1024] @ traffic
    weight[np.ix_(barred_users, barred_videos)] = 0.0
    weight /= weight.mean()
    a = (user_target / n_v).astype(np.float32)
    b = np.ones(n_v, np.float32)
    rows = 1024

    def probabilities(lo: int) -> np.ndarray:
        block = a[lo : lo + rows, None] * b[None, :] * weight[lo : lo + rows]
        return np.minimum(block, 1.0, out=block)

    for _ in range(config.ipf_iterations):
        colsum = np.zeros(n_v, np.float64)
        for lo in range(0, n_u, rows):
            colsum += probabilities(lo).sum(0)
        b *= (video_target / np.maximum(colsum, 1e-9)).astype(np.float32)
        rowsum = np.concatenate([probabilities(lo).sum(1) for lo in range(0, n_u, rows)])
        a *= (user_target / np.maximum(rowsum, 1e-9)).astype(np.float32)
    users, videos = [], []
    for lo in range(0, n_u, rows):
        p = probabilities(lo)
        r, c = np.nonzero(rng.random(p.shape, dtype=np.float32) < p)
        users.append(r + lo)
        videos.append(c)
    # Every video of the release has at least one big_matrix view, as in the real file.
    unseen = np.setdiff1d(np.arange(n_v), np.concatenate(videos))
    allowed = np.flatnonzero(~barred_users)
    users.append(allowed[rng.integers(0, len(allowed), len(unseen))])
    videos.append(unseen)
    users, videos = np.concatenate(users).astype(np.int64), np.concatenate(videos).astype(np.int64)
    order = np.argsort(users * n_v + videos)
    return users[order], videos[order]


def _timestamps(
    rng: np.random.Generator,
    users: np.ndarray,
    videos: np.ndarray,
    category: np.ndarray,
    n_users: int,
    dates: list[str],
    day_weight: np.ndarray,
    hour_share: tuple[float, ...],
    time_range: tuple[str, str],
    config: SynthConfig,
    seed: int,
    window: np.ndarray | None = None,
    same_day_as: np.ndarray | None = None,
    day_traffic: np.ndarray | None = None,
    day_target: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unix time (ms) and date label of each view. Days follow each user's activity
    (`day_weight`, users x days), within the video's life when `window` is given, weighted by
    the video's traffic of the day when `day_traffic` (videos x days) is (a view lands on the
    same day as view `same_day_as[i]`), each date's share of the views fitted to `day_target`
    when given; hours the published profile.
    Within a user's day, views come partly in same-category runs, as a feed does, so recent
    views predict the next ones. A few views carry a skewed device clock: their timestamp moves
    up to 13 days either way, within the real file's `time_range`."""
    n = len(users)
    n_days = len(dates)

    def draw_days(weight: np.ndarray) -> np.ndarray:
        day = _draw_days(rng, users, videos, weight, window, day_traffic)
        return day if same_day_as is None else day[same_day_as]

    if day_target is None:
        day = draw_days(day_weight)
    else:  # per-date factors on every user's days until the dates hold their published shares
        target = np.asarray(day_target, np.float64) / np.sum(day_target)
        factor = np.ones(n_days)
        for _ in range(config.calendar_iterations):
            held = np.bincount(draw_days(day_weight * factor), minlength=n_days) / n
            factor *= target / np.maximum(held, 1e-12)
        day = draw_days(day_weight * factor)
    share = np.asarray(hour_share) / np.sum(hour_share)
    second_of_day = rng.choice(24, n, p=share) * 3600 + rng.random(n) * 3600
    ms_of_day = np.floor(second_of_day * 1000).astype(np.int64)
    in_run = rng.random(n) < config.category_run_share
    key = np.where(in_run, _hash01(users, day, category[videos], seed=seed), rng.random(n))
    user_day = users * n_days + day  # one sort key per ordering: much faster than lexsort
    by_key = np.argsort(user_day + np.minimum(key, 1 - 1e-9))
    by_time = np.argsort(user_day * 86_400_000 + ms_of_day)
    assigned = np.empty(n, np.int64)
    assigned[by_key] = ms_of_day[by_time]
    epoch_ms = (_day_epochs(dates)[day] * 1000) + assigned
    date_label = _date_ints(dates)[day]
    # The date column is a log-partition label: views in the first 90 s after midnight are
    # sometimes filed under the previous day (~0.1% of rows), when that day was collected.
    previous = np.r_[False, np.diff(_day_epochs(dates)) == 86_400]
    late_filed = (assigned < 90_000) & previous[day] & (rng.random(n) < 0.7)
    date_label = np.where(late_filed, _date_ints(dates)[np.maximum(day - 1, 0)], date_label)
    skewed = np.flatnonzero(rng.random(n) < config.clock_skew_share)
    first, last = (_local_epoch_ms(t) for t in time_range)
    lo = np.maximum(epoch_ms[skewed] - 13 * 86_400_000, first)
    hi = np.minimum(epoch_ms[skewed] + 13 * 86_400_000, last)
    epoch_ms[skewed] = lo + np.floor(rng.random(len(skewed)) * (hi - lo)).astype(np.int64)
    return epoch_ms, date_label


def _draw_days(
    rng: np.random.Generator,
    users: np.ndarray,
    videos: np.ndarray,
    day_weight: np.ndarray,
    window: np.ndarray | None,
    day_traffic: np.ndarray | None,
) -> np.ndarray:
    """A day index per view: in proportion to its user's `day_weight`, within the video's life
    (`window`) and, by rejection, to the video's traffic of the day (`day_traffic`)."""
    n, n_users, n_days = len(users), day_weight.shape[0], day_weight.shape[1]
    cum = np.cumsum(day_weight, axis=1)
    cum = cum / cum[:, -1:]
    if window is None:
        lo, hi = np.zeros(n), np.ones(n)
    else:
        first, last = window[videos, 0], window[videos, 1]
        lo = np.where(first > 0, cum[users, np.maximum(first - 1, 0)], 0.0)
        hi = cum[users, last]
    cum += np.arange(n_users)[:, None]
    flat = cum.ravel()

    def draw(rows: np.ndarray) -> np.ndarray:
        position = lo[rows] + rng.random(len(rows)) * (hi[rows] - lo[rows])
        day = np.searchsorted(flat, users[rows] + position) - users[rows] * n_days
        return np.clip(day, 0, n_days - 1)

    day = draw(np.arange(n))
    if day_traffic is not None:  # rejection: keep a day in proportion to the video's traffic
        peak = np.maximum(day_traffic.max(1), 1e-9)
        pending = np.arange(n)
        for _ in range(100):
            keep = (
                rng.random(len(pending)) * peak[videos[pending]]
                <= day_traffic[videos[pending], day[pending]]
            )
            pending = pending[~keep]
            if not len(pending):
                break
            day[pending] = draw(pending)
    return day


def _local_epoch_ms(local_time: str) -> int:
    """Unix time (ms) of an Asia/Shanghai local time."""
    return int(np.datetime64(local_time, "ms").astype(np.int64)) - SHANGHAI_OFFSET_S * 1000


def _user_time_order(users: np.ndarray, epoch_ms: np.ndarray) -> np.ndarray:
    """Row order by (user, time); time needs < 2^41 ms after the first view (69 years)."""
    return np.argsort((users << 41) + (epoch_ms - epoch_ms.min()), kind="stable")


def _watch(
    world: _World,
    users: np.ndarray,
    videos: np.ndarray,
    rng: np.random.Generator,
    context: ViewContext | None = None,
    appeal_offset: float = 0.0,
) -> np.ndarray:
    """play_duration (ms) of views sorted by (user, time), in chunks of whole users."""
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds = list(starts[:: max(1, len(starts) // max(1, len(users) // 1_500_000 + 1))]) + [
        len(users)
    ]
    play = np.empty(len(users), np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        drift = world.taste.session_drift(users[lo:hi], videos[lo:hi], rng)
        play[lo:hi] = world.taste.sample_play_ms(
            users[lo:hi], videos[lo:hi], drift, rng, context, appeal_offset
        )
    return play


def _interaction_frame(
    world: _World,
    users: np.ndarray,
    videos: np.ndarray,
    epoch_ms: np.ndarray,
    date: np.ndarray,
    play_ms: np.ndarray,
) -> pl.DataFrame:
    duration = world.taste.duration_ms[videos]
    return pl.DataFrame(
        {
            "user_id": world.user_ids[users],
            "video_id": world.video_ids[videos],
            "play_duration": play_ms,
            "video_duration": duration,
            "epoch_ms": epoch_ms,
            "date": date,
            "watch_ratio": np.round(play_ms / duration, 6),
        }
    ).with_columns(
        (pl.from_epoch("epoch_ms", time_unit="ms") + pl.duration(seconds=SHANGHAI_OFFSET_S))
        .dt.strftime("%Y-%m-%d %H:%M:%S%.3f")
        .alias("time"),
        pl.Series("timestamp", epoch_ms / 1000.0),  # numpy divides exactly: 1593878903.438
    )


_INTERACTION_ORDER = ["user_id", "video_id", "play_duration", "video_duration", "time", "date",
                      "timestamp", "watch_ratio"]  # fmt: skip


def _big_matrix(world: _World, config: SynthConfig, rng: np.random.Generator) -> pl.DataFrame:
    dates = list(BIG_DAY_ROWS)
    event_rows = _event_day_rows(config)[0]
    day_weight = _user_day_weights(
        rng, world.taste.n_users, event_rows, config.day_activity_shape, config.absent_day_rate
    )
    users, videos = _exposure_pairs(world, config, rng, day_weight)
    # Repeat views: more likely for videos the user enjoys.
    appeal = world.taste.pair_appeal(users, videos)
    # Exposure picks what a user likes, so the exposed appeal sits above the world's average;
    # the feed's play times are re-centred on that average, which keeps big_matrix's watch_ratio
    # distribution where the real one is whatever exposure_taste is (ranking is unaffected).
    appeal_offset = -(appeal.mean() - world.taste.mean_appeal()) * config.recentre_exposure
    lift = np.exp(0.5 * (appeal - appeal.mean()))
    lift /= lift.mean()
    viewers = np.bincount(videos, minlength=world.taste.n_videos)
    rank = np.empty(len(viewers))
    rank[np.argsort(-viewers, kind="stable")] = np.arange(1.0, len(viewers) + 1.0)
    top_rows = config.top_video_rows * world.taste.n_users / REAL_USERS
    top_repeats = max(top_rows / viewers.max() - 1.0 - config.review_rate, 0.0)
    top = top_repeats * rank[videos] ** -config.top_repeat_decay * lift
    budget = config.review_rate * len(users)  # the head never takes more than every repeat
    top *= min(1.0, budget / max(top.sum(), 1e-9))
    rest = (budget - top.sum()) / len(users)
    extra = rng.poisson(rest * lift + top)
    first = np.repeat(np.cumsum(1 + extra) - 1 - extra, 1 + extra)
    users, videos = np.repeat(users, 1 + extra), np.repeat(videos, 1 + extra)
    # A repeat view is a re-watch the same day as the pair's first view or, otherwise, comes
    # on any day of the video's life.
    rewatch = (np.arange(len(users)) != first) & (rng.random(len(users)) < config.rewatch_share)
    same_day_as = np.where(rewatch, first, np.arange(len(users)))
    epoch_ms, date = _timestamps(
        rng, users, videos, world.category_code, world.taste.n_users, dates, day_weight,
        BIG_HOUR_SHARE, BIG_TIME_RANGE, config, config.seed * 2 + 1, world.video_window,
        same_day_as, world.video_day_traffic, event_rows,
    )  # fmt: skip
    order = _user_time_order(users, epoch_ms)
    users, videos, epoch_ms, date = users[order], videos[order], epoch_ms[order], date[order]
    play = _watch(world, users, videos, rng, config.big_view_context, appeal_offset)
    # The re-delivered share of the REDELIVERED_DATES partitions is set from the events the
    # world put on them (lives and ramp-ups decide that, not the daily plot alone), so the
    # copies are `duplicate_rate` of all rows.
    twice = np.isin(dates, REDELIVERED_DATES)[np.searchsorted(_date_ints(dates), date)]
    rate = config.duplicate_rate
    share = min(1.0, rate * len(date) / max((1.0 - rate) * twice.sum(), 1.0))
    rows = _with_duplicates(users, np.where(twice, share, 0.0), rng)
    frame = _interaction_frame(
        world, users[rows], videos[rows], epoch_ms[rows], date[rows], play[rows]
    )
    return frame.select(_INTERACTION_ORDER)


def _with_duplicates(users: np.ndarray, rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row order with exact duplicates: the same logged event written twice (7.7% of the real
    rows), each row with probability `rate` (its date partition's re-delivered share). The copy
    comes with a later delivery, so it lands at a random later place among the same user's
    rows (`users` sorted), rarely next to its original."""
    n = len(users)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))
    original = np.flatnonzero(rng.random(n) < rate)
    after = original + np.floor(rng.random(len(original)) * (ends[original] - original))
    rows = np.r_[np.arange(n), original]
    key = np.r_[np.arange(n) * 2, after.astype(np.int64) * 2 + 1]
    return rows[np.argsort(key, kind="stable")]


def _small_matrix(world: _World, config: SynthConfig, rng: np.random.Generator) -> pl.DataFrame:
    n_su, n_sv = len(world.small_users), len(world.small_videos)
    observed = rng.random(n_su * n_sv) >= config.small_missing_rate
    cell = np.flatnonzero(observed)
    users, videos = world.small_users[cell // n_sv], world.small_videos[cell % n_sv]
    dates = _small_dates()
    day_weight = _user_day_weights(
        rng,
        world.taste.n_users,
        np.array(SMALL_DAY_ROWS),
        config.small_day_activity_shape,
        config.small_absent_day_rate,
    )
    epoch_ms, date = _timestamps(
        rng, users, videos, world.category_code, world.taste.n_users, dates, day_weight,
        SMALL_HOUR_SHARE, SMALL_TIME_RANGE, config, config.seed * 2 + 2,
    )  # fmt: skip
    order = _user_time_order(users, epoch_ms)
    users, videos, epoch_ms, date = users[order], videos[order], epoch_ms[order], date[order]
    play = _watch(world, users, videos, rng)
    frame = _interaction_frame(world, users, videos, epoch_ms, date, play)
    # Rows without time: some videos lose it far more often than others.
    video_null_rate = rng.beta(2.0, 2.0 / config.small_null_rate - 2.0, world.taste.n_videos)
    no_time = pl.Series(rng.random(len(users)) < video_null_rate[videos])
    return (
        frame.with_columns(
            pl.when(no_time).then(None).otherwise(pl.col(c)).alias(c) for c in ("time", "timestamp")
        )
        .with_columns(
            pl.when(no_time).then(None).otherwise(pl.col("date").cast(pl.Float64)).alias("date")
        )
        .select(_INTERACTION_ORDER)
    )


def _ground_truth(world: _World) -> pl.DataFrame:
    """Noise-free expected watch_ratio of every cell of the small_matrix grid."""
    n_sv = len(world.small_videos)
    users = np.repeat(world.small_users, n_sv)
    videos = np.tile(world.small_videos, len(world.small_users))
    return pl.DataFrame(
        {
            "user_id": world.user_ids[users],
            "video_id": world.video_ids[videos],
            "expected_watch_ratio": world.taste.expected_watch_ratio(users, videos),
        },
        schema=GROUND_TRUTH_COLUMNS,
    )


def load_world_config(path: str | Path) -> SynthConfig:
    """The config a world was generated with, from its world.json."""
    raw = json.loads(Path(path).read_text())
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    return SynthConfig(**{k: v for k, v in raw.items() if k in known})


def planted_taste(config: SynthConfig) -> tuple[TasteModel, np.ndarray, np.ndarray]:
    """(taste model, raw user ids, raw video ids of its rows) of the world `config` generates,
    rebuilt from the same random stream as `generate` (for the feed simulator)."""
    world = _build_world(
        config, np.random.default_rng(np.random.SeedSequence(config.seed).spawn(1)[0])
    )
    return world.taste, world.user_ids, world.video_ids


def generate(config: SynthConfig, progress: bool = True) -> Release:
    """Build the whole release in memory (deterministic given config)."""
    streams = np.random.SeedSequence(config.seed).spawn(4)
    rng_world, rng_big, rng_small, rng_side = (np.random.default_rng(s) for s in streams)
    steps = ["world", "big_matrix", "small_matrix", "side files"]
    bar = tqdm(total=len(steps), desc="synth", unit="step", disable=not progress)
    bar.set_postfix_str(steps[0])
    world = _build_world(config, rng_world)
    bar.update()
    bar.set_postfix_str(steps[1])
    big = _big_matrix(world, config, rng_big)
    bar.update()
    bar.set_postfix_str(steps[2])
    small = _small_matrix(world, config, rng_small)
    truth = _ground_truth(world)
    bar.update()
    bar.set_postfix_str(steps[3])
    views = np.zeros(world.taste.n_videos)
    counts = big.group_by("video_id").len()
    views[np.searchsorted(world.video_ids, counts["video_id"].to_numpy())] = counts["len"]
    tables = {
        "big_matrix": big,
        "small_matrix": small,
        **world.side,
        "item_daily_features": synth_item_daily_features(
            rng_side, world.video_ids, world.taste.duration_ms, world.tags, views + 1
        ),
        "social_network": synth_social_network(rng_side, world.user_ids),
    }
    bar.update()
    bar.close()
    return Release(tables=tables, ground_truth=truth, config=config)


def write_release(release: Release, out: str | Path) -> Path:
    """Write every file atomically; the CSVs in KuaiRec's own layout."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stem, frame in release.tables.items():
        with atomic_path(out / f"{stem}.csv") as tmp:
            frame.write_csv(tmp)
    with atomic_path(out / GROUND_TRUTH_FILE) as tmp:
        release.ground_truth.write_parquet(tmp, statistics=False)
    atomic_write_text(out / WORLD_FILE, json.dumps(release.config.to_dict(), indent=2) + "\n")
    return out


def synthesize(
    out: str | Path,
    config: SynthConfig,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> float:
    """Generate and write a world into `out`; returns the seconds it took."""
    started = time.perf_counter()
    release = generate(config, progress=progress)
    write_release(release, out)
    elapsed = time.perf_counter() - started
    if log:
        log(f"wrote a {config.scale} synthetic KuaiRec world to {out} in {elapsed:.1f} s")
    return elapsed

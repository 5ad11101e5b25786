"""Numeric features of users, videos and viewing histories, for models that need side data.

Static side tables (user_features, tags, caption categories) may be used whole; everything
derived from views (popularity, watch-ratio means, like rates, daily counters) comes from the
training frame only and daily counters stop at the last training date, so no validation or
test view ever reaches a feature. Tables are keyed by raw id; ids a table has never seen look
up as zeros with `found=False`, which models turn into their own fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from shortrec.data.histories import Histories, IdMap
from shortrec.data.labels import LikeRule
from shortrec.data.schema import UNKNOWN_CATEGORY_ID

WATCH_RATIO_CAP = 5.0  # replays of very short videos; means beyond this say nothing about taste
SHRINKAGE_VIEWS = 5.0  # per-video means are pulled towards the global mean by this many views
RANGE_COLUMNS = (
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
)
COUNT_COLUMNS = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
FLAG_COLUMNS = ("is_lowactive_period", "is_live_streamer", "is_video_author")
CATEGORY_LEVELS = {
    "cat1": "first_level_category_id",
    "cat2": "second_level_category_id",
    "cat3": "third_level_category_id",
}
DAILY_SUMS = ("show_cnt", "play_cnt", "like_cnt", "comment_cnt", "share_cnt", "follow_cnt")
DAILY_RATES = {  # name: (numerator, denominator)
    "play_per_show": ("play_cnt", "show_cnt"),
    "complete_per_play": ("complete_play_cnt", "play_cnt"),
    "valid_per_play": ("valid_play_cnt", "play_cnt"),
    "like_per_play": ("like_cnt", "play_cnt"),
    "share_per_play": ("share_cnt", "play_cnt"),
}


@dataclass(frozen=True)
class FeatureTable:
    """A float32 matrix with one row per raw id (sorted) and named columns."""

    ids: np.ndarray
    values: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.ids), len(self.names)):
            raise ValueError(
                f"feature table shape {self.values.shape} does not match "
                f"{len(self.ids)} ids x {len(self.names)} names"
            )

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows of `ids`, found mask); unknown ids get zero rows."""
        pos = IdMap(self.ids).index(np.asarray(ids, dtype=np.int64))
        found = pos >= 0
        rows = (
            self.values[np.maximum(pos, 0)]
            if len(self.ids)
            else np.zeros((len(pos), len(self.names)), dtype=np.float32)
        )
        return np.where(found[:, None], rows, 0.0).astype(np.float32), found

    def columns(self, prefix: str) -> np.ndarray:
        """Positions of the columns whose name starts with `prefix`."""
        return np.array([i for i, n in enumerate(self.names) if n.startswith(prefix)], dtype=int)

    def select(self, keep: list[str]) -> FeatureTable:
        index = {n: i for i, n in enumerate(self.names)}
        return FeatureTable(self.ids, self.values[:, [index[n] for n in keep]], list(keep))

    def to_frame(self, id_column: str) -> pl.DataFrame:
        return pl.DataFrame(
            {id_column: self.ids, **{n: self.values[:, i] for i, n in enumerate(self.names)}}
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, id_column: str) -> FeatureTable:
        frame = frame.sort(id_column)
        names = [c for c in frame.columns if c != id_column]
        values = (
            frame.select(names).to_numpy().astype(np.float32)
            if names
            else np.zeros((frame.height, 0), dtype=np.float32)
        )
        return cls(frame[id_column].to_numpy().astype(np.int64), values, names)


def _one_hot(column: pl.Series, prefix: str, max_levels: int, missing: bool) -> pl.DataFrame:
    """Indicator columns for the `max_levels` most frequent values, plus `other` (rarer values)
    and, where `missing`, a column for nulls, so nothing is silently dropped."""
    counts = column.drop_nulls().value_counts(sort=True)
    levels = counts[column.name].head(max_levels).sort().to_list()
    out = {f"{prefix}={v}": (column == v).fill_null(False) for v in levels}
    if counts.height > max_levels:
        out[f"{prefix}=other"] = column.is_not_null() & ~column.is_in(levels)
    if missing:
        out[f"{prefix}=missing"] = column.is_null()
    return pl.DataFrame(out).cast(pl.Float32)


def user_features(users: pl.DataFrame, max_levels: int = 16) -> FeatureTable:
    """Static user attributes from user_features: activity degree one-hot (UNKNOWN included),
    flags, log1p counts, the range buckets one-hot, and every onehot_feat* as one-hot with
    NaN/null as its own level (they are categorical codes, not quantities)."""
    if "user_id" not in users.columns:
        raise ValueError("user_features table has no 'user_id' column")
    users = users.unique("user_id", keep="first").sort("user_id")
    parts: list[pl.DataFrame] = []
    if "user_active_degree" in users.columns:
        parts.append(_one_hot(users["user_active_degree"], "active", 32, missing=False))
    flags = [c for c in FLAG_COLUMNS if c in users.columns]
    if flags:
        parts.append(users.select(pl.col(flags).fill_null(0).cast(pl.Float32)))
    counts = [c for c in COUNT_COLUMNS if c in users.columns]
    if counts:
        parts.append(
            users.select(
                pl.col(c).cast(pl.Float64).fill_nan(None).fill_null(0).clip(0).log1p()
                .cast(pl.Float32).alias(f"log1p_{c}")
                for c in counts
            )
        )  # fmt: skip
    for c in RANGE_COLUMNS:
        if c in users.columns:
            parts.append(_one_hot(users[c], c, 32, missing=False))
    for c in sorted((c for c in users.columns if c.startswith("onehot_feat")), key=_feat_number):
        codes = users[c].cast(pl.Float64).fill_nan(None)
        parts.append(_one_hot(codes.cast(pl.Int64), c, max_levels, missing=True))
    frame = pl.concat(parts, how="horizontal") if parts else pl.DataFrame()
    values = frame.to_numpy().astype(np.float32) if frame.width else np.zeros((users.height, 0))
    return FeatureTable(
        users["user_id"].to_numpy().astype(np.int64), values.astype(np.float32), frame.columns
    )


def _feat_number(name: str) -> int:
    return int(name.removeprefix("onehot_feat"))


def training_popularity(train: pl.DataFrame, like_rule: LikeRule) -> pl.DataFrame:
    """Per video over training views: views, distinct users, and shrunk means of the capped
    watch ratio and of the like rate (rare videos are pulled towards the global mean).
    `like_rule` is the run's fitted rule."""
    views = train.select("user_id", "video_id", "watch_ratio").with_columns(
        pl.col("watch_ratio").clip(0, WATCH_RATIO_CAP).alias("wr"),
        pl.Series("liked", like_rule.liked(train)).cast(pl.Float64),
    )
    global_wr = float(views["wr"].mean() or 0.0)
    global_like = float(views["liked"].mean() or 0.0)
    total = max(views.height, 1)
    m = SHRINKAGE_VIEWS
    return views.group_by("video_id").agg(
        pl.len().log1p().alias("train_log1p_views"),
        ((pl.len() + 1) / total).log().alias("train_log_share"),
        pl.col("user_id").n_unique().log1p().alias("train_log1p_users"),
        ((pl.col("wr").sum() + m * global_wr) / (pl.len() + m)).alias("train_mean_watch_ratio"),
        ((pl.col("liked").sum() + m * global_like) / (pl.len() + m)).alias("train_like_rate"),
    )


def daily_statistics(daily: pl.DataFrame, last_date: int) -> pl.DataFrame:
    """Per video, the platform-wide daily counters summed up to `last_date` (inclusive):
    log1p totals and a few rates. Later days would leak the evaluation period."""
    present = [c for c in DAILY_SUMS if c in daily.columns]
    upto = daily.filter(pl.col("date").cast(pl.Int64) <= last_date)
    needed = sorted({*present, *(c for pair in DAILY_RATES.values() for c in pair)})
    sums = upto.group_by("video_id").agg(
        *(pl.col(c).cast(pl.Float64).fill_nan(None).sum() for c in needed if c in daily.columns),
        (
            pl.col("play_progress").cast(pl.Float64).fill_nan(None).mean().fill_null(0)
            if "play_progress" in daily.columns
            else pl.lit(0.0)
        ).alias("daily_mean_play_progress"),
    )
    exprs = [pl.col(c).log1p().alias(f"daily_log1p_{c}") for c in present]
    for name, (num, den) in DAILY_RATES.items():
        if num in sums.columns and den in sums.columns:
            exprs.append(
                pl.when(pl.col(den) > 0)
                .then((pl.col(num) / pl.col(den)).clip(0, 1))
                .otherwise(0.0)
                .alias(f"daily_{name}")
            )
    return sums.select("video_id", "daily_mean_play_progress", *exprs).with_columns(
        pl.lit(1.0).alias("daily_present")
    )


def video_features(
    videos: pl.DataFrame,
    train: pl.DataFrame,
    daily: pl.DataFrame | None = None,
    *,
    like_rule: LikeRule,
    max_levels: int = 48,
) -> FeatureTable:
    """Content (multi-hot tags, three category levels with -124 as its own `unknown` level,
    log duration) for every video of the side tables or of `train`, plus training popularity
    and daily statistics up to the last training date. Videos without training views keep
    their content features and get zero popularity: the cold-start path."""
    ids = pl.concat(
        [videos.select(pl.col("video_id").cast(pl.Int64)),
         train.select(pl.col("video_id").cast(pl.Int64))]
    ).unique().sort("video_id")  # fmt: skip
    table = ids.join(videos, on="video_id", how="left")
    parts: list[pl.DataFrame] = []
    if "tags" in table.columns:
        tags = table.select(pl.int_range(pl.len()).alias("_row"), "tags").explode("tags")
        tags = tags.drop_nulls("tags")
        vocab = np.sort(tags["tags"].unique().to_numpy())
        multi_hot = np.zeros((table.height, len(vocab)), dtype=np.float32)
        multi_hot[tags["_row"].to_numpy(), np.searchsorted(vocab, tags["tags"].to_numpy())] = 1
        parts.append(pl.DataFrame(multi_hot, schema=[f"tag={t}" for t in vocab]))
    for prefix, column in CATEGORY_LEVELS.items():
        if column in table.columns:
            level = table.select(
                pl.when(pl.col(column) == UNKNOWN_CATEGORY_ID)
                .then(None)
                .otherwise(pl.col(column))
                .cast(pl.Int64)
                .alias(prefix)
            )[prefix]
            parts.append(_one_hot(level, prefix, max_levels, missing=True))
    # Duration: the side table's (median over all views, a static attribute) else training's;
    # a log with neither (an imported log, a SASRec text file) has no duration columns.
    sources = [pl.col(c).cast(pl.Float64) for c in ("video_duration",) if c in table.columns]
    if "video_duration" in train.columns:
        train_duration = train.group_by("video_id").agg(
            pl.col("video_duration").median().alias("_train_duration")
        )
        table = table.join(train_duration, on="video_id", how="left")
        sources.append(pl.col("_train_duration").cast(pl.Float64))
    if sources:
        duration = table.select(pl.coalesce(sources).alias("d"))["d"]
        parts.append(
            pl.DataFrame(
                {
                    "log_duration_s": (duration.fill_null(0).clip(0) / 1000.0).log1p(),
                    "duration_missing": duration.is_null(),
                }
            ).cast(pl.Float32)
        )
    popularity = training_popularity(train, like_rule)
    pop_columns = [c for c in popularity.columns if c != "video_id"]
    joined = ids.join(popularity, on="video_id", how="left")
    parts.append(
        joined.select(
            *(pl.col(c).fill_null(0.0) for c in pop_columns),
            pl.col("train_log1p_views").is_not_null().alias("seen_in_train"),
        )
        .with_columns(
            # Unseen videos: log share of half a view, so the scale stays continuous.
            pl.when(pl.col("seen_in_train"))
            .then(pl.col("train_log_share"))
            .otherwise(float(np.log(0.5 / max(train.height, 1))))
            .alias("train_log_share")
        )
        .cast(pl.Float32)
    )
    if daily is not None and train.height and "date" in train.columns:
        last_date = int(train["date"].drop_nulls().max())
        stats = daily_statistics(daily, last_date)
        stat_columns = [c for c in stats.columns if c != "video_id"]
        parts.append(
            ids.join(stats, on="video_id", how="left")
            .select(pl.col(stat_columns).fill_null(0.0))
            .cast(pl.Float32)
        )
    frame = pl.concat(parts, how="horizontal")
    return FeatureTable(
        ids["video_id"].to_numpy(), frame.to_numpy().astype(np.float32), frame.columns
    )


def history_features(
    views: pl.DataFrame, video_durations: FeatureTable | None = None, *, like_rule: LikeRule,
) -> FeatureTable:  # fmt: skip
    """Per user aggregates of their views: volume, capped watch-ratio mean/std/median, like rate,
    mean log duration watched, active days. `views` needs user_id, video_id, watch_ratio;
    video_duration and timestamp are used when present (durations may come from `video_durations`,
    a table with a `log_duration_s` column, e.g. the video features); `like_rule` is fitted."""
    views = views.with_columns(pl.col("watch_ratio").cast(pl.Float64).fill_null(0.0))
    if "video_duration" in views.columns:
        log_duration = (views["video_duration"].cast(pl.Float64).fill_null(0) / 1000).log1p()
    elif video_durations is not None and "log_duration_s" in video_durations.names:
        rows, _ = video_durations.lookup(views["video_id"].to_numpy())
        log_duration = pl.Series(rows[:, video_durations.names.index("log_duration_s")])
    else:
        log_duration = pl.Series(np.zeros(views.height))
    if like_rule.kind == "duration" and "video_duration" not in views.columns:
        duration_ms = np.expm1(log_duration.to_numpy()) * 1000
        views = views.with_columns(pl.Series("video_duration", duration_ms))
    frame = views.with_columns(
        pl.col("watch_ratio").clip(0, WATCH_RATIO_CAP).alias("wr"),
        pl.Series("liked", like_rule.liked(views) if views.height else []).cast(pl.Float64),
        log_duration.cast(pl.Float64).alias("log_duration"),
    )
    day = (pl.col("timestamp") // 86_400).n_unique() if "timestamp" in frame.columns else pl.lit(0)
    table = (
        frame.group_by("user_id")
        .agg(
            pl.len().log1p().alias("history_log1p_views"),
            pl.col("video_id").n_unique().log1p().alias("history_log1p_videos"),
            pl.col("wr").mean().alias("history_mean_watch_ratio"),
            pl.col("wr").median().alias("history_median_watch_ratio"),
            pl.col("wr").std().fill_null(0).alias("history_std_watch_ratio"),
            pl.col("liked").mean().alias("history_like_rate"),
            pl.col("log_duration").mean().alias("history_mean_log_duration"),
            day.cast(pl.Float64).log1p().alias("history_log1p_days"),
        )
        .with_columns(pl.col(pl.Float64).fill_nan(0.0))
    )
    return FeatureTable.from_frame(table, "user_id")


def history_views(histories: Histories, user_ids: np.ndarray) -> pl.DataFrame:
    """The views of `user_ids` held in `histories` (user_id, video_id, watch_ratio, timestamp),
    gathered from the CSR slices without scanning the whole table."""
    users = np.unique(np.asarray(user_ids, dtype=np.int64))
    owner, flat = histories.gather(users)
    return pl.DataFrame(
        {
            "user_id": users[owner],
            "video_id": histories.video_ids[flat],
            "watch_ratio": histories.watch_ratios[flat].astype(np.float64),
            "timestamp": histories.timestamps[flat],
        }
    )


def content_profiles(
    views: pl.DataFrame, videos: FeatureTable, prefixes: tuple[str, ...] = ("tag=", "cat1=")
) -> FeatureTable:
    """Per user, the mean over their views of the videos' content columns (`prefixes`): what
    share of a user's viewing goes to each tag and top-level category."""
    keep = [n for n in videos.names if n.startswith(prefixes)]
    users = IdMap.from_ids(views["user_id"])
    if not keep or not len(users):
        return FeatureTable(users.raw_ids, np.zeros((len(users), len(keep)), np.float32), keep)
    content = videos.select(keep)
    video_rows = IdMap(content.ids).index(views["video_id"].to_numpy())
    known = video_rows >= 0
    counts = sp.csr_matrix(
        (np.ones(int(known.sum()), np.float32),
         (users.index(views["user_id"].to_numpy())[known], video_rows[known])),
        shape=(len(users), len(content.ids)),
    )  # fmt: skip
    totals = np.asarray(counts.sum(axis=1)).ravel()
    profile = np.asarray(counts @ content.values) / np.maximum(totals, 1.0)[:, None]
    return FeatureTable(users.raw_ids, profile.astype(np.float32), keep)


def pair_affinities(
    profiles: FeatureTable, videos: FeatureTable, user_ids: np.ndarray, video_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """For aligned (user, video) pairs: dot product of the user's content profile with the
    video's content per column group (`tag_affinity`, `cat1_affinity`)."""
    user_rows, _ = profiles.lookup(user_ids)
    video_rows, _ = videos.select(profiles.names).lookup(video_ids)
    out = {}
    for prefix in sorted({n.split("=")[0] for n in profiles.names}):
        cols = profiles.columns(prefix + "=")
        out[f"{prefix}_affinity"] = (user_rows[:, cols] * video_rows[:, cols]).sum(axis=1)
    return out


def label_holdout(
    train: pl.DataFrame, days: float, last_share: float = 0.1, min_user_share: float = 0.5
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(earlier views, label views, how they were split): the last `days` days when the
    timestamps span them and at least `min_user_share` of the training users viewed
    something in them, else each user's last `last_share` of views.

    The label users are the population a model fitted on the labels learns to rank for. A
    feed's last days hold nearly every user; a rating log's (users who rate a batch once and
    leave, years apart) hold a handful of atypical ones, and so do logs whose timestamps are
    only positions (a SASRec text file) or span less than `days`."""
    try:
        early, late = time_holdout(train, days)
        covered = late["user_id"].n_unique() / max(train["user_id"].n_unique(), 1)
        if covered >= min_user_share:
            return early, late, f"last {days:g} days"
    except ValueError:
        pass
    ranked = train.with_row_index("_row").with_columns(
        pl.col("timestamp").rank("ordinal").over("user_id").alias("_rank"),
        pl.len().over("user_id").alias("_n"),
    )
    is_late = (pl.col("_rank") > (pl.col("_n") * (1 - last_share)).floor()) & (pl.col("_n") > 1)
    early = ranked.filter(~is_late).sort("_row").drop("_row", "_rank", "_n")
    late = ranked.filter(is_late).sort("_row").drop("_row", "_rank", "_n")
    if early.height == 0 or late.height == 0:
        raise ValueError(
            f"cannot hold out label views from {train.height} training views: too few per user"
        )
    return early, late, f"each user's last {last_share:.0%} of views"


def time_holdout(train: pl.DataFrame, days: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(earlier views, views of the last `days` days): features from the first, labels from
    the second, so a model learns from features that never saw its targets."""
    timed = train.filter(pl.col("timestamp").is_not_null())
    if timed.height == 0:
        raise ValueError("a time holdout needs training views with a timestamp")
    cutoff = float(timed["timestamp"].max()) - days * 86_400.0
    early = train.filter(pl.col("timestamp").is_null() | (pl.col("timestamp") <= cutoff))
    late = timed.filter(pl.col("timestamp") > cutoff)
    if early.height == 0 or late.height == 0:
        raise ValueError(
            f"the last {days} days hold all or none of the {train.height} training views; "
            "choose a smaller holdout"
        )
    return early, late


# --- the features of one training set -------------------------------------------------------


# What each side source adds to the video table (by column prefix), so a model can say which
# of them the log had: an imported log may carry none, and the features then degrade to
# training popularity and history aggregates.
VIDEO_SOURCES = {
    "tags": ("tag=",),
    "categories": ("cat1=", "cat2=", "cat3="),
    "video_duration": ("log_duration_s",),
    "item_daily_features": ("daily_",),
}


@dataclass(frozen=True)
class FeatureSet:
    users: FeatureTable
    videos: FeatureTable
    history: FeatureTable

    def sources(self) -> dict[str, list[str]]:
        """Which side sources reached the features (`uses`) and which the log lacks."""
        present = {"user_features": bool(self.users.names)} | {
            name: any(n.startswith(prefixes) for n in self.videos.names)
            for name, prefixes in VIDEO_SOURCES.items()
        }
        return {
            "uses": [name for name, found in present.items() if found],
            "lacks": [name for name, found in present.items() if not found],
        }


def build_features(
    train: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame | None = None,
    item_daily_features: pl.DataFrame | None = None,
    *,
    like_rule: LikeRule,
) -> FeatureSet:
    """User, video and history features learned from `train`, with the release's side tables
    (`videos`: one row per video with tags, categories and video_duration; `users`:
    user_features; `item_daily_features`): what a `TrainingData` carries, with its fitted
    like rule."""
    empty_users = FeatureTable(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), [])
    return FeatureSet(
        users=user_features(users) if users is not None else empty_users,
        videos=video_features(videos, train, item_daily_features, like_rule=like_rule),
        history=history_features(train, like_rule=like_rule),
    )


# --- rows of (user, video) pairs ------------------------------------------------------------

PROFILE_PREFIX = "profile:"


def user_table(
    user_ids: np.ndarray,
    static: FeatureTable,
    views: pl.DataFrame,
    videos: FeatureTable,
    like_rule: LikeRule,
) -> FeatureTable:
    """Everything known about each of `user_ids`: static attributes (with a `user_found`
    flag), aggregates and content profile of their `views` (with `has_history`)."""
    user_ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    static_rows, found = static.lookup(user_ids)
    history = history_features(views, video_durations=videos, like_rule=like_rule)
    history_rows, has_history = history.lookup(user_ids)
    profiles = content_profiles(views, videos)
    profile_rows, _ = profiles.lookup(user_ids)
    values = np.hstack(
        [static_rows, found[:, None], history_rows, has_history[:, None], profile_rows]
    ).astype(np.float32)
    names = [*static.names, "user_found", *history.names, "has_history",
             *(PROFILE_PREFIX + n for n in profiles.names)]  # fmt: skip
    return FeatureTable(user_ids, values, names)


def pair_features(
    users: FeatureTable,
    videos: FeatureTable,
    user_ids: np.ndarray,
    video_ids: np.ndarray,
    user_columns: list[str] | None = None,
    video_columns: list[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Feature rows of aligned (user, video) pairs: the user's columns (`user_columns`, or
    all but the profiles), the video's columns (`video_columns`, or all), and
    profile-content affinities."""
    profile_names = [n for n in users.names if n.startswith(PROFILE_PREFIX)]
    keep = user_columns if user_columns is not None else [
        n for n in users.names if not n.startswith(PROFILE_PREFIX)
    ]  # fmt: skip
    video_keep = video_columns if video_columns is not None else videos.names
    user_rows, _ = users.select(keep).lookup(user_ids)
    video_rows, _ = videos.select(video_keep).lookup(video_ids)
    profiles = FeatureTable(
        users.ids,
        users.select(profile_names).values,
        [n.removeprefix(PROFILE_PREFIX) for n in profile_names],
    )
    affinities = pair_affinities(profiles, videos, user_ids, video_ids)
    matrix = np.hstack([user_rows, video_rows, *(a[:, None] for a in affinities.values())])
    return matrix.astype(np.float32), [*keep, *video_keep, *affinities]

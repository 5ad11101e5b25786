"""How much of small_matrix taste a KuaiRec-format release lets simple models learn from big_matrix.

Calibration only: this re-implements, outside shortrec's own protocol and models, the reference
study on the real KuaiRec 2.0 (njbabani/kuairec-recsys, params.yaml and split_summary.json), so
a synthetic world can be compared with the real release like for like:

- event-dedup big_matrix (duplicates on the event fields, ignoring time and date); train = rows
  whose local (Asia/Shanghai) date is before 2020-08-30, the rest validation;
- like label: log-spaced video-length buckets, each x1.15 wider than the last, starting at the
  shortest training length and merged from the short end until each holds >= 10,000 training
  views (an under-filled last bucket folds into its neighbour); a view is liked when its
  watch_ratio is above its bucket's 0.8 quantile (linear) of training watch ratios;
- tune / test = 20% / 80% of small_matrix users by a stable hash of the user id; every user
  ranks all small_matrix videos; NDCG@10 per user (users with at least one liked view),
  averaged (the hash's draw on a world's ids is its own: calibration checks rows per tune
  and test user and the tune share of users against binomial(users, 0.2), not the row
  counts);
- reference models: random (its exact expected NDCG), popularity by distinct training viewers,
  and implicit's ALS on liked training views (confidence 1 + alpha x liked views of the pair,
  64 factors, regularization 0.1, alpha 1, 15 iterations; users without liked views get the
  mean user vector; videos unseen in training rank last).

The real figures are in calibration.TARGETS (source: ../shared/kuairec_reference_stats.md and
issue 16's table of that study's results).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import scipy.sparse

SPLIT_DATE = 20200830
BUCKET_GROWTH = 1.15
MIN_BUCKET_VIEWS = 10_000
LIKE_QUANTILE = 0.8
TUNE_SHARE = 0.2
TOP_K = 10
ALS_FACTORS, ALS_REGULARIZATION, ALS_ALPHA, ALS_ITERATIONS = 64, 0.1, 1.0, 15
_EVENT_FIELDS = ["user_id", "video_id", "play_duration", "video_duration", "timestamp",
                 "watch_ratio"]  # fmt: skip
_SHANGHAI_OFFSET_S = 8 * 3600
# Real bucket edges (ms) of the reference split, so thresholds compare at the same lengths:
# each real bucket is read at its geometric middle (the open ends one half-step inside).
REAL_BUCKET_EDGES_MS = (
    3484.8, 4007.5, 4608.7, 5300, 6094.9, 7009.2, 8060.6, 9269.6, 10660.1, 12259.1, 14098,
    16212.7, 18644.6, 21441.3, 24657.4, 28356.1, 32609.5, 37500.9, 43126, 49594.9, 57034.2,
    65589.3, 75427.7, 86741.9, 114716.1, 131923.5, 151712, 174468.8,
)  # fmt: skip


def threshold_probe_ms() -> np.ndarray:
    """Lengths (ms) at which bucket thresholds are compared: one per real bucket."""
    edges = np.asarray(REAL_BUCKET_EDGES_MS)
    half = np.sqrt(BUCKET_GROWTH)
    return np.r_[edges[0] / half, np.sqrt(edges[:-1] * edges[1:]), edges[-1] * half]


def real_range_thresholds(
    duration_ms: np.ndarray,
    watch_ratio: np.ndarray,
    edges: np.ndarray,
    thresholds: np.ndarray,
    min_views: int,
) -> np.ndarray:
    """The 0.8 quantile of training watch ratios within each real bucket's length range, so
    the watch behaviour is compared at the same lengths whatever buckets a world's own view
    counts make (the merge is count-driven: a range a few views short of 10,000 joins its
    neighbour, and the neighbour's threshold then stands for it). A range with fewer than
    `min_views` views (the tails of a small world) falls back to the threshold the world's
    own buckets give its middle."""
    duration_ms = np.asarray(duration_ms, np.float64)
    real_range = np.searchsorted(np.asarray(REAL_BUCKET_EDGES_MS), duration_ms, side="right")
    n_ranges = len(REAL_BUCKET_EDGES_MS) + 1
    probe_bucket = np.minimum(
        np.searchsorted(edges, threshold_probe_ms(), side="right"), len(edges) - 1
    )
    result = thresholds[probe_bucket].astype(np.float64)
    frame = pl.DataFrame({"range": real_range, "wr": np.asarray(watch_ratio, np.float64)})
    per_range = frame.group_by("range").agg(
        pl.len().alias("n"), pl.col("wr").quantile(LIKE_QUANTILE, "linear").alias("p80")
    )
    filled = per_range.filter((pl.col("n") >= min_views) & (pl.col("range") < n_ranges))
    result[filled["range"].to_numpy()] = filled["p80"].to_numpy()
    return result


def like_buckets(duration_ms: np.ndarray, min_views: int = MIN_BUCKET_VIEWS) -> np.ndarray:
    """Upper edges (ms) of the merged buckets of training views with these lengths; the last
    bucket is open (edge +inf)."""
    duration_ms = np.asarray(duration_ms, np.float64)
    shortest = duration_ms.min()
    n_fine = int(np.ceil(np.log(duration_ms.max() / shortest) / np.log(BUCKET_GROWTH))) + 1
    fine_edges = shortest * BUCKET_GROWTH ** np.arange(1, n_fine + 1)
    counts = np.bincount(np.searchsorted(fine_edges, duration_ms, side="right"), minlength=n_fine)
    edges, filled = [], 0
    for edge, count in zip(fine_edges, counts[:n_fine], strict=True):
        filled += count
        if filled >= min_views:
            edges.append(edge)
            filled = 0
    if filled and edges:  # an under-filled last bucket folds into its neighbour
        edges.pop()
    return np.r_[edges, np.inf]


def like_thresholds(
    duration_ms: np.ndarray, watch_ratio: np.ndarray, min_views: int = MIN_BUCKET_VIEWS
) -> tuple[np.ndarray, np.ndarray]:
    """(bucket upper edges, 0.8 quantile of watch_ratio per bucket) of training views."""
    edges = like_buckets(duration_ms, min_views)
    bucket = np.searchsorted(edges, duration_ms, side="right")
    bucket = np.minimum(bucket, len(edges) - 1)
    frame = pl.DataFrame({"bucket": bucket, "wr": watch_ratio})
    per_bucket = frame.group_by("bucket").agg(pl.col("wr").quantile(LIKE_QUANTILE, "linear"))
    thresholds = np.full(len(edges), np.nan)
    thresholds[per_bucket["bucket"].to_numpy()] = per_bucket["wr"].to_numpy()
    return edges, thresholds


def liked(
    duration_ms: np.ndarray, watch_ratio: np.ndarray, edges: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    bucket = np.minimum(np.searchsorted(edges, duration_ms, side="right"), len(edges) - 1)
    return watch_ratio > thresholds[bucket]


def tune_users(user_ids: np.ndarray) -> np.ndarray:
    """True for the ~20% of users in the tune group (stable: md5 of the decimal id)."""
    return np.array(
        [int.from_bytes(hashlib.md5(str(int(u)).encode()).digest()[:8], "big") % 100 < 20
         for u in user_ids],
        dtype=bool,
    )  # fmt: skip


def _discounts() -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, TOP_K + 2))


def ndcg_at_10(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per-user NDCG@10 of dense scores (users x videos) against a boolean relevance matrix;
    ties broken by video position."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_K]
    gains = np.take_along_axis(relevant, top, axis=1).astype(np.float64)
    dcg = gains @ _discounts()
    ideal = np.cumsum(_discounts())[np.minimum(relevant.sum(1), TOP_K) - 1]
    return dcg / ideal


def random_ndcg_at_10(relevant: np.ndarray) -> np.ndarray:
    """Exact expected NDCG@10 of a uniformly random ranking, per user."""
    share = relevant.mean(1)
    ideal = np.cumsum(_discounts())[np.minimum(relevant.sum(1), TOP_K) - 1]
    return share * _discounts().sum() / ideal


def _als_scores(
    train_users: np.ndarray,
    train_videos: np.ndarray,
    n_users: int,
    n_videos: int,
    score_users: np.ndarray,
    score_videos: np.ndarray,
    seed: int,
) -> np.ndarray:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    counts = scipy.sparse.csr_matrix(
        (np.ones(len(train_users), np.float32), (train_users, train_videos)),
        shape=(n_users, n_videos),
    )
    counts.sum_duplicates()
    if counts.nnz == 0:  # nothing liked: nothing to learn
        return np.zeros((len(score_users), len(score_videos)))
    counts.data = 1.0 + ALS_ALPHA * counts.data  # implicit reads the value as the confidence
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=ALS_FACTORS,
            regularization=ALS_REGULARIZATION,
            alpha=1.0,
            iterations=ALS_ITERATIONS,
            random_state=seed,
        )
        model.fit(counts, show_progress=False)
    user_factors = np.asarray(model.user_factors)
    has_likes = np.diff(counts.indptr) > 0
    mean_user = user_factors[has_likes].mean(0)
    own = (score_users >= 0) & has_likes[np.maximum(score_users, 0)]
    vectors = np.where(own[:, None], user_factors[np.maximum(score_users, 0)], mean_user)
    return vectors @ np.asarray(model.item_factors)[score_videos].T


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def learnability_stats(
    big: pl.DataFrame,
    small: pl.DataFrame,
    min_bucket_views: int = MIN_BUCKET_VIEWS,
    seed: int = 0,
) -> dict[str, float]:
    """The reference protocol's figures for a release (KuaiRec columns and dtypes);
    `min_bucket_views` is the protocol's 10,000, which a smaller world scales down."""
    events = big.unique(subset=_EVENT_FIELDS, maintain_order=True)
    local_date = (
        pl.from_epoch((pl.col("timestamp") + _SHANGHAI_OFFSET_S).cast(pl.Int64), time_unit="s")
        .dt.strftime("%Y%m%d")
        .cast(pl.Int64)
    )
    events = events.with_columns(pl.coalesce(local_date, pl.col("date").cast(pl.Int64)).alias("d"))
    events = events.filter(pl.col("video_duration") > 0)
    train = events.filter(pl.col("d") < SPLIT_DATE)
    valid = events.filter(pl.col("d") >= SPLIT_DATE)
    edges, thresholds = like_thresholds(
        train["video_duration"].to_numpy(), train["watch_ratio"].to_numpy(), min_bucket_views
    )
    stats: dict[str, float] = {
        "lrn_train_rows": train.height,
        "lrn_train_users": train["user_id"].n_unique(),
        "lrn_train_videos": train["video_id"].n_unique(),
        "lrn_valid_rows": valid.height,
        "lrn_valid_users": valid["user_id"].n_unique(),
        "lrn_valid_videos": valid["video_id"].n_unique(),
        "lrn_buckets": len(edges),
    }
    train_liked = liked(
        train["video_duration"].to_numpy(), train["watch_ratio"].to_numpy(), edges, thresholds
    )
    stats["lrn_train_positive"] = train_liked.mean()
    seen = train["video_id"].unique()
    cold = ~valid["video_id"].is_in(seen.implode())
    stats["lrn_valid_cold_videos"] = valid.filter(cold)["video_id"].n_unique()
    stats["lrn_valid_cold_rows"] = cold.mean() if valid.height else float("nan")
    # A validation row repeats a pair when the pair was viewed before it (in training or
    # earlier in validation).
    first_in_valid = valid.select("user_id", "video_id").unique().height
    repeats_in_valid = valid.height - first_in_valid
    new_pairs_seen_in_train = (
        valid.select("user_id", "video_id")
        .unique()
        .join(train.select("user_id", "video_id").unique(), on=["user_id", "video_id"], how="semi")
        .height
    )
    stats["lrn_valid_repeat_rows"] = (
        (repeats_in_valid + new_pairs_seen_in_train) / valid.height if valid.height else np.nan
    )
    for i, value in enumerate(
        real_range_thresholds(
            train["video_duration"].to_numpy(), train["watch_ratio"].to_numpy(), edges,
            thresholds, min_views=max(100, min_bucket_views // 4),
        )
    ):  # fmt: skip
        stats[f"lrn_threshold_{i:02d}"] = value

    # small_matrix: the evaluation block.
    small_users = np.sort(small["user_id"].unique().to_numpy())
    small_videos = np.sort(small["video_id"].unique().to_numpy())
    u = np.searchsorted(small_users, small["user_id"].to_numpy())
    v = np.searchsorted(small_videos, small["video_id"].to_numpy())
    small_liked = liked(
        small["video_duration"].to_numpy(), small["watch_ratio"].to_numpy(), edges, thresholds
    )
    relevant = np.zeros((len(small_users), len(small_videos)), bool)
    relevant[u[small_liked], v[small_liked]] = True
    tune = tune_users(small_users)
    tune_row = tune[u]
    stats["lrn_small_positive"] = _mean(small_liked)
    stats["lrn_tune_positive"] = _mean(small_liked[tune_row])
    stats["lrn_test_positive"] = _mean(small_liked[~tune_row])
    stats["lrn_tune_rows"] = int(tune_row.sum())
    stats["lrn_test_rows"] = int((~tune_row).sum())
    n_tune = int(tune.sum())
    stats["lrn_tune_rows_per_user"] = tune_row.sum() / n_tune if n_tune else np.nan
    n_test = len(tune) - n_tune
    stats["lrn_test_rows_per_user"] = (~tune_row).sum() / n_test if n_test else np.nan
    spread = np.sqrt(TUNE_SHARE * (1 - TUNE_SHARE) / max(len(tune), 1))
    stats["lrn_tune_share_sd"] = (n_tune / max(len(tune), 1) - TUNE_SHARE) / spread

    # Reference models, trained on the training split.
    user_index = np.sort(events["user_id"].unique().to_numpy())
    video_index = np.sort(np.union1d(events["video_id"].unique().to_numpy(), small_videos))
    tu = np.searchsorted(user_index, train["user_id"].to_numpy())
    tv = np.searchsorted(video_index, train["video_id"].to_numpy())
    viewers = np.bincount(
        np.unique(tu.astype(np.int64) * len(video_index) + tv) % len(video_index),
        minlength=len(video_index),
    ).astype(np.float64)
    small_v = np.searchsorted(video_index, small_videos)
    unseen = viewers[small_v] == 0
    popularity = np.where(unseen, -np.inf, viewers[small_v])[None, :].repeat(len(small_users), 0)
    score_users = np.minimum(np.searchsorted(user_index, small_users), len(user_index) - 1)
    known = user_index[score_users] == small_users
    als = _als_scores(
        tu[train_liked], tv[train_liked], len(user_index), len(video_index),
        np.where(known, score_users, -1), small_v, seed,
    )  # fmt: skip
    als[:, unseen] = -np.inf
    has_positive = relevant.any(1)
    models = {
        "random": random_ndcg_at_10(relevant[has_positive]),
        "popularity": ndcg_at_10(popularity[has_positive], relevant[has_positive]),
        "als": ndcg_at_10(als[has_positive], relevant[has_positive]),
    }
    group = {"tune": tune[has_positive], "test": ~tune[has_positive]}
    for model, values in models.items():
        stats[f"lrn_{model}_ndcg"] = _mean(values)
        for name, members in group.items():
            stats[f"lrn_{model}_ndcg_{name}"] = _mean(values[members])
    return {k: float(v) for k, v in stats.items()}

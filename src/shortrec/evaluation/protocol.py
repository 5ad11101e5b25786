"""Evaluate a recommender on a split: full ranking over every candidate video by default.

For each target user the model scores every candidate video given the user's history;
videos already in that history are excluded; the user's target views define relevance
(`liked` by the like rule) and graded gains (watch_ratio, capped). The sampled mode (N random
never-seen videos per positive) exists only to reproduce papers and labels every output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from shortrec.data.histories import Histories, IdMap
from shortrec.data.labels import LikeRule
from shortrec.data.splits import Split
from shortrec.evaluation.metrics import catalogue_coverage, full_ranking_metrics, sampled_metrics
from shortrec.evaluation.statistics import Interval, bootstrap_intervals


class Scorer(Protocol):
    """What evaluation needs of a model (every `Recommender` is one)."""

    def score(
        self, user_ids: np.ndarray, video_ids: np.ndarray, histories: Histories
    ) -> np.ndarray: ...


GRADED_GAIN_CAP = 5.0  # watch ratios beyond 5 are replays of very short videos, not 5x taste
# Below every finite score but above -inf (which marks excluded, already seen candidates).
_NAN_SCORE = np.float32(np.finfo(np.float32).min)


def rank_nan_last(scores: np.ndarray) -> int:
    """Give NaN scores the lowest finite score, in place, so they rank last (torch.topk would
    rank them first); returns how many there were, which every evaluation reports."""
    nan = np.isnan(scores)
    count = int(nan.sum())
    if count:
        scores[nan] = _NAN_SCORE
    return count


@dataclass
class Evaluation:
    mode: str  # "full-ranking" or "sampled-<N>": every report prints it
    which: str  # "tune" or "test"
    per_user: pl.DataFrame  # user_id + one column per metric
    summary: dict[str, Interval]
    aggregate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "which": self.which,
            "summary": {k: v.to_dict() for k, v in self.summary.items()},
            "aggregate": self.aggregate,
        }


def video_popularity(train: pl.DataFrame) -> pl.DataFrame:
    """Distinct training users per video, and its popularity percentile in [0, 1]."""
    counts = train.group_by("video_id").agg(pl.col("user_id").n_unique().alias("users"))
    return counts.with_columns(
        (pl.col("users").rank("average") / pl.len()).alias("popularity_percentile")
    )


def _target_matrices(
    targets: pl.DataFrame, users: IdMap, candidates: IdMap
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user rows, candidate cols, liked, gain) per distinct target pair, sorted by user.

    Repeated views of a pair merge: liked if any view was, gain from the longest view."""
    rows = users.index(targets["user_id"])
    cols = candidates.index(targets["video_id"])
    keep = cols >= 0
    key = rows[keep] * len(candidates) + cols[keep]
    liked = targets["liked"].to_numpy()[keep]
    ratio = targets["watch_ratio"].fill_null(0.0).to_numpy()[keep]
    order = np.argsort(key, kind="stable")
    key, liked, ratio = key[order], liked[order], ratio[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.array([], int)
    unique = key[starts]
    merged_liked = np.maximum.reduceat(liked, starts) if len(key) else liked
    merged_ratio = np.maximum.reduceat(ratio, starts) if len(key) else ratio
    gain = np.clip(merged_ratio, 0.0, GRADED_GAIN_CAP)
    return unique // len(candidates), unique % len(candidates), merged_liked.astype(bool), gain


def evaluate(
    model: Scorer,
    split: Split,
    which: str,
    like_rule: LikeRule,
    ks: tuple[int, ...] = (10, 20, 50),
    sampled: int | None = None,
    batch_size: int = 256,
    n_resamples: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> Evaluation:
    """Score `model` on the tune or test targets of `split`. `like_rule` must be fitted on
    `split.train` (the caller does it once, so every model sees the same labels)."""
    targets, _ = split.targets(which)
    histories = split.histories(which)
    targets = like_rule.label(targets)
    # What the rule calls liked among the judged views: threshold:0.7 on small_matrix, for
    # example, calls most short videos liked whatever the user's taste.
    liked_share = float(targets["liked"].mean()) if targets.height else float("nan")
    candidates = IdMap(np.asarray(split.candidate_video_ids, dtype=np.int64))
    users = IdMap.from_ids(targets["user_id"])
    rows, cols, liked, gain = _target_matrices(targets, users, candidates)
    # A target already in the user's history would be excluded from the ranking: drop it.
    seen_all = histories.seen_matrix(users.raw_ids, candidates)
    already_seen = np.asarray(seen_all[rows, cols]).ravel() > 0
    rows, cols, liked, gain = (a[~already_seen] for a in (rows, cols, liked, gain))
    popularity = video_popularity(split.train)
    pop_of_candidate = np.zeros(len(candidates))
    known = candidates.index(popularity["video_id"])
    pop_of_candidate[known[known >= 0]] = popularity["popularity_percentile"].to_numpy()[known >= 0]

    if sampled is not None:
        return _evaluate_sampled(
            model, which, users, candidates, histories, seen_all, rows, cols, liked, ks,
            sampled, batch_size, n_resamples, seed, liked_share, progress,
        )  # fmt: skip

    bounds = np.searchsorted(rows, np.arange(len(users) + 1))
    per_user: dict[str, list[np.ndarray]] = {}
    tops = []
    nan_scores = 0
    kmax = max(ks)
    batches = range(0, len(users), batch_size)
    for start in tqdm(batches, desc=f"evaluate {which}", disable=not progress, leave=False):
        stop = min(start + batch_size, len(users))
        batch_users = users.raw_ids[start:stop]
        scores = np.asarray(
            model.score(batch_users, candidates.raw_ids, histories), dtype=np.float32
        ).copy()
        if scores.shape != (stop - start, len(candidates)):
            raise ValueError(f"{model.name}.score returned shape {scores.shape}")
        nan_scores += rank_nan_last(scores)
        seen = seen_all[start:stop]
        scores[seen.nonzero()] = -np.inf
        lo, hi = bounds[start], bounds[stop]
        relevance = np.zeros_like(scores, dtype=bool)
        gains = np.zeros_like(scores)
        relevance[rows[lo:hi] - start, cols[lo:hi]] = liked[lo:hi]
        gains[rows[lo:hi] - start, cols[lo:hi]] = gain[lo:hi]
        metrics, top = full_ranking_metrics(scores, relevance, gains, ks, seed=seed + start)
        metrics[f"popularity@{kmax}"] = pop_of_candidate[top].mean(axis=1)
        for name, values in metrics.items():
            per_user.setdefault(name, []).append(values)
        tops.append(top)
    top_all = np.concatenate(tops) if tops else np.zeros((0, kmax), dtype=np.int64)
    columns = {name: np.concatenate(v) for name, v in per_user.items()}
    aggregate = {f"coverage@{k}": catalogue_coverage(top_all, k, len(candidates)) for k in ks}
    aggregate["users"] = float(len(users))
    aggregate["dropped_seen_targets"] = float(already_seen.sum())
    aggregate["nan_scores"] = float(nan_scores)
    aggregate["liked_share"] = liked_share
    return _finish("full-ranking", which, users, columns, aggregate, n_resamples, seed)


def _finish(mode, which, users, columns, aggregate, n_resamples, seed) -> Evaluation:
    per_user = pl.DataFrame({"user_id": users.raw_ids, **columns})
    summary = bootstrap_intervals(columns, n_resamples=n_resamples, seed=seed)
    return Evaluation(mode, which, per_user, summary, aggregate)


def _evaluate_sampled(
    model, which, users, candidates, histories, seen_all, rows, cols, liked, ks,
    n_negatives, batch_size, n_resamples, seed, liked_share, progress,
) -> Evaluation:  # fmt: skip
    """Each liked target ranked against `n_negatives` videos the user never interacted with
    (neither in history nor among the targets); metrics averaged per user."""
    rng = np.random.default_rng(seed)
    # Every target pair counts as interacted; only the liked ones are ranked as positives.
    all_bounds = np.searchsorted(rows, np.arange(len(users) + 1))
    all_rows, all_cols = rows, cols
    keep = liked.astype(bool)
    rows, cols = rows[keep], cols[keep]
    bounds = np.searchsorted(rows, np.arange(len(users) + 1))
    sums: dict[str, np.ndarray] = {}
    nan_scores = 0
    counts = np.bincount(rows, minlength=len(users)).astype(np.float64)
    batches = range(0, len(users), batch_size)
    desc = f"evaluate {which} (sampled-{n_negatives})"
    for start in tqdm(batches, desc=desc, disable=not progress, leave=False):
        stop = min(start + batch_size, len(users))
        lo, hi = bounds[start], bounds[stop]
        if lo == hi:
            continue
        scores = np.asarray(
            model.score(users.raw_ids[start:stop], candidates.raw_ids, histories), np.float32
        ).copy()
        nan_scores += rank_nan_last(scores)
        excluded = seen_all[start:stop].toarray().astype(bool)
        a_lo, a_hi = all_bounds[start], all_bounds[stop]
        excluded[all_rows[a_lo:a_hi] - start, all_cols[a_lo:a_hi]] = True
        local = rows[lo:hi] - start
        # n_negatives distinct never-interacted candidates per positive, chosen by random keys.
        keys = rng.random((hi - lo, len(candidates)), dtype=np.float32)
        keys[excluded[local]] = np.inf
        if n_negatives < len(candidates):
            negatives = np.argpartition(keys, n_negatives, axis=1)[:, :n_negatives]
        if (
            n_negatives >= len(candidates)
            or np.isinf(np.take_along_axis(keys, negatives, axis=1)).any()
        ):
            raise ValueError(
                f"sampled evaluation needs {n_negatives} never-interacted candidate videos per "
                "user and some users have fewer (a fully observed matrix such as small_matrix "
                "has none): use full ranking, or the leave-last-out protocol"
            )
        metrics = sampled_metrics(
            scores[local, cols[lo:hi]], np.take_along_axis(scores[local], negatives, axis=1), ks
        )
        for name, values in metrics.items():
            acc = sums.setdefault(name, np.zeros(len(users)))
            np.add.at(acc, rows[lo:hi], values)
    with np.errstate(invalid="ignore"):
        columns = {name: acc / np.where(counts > 0, counts, np.nan) for name, acc in sums.items()}
    aggregate = {"users": float((counts > 0).sum()), "negatives_per_positive": float(n_negatives),
                 "nan_scores": float(nan_scores), "liked_share": liked_share}  # fmt: skip
    return _finish(f"sampled-{n_negatives}", which, users, columns, aggregate, n_resamples, seed)

"""What some models measure beyond ranking: watch-ratio regression errors, for models that
predict watch ratios, and the recall of a retrieve-then-rank model's candidate stage.

They take the model's method as a plain function, so evaluation depends on no model class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from shortrec.data.features import WATCH_RATIO_CAP
from shortrec.data.histories import Histories, IdMap
from shortrec.data.labels import LikeRule
from shortrec.data.splits import Split
from shortrec.evaluation.statistics import bootstrap_interval

# (user_ids, video_ids, histories) -> predicted watch ratio of each aligned pair
WatchRatioFunction = Callable[[np.ndarray, np.ndarray, Histories], np.ndarray]
# (user_ids, video_ids, histories) -> boolean (users x videos) retrieved mask
CandidateFunction = Callable[[np.ndarray, np.ndarray, Histories], np.ndarray]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Mean absolute and root mean squared error."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    error = y_pred - y_true
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}


def regression_errors(
    predict_watch_ratio: WatchRatioFunction,
    split: Split,
    which: str,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """MAE and RMSE of a model's `predict_watch_ratio` on the tune or test targets, on the raw
    watch ratio and on the ratio capped at WATCH_RATIO_CAP (a few replays of very short
    videos reach ratios in the hundreds and would otherwise decide RMSE alone). Targets
    already in the user's history are left out, as in the ranking evaluation. Intervals are
    bootstraps over users of the per-user mean error (RMSE: over per-user squared error)."""
    targets, history_frame = split.targets(which)
    histories = split.histories(which)
    seen = (
        history_frame.select("user_id", "video_id")
        .unique()
        .with_columns(pl.lit(True).alias("_seen"))
    )
    targets = targets.join(seen, on=["user_id", "video_id"], how="left").filter(
        pl.col("_seen").is_null()
    )
    if targets.height == 0:
        raise ValueError(f"no {which} targets left to evaluate the regression on")
    y_pred = predict_watch_ratio(
        targets["user_id"].to_numpy(), targets["video_id"].to_numpy(), histories
    )
    y_true = targets["watch_ratio"].fill_null(0).to_numpy().astype(np.float64)
    out: dict = {"which": which, "pairs": int(targets.height),
                 "users": int(targets["user_id"].n_unique())}  # fmt: skip
    for suffix, truth in (("", y_true), ("_capped", np.clip(y_true, 0, WATCH_RATIO_CAP))):
        metrics = regression_metrics(truth, y_pred)
        per_user = pl.DataFrame(
            {"user_id": targets["user_id"], "abs": np.abs(y_pred - truth),
             "sq": (y_pred - truth) ** 2}
        ).group_by("user_id").agg(pl.col("abs").mean(), pl.col("sq").mean())  # fmt: skip
        mae = bootstrap_interval(per_user["abs"].to_numpy(), n_resamples, seed=seed)
        mse = bootstrap_interval(per_user["sq"].to_numpy(), n_resamples, seed=seed)
        out[f"mae{suffix}"] = metrics["mae"]
        out[f"rmse{suffix}"] = metrics["rmse"]
        out[f"mae{suffix}_interval"] = [mae.low, mae.high]
        out[f"rmse{suffix}_interval"] = [float(np.sqrt(mse.low)), float(np.sqrt(mse.high))]
    return out


def candidate_recall(
    candidate_mask: CandidateFunction, split: Split, which: str, like_rule: LikeRule,
    n_resamples: int = 1000, seed: int = 0, batch_users: int = 512,
) -> dict:  # fmt: skip
    """Share of each target user's liked, not-yet-seen candidate videos that the retrievers
    put in the candidate set: the ceiling of the reranker's recall. Mean over users with a
    bootstrap interval."""
    targets, _ = split.targets(which)
    histories = split.histories(which)
    catalog = IdMap(np.asarray(split.candidate_video_ids, dtype=np.int64))
    liked = like_rule.label(targets).filter(pl.col("liked")).select("user_id", "video_id")
    liked = liked.filter(pl.col("video_id").is_in(catalog.raw_ids)).unique()
    users = IdMap.from_ids(targets["user_id"])
    per_user = np.full(len(users), np.nan)
    for start in range(0, len(users), batch_users):
        batch = users.raw_ids[start : start + batch_users]
        relevant = np.zeros((len(batch), len(catalog)), dtype=bool)
        mine = liked.filter(pl.col("user_id").is_in(batch))
        relevant[IdMap(batch).index(mine["user_id"]), catalog.index(mine["video_id"])] = True
        relevant &= histories.seen_matrix(batch, catalog).toarray() == 0
        mask = candidate_mask(batch, catalog.raw_ids, histories)
        n = relevant.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_user[start : start + len(batch)] = np.where(
                n > 0, (relevant & mask).sum(1) / n, np.nan
            )
    interval = bootstrap_interval(per_user, n_resamples=n_resamples, seed=seed)
    return {
        "which": which,
        "candidate_recall": interval.mean,
        "candidate_recall_interval": [interval.low, interval.high],
        "users": interval.n,
    }

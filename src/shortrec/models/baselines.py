"""Reference points every model must beat (random, popularity) or cannot beat (the oracle)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import polars as pl

from shortrec.data.histories import Histories, IdMap
from shortrec.models.base import (
    FitContext,
    Recommender,
    TrainingData,
    hyperparameter,
)


@dataclasses.dataclass
class RandomRecommender(Recommender):
    """Uniform random scores: the floor of any honest leaderboard."""

    name: ClassVar[str] = "random"

    def fit(self, data: TrainingData, context: FitContext | None = None) -> RandomRecommender:
        return self

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        # Seeded by (seed, first user) so scoring in batches stays reproducible.
        first = int(user_ids[0]) if len(user_ids) else 0
        rng = np.random.default_rng([self.seed, first, len(user_ids)])
        return rng.random((len(user_ids), len(video_ids)), dtype=np.float32)


@dataclasses.dataclass
class _VideoScoreTable(Recommender):
    """A model whose score depends on the video only: one learned score per known video."""

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        rows = IdMap(self.video_ids_).index(video_ids)
        row = (
            self.scores_[np.maximum(rows, 0)].astype(np.float32)
            if len(self.scores_)
            else (np.zeros(len(rows), np.float32))
        )
        return np.broadcast_to(row, (len(user_ids), len(row))).copy()

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        return IdMap(self.video_ids_).index(video_ids) >= 0

    def _set_scores(self, counts: pl.DataFrame) -> None:
        counts = counts.sort("video_id")
        self.video_ids_ = counts["video_id"].to_numpy().astype(np.int64)
        self.scores_ = counts["score"].to_numpy().astype(np.float64)


@dataclasses.dataclass
class PopularRecommender(_VideoScoreTable):
    """Videos ranked by how many distinct users viewed them in training."""

    name: ClassVar[str] = "popular"

    def fit(self, data: TrainingData, context: FitContext | None = None) -> PopularRecommender:
        self._set_scores(
            data.views.group_by("video_id").agg(
                pl.col("user_id").n_unique().cast(pl.Float64).alias("score")
            )
        )
        return self


@dataclasses.dataclass
class RecentPopularRecommender(_VideoScoreTable):
    """Views weighted by recency: a view `half_life_days` before the end of training counts half."""

    name: ClassVar[str] = "recent-popular"
    half_life_days: float = hyperparameter(
        3.0, "Days before the end of training at which a view counts half.", above=0.0
    )

    @classmethod
    def search_space(cls, trial) -> dict:
        return {"half_life_days": trial.suggest_float("half_life_days", 0.25, 30.0, log=True)}

    def fit(
        self, data: TrainingData, context: FitContext | None = None
    ) -> RecentPopularRecommender:
        timed = data.views.filter(pl.col("timestamp").is_not_null())
        end = timed["timestamp"].max()
        weight = (0.5 ** ((end - pl.col("timestamp")) / (86_400.0 * self.half_life_days))).alias(
            "w"
        )
        self._set_scores(
            timed.with_columns(weight).group_by("video_id").agg(pl.col("w").sum().alias("score"))
        )
        return self


@dataclasses.dataclass
class OracleRecommender(Recommender):
    """Ranks by the synthetic world's noise-free expected watch ratio: the ceiling.

    Only defined for synthetic worlds (their `ground_truth.parquet`); pairs outside the
    ground truth score lowest. What it ranks by (`target`):
    - "liked" (default): how far the expected watch ratio clears the run's like threshold for
      that video (expected / threshold). Under the duration-aware rule a long video is liked
      at a lower ratio than a short one, so ranking by the raw ratio would not be the ceiling
      of an evaluation that judges likes;
    - "watch_ratio": the expected watch ratio itself (the ceiling under a fixed threshold);
    - "watch_time": the expected seconds watched (ratio x length): the ceiling of a feed
      judged by watch time, which the ratio oracle is not, since a high ratio mostly means a
      short video."""

    name: ClassVar[str] = "oracle"
    reference: ClassVar[bool] = True  # the ceiling, read off the synthetic ground truth
    target: str = hyperparameter(
        "liked", "What it ranks by: liked (expected ratio / like threshold) | watch_ratio | "
        "watch_time (expected seconds watched).",
        choices=("liked", "watch_ratio", "watch_time"),
    )  # fmt: skip

    def fit(self, data: TrainingData, context: FitContext | None = None) -> OracleRecommender:
        if data.ground_truth is None:
            raise ValueError("the oracle needs a synthetic world with ground truth; this has none")
        truth = data.ground_truth.select("user_id", "video_id", "expected_watch_ratio")
        if self.target != "watch_ratio":
            durations = data.videos.select("video_id", "video_duration")
            truth = truth.join(durations, on="video_id", how="left")
        if self.target == "watch_time":
            truth = truth.select(
                "user_id", "video_id",
                pl.col("expected_watch_ratio") * pl.col("video_duration") / 1000.0,
            )  # fmt: skip
        elif self.target == "liked":
            threshold = data.like_rule.like_threshold(
                truth.with_columns(pl.col("video_duration").fill_null(0))
            )
            ratio = truth["expected_watch_ratio"].to_numpy()
            usable = np.isfinite(threshold) & (threshold > 0)
            score = np.where(usable, ratio / np.where(usable, threshold, 1.0), ratio)
            truth = truth.select("user_id", "video_id").with_columns(
                pl.Series("expected_watch_ratio", score)
            )
        self.truth_ = truth
        return self

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(video_ids), self.truth_["video_id"].unique().to_numpy())

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids, video_ids = np.asarray(user_ids), np.asarray(video_ids)
        users, videos = IdMap.from_ids(user_ids), IdMap.from_ids(video_ids)
        truth = self.truth_.filter(
            pl.col("user_id").is_in(users.raw_ids) & pl.col("video_id").is_in(videos.raw_ids)
        )
        dense = np.full((len(users), len(videos)), -1.0, dtype=np.float32)
        dense[users.index(truth["user_id"]), videos.index(truth["video_id"])] = truth[
            "expected_watch_ratio"
        ].to_numpy()
        return dense[np.ix_(users.index(user_ids), videos.index(video_ids))]

"""Watch-ratio regression baselines: means and a ridge regression on features.

They answer "how long will this user watch this video?" (MAE / RMSE) and give the two-tower's
regression head something to beat. Both also rank (by predicted watch ratio), so they are
Recommenders and sit on the same leaderboard.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import polars as pl

from shortrec.data.features import (
    PROFILE_PREFIX,
    WATCH_RATIO_CAP,
    FeatureTable,
    build_features,
    history_views,
    label_holdout,
    pair_features,
    user_table,
)
from shortrec.data.histories import Histories, IdMap
from shortrec.models.base import (
    FitContext,
    Recommender,
    TrainingData,
    WatchRatioPredictor,
    hyperparameter,
)

MEAN_KINDS = ("global", "user", "video", "user+video")


def _capped(frame: pl.DataFrame) -> np.ndarray:
    return np.clip(frame["watch_ratio"].fill_null(0).to_numpy(), 0, WATCH_RATIO_CAP)


@dataclasses.dataclass
class MeanRegressor(Recommender, WatchRatioPredictor):
    """Predicts the capped watch ratio by a mean: global, per user, per video, or global +
    user bias + video bias. Means are shrunk towards the global mean by `shrinkage` views."""

    name: ClassVar[str] = "mean-regression"
    by: str = hyperparameter(
        "user+video", "Which mean: global | user | video | user+video (global + both biases).",
        choices=MEAN_KINDS,
    )  # fmt: skip
    shrinkage: float = hyperparameter(
        5.0, "Views' worth of the global mean each mean is shrunk towards.", minimum=0.0
    )

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "by": trial.suggest_categorical("by", list(MEAN_KINDS)),
            "shrinkage": trial.suggest_float("shrinkage", 0.5, 100.0, log=True),
        }

    def fit(self, data: TrainingData, context: FitContext | None = None) -> MeanRegressor:
        train = data.views
        if train.height == 0:
            raise ValueError("mean-regression cannot be fitted on an empty training frame")
        frame = train.select("user_id", "video_id").with_columns(pl.Series("y", _capped(train)))
        self.global_mean_ = float(frame["y"].mean())
        frame = frame.with_columns((pl.col("y") - self.global_mean_).alias("r"))
        m = self.shrinkage
        empty = pl.DataFrame(schema={"id": pl.Int64, "bias": pl.Float64})
        users = videos = empty
        if self.by in ("user", "user+video"):
            users = frame.group_by(pl.col("user_id").alias("id")).agg(
                (pl.col("r").sum() / (pl.len() + m)).alias("bias")
            )
            frame = frame.join(users.rename({"id": "user_id"}), on="user_id").with_columns(
                (pl.col("r") - pl.col("bias")).alias("r")
            )
        if self.by in ("video", "user+video"):
            videos = frame.group_by(pl.col("video_id").alias("id")).agg(
                (pl.col("r").sum() / (pl.len() + m)).alias("bias")
            )
        self.user_ids_, self.user_bias_ = self._table(users)
        self.video_ids_, self.video_bias_ = self._table(videos)
        return self

    @staticmethod
    def _table(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        frame = frame.sort("id")
        return frame["id"].to_numpy().astype(np.int64), frame["bias"].to_numpy().astype(float)

    @staticmethod
    def _bias(ids: np.ndarray, known: np.ndarray, bias: np.ndarray) -> np.ndarray:
        pos = IdMap(known).index(np.asarray(ids, dtype=np.int64))
        return np.where(pos >= 0, bias[np.maximum(pos, 0)] if len(bias) else 0.0, 0.0)

    def predict_watch_ratio(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        return np.maximum(
            self.global_mean_
            + self._bias(user_ids, self.user_ids_, self.user_bias_)
            + self._bias(video_ids, self.video_ids_, self.video_bias_),
            0.0,
        )

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        """Videos with a learned mean (every video when the mean is not per video)."""
        if self.by in ("global", "user"):
            return np.ones(len(video_ids), dtype=bool)
        return IdMap(self.video_ids_).index(video_ids) >= 0

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user = self._bias(user_ids, self.user_ids_, self.user_bias_)
        video = self._bias(video_ids, self.video_ids_, self.video_bias_)
        return (self.global_mean_ + user[:, None] + video[None, :]).astype(np.float32)


def ridge_fit(chunks, ridge: float) -> tuple[np.ndarray, float, int]:
    """Ridge regression on standardised columns from (X, y) chunks, in one pass over the
    data: only X'X and X'y are kept. Returns (raw-scale coefficients, intercept, rows)."""
    xtx = xty = x_sum = None
    y_sum = 0.0
    n = 0
    for x, y in chunks:
        x = x.astype(np.float64)
        if xtx is None:
            xtx, xty, x_sum = (
                np.zeros((x.shape[1],) * 2),
                np.zeros(x.shape[1]),
                np.zeros(x.shape[1]),
            )
        xtx += x.T @ x
        xty += x.T @ y
        x_sum += x.sum(0)
        y_sum += float(y.sum())
        n += len(y)
    if not n:
        raise ValueError("ridge regression got no rows")
    mean, y_mean = x_sum / n, y_sum / n
    cov = xtx / n - np.outer(mean, mean)
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    std = np.where(std > 1e-9, std, 1.0)
    gram = cov / np.outer(std, std)
    target = (xty / n - mean * y_mean) / std
    weights = np.linalg.solve(gram + ridge * np.eye(len(gram)), target)
    coef = weights / std
    return coef, float(y_mean - coef @ mean), n


@dataclasses.dataclass
class LinearRegressionRecommender(Recommender, WatchRatioPredictor):
    """Ridge regression of the capped watch ratio on user, history, video and user-video
    affinity features. Trained leak-free: features come from all but the last `label_days`
    of training, targets from those last days; then features are rebuilt on all of train.

    Its signal is the watch ratio itself, the graded quantity the like rule cuts likes and
    dislikes from; the rule enters its features (per-video and per-user like rates). A log
    without watch ratios has no such target: the model then regresses whether a pair was
    viewed in the label days (each label view against a random unviewed video of the same
    user), and its fit report says so."""

    name: ClassVar[str] = "linear-regression"
    ridge: float = hyperparameter(
        1e-3, "Ridge penalty per row, on standardised feature columns.", minimum=0.0
    )
    label_days: float = hyperparameter(
        3.0, "Last days of training whose views are the targets (features: the days before).",
        above=0.0,
    )  # fmt: skip

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "ridge": trial.suggest_float("ridge", 1e-5, 10.0, log=True),
            "label_days": trial.suggest_float("label_days", 1.0, 5.0),
        }

    max_rows: int = hyperparameter(
        2_000_000, "Most target views (a seeded sample beyond this).", minimum=1
    )
    chunk_rows: int = hyperparameter(
        100_000, "Rows per block of the normal equations (memory, not results).", minimum=1
    )

    def fit(
        self, data: TrainingData, context: FitContext | None = None
    ) -> LinearRegressionRecommender:
        train = data.views
        early, late, holdout = label_holdout(train, self.label_days)
        if late.height > self.max_rows:
            late = late.sample(self.max_rows, seed=self.seed)
        if not data.has_watch_ratio:
            late = self._with_unviewed(late, train)
        side = (data.videos, data.users, data.item_daily_features)
        rule = data.like_rule
        features = build_features(early, *side, like_rule=rule)
        users = user_table(late["user_id"].to_numpy(), features.users, early, features.videos, rule)
        self.coef_, self.intercept_, self.rows_ = ridge_fit(
            self._chunks(users, features.videos, late), self.ridge
        )
        self.feature_names_ = pair_features(users, features.videos, late["user_id"][:1].to_numpy(),
                                            late["video_id"][:1].to_numpy())[1]  # fmt: skip
        full = build_features(train, *side, like_rule=rule)
        self.like_rule_ = rule
        self.users_ = full.users.to_frame("user_id")
        self.videos_ = full.videos.to_frame("video_id")
        self.fit_report_ = {
            "target": "capped watch ratio"
            if data.has_watch_ratio
            else "viewed in the label views or not: the log has no watch ratio",
            "labels": holdout,
            "label_rows": self.rows_,
            "features": full.sources(),
        }
        return self

    def _with_unviewed(self, late: pl.DataFrame, train: pl.DataFrame) -> pl.DataFrame:
        """Label views (watch ratio 1) and as many random videos their users never viewed
        in training (watch ratio 0): the target of a log without watch ratios."""
        rng = np.random.default_rng(self.seed)
        catalog = np.sort(train["video_id"].unique().to_numpy())
        sampled = pl.DataFrame(
            {"user_id": late["user_id"], "video_id": rng.choice(catalog, late.height)}
        ).join(train.select("user_id", "video_id").unique(), on=["user_id", "video_id"],
               how="anti")  # fmt: skip
        return pl.concat(
            [late.select("user_id", "video_id", pl.lit(1.0).alias("watch_ratio")),
             sampled.with_columns(pl.lit(0.0).alias("watch_ratio"))]
        )  # fmt: skip

    def _chunks(self, users: FeatureTable, videos: FeatureTable, late: pl.DataFrame):
        u, v, y = late["user_id"].to_numpy(), late["video_id"].to_numpy(), _capped(late)
        for start in range(0, len(y), self.chunk_rows):
            stop = start + self.chunk_rows
            yield pair_features(users, videos, u[start:stop], v[start:stop])[0], y[start:stop]

    def _tables(self) -> tuple[FeatureTable, FeatureTable]:
        return (
            FeatureTable.from_frame(self.users_, "user_id"),
            FeatureTable.from_frame(self.videos_, "video_id"),
        )

    def _parts(self, user_ids: np.ndarray, histories: Histories, videos: FeatureTable,
               static_users: FeatureTable):  # fmt: skip
        """The linear predictor split into a user part, a video part and affinity terms,
        with coefficients matched to columns by name (a column the model never saw gets 0)."""
        views = history_views(histories, user_ids)
        users = user_table(user_ids, static_users, views, videos, self.like_rule_)
        coef = dict(zip(self.feature_names_, self.coef_, strict=True))
        user_cols = [n for n in users.names if not n.startswith(PROFILE_PREFIX)]
        user_rows, _ = users.select(user_cols).lookup(user_ids)
        user_part = user_rows @ np.array([coef.get(n, 0.0) for n in user_cols])
        video_weights = np.array([coef.get(n, 0.0) for n in videos.names])
        affinities = []
        for name, weight in coef.items():
            if name.endswith("_affinity"):
                group = name.removesuffix("_affinity") + "="
                profile_cols = [n for n in users.names if n.startswith(PROFILE_PREFIX + group)]
                content_cols = [n.removeprefix(PROFILE_PREFIX) for n in profile_cols]
                profile, _ = users.select(profile_cols).lookup(user_ids)
                affinities.append((weight, profile, videos.select(content_cols)))
        return user_part, video_weights, affinities

    def predict_watch_ratio(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids = np.asarray(user_ids, dtype=np.int64)
        video_ids = np.asarray(video_ids, dtype=np.int64)
        if user_ids.shape != video_ids.shape:
            raise ValueError("predict_watch_ratio needs aligned user and video id arrays")
        static_users, videos = self._tables()
        user_part, video_weights, affinities = self._parts(user_ids, histories, videos,
                                                           static_users)  # fmt: skip
        video_rows, _ = videos.lookup(video_ids)
        out = self.intercept_ + user_part + video_rows @ video_weights
        for weight, profile, content in affinities:
            out += weight * (profile * content.lookup(video_ids)[0]).sum(axis=1)
        return np.maximum(out, 0.0)

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        """Videos of the feature table (content and training statistics)."""
        return IdMap(self.videos_["video_id"].to_numpy()).index(video_ids) >= 0

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        """The same predictor over the (users x videos) grid without one row per pair."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        static_users, videos = self._tables()
        user_part, video_weights, affinities = self._parts(user_ids, histories, videos,
                                                           static_users)  # fmt: skip
        video_rows, _ = videos.lookup(video_ids)
        total = self.intercept_ + user_part[:, None] + (video_rows @ video_weights)[None, :]
        for weight, profile, content in affinities:
            total = total + weight * (profile @ content.lookup(video_ids)[0].T)
        return total.astype(np.float32)

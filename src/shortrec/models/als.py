"""Matrix factorisation with the `implicit` library: ALS (Hu, Koren & Volinsky 2008) and BPR.

ALS weighs each view by a confidence 1 + alpha * weight (the weight from `ViewWeighting`, by
default log1p of the watch ratio) and treats unviewed videos as weak negatives. At scoring
time it re-solves each user's factors from the history it is given (implicit's
`recalculate_user`, one least-squares solve per user in C++), so users unseen in training and
histories that grew after training are scored from what they actually watched. With
`engine="spark"` the factors are trained by Spark MLlib's ALS instead (see `als_spark`), for
logs beyond one machine; scoring is the same.

BPR learns from which videos were viewed at all; it keeps the factors of training users and
folds in other users as the mean factor of the videos in their history.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from shortrec.data.histories import Histories, IdMap
from shortrec.models.base import FitContext, Recommender, TrainingData
from shortrec.models.interactions import (
    WEIGHTING_HELP,
    ViewWeighting,
    hyperparameter,
    unknown_videos_last,
)

ENGINES = ("implicit", "spark")


def _threads(num_threads: int) -> int:
    return num_threads if num_threads > 0 else (os.cpu_count() or 1)


def _check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import implicit.gpu

        if not implicit.gpu.HAS_CUDA:
            raise ValueError("device='cuda' but this `implicit` build has no CUDA support")


@dataclasses.dataclass
class _FactorModel(Recommender, ViewWeighting):
    """Shared state of the two factor models: id maps and factors."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def _fit_maps(self, train: pl.DataFrame) -> sp.csr_matrix:
        """The training matrix, with the id maps it is indexed by."""
        if train.height == 0:
            raise ValueError(f"{self.name}: the training frame has no views")
        self.check_weighting()
        self.user_map_ = IdMap.from_ids(train["user_id"].to_numpy())
        self.video_map_ = IdMap.from_ids(train["video_id"].to_numpy())
        return self.views_matrix(train, self.user_map_, self.video_map_)

    def _store(self, model) -> None:
        if self.device == "cuda":  # an implicit.gpu model keeps its factors on the device
            model = model.to_cpu()
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)

    def _scores(self, user_factors: np.ndarray, video_ids: np.ndarray) -> np.ndarray:
        columns = self.video_map_.index(video_ids)
        scores = user_factors @ self.item_factors_[np.maximum(columns, 0)].T
        return unknown_videos_last(scores, columns >= 0)


@dataclasses.dataclass
class ALSRecommender(_FactorModel):
    """Weighted-confidence ALS; `device="cuda"` trains on implicit's GPU backend."""

    name: ClassVar[str] = "als"
    factors: int = 64
    regularization: float = 0.05
    alpha: float = hyperparameter(10.0, "Confidence of a view: 1 + alpha * its weight.")
    iterations: int = 15
    num_threads: int = hyperparameter(0, "implicit's threads; 0 uses every core.")
    device: str = hyperparameter("cpu", "cpu | cuda (implicit's GPU build).")
    engine: str = hyperparameter("implicit", "Trainer: implicit (one process) | spark (MLlib).")
    spark_master: str = hyperparameter(
        "local[*]", "Spark master URL for engine=spark: local[*], spark://host:7077, yarn, ..."
    )

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "weighting": trial.suggest_categorical("weighting", ["binary", "linear", "log"]),
            "factors": trial.suggest_categorical("factors", [32, 64, 128, 256]),
            "regularization": trial.suggest_float("regularization", 1e-3, 1.0, log=True),
            "alpha": trial.suggest_float("alpha", 1.0, 100.0, log=True),
            "iterations": trial.suggest_int("iterations", 5, 30),
        }

    def confidences(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        """Hu et al.'s confidence 1 + alpha * weight, on the stored entries only."""
        confidence = weights.copy()
        confidence.data = (1.0 + self.alpha * confidence.data).astype(np.float32)
        return confidence

    def _solver(self) -> AlternatingLeastSquares:
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=1.0,  # confidences are computed by `confidences`, not by implicit
            iterations=self.iterations,
            num_threads=_threads(self.num_threads),
            random_state=self.seed,
        )

    def fit(self, data: TrainingData, context: FitContext | None = None) -> ALSRecommender:
        _check_device(self.device)
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        weights = self._fit_maps(data.views)
        if self.engine == "spark":
            self._fit_spark(weights)
            return self
        confidence = self.confidences(weights)
        # implicit runs its own thread pool; a multi-threaded BLAS underneath it oversubscribes
        # the cores (implicit warns it can be 10x slower), so BLAS gets one thread here.
        with threadpool_limits(1, "blas"):
            if self.device == "cuda":
                from implicit.gpu.als import AlternatingLeastSquares as GpuALS

                model = GpuALS(
                    factors=self.factors,
                    regularization=self.regularization,
                    alpha=1.0,
                    iterations=self.iterations,
                    random_state=self.seed,
                )
            else:
                model = self._solver()
            model.fit(confidence, show_progress=False)
        self._store(model)
        return self

    def _fit_spark(self, weights: sp.csr_matrix) -> None:
        from shortrec.models.als_spark import spark_als_factors

        if self.device != "cpu":
            raise ValueError("engine='spark' trains on Spark's executors: leave device='cpu'")
        entries = weights.tocoo()
        self.user_factors_, self.item_factors_ = spark_als_factors(
            entries.row, entries.col, entries.data, weights.shape,
            factors=self.factors, regularization=self.regularization, alpha=self.alpha,
            iterations=self.iterations, seed=self.seed, master=self.spark_master,
        )  # fmt: skip

    def user_factors_from(self, histories: Histories, user_ids: np.ndarray) -> np.ndarray:
        """Least-squares user factors given the item factors and each user's history; users
        with no usable history get the mean training user."""
        history = self.history_matrix(histories, user_ids, self.video_map_)
        with threadpool_limits(1, "blas"):  # also keeps implicit's BLAS check quiet
            solver = self._solver()
            solver.item_factors = self.item_factors_
            factors = solver.recalculate_user(np.arange(len(user_ids)), self.confidences(history))
        empty = np.diff(history.indptr) == 0
        factors[empty] = self.user_factors_.mean(axis=0)
        return factors

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids, video_ids = np.asarray(user_ids), np.asarray(video_ids)
        return self._scores(self.user_factors_from(histories, user_ids), video_ids)


@dataclasses.dataclass
class BPRRecommender(_FactorModel):
    """Bayesian personalised ranking (Rendle et al. 2009) on which videos each user viewed."""

    name: ClassVar[str] = "bpr"
    weighting: str = hyperparameter("binary", WEIGHTING_HELP + " BPR only asks whether.")
    factors: int = 64
    learning_rate: float = 0.05
    regularization: float = 0.01
    iterations: int = 100
    num_threads: int = hyperparameter(0, "implicit's threads; 0 uses every core.")
    device: str = hyperparameter("cpu", "cpu | cuda (implicit's GPU build).")

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "factors": trial.suggest_categorical("factors", [32, 64, 128, 256]),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.2, log=True),
            "regularization": trial.suggest_float("regularization", 1e-4, 0.1, log=True),
            "iterations": trial.suggest_int("iterations", 50, 300, step=50),
        }

    def fit(self, data: TrainingData, context: FitContext | None = None) -> BPRRecommender:
        _check_device(self.device)
        views = self._fit_maps(data.views)
        views.data[:] = 1.0  # BPR only asks whether a view happened
        settings = dict(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
        )
        with threadpool_limits(1, "blas"):
            if self.device == "cuda":
                from implicit.gpu.bpr import BayesianPersonalizedRanking as GpuBPR

                model = GpuBPR(**settings)
            else:
                model = BayesianPersonalizedRanking(
                    **settings, num_threads=_threads(self.num_threads)
                )
            model.fit(views, show_progress=False)
        self._store(model)
        return self

    def user_factors_from(self, histories: Histories, user_ids: np.ndarray) -> np.ndarray:
        """Training users keep their factors; others get the mean factor of the videos they
        viewed (the last column is implicit's item bias, which users weigh by 1)."""
        rows = self.user_map_.index(user_ids)
        factors = np.empty((len(user_ids), self.item_factors_.shape[1]), dtype=np.float32)
        factors[rows >= 0] = self.user_factors_[rows[rows >= 0]]
        new = np.flatnonzero(rows < 0)
        if len(new):
            history = self.history_matrix(histories, user_ids[new], self.video_map_)
            history.data[:] = 1.0
            counts = np.asarray(history.sum(axis=1)).ravel()
            folded = (history @ self.item_factors_) / np.maximum(counts, 1.0)[:, None]
            folded[:, -1] = 1.0
            folded[counts == 0] = self.user_factors_.mean(axis=0)
            factors[new] = folded
        return factors

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids, video_ids = np.asarray(user_ids, dtype=np.int64), np.asarray(video_ids)
        return self._scores(self.user_factors_from(histories, user_ids), video_ids)

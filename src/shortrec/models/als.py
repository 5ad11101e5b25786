"""Weighted matrix factorisation (Hu, Koren & Volinsky 2008) with the `implicit` library.

What it learns from (`signal="likes"`, the default): a liked view is preference 1 with
confidence 1 + alpha * weight (the weight from `ViewWeighting`: 1 for every view by default,
the watch ratio clipped at 5 with `weighting="linear"`); a disliked view is preference 0 with
confidence 1 + alpha * dislike_confidence (implicit reads a negative entry as exactly that),
so a video the user swiped away is pushed down harder than one never shown; every other pair,
neutral views included, is preference 0 with confidence 1. With `signal="views"` every view
is a positive (the exposure ablation). With `engine="spark"` the factors are trained by Spark
MLlib's ALS instead (see `als_spark`), for logs beyond one machine; scoring is the same.

Where the defaults come from: regularization, alpha, dislike confidence and iterations from
`shortrec tune als` on the previous world's seed-0 quickstart tune users; binary weighting
with 16 factors (was linear with 32) re-chosen on the stop-25 generator, where it beat the old
pair on the small seed-0 and seed-1 worlds' tune users: +0.052 [0.011, 0.097] and +0.142
[0.098, 0.186] NDCG@10 (README, "Checked again on the stop-25 generator").

At scoring time it re-solves each user's factors from the history it is given, labelled by
the fitted like rule (implicit's `recalculate_user`, one least-squares solve per user in C++),
so users unseen in training and histories that grew after training are scored from what they
actually watched. implicit uses one thread by default: on a machine shared with other jobs,
more threads than free cores make every solve wait.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from shortrec.data.histories import Histories
from shortrec.models.base import (
    FitContext,
    Recommender,
    TrainingData,
    hyperparameter,
)
from shortrec.models.interactions import ViewWeighting, weighting_field

ENGINES = ("implicit", "spark")


def _threads(num_threads: int) -> int:
    return num_threads if num_threads > 0 else (os.cpu_count() or 1)


def _check_device(device: str) -> None:
    """implicit trains on CUDA only in its GPU build (torch's devices do not apply here)."""
    if device == "cuda":
        import implicit.gpu

        if not implicit.gpu.HAS_CUDA:
            raise ValueError("device='cuda' but this `implicit` build has no CUDA support")


@dataclasses.dataclass
class _FactorModel(Recommender, ViewWeighting):
    """Id maps and factors."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def _fit_maps(self, data: TrainingData) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The (positives, dislikes) training matrices, with the id maps they are indexed by."""
        train = data.views
        if train.height == 0:
            raise ValueError(f"{self.name}: the training frame has no views")
        self.user_map_, self.video_map_ = data.user_map, data.video_map
        self.fit_signal(data, self.video_map_)
        return self.signal_matrices(train, self.user_map_, self.video_map_)

    def _store(self, model) -> None:
        if self.device == "cuda":  # an implicit.gpu model keeps its factors on the device
            model = model.to_cpu()
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)

    def _scores(self, user_factors: np.ndarray, video_ids: np.ndarray) -> np.ndarray:
        columns = self.video_map_.index(video_ids)
        scores = user_factors @ self.item_factors_[np.maximum(columns, 0)].T
        return scores


@dataclasses.dataclass
class ALSRecommender(_FactorModel):
    """Weighted-confidence ALS; `device="cuda"` trains on implicit's GPU backend."""

    name: ClassVar[str] = "als"
    # Where these defaults come from: the module docstring.
    weighting: str = weighting_field("binary")
    factors: int = hyperparameter(16, "Size of the user and video factors.", minimum=1)
    regularization: float = hyperparameter(0.1, "L2 penalty on the factors.", minimum=0.0)
    alpha: float = hyperparameter(
        2.0, "Confidence of a liked view: 1 + alpha * its weight.", minimum=0.0
    )
    dislike_confidence: float = hyperparameter(
        0.6, "A disliked view is preference 0 with confidence 1 + alpha * this.", minimum=0.0
    )
    iterations: int = hyperparameter(15, "Alternating least-squares sweeps.", minimum=1)
    num_threads: int = hyperparameter(1, "implicit's threads; 0 uses every core.", minimum=0)
    device: str = hyperparameter(
        "cpu", "cpu | cuda (implicit's GPU build).", choices=_FactorModel.devices
    )
    engine: str = hyperparameter(
        "implicit", "Trainer: implicit (one process) | spark (MLlib).", choices=ENGINES
    )
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
            "dislike_confidence": trial.suggest_float("dislike_confidence", 0.0, 3.0),
            "iterations": trial.suggest_int("iterations", 5, 30),
        }

    def confidences(
        self, weights: sp.csr_matrix, dislikes: sp.csr_matrix | None = None
    ) -> sp.csr_matrix:
        """Hu et al.'s confidence 1 + alpha * weight on the positives' stored entries, and
        -(1 + alpha * dislike_confidence) on disliked ones (implicit: preference 0)."""
        confidence = weights.copy()
        confidence.data = (1.0 + self.alpha * confidence.data).astype(np.float32)
        if dislikes is not None and dislikes.nnz:
            confidence = confidence - dislikes * (1.0 + self.alpha * self.dislike_confidence)
        return confidence.tocsr().astype(np.float32)

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
        positives, dislikes = self._fit_maps(data)
        if self.engine == "spark":
            self._fit_spark(positives - dislikes * self.dislike_confidence)
            return self
        confidence = self.confidences(positives, dislikes)
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
        history, dislikes = self.history_signal(histories, user_ids, self.video_map_)
        confidence = self.confidences(history, dislikes)
        with threadpool_limits(1, "blas"):  # also keeps implicit's BLAS check quiet
            solver = self._solver()
            solver.item_factors = self.item_factors_
            factors = solver.recalculate_user(np.arange(len(user_ids)), confidence)
        empty = np.diff(confidence.indptr) == 0
        factors[empty] = self.user_factors_.mean(axis=0)
        return factors

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids, video_ids = np.asarray(user_ids), np.asarray(video_ids)
        return self._scores(self.user_factors_from(histories, user_ids), video_ids)

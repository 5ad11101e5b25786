"""Bayesian personalised ranking (Rendle et al. 2009), trained as RecBole trains it.

The recipe is RecBole 1.2's BPR, not `implicit`'s: id embeddings (64-d, Xavier-normal
initialised, no biases), Adam (learning rate 1e-3) on mini-batches of 2,048 triples, one
uniformly drawn negative per positive, redrawn every epoch, and early stopping on validation
NDCG@10 (patience 10) keeping the best epoch. One default departs from RecBole's: L2 1e-2 on
the batch's embeddings (RecBole: none), re-chosen on the recalibrated (harder) world, where
the likes are noisier: on the seed-0 small world's tune users +0.082 NDCG@10 [0.032, 0.130]
over no L2 (1e-4, 1e-3, 3e-3, 3e-2 and 1e-1 gave +0.000, +0.019, +0.043, +0.040, +0.054),
confirmed on seed 1's tune users, +0.080 [0.041, 0.121] (README, "Collaborative filtering:
likes, dislikes and defaults"). implicit's own SGD with a fixed iteration count
trailed RecBole on held-out real data (test NDCG@10 0.052 vs 0.067); the epoch count is what
a fixed budget gets wrong, so validation decides it here.

What it learns from (`signal="likes"`, the default): a triple says "the user prefers this
video to that one". Each liked view is a positive paired with a uniform negative (never one
of the user's positives), so a disliked view is never a positive and is among the videos a
negative is drawn from. `dislike_weight` > 0 adds each disliked view as an explicit negative
paired with one of the user's positives (on the seed-0 quickstart world's tune users this hurt:
0.634 with weight 1 vs 0.717 without, so the default is 0); `neutral_weight` > 0 makes neutral
views (watched, neither liked nor disliked) positives whose triples weigh that much. With
`signal="views"` every view is a positive and nothing is disliked (the exposure ablation).

Training users keep their embeddings; other users are folded in as the mean embedding of the
videos they liked (every viewed video with `signal="views"`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from shortrec.data.histories import Histories
from shortrec.models.base import (
    FitContext,
    Recommender,
    TrainingData,
    hyperparameter,
)
from shortrec.models.interactions import ValidationRanking, ViewSignal
from shortrec.training.device import seeded_global_rng, torch_threads
from shortrec.training.loop import fit_epochs

_NEGATIVE_ROUNDS = 8  # redraws of negatives that hit a positive (each round keeps ~all)


class BPRNet(nn.Module):
    """User and video embeddings; a pair's score is their dot product."""

    def __init__(self, n_users: int, n_videos: int, factors: int):
        super().__init__()
        self.users = nn.Embedding(n_users, factors)
        self.videos = nn.Embedding(n_videos, factors)
        nn.init.xavier_normal_(self.users.weight)
        nn.init.xavier_normal_(self.videos.weight)

    def loss(
        self,
        users: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        weights: torch.Tensor,
        regularization: float,
    ) -> torch.Tensor:
        u, i, j = self.users(users), self.videos(positives), self.videos(negatives)
        margin = (u * (i - j)).sum(dim=1)
        loss = -(F.logsigmoid(margin) * weights).sum() / weights.sum()
        if regularization > 0:
            loss = loss + regularization * (u.pow(2) + i.pow(2) + j.pow(2)).sum() / len(users)
        return loss


@dataclasses.dataclass
class BPRRecommender(Recommender, ViewSignal):
    """BPR with RecBole's defaults and validation early stopping."""

    name: ClassVar[str] = "bpr"
    reports_epochs: ClassVar[bool] = True
    factors: int = hyperparameter(64, "Embedding size of users and videos.", minimum=1)
    learning_rate: float = hyperparameter(1e-3, "Adam's learning rate.", above=0.0)
    regularization: float = hyperparameter(
        1e-2, "L2 on the batch's embeddings, in the loss.", minimum=0.0
    )
    batch_size: int = hyperparameter(2048, "Triples per Adam step.", minimum=1)
    epochs: int = hyperparameter(300, "Most epochs; early stopping usually ends sooner.", minimum=1)
    patience: int = hyperparameter(
        10, "Epochs without a better validation NDCG@10 to stop.", minimum=1
    )
    # dislike_weight 0 was chosen on the tune users of the seed-0 quickstart world (0.717 vs
    # 0.634 with 1.0): disliked views stay out of the positives and among the uniform negatives.
    dislike_weight: float = hyperparameter(
        0.0,
        "Weight of a (positive, disliked) triple; 0 ignores dislikes (signal likes).",
        minimum=0.0,
    )
    neutral_weight: float = hyperparameter(
        0.0, "Weight of a neutral view's triples; 0: only liked views are positives.", minimum=0.0
    )
    validation_users: int = hyperparameter(2000, "Users sampled for validation NDCG@10.", minimum=1)
    num_threads: int = hyperparameter(1, "torch CPU threads; 0 keeps torch's own.", minimum=0)

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "factors": trial.suggest_categorical("factors", [32, 64, 128]),
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "regularization": trial.suggest_float("regularization", 1e-6, 1e-2, log=True),
            "dislike_weight": trial.suggest_float("dislike_weight", 0.0, 3.0),
            "neutral_weight": trial.suggest_float("neutral_weight", 0.0, 1.0),
        }

    def fit(self, data: TrainingData, context: FitContext | None = None) -> BPRRecommender:
        if data.views.height == 0:
            raise ValueError("bpr: the training frame has no views")
        self.user_map_, self.video_map_ = data.user_map, data.video_map
        self.fit_signal(data, self.video_map_)
        positives, dislikes = self.signal_matrices(data.views, self.user_map_, self.video_map_)
        seen = self.views_matrix(data.views, self.user_map_, self.video_map_)
        positives.data[:] = 1.0  # from here on, an entry is the weight of its triples
        if self.signal == "likes" and self.neutral_weight > 0:
            neutral = (seen > 0).astype(np.float32) - (positives > 0) - (dislikes > 0)
            neutral.data = np.maximum(neutral.data, 0.0) * self.neutral_weight
            positives = (positives + neutral).tocsr()
            positives.eliminate_zeros()
        if positives.nnz == 0:
            raise ValueError("bpr: no training view is a positive (no liked views)")
        check = ValidationRanking.build(
            self, data.validation, self.user_map_, self.video_map_, seen,
            self.validation_users, self.seed,
        )  # fmt: skip
        rng = np.random.default_rng(self.seed)
        with torch_threads(self.num_threads), seeded_global_rng(self.seed, torch.device("cpu")):
            network = BPRNet(len(self.user_map_), len(self.video_map_), self.factors)
            optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
            result = fit_epochs(
                self.name, network, optimiser,
                lambda epoch: self.train_epoch(network, optimiser, positives, dislikes, rng),
                None if check is None else lambda epoch: self.validate(network, check),
                epochs=self.epochs, patience=self.patience, context=context,
                generators=[rng], resume=self.resume_key(data),
            )  # fmt: skip
        self.user_factors_ = network.users.weight.detach().numpy().copy()
        self.item_factors_ = network.videos.weight.detach().numpy().copy()
        self.fit_report_ = {
            **result.report(),
            "signal": self.signal if data.has_watch_ratio else "views (no watch ratio)",
        }
        return self

    def train_epoch(
        self,
        network: BPRNet,
        optimiser: torch.optim.Optimizer,
        positives: sp.csr_matrix,
        dislikes: sp.csr_matrix,
        rng: np.random.Generator,
    ) -> dict[str, float]:
        """One pass over a fresh draw of triples, in shuffled mini-batches."""
        network.train()
        users, pos, neg, weights = self._triples(positives, dislikes, rng)
        total = 0.0
        for batch in np.array_split(
            rng.permutation(len(users)), max(1, math.ceil(len(users) / self.batch_size))
        ):
            loss = network.loss(
                torch.from_numpy(users[batch]),
                torch.from_numpy(pos[batch]),
                torch.from_numpy(neg[batch]),
                torch.from_numpy(weights[batch]),
                self.regularization,
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        return {"loss": total / len(users)}

    def validate(self, network: BPRNet, check: ValidationRanking) -> float:
        """Validation NDCG@10 of the current embeddings."""
        with torch.no_grad():
            user_vectors = network.users.weight[torch.from_numpy(check.rows)]
            scores = (user_vectors @ network.videos.weight.T).numpy()
        return check.ndcg(scores)

    def _triples(
        self, positives: sp.csr_matrix, dislikes: sp.csr_matrix, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One epoch's (user, positive, negative, weight): every positive (its entry is its
        weight) with a fresh uniform negative outside the user's positives, then every disliked
        view with one of the user's positives."""
        n_videos = positives.shape[1]
        counts = np.diff(positives.indptr)
        users = np.repeat(np.arange(positives.shape[0]), counts)
        pos = positives.indices.astype(np.int64)
        keys = users * n_videos + pos  # sorted: CSR order
        neg = rng.integers(0, n_videos, len(users))
        for _ in range(_NEGATIVE_ROUNDS):
            probe = users * n_videos + neg
            found = np.searchsorted(keys, probe)
            hit = keys[np.minimum(found, len(keys) - 1)] == probe
            if not hit.any():
                break
            neg[hit] = rng.integers(0, n_videos, int(hit.sum()))
        weights = positives.data.astype(np.float32)
        if dislikes.nnz and self.dislike_weight > 0:
            d_users = np.repeat(np.arange(dislikes.shape[0]), np.diff(dislikes.indptr))
            d_videos = dislikes.indices.astype(np.int64)
            has_positive = counts[d_users] > 0
            d_users, d_videos = d_users[has_positive], d_videos[has_positive]
            picks = positives.indptr[d_users] + (rng.random(len(d_users)) * counts[d_users])
            users = np.concatenate([users, d_users])
            pos = np.concatenate([pos, positives.indices[picks.astype(np.int64)]])
            neg = np.concatenate([neg, d_videos])
            weights = np.concatenate(
                [weights, np.full(len(d_users), self.dislike_weight, np.float32)]
            )
        return users, pos, neg.astype(np.int64), weights

    def user_factors_from(self, histories: Histories, user_ids: np.ndarray) -> np.ndarray:
        """Training users keep their factors; others get the mean factor of the videos they
        liked; users with neither get the mean training user."""
        rows = self.user_map_.index(user_ids)
        factors = np.empty((len(user_ids), self.item_factors_.shape[1]), dtype=np.float32)
        factors[rows >= 0] = self.user_factors_[rows[rows >= 0]]
        new = np.flatnonzero(rows < 0)
        if len(new):
            liked, _ = self.history_signal(histories, user_ids[new], self.video_map_)
            liked.data[:] = 1.0
            counts = np.asarray(liked.sum(axis=1)).ravel()
            folded = (liked @ self.item_factors_) / np.maximum(counts, 1.0)[:, None]
            folded[counts == 0] = self.user_factors_.mean(axis=0)
            factors[new] = folded
        return factors

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids, video_ids = np.asarray(user_ids, dtype=np.int64), np.asarray(video_ids)
        columns = self.video_map_.index(video_ids)
        scores = (
            self.user_factors_from(histories, user_ids)
            @ self.item_factors_[np.maximum(columns, 0)].T
        )
        return scores

"""A deep autoencoder over user histories, and the training loop it shares with Mult-VAE.

Both models read a user's whole history row (one entry per video), corrupt it with input
dropout, and learn to reconstruct it; the reconstruction ranks the videos. As with EASE there
is no per-user state, so a user never seen in training is scored from their history alone.

Training runs over mini-batches of user rows (sparse rows made dense per batch) with Adam.
Given a `validation` frame, each epoch ends with NDCG@10 of the validation views (ranked
among unseen videos, from the user's training row) and training stops after `patience`
epochs without improvement, keeping the best weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from shortrec.data.histories import Histories, IdMap
from shortrec.evaluation.metrics import full_ranking_metrics
from shortrec.models.base import FitContext, Recommender, TrainingData
from shortrec.models.interactions import (
    WEIGHTING_HELP,
    ViewWeighting,
    hyperparameter,
    row_popularity,
    unknown_videos_last,
)

LOSSES = ("multinomial", "bce", "mse")


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; 'cpu' and 'cuda' are taken as asked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    return torch.device(device)


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-batch mean reconstruction loss of user rows."""
    if loss == "multinomial":  # Liang et al.: log-likelihood of the row under a softmax
        return -(F.log_softmax(logits, dim=1) * target).sum(dim=1).mean()
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, (target > 0).float())
    return F.mse_loss(torch.sigmoid(logits), (target > 0).float())


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class DeepAutoencoderNet(nn.Module):
    """videos -> hidden sizes -> mirrored back to videos, tanh between layers."""

    def __init__(self, n_videos: int, hidden_sizes: list[int], dropout: float, loss: str):
        super().__init__()
        self.dropout, self.loss_name = dropout, loss
        self.encoder = _mlp([n_videos, *hidden_sizes])
        self.decoder = _mlp([*hidden_sizes[::-1], n_videos])

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        x = F.normalize(F.dropout(rows, self.dropout, self.training), dim=1)
        return self.decoder(torch.tanh(self.encoder(x)))

    def loss(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        return reconstruction_loss(self(rows), rows, self.loss_name)


@dataclasses.dataclass
class RowAutoencoder(Recommender, ViewWeighting):
    """Training, scoring and persistence shared by the history-row autoencoders.

    Subclasses set `name` and implement `build_network(n_videos)`; the network's
    `forward(rows)` returns logits over videos and `loss(rows, step)` the training loss."""

    reports_epochs: ClassVar[bool] = True
    devices: ClassVar[tuple[str, ...]] = ("auto", "cpu", "cuda")
    weighting: str = hyperparameter("binary", WEIGHTING_HELP)
    dropout: float = hyperparameter(0.5, "Input dropout: share of a history hidden per step.")
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 50
    batch_size: int = 256
    patience: int = hyperparameter(5, "Epochs without a better validation NDCG@10 to stop.")
    validation_users: int = hyperparameter(2000, "Users sampled for validation NDCG@10.")
    device: str = hyperparameter("auto", "auto | cpu | cuda.")

    def build_network(self, n_videos: int) -> nn.Module:
        raise NotImplementedError

    # --- training ------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> RowAutoencoder:
        train, validation = data.views, data.validation
        if train.height == 0:
            raise ValueError(f"{self.name}: the training frame has no views")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"{self.name}: epochs and batch_size must be >= 1")
        self.check_weighting()
        device = resolve_device(self.device)
        users = IdMap.from_ids(train["user_id"].to_numpy())
        self.video_map_ = IdMap.from_ids(train["video_id"].to_numpy())
        matrix = self.views_matrix(train, users, self.video_map_)
        self.popularity_ = row_popularity(matrix)
        check = self._validation_set(matrix, users, validation)
        rng = np.random.default_rng(self.seed)
        trainable = np.flatnonzero(np.diff(matrix.indptr) > 0)
        # fork_rng keeps the seeding of weights and dropout out of the caller's torch state.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            network = self.build_network(len(self.video_map_)).to(device)
            optimiser = torch.optim.Adam(
                network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            best_ndcg, best_state, stale, step = -np.inf, None, 0, 0
            history: list[dict[str, float]] = []
            for epoch in range(self.epochs):
                network.train()
                total = 0.0
                n_batches = max(1, math.ceil(len(trainable) / self.batch_size))
                for batch in np.array_split(rng.permutation(trainable), n_batches):
                    rows = torch.from_numpy(matrix[batch].toarray()).to(device)
                    loss = network.loss(rows, step)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * len(batch)
                    step += 1
                record = {"epoch": epoch + 1, "loss": total / max(len(trainable), 1)}
                if check is not None:
                    record["validation_ndcg@10"] = ndcg = self._validation_ndcg(network, *check)
                    self.report_epoch(context, epoch + 1, ndcg)
                    if ndcg > best_ndcg:
                        best_ndcg, best_state, stale = ndcg, copy.deepcopy(network.state_dict()), 0
                    else:
                        stale += 1
                history.append(record)
                if check is not None and stale >= self.patience:
                    break
            if best_state is not None:
                network.load_state_dict(best_state)
        self.network_ = network.cpu().eval()
        self.fit_report_ = {"history": history}
        return self

    def _validation_set(
        self, matrix: sp.csr_matrix, users: IdMap, validation: pl.DataFrame | None
    ) -> tuple[sp.csr_matrix, np.ndarray] | None:
        """(training rows, relevance among unseen videos) of sampled validation users."""
        if validation is None or validation.height == 0:
            return None
        targets = self.views_matrix(validation, users, self.video_map_)
        targets.data[:] = 1.0
        targets = targets - targets.multiply(matrix > 0)  # only videos new to the user
        targets.eliminate_zeros()
        candidates = np.flatnonzero((np.diff(targets.indptr) > 0) & (np.diff(matrix.indptr) > 0))
        if len(candidates) == 0:
            return None
        rng = np.random.default_rng(self.seed + 1)
        chosen = np.sort(rng.permutation(candidates)[: self.validation_users])
        return matrix[chosen], targets[chosen].toarray() > 0

    def _validation_ndcg(
        self, network: nn.Module, inputs: sp.csr_matrix, relevance: np.ndarray
    ) -> float:
        scores = self._forward(network, inputs)
        scores[inputs.toarray() > 0] = -np.inf  # seen in training: not a candidate
        metrics, _ = full_ranking_metrics(scores, relevance, ks=(10,), seed=self.seed)
        return float(np.nanmean(metrics["ndcg@10"]))

    def _forward(self, network: nn.Module, rows: sp.csr_matrix) -> np.ndarray:
        device = next(network.parameters()).device
        network.eval()
        out = np.empty(rows.shape, dtype=np.float32)
        with torch.no_grad():
            for start in range(0, rows.shape[0], 1024):
                batch = torch.from_numpy(rows[start : start + 1024].toarray()).to(device)
                out[start : start + 1024] = network(batch).float().cpu().numpy()
        return out

    # --- scoring and persistence ---------------------------------------------------------
    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids, video_ids = np.asarray(user_ids), np.asarray(video_ids)
        columns = self.video_map_.index(video_ids)
        known_columns = np.maximum(columns, 0)
        history = self.history_matrix(histories, user_ids, self.video_map_)
        scores = self._forward(self.network_, history)[:, known_columns]
        empty = np.diff(history.indptr) == 0
        scores[empty] = self.popularity_[known_columns]
        return unknown_videos_last(scores, columns >= 0)

    def new_module(self, attribute: str) -> nn.Module:
        return self.build_network(len(self.video_map_))


@dataclasses.dataclass
class DeepAutoencoderRecommender(RowAutoencoder):
    """Deep autoencoder of history rows (the seed's hidden sizes 256-128, dropout 0.3).

    Trained with the multinomial loss by default: the task is ranking videos, not
    reconstructing watch ratios."""

    name: ClassVar[str] = "autoencoder"
    hidden_sizes: str = hyperparameter("256,128", "Encoder layer sizes; the decoder mirrors them.")
    dropout: float = hyperparameter(0.3, "Input dropout: share of a history hidden per step.")
    loss: str = hyperparameter("multinomial", "multinomial | bce | mse.")

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "hidden_sizes": trial.suggest_categorical(
                "hidden_sizes", ["128", "256,128", "512,256"]
            ),
            "dropout": trial.suggest_float("dropout", 0.0, 0.7),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
        }

    def build_network(self, n_videos: int) -> nn.Module:
        if self.loss not in LOSSES:
            raise ValueError(f"autoencoder loss must be one of {LOSSES}, got {self.loss!r}")
        try:
            sizes = [int(size) for size in self.hidden_sizes.split(",")]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1:
            raise ValueError(
                f"hidden_sizes must be comma-separated positive integers such as '256,128', "
                f"got {self.hidden_sizes!r}"
            )
        return DeepAutoencoderNet(n_videos, sizes, self.dropout, self.loss)

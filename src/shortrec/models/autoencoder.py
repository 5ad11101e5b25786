"""A deep autoencoder over user histories, and the training loop it shares with Mult-VAE.

Both models read a user's whole history row (one entry per viewed video, L2-normalised, then
corrupted by input dropout) and output a score per video that ranks the videos. As with EASE
there is no per-user state, so a user never seen in training is scored from their history
alone, and scoring needs no labels.

What they learn from (`signal="likes"`, the default): the input is the whole history (what the
feed showed and the user watched), the target is the user's liked views only, so the network
learns which videos a history predicts the user will like; disliked and neutral views are
input, never targets. With `signal="views"` the target is the input row (the classic
reconstruction objective, which learns exposure: the ablation).

Training runs over mini-batches of user rows (sparse rows made dense per batch) with Adam.
An epoch is `epoch_rows` user rows (successive shuffled passes over the users, at least one
pass): with one pass per epoch a catalogue of a few thousand users gets a handful of steps
per epoch and early stopping ends training after a few dozen steps, badly undertrained.
RecBole draws one row per interaction per epoch, which is far more than CPUs afford at
KuaiRec's density; a fixed row budget keeps epochs comparable across data sizes. Given a
`validation` frame, each epoch ends with NDCG@10 of the validation positives (ranked
among videos the user had not viewed) and training stops after `patience` epochs without
improvement, keeping the best weights. torch uses `num_threads` CPU threads (1 by default:
the rows are small enough that more threads mostly wait on each other on a shared machine).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from shortrec.data.histories import Histories, IdMap
from shortrec.models.base import FitContext, Recommender, TrainingData
from shortrec.models.interactions import (
    WEIGHTING_HELP,
    ValidationRanking,
    ViewWeighting,
    hyperparameter,
    row_popularity,
    unknown_videos_last,
)
from shortrec.training.device import torch_threads
from shortrec.training.early_stopping import EarlyStopping

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
        x = F.dropout(F.normalize(rows, dim=1), self.dropout, self.training)
        return self.decoder(torch.tanh(self.encoder(x)))

    def loss(self, rows: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        return reconstruction_loss(self(rows), targets, self.loss_name)


@dataclasses.dataclass
class RowAutoencoder(Recommender, ViewWeighting):
    """Training, scoring and persistence shared by the history-row autoencoders.

    Subclasses set `name` and implement `build_network(n_videos)`; the network's
    `forward(rows)` returns logits over videos and `loss(rows, targets, step)` the training
    loss."""

    reports_epochs: ClassVar[bool] = True
    devices: ClassVar[tuple[str, ...]] = ("auto", "cpu", "cuda")
    weighting: str = hyperparameter("binary", WEIGHTING_HELP)
    dropout: float = hyperparameter(0.5, "Input dropout: share of a history hidden per step.")
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = hyperparameter(200, "Most epochs; early stopping usually ends sooner.")
    batch_size: int = 256
    epoch_rows: int = hyperparameter(5_000, "User rows per epoch (at least one pass).")
    patience: int = hyperparameter(10, "Epochs without a better validation NDCG@10 to stop.")
    validation_users: int = hyperparameter(2000, "Users sampled for validation NDCG@10.")
    device: str = hyperparameter("auto", "auto | cpu | cuda.")
    num_threads: int = hyperparameter(1, "torch CPU threads; 0 keeps torch's own.")

    def build_network(self, n_videos: int) -> nn.Module:
        raise NotImplementedError

    # --- training ------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> RowAutoencoder:
        train = data.views
        if train.height == 0:
            raise ValueError(f"{self.name}: the training frame has no views")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"{self.name}: epochs and batch_size must be >= 1")
        self.check_weighting()
        device = resolve_device(self.device)
        users = IdMap.from_ids(train["user_id"].to_numpy())
        self.video_map_ = IdMap.from_ids(train["video_id"].to_numpy())
        inputs = self.views_matrix(train, users, self.video_map_)
        targets, _ = self.signal_matrices(train, users, self.video_map_)
        self.popularity_ = row_popularity(targets)
        check = ValidationRanking.build(
            self, data.validation, users, self.video_map_, inputs, self.validation_users,
            self.seed,
        )  # fmt: skip
        rng = np.random.default_rng(self.seed)
        trainable = np.flatnonzero(np.diff(targets.indptr) > 0)
        if len(trainable) == 0:
            raise ValueError(f"{self.name}: no training view is a positive (no liked views)")
        # fork_rng keeps the seeding of weights and dropout out of the caller's torch state.
        with (
            torch_threads(self.num_threads),
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(self.seed)
            network = self.build_network(len(self.video_map_)).to(device)
            optimiser = torch.optim.Adam(
                network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            stopper, best_state, step = EarlyStopping(self.patience), None, 0
            history: list[dict[str, float]] = []
            for epoch in range(self.epochs):
                network.train()
                total = 0.0
                passes = max(1, math.ceil(self.epoch_rows / len(trainable)))
                rows = np.concatenate([rng.permutation(trainable) for _ in range(passes)])
                rows = rows[: max(self.epoch_rows, len(trainable))]
                n_batches = max(1, math.ceil(len(rows) / self.batch_size))
                for batch in np.array_split(rows, n_batches):
                    loss = network.loss(
                        torch.from_numpy(inputs[batch].toarray()).to(device),
                        torch.from_numpy(targets[batch].toarray()).to(device),
                        step,
                    )
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * len(batch)
                    step += 1
                record = {"epoch": epoch + 1, "loss": total / len(rows)}
                if check is not None:
                    scores = self._forward(network, inputs[check.rows])
                    record["validation_ndcg@10"] = ndcg = check.ndcg(scores)
                    self.report_epoch(context, epoch + 1, ndcg)
                    if stopper.update(ndcg, epoch + 1):
                        best_state = copy.deepcopy(network.state_dict())
                history.append(record)
                if check is not None and stopper.should_stop:
                    break
            if best_state is not None:
                network.load_state_dict(best_state)
        self.network_ = network.cpu().eval()
        self.fit_report_ = {
            "history": history,
            "best_validation_ndcg@10": None if best_state is None else stopper.best_score,
            "signal": self.signal if data.has_watch_ratio else "views (no watch ratio)",
        }
        return self

    def _forward(self, network: nn.Module, rows: sp.csr_matrix) -> np.ndarray:
        device = next(network.parameters()).device
        network.eval()
        out = np.empty(rows.shape, dtype=np.float32)
        with torch_threads(self.num_threads), torch.no_grad():
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

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
from shortrec.models.interactions import (
    ValidationRanking,
    ViewWeighting,
    row_popularity,
    weighting_field,
)
from shortrec.training.device import seeded_global_rng, select_device, torch_threads
from shortrec.training.loop import fit_epochs

LOSSES = ("multinomial", "bce", "mse")
AUTOENCODER_LOSSES = ("auto", *LOSSES)


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
    weighting: str = weighting_field("binary")
    dropout: float = hyperparameter(
        0.5, "Input dropout: share of a history hidden per step.", minimum=0.0, below=1.0
    )
    learning_rate: float = hyperparameter(1e-3, "Adam's learning rate.", above=0.0)
    weight_decay: float = hyperparameter(0.0, "Adam's L2 weight decay.", minimum=0.0)
    epochs: int = hyperparameter(200, "Most epochs; early stopping usually ends sooner.", minimum=1)
    batch_size: int = hyperparameter(256, "User rows per Adam step.", minimum=1)
    epoch_rows: int = hyperparameter(5_000, "User rows per epoch (at least one pass).", minimum=1)
    patience: int = hyperparameter(
        10, "Epochs without a better validation NDCG@10 to stop.", minimum=1
    )
    validation_users: int = hyperparameter(2000, "Users sampled for validation NDCG@10.", minimum=1)
    device: str = hyperparameter(
        "auto", "Where torch trains: auto (CUDA when present) | cpu | cuda.",
        choices=devices,
    )  # fmt: skip
    num_threads: int = hyperparameter(1, "torch CPU threads; 0 keeps torch's own.", minimum=0)

    def build_network(self, n_videos: int) -> nn.Module:
        raise NotImplementedError

    # --- training ------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> RowAutoencoder:
        if data.views.height == 0:
            raise ValueError(f"{self.name}: the training frame has no views")
        device = select_device(self.device)
        users, self.video_map_ = data.user_map, data.video_map
        inputs = self.views_matrix(data.views, users, self.video_map_)
        targets, _ = self.signal_matrices(data.views, users, self.video_map_)
        self.popularity_ = row_popularity(targets)
        check = ValidationRanking.build(
            self, data.validation, users, self.video_map_, inputs, self.validation_users,
            self.seed,
        )  # fmt: skip
        rng = np.random.default_rng(self.seed)
        trainable = np.flatnonzero(np.diff(targets.indptr) > 0)
        if len(trainable) == 0:
            raise ValueError(f"{self.name}: no training view is a positive (no liked views)")
        with torch_threads(self.num_threads), seeded_global_rng(self.seed, device):
            network = self.build_network(len(self.video_map_)).to(device)
            optimiser = torch.optim.Adam(
                network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            result = fit_epochs(
                self.name, network, optimiser,
                lambda epoch: self.train_epoch(
                    network, optimiser, inputs, targets, trainable, rng, epoch
                ),
                None if check is None else lambda epoch: self.validate(network, inputs, check),
                epochs=self.epochs, patience=self.patience, context=context,
                generators=[rng], resume=self.resume_key(data),
            )  # fmt: skip
        self.network_ = network.cpu().eval()
        self.fit_report_ = {
            **result.report(),
            "signal": self.signal if data.has_watch_ratio else "views (no watch ratio)",
        }
        return self

    def train_epoch(
        self,
        network: nn.Module,
        optimiser: torch.optim.Optimizer,
        inputs: sp.csr_matrix,
        targets: sp.csr_matrix,
        trainable: np.ndarray,
        rng: np.random.Generator,
        epoch: int,
    ) -> dict[str, float]:
        """`epoch_rows` shuffled user rows (at least one pass) in mini-batches."""
        device = next(network.parameters()).device
        network.train()
        total = 0.0
        passes = max(1, math.ceil(self.epoch_rows / len(trainable)))
        rows = np.concatenate([rng.permutation(trainable) for _ in range(passes)])
        rows = rows[: max(self.epoch_rows, len(trainable))]
        n_batches = max(1, math.ceil(len(rows) / self.batch_size))
        step = (epoch - 1) * n_batches  # every epoch has the same number of steps
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
        return {"loss": total / len(rows)}

    def validate(
        self, network: nn.Module, inputs: sp.csr_matrix, check: ValidationRanking
    ) -> float:
        """Validation NDCG@10 of the sampled users' history rows."""
        return check.ndcg(self._forward(network, inputs[check.rows]))

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
        return scores

    def new_module(self, attribute: str) -> nn.Module:
        return self.build_network(len(self.video_map_))


@dataclasses.dataclass
class DeepAutoencoderRecommender(RowAutoencoder):
    """Deep autoencoder of history rows (the seed's hidden sizes 256-128, dropout 0.3).

    The loss (`loss="auto"`, the default): when the log's like rule tells liked views from
    other views, a per-video binary cross-entropy (bce), each output the chance the history's
    user likes that video; when every view is liked (a log without watch ratios, or
    `--like-rule all`), the multinomial log-likelihood (Liang et al.'s choice for
    implicit-feedback logs; the Mult-VAE's), which shares one unit of mass among the row's
    videos. The fitted choice is `loss_`, in the fit report.

    Where the defaults came from: hidden sizes and dropout are the seed project's. bce was
    chosen on the recalibrated (harder) world's seed-0 small tune set, where it beat the
    multinomial loss by +0.065 NDCG@10 [0.034, 0.093], confirmed on seed 1's tune set, +0.060
    [0.015, 0.099]; dropout 0.5 / 0.7, hidden 128 or 512-256, learning rate 3e-4 and weight
    decay 1e-5 / 1e-4 were no better. On the Wikipedia edit log (every view liked, 2% of the
    catalogue per user) bce stalled at popularity's level and early stopping ended it there
    (test NDCG@10 0.047 vs popularity's 0.042, multinomial 0.128); on a denser rating-log
    analogue with every view liked the two losses tie (bce - multinomial +0.005 [-0.004,
    0.013]), hence multinomial where there are no labels (README, "Collaborative filtering:
    likes, dislikes and defaults", "Defaults off our world")."""

    name: ClassVar[str] = "autoencoder"
    hidden_sizes: str = hyperparameter("256,128", "Encoder layer sizes; the decoder mirrors them.")
    dropout: float = hyperparameter(
        0.3, "Input dropout: share of a history hidden per step.", minimum=0.0, below=1.0
    )
    loss: str = hyperparameter(
        "auto", "Training loss: auto (bce when some views are not liked, else multinomial) | "
        "multinomial (softmax log-likelihood) | bce (per-video binary cross-entropy) | mse.",
        choices=AUTOENCODER_LOSSES,
    )  # fmt: skip

    def fit(self, data: TrainingData, context: FitContext | None = None) -> RowAutoencoder:
        every_view_liked = bool(data.views["liked"].all()) or self.signal == "views"
        self.loss_ = self.loss
        if self.loss == "auto":
            self.loss_ = "multinomial" if every_view_liked else "bce"
        super().fit(data, context)
        self.fit_report_["loss"] = self.loss_
        return self

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

    def check_hyperparameters(self) -> list[str]:
        if self._hidden_sizes() is None:
            return [
                "hidden_sizes must be comma-separated positive integers such as '256,128'; "
                f"got {self.hidden_sizes!r}"
            ]
        return []

    def _hidden_sizes(self) -> list[int] | None:
        try:
            sizes = [int(size) for size in str(self.hidden_sizes).split(",")]
        except ValueError:
            return None
        return sizes if sizes and min(sizes) >= 1 else None

    def build_network(self, n_videos: int) -> nn.Module:
        return DeepAutoencoderNet(n_videos, self._hidden_sizes(), self.dropout, self.loss_)

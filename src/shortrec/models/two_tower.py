"""Two-tower retrieval: a user tower over user features and the pooled history (the user's
last views: their id embeddings, shared with the video tower, and their content), a video tower
over an id embedding plus content features, trained with an in-batch sampled softmax
(logQ-corrected) and a watch-ratio regression head.

What it learns from: what users like, not what the feed showed them.
- Retrieval positives are the views the run's like rule calls liked: each liked view's
  softmax ranks its video above the other videos of the batch.
- Dislikes are explicit negatives: each liked view's softmax also holds one video its user
  disliked (drawn from their training views), counted `dislike_weight` times, so the user's
  vector is pushed away from what they skipped more than from a random video.
- Liked or not, among what was shown: every view's similarity also predicts its like label
  (`like_weight`). The softmax alone mixes taste with exposure (what the feed chose to show);
  this term holds exposure fixed, and the fully observed small_matrix rewards exactly that.
- The video tower sees each video's training like rate (the run's rule; shrunk towards the
  mean), not its mean watch ratio, which the regression head would read its target back from.
- The regression head learns every view's capped watch ratio (the `WatchRatioPredictor`).
`positives="views"` makes every view a positive and ignores dislikes and likes: the
exposure-learning variant, kept for the ablation table. A log without watch ratios has
every view liked and none disliked; the fit report says so, and which side features the log
had (an imported log may have none: the towers then run on ids, history and training
popularity).

The history is read at scoring time, so updated histories and brand-new users work without
retraining; videos never watched in training use the learned "unknown id" row plus their
content, which id dropout during training taught to stand on its own.

Speed: histories are pooled with `embedding_bag` over the flattened windows (no (B, L, d)
gather, no sparse matrices), each step embeds only the batch's distinct videos, and torch
runs on `num_threads` threads (1 by default: each op is small, and spinning OpenMP threads
make a shared machine many times slower).

Where the defaults came from: the recalibrated (harder) world's small tune sets, with three
training seeds per setting, since one seed's run moves tune NDCG@10 by as much as a
hyperparameter does (seeds 0 and 1 of the same defaults: +0.067 [0.033, 0.100] apart).
`history_length` 50 (was 20), `like_weight` 3 (was 1) and `weight_decay` 1e-4 (was 1e-6)
together, seed-averaged per user: +0.032 [0.009, 0.055] on the seed-0 world, +0.034 [0.015,
0.054] on seed 1 (README, "Collaborative filtering: likes, dislikes and defaults"). The rest
were chosen on the previous world (issue 9).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import ClassVar

import numpy as np
import polars as pl
import torch
from torch import nn

from shortrec.data.features import WATCH_RATIO_CAP, FeatureTable, build_features
from shortrec.data.histories import Histories, IdMap
from shortrec.models.base import (
    FitContext,
    Recommender,
    TrainingData,
    WatchRatioPredictor,
    hyperparameter,
)
from shortrec.models.interactions import ValidationRanking, ViewSignal
from shortrec.training.device import make_generator, seeded_global_rng, torch_threads
from shortrec.training.loop import fit_epochs

# A video's mean watch ratio would let the regression head read its own target back.
VIDEO_OUTCOME_COLUMNS = ("train_mean_watch_ratio",)
POSITIVES = ("liked", "views")


@dataclasses.dataclass
class _History:
    """Each row's recent views, flattened for `embedding_bag`: catalog positions (the last
    position is "outside the catalog"), bag offsets, and per-view weights for the plain mean
    and the watch-ratio-weighted mean."""

    positions: torch.Tensor
    offsets: torch.Tensor
    mean_weights: torch.Tensor
    ratio_weights: torch.Tensor
    count: torch.Tensor  # (B, 1)
    mean_ratio: torch.Tensor  # (B, 1)

    @classmethod
    def from_window(cls, positions: np.ndarray, ratios: np.ndarray, mask: np.ndarray) -> _History:
        """`positions`, `ratios`, `mask`: (B, L) windows."""
        count = mask.sum(1)
        rows = np.repeat(np.arange(len(count)), count)
        weight = np.clip(ratios[mask], 0, WATCH_RATIO_CAP)
        weight_sum = np.bincount(rows, weights=weight, minlength=len(count))
        offsets = np.concatenate([[0], np.cumsum(count)[:-1]])
        return cls(
            positions=torch.as_tensor(positions[mask], dtype=torch.int64),
            offsets=torch.as_tensor(offsets, dtype=torch.int64),
            mean_weights=torch.as_tensor(1.0 / count[rows], dtype=torch.float32),
            ratio_weights=torch.as_tensor(
                weight / np.maximum(weight_sum[rows], 1e-6), dtype=torch.float32
            ),
            count=torch.as_tensor(count, dtype=torch.float32)[:, None],
            mean_ratio=torch.as_tensor(weight_sum / np.maximum(count, 1), dtype=torch.float32)[
                :, None
            ],
        )

    def pool(self, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding_bag(
            self.positions, table, self.offsets, mode="sum", per_sample_weights=weights
        )


class _Network(nn.Module):
    def __init__(self, n_ids: int, content_dim: int, user_dim: int, dim: int, hidden: int):
        super().__init__()
        self.video_id = nn.Embedding(n_ids + 1, dim)  # row 0: unknown / dropped id
        nn.init.normal_(self.video_id.weight, std=0.05)
        self.video_content = nn.Sequential(
            nn.Linear(content_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )
        # user features + found flag, pooled history ids (mean, weighted) and content, and
        # history length, mean watch ratio, has-history flag
        self.user = nn.Sequential(
            nn.Linear(user_dim + 1 + 2 * dim + content_dim + 3, hidden), nn.ReLU(),
            nn.Linear(hidden, dim),
        )  # fmt: skip
        self.default_history = nn.Parameter(torch.zeros(2 * dim))
        self.like_bias = nn.Parameter(torch.zeros(()))
        self.regression = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def videos(self, content: torch.Tensor, id_rows: torch.Tensor) -> torch.Tensor:
        return self.video_id(id_rows) + self.video_content(content)

    def users(
        self, user_features: torch.Tensor, user_found: torch.Tensor, history: _History,
        id_rows: torch.Tensor, content: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """History videos enter through their id embeddings (shared with the video tower,
        `id_rows` maps catalog positions to them) and their raw `content`. The watch-ratio
        weighted mean of the history's id embeddings is also added to the output, so the
        score starts as an item-to-item similarity that the tower only has to correct."""
        embedded = self.video_id(id_rows)
        pooled = torch.cat(
            [history.pool(embedded, history.mean_weights),
             history.pool(embedded, history.ratio_weights)], 1
        )  # fmt: skip
        has = (history.count > 0).float()
        pooled = has * pooled + (1 - has) * self.default_history
        x = torch.cat(
            [user_features, user_found[:, None], pooled,
             history.pool(content, history.mean_weights), torch.log1p(history.count),
             history.mean_ratio, has], 1
        )  # fmt: skip
        return self.user(x) + pooled[:, pooled.shape[1] // 2 :]

    def watch_ratio(self, users: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        return self.regression(torch.cat([users, videos, users * videos], 1)).squeeze(1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x, dim=-1)


@dataclasses.dataclass
class _Sequence:
    """Training and validation views as arrays, grouped by user: first the user's training
    views in time order, then their validation views. Every row's history is its user's last
    `history_length` training views, less the row's own video for a training row: the user's
    long-term taste, as at scoring time, not the feed's last few videos (a history of the
    views just before each row taught the model to continue the feed's category runs, which
    ranked liked videos worse the longer it trained)."""

    start: np.ndarray  # first row of the row's user
    train_end: np.ndarray  # one past the last training row of the row's user
    video: np.ndarray  # catalog position (n_catalog: outside the catalog)
    ratio: np.ndarray
    positive: np.ndarray
    user_row: np.ndarray  # row in the user feature table (n_users: unknown)
    is_train: np.ndarray
    dislike_rows: np.ndarray  # training rows with a disliked view, grouped by user
    dislike_start: np.ndarray  # per row: where its user's dislikes start in dislike_rows
    dislike_count: np.ndarray  # per row: how many dislikes its user has


@dataclasses.dataclass
class TwoTowerRecommender(Recommender, WatchRatioPredictor):
    """Retrieval by cosine similarity of user and video vectors (see module docstring)."""

    name: ClassVar[str] = "two-tower"
    reports_epochs: ClassVar[bool] = True
    embedding_dim: int = hyperparameter(64, "Size of the user and video vectors.", minimum=1)
    hidden_dim: int = hyperparameter(128, "Hidden units of each tower's MLP.", minimum=1)
    history_length: int = hyperparameter(50, "Recent views pooled into the user tower.", minimum=1)
    epochs: int = hyperparameter(10, "Most epochs; early stopping may end sooner.", minimum=1)
    batch_size: int = hyperparameter(
        2048, "Training views per step (the in-batch softmax's size).", minimum=1
    )
    max_steps_per_epoch: int = hyperparameter(
        60, "Training steps per epoch (0: every training view once per epoch).", minimum=0
    )
    learning_rate: float = hyperparameter(1e-2, "AdamW's learning rate.", above=0.0)
    weight_decay: float = hyperparameter(1e-4, "AdamW's weight decay.", minimum=0.0)
    temperature: float = hyperparameter(
        0.05, "Softmax temperature of the cosine similarities.", above=0.0
    )
    id_dropout: float = hyperparameter(
        0.1, "Share of training videos whose id embedding is dropped (cold start).",
        minimum=0.0, maximum=1.0,
    )  # fmt: skip
    positives: str = hyperparameter(
        "liked", "Retrieval positives: liked (the run's like rule) | views (every view).",
        choices=POSITIVES,
    )  # fmt: skip
    dislike_weight: float = hyperparameter(
        10.0, "How many negatives a user's disliked video counts as in each softmax (0: none).",
        minimum=0.0,
    )  # fmt: skip
    like_weight: float = hyperparameter(
        3.0, "Weight of the liked-or-not loss on every view's similarity (0: none).", minimum=0.0
    )
    regression_weight: float = hyperparameter(
        0.1, "Weight of the watch-ratio head's loss.", minimum=0.0
    )
    patience: int = hyperparameter(
        2, "Epochs without a better validation NDCG@10 to stop.", minimum=1
    )
    validation_users: int = hyperparameter(2000, "Users sampled for validation NDCG@10.", minimum=1)
    num_threads: int = hyperparameter(1, "Torch CPU threads (0: torch's default).", minimum=0)

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "hidden_dim": trial.suggest_categorical("hidden_dim", [64, 128, 256]),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 2e-2, log=True),
            "temperature": trial.suggest_float("temperature", 0.02, 0.2, log=True),
            "id_dropout": trial.suggest_float("id_dropout", 0.0, 0.3),
            "dislike_weight": trial.suggest_float("dislike_weight", 0.0, 8.0),
            "regression_weight": trial.suggest_float("regression_weight", 0.0, 0.5),
        }

    # --- fitting --------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> TwoTowerRecommender:
        if data.views.height == 0:
            raise ValueError("two-tower cannot be fitted on an empty training frame")
        with torch_threads(self.num_threads):
            return self._fit(data, context or FitContext())

    def _fit(self, data: TrainingData, context: FitContext) -> TwoTowerRecommender:
        started, cpu_started = time.perf_counter(), time.process_time()
        features = build_features(
            data.views, data.videos, data.users, data.item_daily_features,
            like_rule=data.like_rule,
        )  # fmt: skip
        video_table = features.videos.select(
            [n for n in features.videos.names if n not in VIDEO_OUTCOME_COLUMNS]
        )
        self._set_tables(video_table, features.users, data.video_map)
        with seeded_global_rng(self.seed, torch.device("cpu")):
            self.network_ = self.new_module("network_")
        generator = make_generator(self.seed)
        rng = np.random.default_rng(self.seed)
        seq = self._sequence(data)
        train_rows = np.flatnonzero(seq.is_train)
        counts = np.bincount(seq.video[train_rows], minlength=len(self.catalog_map_) + 1)
        log_q = torch.as_tensor(
            np.log(np.maximum(counts, 1) / len(train_rows)), dtype=torch.float32
        )
        check = self._validation_ranking(data)
        if check is not None:
            histories = Histories.from_frame(data.views)
            users, videos = data.user_map.raw_ids[check.rows], data.video_map.raw_ids
        optimiser = torch.optim.AdamW(
            self.network_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        result = fit_epochs(
            self.name, self.network_, optimiser,
            lambda epoch: self.train_epoch(optimiser, seq, train_rows, log_q, generator, rng),
            None if check is None else lambda epoch: self.validate(check, users, videos, histories),
            epochs=self.epochs, patience=self.patience, context=context,
            generators=[generator, rng], resume=self.resume_key(data),
        )  # fmt: skip
        self.network_.eval()
        self.fit_report_ = {
            **self._signal_report(data),
            "features": features.sources(),
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
            "threads": torch.get_num_threads(),
            **result.report(),
        }
        return self

    def train_epoch(
        self, optimiser: torch.optim.Optimizer, seq: _Sequence, train_rows: np.ndarray,
        log_q: torch.Tensor, generator: torch.Generator, rng: np.random.Generator,
    ) -> dict[str, float]:  # fmt: skip
        """At most `max_steps_per_epoch` batches of a fresh shuffle of the training views."""
        order = rng.permutation(train_rows)
        steps = math.ceil(len(order) / self.batch_size)
        if self.max_steps_per_epoch:
            steps = min(steps, self.max_steps_per_epoch)
        self.network_.train()
        total = 0.0
        for step in range(steps):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            loss = self._batch_loss(seq, batch, log_q, generator, rng)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        return {"train_loss": total / max(steps, 1)}

    def _validation_ranking(self, data: TrainingData) -> ValidationRanking | None:
        """Validation NDCG@10 of sampled users, as BPR and the autoencoders measure it."""
        signal = ViewSignal(signal="likes" if self.positives == "liked" else "views")
        seen = signal.views_matrix(data.views, data.user_map, data.video_map)
        return ValidationRanking.build(
            signal, data.validation, data.user_map, data.video_map, seen,
            self.validation_users, self.seed,
        )  # fmt: skip

    def validate(
        self, check: ValidationRanking, user_ids: np.ndarray, video_ids: np.ndarray,
        histories: Histories,
    ) -> float:  # fmt: skip
        """Validation NDCG@10 of the current towers, users' histories being their training
        views (as at evaluation)."""
        self.network_.eval()
        scores = self.score(user_ids, video_ids, histories)
        self.network_.train()
        return check.ndcg(scores)

    def _signal_report(self, data: TrainingData) -> dict[str, str]:
        """What the model learned from, in words, for the run's metrics."""
        if self.positives == "views":
            return {"positives": "every view (exposure ablation)", "dislikes": "not used"}
        if not data.has_watch_ratio:
            return {"positives": "every view: the log has no watch ratio", "dislikes": "none"}
        dislikes = (
            f"explicit negatives, weight {self.dislike_weight:g}"
            if self.dislike_weight > 0
            else "not used"
        )
        return {
            "positives": f"liked views ({data.like_rule})",
            "dislikes": dislikes,
            "liked_or_not": f"on every view, weight {self.like_weight:g}"
            if self.like_weight > 0
            else "not used",
        }

    def _set_tables(self, videos: FeatureTable, users: FeatureTable, trained: IdMap) -> None:
        """Standardised content and user features, each with a last all-zero row for ids
        outside the table."""
        self.catalog_map_ = IdMap(videos.ids)
        self.content_names_ = list(videos.names)
        self.content_ = self._standardised(videos.values)
        self.user_map_ = IdMap(users.ids)
        self.user_names_ = list(users.names)
        self.user_features_ = self._standardised(users.values)
        self.n_trained_videos_ = len(trained)
        # catalog position -> id embedding row (0 = unknown, also for the last row)
        self.catalog_id_rows_ = np.append(trained.index(videos.ids) + 1, 0).astype(np.int64)

    @staticmethod
    def _standardised(values: np.ndarray) -> np.ndarray:
        if len(values):
            values = (values - values.mean(0)) / (values.std(0) + 1e-6)
        return np.vstack([values, np.zeros((1, values.shape[1]))]).astype(np.float32)

    def new_module(self, attribute: str) -> nn.Module:
        return _Network(
            self.n_trained_videos_, self.content_.shape[1], self.user_features_.shape[1],
            self.embedding_dim, self.hidden_dim,
        )  # fmt: skip

    def _sequence(self, data: TrainingData) -> _Sequence:
        columns = ["user_id", "video_id", "watch_ratio", "timestamp", "liked", "disliked"]
        ordered = (
            pl.concat(
                [
                    data.views.select(columns).with_columns(pl.lit(True).alias("is_train")),
                    data.validation.select(columns).with_columns(pl.lit(False).alias("is_train")),
                ]
            )  # fmt: skip
            .with_row_index("_row")
            .sort(["user_id", ~pl.col("is_train"), "timestamp", "_row"], nulls_last=False)
        )
        users = ordered["user_id"].to_numpy()
        _, first, block = np.unique(users, return_index=True, return_inverse=True)
        is_train = ordered["is_train"].to_numpy()
        train_views = np.bincount(block, weights=is_train, minlength=len(first)).astype(np.int64)
        positive = ordered["liked"].to_numpy()
        if self.positives == "views":
            positive = np.ones_like(is_train)
        disliked = ordered["disliked"].to_numpy() & is_train
        if self.positives == "views" or self.dislike_weight <= 0:
            disliked = np.zeros_like(disliked)
        dislike_rows = np.flatnonzero(disliked)  # sorted by user, as `ordered` is
        per_user = np.bincount(block[dislike_rows], minlength=len(first))
        user_start = np.concatenate([[0], np.cumsum(per_user)[:-1]])
        return _Sequence(
            start=first[block],
            train_end=(first + train_views)[block],
            video=self._positions(self.catalog_map_, ordered["video_id"].to_numpy()),
            ratio=ordered["watch_ratio"].fill_null(0).to_numpy().astype(np.float32),
            positive=positive,
            user_row=self._positions(self.user_map_, users),
            is_train=is_train,
            dislike_rows=dislike_rows,
            dislike_start=user_start[block],
            dislike_count=per_user[block],
        )

    @staticmethod
    def _positions(id_map: IdMap, ids: np.ndarray) -> np.ndarray:
        """Rows of `ids` in a table with one extra last row for unknown ids."""
        return id_map.index(np.asarray(ids, dtype=np.int64), unknown=len(id_map))

    def _user_inputs(self, user_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        found = (user_rows < len(self.user_map_)).astype(np.float32)
        return torch.as_tensor(self.user_features_[user_rows]), torch.as_tensor(found)

    def _users(self, user_rows: np.ndarray, history: _History) -> torch.Tensor:
        feats, found = self._user_inputs(user_rows)
        return self.network_.users(
            feats, found, history, torch.as_tensor(self.catalog_id_rows_),
            torch.as_tensor(self.content_),
        )  # fmt: skip

    def _train_users(self, seq: _Sequence, rows: np.ndarray) -> torch.Tensor:
        """User vectors of sequence rows (see `_Sequence` for their histories)."""
        back = seq.train_end[rows][:, None] - np.arange(1, self.history_length + 1)[None, :]
        mask = back >= seq.start[rows][:, None]
        back = np.where(mask, back, 0)
        positions = seq.video[back]
        mask &= ~(seq.is_train[rows][:, None] & (positions == seq.video[rows][:, None]))
        history = _History.from_window(positions, seq.ratio[back], mask)
        return self._users(seq.user_row[rows], history)

    def _videos(self, positions: np.ndarray, generator: torch.Generator | None) -> torch.Tensor:
        """Video tower over catalog positions; with a generator, ids are dropped at random
        so the content path learns to carry videos alone (cold start)."""
        positions = torch.as_tensor(positions)
        id_rows = torch.as_tensor(self.catalog_id_rows_)[positions]
        if generator is not None and self.id_dropout > 0:
            dropped = torch.rand(len(id_rows), generator=generator) < self.id_dropout
            id_rows = torch.where(dropped, torch.zeros_like(id_rows), id_rows)
        return self.network_.videos(torch.as_tensor(self.content_)[positions], id_rows)

    def _batch_loss(
        self, seq: _Sequence, rows: np.ndarray, log_q: torch.Tensor,
        generator: torch.Generator, rng: np.random.Generator,
    ) -> torch.Tensor:  # fmt: skip
        users = _normalise(self._train_users(seq, rows))
        unique, inverse = np.unique(seq.video[rows], return_inverse=True)
        videos = _normalise(self._videos(unique, generator))
        inverse = torch.as_tensor(inverse)
        loss = torch.zeros(())
        positive = seq.positive[rows]
        if positive.any():
            # Softmax over the batch's distinct videos, each corrected by its sampling
            # log-probability; repeats of the target video are one column, not negatives.
            anchors = users[torch.as_tensor(positive)]
            logits = anchors @ videos.T / self.temperature - log_q[unique][None, :]
            count = seq.dislike_count[rows[positive]]
            if count.any():
                pick = seq.dislike_start[rows[positive]] + (rng.random(len(count)) * count).astype(
                    np.int64
                )
                disliked = seq.video[seq.dislike_rows[np.minimum(pick, len(seq.dislike_rows) - 1)]]
                negative = _normalise(self._videos(disliked, generator))
                extra = (anchors * negative).sum(1) / self.temperature + math.log(
                    self.dislike_weight
                )
                extra = torch.where(torch.as_tensor(count > 0), extra, -torch.inf)
                logits = torch.cat([logits, extra[:, None]], 1)
            loss = nn.functional.cross_entropy(logits, inverse[torch.as_tensor(positive)])
        if self.like_weight > 0 and self.positives == "liked" and not positive.all():
            # Among the videos each user was shown, the liked ones score higher: taste with
            # exposure held fixed, which the softmax over the batch cannot separate.
            logits = (users * videos[inverse]).sum(1) / self.temperature + self.network_.like_bias
            liked = torch.as_tensor(positive, dtype=torch.float32)
            loss = loss + self.like_weight * nn.functional.binary_cross_entropy_with_logits(
                logits, liked
            )
        if self.regression_weight > 0:
            predicted = self.network_.watch_ratio(users, videos[inverse])
            target = torch.as_tensor(seq.ratio[rows]).clamp(0, WATCH_RATIO_CAP)
            loss = loss + self.regression_weight * nn.functional.mse_loss(predicted, target)
        return loss

    # --- scoring --------------------------------------------------------------------------
    def _video_vectors(self, video_ids: np.ndarray) -> torch.Tensor:
        """Vectors of any raw video ids; ids outside the catalog get zero content and the
        unknown id row."""
        return self._videos(self._positions(self.catalog_map_, video_ids), None)

    def _user_vectors(self, user_ids: np.ndarray, histories: Histories) -> torch.Tensor:
        user_ids = np.asarray(user_ids, dtype=np.int64)
        starts, lengths = histories.slices(user_ids)
        ends = starts + lengths
        back = ends[:, None] - np.arange(1, self.history_length + 1)[None, :]
        mask = back >= starts[:, None]
        back = np.where(mask, back, 0)
        if len(histories.video_ids):
            positions = self._positions(self.catalog_map_, histories.video_ids[back])
            # A log without watch ratios trains on 1.0 for each view (TrainingData); its
            # histories carry NaN, which would make every pooled vector NaN.
            ratios = np.nan_to_num(histories.watch_ratios[back], nan=1.0)
        else:
            positions = np.zeros(back.shape, np.int64)
            ratios = np.zeros(back.shape, np.float32)
        history = _History.from_window(positions, ratios, mask)
        return self._users(self._positions(self.user_map_, user_ids), history)

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        """Every video of the content catalogue (cold ones scored by their content)."""
        return self.catalog_map_.index(video_ids) >= 0

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        with torch_threads(self.num_threads), torch.no_grad():
            users = _normalise(self._user_vectors(user_ids, histories))
            videos = _normalise(self._video_vectors(video_ids))
            return (users @ videos.T).numpy().astype(np.float32)

    def predict_watch_ratio(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        """The regression head's watch ratio for aligned (user, video) pairs."""
        user_ids, video_ids = np.asarray(user_ids), np.asarray(video_ids)
        if user_ids.shape != video_ids.shape:
            raise ValueError("predict_watch_ratio needs aligned user and video id arrays")
        out = np.empty(len(user_ids), dtype=np.float64)
        unique_users, user_inverse = np.unique(user_ids, return_inverse=True)
        unique_videos, video_inverse = np.unique(video_ids, return_inverse=True)
        with torch_threads(self.num_threads), torch.no_grad():
            videos = _normalise(self._video_vectors(unique_videos))
            for start in range(0, len(unique_users), 1024):
                chunk = unique_users[start : start + 1024]
                users = _normalise(self._user_vectors(chunk, histories))
                pairs = np.flatnonzero(
                    (user_inverse >= start) & (user_inverse < start + len(chunk))
                )
                predicted = self.network_.watch_ratio(
                    users[torch.as_tensor(user_inverse[pairs] - start)],
                    videos[torch.as_tensor(video_inverse[pairs])],
                )
                out[pairs] = predicted.clamp(min=0).numpy()
        return out

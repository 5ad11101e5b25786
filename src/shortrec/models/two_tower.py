"""Two-tower retrieval: a user tower over user features and the pooled recent history (the
history videos' id embeddings, shared with the video tower, and their content), a video tower
over an id embedding plus content features, trained with an in-batch sampled softmax
(logQ-corrected) and an optional watch-ratio regression head.

The history is read at scoring time, so updated histories and brand-new users work without
retraining; videos never watched in training use the learned "unknown id" row plus their
content, which id dropout during training taught to stand on its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import torch
from torch import nn

from shortrec.data.features import WATCH_RATIO_CAP, FeatureTable, build_features
from shortrec.data.histories import Histories, IdMap
from shortrec.io import atomic_path, atomic_write_text
from shortrec.models.base import FitContext, Recommender, TrainingData, WatchRatioPredictor

STATE_FILE = "two_tower.pt"
# Outcome means of a video would let the regression head read its own target back.
VIDEO_OUTCOME_COLUMNS = ("train_mean_watch_ratio", "train_like_rate")


@dataclasses.dataclass
class _Pooling:
    """Mean and watch-ratio-weighted mean over each user's recent views, as sparse
    (users x videos) matrices: a sparse product pools far faster than gathering (B, L, d)."""

    mean: torch.Tensor
    weighted: torch.Tensor
    count: torch.Tensor  # (B, 1)
    mean_ratio: torch.Tensor  # (B, 1)

    @classmethod
    def from_window(cls, videos: np.ndarray, ratios: np.ndarray, mask: np.ndarray,
                    n_videos: int) -> _Pooling:  # fmt: skip
        """`videos`, `ratios`, `mask`: (B, L) positions into the pooled vectors."""
        n_users = len(videos)
        rows, cols = np.nonzero(mask)
        count = mask.sum(1).astype(np.float32)
        weight = np.clip(ratios, 0, WATCH_RATIO_CAP).astype(np.float32) * mask
        weight_sum = weight.sum(1)
        index = torch.as_tensor(np.stack([rows, videos[rows, cols]]))
        mean_values = 1.0 / count[rows]
        weighted_values = weight[rows, cols] / np.maximum(weight_sum[rows], 1e-6)

        def sparse(values: np.ndarray) -> torch.Tensor:
            return torch.sparse_coo_tensor(
                index,
                torch.as_tensor(values, dtype=torch.float32),
                (n_users, n_videos),
                check_invariants=False,
            )

        return cls(
            mean=sparse(mean_values),
            weighted=sparse(weighted_values),
            count=torch.as_tensor(count)[:, None],
            mean_ratio=torch.as_tensor(weight_sum / np.maximum(count, 1))[:, None],
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
        self.regression = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def videos(self, content: torch.Tensor, id_index: torch.Tensor) -> torch.Tensor:
        return self.video_id(id_index) + self.video_content(content)

    def users(
        self, user_features: torch.Tensor, user_found: torch.Tensor, pooling: _Pooling,
        history_ids: torch.Tensor, history_content: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """History videos enter through their id embeddings (shared with the video tower)
        and their raw content: pooling them costs a sparse product, not a tower pass."""
        embedded = self.video_id(history_ids)
        pooled = torch.cat(
            [torch.sparse.mm(pooling.mean, embedded),
             torch.sparse.mm(pooling.weighted, embedded)], 1
        )  # fmt: skip
        has = (pooling.count > 0).float()
        pooled = has * pooled + (1 - has) * self.default_history
        content = torch.sparse.mm(pooling.mean, history_content)
        x = torch.cat(
            [user_features, user_found[:, None], pooled, content, torch.log1p(pooling.count),
             pooling.mean_ratio, has], 1
        )  # fmt: skip
        return self.user(x)

    def watch_ratio(self, users: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        return self.regression(torch.cat([users, videos, users * videos], 1)).squeeze(1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x, dim=-1)


@dataclasses.dataclass
class TwoTowerRecommender(Recommender, WatchRatioPredictor):
    """Retrieval by cosine similarity of user and video vectors (see module docstring)."""

    name: ClassVar[str] = "two-tower"
    reports_epochs: ClassVar[bool] = True
    embedding_dim: int = 64
    hidden_dim: int = 128
    history_length: int = 50
    epochs: int = 10
    batch_size: int = 1024
    learning_rate: float = 2e-3
    weight_decay: float = 1e-6
    temperature: float = 0.05
    id_dropout: float = 0.1
    positive_min_watch_ratio: float = 0.7  # views at least this are positives for retrieval
    regression_weight: float = 0.1  # 0 trains retrieval only
    patience: int = 2
    max_steps_per_epoch: int = 0  # 0: every training view once per epoch
    validation_views: int = 20_000  # sampled once for early stopping

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "hidden_dim": trial.suggest_categorical("hidden_dim", [64, 128, 256]),
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "temperature": trial.suggest_float("temperature", 0.02, 0.2, log=True),
            "id_dropout": trial.suggest_float("id_dropout", 0.0, 0.3),
            "regression_weight": trial.suggest_float("regression_weight", 0.0, 0.5),
        }

    # --- fitting --------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> TwoTowerRecommender:
        train, validation = data.views, data.validation
        if train.height == 0:
            raise ValueError("two-tower cannot be fitted on an empty training frame")
        features = build_features(
            train, data.videos, data.users, data.item_daily_features, like_rule=data.like_rule
        )
        video_table = features.videos.select(
            [n for n in features.videos.names if n not in VIDEO_OUTCOME_COLUMNS]
        )
        self._set_tables(video_table, features.users, IdMap.from_ids(train["video_id"]))
        generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.network_ = self._new_network()
        sequence, train_rows, val_rows = self._sequence(train, validation)
        counts = np.bincount(sequence["video"][train_rows], minlength=len(self.catalog_ids_))
        log_q = torch.as_tensor(
            np.log(np.maximum(counts, 1) / len(train_rows)), dtype=torch.float32
        )
        rng = np.random.default_rng(self.seed)
        if len(val_rows) > self.validation_views:
            val_rows = np.sort(rng.choice(val_rows, self.validation_views, replace=False))
        optimiser = torch.optim.AdamW(
            self.network_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        best, best_state, stale = math.inf, None, 0
        history = []
        for epoch in range(self.epochs):
            started = time.perf_counter()
            order = rng.permutation(train_rows)
            steps = math.ceil(len(order) / self.batch_size)
            if self.max_steps_per_epoch:
                steps = min(steps, self.max_steps_per_epoch)
            self.network_.train()
            total = 0.0
            for step in range(steps):
                batch = order[step * self.batch_size : (step + 1) * self.batch_size]
                loss = self._batch_loss(sequence, batch, log_q, generator)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach())
            entry = {"epoch": epoch + 1, "train_loss": total / max(steps, 1),
                     "seconds": time.perf_counter() - started}  # fmt: skip
            if len(val_rows):
                entry["validation_loss"] = self._validation_loss(sequence, val_rows)
                self.report_epoch(context, epoch + 1, -entry["validation_loss"])
                if entry["validation_loss"] < best - 1e-4:
                    best, stale = entry["validation_loss"], 0
                    best_state = {k: v.clone() for k, v in self.network_.state_dict().items()}
                else:
                    stale += 1
            history.append(entry)
            if len(val_rows) and stale >= self.patience:
                break
        if best_state is not None:
            self.network_.load_state_dict(best_state)
        self.network_.eval()
        self.fit_report_ = {"history": history}
        return self

    def _set_tables(self, videos: FeatureTable, users: FeatureTable, trained_ids: IdMap) -> None:
        self.catalog_ids_ = videos.ids
        self.content_names_ = videos.names
        self.content_mean_ = videos.values.mean(0) if len(videos.ids) else np.zeros(0)
        self.content_std_ = videos.values.std(0) + 1e-6 if len(videos.ids) else np.zeros(0)
        self.content_ = self._standardise(videos.values, self.content_mean_, self.content_std_)
        self.user_ids_ = users.ids
        self.user_names_ = users.names
        self.user_mean_ = users.values.mean(0) if len(users.ids) else np.zeros(len(users.names))
        self.user_std_ = users.values.std(0) + 1e-6 if len(users.ids) else np.ones(len(users.names))
        self.user_features_ = self._standardise(users.values, self.user_mean_, self.user_std_)
        self.trained_video_ids_ = trained_ids.raw_ids
        # catalog position -> id embedding row (0 = unknown)
        self.catalog_id_rows_ = trained_ids.index(self.catalog_ids_) + 1

    @staticmethod
    def _standardise(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        return ((values - mean) / std).astype(np.float32)

    def _new_network(self) -> _Network:
        return _Network(
            len(self.trained_video_ids_), len(self.content_names_), len(self.user_names_),
            self.embedding_dim, self.hidden_dim,
        )  # fmt: skip

    def _sequence(self, train: pl.DataFrame, validation: pl.DataFrame | None):
        """All views in time order per user, as arrays; training rows see only the views
        before them as history, validation rows see training plus earlier validation views."""
        frames = [train.select("user_id", "video_id", "watch_ratio", "timestamp")
                  .with_columns(pl.lit(True).alias("is_train"))]  # fmt: skip
        if validation is not None and validation.height:
            frames.append(
                validation.select("user_id", "video_id", "watch_ratio", "timestamp").with_columns(
                    pl.lit(False).alias("is_train")
                )
            )
        ordered = (
            pl.concat(frames)
            .with_row_index("_row")
            .sort(["user_id", "timestamp", "_row"], nulls_last=False)
        )
        users = ordered["user_id"].to_numpy()
        _, first, inverse = np.unique(users, return_index=True, return_inverse=True)
        user_rows, user_found = self._user_rows(users)
        video = IdMap(self.catalog_ids_).index(ordered["video_id"].to_numpy())
        is_train = ordered["is_train"].to_numpy()
        sequence = {
            "start": first[inverse],
            "video": video,
            "ratio": ordered["watch_ratio"].fill_null(0).to_numpy().astype(np.float32),
            "user_row": user_rows,
            "user_found": user_found,
        }
        known = video >= 0
        return sequence, np.flatnonzero(is_train & known), np.flatnonzero(~is_train & known)

    def _user_rows(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = IdMap(self.user_ids_).index(user_ids)
        return np.maximum(rows, 0), rows >= 0

    def _user_inputs(self, user_rows: np.ndarray, user_found: np.ndarray):
        if len(self.user_ids_):
            feats = self.user_features_[user_rows] * user_found[:, None]
        else:
            feats = np.zeros((len(user_rows), len(self.user_names_)), np.float32)
        return torch.as_tensor(feats), torch.as_tensor(user_found.astype(np.float32))

    def _window(self, sequence: dict, rows: np.ndarray):
        """The `history_length` views before each row: (catalog positions, ratios, mask)."""
        back = rows[:, None] - np.arange(1, self.history_length + 1)[None, :]
        mask = back >= sequence["start"][rows][:, None]
        back = np.where(mask, back, 0)
        videos = sequence["video"][back]
        mask &= videos >= 0
        return np.maximum(videos, 0), sequence["ratio"][back] * mask, mask

    def _catalog_vectors(self, positions: torch.Tensor, generator: torch.Generator | None):
        """Video tower over catalog positions; with a generator, ids are dropped at random
        so the content path learns to carry videos alone (cold start)."""
        id_rows = torch.as_tensor(self.catalog_id_rows_)[positions]
        if generator is not None and self.id_dropout > 0:
            dropped = torch.rand(len(id_rows), generator=generator) < self.id_dropout
            id_rows = torch.where(dropped, torch.zeros_like(id_rows), id_rows)
        return self.network_.videos(torch.as_tensor(self.content_)[positions], id_rows)

    def _user_vectors_from_sequence(self, sequence, rows):
        hist, ratios, mask = self._window(sequence, rows)
        pooling = _Pooling.from_window(hist, ratios, mask, len(self.catalog_ids_))
        feats, found = self._user_inputs(sequence["user_row"][rows], sequence["user_found"][rows])
        return self.network_.users(
            feats, found, pooling, torch.as_tensor(self.catalog_id_rows_),
            torch.as_tensor(self.content_),
        )  # fmt: skip

    def _batch_loss(self, sequence, rows, log_q, generator) -> torch.Tensor:
        users = _normalise(self._user_vectors_from_sequence(sequence, rows))
        targets = torch.as_tensor(sequence["video"][rows])
        unique, inverse = torch.unique(targets, return_inverse=True)
        videos = _normalise(self._catalog_vectors(unique, generator))
        ratio = torch.as_tensor(sequence["ratio"][rows])
        positive = ratio >= self.positive_min_watch_ratio
        loss = torch.zeros(())
        if positive.any():
            # Softmax over the batch's distinct videos, each corrected by its sampling
            # log-probability; repeats of the target video are one column, not negatives.
            logits = (users[positive] / self.temperature) @ videos.T - log_q[unique][None, :]
            loss = nn.functional.cross_entropy(logits, inverse[positive])
        if self.regression_weight > 0:
            predicted = self.network_.watch_ratio(users, videos[inverse])
            target = ratio.clamp(0, WATCH_RATIO_CAP)
            loss = loss + self.regression_weight * nn.functional.mse_loss(predicted, target)
        return loss

    @torch.no_grad()
    def _validation_loss(self, sequence, rows) -> float:
        """Full-catalog softmax loss of the validation positives (plus the weighted regression
        error): how well the true next views rank against every video."""
        self.network_.eval()
        all_videos = _normalise(self._catalog_vectors(torch.arange(len(self.catalog_ids_)), None))
        total, count = 0.0, 0
        for start in range(0, len(rows), 4096):
            batch = rows[start : start + 4096]
            users = _normalise(self._user_vectors_from_sequence(sequence, batch))
            targets = torch.as_tensor(sequence["video"][batch])
            ratio = torch.as_tensor(sequence["ratio"][batch])
            positive = ratio >= self.positive_min_watch_ratio
            loss = torch.zeros(())
            if positive.any():
                logits = users[positive] @ all_videos.T / self.temperature
                loss = nn.functional.cross_entropy(logits, targets[positive])
            if self.regression_weight > 0:
                predicted = self.network_.watch_ratio(users, all_videos[targets])
                loss = loss + self.regression_weight * nn.functional.mse_loss(
                    predicted, ratio.clamp(0, WATCH_RATIO_CAP)
                )
            total += float(loss) * len(batch)
            count += len(batch)
        self.network_.train()
        return total / max(count, 1)

    # --- scoring --------------------------------------------------------------------------
    def _video_vectors(self, video_ids: np.ndarray) -> torch.Tensor:
        """Vectors of any raw video ids; ids outside the catalog get zero content and the
        unknown id row."""
        pos = IdMap(self.catalog_ids_).index(np.asarray(video_ids, dtype=np.int64))
        known = pos >= 0
        content = np.where(known[:, None], self.content_[np.maximum(pos, 0)], 0.0)
        id_rows = np.where(known, self.catalog_id_rows_[np.maximum(pos, 0)], 0)
        return self.network_.videos(
            torch.as_tensor(content, dtype=torch.float32), torch.as_tensor(id_rows)
        )

    def _user_vectors(self, user_ids: np.ndarray, histories: Histories) -> torch.Tensor:
        user_ids = np.asarray(user_ids, dtype=np.int64)
        rows = histories.position(user_ids)
        safe = np.minimum(np.maximum(rows, 0), max(len(histories) - 1, 0))
        offsets = histories.offsets if len(histories) else np.zeros(2, np.int64)
        ends = np.where(rows >= 0, offsets[safe + 1], 0)
        starts = np.where(rows >= 0, offsets[safe], 0)
        back = ends[:, None] - np.arange(1, self.history_length + 1)[None, :]
        mask = back >= starts[:, None]
        back = np.where(mask, back, 0)
        if len(histories.video_ids):
            hist_ids = histories.video_ids[back]
            ratios = histories.watch_ratios[back] * mask
        else:
            hist_ids = np.zeros(back.shape, np.int64)
            ratios = np.zeros(back.shape, np.float32)
        unique, inverse = np.unique(hist_ids, return_inverse=True)
        pooling = _Pooling.from_window(inverse.reshape(back.shape), ratios, mask, len(unique))
        pos = IdMap(self.catalog_ids_).index(unique)
        known = pos >= 0
        id_rows = np.where(known, self.catalog_id_rows_[np.maximum(pos, 0)], 0)
        content = np.where(known[:, None], self.content_[np.maximum(pos, 0)], 0.0)
        feats, found = self._user_inputs(*self._user_rows(user_ids))
        return self.network_.users(
            feats, found, pooling, torch.as_tensor(id_rows),
            torch.as_tensor(content, dtype=torch.float32),
        )  # fmt: skip

    @torch.no_grad()
    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        users = _normalise(self._user_vectors(user_ids, histories))
        videos = _normalise(self._video_vectors(video_ids))
        return (users @ videos.T).numpy().astype(np.float32)

    @torch.no_grad()
    def predict_watch_ratio(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        """The regression head's watch ratio for aligned (user, video) pairs."""
        user_ids, video_ids = np.asarray(user_ids), np.asarray(video_ids)
        if user_ids.shape != video_ids.shape:
            raise ValueError("predict_watch_ratio needs aligned user and video id arrays")
        out = np.empty(len(user_ids), dtype=np.float64)
        unique_users, user_inverse = np.unique(user_ids, return_inverse=True)
        unique_videos, video_inverse = np.unique(video_ids, return_inverse=True)
        videos = _normalise(self._video_vectors(unique_videos))
        for start in range(0, len(unique_users), 1024):
            chunk = unique_users[start : start + 1024]
            users = _normalise(self._user_vectors(chunk, histories))
            pairs = np.flatnonzero((user_inverse >= start) & (user_inverse < start + len(chunk)))
            predicted = self.network_.watch_ratio(
                users[torch.as_tensor(user_inverse[pairs] - start)],
                videos[torch.as_tensor(video_inverse[pairs])],
            )
            out[pairs] = predicted.clamp(min=0).numpy()
        return out

    # --- persistence ----------------------------------------------------------------------
    def save_state(self, directory: Path) -> None:
        state = {
            "weights": self.network_.state_dict(),
            "catalog_ids": torch.tensor(np.asarray(self.catalog_ids_)),
            "content": torch.tensor(np.asarray(self.content_)),
            "content_mean": torch.tensor(np.asarray(self.content_mean_)),
            "content_std": torch.tensor(np.asarray(self.content_std_)),
            "user_ids": torch.tensor(np.asarray(self.user_ids_)),
            "user_features": torch.tensor(np.asarray(self.user_features_)),
            "user_mean": torch.tensor(np.asarray(self.user_mean_)),
            "user_std": torch.tensor(np.asarray(self.user_std_)),
            "trained_video_ids": torch.tensor(np.asarray(self.trained_video_ids_)),
        }
        with atomic_path(directory / STATE_FILE) as tmp:
            torch.save(state, tmp)
        atomic_write_text(
            directory / "two_tower.json",
            json.dumps({"content_names": self.content_names_, "user_names": self.user_names_,
                        "fit_report": self.fit_report_}),
        )  # fmt: skip

    def load_state(self, directory: Path) -> None:
        path = directory / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no two-tower weights in {directory} (missing {STATE_FILE})")
        state = torch.load(path, weights_only=True)
        names = json.loads((directory / "two_tower.json").read_text())
        self.content_names_ = names["content_names"]
        self.user_names_ = names["user_names"]
        self.fit_report_ = names["fit_report"]
        self.catalog_ids_ = state["catalog_ids"].numpy()
        self.content_ = state["content"].numpy()
        self.content_mean_ = state["content_mean"].numpy()
        self.content_std_ = state["content_std"].numpy()
        self.user_ids_ = state["user_ids"].numpy()
        self.user_features_ = state["user_features"].numpy()
        self.user_mean_ = state["user_mean"].numpy()
        self.user_std_ = state["user_std"].numpy()
        self.trained_video_ids_ = state["trained_video_ids"].numpy()
        self.catalog_id_rows_ = IdMap(self.trained_video_ids_).index(self.catalog_ids_) + 1
        self.network_ = self._new_network()
        self.network_.load_state_dict(state["weights"])
        self.network_.eval()

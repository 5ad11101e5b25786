"""Two-stage recommendation: cheap retrievers propose candidates, a LightGBM LambdaRank model
reranks them on retriever scores plus user, history, video and affinity features.

Training is leak-free by time: retrievers and features see all but the last `label_days` of
training, the reranker learns which of their candidates the users liked in those last days,
then the retrievers are refitted on all of train. How much of each user's liked videos the
candidate set holds (`candidate_recall`) bounds what any reranker can reach, so it is reported.

What it learns from: the reranker's labels are the run's like rule (a candidate the user
viewed but did not like is a negative, like one never shown), and each retriever learns from
likes and dislikes in its own default way. When the last `label_days` hold fewer than half
of the training users (a rating log, where users rate a batch once and leave, years apart; a
SASRec text file, whose timestamps number views), the label views are each user's last tenth
instead: labels from a handful of users active at the end taught the reranker to rank for them
alone (on a rating-log analogue under leave-last-out with every view liked, 5 label users of
1,500, tune NDCG@10 0.019 against popularity's 0.074; README, "Defaults off our world"). On a
log without watch ratios every view is liked, so the labels become "viewed". The fit report
names both, and which side features the log had.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from shortrec.data.features import (
    FeatureSet,
    FeatureTable,
    build_features,
    history_features,
    history_views,
    label_holdout,
    pair_features,
    user_table,
)
from shortrec.data.histories import Histories, IdMap
from shortrec.data.labels import LikeRule
from shortrec.data.splits import stable_user_fraction
from shortrec.io import atomic_path
from shortrec.models.base import (
    CandidateGenerator,
    FitContext,
    Recommender,
    TrainingData,
    hyperparameter,
    load_model,
)

BOOSTER_FILE = "reranker.txt"
# One-hot content columns reach the reranker through the affinities; alone they only add width.
RERANK_DROPPED_PREFIXES = ("tag=", "cat1=", "cat2=", "cat3=")


def _retriever_names(text: str) -> list[str]:
    from shortrec.models import REGISTRY

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("two-stage needs at least one retriever in `retrievers`")
    unknown = [n for n in names if n not in REGISTRY or n == "two-stage"]
    if unknown:
        raise ValueError(
            f"two-stage retrievers {unknown} are not usable models; known: {', '.join(REGISTRY)}"
        )
    return names


def _rank_rows(scores: np.ndarray) -> np.ndarray:
    """Rank of every entry within its row, 0 = best (ties in column order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks


@dataclasses.dataclass
class _Candidates:
    """Candidate (user row, video column) pairs of a batch and their feature rows."""

    rows: np.ndarray
    cols: np.ndarray
    features: np.ndarray
    first_rank: np.ndarray  # (users x videos) rank by the first retriever, for the fallback


@dataclasses.dataclass
class TwoStageRecommender(Recommender, CandidateGenerator):
    """Candidates from `retrievers` (top `candidates_per_retriever` each, unseen videos only),
    reranked by LightGBM LambdaRank; non-candidates rank below every candidate, in the order
    of the first retriever."""

    name: ClassVar[str] = "two-stage"
    # The strongest retrievers on the leaderboard. The defaults below were re-checked on the
    # harder world's seed-0 small tune set (candidates 50 / 200, leaves 15, min child 50,
    # learning rate 0.02, 7 label days, retrievers ease,popular): none better.
    retrievers: str = hyperparameter(
        "ease,als,popular", "Comma-separated models whose top videos are the candidates."
    )
    candidates_per_retriever: int = hyperparameter(
        100, "Top unseen videos each retriever adds to a user's candidates.", minimum=1
    )
    label_days: float = hyperparameter(
        3.0, "Last days of training whose liked views label the reranker's candidates.",
        above=0.0,
    )  # fmt: skip
    max_label_users: int = hyperparameter(
        3000, "Most users whose candidates train the reranker (a seeded sample).", minimum=1
    )
    n_estimators: int = hyperparameter(300, "Most LightGBM boosting rounds.", minimum=1)
    learning_rate: float = hyperparameter(0.05, "LightGBM's learning rate.", above=0.0)
    num_leaves: int = hyperparameter(31, "Leaves per LightGBM tree.", minimum=2)
    min_child_samples: int = hyperparameter(20, "Fewest candidates in a LightGBM leaf.", minimum=1)
    early_stopping_rounds: int = hyperparameter(
        30, "Rounds without a better held-out NDCG that stop boosting.", minimum=1
    )
    validation_user_fraction: float = hyperparameter(
        0.2, "Share of label users held out to stop boosting.", above=0.0, below=1.0
    )
    batch_users: int = hyperparameter(
        256, "Users per scoring block (memory, not results).", minimum=1
    )

    def check_hyperparameters(self) -> list[str]:
        try:
            _retriever_names(self.retrievers)
        except ValueError as error:
            return [str(error)]
        return []

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "candidates_per_retriever": trial.suggest_categorical(
                "candidates_per_retriever", [50, 100, 200]
            ),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_categorical("num_leaves", [15, 31, 63]),
            "min_child_samples": trial.suggest_categorical("min_child_samples", [10, 20, 50]),
        }

    def _new_retrievers(self) -> list[Recommender]:
        from shortrec.models import model_class

        models = []
        for name in _retriever_names(self.retrievers):
            models.append(model_class(name)(seed=self.seed))
        return models

    # --- fitting --------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> TwoStageRecommender:
        import lightgbm

        train = data.views
        early, late, holdout = label_holdout(train, self.label_days)
        rule = data.like_rule
        self.retrievers_ = [m.fit(data.with_views(early)) for m in self._new_retrievers()]
        side = (data.videos, data.users, data.item_daily_features)
        features = build_features(early, *side, like_rule=rule)
        self._set_tables(features, rule)
        static_users, videos = self._tables()
        liked = late.filter(pl.col("liked")).select("user_id", "video_id").unique()
        users = np.sort(liked["user_id"].unique().to_numpy())
        if len(users) > self.max_label_users:
            rng = np.random.default_rng(self.seed)
            users = np.sort(rng.choice(users, self.max_label_users, replace=False))
        catalog = np.sort(train["video_id"].unique().to_numpy())
        histories = Histories.from_frame(early)
        parts, groups, labels, recall = [], [], [], []
        catalog_map = IdMap(catalog)
        for start in range(0, len(users), self.batch_users):
            batch = users[start : start + self.batch_users]
            cands = self._candidates(batch, catalog, histories, static_users, videos)
            batch_liked = liked.filter(pl.col("user_id").is_in(batch))
            relevant = np.zeros((len(batch), len(catalog)), dtype=bool)
            relevant[IdMap(batch).index(batch_liked["user_id"]),
                     catalog_map.index(batch_liked["video_id"])] = True  # fmt: skip
            is_candidate = np.zeros_like(relevant)
            is_candidate[cands.rows, cands.cols] = True
            seen = histories.seen_matrix(batch, catalog_map).toarray() > 0
            relevant &= ~seen  # a liked re-watch is not a retrieval target
            n_relevant = relevant.sum(1)
            recall.append(
                (relevant & is_candidate).sum(1)[n_relevant > 0] / n_relevant[n_relevant > 0]
            )
            parts.append(cands.features)
            labels.append(relevant[cands.rows, cands.cols].astype(np.int32))
            groups.append(np.bincount(cands.rows, minlength=len(batch)))
        x = np.vstack(parts)
        y = np.concatenate(labels)
        group_sizes = np.concatenate(groups)
        group_users = np.concatenate(
            [
                users[start : start + self.batch_users]
                for start in range(0, len(users), self.batch_users)
            ]
        )
        row_user = np.repeat(group_users, group_sizes)
        in_validation = stable_user_fraction(row_user) < self.validation_user_fraction
        group_in_validation = stable_user_fraction(group_users) < self.validation_user_fraction
        params = {
            "objective": "lambdarank",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "eval_at": [10],
            "seed": self.seed,
            "deterministic": True,
            "verbosity": -1,
        }
        if not (group_in_validation.any() and (~group_in_validation).any()):
            in_validation[:] = False
            group_in_validation[:] = False
        fit_groups = group_sizes[~group_in_validation]
        train_set = lightgbm.Dataset(
            x[~in_validation], y[~in_validation], group=fit_groups[fit_groups > 0]
        )
        valid_sets, callbacks = [], []
        if in_validation.any():
            val_groups = group_sizes[group_in_validation]
            valid_sets = [
                lightgbm.Dataset(
                    x[in_validation],
                    y[in_validation],
                    group=val_groups[val_groups > 0],
                    reference=train_set,
                )
            ]
            callbacks = [lightgbm.early_stopping(self.early_stopping_rounds, verbose=False)]
        self.booster_ = lightgbm.train(
            params, train_set, num_boost_round=self.n_estimators, valid_sets=valid_sets,
            callbacks=callbacks,
        )  # fmt: skip
        all_recall = np.concatenate(recall) if recall else np.zeros(0)
        self.fit_report_ = {
            "labels": f"liked ({rule}) in {holdout}"
            if data.has_watch_ratio
            else f"viewed in {holdout}: the log has no watch ratio",
            "label_users": int(len(users)),
            "candidate_rows": int(len(y)),
            "candidates_per_user": float(len(y) / max(len(users), 1)),
            "label_candidate_recall": float(all_recall.mean()) if len(all_recall) else float("nan"),
            "best_iteration": int(self.booster_.best_iteration or self.n_estimators),
        }
        # Final retrievers and features on all of train.
        self.retrievers_ = [m.fit(data) for m in self._new_retrievers()]
        full = build_features(train, *side, like_rule=rule)
        self._set_tables(full, rule)
        self.fit_report_["features"] = full.sources()
        return self

    def _set_tables(self, features: FeatureSet, rule: LikeRule) -> None:
        """Learned tables as frames (persisted by the base class)."""
        self.users_ = features.users.to_frame("user_id")
        self.videos_ = features.videos.to_frame("video_id")
        self.rule_ = rule
        self.history_names_ = history_features(pl.DataFrame(
            schema={"user_id": pl.Int64, "video_id": pl.Int64, "watch_ratio": pl.Float64}
        ), like_rule=rule).names  # fmt: skip

    def _tables(self) -> tuple[FeatureTable, FeatureTable]:
        return (
            FeatureTable.from_frame(self.users_, "user_id"),
            FeatureTable.from_frame(self.videos_, "video_id"),
        )

    def _candidates(
        self, user_ids: np.ndarray, video_ids: np.ndarray, histories: Histories,
        static_users: FeatureTable, videos: FeatureTable,
    ) -> _Candidates:  # fmt: skip
        """Union of each retriever's top unseen videos, with one feature row per pair."""
        video_map = IdMap.from_ids(video_ids)
        seen = (
            histories.seen_matrix(user_ids, video_map)[:, video_map.index(video_ids)].toarray() > 0
        )
        k = min(self.candidates_per_retriever, len(video_ids))
        is_candidate = np.zeros(seen.shape, dtype=bool)
        retriever_columns = []
        first_rank = None
        for model in self.retrievers_:
            scores = np.asarray(model.score(user_ids, video_ids, histories), dtype=np.float64)
            scores = np.where(np.isfinite(scores), scores, np.nan)
            floor = np.nanmin(scores) - 1.0 if np.isfinite(scores).any() else 0.0
            scores = np.nan_to_num(scores, nan=floor)
            masked = np.where(seen, -np.inf, scores)
            ranks = _rank_rows(masked)
            if first_rank is None:
                first_rank = ranks
            is_candidate |= (ranks < k) & ~seen
            mean = scores.mean(1, keepdims=True)
            std = scores.std(1, keepdims=True) + 1e-9
            retriever_columns.append((ranks, (scores - mean) / std))
        rows, cols = np.nonzero(is_candidate)
        views = history_views(histories, user_ids)
        users = user_table(user_ids, static_users, views, videos, self.rule_)
        user_cols = [*self.history_names_, "has_history", "user_found"]
        video_cols = [n for n in videos.names if not n.startswith(RERANK_DROPPED_PREFIXES)]
        pair, _ = pair_features(users, videos, user_ids[rows], video_ids[cols],
                                user_columns=user_cols, video_columns=video_cols)  # fmt: skip
        retriever_block = np.column_stack(
            [
                np.column_stack([np.log1p(r[rows, cols]), z[rows, cols]])
                for r, z in retriever_columns
            ]
        ).astype(np.float32)
        return _Candidates(rows, cols, np.hstack([pair, retriever_block]), first_rank)

    # --- scoring --------------------------------------------------------------------------
    def candidate_mask(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        """(users x videos) bool: which videos the retrievers propose to each user."""
        user_ids, video_ids = np.asarray(user_ids, np.int64), np.asarray(video_ids, np.int64)
        mask = np.zeros((len(user_ids), len(video_ids)), dtype=bool)
        tables = self._tables()
        for start in range(0, len(user_ids), self.batch_users):
            batch = user_ids[start : start + self.batch_users]
            cands = self._candidates(batch, video_ids, histories, *tables)
            mask[start + cands.rows, cands.cols] = True
        return mask

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        """Videos of the feature table (content and training statistics)."""
        return IdMap(self.videos_["video_id"].to_numpy()).index(video_ids) >= 0

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        user_ids, video_ids = np.asarray(user_ids, np.int64), np.asarray(video_ids, np.int64)
        out = np.empty((len(user_ids), len(video_ids)), dtype=np.float32)
        tables = self._tables()
        for start in range(0, len(user_ids), self.batch_users):
            batch = user_ids[start : start + self.batch_users]
            cands = self._candidates(batch, video_ids, histories, *tables)
            predicted = self.booster_.predict(cands.features) if len(cands.rows) else np.zeros(0)
            floor = (predicted.min() if len(predicted) else 0.0) - 1.0
            block = floor - cands.first_rank / max(len(video_ids), 1)
            block[cands.rows, cands.cols] = predicted
            out[start : start + len(batch)] = block
        return out

    # --- persistence ----------------------------------------------------------------------
    def learned_state(self) -> dict:
        """Everything but the retrievers and the booster, which save themselves."""
        state = super().learned_state()
        return {k: v for k, v in state.items() if k not in ("retrievers_", "booster_")}

    def save_state(self, directory: Path) -> None:
        super().save_state(directory)
        for i, model in enumerate(self.retrievers_):
            model.save(directory / f"retriever_{i}")
        with atomic_path(directory / BOOSTER_FILE) as tmp:
            self.booster_.save_model(str(tmp))

    def load_state(self, directory: Path) -> None:
        import lightgbm

        super().load_state(directory)
        n = len(_retriever_names(self.retrievers))
        self.retrievers_ = [load_model(directory / f"retriever_{i}") for i in range(n)]
        self.booster_ = lightgbm.Booster(model_file=str(directory / BOOSTER_FILE))

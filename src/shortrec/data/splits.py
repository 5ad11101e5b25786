"""Evaluation protocols: which views a model learns from and which it is judged on.

Every protocol yields the same `Split`: `train` to fit, `validation` for early stopping and
checkpoint choice, `tune` targets for model selection, and `test` targets opened once. Targets
are views (user, video, watch_ratio, ...); a model ranks all `candidate_video_ids` for each
target user given that user's `*_history` (the views known at that time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from shortrec.data.dataset import KuaiRecData
from shortrec.data.histories import Histories

PROTOCOLS = ("kuairec", "leave-last-out", "temporal")
_DAY = 86_400.0


@dataclass
class Split:
    protocol: str
    train: pl.DataFrame
    validation: pl.DataFrame
    tune: pl.DataFrame
    test: pl.DataFrame
    tune_history: pl.DataFrame
    test_history: pl.DataFrame
    candidate_video_ids: np.ndarray

    _histories: dict[str, Histories] = field(default_factory=dict, repr=False)

    def targets(self, which: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(targets, history) for `which` in {"tune", "test"}."""
        if which == "tune":
            return self.tune, self.tune_history
        if which == "test":
            return self.test, self.test_history
        raise ValueError(f"evaluation set must be 'tune' or 'test', got {which!r}")

    def histories(self, which: str) -> Histories:
        """The `which` history as a Histories table, built once per split: every evaluation
        of the set (ranking, regression errors, candidate recall) shares it."""
        if which not in self._histories:
            self._histories[which] = Histories.from_frame(self.targets(which)[1])
        return self._histories[which]

    def summary(self) -> dict[str, int]:
        return {
            "train_views": self.train.height,
            "validation_views": self.validation.height,
            "tune_users": self.tune["user_id"].n_unique(),
            "test_users": self.test["user_id"].n_unique(),
            "candidate_videos": len(self.candidate_video_ids),
        }


def stable_user_fraction(user_ids: np.ndarray | pl.Series) -> np.ndarray:
    """A number in [0, 1) per user id that never changes between runs or machines."""
    x = np.asarray(user_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def kuairec_split(
    data: KuaiRecData, validation_days: float = 3.0, tune_fraction: float = 0.2
) -> Split:
    """Train on big_matrix (its last `validation_days` as validation); evaluate on the fully
    observed small_matrix, ranking all its videos; small_matrix users are split by a stable
    hash into tune (`tune_fraction`) and test."""
    big = data.big_matrix
    # The log ends at its 99.9th timestamp percentile, not its largest timestamp: a few events
    # carry a skewed device clock (real big_matrix timestamps run to Sep 10 for dates up to
    # Sep 5), and one of them must not shrink the validation window to nothing.
    cutoff = big["timestamp"].quantile(0.999, "higher") - validation_days * _DAY
    train = big.filter(pl.col("timestamp") <= cutoff)
    validation = big.filter(pl.col("timestamp") > cutoff)
    small = data.small_matrix
    in_tune = stable_user_fraction(small["user_id"]) < tune_fraction
    return Split(
        protocol="kuairec",
        train=train,
        validation=validation,
        tune=small.filter(pl.Series(in_tune)),
        test=small.filter(pl.Series(~in_tune)),
        tune_history=big,
        test_history=big,
        candidate_video_ids=np.sort(small["video_id"].unique().to_numpy()),
    )


def leave_last_out_split(interactions: pl.DataFrame) -> Split:
    """Per user, in time order: last view is test, second-to-last is validation (and the
    tune target), the rest is train. Users with fewer than 3 views stay in train only."""
    ordered = (
        interactions.with_row_index("_row")
        .sort(["user_id", "timestamp", "_row"])
        .with_columns(
            pl.int_range(pl.len()).reverse().over("user_id").alias("_from_end"),
            pl.len().over("user_id").alias("_n"),
        )
    )
    evaluable = pl.col("_n") >= 3
    test = ordered.filter(evaluable & (pl.col("_from_end") == 0))
    validation = ordered.filter(evaluable & (pl.col("_from_end") == 1))
    train = ordered.filter(~evaluable | (pl.col("_from_end") >= 2))
    drop = ["_row", "_from_end", "_n"]
    train, validation, test = (f.drop(drop) for f in (train, validation, test))
    return _held_out_split("leave-last-out", train, validation, test, interactions)


def _held_out_split(
    protocol: str, train: pl.DataFrame, validation: pl.DataFrame, test: pl.DataFrame,
    interactions: pl.DataFrame,
) -> Split:  # fmt: skip
    """Validation doubles as the tune target; test users are scored with train + validation
    as their history; every video of the data is a candidate."""
    return Split(
        protocol=protocol,
        train=train,
        validation=validation,
        tune=validation,
        test=test,
        tune_history=train,
        test_history=pl.concat([train, validation]),
        candidate_video_ids=np.sort(interactions["video_id"].unique().to_numpy()),
    )


def temporal_split(
    interactions: pl.DataFrame, validation_fraction: float = 0.1, test_fraction: float = 0.1
) -> Split:
    """One global time cut: the latest `test_fraction` of views is test, the slice before it
    validation (and tune target). Views without a timestamp are dropped."""
    timed = interactions.filter(pl.col("timestamp").is_not_null())
    t = timed["timestamp"].to_numpy()
    t_val, t_test = np.quantile(t, [1 - validation_fraction - test_fraction, 1 - test_fraction])
    train = timed.filter(pl.col("timestamp") < t_val)
    validation = timed.filter((pl.col("timestamp") >= t_val) & (pl.col("timestamp") < t_test))
    test = timed.filter(pl.col("timestamp") >= t_test)
    return _held_out_split("temporal", train, validation, test, timed)


def make_split(data: KuaiRecData, protocol: str) -> Split:
    """The named protocol on a release; leave-last-out and temporal use big_matrix."""
    if protocol == "kuairec":
        return kuairec_split(data)
    if protocol == "leave-last-out":
        return leave_last_out_split(data.big_matrix)
    if protocol == "temporal":
        return temporal_split(data.big_matrix)
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")

"""Test helper: the `TrainingData` a model is fitted on, from a bare frame or a release."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from shortrec.data.dataset import load_prepared
from shortrec.data.labels import LikeRule
from shortrec.data.splits import Split
from shortrec.models.base import TrainingData


def training(
    views: pl.DataFrame,
    validation: pl.DataFrame | None = None,
    like_rule: LikeRule | None = None,
) -> TrainingData:
    """A bare frame's training data; without video_duration the fixed 0.7 threshold is the
    rule (the duration-aware default needs durations)."""
    if like_rule is None and "video_duration" not in views.columns:
        like_rule = LikeRule(kind="threshold")
    return TrainingData.build(views, validation, like_rule)


def release_training(
    directory: str | Path, split: Split, like_rule: LikeRule | None = None
) -> TrainingData:
    """Training data of a prepared release's split, with its side tables."""
    from shortrec.runs import training_data

    return training_data(load_prepared(directory), split, like_rule or LikeRule())


def chance_ndcg(split: Split, rule: LikeRule) -> float:
    """Mean test NDCG@10 of uniform random scores: the floor a learned model must clear."""
    from shortrec.evaluation.protocol import evaluate
    from shortrec.models.baselines import RandomRecommender

    chance = RandomRecommender().fit(training(split.train))
    result = evaluate(chance, split, "test", rule, progress=False, n_resamples=100)
    return result.summary["ndcg@10"].mean

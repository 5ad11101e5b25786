"""The one interface every recommender implements.

Conventions (scikit-learn's): hyperparameters are plain dataclass fields set in the
constructor; `fit` learns and returns self; learned state lives in attributes ending in `_`.
Scoring speaks raw KuaiRec ids: the model keeps its own `IdMap`s, so it can score users and
videos of another matrix, and videos or users it never saw get a defined fallback score.

A model is saved as a directory: `model.json` ({"model": name, "params": {...}}) plus whatever
`save_state` writes. `load_model(dir)` rebuilds any registered model from that.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from shortrec.data.histories import Histories
from shortrec.io import atomic_write_text

MODEL_FILE = "model.json"


@dataclasses.dataclass
class Recommender:
    """Base class: subclasses are dataclasses whose fields are their hyperparameters."""

    name: ClassVar[str] = "base"
    # Set by a tuner before `fit`; models with an epoch loop report through `report_epoch`.
    on_epoch_end: ClassVar[Callable[[int, float], None] | None] = None
    seed: int = 0

    def report_epoch(self, epoch: int, validation_score: float) -> None:
        """Let a tuner watch, and prune, training (higher validation scores are better)."""
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, validation_score)

    def fit(self, train: pl.DataFrame, validation: pl.DataFrame | None = None) -> Recommender:
        """Learn from `train` views; `validation` views may drive early stopping."""
        raise NotImplementedError

    def score(
        self, user_ids: np.ndarray, video_ids: np.ndarray, histories: Histories
    ) -> np.ndarray:
        """Scores, shape (len(user_ids), len(video_ids)), float32; higher ranks first.

        `histories` holds each user's views known at scoring time (their training views, or
        big_matrix views when scoring small_matrix, or live events when serving). Models that
        do not use histories ignore it. Unknown users and videos must still get finite scores.
        """
        raise NotImplementedError

    # --- persistence -------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_state(directory)
        atomic_write_text(
            directory / MODEL_FILE,
            json.dumps({"model": self.name, "params": self.params()}, indent=2, default=str),
        )
        return directory

    def save_state(self, directory: Path) -> None:
        """Write learned state into `directory` (atomically per file)."""

    def load_state(self, directory: Path) -> None:
        """Read what `save_state` wrote."""


def load_model(directory: str | Path) -> Recommender:
    from shortrec.models import model_class

    directory = Path(directory)
    path = directory / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no saved model in {directory} (missing {MODEL_FILE})")
    spec = json.loads(path.read_text())
    cls = model_class(spec["model"])
    known = {f.name for f in dataclasses.fields(cls)}
    model = cls(**{k: v for k, v in spec["params"].items() if k in known})
    model.load_state(directory)
    return model


def popularity_fallback(
    video_ids: np.ndarray, known_video_ids: np.ndarray, known_scores: np.ndarray
) -> np.ndarray:
    """Per-video scores for `video_ids`, from (known ids, scores); unknown videos rank last."""
    from shortrec.data.histories import IdMap

    idx = IdMap(known_video_ids).index(video_ids)
    floor = float(np.min(known_scores)) - 1.0 if len(known_scores) else 0.0
    return np.where(idx >= 0, known_scores[np.maximum(idx, 0)], floor).astype(np.float32)

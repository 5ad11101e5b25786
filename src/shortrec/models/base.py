"""The whole contract between a recommender and the rest of shortrec.

Conventions (scikit-learn's): hyperparameters are dataclass fields declared once with
`hyperparameter(default, help, choices=, minimum=, maximum=, above=, below=)`: each becomes a
`shortrec train MODEL` flag with that help and those choices, is saved with the model, and is
checked before `fit` (one error naming every bad field). `fit` learns and returns self;
learned state lives in attributes ending in `_`. Scoring speaks raw KuaiRec ids: the model
keeps its own `IdMap`s, so it can score users and videos of another matrix; users it never
saw get a defined score, and videos it never learned (`known_videos`) rank last, which the
base class enforces for every model, as it refuses to score before `fit` or loading.

What a model receives:
- `fit(data: TrainingData, context: FitContext)`. `TrainingData` is everything a model may
  learn from, built once per run: the training views labelled by the run's fitted like rule
  (`liked` / `disliked` columns beside `watch_ratio`), the validation views, the rule itself,
  side features of users and videos, and the id maps models index by (`user_map`,
  `video_map`). Models never read files. `FitContext` (from `training/loop.py`) is what the
  run offers besides data: a checkpoint folder, progress display, and the tuner's per-epoch
  hook. Iterative models train with `training.loop.fit_epochs`, which calls the hook with
  validation NDCG@10 and checkpoints under `resume_key`.
- `score(user_ids, video_ids, histories)`: a (users x videos) float32 matrix.

What a model may declare (nothing is discovered with `hasattr`):
- `WatchRatioPredictor`: also predicts watch ratios (runs record MAE/RMSE);
- `CandidateGenerator`: retrieves candidates before ranking (runs record candidate recall);
- `reports_epochs`: reports validation NDCG@10 each epoch (the tuner prunes with it);
  `devices`: where it can train (`device` hyperparameter); `distributed`: trains
  data-parallel under torchrun (`training/distributed.py`);
- `presets()` and `search_space(trial)`: named hyperparameter sets and the tuner's space.

What a model writes: `fit_report_` (one dict: per-epoch `history`, and anything else worth
recording), which runs always copy into `metrics.json` under "fit". Persistence has a default
(`save_state`/`load_state` store every learned attribute by its type); a model overrides it
only when it must, and torch models say how to rebuild their networks (`new_module`).

Adding a model = one module with a `Recommender` subclass + one line in `models.REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from shortrec.data.histories import Histories, IdMap
from shortrec.data.labels import LikeRule
from shortrec.io import atomic_path, atomic_write_text
from shortrec.training.loop import FitContext, Resume

__all__ = ["FitContext", "Recommender", "TrainingData", "hyperparameter", "load_model"]

MODEL_FILE = "model.json"
STATE_ARRAYS = "state.npz"
STATE_JSON = "state.json"
# Hyperparameters a resumed fit may change: how long it trains, and where.
RESUMABLE_CHANGES = (
    "epochs",
    "patience",
    "min_improvement",
    "patience_fraction",
    "num_threads",
    "device",
)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What every model learns from. Build it with `TrainingData.build`.

    `views` and `validation` carry at least user_id, video_id, watch_ratio, timestamp and the
    boolean `liked` / `disliked` labels of `like_rule` (fitted on `views` only). When the log
    has no watch ratio (`has_watch_ratio` False), every view is liked and none disliked:
    models fall back to treating views as positives, and say so in their fit report.
    """

    views: pl.DataFrame
    validation: pl.DataFrame
    like_rule: LikeRule
    videos: pl.DataFrame  # one row per video: tags, caption, categories, video_duration
    users: pl.DataFrame | None = None  # user_features, when the release has them
    item_daily_features: pl.DataFrame | None = None
    ground_truth: pl.DataFrame | None = None  # synthetic worlds: expected watch ratios
    has_watch_ratio: bool = True
    user_map: IdMap = dataclasses.field(init=False)
    video_map: IdMap = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        for name in ("liked", "disliked"):
            if name not in self.views.columns or name not in self.validation.columns:
                raise ValueError(f"training views lack the {name!r} label; use TrainingData.build")
        object.__setattr__(self, "user_map", IdMap.from_ids(self.views["user_id"]))
        object.__setattr__(self, "video_map", IdMap.from_ids(self.views["video_id"]))

    @classmethod
    def build(
        cls,
        views: pl.DataFrame,
        validation: pl.DataFrame | None = None,
        like_rule: LikeRule | None = None,
        videos: pl.DataFrame | None = None,
        users: pl.DataFrame | None = None,
        item_daily_features: pl.DataFrame | None = None,
        ground_truth: pl.DataFrame | None = None,
    ) -> TrainingData:
        """Fit `like_rule` (default `LikeRule()`) on `views`, label views and validation."""
        has_watch_ratio = "watch_ratio" in views.columns and views[
            "watch_ratio"
        ].null_count() < max(views.height, 1)
        rule = LikeRule(kind="all") if not has_watch_ratio else (like_rule or LikeRule())
        has_durations = "video_duration" in views.columns and views[
            "video_duration"
        ].null_count() < max(views.height, 1)
        if rule.kind == "duration" and not has_durations:
            raise ValueError(
                "the duration-aware like rule (the default) needs video durations, which this "
                "log lacks; use --like-rule threshold:X (e.g. threshold:0.8 for ratings "
                "imported as rating / max) or --like-rule all"
            )
        views = _with_watch_ratio(views)
        validation = _with_watch_ratio(validation if validation is not None else views.clear())
        rule = rule if rule.is_fitted else rule.fit(views)
        if videos is None:
            videos = views.select("video_id").unique().sort("video_id")
        return cls(
            views=rule.label(views),
            validation=rule.label(validation),
            like_rule=rule,
            videos=videos,
            users=users,
            item_daily_features=item_daily_features,
            ground_truth=ground_truth,
            has_watch_ratio=has_watch_ratio,
        )

    def with_views(self, views: pl.DataFrame, validation: pl.DataFrame | None = None) -> Self:
        """The same data with other training views (e.g. an earlier slice of them), labelled by
        the same fitted rule: for models that train inner models on part of the data."""
        validation = validation if validation is not None else views.clear()
        return dataclasses.replace(
            self,
            views=self.like_rule.label(_with_watch_ratio(views)),
            validation=self.like_rule.label(_with_watch_ratio(validation)),
        )

    @property
    def liked(self) -> np.ndarray:
        return self.views["liked"].to_numpy()

    @property
    def disliked(self) -> np.ndarray:
        return self.views["disliked"].to_numpy()


def _with_watch_ratio(frame: pl.DataFrame) -> pl.DataFrame:
    if "watch_ratio" not in frame.columns:
        return frame.with_columns(pl.lit(1.0).alias("watch_ratio"))
    return frame.with_columns(pl.col("watch_ratio").fill_null(1.0))


def hyperparameter(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Any:
    """A hyperparameter field: its `help` is the flag's help, `choices` the flag's choices,
    and every bound (`minimum`/`maximum` inclusive, `above`/`below` exclusive) is checked
    by `Recommender.validate_hyperparameters` before `fit`."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None,
                "minimum": minimum, "maximum": maximum, "above": above, "below": below}  # fmt: skip
    return dataclasses.field(default=default, metadata=metadata)


def hyperparameter_problem(field: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with `value` for `field`, in the one wording every model uses."""
    meta = field.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{field.name} must be one of {', '.join(map(str, choices))}; got {value!r}"
    bounds = [(meta.get("minimum"), ">=", lambda v, b: v >= b),
              (meta.get("maximum"), "<=", lambda v, b: v <= b),
              (meta.get("above"), ">", lambda v, b: v > b),
              (meta.get("below"), "<", lambda v, b: v < b)]  # fmt: skip
    for bound, word, holds in bounds:
        if bound is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{field.name} must be a number {word} {bound:g}; got {value!r}"
        if not holds(value, bound):
            return f"{field.name} must be {word} {bound:g}; got {value!r}"
    return None


class NotFittedError(RuntimeError):
    """A model was asked to score before it was fitted or loaded."""


@dataclasses.dataclass
class Recommender:
    """Base class: subclasses are dataclasses whose fields are their hyperparameters."""

    name: ClassVar[str] = "base"
    reports_epochs: ClassVar[bool] = False  # calls `report_epoch` once per epoch
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # what its `device` hyperparameter accepts
    # Fit diagnostics (per-epoch `history`, anything worth recording); `fit` assigns a new
    # dict, which runs copy into metrics.json under "fit". Empty until then.
    fit_report_: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    distributed: ClassVar[bool] = False  # trains data-parallel under torchrun
    # A reference point, not a model to pick (the oracle reads the synthetic ground truth):
    # left out of `tune all`, the benchmark's defaults and the quickstart's best-model pick.
    reference: ClassVar[bool] = False
    seed: int = hyperparameter(
        0, "Random seed; the same seed and data train the same model.", minimum=0
    )

    _fitted: ClassVar[bool] = False  # set on the instance by `fit` and `load_state`
    _in_fit: ClassVar[bool] = False  # a model may score itself while fitting (validation)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every model's `fit` first checks every hyperparameter (`validate_hyperparameters`),
        and its `score` refuses to run before `fit` or `load_state` (a model with nothing to
        learn, which has no `fit` of its own, scores as it is)."""
        super().__init_subclass__(**kwargs)
        fit, score = cls.__dict__.get("fit"), cls.__dict__.get("score")
        if fit is not None and not getattr(fit, "_checked", False):

            @functools.wraps(fit)
            def checked_fit(self, data, context=None):
                self.validate_hyperparameters()
                self._in_fit = True
                try:
                    fitted = fit(self, data, context)
                finally:
                    self._in_fit = False
                self._fitted = True
                return fitted

            checked_fit._checked = True  # type: ignore[attr-defined]
            cls.fit = checked_fit  # type: ignore[method-assign]
        if score is not None and not getattr(score, "_checked", False):

            @functools.wraps(score)
            def checked_score(self, user_ids, video_ids, histories):
                if not (self._fitted or self._in_fit or type(self).fit is Recommender.fit):
                    raise NotFittedError(f"{self.name} must be fitted (or loaded) before scoring")
                scores = np.asarray(score(self, user_ids, video_ids, histories))
                if scores.shape != (len(user_ids), len(video_ids)):
                    raise ValueError(
                        f"{self.name}.score returned shape {scores.shape} for "
                        f"{len(user_ids)} users x {len(video_ids)} videos"
                    )
                return unknown_videos_last(scores, self.known_videos(np.asarray(video_ids)))

            checked_score._checked = True  # type: ignore[attr-defined]
            cls.score = checked_score  # type: ignore[method-assign]

    def validate_hyperparameters(self) -> None:
        """Raise one ValueError naming every hyperparameter outside its choices or bounds,
        and anything `check_hyperparameters` adds."""
        problems = [
            problem
            for field in dataclasses.fields(self)
            if (problem := hyperparameter_problem(field, getattr(self, field.name)))
        ]
        problems += self.check_hyperparameters()
        if problems:
            raise ValueError(f"invalid {self.name} hyperparameters: " + "; ".join(problems))

    def check_hyperparameters(self) -> list[str]:
        """Problems the declared choices and bounds cannot state (e.g. how two fields
        relate), in `hyperparameter_problem`'s wording; none by default."""
        return []

    # --- learning ----------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> Self:
        """Learn from `data`; `data.validation` may drive early stopping."""
        raise NotImplementedError

    def score(
        self, user_ids: np.ndarray, video_ids: np.ndarray, histories: Histories
    ) -> np.ndarray:
        """Scores, shape (len(user_ids), len(video_ids)), float32; higher ranks first.

        `histories` holds each user's views known at scoring time (their training views, or
        big_matrix views when scoring small_matrix, or live events when serving). Models that
        do not use histories ignore it. Unknown users must still get finite scores; the base
        class ranks videos outside `known_videos` last, whatever a model scores them.
        """
        raise NotImplementedError

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        """Which of `video_ids` the model learned about; `score` ranks the others below every
        known one (the one fallback for unknown videos). By default the videos of the
        learned `video_map_`, or every video for a model without one; models that know
        videos by other tables (content features) override this."""
        video_map = vars(self).get("video_map_")
        if video_map is None:
            return np.ones(len(video_ids), dtype=bool)
        return video_map.index(video_ids) >= 0

    def report_epoch(self, context: FitContext | None, epoch: int, validation_score: float) -> None:
        """Let a tuner watch, and prune, training (higher validation scores are better);
        models on `fit_epochs` get this from the loop."""
        if context is not None and context.on_epoch_end is not None:
            context.on_epoch_end(epoch, validation_score)

    def resume_key(self, data: TrainingData, world_size: int = 1) -> Resume:
        """What a checkpoint of this fit must share with the run that resumes it: every
        hyperparameter but those free to change (`RESUMABLE_CHANGES`), the like rule and the
        world size, and the training data's users, videos and size."""
        settings = {k: v for k, v in self.params().items() if k not in RESUMABLE_CHANGES}
        settings |= {"like_rule": str(data.like_rule), "world_size": world_size}
        return Resume(
            settings,
            {"user_ids": data.user_map.raw_ids, "video_ids": data.video_map.raw_ids,
             "views": data.views.height},
        )  # fmt: skip

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """Named hyperparameter sets (`--preset NAME`); explicit flags win over them."""
        return {}

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """Hyperparameters an Optuna `trial` suggests; a model without one has nothing to tune."""
        return {}

    @classmethod
    def is_tunable(cls) -> bool:
        return cls.search_space.__func__ is not Recommender.search_space.__func__

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

    def learned_state(self) -> dict[str, Any]:
        """Every learned attribute: public names ending in `_`."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def save_state(self, directory: Path) -> None:
        """Write every learned attribute by its type: arrays and id maps into one `.npz`,
        frames as Parquet, sparse matrices as `.npz`, torch modules as state dicts, like rules
        and JSON values into `state.json`. Anything else needs an override."""
        arrays: dict[str, np.ndarray] = {}
        plain: dict[str, Any] = {}
        for key, value in self.learned_state().items():
            if isinstance(value, IdMap):
                arrays[f"idmap:{key}"] = value.raw_ids
            elif isinstance(value, np.ndarray):
                arrays[key] = value
            elif isinstance(value, LikeRule):
                plain[key] = {"__like_rule__": value.to_dict()}
            elif isinstance(value, pl.DataFrame):
                with atomic_path(directory / f"{key}.parquet") as tmp:
                    value.write_parquet(tmp)
                plain[key] = {"__parquet__": f"{key}.parquet"}
            elif _is_sparse(value):
                import scipy.sparse as sp

                with atomic_path(directory / f"{key}.sparse.npz") as tmp, open(tmp, "wb") as fh:
                    sp.save_npz(fh, value.tocsr())
                plain[key] = {"__sparse__": f"{key}.sparse.npz"}
            elif _is_torch_module(value):
                import io

                import torch

                buffer = io.BytesIO()
                torch.save(value.state_dict(), buffer)
                with atomic_path(directory / f"{key}.pt") as tmp:
                    tmp.write_bytes(buffer.getvalue())
                plain[key] = {"__torch__": f"{key}.pt"}
            else:
                try:
                    json.dumps(value, allow_nan=True)
                except TypeError as error:
                    raise TypeError(
                        f"{self.name}: learned attribute {key} ({type(value).__name__}) has no "
                        "default persistence; override save_state/load_state"
                    ) from error
                plain[key] = value
        with atomic_path(directory / STATE_ARRAYS) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        atomic_write_text(directory / STATE_JSON, json.dumps(plain, default=float))

    def load_state(self, directory: Path) -> None:
        """Read what `save_state` wrote; torch modules are rebuilt with `new_module` after
        every other attribute is back (their shapes usually depend on the id maps)."""
        with np.load(directory / STATE_ARRAYS, allow_pickle=False) as arrays:
            for key in arrays.files:
                if key.startswith("idmap:"):
                    setattr(self, key.removeprefix("idmap:"), IdMap(arrays[key]))
                else:
                    setattr(self, key, arrays[key])
        modules = []
        for key, value in json.loads((directory / STATE_JSON).read_text()).items():
            if isinstance(value, dict) and "__like_rule__" in value:
                setattr(self, key, LikeRule(**value["__like_rule__"]))
            elif isinstance(value, dict) and "__parquet__" in value:
                setattr(self, key, pl.read_parquet(directory / value["__parquet__"]))
            elif isinstance(value, dict) and "__sparse__" in value:
                import scipy.sparse as sp

                setattr(self, key, sp.load_npz(directory / value["__sparse__"]).tocsr())
            elif isinstance(value, dict) and "__torch__" in value:
                modules.append((key, directory / value["__torch__"]))
            else:
                setattr(self, key, value)
        for key, path in modules:
            import torch

            module = self.new_module(key)
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            module.eval()
            setattr(self, key, module)
        self._fitted = True

    def new_module(self, attribute: str):
        """An untrained torch module for the learned attribute `attribute`, shaped like the
        saved one (torch models override this)."""
        raise NotImplementedError(f"{self.name} cannot rebuild its torch module {attribute}")


class WatchRatioPredictor(ABC):
    """A model that also predicts watch ratios; runs record MAE/RMSE on the evaluation set."""

    @abstractmethod
    def predict_watch_ratio(
        self, user_ids: np.ndarray, video_ids: np.ndarray, histories: Histories
    ) -> np.ndarray:
        """Predicted watch ratio of each aligned (user, video) pair."""


class CandidateGenerator(ABC):
    """A retrieve-then-rank model; runs record the recall of its candidate stage."""

    @abstractmethod
    def candidate_mask(
        self, user_ids: np.ndarray, video_ids: np.ndarray, histories: Histories
    ) -> np.ndarray:
        """Boolean (users x videos): which videos the first stage retrieved for each user."""


def _is_sparse(value: Any) -> bool:
    scipy_sparse = sys.modules.get("scipy.sparse")
    return scipy_sparse is not None and scipy_sparse.issparse(value)


def _is_torch_module(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


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


def unknown_videos_last(scores: np.ndarray, known: np.ndarray) -> np.ndarray:
    """`scores` (users x videos, float32) with the columns of unknown videos (`known` False)
    below every known score: the one fallback for videos a model never learned."""
    scores = np.asarray(scores, dtype=np.float32)
    known = np.asarray(known, dtype=bool)
    if not known.all():
        finite = scores[:, known]
        scores[:, ~known] = float(finite.min()) - 1.0 if finite.size else -1.0
    return scores

"""Runs: one folder per trained model with its config, log, metrics and artifacts.

    runs/<time>-<model>-<id>/
        config.json          RunConfig: model, hyperparameters, seed, the Experiment (data as
                             given and resolved, protocol, like rule)
        log.txt              what happened, with timings
        metrics.json         {"tune": ..., "test": ..., "fit": the model's fit_report_,
                              "train_seconds": ..., "peak_rss_mb": ...}
        per_user_<key>.parquet   per-user metrics, for paired comparisons
        model/               the saved Recommender

`Run` is the one reader and writer of that folder: every command, the server, the simulator
and the report go through it, and every file in it is written atomically. A run finds its data
from any working directory, and after its runs folder was moved together with the data beside
it (see `Run.data_dir`).

The test set is opened only when asked (`evaluate_run(..., "test")`), and every evaluation
is recorded with its mode (full ranking or sampled) so no number loses its label.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

import shortrec
from shortrec.data.dataset import KuaiRecData, load_prepared
from shortrec.data.labels import LikeRule
from shortrec.data.schema import PREPARED_INTERACTION_COLUMNS
from shortrec.data.splits import (
    PROTOCOLS,
    Split,
    leave_last_out_split,
    make_split,
    temporal_split,
)
from shortrec.evaluation.extras import candidate_recall, regression_errors
from shortrec.evaluation.protocol import Evaluation, evaluate
from shortrec.evaluation.statistics import format_interval
from shortrec.io import atomic_path, atomic_write_text
from shortrec.models import model_class
from shortrec.models.base import (
    CandidateGenerator,
    FitContext,
    Recommender,
    TrainingData,
    WatchRatioPredictor,
    load_model,
)
from shortrec.tracking import Tracker, open_tracker
from shortrec.training.distributed import world

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"
LOG_FILE = "log.txt"
# Options of a run (not of its model) that a preset may set, e.g. the paper's protocol.
RUN_OPTIONS = ("protocol", "like_rule", "sampled")


@dataclass
class Experiment:
    """What makes runs comparable: the data, the protocol that splits it and the like rule
    that judges it. Runs, studies and benchmarks each embed one.

    `data_dir` is kept as given (what the user typed) and, in `resolved_data_dir`, as the
    absolute path it meant where it was given, so the experiment means the same data from
    any working directory."""

    data_dir: str
    protocol: str = "kuairec"
    like_rule: LikeRule = field(default_factory=LikeRule)
    resolved_data_dir: str = ""

    def __post_init__(self) -> None:
        self.data_dir = str(self.data_dir)
        if not self.resolved_data_dir:
            self.resolved_data_dir = str(Path(self.data_dir).resolve())
        if isinstance(self.like_rule, str):
            self.like_rule = LikeRule.parse(self.like_rule)
        elif isinstance(self.like_rule, dict):
            self.like_rule = LikeRule(**self.like_rule).unfitted()
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}"
            )

    @property
    def comparable_key(self) -> tuple[str, str, str]:
        """Runs are comparable only on the same data, protocol and like rule."""
        return (self.resolved_data_dir, self.protocol, str(self.like_rule))


def apply_preset(
    model: str,
    preset: str | None,
    params: Mapping[str, Any],
    experiment: Experiment,
    sampled: int | None = None,
    keep: Collection[str] = (),
) -> tuple[dict[str, Any], Experiment, int | None]:
    """(params, experiment, sampled) with the model's named preset filled in: `params` and
    the run options named in `keep` win over the preset, whatever their value; the preset
    sets every other hyperparameter it names and the run options (protocol, like rule,
    sampled evaluation) it names."""
    params = dict(params)
    if not preset:
        return params, experiment, sampled
    presets = model_class(model).presets()
    if preset not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise ValueError(f"model {model!r} has no preset {preset!r} (presets: {known})")
    run_options: dict[str, Any] = {}
    for key, value in presets[preset].items():
        if key in keep or key in params:
            continue
        if key in RUN_OPTIONS:
            run_options[key] = value
        else:
            params[key] = value
    sampled = run_options.pop("sampled", sampled)
    if run_options:
        experiment = dataclasses.replace(experiment, **run_options)
    return params, experiment, sampled


@dataclass
class RunConfig:
    """One run: the model and its hyperparameters (`params`, without the seed, which is
    stored once, in `seed`), on one `Experiment`. `preset` records the named preset the
    params and experiment were filled from (`RunConfig.build` applies it)."""

    model: str
    experiment: Experiment
    params: dict[str, Any] = field(default_factory=dict)
    ks: list[int] = field(default_factory=lambda: [10, 20, 50])
    sampled: int | None = None  # N negatives per positive: paper reproduction only
    seed: int = 0
    label: str = ""  # names a variant on leaderboards (e.g. "sasrec-softmax"); default: model
    preset: str | None = None
    shortrec_version: str = shortrec.__version__

    def __post_init__(self) -> None:
        if isinstance(self.experiment, dict):
            self.experiment = Experiment(**self.experiment)
        self.params = dict(self.params)
        if "seed" in self.params:  # a model's `seed` hyperparameter is the run's seed
            self.seed = int(self.params.pop("seed"))

    @classmethod
    def build(
        cls,
        model: str,
        data_dir: str | Path,
        params: Mapping[str, Any] | None = None,
        *,
        protocol: str | None = None,
        like_rule: LikeRule | str | None = None,
        sampled: int | None = None,
        preset: str | None = None,
        seed: int | None = None,
        label: str = "",
    ) -> RunConfig:
        """A run config with `preset` resolved. Every argument given (not None) wins over
        the preset; what neither sets takes the defaults."""
        model_class(model)  # a clear error for an unknown model, before anything else
        given = {"protocol": protocol, "like_rule": like_rule, "sampled": sampled}
        keep = [key for key, value in given.items() if value is not None]
        experiment = Experiment(
            str(data_dir),
            protocol=protocol or "kuairec",
            like_rule=like_rule if like_rule is not None else LikeRule(),
        )
        params = dict(params or {})
        if seed is not None:
            params["seed"] = seed
        params, experiment, sampled = apply_preset(model, preset, params, experiment, sampled, keep)
        return cls(
            model=model, experiment=experiment, params=params, sampled=sampled,
            label=label, preset=preset,
        )  # fmt: skip

    @property
    def display_name(self) -> str:
        return self.label or self.model

    @property
    def comparable_key(self) -> tuple[str, str, str]:
        return self.experiment.comparable_key

    def to_dict(self) -> dict[str, Any]:
        """The config.json layout: the experiment's fields beside the run's own."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        experiment = dataclasses.asdict(own.pop("experiment"))
        return {"model": own.pop("model"), **experiment, **own}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Reads what `to_dict` wrote, and the configs of earlier versions."""
        raw = dict(raw)
        experiment_fields = {f.name for f in dataclasses.fields(Experiment)}
        experiment = raw.pop("experiment", None) or {
            k: raw.pop(k) for k in list(raw) if k in experiment_fields
        }
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(experiment=experiment, **{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))


def new_run_dir(runs_dir: str | Path, model: str) -> Path:
    """A new, empty run folder `<runs_dir>/<time>-<model>-<id>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(runs_dir) / f"{stamp}-{model}-{secrets.token_hex(3)}"
    path.mkdir(parents=True)
    return path


class Run:
    """A run folder: its config, metrics, per-user results, model and data.

    `Run.create` makes a new folder (or takes an existing one, to resume), `Run(path)` opens
    one. Nothing is cached but the config: metrics are read afresh, so two processes that
    record into one run (an evaluation, a simulation) each see the other's results."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        self._config: RunConfig | None = None
        self._data_dir_from_run: str | None = None
        self._model: Recommender | None = None

    @classmethod
    def create(cls, runs_dir: str | Path, config: RunConfig, path: Path | None = None) -> Run:
        """A new run folder `<runs_dir>/<time>-<model>-<id>` (or `path`) holding `config`."""
        if path is None:
            path = new_run_dir(runs_dir, config.model)
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
        cls._write_config(Path(path), config)
        return cls(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:  # a file of the run, as with a Path
        return self.path / name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # --- config -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def config(self) -> RunConfig:
        if self._config is None:
            path = self.config_path
            try:
                raw = json.loads(path.read_text())
                self._config = RunConfig.from_dict(raw)
            except (TypeError, ValueError) as error:  # JSONDecodeError is a ValueError
                raise ValueError(f"{path}: not a valid run config ({error})") from error
            self._data_dir_from_run = raw.get("data_dir_from_run")
        return self._config

    def save_config(self, config: RunConfig) -> None:
        self._write_config(self.path, config)
        self._config = None

    @staticmethod
    def _write_config(path: Path, config: RunConfig) -> None:
        raw = config.to_dict()
        # How to reach the data from the run folder: it still holds after the runs folder
        # is moved together with the data beside it.
        raw["data_dir_from_run"] = os.path.relpath(
            config.experiment.resolved_data_dir, path.resolve()
        )
        atomic_write_text(path / CONFIG_FILE, json.dumps(raw, indent=2, default=str))

    # --- data ---------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """Where the run's data is now: beside the run as it was when trained (the runs
        folder moved with its data), at the absolute path it was trained on, or as given."""
        experiment = self.config.experiment
        candidates = []
        if self._data_dir_from_run:
            candidates.append(self.path / self._data_dir_from_run)
        candidates.append(Path(experiment.resolved_data_dir))
        given = Path(experiment.data_dir)
        candidates += [given] if given.is_absolute() else [given, self.path / given]
        for candidate in candidates:
            if candidate.exists():
                return candidate.resolve()
        tried = ", ".join(dict.fromkeys(str(c) for c in candidates))
        raise FileNotFoundError(
            f"{self.path}: its data {experiment.data_dir!r} is not found (tried {tried}); "
            "move the runs folder together with its data, or train again"
        )

    def data(self) -> KuaiRecData:
        return load_data(self.data_dir)

    def split(self, data: KuaiRecData | None = None) -> Split:
        return split_for(data if data is not None else self.data(), self.config.experiment.protocol)

    # --- model --------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    def model(self) -> Recommender:
        """The saved model (loaded once per `Run`)."""
        if self._model is None:
            if not self.model_dir.exists():
                raise FileNotFoundError(f"{self.path} holds no saved model ({MODEL_DIR}/ missing)")
            self._model = load_model(self.model_dir)
        return self._model

    def save_model(self, model: Recommender) -> None:
        model.save(self.model_dir)
        self._model = model

    def evaluate(self, which: str = "tune", **options: Any) -> Evaluation:
        """`evaluate_run` on this run (recorded in it)."""
        return evaluate_run(self, which, **options)

    def recommend(self, user_ids: list[int] | None = None, k: int = 10, **options: Any):
        """`recommend_from_run` on this run: top-k per user with captions and categories."""
        return recommend_from_run(self, user_ids, k, **options)

    # --- metrics ------------------------------------------------------------------------------
    @property
    def metrics(self) -> dict[str, Any]:
        path = self.path / METRICS_FILE
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error

    def record(self, key: str, value: Any) -> None:
        """Store `value` under `key` in metrics.json (atomically; other keys kept)."""
        self.record_all({key: value})

    def record_all(self, values: Mapping[str, Any]) -> None:
        metrics = self.metrics
        metrics.update(values)
        atomic_write_text(self.path / METRICS_FILE, json.dumps(metrics, indent=2, default=float))

    # --- per-user results ---------------------------------------------------------------------
    def per_user_path(self, key: str) -> Path:
        """The per-user file of an evaluation or simulation key ("test", "test:sampled-100",
        "simulation_test")."""
        return self.path / f"per_user_{key.replace(':', '_')}.parquet"

    def per_user(self, key: str) -> pl.DataFrame:
        path = self.per_user_path(key)
        if not path.exists():
            raise FileNotFoundError(
                f"{self.path} has no {key} evaluation; run "
                f"`shortrec evaluate {self.path} --on {key.split(':')[0]}`"
            )
        return pl.read_parquet(path)

    def write_per_user(self, key: str, frame: pl.DataFrame) -> None:
        self.write_table(self.per_user_path(key).name, frame)

    def write_table(self, name: str, frame: pl.DataFrame) -> None:
        """A Parquet file of the run (atomically)."""
        with atomic_path(self.path / name) as tmp:
            frame.write_parquet(tmp)

    # --- log ----------------------------------------------------------------------------------
    @property
    def log(self) -> logging.Logger:
        log = logging.getLogger(f"shortrec.run.{self.path.resolve()}")
        log.setLevel(logging.INFO)
        if not log.handlers:
            handler = logging.FileHandler(self.path / LOG_FILE)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(handler)
        return log


def as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


# What training, evaluation and serving read of the interaction tables: everything but the
# `time` text column (the largest one; `timestamp` says the same).
RUN_COLUMNS = tuple(c for c in PREPARED_INTERACTION_COLUMNS if c != "time")


def load_data(path: str | Path) -> KuaiRecData:
    """A prepared KuaiRec release directory, or a SASRec-format text file (`user item` lines)."""
    path = Path(path)
    if path.suffix == ".txt":
        from shortrec.data.sasrec_text import load_sasrec_text

        return load_sasrec_text(path)
    return load_prepared(path, columns=RUN_COLUMNS)


def split_for(data: KuaiRecData, protocol: str) -> Split:
    if data.small_matrix.height == 0 and protocol == "kuairec":
        raise ValueError(
            f"{data.source} has no small_matrix, so the kuairec protocol cannot be used; "
            "choose --protocol leave-last-out or temporal"
        )
    if data.small_matrix.height == 0:  # a SASRec text file: its views are all in big_matrix
        if protocol == "leave-last-out":
            return leave_last_out_split(data.big_matrix)
        return temporal_split(data.big_matrix)
    return make_split(data, protocol)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_model(config: RunConfig) -> Recommender:
    cls = model_class(config.model)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config.params) - fields)
    if unknown:
        raise ValueError(f"{config.model} has no hyperparameter(s) {', '.join(unknown)}")
    return cls(**{**config.params, "seed": config.seed})


def training_data(data: KuaiRecData, split: Split, like_rule: LikeRule) -> TrainingData:
    """The one object a model learns from: the split's train and validation views labelled
    by `like_rule` (fitted on train here, once), with the release's side tables."""
    return TrainingData.build(
        split.train,
        split.validation,
        like_rule.unfitted(),
        videos=data.videos,
        users=data.users,
        item_daily_features=data.item_daily_features,
        ground_truth=data.ground_truth,
    )


def check_resumable(run_dir: str | Path, config: RunConfig) -> None:
    """`--resume` continues a run of the same model on the same experiment, nothing else."""
    try:
        saved = Run(run_dir).config
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--resume {run_dir}: not a run folder ({error})") from error
    if (saved.model, saved.comparable_key) != (config.model, config.comparable_key):
        raise ValueError(
            f"--resume {run_dir}: that run trained {saved.model} on {saved.comparable_key}, "
            f"not {config.model} on {config.comparable_key}"
        )


def train_run(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    evaluate_on: tuple[str, ...] = ("tune",),
    data: KuaiRecData | None = None,
    split: Split | None = None,
    progress: bool = True,
    run_dir: Path | None = None,
    on_epoch_end: Callable[[int, float], None] | None = None,
    training: TrainingData | None = None,
    track: str | Tracker | None = None,
    track_tags: dict | None = None,
) -> Run | None:
    """Fit the configured model on the protocol's train split, save it, evaluate it.

    `data`/`split`/`training` may be passed in when training many models on the same
    release; `run_dir` names the folder (an interrupted run to resume, a tuner's trial);
    `on_epoch_end(epoch, validation_score)` reaches models that report per-epoch validation
    scores (the tuner uses it to prune). `track` ("mlflow[:URI]" or a `Tracker`) mirrors the
    finished run to an experiment tracker (`shortrec.tracking`), with `track_tags`. Under
    torchrun (`--nproc`), every rank trains and only rank 0 writes and evaluates the run; the
    others return None."""
    experiment = config.experiment
    if training is None:
        data = data if data is not None else load_data(experiment.resolved_data_dir)
        split = split if split is not None else split_for(data, experiment.protocol)
        training = training_data(data, split, experiment.like_rule)
    elif split is None:
        raise ValueError("train_run: a prebuilt `training` needs its `split`")
    job = world()
    if job.active:
        if not model_class(config.model).distributed:
            raise ValueError(f"{config.model} does not train data-parallel (WORLD_SIZE > 1)")
        if not job.is_main:  # the other ranks only help train: rank 0 owns the run folder
            build_model(config).fit(training, FitContext(progress=False))
            return None
    tracker, track_started = open_tracker(track), time.time()  # a missing MLflow fails now
    model = build_model(config)
    params = model.params()
    params.pop("seed", None)  # stored once, as the run's seed
    # What the labels really followed (a log without watch ratios calls every view liked).
    experiment = dataclasses.replace(experiment, like_rule=training.like_rule.unfitted())
    config = dataclasses.replace(config, params=params, experiment=experiment)
    run = Run.create(runs_dir, config, path=run_dir)
    run.log.info("split %s: %s", experiment.protocol, split.summary())
    context = FitContext(
        checkpoint_dir=run.path / "checkpoints", progress=progress, on_epoch_end=on_epoch_end
    )
    started = time.perf_counter()
    model.fit(training, context)
    train_seconds = time.perf_counter() - started
    run.log.info("fit %s in %.1f s", config.model, train_seconds)
    run.save_model(model)
    run.record_all(
        {
            "train_seconds": train_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "fit": dict(model.fit_report_),
        }
    )
    for which in evaluate_on:
        evaluate_run(run, which, split=split, progress=progress, like_rule=training.like_rule)
    if tracker is not None:
        tracker.record(run.path, track_tags, started=track_started)
    return run


def evaluate_run(
    run: Run | str | Path,
    which: str = "tune",
    sampled: int | None = None,
    split: Split | None = None,
    progress: bool = True,
    like_rule: LikeRule | None = None,
) -> Evaluation:
    """Evaluate a run's model on its tune or test set and record the result in the run.
    `like_rule`: the run's rule already fitted on `split.train` (fitted here otherwise)."""
    run = as_run(run)
    config = run.config
    model = run.model()
    split = split or run.split()
    # The rule fitted on the split's training views (the run's own, when it passes it in).
    like_rule = like_rule or config.experiment.like_rule.unfitted().fit(split.train)
    sampled = sampled if sampled is not None else config.sampled
    sampled = sampled or None  # 0 forces full ranking for a run trained in sampled mode
    result = evaluate(
        model, split, which, like_rule, ks=tuple(config.ks), sampled=sampled,
        seed=config.seed, progress=progress,
    )  # fmt: skip
    key = which if result.mode == "full-ranking" else f"{which}:{result.mode}"
    recorded = {key: result.to_dict()}
    if result.mode == "full-ranking":
        recorded.update(_extra_metrics(model, split, which, like_rule))
    run.write_per_user(key, result.per_user)
    run.record_all(recorded)
    run.log.info("evaluated on %s (%s)", which, result.mode)
    return result


def _extra_metrics(model: Recommender, split: Split, which: str, like_rule: LikeRule) -> dict:
    """What some models measure beyond ranking: watch-ratio regression errors (models that
    predict watch ratios) and candidate recall (retrieve-then-rerank models)."""
    extras = {}
    if isinstance(model, WatchRatioPredictor):
        extras[f"regression_{which}"] = regression_errors(model.predict_watch_ratio, split, which)
    if isinstance(model, CandidateGenerator):
        extras[f"candidate_recall_{which}"] = candidate_recall(
            model.candidate_mask, split, which, like_rule
        )
    return extras


def list_runs(runs_dir: str | Path) -> list[Run]:
    """Every run folder directly under `runs_dir`, oldest first (names start with the time)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        return []
    return [Run(p) for p in sorted(runs_dir.iterdir()) if (p / CONFIG_FILE).is_file()]


def metrics_summary(metrics: Mapping[str, Any]) -> list[str]:
    """The lines `shortrec train` and `evaluate` print: headline metrics with intervals of
    every recorded evaluation, with its mode."""
    lines = []
    for key, result in metrics.items():
        if not isinstance(result, dict) or "summary" not in result:
            continue
        names = ("ndcg@10", "graded_ndcg@10", "recall@20", "mrr")
        if result["mode"] != "full-ranking":  # papers report HR@10 beside NDCG@10
            names = ("ndcg@10", "hitrate@10", "mrr")
        shown = {m: result["summary"][m] for m in names if m in result["summary"]}
        text = ", ".join(f"{m} {format_interval(v)}" for m, v in shown.items())
        lines.append(f"{key} ({result['mode']}): {text}")
        aggregate = result.get("aggregate", {})
        if aggregate.get("liked_share") is not None:
            lines.append(f"  {aggregate['liked_share']:.1%} of the judged {key} views are liked")
        if aggregate.get("nan_scores"):
            lines.append(f"  warning: {int(aggregate['nan_scores'])} NaN scores ranked last")
    return lines


def recommend_from_run(
    run: Run | str | Path,
    user_ids: list[int] | None,
    k: int = 10,
    include_seen: bool = False,
    candidates: str = "evaluation",
) -> pl.DataFrame:
    """Top-k per user from a run's model, joined with video metadata, with each user's whole
    big_matrix history as context. `candidates="evaluation"` ranks what the run's evaluation
    ranked (small_matrix videos under the KuaiRec protocol); `"all"` every video of the data."""
    import numpy as np

    from shortrec.data.histories import Histories
    from shortrec.models.recommend import recommend, with_video_names

    run = as_run(run)
    if candidates not in ("evaluation", "all"):
        raise ValueError(f"--candidates must be 'evaluation' or 'all', got {candidates!r}")
    model = run.model()
    data = run.data()
    if candidates == "evaluation":
        candidate_ids = run.split(data).candidate_video_ids
    else:
        every = [data.big_matrix["video_id"], data.small_matrix["video_id"]]
        candidate_ids = np.unique(pl.concat(every).to_numpy())
    histories = Histories.from_frame(data.big_matrix)
    users = np.asarray(user_ids if user_ids is not None else histories.user_ids, dtype=np.int64)
    table = recommend(model, users, histories, candidate_ids, k, exclude_seen=not include_seen)
    return with_video_names(table, data.videos).sort("user_id", "rank")

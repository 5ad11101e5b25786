"""Runs: one folder per trained model with its config, log, metrics and artifacts.

    runs/<time>-<model>-<id>/
        config.json          RunConfig: model, hyperparameters, data, protocol, like rule
        log.txt              what happened, with timings
        metrics.json         {"tune": ..., "test": ..., "fit": the model's fit_report_,
                              "train_seconds": ..., "peak_rss_mb": ...}
        per_user_<set>.parquet   per-user metrics, for paired comparisons
        model/               the saved Recommender (load with `load_run`)

The test set is opened only when asked (`evaluate_run(..., "test")`), and every evaluation
is recorded with its mode (full ranking or sampled) so no number loses its label.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

import shortrec
from shortrec.data.dataset import KuaiRecData, load_prepared
from shortrec.data.labels import LikeRule
from shortrec.data.schema import PREPARED_INTERACTION_COLUMNS
from shortrec.data.splits import Split, leave_last_out_split, make_split, temporal_split
from shortrec.evaluation.extras import candidate_recall, regression_errors
from shortrec.evaluation.protocol import Evaluation, evaluate
from shortrec.io import atomic_write_text
from shortrec.models import model_class
from shortrec.models.base import (
    CandidateGenerator,
    FitContext,
    Recommender,
    TrainingData,
    WatchRatioPredictor,
    load_model,
)
from shortrec.training.distributed import world


@dataclass
class RunConfig:
    model: str
    params: dict
    data_dir: str
    protocol: str = "kuairec"
    like_rule: LikeRule = field(default_factory=LikeRule)
    ks: list[int] = field(default_factory=lambda: [10, 20, 50])
    sampled: int | None = None  # N negatives per positive: paper reproduction only
    seed: int = 0
    label: str = ""  # names a variant on leaderboards (e.g. "sasrec-softmax"); default: model
    shortrec_version: str = shortrec.__version__

    @property
    def display_name(self) -> str:
        return self.label or self.model

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)

    @property
    def comparable_key(self) -> tuple[str, str, str]:
        """Runs are comparable only on the same data, protocol and like rule."""
        return (str(Path(self.data_dir).resolve()), self.protocol, str(self.like_rule))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in raw.items() if k in known})
        if isinstance(config.like_rule, dict):
            config.like_rule = LikeRule(**config.like_rule).unfitted()
        return config


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


def new_run_dir(runs_dir: str | Path, model: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(runs_dir) / f"{stamp}-{model}-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    return run_dir


def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"shortrec.run.{run_dir.name}")
    log.setLevel(logging.INFO)
    if not log.handlers:
        handler = logging.FileHandler(run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log


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
) -> Path | None:
    """Fit the configured model on the protocol's train split, save it, evaluate it.

    `data`/`split`/`training` may be passed in when training many models on the same
    release; `on_epoch_end(epoch, validation_score)` reaches models that report per-epoch
    validation scores (the tuner uses it to prune). Under torchrun (`--nproc`), every rank
    trains and only rank 0 writes and evaluates the run; the others return None."""
    if training is None:
        data = data if data is not None else load_data(config.data_dir)
        split = split if split is not None else split_for(data, config.protocol)
        training = training_data(data, split, config.like_rule)
    elif split is None:
        raise ValueError("train_run: a prebuilt `training` needs its `split`")
    job = world()
    if job.active:
        if not model_class(config.model).distributed:
            raise ValueError(f"{config.model} does not train data-parallel (WORLD_SIZE > 1)")
        if not job.is_main:  # the other ranks only help train: rank 0 owns the run folder
            build_model(config).fit(training, FitContext(progress=False))
            return None
    run_dir = run_dir or new_run_dir(runs_dir, config.model)
    log = _logger(run_dir)
    model = build_model(config)
    config.params = model.params()
    # What the labels really followed (a log without watch ratios calls every view liked).
    config.like_rule = training.like_rule.unfitted()
    atomic_write_text(run_dir / "config.json", config.to_json())
    log.info("split %s: %s", config.protocol, split.summary())
    context = FitContext(
        checkpoint_dir=run_dir / "checkpoints", progress=progress, on_epoch_end=on_epoch_end
    )
    started = time.perf_counter()
    model.fit(training, context)
    train_seconds = time.perf_counter() - started
    log.info("fit %s in %.1f s", config.model, train_seconds)
    model.save(run_dir / "model")
    metrics = {
        "train_seconds": train_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "fit": dict(model.fit_report_),
    }
    _write_metrics(run_dir, metrics)
    for which in evaluate_on:
        evaluate_run(
            run_dir, which, model=model, split=split, progress=progress,
            like_rule=training.like_rule,
        )  # fmt: skip
    return run_dir


def load_run(run_dir: str | Path) -> tuple[Recommender, RunConfig]:
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    return load_model(run_dir / "model"), RunConfig.from_json(config_path.read_text())


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_metrics(run_dir: Path, metrics: dict) -> None:
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))


def evaluate_run(
    run_dir: str | Path,
    which: str = "tune",
    sampled: int | None = None,
    model: Recommender | None = None,
    split: Split | None = None,
    progress: bool = True,
    like_rule: LikeRule | None = None,
) -> Evaluation:
    """Evaluate a run's model on its tune or test set and record the result in the run.
    `like_rule`: the run's rule already fitted on `split.train` (fitted here otherwise)."""
    run_dir = Path(run_dir)
    loaded, config = load_run(run_dir) if model is None else (model, None)
    config = config or RunConfig.from_json((run_dir / "config.json").read_text())
    split = split or split_for(load_data(config.data_dir), config.protocol)
    # The rule fitted on the split's training views (the run's own, when it passes it in).
    like_rule = like_rule or config.like_rule.unfitted().fit(split.train)
    sampled = sampled if sampled is not None else config.sampled
    sampled = sampled or None  # 0 forces full ranking for a run trained in sampled mode
    result = evaluate(
        loaded, split, which, like_rule, ks=tuple(config.ks), sampled=sampled,
        seed=config.seed, progress=progress,
    )  # fmt: skip
    key = which if result.mode == "full-ranking" else f"{which}:{result.mode}"
    metrics = read_metrics(run_dir)
    metrics[key] = result.to_dict()
    if result.mode == "full-ranking":
        metrics.update(_extra_metrics(loaded, split, which, like_rule))
    _write_metrics(run_dir, metrics)
    with_suffix = key.replace(":", "_")
    result.per_user.write_parquet(run_dir / f"per_user_{with_suffix}.parquet")
    _logger(run_dir).info("evaluated on %s (%s)", which, result.mode)
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


def per_user_metrics(run_dir: str | Path, key: str) -> pl.DataFrame:
    path = Path(run_dir) / f"per_user_{key.replace(':', '_')}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{run_dir} has no {key} evaluation; run `shortrec evaluate {run_dir} --on {key}`"
        )
    return pl.read_parquet(path)


def list_runs(runs_dir: str | Path) -> list[Path]:
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        return []
    return sorted(p for p in runs_dir.iterdir() if (p / "config.json").exists())


def recommend_from_run(
    run_dir: str | Path,
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

    model, config = load_run(run_dir)
    data = load_data(config.data_dir)
    if candidates == "evaluation":
        candidate_ids = split_for(data, config.protocol).candidate_video_ids
    elif candidates == "all":
        every = [data.big_matrix["video_id"], data.small_matrix["video_id"]]
        candidate_ids = np.unique(pl.concat(every).to_numpy())
    else:
        raise ValueError(f"--candidates must be 'evaluation' or 'all', got {candidates!r}")
    histories = Histories.from_frame(data.big_matrix)
    users = np.asarray(user_ids if user_ids is not None else histories.user_ids, dtype=np.int64)
    table = recommend(model, users, histories, candidate_ids, k, exclude_seen=not include_seen)
    return with_video_names(table, data.videos).sort("user_id", "rank")

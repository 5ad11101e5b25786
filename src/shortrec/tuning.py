"""Fair hyperparameter search with Optuna: validation only, persistent, resumable, shared.

Fairness: every trial is selected on the tune set (never test), and `trials` is the budget of
the whole study (finished trials, counted in the storage), so every model gets the same budget
and a study killed after 7 of 20 trials runs the 13 missing ones when the command is repeated.
The study lives in a database (SQLite by default, any SQLAlchemy URL such as PostgreSQL), so
several machines can work on one study; a trial whose worker died is noticed by its stale
heartbeat, marked failed and retried with the same hyperparameters.

Several workers on one study: the budget is exact (a trial holds one of its slots from the
moment it is numbered, see `_claim_slot`), the draws are seeded per trial number so workers
started together do not propose the same hyperparameters (`TrialSeededSampler`), and workers
that create the database schema at the same moment do not fail (`open_storage`).

Conventions for models:
- Search space: `Recommender.search_space(trial) -> dict` returns hyperparameters (dataclass
  field names -> values). A model that does not override it has nothing to tune: its study
  gets a single trial.
- Pruning: the tuner passes `FitContext(on_epoch_end=...)` to `fit`; a model that declares
  `reports_epochs` reports its validation NDCG@10 after each validated epoch
  (`training/loop.py`); the hook raises `optuna.TrialPruned` when the trial is hopeless.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

try:
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStaleTrial

    STALE_CALLBACK_ARGUMENT = "heartbeat_stale_trial_callback"
except ImportError:  # optuna < 4.9 names it differently
    from optuna.storages import RetryFailedTrialCallback as RetryStaleTrial

    STALE_CALLBACK_ARGUMENT = "failed_trial_callback"

from shortrec.data.dataset import KuaiRecData
from shortrec.data.splits import Split
from shortrec.io import atomic_write_text
from shortrec.models import default_models, model_class
from shortrec.models.base import Recommender, TrainingData
from shortrec.runs import (
    Experiment,
    Run,
    RunConfig,
    apply_preset,
    load_data,
    new_run_dir,
    split_for,
    train_run,
    training_data,
)
from shortrec.tracking import Tracker, open_tracker

TRIAL_FILE = "trial.json"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Trials that hold a slot of the study's budget: finished, or running on some worker.
HOLDING = (*FINISHED, TrialState.RUNNING)


class BudgetSpent(Exception):
    """This trial was numbered after other workers had claimed the study's whole budget."""


# Exceptions that end one trial (a hopeless configuration, a surplus trial) but not the study.
TRIAL_ERRORS = (ValueError, RuntimeError, FloatingPointError, ArithmeticError, BudgetSpent)
_SCHEMA_ATTEMPTS = 5


@dataclass
class TuneConfig:
    """One study: which model, on which experiment, with which budget.

    `preset`: a named preset of the model, the base every trial's suggestions override; the
    run options it names (protocol, like rule) become the study's, except those listed in
    `keep`. Trials are always selected on the full-ranking tune set."""

    model: str
    experiment: Experiment
    trials: int = 20  # finished trials of the whole study, over every worker and restart
    timeout: float | None = None  # seconds for this invocation
    storage: str | None = None  # database URL; None -> sqlite:///<runs_dir>/tuning.db
    study_name: str | None = None  # None -> <model>-<data name>-<protocol>
    metric: str = "ndcg@10"
    runs_dir: str = "runs"
    seed: int = 0
    heartbeat_interval: int = 60
    grace_period: int | None = None  # None -> optuna's default, twice the interval
    track: str | None = None  # "mlflow[:URI]": every trial's run mirrored (shortrec.tracking)
    preset: str | None = None
    keep: tuple[str, ...] = ()
    preset_params: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.experiment, dict):
            self.experiment = Experiment(**self.experiment)
        self.preset_params, self.experiment, _ = apply_preset(
            self.model, self.preset, {}, self.experiment, keep=(*self.keep, "sampled")
        )

    @property
    def resolved_storage(self) -> str:
        return self.storage or default_storage(self.runs_dir)

    @property
    def resolved_study_name(self) -> str:
        experiment = self.experiment
        return self.study_name or default_study_name(
            self.model, experiment.data_dir, experiment.protocol
        )


def default_storage(runs_dir: str | Path) -> str:
    return f"sqlite:///{Path(runs_dir) / 'tuning.db'}"


def default_study_name(model: str, data_dir: str | Path, protocol: str) -> str:
    return f"{model}-{Path(data_dir).name}-{protocol}"


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> RDBStorage:
    """An Optuna RDB storage; with a heartbeat, trials of dead workers are failed and retried.

    Workers started together on an empty database all create Optuna's tables; the losers of
    that race (a duplicate type or table) retry and find the schema in place."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Several local workers share one SQLite file: wait for its lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        heartbeat = {}
        if heartbeat_interval:
            heartbeat = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": grace_period,
                STALE_CALLBACK_ARGUMENT: RetryStaleTrial(max_retry=2),
            }
        attempt = 1
        while True:
            try:
                return RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            except (IntegrityError, ProgrammingError):
                if attempt == _SCHEMA_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
                attempt += 1
            except OperationalError as error:
                raise ValueError(
                    f"cannot open the tuning database {redacted(url)}: {error.orig}"
                ) from error


def redacted(url: str) -> str:
    """The storage URL without its password, fit for files and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def search_space(cls: type[Recommender], trial: optuna.Trial) -> dict:
    """The hyperparameters `cls` proposes for `trial` ({} for a model with nothing to tune)."""
    params = cls.search_space(trial)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(
            f"{cls.__name__}.search_space returned {unknown}, which are not hyperparameters "
            f"of the model; expected some of {sorted(fields)}"
        )
    return params


def pruning_callback(trial: optuna.Trial) -> Callable[[int, float], None]:
    """The `on_epoch_end` hook: reports each epoch's validation score, prunes hopeless trials."""

    def on_epoch_end(epoch: int, validation_score: float) -> None:
        trial.report(float(validation_score), step=int(epoch))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} (validation {validation_score})")

    return on_epoch_end


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """TPE whose random draws are seeded by (seed, trial number).

    Workers sharing a study start together from the same seed; a sampler seeded once per
    worker would make them propose the same hyperparameters. Trial numbers are unique in a
    study, so seeding each trial by its number keeps the draws distinct across workers, one
    worker reproducible, and a resumed study from replaying its first draws. TPE itself reads
    every past trial from the storage, so a fresh one per trial loses nothing; its constant
    liar keeps workers away from the points other workers are running."""

    def __init__(self, seed: int):
        self._seed = seed
        self._tpe = self._sampler(0)

    def _sampler(self, number: int) -> optuna.samplers.TPESampler:
        seed = int(np.random.SeedSequence([self._seed, number]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def before_trial(self, study, trial) -> None:
        self._tpe = self._sampler(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def load_study(config: TuneConfig) -> optuna.Study | None:
    """The study of `config` if its storage holds one, else None (nothing is created)."""
    url = config.resolved_storage
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    try:
        return optuna.load_study(study_name=config.resolved_study_name, storage=open_storage(url))
    except KeyError:
        return None


def best_hyperparameters(study: optuna.Study) -> dict | None:
    """Hyperparameters of the study's best finished trial; None when none has finished."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    return dict(best.user_attrs.get("hyperparameters", best.params))


def tune(config: TuneConfig, data: KuaiRecData | None = None) -> optuna.Study:
    """Run trials until the study holds `config.trials` finished ones (or `timeout` passes).

    Each trial trains one run in `runs_dir` (tagged with `trial.json`) and is scored by its
    tune-set `metric`; the test set is never opened here."""
    cls = model_class(config.model)
    tracker = open_tracker(config.track)  # fails before any trial when MLflow is missing
    experiment = config.experiment
    data = data if data is not None else load_data(experiment.resolved_data_dir)
    split = split_for(data, experiment.protocol)
    training = training_data(data, split, experiment.like_rule)
    storage = open_storage(config.resolved_storage, config.heartbeat_interval, config.grace_period)
    study = optuna.create_study(
        study_name=config.resolved_study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )
    _check_same_study(study, config)
    study.sampler = TrialSeededSampler(config.seed)
    budget = config.trials if cls.is_tunable() else min(config.trials, 1)
    remaining = budget - finished_trials(study)
    if remaining <= 0:
        return study
    study.optimize(
        lambda trial: _objective(trial, config, cls, split, training, budget, tracker),
        n_trials=remaining,
        timeout=config.timeout,
        catch=TRIAL_ERRORS,
        # Stop once finished and running trials (of every worker) fill the budget.
        callbacks=[optuna.study.MaxTrialsCallback(budget, states=HOLDING)],
    )
    return study


def _check_same_study(study: optuna.Study, config: TuneConfig) -> None:
    """A study name reused for another model, data set or metric would mix incomparable
    values: record what the study is on its creation and refuse a mismatch afterwards."""
    identity = {
        "model": config.model,
        "data": Path(config.experiment.data_dir).name,
        "protocol": config.experiment.protocol,
        "metric": config.metric,
        "like_rule": str(config.experiment.like_rule),
    }
    recorded = study.user_attrs
    if not recorded:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        return
    for key, value in identity.items():
        if key in recorded and recorded[key] != value:
            raise ValueError(
                f"study {study.study_name!r} was created with {key}={recorded[key]!r}, "
                f"not {value!r}; choose another --study-name"
            )


def _claim_slot(trial: optuna.Trial, budget: int) -> None:
    """Keep the budget exact across workers. The storage numbers trials in the order workers
    ask for them (under a lock), so the first `budget` trials holding a slot are the study's;
    a trial numbered later (two workers asked for the last slot at once) is surplus: it stops
    its worker and is recorded failed, marked `surplus`, without training anything. A slot
    freed by a trial that fails is taken by the next trial asked for."""
    holding = trial.study.get_trials(deepcopy=False, states=HOLDING)
    if sum(t.number <= trial.number for t in holding) > budget:
        trial.set_user_attr("surplus", True)
        trial.study.stop()
        raise BudgetSpent(
            f"trial {trial.number} not run: the study's budget of {budget} trials was "
            "already taken by other workers"
        )


def _objective(
    trial: optuna.Trial, config: TuneConfig, cls: type[Recommender], split: Split,
    training: TrainingData, budget: int, tracker: Tracker | None = None,
) -> float:  # fmt: skip
    _claim_slot(trial, budget)
    params = {**config.preset_params, **search_space(cls, trial)}
    trial.set_user_attr("hyperparameters", params)
    run_config = RunConfig(
        model=config.model, experiment=config.experiment, params=params, seed=config.seed,
        preset=config.preset,
    )  # fmt: skip
    run_dir = new_run_dir(config.runs_dir, config.model)
    trial.set_user_attr("run_dir", str(run_dir))
    tag = {
        "study": trial.study.study_name,
        "trial": trial.number,
        "storage": redacted(config.resolved_storage),
        "metric": config.metric,
    }
    _write_trial_tag(run_dir, tag, "RUNNING")
    try:
        value = _train_trial_run(
            run_config, run_dir, split, training, trial, config.metric, tracker, tag
        )
    except optuna.TrialPruned:
        _write_trial_tag(run_dir, tag, "PRUNED")
        raise
    except Exception:
        _write_trial_tag(run_dir, tag, "FAIL")
        raise
    _write_trial_tag(run_dir, tag, "COMPLETE", value)
    return value


def _write_trial_tag(run_dir: Path, tag: dict, state: str, value: float | None = None) -> None:
    atomic_write_text(run_dir / TRIAL_FILE, json.dumps({**tag, "state": state, "value": value}))


def _train_trial_run(
    config: RunConfig, run_dir: Path, split: Split, training: TrainingData, trial: optuna.Trial,
    metric: str, tracker: Tracker | None = None, tag: dict | None = None,
) -> float:  # fmt: skip
    """`runs.train_run` for one trial on the study's split, with the pruning hook set (and
    the run mirrored to `tracker`, tagged with its study and trial, once it finished)."""
    train_run(
        config, split=split, training=training, run_dir=run_dir,
        on_epoch_end=pruning_callback(trial), progress=False, track=tracker,
        track_tags={f"tuning.{k}": v for k, v in (tag or {}).items()},
    )  # fmt: skip
    summary = Run(run_dir).metrics["tune"]["summary"]
    if metric not in summary:
        raise KeyError(
            f"--metric {metric!r} is not a tune-set metric; choose one of "
            f"{', '.join(sorted(summary))}"
        )
    value = summary[metric]["mean"]
    if math.isnan(value):
        raise ValueError(f"{metric} on the tune set is NaN: no tune user has a liked video")
    return value


def trials_table(study: optuna.Study) -> list[dict]:
    """One row per trial: number, state, value, hyperparameters, run folder."""
    return [
        {
            "trial": t.number,
            "state": t.state.name,
            "value": t.value,
            "hyperparameters": t.user_attrs.get("hyperparameters", t.params),
            "run": Path(t.user_attrs.get("run_dir", "")).name,
        }
        for t in study.get_trials(deepcopy=False)
    ]


def tune_models(
    models: list[str], experiment: Experiment, data: KuaiRecData | None = None, **settings: Any
) -> Iterator[optuna.Study]:
    """`tune` each of `models` (`["all"]`: every model but the reference ones) on
    `experiment` with the other `TuneConfig` fields from `settings`, reading the data once;
    yields each study when its trials are done."""
    names = default_models() if models == ["all"] else models
    if settings.get("study_name") and len(names) > 1:
        raise ValueError("--study-name needs a single model (each model has its own study)")
    configs = [TuneConfig(model=name, experiment=experiment, **settings) for name in names]
    data = data if data is not None else load_data(experiment.resolved_data_dir)
    for config in configs:
        yield tune(config, data=data)


def study_summary(study: optuna.Study, metric: str) -> str:
    """One line: the study's finished trials and its best tune-set value and hyperparameters."""
    best = best_hyperparameters(study)
    value = "-" if best is None else f"{study.best_value:.4f}"
    return (
        f"{study.study_name}: {finished_trials(study)} finished trials, "
        f"best tune {metric} {value} with {best}"
    )

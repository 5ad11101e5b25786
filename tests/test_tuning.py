"""Tuning: validation-only objective, resumable shared studies, stale trials, pruning."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import ClassVar

import optuna
import pytest
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.models.baselines import PopularRecommender
from shortrec.runs import Experiment, Run, list_runs
from shortrec.tuning import (
    TRIAL_FILE,
    TuneConfig,
    best_hyperparameters,
    finished_trials,
    load_study,
    open_storage,
    pruning_callback,
    search_space,
    tune,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _config(tiny_release, runs_dir, **overrides) -> TuneConfig:
    return TuneConfig(
        model="recent-popular",
        experiment=Experiment(str(tiny_release)),
        runs_dir=str(runs_dir),
        **overrides,
    )


def test_a_second_call_continues_the_same_study(tiny_release, tmp_path):
    first = tune(_config(tiny_release, tmp_path, trials=2))
    assert finished_trials(first) == 2
    # A new call (as after a kill) with the same storage completes the study's budget.
    second = tune(_config(tiny_release, tmp_path, trials=4))
    assert second.study_name == first.study_name == "recent-popular-world-kuairec"
    assert [t.number for t in second.trials] == [0, 1, 2, 3]
    # The resumed sampler does not replay the first call's draws.
    values = [t.params["half_life_days"] for t in second.trials]
    assert len(set(values)) == 4
    # A third call with the budget already met runs nothing.
    assert len(tune(_config(tiny_release, tmp_path, trials=4)).trials) == 4


def test_every_trial_is_a_run_tagged_with_its_study_and_never_sees_test(tiny_release, tmp_path):
    study = tune(_config(tiny_release, tmp_path, trials=3))
    runs = list_runs(tmp_path)
    assert len(runs) == 3
    tags = sorted(
        (json.loads((r / TRIAL_FILE).read_text()) for r in runs), key=lambda t: t["trial"]
    )
    assert [t["trial"] for t in tags] == [0, 1, 2]
    assert {t["study"] for t in tags} == {study.study_name}
    assert {t["state"] for t in tags} == {"COMPLETE"}
    for run, trial in zip(
        sorted(runs, key=lambda r: json.loads((r / TRIAL_FILE).read_text())["trial"]),
        study.trials,
        strict=True,
    ):
        metrics = Run(run).metrics
        assert "tune" in metrics and "test" not in metrics
        assert not (run / "per_user_test.parquet").exists()
        assert metrics["tune"]["summary"]["ndcg@10"]["mean"] == pytest.approx(trial.value)
        config = json.loads((run / "config.json").read_text())
        assert config["params"]["half_life_days"] == trial.params["half_life_days"]


def test_best_hyperparameters_come_from_the_best_trial(tiny_release, tmp_path):
    study = tune(_config(tiny_release, tmp_path, trials=3))
    best = max(study.trials, key=lambda t: t.value)
    assert best_hyperparameters(study) == {"half_life_days": best.params["half_life_days"]}
    assert load_study(_config(tiny_release, tmp_path)).study_name == study.study_name
    assert load_study(_config(tiny_release, tmp_path, study_name="absent")) is None


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # study.ask() in the set-up
def test_a_trial_left_running_by_a_killed_worker_is_failed_and_retried(tiny_release, tmp_path):
    url = f"sqlite:///{tmp_path / 'tuning.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(
        study_name="recent-popular-world-kuairec", storage=storage, direction="maximize"
    )
    orphan = study.ask()
    orphan.suggest_float("half_life_days", 0.25, 30.0, log=True)
    storage.record_heartbeat(orphan._trial_id)  # the worker beat once, then died
    time.sleep(2.5)
    resumed = tune(_config(tiny_release, tmp_path, trials=2, heartbeat_interval=1, grace_period=1))
    states = {t.number: t.state for t in resumed.trials}
    assert states[0] == optuna.trial.TrialState.FAIL
    assert finished_trials(resumed) == 2
    retried = [
        t
        for t in resumed.trials
        if t.number > 0 and t.params["half_life_days"] == orphan.params["half_life_days"]
    ]
    assert retried and retried[0].state == optuna.trial.TrialState.COMPLETE


def test_a_model_without_search_space_gets_a_single_trial(tiny_release, tmp_path):
    study = tune(
        TuneConfig(
            model="popular",
            experiment=Experiment(str(tiny_release)),
            runs_dir=str(tmp_path),
            trials=5,
        )
    )
    assert len(study.trials) == 1


def test_a_study_name_cannot_be_reused_for_another_metric(tiny_release, tmp_path):
    tune(_config(tiny_release, tmp_path, trials=1))
    with pytest.raises(ValueError, match="metric"):
        tune(_config(tiny_release, tmp_path, trials=2, metric="recall@20"))


def test_search_space_must_name_hyperparameters():
    @dataclasses.dataclass
    class Misnamed(PopularRecommender):
        @classmethod
        def search_space(cls, trial):
            return {"learning_rat": trial.suggest_float("learning_rat", 0.1, 1.0)}

    with pytest.raises(ValueError, match="learning_rat"):
        search_space(Misnamed, optuna.trial.FixedTrial({"learning_rat": 0.5}))
    assert search_space(PopularRecommender, optuna.trial.FixedTrial({})) == {}


def test_pruning_callback_stops_a_trial_below_the_median():
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    good = study.ask()
    for epoch in range(3):
        pruning_callback(good)(epoch, 0.9)
    study.tell(good, 0.9)
    bad = study.ask()
    with pytest.raises(optuna.TrialPruned):
        pruning_callback(bad)(0, 0.1)


@dataclasses.dataclass
class EpochModel(PopularRecommender):
    """A popularity model that reports a fixed validation score per epoch (for the tuner)."""

    name: ClassVar[str] = "epoch-test"
    reports_epochs: ClassVar[bool] = True
    quality: float = 0.5

    @classmethod
    def search_space(cls, trial):
        return {"quality": trial.suggest_float("quality", 0.0, 1.0)}

    def fit(self, data, context=None):
        for epoch in range(4):
            self.report_epoch(context, epoch, self.quality)
        return super().fit(data, context)


def test_models_reporting_epochs_are_pruned(tiny_release, tmp_path, monkeypatch):
    from shortrec.models import REGISTRY

    monkeypatch.setitem(REGISTRY, "epoch-test", "test_tuning:EpochModel")
    study = tune(
        TuneConfig(
            model="epoch-test",
            experiment=Experiment(str(tiny_release)),
            runs_dir=str(tmp_path),
            trials=12,
        )
    )
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "no trial below the median was pruned"
    assert finished_trials(study) == 12
    for trial in pruned:
        run = tmp_path / trial.user_attrs["run_dir"].split("/")[-1]
        assert json.loads((run / TRIAL_FILE).read_text())["state"] == "PRUNED"
        assert not (run / "model").exists()


def test_cli_tune_resumes_and_reports(tiny_release, tmp_path):
    runner = CliRunner()
    args = ["tune", "recent-popular", "--data", str(tiny_release), "--runs-dir", str(tmp_path)]
    first = runner.invoke(app, [*args, "--trials", "2"])
    assert first.exit_code == 0, first.output
    assert "2 finished trials" in first.output
    second = runner.invoke(app, [*args, "--trials", "3"])
    assert second.exit_code == 0, second.output
    assert "recent-popular-world-kuairec: 3 finished trials" in second.output
    assert (tmp_path / "tuning.db").exists()
    bad = runner.invoke(app, ["tune", "recent-popular", "--data", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2
    assert "not a prepared KuaiRec release" in bad.output


def test_every_declared_search_space_names_real_hyperparameters():
    from shortrec.models import REGISTRY, model_class

    declared = 0
    for name in REGISTRY:
        cls = model_class(name)
        if not cls.is_tunable():
            continue
        study = optuna.create_study()
        params = search_space(cls, study.ask())  # raises on a name that is not a field
        assert params, f"{name}.search_space proposes nothing"
        assert cls(**params).params().items() >= params.items()
        declared += 1
    assert declared >= 2  # at least the tunable baseline and EASE


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(tiny_release, tmp_path, postgres_database):
    """Two `shortrec tune` processes (as on two machines) on one PostgreSQL study: together
    they finish exactly the budget, every trial once, with distinct draws, and both work."""
    import subprocess
    import sys

    budget = 16
    command = [sys.executable, "-m", "shortrec.cli", "tune", "recent-popular", "--data",
               str(tiny_release), "--trials", str(budget), "--storage", postgres_database,
               "--study-name", "shared"]  # fmt: skip
    workers = [
        subprocess.Popen(
            [*command, "--runs-dir", str(tmp_path / f"worker{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
        assert "shared: " in output and "finished trials" in output
    study = optuna.load_study(study_name="shared", storage=postgres_database)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == budget
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    # A trial one worker started after the other had claimed the last slot is not run.
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs["surplus"] for t in others)
    draws = [t.params["half_life_days"] for t in finished]
    assert len(set(draws)) == budget, "two trials drew the same hyperparameters"
    # Every finished trial is exactly one COMPLETE run folder, on the worker that ran it.
    tags = {
        i: [
            json.loads((run / TRIAL_FILE).read_text()) for run in list_runs(tmp_path / f"worker{i}")
        ]
        for i in range(2)
    }
    completed = sorted(t["trial"] for i in tags for t in tags[i] if t["state"] == "COMPLETE")
    assert completed == sorted(t.number for t in finished)
    assert all(any(t["state"] == "COMPLETE" for t in tags[i]) for i in range(2)), tags


def test_a_trial_asked_for_after_the_budget_is_taken_does_not_run(tiny_release, tmp_path):
    """Two trials running on other workers hold a budget of 2: this worker's trial is surplus."""
    url = f"sqlite:///{tmp_path / 'tuning.db'}"
    study = optuna.create_study(
        study_name="recent-popular-world-kuairec", storage=open_storage(url), direction="maximize"
    )
    others = [study.ask() for _ in range(2)]
    resumed = tune(_config(tiny_release, tmp_path, trials=2))
    surplus = resumed.trials[2]
    assert surplus.state == optuna.trial.TrialState.FAIL and surplus.user_attrs["surplus"]
    assert len(resumed.trials) == 3 and list_runs(tmp_path) == []
    for trial in others:  # the other workers finish: the study holds exactly its budget
        study.tell(trial, 0.5)
    assert finished_trials(resumed) == 2

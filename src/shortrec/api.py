"""shortrec from Python: the functions `import shortrec as sr` offers.

    import shortrec as sr
    data = sr.synth(scale="small", seed=0)          # or sr.load(DIR), sr.import_log(...)
    run = sr.train("ease", data, l2=1300, runs_dir="runs", test=True)
    run.metrics["test"]["summary"]["ndcg@10"]       # {"mean", "low", "high", "n"}
    run.summary("test")                             # the same as a frame, one row per metric
    run.recommend([13], k=10)                       # a frame with captions and categories
    sr.leaderboard("runs", on="test")               # the leaderboard as a frame
    sr.compare(run_a, run_b, on="test")             # paired differences B - A

This is the code the `shortrec` command runs: `shortrec train` calls `RunConfig.build` and
`runs.train_run` as `sr.train` does, so hyperparameters are checked the same way and errors
carry the same messages (ValueError / FileNotFoundError here, `error: ...` there). Progress bars
are tqdm's `auto` ones: widgets in a notebook, text in a terminal.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from shortrec import runs
from shortrec.data.labels import LikeRule

__all__ = [
    "Dataset",
    "Run",
    "benchmark",
    "compare",
    "export_recbole",
    "import_log",
    "leaderboard",
    "load",
    "list_runs",
    "open_run",
    "simulate",
    "synth",
    "train",
    "tune",
]

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


# --- data ----------------------------------------------------------------------------------


class Dataset:
    """A prepared folder (a KuaiRec release, a synthetic world, an imported log), loaded on
    first use and kept, so training several models reads it once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        self._tables = None

    @property
    def tables(self):
        """The release's tables (`KuaiRecData`: big_matrix, small_matrix, videos, ...)."""
        if self._tables is None:
            from shortrec.runs import load_data

            self._tables = load_data(self.path)
        return self._tables

    @property
    def views(self) -> pl.DataFrame:
        """Every view of big_matrix (the training log)."""
        return self.tables.big_matrix

    @property
    def videos(self) -> pl.DataFrame:
        return self.tables.videos

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r})"


def load(path: str | Path) -> Dataset:
    """A prepared folder (`shortrec data prepare` / `data import` / `data synth` + prepare),
    or a SASRec-format `.txt` file."""
    from shortrec.data.dataset import read_manifest

    path = Path(path)
    if path.suffix != ".txt":
        read_manifest(path)  # the CLI's message when it is not a prepared folder
    return Dataset(path)


def synth(
    scale: str = "small", seed: int = 0, workdir: str | Path | None = None, log=print
) -> Dataset:
    """The synthetic KuaiRec world (the embedded default data), written and prepared once in
    `workdir` (default `data/synth-SCALE-SEED`): what `shortrec quickstart` trains on.
    `scale`: tiny | small | full."""
    from shortrec.quickstart import ensure_world

    workdir = Path(workdir) if workdir is not None else Path("data") / f"synth-{scale}-{seed}"
    return Dataset(ensure_world(workdir, scale, seed, log=log or (lambda _: None)))


def import_log(
    source: str | Path,
    out: str | Path,
    format: str = "table",
    *,
    user: str = "user_id",
    item: str = "item_id",
    time: str | None = None,
    time_unit: str = "s",
    order: str | None = None,
    watch_ratio: str | None = None,
    play_duration: str | None = None,
    video_duration: str | None = None,
    rating: str | None = None,
    rating_max: float = 5.0,
    label: str | None = None,
    separator: str = ",",
) -> Dataset:
    """`shortrec data import`: any interaction log (a CSV/Parquet table, a RecBole atomic
    file, a SASRec text file) written as a prepared folder. The returned dataset's `report`
    says what was found and which like rule suits it."""
    from shortrec.data.importer import ColumnMapping
    from shortrec.data.importer import import_log as import_into

    mapping = ColumnMapping(
        user=user, item=item, time=time, time_unit=time_unit, order=order, watch_ratio=watch_ratio,
        play_duration=play_duration, video_duration=video_duration, rating=rating,
        rating_max=rating_max, label=label,
    )  # fmt: skip
    report = import_into(Path(source), Path(out), format, mapping, separator)
    dataset = Dataset(out)
    dataset.report = report
    return dataset


def export_recbole(data: Dataset | str | Path, out: str | Path, name: str | None = None):
    """`shortrec data export --format recbole`: the atomic files RecBole reads; returns them."""
    from shortrec.data.importer import export_recbole as export

    return export(_data_path(data), Path(out), name)


def _data_path(data: Dataset | str | Path) -> Path:
    return data.path if isinstance(data, Dataset) else Path(data)


# --- runs ----------------------------------------------------------------------------------


class Run(runs.Run):
    """A trained run folder (`shortrec.runs.Run`: `.config`, `.metrics`, `.per_user(on)`,
    `.model()`, `.data_dir`) with the commands that act on one run."""

    def summary(self, on: str = "tune") -> pl.DataFrame:
        """One row per metric of the `on` evaluation: mean and 95% interval."""
        metrics = self.metrics
        if on not in metrics:
            evaluated = ", ".join(k for k, v in metrics.items() if _is_evaluation(v))
            raise ValueError(
                f"{self.path} has no {on!r} evaluation; evaluated: {evaluated or 'none'}"
            )
        rows = [
            {"metric": m, "mean": v["mean"], "low": v["low"], "high": v["high"]}
            for m, v in metrics[on]["summary"].items()
        ]
        return pl.DataFrame(rows)

    def evaluate(self, on: str = "test", sampled: int | None = None, progress: bool = True):
        """`shortrec evaluate`: evaluate on the tune or test set and record it in the run."""
        return runs.evaluate_run(self, on, sampled=sampled, progress=progress)

    def recommend(
        self,
        users: Iterable[int] | None = None,
        k: int = 10,
        include_seen: bool = False,
        candidates: str = "evaluation",
    ) -> pl.DataFrame:
        """`shortrec recommend`: top-k videos per raw user id, with captions and categories
        (`users=None`: every user with a history)."""
        user_ids = None if users is None else [int(u) for u in users]
        return runs.recommend_from_run(
            self, user_ids, k, include_seen=include_seen, candidates=candidates
        )

    def simulate(self, users: str = "test", progress: bool = True, **options):
        """`shortrec simulate`: this run as a feed for every tune/test user; recorded in the run
        as `simulation_<users>`. Options: steps, slate, seed, outcomes, live_events, ..."""
        return simulate(self, users=users, progress=progress, **options)


def _is_evaluation(value: Any) -> bool:
    return isinstance(value, Mapping) and "summary" in value


def open_run(run: runs.Run | str | Path) -> Run:
    """A run folder as a `Run` (with `recommend`, `simulate`, `summary`)."""
    return run if isinstance(run, Run) else Run(run.path if isinstance(run, runs.Run) else run)


def list_runs(runs_dir: str | Path = "runs") -> list[Run]:
    """Every run folder in `runs_dir`, oldest first."""
    return [Run(run.path) for run in runs.list_runs(runs_dir)]


def check_hyperparameters(model: str, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword hyperparameters checked like `shortrec train MODEL`'s flags, before any data is
    read: known names, values of the flag's type (ints where a float is expected become
    floats), then the declared choices and bounds (`validate_hyperparameters`' wording)."""
    from shortrec.models import model_class

    fields = {f.name: f for f in dataclasses.fields(model_class(model)) if f.init}
    unknown = sorted(set(hyperparameters) - set(fields))
    if unknown:
        raise ValueError(
            f"{model} has no hyperparameter(s) {', '.join(unknown)}; "
            f"it has {', '.join(sorted(fields))}"
        )
    checked = {}
    for name, value in hyperparameters.items():
        expected = hyperparameter_type(fields[name])
        flag = "--" + name.replace("_", "-")
        if expected is bool:
            valid = isinstance(value, bool)
        elif expected is int:
            valid = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        elif expected is float:
            valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
        else:
            valid = isinstance(value, str)
        if not valid:
            raise ValueError(
                f"{model} hyperparameter {name} ({flag}) must be {expected.__name__}, got {value!r}"
            )
        checked[name] = expected(value)
    model_class(model)(**checked).validate_hyperparameters()  # choices and bounds, now
    return checked


def hyperparameter_type(field: dataclasses.Field) -> type:
    """The Python type of a hyperparameter, which is also its flag's type."""
    name = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "str")
    return _TYPES.get(name, str)


def train(
    model: str,
    data: Dataset | str | Path = "data/prepared",
    *,
    runs_dir: str | Path = "runs",
    test: bool = False,
    protocol: str | None = None,
    like_rule: LikeRule | str | None = None,
    sampled: int | None = None,
    label: str = "",
    preset: str | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
    track: str | None = None,
    **hyperparameters: Any,
) -> Run:
    """`shortrec train MODEL`: fit on the protocol's train split, evaluate on the tune set
    (and the test set once with `test=True`), and return the run. Hyperparameters are keyword
    arguments named like the flags (`l2=1300` for `--l2 1300`); `track="mlflow[:URI]"` mirrors
    the run to MLflow."""
    config = runs.RunConfig.build(
        model, _data_path(data), check_hyperparameters(model, hyperparameters),
        protocol=protocol, like_rule=like_rule, sampled=sampled, preset=preset, label=label,
    )  # fmt: skip
    if resume is not None:
        runs.check_resumable(resume, config)
    run = runs.train_run(
        config, runs_dir, evaluate_on=("tune", "test") if test else ("tune",),
        data=data.tables if isinstance(data, Dataset) else None, progress=progress,
        run_dir=Path(resume) if resume is not None else None, track=track,
    )  # fmt: skip
    return Run(run.path)


def simulate(run: Run | str | Path, users: str = "test", progress: bool = True, **options):
    """`shortrec simulate`: returns the `SimulationResult` (per-user frame, `intervals()`)."""
    from shortrec.simulation.simulate import ChoiceModel, ExitModel, SimulationConfig, simulate_run

    exit_names = {f.name for f in dataclasses.fields(ExitModel)}
    choice_names = {f.name for f in dataclasses.fields(ChoiceModel)}
    exit_options = {k: options.pop(k) for k in list(options) if k in exit_names}
    choice_options = {k: options.pop(k) for k in list(options) if k in choice_names}
    world = options.pop("world", None)
    config = SimulationConfig(
        users=users, choice=ChoiceModel(**choice_options), exit=ExitModel(**exit_options),
        **options,
    )  # fmt: skip
    return simulate_run(open_run(run), config, world_file=world, progress=progress)


def tune(
    model: str,
    data: Dataset | str | Path = "data/prepared",
    *,
    trials: int = 20,
    metric: str = "ndcg@10",
    runs_dir: str | Path = "runs",
    protocol: str | None = None,
    like_rule: LikeRule | str | None = None,
    preset: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    seed: int = 0,
    track: str | None = None,
):
    """`shortrec tune MODEL`: an Optuna study on the tune set (resumed when it exists); returns
    the study (`best_params`, `trials_dataframe()`); every trial is a run in `runs_dir`."""
    from shortrec.tuning import TuneConfig
    from shortrec.tuning import tune as run_study

    config = TuneConfig(
        model=model, experiment=_experiment(data, protocol, like_rule), trials=trials,
        timeout=timeout, storage=storage, study_name=study_name, metric=metric,
        runs_dir=str(runs_dir), seed=seed, preset=preset, keep=_given(protocol, like_rule),
        track=track,
    )  # fmt: skip
    return run_study(config, data=data.tables if isinstance(data, Dataset) else None)


def benchmark(
    data: Dataset | str | Path = "data/prepared",
    *,
    models: Iterable[str] | None = None,
    seeds: int = 3,
    metric: str = "ndcg@10",
    runs_dir: str | Path = "runs",
    out: str | Path = "benchmark",
    protocol: str | None = None,
    like_rule: LikeRule | str | None = None,
    preset: str | None = None,
    from_study: bool = True,
    isolate: bool = True,
    track: str | None = None,
) -> pl.DataFrame:
    """`shortrec benchmark`: every model's chosen configuration x seeds, test once; writes
    benchmark.md/json into `out` and returns one row per model (test means with intervals,
    paired difference against the best baseline)."""
    from shortrec.benchmark import BenchmarkConfig, run_benchmark
    from shortrec.models import default_models

    config = BenchmarkConfig(
        experiment=_experiment(data, protocol, like_rule),
        models=list(models or default_models()), seeds=seeds, metric=metric,
        runs_dir=str(runs_dir), out_dir=str(out), from_study=from_study, isolate=isolate,
        preset=preset, keep=_given(protocol, like_rule), track=track,
    )  # fmt: skip
    result = run_benchmark(config)
    records = []
    for row in result["rows"]:
        record = {"model": row["model"], "source": row["source"], "seeds": row["seeds"],
                  "users": row["users"], "tune": row["tune"]}  # fmt: skip
        for name, value in row["summary"].items():
            record |= {name: value["mean"], f"{name}_low": value["low"],
                       f"{name}_high": value["high"]}  # fmt: skip
        paired = row["paired"] or {}
        difference = paired.get("difference", {})
        record |= {
            "delta": difference.get("mean"),
            "delta_low": difference.get("low"),
            "delta_high": difference.get("high"),
            "p_value": paired.get("p_value"),
        }
        record |= {"train_seconds": row["train_seconds"], "peak_rss_mb": row["peak_rss_mb"]}
        records.append(record)
    return pl.DataFrame(records, infer_schema_length=None)


def _given(protocol: str | None, like_rule: LikeRule | str | None) -> tuple[str, ...]:
    """The run options given explicitly, which win over a preset's."""
    return tuple(k for k, v in (("protocol", protocol), ("like_rule", like_rule)) if v)


def _experiment(
    data: Dataset | str | Path, protocol: str | None, like_rule: LikeRule | str | None
) -> runs.Experiment:
    """The experiment of a study or benchmark; a preset's protocol and like rule apply only
    where these are None (not given)."""
    return runs.Experiment(
        str(_data_path(data)), protocol or "kuairec", like_rule if like_rule else LikeRule()
    )


# --- comparing runs ------------------------------------------------------------------------


def leaderboard(
    runs_dir: str | Path = "runs",
    on: str = "test",
    metric: str = "ndcg@10",
    baseline: str = "popular",
) -> pl.DataFrame:
    """`shortrec leaderboard` as a frame: one row per model (its latest run per comparable
    group), sorted by `metric`, with each metric's mean and 95% interval (`M`, `M_low`,
    `M_high`) and the paired difference against `baseline` (`delta`, `delta_low`,
    `delta_high`, `p_value`)."""
    from shortrec.leaderboard import leaderboard_frame

    return leaderboard_frame(runs_dir, on, metric, baseline)


def compare(
    a: Run | str | Path,
    b: Run | str | Path,
    on: str = "test",
    metrics: Iterable[str] = ("ndcg@10", "graded_ndcg@10", "recall@20"),
) -> pl.DataFrame:
    """`shortrec compare`: paired differences B - A on the users both runs were evaluated on
    (or simulated for, `on="simulation_test"`), with 95% intervals and Wilcoxon p-values."""
    from shortrec.leaderboard import compare_runs

    rows = []
    for result in compare_runs(open_run(a), open_run(b), on, list(metrics)):
        rows.append(
            {
                "metric": result.metric,
                "difference": result.difference.mean,
                "low": result.difference.low,
                "high": result.difference.high,
                "p_value": result.p_value,
                "b_better": result.b_better,
                "a_better": result.a_better,
                "ties": result.ties,
            }
        )
    return pl.DataFrame(rows)

"""Experiment tracking: a run's record copied to MLflow.

`--track mlflow[:URI]` (CLI) or `track="mlflow[:URI]"` (Python) on train, tune and benchmark.
The run folder stays the source of truth; tracking mirrors it. Per run, one MLflow run holds:

- params: the hyperparameters (`hp.NAME`), model, protocol, like rule, seed, sampled mode, the
  data folder and the hash of its manifest (`data_manifest_hash`: the same hash, the same data);
- per-epoch metrics from the model's fit history (`epoch/loss`, `epoch/validation_ndcg_at_10`,
  ... at step = epoch);
- final metrics with their 95% intervals: `tune/ndcg_at_10`, `tune/ndcg_at_10.low`,
  `tune/ndcg_at_10.high`, ... and `train_seconds`, `peak_rss_mb`;
- the run folder (config, metrics, per-user tables, log, model) as artifacts under `run/`.

MLflow names cannot hold `@`, so `ndcg@10` is logged as `ndcg_at_10`. The default URI is a local
file store, `./mlruns` (MLflow 3 keeps that backend in maintenance mode and asks for an opt-in,
`MLFLOW_ALLOW_FILE_STORE`, which is set here for `file:` URIs); any MLflow URI works, e.g.
`mlflow:sqlite:///mlflow.db` or `mlflow:http://127.0.0.1:5000`.

The one hook: `runs.train_run(..., track=)` calls `Tracker.record(run_dir)` once the run is
saved and evaluated; tuning (every trial, tagged with its study) and benchmark (every seed's
run) pass their `track` down to it. MLflow is imported only when tracking is
asked for (`pip install 'shortrec[tracking]'`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

BACKENDS = ("mlflow",)
DEFAULT_MLFLOW_URI = "mlruns"
EXPERIMENT = "shortrec"
# Run-folder entries not copied as artifacts: resumable training's checkpoints (a copy of the
# model mid-training) and the serving event store.
SKIPPED_ARTIFACTS = ("checkpoints", "events.db")
_UNSAFE = re.compile(r"[^\w.\- :/]")


class TrackingError(ValueError):
    """A tracking spec that cannot be used (unknown backend, MLflow not installed)."""


@dataclass(frozen=True)
class TrackSpec:
    """Where runs are tracked: a backend and its URI."""

    backend: str
    uri: str

    @classmethod
    def parse(cls, text: str) -> TrackSpec:
        """`mlflow` (a file store in ./mlruns) or `mlflow:URI`."""
        backend, _, uri = text.partition(":")
        if backend not in BACKENDS:
            raise TrackingError(
                f"--track must be mlflow or mlflow:URI (e.g. mlflow:./mlruns, "
                f"mlflow:sqlite:///mlflow.db), got {text!r}"
            )
        return cls(backend, _resolved_uri(uri or DEFAULT_MLFLOW_URI))

    def __str__(self) -> str:
        return f"{self.backend}:{self.uri}"


def _resolved_uri(uri: str) -> str:
    """A bare path becomes an absolute `file:` URI (so runs started from anywhere agree)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", uri) or uri.startswith("file:"):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def metric_name(name: str) -> str:
    """An MLflow-safe metric or param name: `ndcg@10` -> `ndcg_at_10`."""
    return _UNSAFE.sub("_", name.replace("@", "_at_"))


def data_manifest_hash(data_dir: str | Path) -> str | None:
    """XXH3-128 of a prepared folder's manifest (which lists every table's hash), or of a
    SASRec text file; None when there is neither."""
    path = Path(data_dir)
    target = path / "manifest.json" if path.is_dir() else path
    if not target.is_file():
        return None
    return xxhash.xxh3_128(target.read_bytes()).hexdigest()


def run_params(config: Mapping[str, Any]) -> dict[str, str]:
    """What a run was: hyperparameters, protocol, like rule, seed, data and its hash."""
    params = {
        "model": config["model"],
        "label": config.get("label") or config["model"],
        "protocol": config.get("protocol"),
        "like_rule": _like_rule_text(config.get("like_rule")),
        "seed": config.get("seed"),
        "sampled": config.get("sampled"),
        "ks": config.get("ks"),
        "preset": config.get("preset"),
        "data_dir": config.get("data_dir"),
        "data_manifest_hash": data_manifest_hash(
            config.get("resolved_data_dir") or config.get("data_dir", "")
        ),
        "shortrec_version": config.get("shortrec_version"),
    }
    params |= {f"hp.{k}": v for k, v in config.get("params", {}).items()}
    return {metric_name(k): _param_text(v) for k, v in params.items()}


def _like_rule_text(rule: Any) -> Any:
    """`duration:0.8`-style text, as the flag takes it (config.json stores the fields)."""
    if not isinstance(rule, Mapping):
        return rule
    from shortrec.data.labels import LikeRule

    return str(LikeRule(**rule).unfitted())


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a param value


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def epoch_metrics(fit_report: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """(name, value, epoch) for every number in the fit report's per-epoch `history`."""
    rows = []
    for position, record in enumerate(fit_report.get("history", []) or [], start=1):
        if not isinstance(record, Mapping):
            continue
        step = int(record.get("epoch", position))
        for key, value in record.items():
            number = _finite(value)
            if key != "epoch" and number is not None:
                rows.append((f"epoch/{metric_name(key)}", number, step))
    return rows


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every evaluation's means with their 95% intervals (`.low`, `.high`), aggregates such as
    coverage, and the run's cost (train seconds, peak memory)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        number = _finite(value)
        if number is not None:
            flat[metric_name(key)] = number
            continue
        if not isinstance(value, Mapping):
            continue
        prefix = metric_name(key)
        for name, summary in (value.get("summary") or {}).items():
            for part, suffix in (("mean", ""), ("low", ".low"), ("high", ".high")):
                number = _finite(summary.get(part)) if isinstance(summary, Mapping) else None
                if number is not None:
                    flat[f"{prefix}/{metric_name(name)}{suffix}"] = number
        for name, aggregate in (value.get("aggregate") or {}).items():
            number = _finite(aggregate)
            if number is not None:
                flat[f"{prefix}/{metric_name(name)}"] = number
        if key.startswith(("regression_", "candidate_recall_")):
            for name, item in value.items():
                number = _finite(item)
                if number is not None:
                    flat[f"{prefix}/{metric_name(name)}"] = number
    return flat


class Tracker:
    """One tracking destination; `record(run_dir)` mirrors one finished shortrec run."""

    def __init__(self, spec: TrackSpec, experiment: str = EXPERIMENT):
        self.spec = spec
        self.experiment = experiment
        self._client = None
        self._experiment_id: str | None = None

    def _mlflow(self):
        if self._client is None:
            if self.spec.uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as error:
                raise TrackingError(
                    "--track mlflow needs MLflow, which is not installed: "
                    "pip install 'shortrec[tracking]' (or pip install mlflow)"
                ) from error
            try:
                client = MlflowClient(tracking_uri=self.spec.uri)
                found = client.get_experiment_by_name(self.experiment)
                self._experiment_id = (
                    found.experiment_id
                    if found is not None
                    else client.create_experiment(self.experiment)
                )
            except Exception as error:  # MLflow raises its own and its transports' errors
                raise TrackingError(
                    f"--track {self.spec}: cannot use that tracking store ({error})"
                ) from error
            self._client = client
        return self._client

    def check(self) -> Tracker:
        """Fail now (MLflow missing, store unusable) rather than after training."""
        self._mlflow()
        return self

    def record(
        self, run_dir: Path, tags: Mapping[str, Any] | None = None, started: float | None = None
    ) -> str:
        """Mirror a finished run folder as one MLflow run (started at `started`, Unix
        seconds); returns the MLflow run id. A store that fails midway leaves that MLflow run
        marked FAILED and raises `TrackingError` (the run folder itself is already saved)."""
        client = self._mlflow()
        run_dir = Path(run_dir)
        all_tags = {"shortrec.run_dir": str(run_dir.resolve())} | dict(tags or {})
        run_id = None
        try:
            created = client.create_run(
                self._experiment_id,
                start_time=None if started is None else int(started * 1000),
                run_name=run_dir.name,
                tags={metric_name(k): str(v) for k, v in all_tags.items()},
            )
            run_id = created.info.run_id
            self._log(client, run_id, run_dir)
            client.set_terminated(run_id, "FINISHED")
        except Exception as error:
            if run_id is not None:
                with contextlib.suppress(Exception):
                    client.set_terminated(run_id, "FAILED")
            raise TrackingError(
                f"{run_dir} is saved, but logging it to {self.spec} failed: {error}"
            ) from error
        return run_id

    @staticmethod
    def _log(client, run_id: str, run_dir: Path) -> None:
        from mlflow.entities import Metric, Param

        config = json.loads((run_dir / "config.json").read_text())
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        stamp = int(time.time() * 1000)
        params = [Param(k, v) for k, v in run_params(config).items()]
        rows = [Metric(k, v, stamp, step) for k, v, step in epoch_metrics(metrics.get("fit", {}))]
        rows += [Metric(k, v, stamp, 0) for k, v in final_metrics(metrics).items()]
        for start in range(0, max(len(params), len(rows)), 100):  # MLflow's batch limits
            client.log_batch(
                run_id, metrics=rows[start : start + 100], params=params[start : start + 100]
            )
        for entry in sorted(run_dir.iterdir()):
            if entry.name in SKIPPED_ARTIFACTS or entry.name.startswith("."):
                continue
            if entry.is_dir():
                client.log_artifacts(run_id, str(entry), f"run/{entry.name}")
            else:
                client.log_artifact(run_id, str(entry), "run")


def open_tracker(spec: str | TrackSpec | Tracker | None) -> Tracker | None:
    """The tracker for `--track`/`track=` (None: no tracking), checked before any work."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, Tracker):
        return spec
    return Tracker(spec if isinstance(spec, TrackSpec) else TrackSpec.parse(spec)).check()

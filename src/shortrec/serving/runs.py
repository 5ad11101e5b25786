"""The run a server serves: its model, name and data, read through `shortrec.runs.Run`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shortrec.serving.feed import ServedModel

if TYPE_CHECKING:  # shortrec.runs pulls in the evaluation stack (torch, scipy): load it lazily
    from shortrec.data.dataset import KuaiRecData
    from shortrec.runs import Run

DEFAULT_MODEL = "sasrec"


def _open(run_dir: str | Path) -> Run:
    from shortrec.runs import Run

    return Run(run_dir)


def _served(run: Run) -> ServedModel:
    return ServedModel(
        model=run.model(), name=run.config.model, run_dir=str(run.path), data_dir=str(run.data_dir)
    )


def load_served_model(run_dir: str | Path) -> ServedModel:
    """The run's model only (no data): what a model swap needs."""
    return _served(_open(run_dir))


def load_served_run(run_dir: str | Path) -> tuple[ServedModel, Run, KuaiRecData]:
    """(model, run, data) of a trained run: everything `shortrec serve` starts from."""
    from shortrec.runs import load_data

    run = _open(run_dir)
    served = _served(run)
    return served, run, load_data(served.data_dir)


def find_default_run(runs_dir: str | Path = "runs", model: str = DEFAULT_MODEL) -> Path:
    """The newest run of `model` under `runs_dir` (run directory names start with the time)."""
    from shortrec.runs import list_runs

    matching = []
    for run in list_runs(runs_dir):
        try:
            if run.config.model == model:
                matching.append(run)
        except (OSError, ValueError):
            continue  # an unreadable config is not a candidate
    if not matching:
        raise FileNotFoundError(
            f"no trained {model} run under {runs_dir}/; train one with `shortrec train {model}"
            " DATA_DIR` or pass --run RUN_DIR"
        )
    return max(matching, key=lambda run: run.config_path.stat().st_mtime).path

"""Reading a run directory (written by `shortrec train`, see `shortrec.runs`) for serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from shortrec.serving.feed import ServedModel

if TYPE_CHECKING:  # shortrec.runs pulls in the evaluation stack (torch, scipy): load it lazily
    from shortrec.data.dataset import KuaiRecData
    from shortrec.models.base import Recommender
    from shortrec.runs import RunConfig

DEFAULT_MODEL = "sasrec"


def _load(run_dir: Path) -> tuple[Recommender, RunConfig]:
    from shortrec.runs import load_run as load_trained_run

    try:
        return load_trained_run(run_dir)
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{run_dir / 'config.json'}: not a valid run config ({error})") from error


def run_data_dir(run_dir: str | Path, config: RunConfig) -> Path:
    """The release a run was trained on; a relative path is tried from the current
    directory, then from the run directory."""
    data_dir = Path(config.data_dir)
    if data_dir.is_absolute() or data_dir.exists():
        return data_dir
    return Path(run_dir) / data_dir


def _served(run_dir: Path, model: Recommender, config: RunConfig) -> ServedModel:
    return ServedModel(
        model=model,
        name=config.model,
        run_dir=str(run_dir),
        data_dir=str(run_data_dir(run_dir, config)),
    )


def load_served_model(run_dir: str | Path) -> ServedModel:
    """The run's model only (no data): what a model swap needs."""
    run_dir = Path(run_dir)
    return _served(run_dir, *_load(run_dir))


def load_run(run_dir: str | Path) -> tuple[ServedModel, RunConfig, KuaiRecData]:
    """(model, config, data) of a trained run: everything `shortrec serve` starts from."""
    from shortrec.runs import load_data

    run_dir = Path(run_dir)
    model, config = _load(run_dir)
    served = _served(run_dir, model, config)
    return served, config, load_data(served.data_dir)


def find_default_run(runs_dir: str | Path = "runs", model: str = DEFAULT_MODEL) -> Path:
    """The newest run of `model` under `runs_dir` (run directory names start with the time)."""
    from shortrec.runs import RunConfig, list_runs

    matching = []
    for run_dir in list_runs(runs_dir):
        try:
            if RunConfig.from_json((run_dir / "config.json").read_text()).model == model:
                matching.append(run_dir)
        except (OSError, TypeError, ValueError):
            continue  # an unreadable config is not a candidate
    if not matching:
        raise FileNotFoundError(
            f"no trained {model} run under {runs_dir}/; train one with `shortrec train {model}"
            " DATA_DIR` or pass --run RUN_DIR"
        )
    return max(matching, key=lambda run_dir: (run_dir / "config.json").stat().st_mtime)

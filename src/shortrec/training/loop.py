"""The one epoch loop every iterative model trains with, in the spirit of RecBole's
`Trainer.fit`.

A model brings its own `train_epoch(epoch)` (one pass: returns a record such as
{"loss": ...}) and `validate(epoch)` (validation NDCG@10, higher is better); `fit_epochs`
does the rest, the same way for every model:

- runs at most `epochs` epochs and validates every `validate_every` epochs and after the last;
- stops after `patience` validations without a better score (`EarlyStopping`; optionally
  better by a relative margin, and at least a fraction of the best epoch's count of epochs
  later) and restores the weights of the best validated epoch (the last weights when nothing
  was validated);
- reports each validation score to the tuner (`FitContext.on_epoch_end`, which may prune);
- shows one progress bar (on rank 0) and records per-epoch history with wall and CPU time;
- with a `checkpoint_dir` and a `Resume` description, writes a checkpoint after every epoch
  (weights, optimiser, every random stream of every rank, early stopping, best weights,
  history) and continues from it, so a run killed at any moment (even `kill -9`) resumes as
  if it had never stopped; a completed fit deletes it (`keep_checkpoint` keeps it). Under
  torchrun (`training/distributed.py`), rank 0 alone writes and reads checkpoints and
  broadcasts them; `train_epoch` and `validate` are called on every rank (they may be
  collective), the tuner and the progress bar see rank 0 only.

torch is imported inside the functions that need it: `FitContext` lives here and is used by
every model, including those that never touch torch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shortrec.training.distributed import World, from_main, gathered
from shortrec.training.early_stopping import EarlyStopping

if TYPE_CHECKING:
    import torch

VALIDATION_METRIC = "validation_ndcg@10"


@dataclasses.dataclass
class FitContext:
    """What a run offers a model besides data."""

    checkpoint_dir: Path | None = None  # resumable models keep their checkpoints here
    progress: bool = True  # show progress bars
    on_epoch_end: Callable[[int, float], None] | None = None  # the tuner's pruning hook


@dataclasses.dataclass
class Resume:
    """What makes a checkpoint resumable by this fit: `settings` it must have been written
    with (hyperparameters that shape training, the like rule, the world size) and a
    fingerprint of the training `data` (id arrays, counts), both compared exactly."""

    settings: Mapping[str, Any]
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EpochResult:
    """What `fit_epochs` did: per-epoch records and the chosen epoch."""

    history: list[dict[str, Any]]
    best_epoch: int | None  # None: nothing was validated
    best_score: float | None
    start_epoch: int  # epochs a checkpoint had already done
    seconds: float  # wall time of this run's epochs (training and validation)
    train_seconds: float  # wall time of this run's `train_epoch` calls

    @property
    def epochs(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    @property
    def epochs_this_run(self) -> int:
        return len(self.history) - self.start_epoch

    def report(self) -> dict[str, Any]:
        """The loop's part of a model's `fit_report_`."""
        return {
            "epochs": self.epochs,
            "epochs_this_run": self.epochs_this_run,
            "best_epoch": self.best_epoch,
            f"best_{VALIDATION_METRIC}": self.best_score,
            "history": self.history,
        }


def fit_epochs(
    name: str,
    network: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    train_epoch: Callable[[int], Mapping[str, Any]],
    validate: Callable[[int], float] | None,
    *,
    epochs: int,
    patience: int,
    context: FitContext | None = None,
    validate_every: int = 1,
    generators: Sequence[torch.Generator | np.random.Generator] = (),
    resume: Resume | None = None,
    job: World | None = None,
    keep_checkpoint: bool = False,
    min_relative_improvement: float = 0.0,
    patience_fraction: float = 0.0,
    min_loss_decrease: float = 0.0,
) -> EpochResult:
    """Train `network` for up to `epochs` epochs (numbered from 1) and leave the best
    validated weights in it.

    `train_epoch(epoch)` trains one epoch and returns its record (losses, counts);
    `validate(epoch)` returns the validation NDCG@10 (None: no validation data, so no early
    stopping and the last weights are kept). `generators` are the model's random streams
    (torch generators, numpy generators); with torch's global generators they are saved in
    checkpoints, per rank. `resume` makes the fit resumable from `context.checkpoint_dir`;
    the checkpoint is deleted once the fit completes (the run saves the model itself) unless
    `keep_checkpoint`, so finished runs and tuning trials do not keep optimiser state.
    `min_relative_improvement`, `patience_fraction` and `min_loss_decrease` (read from
    each record's "loss") are `EarlyStopping`'s adaptive rules;
    a resumed fit applies this call's `patience` and rules to the checkpoint's record.
    """
    from tqdm.auto import tqdm

    context = context or FitContext()
    job = job or World()
    if epochs < 1 or patience < 1 or validate_every < 1:
        raise ValueError(
            f"{name}: epochs, patience and validate_every must be >= 1, "
            f"got {epochs}, {patience}, {validate_every}"
        )
    rules = {"patience": patience, "min_relative_improvement": min_relative_improvement,
             "patience_fraction": patience_fraction,
             "min_loss_decrease": min_loss_decrease}  # fmt: skip
    stopper = EarlyStopping(**rules)
    best_state: dict | None = None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    directory = Path(context.checkpoint_dir) if context.checkpoint_dir else None
    writes = resume is not None and directory is not None and job.is_main
    if resume is not None and (directory is not None or job.active):
        saved = from_main(_load(directory) if writes else None, job)
        if saved is not None:
            _check_resumable(saved, resume, directory)
            network.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimizer"])
            _set_random_state(saved["random"][job.rank], generators)
            stopper = EarlyStopping.from_state_dict({**saved["early_stopping"], **rules})
            best_state, history, start_epoch = saved["best_model"], saved["history"], saved["epoch"]
            del saved

    show = context.progress and job.is_main
    started, train_seconds = time.perf_counter(), 0.0
    bar = tqdm(range(start_epoch + 1, epochs + 1), desc=name, unit="epoch", disable=not show,
               initial=start_epoch, total=epochs)  # fmt: skip
    for epoch in bar:
        if stopper.should_stop:
            break
        tick, cpu_tick = time.perf_counter(), time.process_time()
        record: dict[str, Any] = {"epoch": epoch, **train_epoch(epoch)}
        train_seconds += time.perf_counter() - tick
        if validate is not None and (epoch % validate_every == 0 or epoch == epochs):
            score = float(validate(epoch))
            record[VALIDATION_METRIC] = score
            if stopper.update(score, epoch, float(record.get("loss", math.nan))):
                best_state = copy.deepcopy(network.state_dict())
            if context.on_epoch_end is not None and job.is_main:
                context.on_epoch_end(epoch, score)
        record["seconds"] = time.perf_counter() - tick
        record["cpu_seconds"] = time.process_time() - cpu_tick
        history.append(record)
        bar.set_postfix(_postfix(record, stopper))
        random_state = gathered(_random_state(generators), job) if resume is not None else None
        if writes:
            _save(directory, {
                "settings": dict(resume.settings), "data": dict(resume.data), "epoch": epoch,
                "model": network.state_dict(), "optimizer": optimiser.state_dict(),
                "random": random_state, "early_stopping": stopper.state_dict(),
                "best_model": best_state, "history": history,
            })  # fmt: skip
    bar.close()
    if writes and not keep_checkpoint:
        from shortrec.training.checkpoint import checkpoint_path

        checkpoint_path(directory).unlink(missing_ok=True)
    if best_state is not None:
        network.load_state_dict(best_state)
    validated = best_state is not None
    return EpochResult(
        history=history,
        best_epoch=stopper.best_epoch if validated else None,
        best_score=stopper.best_score if validated else None,
        start_epoch=start_epoch,
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
    )


def _postfix(record: Mapping[str, Any], stopper: EarlyStopping) -> dict[str, str]:
    shown = {k: f"{v:.4f}" for k, v in record.items() if k.endswith("loss") and _finite(v)}
    if math.isfinite(stopper.best_score):
        shown["best"] = f"{stopper.best_score:.4f}"
    return shown


def _finite(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


# --- checkpoints -------------------------------------------------------------------------------
def _load(directory: Path) -> dict | None:
    from shortrec.training.checkpoint import load_checkpoint

    return load_checkpoint(directory)


def _save(directory: Path, state: dict) -> None:
    from shortrec.training.checkpoint import save_checkpoint

    save_checkpoint(directory, state)


def _check_resumable(saved: dict, resume: Resume, directory: Path | None) -> None:
    from shortrec.training.checkpoint import check_compatible, checkpoint_path

    path = checkpoint_path(directory or "<rank 0>")
    if "settings" not in saved or "random" not in saved:
        raise ValueError(
            f"checkpoint {path} was written by another shortrec version; "
            "use another checkpoint_dir or delete it"
        )
    check_compatible(saved["settings"], dict(resume.settings), path)
    if set(saved["data"]) != set(resume.data) or not all(
        np.array_equal(np.asarray(saved["data"][k]), np.asarray(v)) for k, v in resume.data.items()
    ):
        raise ValueError(f"checkpoint {path} was trained on other data; use another checkpoint_dir")


def _random_state(generators: Sequence[Any]) -> dict[str, Any]:
    """Every random stream this rank draws from: the model's generators and torch's global
    ones (dropout draws from those)."""
    import torch

    state: dict[str, Any] = {
        "generators": [
            g.bit_generator.state if isinstance(g, np.random.Generator) else g.get_state()
            for g in generators
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict[str, Any], generators: Sequence[Any]) -> None:
    import torch

    if len(state["generators"]) != len(generators):
        raise ValueError("checkpoint holds other random streams than this model draws from")
    for generator, saved in zip(generators, state["generators"], strict=True):
        if isinstance(generator, np.random.Generator):
            generator.bit_generator.state = saved
        else:
            generator.set_state(saved)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

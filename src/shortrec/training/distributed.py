"""Data-parallel training across processes and machines, on torch's own launcher.

A job is started by `torchrun` (one process per rank; `shortrec train MODEL --nproc N` runs
`torchrun --standalone` for one machine), which sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address. Every rank runs the same command and builds the same data; a model that
supports it (`Recommender.distributed`) then wraps its network in DistributedDataParallel
(gloo on the CPU, NCCL on CUDA) and each rank trains on its share of every batch's users.
Rank 0 alone owns the run folder: it writes checkpoints, the model and the metrics, and
broadcasts a checkpoint to the other ranks when a run resumes, so nodes need no shared disk.

Why split every batch rather than give each rank its own batches: the gradient of a global
batch is then exactly the single-process one (each rank's summed loss is divided by the
whole batch's positions, and DDP's mean over ranks is undone by multiplying by the world
size), so hyperparameters tuned on one process keep their meaning on many, and only the
random draws (negatives, dropout) differ, each rank having its own seeded stream.

torch is imported inside the functions that use it: `world()` is asked by every run, also of
models that never touch torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    """This process's place in a (possibly one-process) job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """The job as torchrun described it in the environment (one process when it did not)."""
    try:
        return World(
            rank=int(os.environ.get("RANK", 0)),
            size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as error:
        raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {error}") from error


def rank_device(device: torch.device, job: World) -> torch.device:
    """Each rank of a CUDA job uses the GPU of its local rank."""
    import torch

    if job.active and device.type == "cuda":
        device = torch.device("cuda", job.local_rank)
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join the job's process group for the block (gloo on the CPU, NCCL on CUDA) and leave
    it afterwards; a one-process job does nothing."""
    import torch.distributed as dist

    job = world()
    created = job.active and not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield job
    except BaseException:
        if created:  # no barrier: the other ranks may never reach it
            dist.destroy_process_group()
        raise
    if created:
        dist.barrier()
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, job: World, device: torch.device) -> torch.nn.Module:
    """`module` under DistributedDataParallel in a multi-process job, itself otherwise."""
    import torch

    if not job.active:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def rank_seed(seed: int, job: World) -> int:
    """Rank 0 keeps `seed` (a one-process run is rank 0 of one); others get derived seeds."""
    if job.rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, job.rank]).generate_state(1, np.uint64)[0] >> 2)


def share_of(rows: np.ndarray, job: World) -> np.ndarray:
    """This rank's share of a batch's rows (every rank-th one: batches sorted by length
    give every rank a similar amount of work)."""
    return rows[job.rank :: job.size]


def sum_across(values: Sequence[float], job: World, device: torch.device) -> np.ndarray:
    """Element-wise sums of `values` over all ranks (the values themselves in one process)."""
    import torch
    import torch.distributed as dist

    if not job.active:
        return np.asarray(values, dtype=np.float64)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def from_main(value: Any, job: World) -> Any:
    """Rank 0's `value` on every rank (pickled; for checkpoints and small decisions)."""
    import torch.distributed as dist

    if not job.active:
        return value
    box = [value if job.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any, job: World) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    import torch.distributed as dist

    if not job.active:
        return [value]
    out: list[Any] = [None] * job.size
    dist.all_gather_object(out, value)
    return out


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that runs `shortrec ARGV` as `nproc` ranks on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), "-m", "shortrec.cli", *argv]  # fmt: skip


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` with `option VALUE` / `option=VALUE` removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def run_as_ranks(nproc: int, argv: Sequence[str]) -> int:
    """Run `shortrec ARGV` again, without its `--nproc`, as `nproc` ranks on this machine
    (what `--nproc N` does); returns the exit status."""
    import subprocess

    return subprocess.run(torchrun_command(nproc, without_option(argv, "--nproc"))).returncode

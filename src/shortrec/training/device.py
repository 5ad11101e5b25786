"""Where torch runs, on how many threads, and how it is seeded.

Training code asks for a device by name ("auto", "cpu", "cuda", "cuda:1", "mps") so a
hyperparameter file stays portable between a laptop and a GPU box.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch


def select_device(name: str = "auto") -> torch.device:
    """The named device; "auto" prefers CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device must be auto, cpu, cuda[:N] or mps; got {name!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda[:N] or mps; got {name!r}")
    return device


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private random stream: sampling never touches torch's global generator."""
    return torch.Generator(device=device).manual_seed(int(seed))


def derive_seed(generator: torch.Generator) -> int:
    """A fresh 63-bit seed drawn from `generator` (to seed dropout for one epoch)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use `n` intra-op CPU threads inside the block, then restore (0: leave torch's own)."""
    previous = torch.get_num_threads()
    change = n > 0 and n != previous  # setting costs tens of microseconds, even unchanged
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)


@functools.cache
def _blas_pools():
    from threadpoolctl import ThreadpoolController  # after NumPy has loaded its BLAS

    return ThreadpoolController().select(user_api="blas")


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Use `n` threads in NumPy's BLAS inside the block, then restore (0: leave its own).
    OpenBLAS's idle threads spin between calls: a server that ran its small NumPy matrix
    products on the default pool burned a whole second core at 100 req/s."""
    if n <= 0:
        yield
        return
    with _blas_pools().limit(limits=n):
        yield


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators (dropout draws from them) inside the block and restore
    their previous state afterwards, so training leaves no trace on the caller's RNG."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield

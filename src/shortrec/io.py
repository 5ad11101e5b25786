"""Atomic writes: a file is either its old self or its complete new self, never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_table(table, target: str | Path) -> None:
    """Write a polars frame to .csv or .parquet (by suffix), atomically."""
    target = Path(target)
    if target.suffix not in (".csv", ".parquet"):
        raise ValueError(f"output must end in .csv or .parquet, got {target}")
    with atomic_path(target) as tmp:
        if target.suffix == ".csv":
            # list columns (tags) are written as text, like KuaiRec's own files
            flat = table.with_columns(
                [
                    table[c].cast(str) if str(table[c].dtype).startswith("List") else table[c]
                    for c in table.columns
                ]
            )
            flat.write_csv(tmp)
        else:
            table.write_parquet(tmp)

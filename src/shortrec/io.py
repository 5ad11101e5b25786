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
    """Write a polars frame to .csv or .parquet (by suffix), atomically. In CSV, list columns
    (tags) are written as text like KuaiRec's own files: "[27, 9]"."""
    import polars as pl

    target = Path(target)
    if target.suffix not in (".csv", ".parquet"):
        raise ValueError(f"output must end in .csv or .parquet, got {target}")
    with atomic_path(target) as tmp:
        if target.suffix == ".parquet":
            table.write_parquet(tmp)
            return
        lists = [name for name, dtype in table.schema.items() if isinstance(dtype, pl.List)]
        as_text = [
            pl.concat_str(
                pl.lit("["),
                pl.col(name).list.eval(pl.element().cast(pl.String)).list.join(", "),
                pl.lit("]"),
            ).alias(name)
            for name in lists
        ]
        table.with_columns(as_text).write_csv(tmp)


def atomic_replace_dir(staging: str | Path, target: str | Path) -> None:
    """Put the finished folder `staging` in place of `target` (which may not exist).

    POSIX has no atomic swap of two non-empty folders, so the old folder is first renamed
    aside, then `staging` renamed in, then the old one removed. A crash between the two
    renames leaves `target` missing and `.<name>.old` beside it: `recover_replaced_dir`
    (called at the start of every replace) puts it back. `staging` must be on the same
    filesystem as `target` (make it with `staging_dir_for(target)`).
    """
    import shutil

    staging, target = Path(staging), Path(target)
    recover_replaced_dir(target)
    old = target.parent / f".{target.name}.old"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_replaced_dir(target: str | Path) -> None:
    """Undo a replace that stopped between its two renames (see `atomic_replace_dir`)."""
    import shutil

    target = Path(target)
    old = target.parent / f".{target.name}.old"
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)


def staging_dir_for(target: str | Path) -> Path:
    """A fresh, empty folder beside `target`, for building its replacement."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))

"""Turn a KuaiRec release folder (CSV) into the prepared Parquet folder that `load_prepared` reads.

The CSVs are parsed and validated once; everything downstream reads typed Parquet. The folder
layout and its manifest are documented in `shortrec.data.dataset`. The manifest records, per
file, the source's size, mtime and content hash, so a second run skips unchanged files without
parsing them (size and mtime first; the content hash settles a changed mtime).

All or nothing: the next version of the folder is built beside it (unchanged tables hard-linked
in, new ones written there), with its manifest, and switched in by renames
(`shortrec.io.atomic_replace_dir`). A run that fails on any file leaves the previous folder
byte for byte as it was; the loader refuses a folder whose files do not match its manifest.
`publish_prepared` / `PreparedWriter` are the one way to write such a folder, for `data
import` as well.

Memory stays flat as the log grows: the interaction CSVs are streamed to Parquet (the CSV is
never held in memory), row checks stream, and exact duplicates are counted on row hashes
(streamed to a side file in the same pass) in as many passes over hash partitions as keep each
pass under a fixed number of hashes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from shortrec import __version__
from shortrec.data.dataset import (
    CACHE_FORMAT_VERSION,
    MANIFEST_FILE,
    OPTIONAL_TABLES,
    REQUIRED_TABLES,
    PreparedDataError,
    file_hash,
    read_manifest,
)
from shortrec.data.read import (
    SIDE_FILE_READERS,
    KuaiRecFormatError,
    check_csv_bytes,
    check_interactions,
    interaction_rules,
    parse_or_explain,
    require_rows,
    scan_interactions,
)
from shortrec.data.schema import (
    GROUND_TRUTH_COLUMNS,
    GROUND_TRUTH_FILE,
    INTERACTION_COLUMNS,
    KUAIREC_FILES,
)
from shortrec.io import atomic_replace_dir, recover_replaced_dir, staging_dir_for

RELEASE_DATA_DIR = Path("KuaiRec 2.0") / "data"
_INTERACTION_FILES = ("big_matrix", "small_matrix")
_GROUND_TRUTH = "ground_truth"
# lz4 writes 2-3x faster than zstd for a Parquet file about 30% larger; writing dominates.
_PARQUET_COMPRESSION = "lz4"
# Row hashes held at once while counting duplicates (64 MiB, plus as much to sort them).
_HASHES_PER_PASS = 1 << 23
_FEATURE_CACHE = "features"


@dataclass
class PrepareReport:
    """What one `prepare` run did, file by file."""

    out_dir: Path
    release_dir: Path
    prepared: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # optional files not in the release
    removed: list[str] = field(default_factory=list)  # stale cache files of now-absent sources

    @property
    def up_to_date(self) -> bool:
        """True when nothing had to be rebuilt."""
        return not self.prepared and not self.removed


# --- writing a prepared folder, all or nothing ---------------------------------------------------


def _ours(name: str, listed: set[str]) -> bool:
    """Whether a folder entry belongs to a prepared folder (so replacing the folder loses
    nothing of the user's): its tables, manifest, feature cache, or an interrupted write."""
    tables = {f"{table}.parquet" for table in (*REQUIRED_TABLES, *OPTIONAL_TABLES)}
    return (
        name in tables
        or name in listed
        or name in (MANIFEST_FILE, _FEATURE_CACHE)
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def check_out_dir(out_dir: Path) -> None:
    """`out_dir` must be new, empty, or a prepared folder: it is replaced whole."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PreparedDataError(
            f"{out_dir} is a file; the output must be a folder (a new one, or a prepared one "
            "to update)"
        )
    if not out_dir.is_dir():
        return
    listed: set[str] = set()
    if (out_dir / MANIFEST_FILE).is_file():
        try:
            listed = {entry["parquet"] for entry in read_manifest(out_dir)["files"].values()}
        except (PreparedDataError, KeyError, TypeError):
            listed = set()
    foreign = sorted(entry.name for entry in out_dir.iterdir() if not _ours(entry.name, listed))
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        shown = ", ".join(foreign[:5]) + more
        raise PreparedDataError(
            f"{out_dir} holds files that are not part of a prepared release ({shown}); the "
            "output folder is replaced whole, so choose a new or empty folder"
        )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, target)


def _parquet_rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


class PreparedWriter:
    """Builds the next version of a prepared folder beside it; `publish` switches it in whole.

        with PreparedWriter(out_dir) as writer:
            frame.write_parquet(writer.path("big_matrix"))     # or sink_parquet, streaming
            writer.add_written("big_matrix", source="...")    # extra manifest fields
            writer.add_frame("item_categories", categories)
            writer.publish(release_dir="...")

    Leaving the block without `publish` (an error, or nothing changed) discards the staging
    folder and leaves `out_dir` untouched.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        recover_replaced_dir(self.out_dir)
        check_out_dir(self.out_dir)
        self.staging = staging_dir_for(self.out_dir)
        self.entries: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> PreparedWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write table `name` in the staging folder."""
        return self.staging / f"{name}.parquet"

    def add_written(self, name: str, **fields: Any) -> dict[str, Any]:
        """Record table `name`, already written at `path(name)`; `fields` join its entry."""
        path = self.path(name)
        entry = {
            "parquet": path.name,
            "parquet_size": path.stat().st_size,
            "parquet_xxh3_128": file_hash(path),
            "rows": _parquet_rows(path),
            **fields,
        }
        self.entries[name] = entry
        return entry

    def add_frame(self, name: str, frame: pl.DataFrame, **fields: Any) -> dict[str, Any]:
        frame.write_parquet(self.path(name), compression=_PARQUET_COMPRESSION)
        return self.add_written(name, **fields)

    def add_file(self, name: str, parquet: Path, **fields: Any) -> dict[str, Any]:
        """Copy a Parquet file in as table `name`."""
        shutil.copyfile(parquet, self.path(name))
        return self.add_written(name, **fields)

    def keep(self, name: str, entry: dict[str, Any]) -> None:
        """Carry table `name` over unchanged from the current folder (a hard link: instant,
        no space) with its manifest entry, already verified by the caller."""
        _link_or_copy(self.out_dir / entry["parquet"], self.staging / entry["parquet"])
        self.entries[name] = entry

    def publish(self, **fields: Any) -> dict[str, Any]:
        """Write the manifest (with `fields` at its top level) and switch the folder in."""
        missing = [name for name in REQUIRED_TABLES if name not in self.entries]
        if missing:
            raise PreparedDataError(f"a prepared folder needs table(s) {', '.join(missing)}")
        manifest = {
            "cache_format_version": CACHE_FORMAT_VERSION,
            "shortrec_version": __version__,
            "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **fields,
            "files": self.entries,
        }
        (self.staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
        )
        atomic_replace_dir(self.staging, self.out_dir)
        return manifest


def publish_prepared(
    out_dir: str | Path,
    tables: Mapping[str, pl.DataFrame | Path],
    entries: Mapping[str, Mapping[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Write a prepared folder from whole tables, atomically; returns its manifest.

    `tables` maps a table name (big_matrix, small_matrix, item_categories, and any optional
    table of the layout in `shortrec.data.dataset`) to a frame or a Parquet file to copy;
    `entries` adds fields to a table's manifest entry; `fields` go to the manifest's top level.
    The previous folder at `out_dir`, if any, is replaced whole or not at all.
    """
    entries = entries or {}
    with PreparedWriter(out_dir) as writer:
        for name, table in tables.items():
            extra = dict(entries.get(name, {}))
            if isinstance(table, pl.DataFrame):
                writer.add_frame(name, table, **extra)
            else:
                writer.add_file(name, Path(table), **extra)
        return writer.publish(**fields)


# --- prepare -------------------------------------------------------------------------------------


def find_release_dir(raw_dir: str | Path) -> Path:
    """The folder holding the CSVs: RAW_DIR itself, or `KuaiRec 2.0/data` (or `*/data`) inside
    a download folder."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: no such directory")
    candidates = [raw_dir, raw_dir / "data", raw_dir / RELEASE_DATA_DIR]
    candidates += sorted(raw_dir.glob("*/data"))
    for candidate in candidates:
        if (candidate / "big_matrix.csv").is_file():
            return candidate
    present = ", ".join(sorted(p.name for p in raw_dir.iterdir())[:10]) or "nothing"
    raise FileNotFoundError(
        f"{raw_dir}: no big_matrix.csv here nor in '{RELEASE_DATA_DIR}' or '*/data' below it "
        f"(found: {present}); point RAW_DIR at the folder holding the KuaiRec CSVs, "
        "or run `shortrec data download` first"
    )


def _source_path(release_dir: Path, raw_dir: Path, file_name: str) -> Path | None:
    # Zenodo also publishes the captions beside the archive, so look beside the release too.
    for folder in (release_dir, raw_dir):
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def _is_fresh(entry: dict[str, Any] | None, source: Path, out_dir: Path) -> bool:
    """The cached table was built from these exact bytes and is still on disk, whole."""
    if entry is None:
        return False
    parquet = out_dir / entry["parquet"]
    if not parquet.is_file() or parquet.stat().st_size != entry["parquet_size"]:
        return False
    stat = source.stat()
    if stat.st_size != entry["source_size"]:
        return False
    if file_hash(parquet) != entry["parquet_xxh3_128"]:
        return False
    if stat.st_mtime_ns == entry["source_mtime_ns"]:
        return True
    if file_hash(source) != entry["source_xxh3_128"]:
        return False
    entry["source_mtime_ns"] = stat.st_mtime_ns  # touched but unchanged
    return True


def distinct_row_count(row_hashes: np.ndarray) -> int:
    """Distinct rows, counted on 64-bit row hashes (sorting 12.5M hashes takes a fraction of a
    second; an exact multi-column unique takes several). Two different rows would have to share
    a hash to undercount by one: probability about n**2 / 2**65, 4e-6 for big_matrix."""
    if len(row_hashes) == 0:
        return 0
    ordered = np.sort(row_hashes)
    return 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))


def count_duplicate_rows(
    row_hashes: Path, rows: int, hashes_per_pass: int = _HASHES_PER_PASS
) -> int:
    """Rows that repeat an earlier row exactly, from a Parquet file of their 64-bit row hashes
    (column `hash`). Equal rows have equal hashes, so they fall in the same hash partition:
    each pass keeps one partition's hashes only, and memory stays bounded however long the
    table grows."""
    passes = max(1, -(-rows // hashes_per_pass))
    distinct = 0
    for part in range(passes):
        hashes = (
            pl.scan_parquet(row_hashes)
            .filter(pl.col("hash") % passes == part)
            .collect(engine="streaming")
        )
        distinct += distinct_row_count(hashes.to_series().to_numpy())
    return rows - distinct


def _source_fields(source: Path, xxh3_128: str | None = None) -> dict[str, Any]:
    stat = source.stat()
    return {
        "source": str(source.resolve()),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "source_xxh3_128": xxh3_128 or file_hash(source),
    }


def _prepare_interactions(name: str, source: Path, writer: PreparedWriter) -> None:
    """One streaming pass over the CSV feeds the Parquet writer, the row checks, the counts and
    a file of row hashes (for the duplicate count); the CSV is never held in memory. A failed
    check is located afterwards, on the Parquet."""
    table = scan_interactions(source)
    raw = check_csv_bytes(source, len(INTERACTION_COLUMNS))
    broken = pl.any_horizontal([rule.violated.fill_null(False) for rule in interaction_rules()])
    counts = table.select(
        rows=pl.len(),
        broken_rows=broken.sum(),
        null_timestamp_rows=pl.col("timestamp").null_count(),
    )
    target = writer.path(name)
    row_hashes = writer.staging / f".{name}.row_hashes.parquet"
    sinks = [
        table.sink_parquet(target, compression=_PARQUET_COMPRESSION, lazy=True),
        table.select(pl.struct(pl.all()).hash().alias("hash")).sink_parquet(
            row_hashes,
            compression="uncompressed",  # random bits do not compress
            lazy=True,
        ),
    ]
    *_, counted = parse_or_explain(
        lambda: pl.collect_all([*sinks, counts], engine="streaming"), source, INTERACTION_COLUMNS
    )
    rows = int(counted["rows"][0])
    require_rows(source, rows)
    if counted["broken_rows"][0]:
        check_interactions(pl.scan_parquet(target), source)
    duplicate_rows = count_duplicate_rows(row_hashes, rows)
    row_hashes.unlink()
    writer.add_written(
        name,
        **_source_fields(source, raw.xxh3_128),
        rows=rows,
        duplicate_rows=duplicate_rows,
        null_timestamp_rows=int(counted["null_timestamp_rows"][0]),
    )


def _prepare_ground_truth(source: Path, writer: PreparedWriter) -> None:
    try:
        schema = pl.read_parquet_schema(source)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise KuaiRecFormatError(f"{source}: not a readable Parquet file ({error})") from error
    missing = [name for name in GROUND_TRUTH_COLUMNS if name not in schema]
    if missing:
        raise KuaiRecFormatError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))}; expected "
            f"{', '.join(GROUND_TRUTH_COLUMNS)}"
        )
    writer.add_file(_GROUND_TRUTH, source, **_source_fields(source))


def _build(name: str, source: Path, writer: PreparedWriter) -> None:
    """Write one table into the staging folder and record its manifest entry."""
    if name in _INTERACTION_FILES:
        _prepare_interactions(name, source, writer)
    elif name == _GROUND_TRUTH:
        _prepare_ground_truth(source, writer)
    else:
        writer.add_frame(name, SIDE_FILE_READERS[name](source), **_source_fields(source))


def _current_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of the folder being updated, or None (none, unreadable, older format):
    then every table is rebuilt."""
    try:
        return read_manifest(out_dir)
    except (FileNotFoundError, PreparedDataError):
        return None


def prepare(
    raw_dir: str | Path, out_dir: str | Path, force: bool = False, progress: bool = False
) -> PrepareReport:
    """Validate the release in `raw_dir` and write the prepared folder `out_dir`, whole.

    Unchanged sources are skipped (unless `force`); bad input raises KuaiRecFormatError
    (file, line, column), PreparedDataError (an unusable `out_dir`) or FileNotFoundError,
    leaving the previous folder byte for byte as it was.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    release_dir = find_release_dir(raw_dir)
    jobs: list[tuple[str, Path]] = []
    absent: list[str] = []
    for kuairec_file in KUAIREC_FILES:
        source = _source_path(release_dir, raw_dir, kuairec_file.csv_name)
        if source is None and kuairec_file.required:
            raise FileNotFoundError(
                f"{release_dir}: required file {kuairec_file.csv_name} is missing"
            )
        if source is None:
            absent.append(kuairec_file.csv_name)
        else:
            jobs.append((kuairec_file.name, source))
    ground_truth = _source_path(release_dir, raw_dir, GROUND_TRUTH_FILE)
    if ground_truth is not None:
        jobs.append((_GROUND_TRUTH, ground_truth))

    with PreparedWriter(out_dir) as writer:
        old = None if force else _current_manifest(out_dir)
        old_entries: dict[str, Any] = old["files"] if old else {}
        report = PrepareReport(out_dir=out_dir, release_dir=release_dir, absent=absent)
        built = {name for name, _ in jobs}
        report.removed = [
            entry["parquet"]
            for name, entry in old_entries.items()
            if name not in built and (out_dir / entry["parquet"]).exists()
        ]
        bar = tqdm(jobs, desc="prepare", unit="file", disable=not progress)
        for name, source in bar:
            bar.set_postfix_str(source.name)
            entry = dict(old_entries[name]) if name in old_entries else None
            if entry is not None and _is_fresh(entry, source, out_dir):
                writer.keep(name, entry)
                report.unchanged.append(name)
            else:
                _build(name, source, writer)
                report.prepared.append(name)
        if report.up_to_date and old is not None and writer.entries == old_entries:
            return report
        writer.publish(release_dir=str(release_dir.resolve()), absent_optional_files=absent)
    return report

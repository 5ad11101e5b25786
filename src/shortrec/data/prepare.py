"""Turn a KuaiRec release folder (CSV) into the Parquet cache that `load_prepared` reads.

The CSVs are parsed and validated once; everything downstream reads typed Parquet. The cache
layout is documented in `shortrec.data.dataset`. `manifest.json` records, per file, the source's
size, mtime and content hash, so a second run skips unchanged files without parsing them (size
and mtime first; the content hash settles a changed mtime). Each Parquet file is written to a
temporary name and renamed, and the manifest is written last: an interrupted run leaves either
the old cache or files the next run rebuilds, never a manifest that vouches for a partial file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xxhash
from tqdm import tqdm

from shortrec import __version__
from shortrec.data.dataset import MANIFEST_FILE
from shortrec.data.read import (
    SIDE_FILE_READERS,
    KuaiRecFormatError,
    check_interactions,
    interaction_rules,
    parse_or_explain,
    scan_interactions,
)
from shortrec.data.schema import (
    GROUND_TRUTH_COLUMNS,
    GROUND_TRUTH_FILE,
    INTERACTION_COLUMNS,
    KUAIREC_FILES,
)
from shortrec.io import atomic_path, atomic_write_text

# Bump when the prepared tables change shape, so old caches are rebuilt.
CACHE_FORMAT_VERSION = 1
RELEASE_DATA_DIR = Path("KuaiRec 2.0") / "data"
_INTERACTION_FILES = ("big_matrix", "small_matrix")
_HASH_CHUNK = 1 << 22
# lz4 writes 2-3x faster than zstd for a Parquet file about 30% larger; writing dominates.
_PARQUET_COMPRESSION = "lz4"


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


def file_hash(path: str | Path) -> str:
    """XXH3-128 of a file's bytes, streamed: about 10 GB/s, so hashing a 1 GB CSV costs a
    tenth of a second (BLAKE2b would take two). It detects changes; it is not a signature."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


def _prepare_interactions(source: Path, target: Path) -> dict[str, Any]:
    """One streaming pass over the CSV feeds the Parquet writer, the row checks and the counts;
    the CSV is never held in memory. A failed check is located afterwards, on the Parquet."""
    table = scan_interactions(source)
    broken = pl.any_horizontal([rule.violated.fill_null(False) for rule in interaction_rules()])
    counts = table.select(
        rows=pl.len(),
        broken_rows=broken.sum(),
        null_timestamp_rows=pl.col("timestamp").null_count(),
    )
    row_hashes = table.select(pl.struct(pl.all()).hash())
    with atomic_path(target) as tmp:
        sink = table.sink_parquet(tmp, compression=_PARQUET_COMPRESSION, lazy=True)
        _, counted, hashed = parse_or_explain(
            lambda: pl.collect_all([sink, counts, row_hashes], engine="streaming"),
            source,
            INTERACTION_COLUMNS,
        )
        if counted["broken_rows"][0]:
            check_interactions(pl.scan_parquet(tmp), source)
    rows = int(counted["rows"][0])
    return {
        "rows": rows,
        "duplicate_rows": rows - distinct_row_count(hashed.to_series().to_numpy()),
        "null_timestamp_rows": int(counted["null_timestamp_rows"][0]),
    }


def _prepare_side_file(name: str, source: Path, target: Path) -> dict[str, Any]:
    frame = SIDE_FILE_READERS[name](source)
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp, compression=_PARQUET_COMPRESSION)
    return {"rows": frame.height}


def _copy_ground_truth(source: Path, target: Path) -> dict[str, Any]:
    schema = pl.read_parquet_schema(source)
    missing = [name for name in GROUND_TRUTH_COLUMNS if name not in schema]
    if missing:
        raise KuaiRecFormatError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))}; expected "
            f"{', '.join(GROUND_TRUTH_COLUMNS)}"
        )
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return {"rows": pl.scan_parquet(target).select(pl.len()).collect().item()}


def _build(name: str, source: Path, target: Path) -> dict[str, Any]:
    """Write one cache file and describe it for the manifest."""
    if name in _INTERACTION_FILES:
        stats = _prepare_interactions(source, target)
    elif name == GROUND_TRUTH_FILE:
        stats = _copy_ground_truth(source, target)
    else:
        stats = _prepare_side_file(name, source, target)
    stat = source.stat()
    return {
        "source": str(source.resolve()),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "source_xxh3_128": file_hash(source),
        "parquet": target.name,
        "parquet_size": target.stat().st_size,
        "parquet_xxh3_128": file_hash(target),
        **stats,
    }


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a prepared cache, or None if there is none (or it is unreadable)."""
    path = Path(out_dir) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("cache_format_version") != CACHE_FORMAT_VERSION:
        return None
    return manifest


def prepare(
    raw_dir: str | Path, out_dir: str | Path, force: bool = False, progress: bool = False
) -> PrepareReport:
    """Validate the release in `raw_dir` and write the Parquet cache to `out_dir`.

    Unchanged sources are skipped (unless `force`); bad input raises KuaiRecFormatError
    (file, line, column) or FileNotFoundError, leaving the previous cache untouched.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    release_dir = find_release_dir(raw_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = None if force else read_manifest(out_dir)
    old_entries: dict[str, Any] = old["files"] if old else {}
    report = PrepareReport(out_dir=out_dir, release_dir=release_dir)

    jobs: list[tuple[str, Path, Path]] = []
    for kuairec_file in KUAIREC_FILES:
        source = _source_path(release_dir, raw_dir, kuairec_file.csv_name)
        target = out_dir / f"{kuairec_file.name}.parquet"
        if source is None and kuairec_file.required:
            raise FileNotFoundError(
                f"{release_dir}: required file {kuairec_file.csv_name} is missing"
            )
        if source is None:
            report.absent.append(kuairec_file.csv_name)
            if target.exists():
                target.unlink()
                report.removed.append(target.name)
            continue
        jobs.append((kuairec_file.name, source, target))
    ground_truth = _source_path(release_dir, raw_dir, GROUND_TRUTH_FILE)
    if ground_truth is not None:
        jobs.append((GROUND_TRUTH_FILE, ground_truth, out_dir / GROUND_TRUTH_FILE))
    elif (out_dir / GROUND_TRUTH_FILE).exists():
        (out_dir / GROUND_TRUTH_FILE).unlink()
        report.removed.append(GROUND_TRUTH_FILE)

    entries: dict[str, Any] = {}
    bar = tqdm(jobs, desc="prepare", unit="file", disable=not progress)
    for name, source, target in bar:
        bar.set_postfix_str(source.name)
        entry = dict(old_entries[name]) if name in old_entries else None
        if _is_fresh(entry, source, out_dir):
            entries[name] = entry
            report.unchanged.append(name)
        else:
            entries[name] = _build(name, source, target)
            report.prepared.append(name)

    if report.up_to_date and old is not None and entries == old_entries:
        return report
    manifest = {
        "cache_format_version": CACHE_FORMAT_VERSION,
        "shortrec_version": __version__,
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "release_dir": str(release_dir.resolve()),
        "absent_optional_files": report.absent,
        "files": entries,
    }
    atomic_write_text(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return report

"""Load a prepared KuaiRec release (the Parquet folder written by `shortrec data prepare`).

Folder layout, one directory per release:
    big_matrix.parquet, small_matrix.parquet   PREPARED_INTERACTION_COLUMNS
    item_categories.parquet                    video_id, tags: list[int64]
    kuairec_caption_category.parquet           CAPTION_COLUMNS with topic_tag: list[str]
    user_features.parquet                      USER_FEATURE_COLUMNS (optional)
    item_daily_features.parquet                ITEM_DAILY_COLUMNS (optional)
    social_network.parquet                     user_id, friend_list: list[int64] (optional)
    ground_truth.parquet                       GROUND_TRUTH_COLUMNS (synthetic worlds only)
    item_attributes.parquet                    an imported item table: video_id + its fields,
                                               typed (optional; see shortrec.data.importer)
    tag_names.parquet                          tag, field, name: what each tag id means
                                               (optional; imported logs)
    manifest.json                              what the folder holds, and proof of it
    features/                                  the feature cache (shortrec.data.features)

The manifest (CACHE_FORMAT_VERSION 2) is a JSON object; any writer of a prepared folder
(`data prepare`, `data import`) produces it through `shortrec.data.prepare.publish_prepared`:
    cache_format_version   2
    shortrec_version       the version that wrote the folder
    prepared_at            UTC time, ISO 8601
    files                  one entry per table, keyed by table name (the file stem above):
        parquet              the file's name in the folder ("big_matrix.parquet")
        parquet_size         its size in bytes
        parquet_xxh3_128     XXH3-128 of its bytes (hex)
        rows                 its row count
        ...                  whatever the writer adds: for `prepare`, the source CSV's path,
                             size, mtime and hash (source, source_size, source_mtime_ns,
                             source_xxh3_128), and for interaction tables duplicate_rows and
                             null_timestamp_rows
    ...                    writer-level fields: `prepare` adds release_dir and
                           absent_optional_files
A folder is switched in whole (built beside it, then renamed into place), so the manifest and
the tables always belong together. The loader checks each table it reads against its entry
(size, then content hash: about 10 GB/s, a few hundredths of a second for big_matrix) and
refuses a folder whose files do not match, rather than train on a half-written or edited cache.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import xxhash

from shortrec.data.schema import PREPARED_INTERACTION_COLUMNS

MANIFEST_FILE = "manifest.json"
# Bump when the prepared tables or the manifest change shape, so old folders are rebuilt.
CACHE_FORMAT_VERSION = 2
REQUIRED_TABLES = ("big_matrix", "small_matrix", "item_categories")
OPTIONAL_TABLES = (
    "kuairec_caption_category",
    "user_features",
    "item_daily_features",
    "social_network",
    "ground_truth",
    "item_attributes",
    "tag_names",
)
# An imported log's item table, typed (token -> String, token_seq -> List(String), float ->
# Float64), and what its tag ids mean: the names `recommend`, the feed and the report show.
ITEM_ATTRIBUTES_TABLE = "item_attributes"
TAG_NAMES_TABLE = "tag_names"
_HASH_CHUNK = 1 << 22
_PREPARE_HINT = "run `shortrec data prepare RAW_DIR --out DIR` (or `data import`) again"


class PreparedDataError(ValueError):
    """A prepared folder is missing, incomplete, or does not match its manifest."""


@dataclass
class KuaiRecData:
    """The tables of one prepared release, with raw KuaiRec ids."""

    big_matrix: pl.DataFrame
    small_matrix: pl.DataFrame
    videos: pl.DataFrame  # one row per video: tags, caption, categories, duration
    users: pl.DataFrame | None
    item_daily_features: pl.DataFrame | None
    social_network: pl.DataFrame | None
    ground_truth: pl.DataFrame | None
    source: Path


def file_hash(path: str | Path) -> str:
    """XXH3-128 of a file's bytes, streamed: about 10 GB/s, so hashing a 1 GB CSV costs a
    tenth of a second (BLAKE2b would take two). It detects changes; it is not a signature."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder; FileNotFoundError when there is none,
    PreparedDataError when it is unreadable or from another cache format."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a prepared KuaiRec release (no {MANIFEST_FILE}); "
            "run `shortrec data prepare RAW_DIR --out DIR` first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PreparedDataError(f"{path}: unreadable ({error}); {_PREPARE_HINT}") from error
    version = manifest.get("cache_format_version") if isinstance(manifest, dict) else None
    if version != CACHE_FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
        raise PreparedDataError(
            f"{path}: cache format {version!r}, this shortrec reads {CACHE_FORMAT_VERSION}; "
            f"{_PREPARE_HINT}"
        )
    return manifest


def verify_table(directory: Path, manifest: dict[str, Any], name: str) -> Path | None:
    """The path of table `name` once checked against its manifest entry; None for an optional
    table the folder does not have. Raises PreparedDataError on any mismatch."""
    entry = manifest["files"].get(name)
    path = directory / (entry["parquet"] if entry else f"{name}.parquet")
    if entry is None:
        if name in REQUIRED_TABLES or path.exists():
            state = "is missing" if name in REQUIRED_TABLES else "is there but not listed"
            raise PreparedDataError(
                f"{path} {state} in {MANIFEST_FILE}: the folder is incomplete; {_PREPARE_HINT}"
            )
        return None
    if not path.is_file():
        raise PreparedDataError(
            f"{path}: listed in {MANIFEST_FILE} but missing; the folder was changed after it "
            f"was written; {_PREPARE_HINT}"
        )
    size = path.stat().st_size
    if size != entry["parquet_size"]:
        raise PreparedDataError(
            f"{path}: {size:,} bytes but {MANIFEST_FILE} records {entry['parquet_size']:,}; "
            f"the file was changed or half-written; {_PREPARE_HINT}"
        )
    if file_hash(path) != entry["parquet_xxh3_128"]:
        raise PreparedDataError(
            f"{path}: content hash differs from the one {MANIFEST_FILE} records; the file was "
            f"changed after it was written; {_PREPARE_HINT}"
        )
    return path


def video_table(
    item_categories: pl.DataFrame,
    captions: pl.DataFrame | None,
    interactions: list[pl.DataFrame],
) -> pl.DataFrame:
    """One row per video: tags, caption and categories, and its duration (median over views)."""
    durations = (
        pl.concat([frame.select("video_id", "video_duration") for frame in interactions])
        .group_by("video_id")
        .agg(pl.col("video_duration").median().cast(pl.Int64).alias("video_duration"))
    )
    videos = item_categories.join(durations, on="video_id", how="full", coalesce=True)
    if captions is not None:
        videos = videos.join(captions, on="video_id", how="left")
    return videos.sort("video_id")


def with_item_names(
    videos: pl.DataFrame,
    attributes: pl.DataFrame | None,
    roles: dict[str, str],
    vocabulary: pl.DataFrame | None,
) -> pl.DataFrame:
    """An imported log's names on the video table: `caption` (the item table's title field,
    where there is no KuaiRec caption), `categories` (its category field, a list of names)
    and `tag_names` (each tag's name, in the order of `tags`)."""
    if vocabulary is not None and "tags" in videos.columns:
        names = (
            videos.select("video_id", "tags")
            .explode("tags")
            .join(vocabulary.select(pl.col("tag").alias("tags"), "name"), on="tags", how="left")
            .group_by("video_id", maintain_order=True)
            .agg(pl.col("name").drop_nulls().alias("tag_names"))
        )
        videos = videos.join(names, on="video_id", how="left")
    if attributes is None:
        return videos
    columns = [pl.col("video_id")]
    title, category = roles.get("title"), roles.get("category")
    if title and "caption" not in videos.columns:
        columns.append(pl.col(title).cast(pl.String).alias("caption"))
    if category:
        values = pl.col(category)
        if attributes.schema[category] != pl.List(pl.String):
            values = pl.concat_list(values.cast(pl.String)).list.drop_nulls()
        columns.append(values.alias("categories"))
    if len(columns) == 1:
        return videos
    return videos.join(attributes.select(columns), on="video_id", how="left")


def first_occurrences(path: str | Path) -> pl.Series:
    """True on the first occurrence of each distinct row of a Parquet table, judged on whole
    rows through two 64-bit row hashes (a false match needs a 128-bit collision). The rows are
    streamed, so only the hashes are ever in memory, never the whole table."""
    row = pl.struct(pl.all())
    hashes = (
        pl.scan_parquet(path)
        .select(a=row.hash(seed=1), b=row.hash(seed=2))
        .collect(engine="streaming")
    )
    return hashes.select(pl.struct("a", "b").is_first_distinct()).to_series()


def _read_big_matrix(path: Path, columns: list[str], drop_duplicates: bool) -> pl.DataFrame:
    if not drop_duplicates:
        return pl.read_parquet(path, columns=columns)
    if set(columns) == set(PREPARED_INTERACTION_COLUMNS):
        return pl.read_parquet(path, columns=columns).unique(maintain_order=True)
    return pl.read_parquet(path, columns=columns).filter(first_occurrences(path))


def load_prepared(
    directory: str | Path,
    drop_duplicates: bool = True,
    columns: Sequence[str] | None = None,
    side_tables: bool = True,
) -> KuaiRecData:
    """Read a prepared release, each table checked against the manifest first.

    Exact duplicate rows of big_matrix (7.7% in the real file, a logging artefact) are dropped
    unless `drop_duplicates=False`. To read only what a model needs: `columns` names the
    interaction columns to read (default: all; duplicates are still judged on whole rows), and
    `side_tables=False` skips the user features, item daily features and social network (None
    then). The video table (tags, captions, duration) is always built.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    wanted = list(PREPARED_INTERACTION_COLUMNS) if columns is None else list(columns)
    unknown = [name for name in wanted if name not in PREPARED_INTERACTION_COLUMNS]
    if unknown:
        raise ValueError(
            f"unknown interaction column(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(PREPARED_INTERACTION_COLUMNS)}"
        )
    read = wanted + [name for name in ("video_id", "video_duration") if name not in wanted]

    def table(name: str) -> pl.DataFrame | None:
        path = verify_table(directory, manifest, name)
        return None if path is None else pl.read_parquet(path)

    big_path = verify_table(directory, manifest, "big_matrix")
    small_path = verify_table(directory, manifest, "small_matrix")
    assert big_path is not None and small_path is not None  # required tables
    big = _read_big_matrix(big_path, read, drop_duplicates)
    small = pl.read_parquet(small_path, columns=read)
    item_categories = table("item_categories")
    assert item_categories is not None
    videos = video_table(item_categories, table("kuairec_caption_category"), [big, small])
    roles = manifest["files"].get(ITEM_ATTRIBUTES_TABLE, {}).get("roles", {})
    videos = with_item_names(videos, table(ITEM_ATTRIBUTES_TABLE), roles, table(TAG_NAMES_TABLE))
    return KuaiRecData(
        big_matrix=big.select(wanted),
        small_matrix=small.select(wanted),
        videos=videos,
        users=table("user_features") if side_tables else None,
        item_daily_features=table("item_daily_features") if side_tables else None,
        social_network=table("social_network") if side_tables else None,
        ground_truth=table("ground_truth"),
        source=directory,
    )

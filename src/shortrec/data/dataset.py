"""Load a prepared KuaiRec release (the Parquet cache written by `shortrec data prepare`).

Cache layout, one directory per release:
    big_matrix.parquet, small_matrix.parquet   PREPARED_INTERACTION_COLUMNS
    item_categories.parquet                    video_id, tags: list[int64]
    kuairec_caption_category.parquet           CAPTION_COLUMNS with topic_tag: list[str]
    user_features.parquet                      USER_FEATURE_COLUMNS (optional)
    item_daily_features.parquet                ITEM_DAILY_COLUMNS (optional)
    social_network.parquet                     user_id, friend_list: list[int64] (optional)
    ground_truth.parquet                       synthetic worlds only
    manifest.json                              row counts and content hashes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shortrec.data.schema import GROUND_TRUTH_FILE

MANIFEST_FILE = "manifest.json"


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


def _read_optional(directory: Path, name: str) -> pl.DataFrame | None:
    path = directory / f"{name}.parquet"
    return pl.read_parquet(path) if path.exists() else None


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


def load_prepared(directory: str | Path, drop_duplicates: bool = True) -> KuaiRecData:
    """Read a prepared release. Exact duplicate rows of big_matrix (7.7% in the real file,
    a logging artefact) are dropped unless `drop_duplicates=False`."""
    directory = Path(directory)
    manifest = directory / MANIFEST_FILE
    if not manifest.exists():
        raise FileNotFoundError(
            f"{directory} is not a prepared KuaiRec release (no {MANIFEST_FILE}); "
            "run `shortrec data prepare RAW_DIR --out DIR` first"
        )
    big = pl.read_parquet(directory / "big_matrix.parquet")
    small = pl.read_parquet(directory / "small_matrix.parquet")
    if drop_duplicates:
        big = big.unique(maintain_order=True)
    captions = _read_optional(directory, "kuairec_caption_category")
    videos = video_table(
        pl.read_parquet(directory / "item_categories.parquet"), captions, [big, small]
    )
    gt_path = directory / GROUND_TRUTH_FILE
    return KuaiRecData(
        big_matrix=big,
        small_matrix=small,
        videos=videos,
        users=_read_optional(directory, "user_features"),
        item_daily_features=_read_optional(directory, "item_daily_features"),
        social_network=_read_optional(directory, "social_network"),
        ground_truth=pl.read_parquet(gt_path) if gt_path.exists() else None,
        source=directory,
    )

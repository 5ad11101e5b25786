"""Top-N lists from any Recommender, batched over users, written to CSV or Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from shortrec.data.histories import Histories, IdMap
from shortrec.evaluation.protocol import rank_nan_last
from shortrec.io import atomic_path
from shortrec.models.base import Recommender
from shortrec.training.sequences import fast_index

RECOMMENDATION_SCHEMA = {
    "user_id": pl.Int64,
    "rank": pl.Int32,
    "video_id": pl.Int64,
    "score": pl.Float32,
}


def recommend(
    model: Recommender,
    user_ids: np.ndarray,
    histories: Histories,
    candidate_video_ids: np.ndarray,
    k: int = 10,
    exclude_seen: bool = True,
    batch_size: int = 1024,
) -> pl.DataFrame:
    """The `k` best candidates per user as (user_id, rank 1..k, video_id, score).

    Videos in a user's history are left out by default (a short-video feed does not replay);
    a user with fewer than `k` eligible candidates gets a shorter list."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    user_ids = np.asarray(user_ids, dtype=np.int64)
    candidates = np.asarray(candidate_video_ids, dtype=np.int64)
    candidate_map = IdMap(np.unique(candidates))
    column_of_sorted = np.full(len(candidate_map), -1, dtype=np.int64)
    column_of_sorted[candidate_map.index(candidates)] = np.arange(len(candidates))
    width = min(k, len(candidates))
    frames = []
    for start in range(0, len(user_ids), batch_size):
        batch = user_ids[start : start + batch_size]
        scores = np.asarray(model.score(batch, candidates, histories), dtype=np.float32).copy()
        rank_nan_last(scores)
        ranked = torch.from_numpy(scores)
        if exclude_seen:
            row, col = _seen_pairs(histories, batch, candidate_map, column_of_sorted)
            ranked[row, col] = -torch.inf
        top_scores, top = torch.topk(ranked, width, dim=1)
        keep = (top_scores > -torch.inf).numpy().ravel()
        top = top.numpy()
        frames.append(
            pl.DataFrame(
                {
                    "user_id": np.repeat(batch, width)[keep],
                    "rank": np.tile(np.arange(1, width + 1), len(batch))[keep],
                    "video_id": candidates[top].ravel()[keep],
                    "score": np.take_along_axis(scores, top, axis=1).ravel()[keep],
                },
                schema=RECOMMENDATION_SCHEMA,
            )
        )
    if not frames:
        return pl.DataFrame(schema=RECOMMENDATION_SCHEMA)
    return pl.concat(frames)


def _seen_pairs(
    histories: Histories, user_ids: np.ndarray, candidate_map: IdMap, column_of_sorted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row in `user_ids`, candidate column) of every candidate each user has viewed."""
    row, flat = histories.gather(user_ids)
    sorted_col = fast_index(candidate_map, histories.video_ids[flat])
    known = sorted_col >= 0
    return row[known], column_of_sorted[sorted_col[known]]


# What a list shows beside each video id, in order: KuaiRec's caption and first-level
# category, an imported log's title (as `caption`) and categories, and the tags, by name
# where the data names them (`tag_names`) and as ids otherwise.
VIDEO_NAME_COLUMNS = ("caption", "first_level_category_name", "categories", "tag_names", "tags")


def with_video_names(table: pl.DataFrame, videos: pl.DataFrame) -> pl.DataFrame:
    """`table` (with a video_id column) joined with the videos' names and categories."""
    shown = [c for c in VIDEO_NAME_COLUMNS if c in videos.columns]
    if "tag_names" in shown:
        shown.remove("tags")
    return table.join(videos.select("video_id", *shown), on="video_id", how="left")


def write_recommendations(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write atomically as Parquet (.parquet) or CSV (.csv)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"recommendations go to a .parquet or .csv file, got {path}")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_csv(tmp)
    return path

"""Raw KuaiRec ids and per-user viewing histories.

Raw KuaiRec ids are the public ids everywhere. Models index their embedding tables with dense
positions; an `IdMap` holds that mapping and travels with the model, so a model trained on
big_matrix scores small_matrix (or a live event stream) without re-mapped copies of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl


@dataclass(frozen=True)
class IdMap:
    """Sorted raw ids; the position of a raw id is its dense index."""

    raw_ids: np.ndarray

    @classmethod
    def from_ids(cls, ids: np.ndarray | pl.Series) -> IdMap:
        return cls(np.unique(np.asarray(ids, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.raw_ids)

    @cached_property
    def dense_table(self) -> np.ndarray | None:
        """Dense index by raw id (-1: unknown; the last slot stands for every id out of
        range) when the raw ids are small non-negative integers, as KuaiRec's are; else
        None. Built once: a look-up then costs one gather, not a binary search per id."""
        ids = self.raw_ids
        if len(ids) == 0 or ids[0] < 0 or ids[-1] > 4 * len(ids) + 1_000_000:
            return None
        table = np.full(int(ids[-1]) + 2, -1, dtype=np.int64)
        table[ids] = np.arange(len(ids))
        return table

    def index(self, raw: np.ndarray | pl.Series, unknown: int = -1) -> np.ndarray:
        """Dense indices of raw ids; ids this map has never seen get `unknown`."""
        raw = np.asarray(raw, dtype=np.int64)
        if len(self.raw_ids) == 0:
            return np.full(raw.shape, unknown, dtype=np.int64)
        pos = np.searchsorted(self.raw_ids, raw)
        pos_clipped = np.minimum(pos, len(self.raw_ids) - 1)
        known = self.raw_ids[pos_clipped] == raw
        return np.where(known, pos_clipped, unknown).astype(np.int64)

    def to_list(self) -> list[int]:
        return self.raw_ids.tolist()

    @classmethod
    def from_list(cls, ids: list[int]) -> IdMap:
        return cls(np.asarray(ids, dtype=np.int64))


@dataclass(frozen=True)
class Histories:
    """Every user's views in time order, stored as one flat array with offsets (CSR layout).

    Built once from an interactions frame; `views_of` is an O(1) slice, never a scan.
    """

    user_ids: np.ndarray  # sorted raw user ids
    offsets: np.ndarray  # len(user_ids) + 1
    video_ids: np.ndarray
    watch_ratios: np.ndarray
    timestamps: np.ndarray

    @classmethod
    def from_frame(cls, interactions: pl.DataFrame) -> Histories:
        """Group views by user, ordered by timestamp (rows without one keep file order, first)."""
        ordered = (
            interactions.select("user_id", "video_id", "watch_ratio", "timestamp")
            .with_row_index("_row")
            .sort(["user_id", "timestamp", "_row"], nulls_last=False)
        )
        users = ordered["user_id"].to_numpy()
        user_ids, starts = np.unique(users, return_index=True)
        offsets = np.append(starts, len(users)).astype(np.int64)
        return cls(
            user_ids=user_ids.astype(np.int64),
            offsets=offsets,
            video_ids=ordered["video_id"].to_numpy().astype(np.int64),
            watch_ratios=ordered["watch_ratio"].to_numpy().astype(np.float32),
            timestamps=ordered["timestamp"].fill_null(np.nan).to_numpy().astype(np.float64),
        )

    @classmethod
    def empty(cls) -> Histories:
        return cls.from_frame(
            pl.DataFrame(
                schema={
                    "user_id": pl.Int64,
                    "video_id": pl.Int64,
                    "watch_ratio": pl.Float64,
                    "timestamp": pl.Float64,
                }
            )
        )

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def position(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user in this table, -1 for users without history."""
        return IdMap(self.user_ids).index(user_ids)

    def slices(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of each given user's views in the flat arrays; (0, 0) for users
        without history."""
        rows = self.position(np.asarray(user_ids, dtype=np.int64))
        known = rows >= 0
        starts = np.zeros(len(rows), dtype=np.int64)
        lengths = np.zeros(len(rows), dtype=np.int64)
        starts[known] = self.offsets[rows[known]]
        lengths[known] = self.lengths[rows[known]]
        return starts, lengths

    def gather(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner, flat) of every view of the given users, user by user in the given order,
        oldest first: `owner` is the position in `user_ids`, `flat` the index into
        `video_ids` / `watch_ratios` / `timestamps`. One slice per user, never a scan."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(user_ids) == 1 and len(self.user_ids) == 1 and user_ids[0] == self.user_ids[0]:
            # A server scoring one user from that user's own table: every view, in order.
            return np.zeros(len(self.video_ids), np.int64), np.arange(len(self.video_ids))
        starts, lengths = self.slices(user_ids)
        return np.repeat(np.arange(len(starts)), lengths), flat_ranges(starts, lengths)

    def views_of(self, user_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(video_ids, watch_ratios) of one user, oldest first; empty for unknown users."""
        row = int(self.position(np.array([user_id]))[0])
        if row < 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        lo, hi = self.offsets[row], self.offsets[row + 1]
        return self.video_ids[lo:hi], self.watch_ratios[lo:hi]

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "user_id": np.repeat(self.user_ids, self.lengths),
                "video_id": self.video_ids,
                "watch_ratio": self.watch_ratios.astype(np.float64),
                "timestamp": self.timestamps,
            }
        ).with_columns(pl.col("timestamp").fill_nan(None))

    def extend(self, events: pl.DataFrame) -> Histories:
        """A new table with `events` (user_id, video_id, watch_ratio, timestamp) appended."""
        columns = {"user_id": pl.Int64, "video_id": pl.Int64, "watch_ratio": pl.Float64,
                   "timestamp": pl.Float64}  # fmt: skip
        appended = events.select(list(columns)).cast(columns)
        return Histories.from_frame(pl.concat([self.to_frame(), appended]))

    def seen_matrix(self, user_ids: np.ndarray, video_map: IdMap):
        """Sparse (users x videos) 0/1 matrix of what each given user has watched."""
        import scipy.sparse as sp

        row_idx, flat = self.gather(user_ids)
        cols = video_map.index(self.video_ids[flat])
        keep = cols >= 0
        data = np.ones(int(keep.sum()), dtype=np.float32)
        matrix = sp.csr_matrix(
            (data, (row_idx[keep], cols[keep])), shape=(len(user_ids), len(video_map))
        )
        matrix.data[:] = 1.0  # repeated views count once
        return matrix


def flat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c), without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    group_start = np.cumsum(counts) - counts
    return np.repeat(np.asarray(starts, dtype=np.int64) - group_start, counts) + np.arange(total)

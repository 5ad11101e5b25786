"""The sparse user x video matrix every collaborative-filtering model learns from.

ALS, BPR, EASE and the autoencoders all read views through `ViewWeighting`, so they agree on
what one view is worth:

- `weighting="binary"`: every view weighs 1;
  `"linear"`: its watch ratio; `"log"`: log1p(watch ratio) (long re-watches saturate).
- watch ratios are clipped to `max_watch_ratio` first: KuaiRec has looped videos with
  ratios in the hundreds, which would otherwise dominate a user's row.
- views with watch ratio below `min_watch_ratio` are dropped (e.g. 0.7 keeps only the views
  the seed's like rule calls liked).
- repeated views of one (user, video) pair become one entry: their largest weight
  (`repeat="max"`, the default, since a re-watch is one preference and 7.7% of big_matrix
  rows are duplicate logs) or the sum of their weights (`repeat="sum"`).

Entries whose weight is 0 (a log/linear weighted view with watch ratio 0) are kept as
explicit zeros, so a model that turns weights into confidences (ALS: 1 + alpha * weight) still
sees the view.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import scipy.sparse as sp

from shortrec.data.histories import Histories, IdMap

WEIGHTINGS = ("binary", "linear", "log")
REPEATS = ("max", "sum")
_MAX_LOOKUP_TABLE = 16_000_000  # raw ids up to this use a lookup table (<= 128 MB)
WEIGHTING_HELP = "How a view's watch ratio weighs: binary | linear | log (log1p)."


def hyperparameter(default, help: str):
    """A dataclass field whose `help` the CLI shows beside its flag."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ViewWeighting:
    """Hyperparameters that turn views into matrix entries; models inherit these fields."""

    weighting: str = hyperparameter("log", WEIGHTING_HELP)
    min_watch_ratio: float = hyperparameter(0.0, "Drop views whose watch ratio is below this.")
    max_watch_ratio: float = hyperparameter(5.0, "Clip watch ratios to this first.")
    repeat: str = hyperparameter("max", "Repeated views of a pair: max | sum of weights.")

    def check_weighting(self) -> None:
        """Raise a clear error for a weighting setting no model can use."""
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.repeat not in REPEATS:
            raise ValueError(f"repeat must be one of {REPEATS}, got {self.repeat!r}")
        if self.max_watch_ratio <= 0:
            raise ValueError(f"max_watch_ratio must be > 0, got {self.max_watch_ratio}")

    def view_weights(self, watch_ratio: np.ndarray) -> np.ndarray:
        """Weight of each view (float32), before dropping and merging repeats."""
        ratio = np.clip(
            np.nan_to_num(np.asarray(watch_ratio, dtype=np.float32)), 0.0, self.max_watch_ratio
        )
        if self.weighting == "binary":
            return np.ones_like(ratio)
        if self.weighting == "linear":
            return ratio
        return np.log1p(ratio)

    def views_matrix(self, views: pl.DataFrame, users: IdMap, videos: IdMap) -> sp.csr_matrix:
        """(len(users) x len(videos)) matrix of `views` (user_id, video_id, watch_ratio);
        views of users or videos outside the maps are ignored."""
        missing = {"user_id", "video_id", "watch_ratio"} - set(views.columns)
        if missing:
            raise ValueError(f"views frame lacks column(s) {sorted(missing)}")
        return self._matrix(
            positions(users, views["user_id"].to_numpy()),
            positions(videos, views["video_id"].to_numpy()),
            views["watch_ratio"].to_numpy(),
            (len(users), len(videos)),
        )

    def history_matrix(
        self, histories: Histories, user_ids: np.ndarray, videos: IdMap
    ) -> sp.csr_matrix:
        """One row per entry of `user_ids` (in that order) holding that user's history;
        users without history get empty rows."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        history_rows = histories.position(user_ids)
        found = history_rows >= 0
        lengths = np.zeros(len(user_ids), dtype=np.int64)
        starts = np.zeros(len(user_ids), dtype=np.int64)
        lengths[found] = histories.lengths[history_rows[found]]
        starts[found] = histories.offsets[history_rows[found]]
        # Flat index of every history view of every requested user, without a Python loop.
        first_of_row = np.cumsum(lengths) - lengths
        flat = np.repeat(starts - first_of_row, lengths) + np.arange(lengths.sum())
        return self._matrix(
            np.repeat(np.arange(len(user_ids)), lengths),
            positions(videos, histories.video_ids[flat]),
            histories.watch_ratios[flat],
            (len(user_ids), len(videos)),
        )

    def _matrix(
        self, rows: np.ndarray, cols: np.ndarray, watch_ratio: np.ndarray, shape: tuple[int, int]
    ) -> sp.csr_matrix:
        self.check_weighting()
        watch_ratio = np.nan_to_num(np.asarray(watch_ratio, dtype=np.float32))
        keep = (rows >= 0) & (cols >= 0) & (watch_ratio >= self.min_watch_ratio)
        # Sorting one (row, col) key puts repeats side by side and the matrix in CSR order.
        key = rows[keep].astype(np.int64) * shape[1] + cols[keep]
        order = stable_argsort(key)
        key, weights = key[order], self.view_weights(watch_ratio[keep][order])
        firsts = np.flatnonzero(np.diff(key, prepend=-1))
        merge = np.maximum if self.repeat == "max" else np.add
        merged = merge.reduceat(weights, firsts) if len(firsts) else weights
        key = key[firsts]
        indptr = np.searchsorted(key, np.arange(shape[0] + 1, dtype=np.int64) * shape[1])
        return sp.csr_matrix(
            (merged.astype(np.float32), (key % shape[1]).astype(np.int32), indptr), shape=shape
        )


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """`np.argsort(keys, kind="stable")` for non-negative int64 keys. When key and position
    fit in 64 bits together, it sorts them packed as plain integers instead: numpy's SIMD
    integer sort is ~7x faster than argsort on the 12.5M views of big_matrix."""
    n = len(keys)
    position_bits = max(n - 1, 1).bit_length()
    if n == 0 or int(keys.max()) >= 1 << (63 - position_bits):
        return np.argsort(keys, kind="stable")
    packed = (keys.astype(np.uint64) << np.uint64(position_bits)) | np.arange(n, dtype=np.uint64)
    packed.sort()
    return (packed & np.uint64((1 << position_bits) - 1)).astype(np.int64)


def positions(id_map: IdMap, raw_ids: np.ndarray) -> np.ndarray:
    """`id_map.index(raw_ids)`, through a lookup table when the raw ids are small non-negative
    integers (KuaiRec's are below 11,000): one gather instead of a binary search per view,
    which is most of the matrix-building time on millions of views."""
    raw_ids = np.asarray(raw_ids, dtype=np.int64)
    known = id_map.raw_ids
    if len(known) == 0 or known[0] < 0 or known[-1] >= _MAX_LOOKUP_TABLE:
        return id_map.index(raw_ids)
    table = np.full(known[-1] + 1, -1, dtype=np.int64)
    table[known] = np.arange(len(known))
    inside = (raw_ids >= 0) & (raw_ids <= known[-1])
    return np.where(inside, table[np.clip(raw_ids, 0, known[-1])], -1)


def unknown_videos_last(scores: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Give the columns of unknown videos (`known` False) a score below every known score."""
    scores = np.asarray(scores, dtype=np.float32)
    if not known.all():
        finite = scores[:, known]
        floor = float(finite.min()) - 1.0 if finite.size else -1.0
        scores[:, ~known] = floor
    return scores


def row_popularity(matrix: sp.csr_matrix) -> np.ndarray:
    """Share of users who viewed each video: the fallback score for users with no history."""
    counts = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32)
    return counts / max(matrix.shape[0], 1)

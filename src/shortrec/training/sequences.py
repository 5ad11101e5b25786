"""Users' viewing sequences as dense item ids, and the padded batches a sequence model eats.

Everything is vectorised over a CSR layout (one flat array of items, per-user offsets): no
Python loop ever walks users or positions. Item ids are dense and 1-based; 0 is padding.
Batches are RIGHT-padded (real items first), which is what `SASRecNet` expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shortrec.data.histories import Histories, IdMap, flat_ranges


@dataclass(frozen=True)
class Sequences:
    """Per-user item sequences in time order, CSR layout."""

    user_ids: np.ndarray  # raw ids, one per row (sorted when built from a frame)
    offsets: np.ndarray  # len(user_ids) + 1
    items: np.ndarray  # dense 1-based item ids, int64
    disliked: np.ndarray  # bool per item: the view was disliked by the like rule

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_frame(
        cls, views: pl.DataFrame, video_map: IdMap, disliked: np.ndarray | None = None
    ) -> Sequences:
        """Sequences of `views` (user_id, video_id, timestamp), ordered by time then file
        order; `disliked` is per row of `views`. Videos unknown to `video_map` are dropped."""
        flags = np.zeros(views.height, bool) if disliked is None else np.asarray(disliked, bool)
        ordered = (
            views.select("user_id", "video_id", "timestamp")
            .with_columns(pl.Series("_disliked", flags))
            .with_row_index("_row")
            .sort(["user_id", "timestamp", "_row"], nulls_last=False)
        )
        items = video_map.index(ordered["video_id"]) + 1
        known = items > 0
        users = ordered["user_id"].to_numpy()[known]
        user_ids, starts = np.unique(users, return_index=True)
        return cls(
            user_ids=user_ids.astype(np.int64),
            offsets=np.append(starts, len(users)).astype(np.int64),
            items=items[known].astype(np.int64),
            disliked=ordered["_disliked"].to_numpy()[known],
        )

    @classmethod
    def from_histories(
        cls, histories: Histories, user_ids: np.ndarray, video_map: IdMap
    ) -> Sequences:
        """The known videos of each given user's history, one row per given user (in that
        order; users without history get empty rows). Unknown videos are dropped, so a
        model trained on one matrix reads histories from another."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        owner, flat = histories.gather(user_ids)
        items = fast_index(video_map, histories.video_ids[flat]) + 1
        known = items > 0
        owner = owner[known]
        known_counts = np.bincount(owner, minlength=len(user_ids))
        return cls(
            user_ids=user_ids,
            offsets=np.concatenate([[0], np.cumsum(known_counts)]).astype(np.int64),
            items=items[known].astype(np.int64),
            disliked=np.zeros(int(known.sum()), bool),
        )

    def flat(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in `rows`, item) for every item of the given rows."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.lengths[rows]
        index = flat_ranges(self.offsets[rows], counts)
        return np.repeat(np.arange(len(rows)), counts), self.items[index]

    def tail(self, rows: np.ndarray, maxlen: int) -> tuple[np.ndarray, np.ndarray]:
        """(items (len(rows), L), lengths): the newest `maxlen` items of each row,
        right-padded with 0; L >= 1 even when every row is empty."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.minimum(self.lengths[rows], maxlen)
        first = self.offsets[rows + 1] - lengths
        items, _ = _padded_gather(self.items, first, lengths)
        return items, lengths

    def training_batch(
        self, rows: np.ndarray, maxlen: int, ends: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Next-item training pairs for the given rows: the window of (up to) `maxlen` + 1
        items ending just before index `ends` of each row. Returns right-padded
        (inputs, targets, target_disliked, lengths); inputs[t] is followed by targets[t]."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.minimum(ends, maxlen + 1) - 1
        first = self.offsets[rows] + ends - lengths - 1
        inputs, index = _padded_gather(self.items, first, lengths)
        valid = inputs > 0
        targets = np.where(valid, self.items[index + 1], 0)
        target_disliked = valid & self.disliked[index + 1]
        return inputs, targets, target_disliked, lengths


def fast_index(id_map: IdMap, raw: np.ndarray) -> np.ndarray:
    """`id_map.index(raw)` (-1 for unknown ids) through a dense lookup table when the raw ids
    are small non-negative integers, as KuaiRec's are: one gather instead of a binary search
    per id, which dominated scoring millions of history views."""
    raw = np.asarray(raw, dtype=np.int64)
    ids = id_map.raw_ids
    if len(ids) == 0 or ids[0] < 0 or ids[-1] > 4 * len(ids) + 1_000_000:
        return id_map.index(raw)
    table = np.full(int(ids[-1]) + 2, -1, dtype=np.int64)
    table[ids] = np.arange(len(ids))
    # Ids outside [0, max] land on the trailing -1 slot.
    return table[np.where((raw >= 0) & (raw <= ids[-1]), raw, len(table) - 1)]


def _padded_gather(
    flat: np.ndarray, first: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """flat[first[i] : first[i] + lengths[i]] as right-padded rows, and the flat index of
    every cell (0 where padded)."""
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    offsets = np.arange(width)
    valid = offsets[None, :] < lengths[:, None]
    index = np.where(valid, first[:, None] + offsets[None, :], 0)
    values = np.where(valid, flat[index] if len(flat) else 0, 0)
    return values.astype(np.int64), index


def epoch_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 64
) -> list[np.ndarray]:
    """Rows per batch for one epoch: rows shuffled, then sorted by length inside pools of
    `pool_batches` batches so a batch pads to little more than its own longest sequence,
    while batch contents and batch order stay random."""
    permutation = rng.permutation(len(lengths))
    pool = np.arange(len(permutation)) // (batch_size * pool_batches)
    ordered = permutation[np.lexsort((lengths[permutation], pool))]
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]

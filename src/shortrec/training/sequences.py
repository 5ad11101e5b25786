"""Users' viewing sequences as dense item ids, and the padded batches a sequence model eats.

Everything is vectorised over a CSR layout (one flat array of items, per-user offsets): no
Python loop ever walks users or positions. Item ids are dense and 1-based; 0 is padding.
Batches are RIGHT-padded (real items first), which is what `SASRecNet` expects.

Each view may also carry its outcome as a small feedback code (`FEEDBACK_*`: disliked,
neither, liked by the like rule; 0 is padding), which a model can read beside the item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from shortrec.data.histories import Histories, IdMap, flat_ranges

FEEDBACK_PADDING, FEEDBACK_DISLIKED, FEEDBACK_NEUTRAL, FEEDBACK_LIKED = 0, 1, 2, 3
N_FEEDBACK = 4


def feedback_codes(liked: np.ndarray, disliked: np.ndarray) -> np.ndarray:
    """Feedback code per view from the like rule's labels (liked wins over disliked)."""
    codes = np.full(len(liked), FEEDBACK_NEUTRAL, dtype=np.int64)
    codes[np.asarray(disliked, bool)] = FEEDBACK_DISLIKED
    codes[np.asarray(liked, bool)] = FEEDBACK_LIKED
    return codes


@dataclass(frozen=True)
class Sequences:
    """Per-user item sequences in time order, CSR layout."""

    user_ids: np.ndarray  # raw ids, one per row (sorted when built from a frame)
    offsets: np.ndarray  # len(user_ids) + 1
    items: np.ndarray  # dense 1-based item ids, int64
    disliked: np.ndarray  # bool per item: the view was disliked by the like rule
    feedback: np.ndarray | None = None  # FEEDBACK_* code per item, when known

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_frame(
        cls,
        views: pl.DataFrame,
        video_map: IdMap,
        disliked: np.ndarray | None = None,
        feedback: np.ndarray | None = None,
    ) -> Sequences:
        """Sequences of `views` (user_id, video_id, timestamp), ordered by time then file
        order; `disliked` and `feedback` (codes) are per row of `views`. Videos unknown to
        `video_map` are dropped."""
        flags = np.zeros(views.height, bool) if disliked is None else np.asarray(disliked, bool)
        codes = np.zeros(views.height, np.int64) if feedback is None else feedback
        ordered = (
            views.select("user_id", "video_id", "timestamp")
            .with_columns(pl.Series("_disliked", flags), pl.Series("_feedback", codes))
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
            feedback=None if feedback is None else ordered["_feedback"].to_numpy()[known],
        )

    @classmethod
    def from_histories(
        cls,
        histories: Histories,
        user_ids: np.ndarray,
        video_map: IdMap,
        feedback_of: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> Sequences:
        """The known videos of each given user's history, one row per given user (in that
        order; users without history get empty rows). Unknown videos are dropped, so a
        model trained on one matrix reads histories from another. `feedback_of(items,
        watch_ratios)` labels each kept view with a feedback code."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        owner, flat = histories.gather(user_ids)
        items = fast_index(video_map, histories.video_ids[flat]) + 1
        known = items > 0
        owner = owner[known]
        known_counts = np.bincount(owner, minlength=len(user_ids))
        kept = items[known].astype(np.int64)
        feedback = None
        if feedback_of is not None:
            feedback = feedback_of(kept, histories.watch_ratios[flat][known])
        return cls(
            user_ids=user_ids,
            offsets=np.concatenate([[0], np.cumsum(known_counts)]).astype(np.int64),
            items=kept,
            disliked=np.zeros(len(kept), bool),
            feedback=feedback,
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
        items, lengths, _ = self.tail_with_feedback(rows, maxlen)
        return items, lengths

    def tail_with_feedback(
        self, rows: np.ndarray, maxlen: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`tail` plus the feedback codes of the same cells (None without feedback)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.minimum(self.lengths[rows], maxlen)
        first = self.offsets[rows + 1] - lengths
        items, index = _padded_gather(self.items, first, lengths)
        return items, lengths, self._feedback_at(index, items > 0)

    def older_views(
        self, rows: np.ndarray, window_first: np.ndarray, liked_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The items (1-based) of each row before index `window_first` of that row (only the
        liked ones with `liked_only`), as (flat items, bag offsets) for
        `torch.nn.EmbeddingBag`: the older history a window does not hold."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = np.asarray(window_first, dtype=np.int64)
        index = flat_ranges(self.offsets[rows], counts)
        owner = np.repeat(np.arange(len(rows)), counts)
        if liked_only:
            if self.feedback is None:
                raise ValueError("these sequences carry no feedback codes")
            keep = self.feedback[index] == FEEDBACK_LIKED
            index, owner = index[keep], owner[keep]
        per_row = np.bincount(owner, minlength=len(rows))
        offsets = np.concatenate([[0], np.cumsum(per_row)[:-1]]).astype(np.int64)
        return self.items[index], offsets

    def _feedback_at(self, index: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
        if self.feedback is None:
            return None
        return np.where(valid, self.feedback[index] if len(self.feedback) else 0, 0)

    def training_batch(
        self,
        rows: np.ndarray,
        maxlen: int,
        ends: np.ndarray,
        horizon: int = 1,
        rng: np.random.Generator | None = None,
        with_feedback: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """Next-item training pairs for the given rows: the window of (up to) `maxlen` + 1
        items ending just before index `ends` of each row. Returns right-padded
        (inputs, targets, target_disliked, lengths); inputs[t] is followed by targets[t].
        With `horizon` > 1 the target of each position is drawn uniformly (by `rng`) from
        the row's next `horizon` views (never past the row's end): a later view, not only
        the next one. `with_feedback` adds the feedback codes of inputs and targets."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.minimum(ends, maxlen + 1) - 1
        first = self.offsets[rows] + ends - lengths - 1
        inputs, index = _padded_gather(self.items, first, lengths)
        valid = inputs > 0
        target_index = index + 1
        if horizon > 1:
            if rng is None:
                raise ValueError("a target horizon above 1 needs an rng")
            remaining = np.maximum(self.offsets[rows + 1][:, None] - 1 - index, 1)
            steps = np.minimum(remaining, horizon)
            target_index = index + 1 + (rng.random(index.shape) * steps).astype(np.int64)
        target_index = np.where(valid, target_index, 0)
        targets = np.where(valid, self.items[target_index], 0)
        target_disliked = valid & self.disliked[target_index]
        if not with_feedback:
            return inputs, targets, target_disliked, lengths
        if self.feedback is None:
            raise ValueError("these sequences carry no feedback codes")
        input_feedback = self._feedback_at(index, valid)
        target_feedback = self._feedback_at(target_index, valid)
        return inputs, targets, target_disliked, lengths, input_feedback, target_feedback


def fast_index(id_map: IdMap, raw: np.ndarray) -> np.ndarray:
    """`id_map.index(raw)` (-1 for unknown ids) through the map's dense lookup table when
    it has one (`IdMap.dense_table`): one gather instead of a binary search per id, which
    dominated scoring millions of history views."""
    raw = np.asarray(raw, dtype=np.int64)
    table = id_map.dense_table
    if table is None:
        return id_map.index(raw)
    # Ids outside [0, max] land on the trailing -1 slot.
    return table[np.where((raw >= 0) & (raw < len(table) - 1), raw, len(table) - 1)]


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

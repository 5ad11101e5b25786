"""The feed: a model, the catalogue and every user's views (dataset + live) -> recommendations.

The dataset's views stay one immutable `Histories` table; live events are kept per user and
merged only for the user being served, so an event costs O(1) and a request costs O(that
user's views) — never a rebuild of the whole table. Sequence models thus see a user's newest
views at the next request without retraining.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import polars as pl
import torch

from shortrec.data.histories import Histories, IdMap, flat_ranges
from shortrec.data.schema import UNKNOWN_CATEGORY_ID, UNKNOWN_TEXT
from shortrec.models.base import Recommender

MAX_CACHED_ANSWERS = 65_536  # (user, k) answers kept by `Feed.recommend` (a few MB)


@dataclass(frozen=True)
class ServedModel:
    """A model and where it came from; swapped as one reference so a request never mixes two."""

    model: Recommender
    name: str
    run_dir: str | None = None
    data_dir: str | None = None
    loaded_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Recommendations:
    user_id: int
    model: str
    strategy: str  # "model", or "popularity" for a user with no views at all
    history_length: int
    video_ids: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class RecommendationBatch:
    """Top-k lists of many users, one row each (padded with video id -1, score -inf)."""

    user_ids: np.ndarray
    model: str
    strategies: np.ndarray  # per user: "model", or "popularity" for a user with no views
    history_lengths: np.ndarray
    video_ids: np.ndarray  # (users, k)
    scores: np.ndarray  # (users, k)


@dataclass(frozen=True)
class UserViews:
    """One user's views, oldest first, as a one-user `Histories` plus where each came from."""

    histories: Histories
    live: np.ndarray  # bool per view: posted to the API (True) or from the dataset (False)

    @property
    def video_ids(self) -> np.ndarray:
        return self.histories.video_ids


@dataclass
class _LiveViews:
    video_ids: list[int] = field(default_factory=list)
    watch_ratios: list[float] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)


def _clean_text(value: object) -> str:
    return "" if value is None or value == UNKNOWN_TEXT else str(value)


def video_metadata(videos: pl.DataFrame) -> dict[int, dict]:
    """JSON-ready metadata per video, built once so a request only does dict look-ups."""
    columns = set(videos.columns)

    def column(name: str, default: object) -> pl.Expr:
        return pl.col(name) if name in columns else pl.lit(default).alias(name)

    table = videos.select(
        pl.col("video_id"),
        column("caption", None),
        column("manual_cover_text", None),
        column("tags", None),
        column("topic_tag", None),
        column("categories", None),
        column("tag_names", None),
        column("video_duration", None),
        *(column(f"{level}_level_category_name", None) for level in ("first", "second", "third")),
        *(column(f"{level}_level_category_id", None) for level in ("first", "second", "third")),
    )
    metadata = {}
    for row in table.iter_rows(named=True):
        categories = [
            {"level": level, "id": row[f"{level}_level_category_id"], "name": name}
            for level in ("first", "second", "third")
            if (name := _clean_text(row[f"{level}_level_category_name"]))
            and row[f"{level}_level_category_id"] != UNKNOWN_CATEGORY_ID
        ]
        # An imported log's categories (genres...): names without KuaiRec's levels and ids.
        categories += [
            {"level": "category", "id": None, "name": str(name)} for name in row["categories"] or []
        ]
        metadata[int(row["video_id"])] = {
            "video_id": int(row["video_id"]),
            "caption": _clean_text(row["caption"]),
            "cover_text": _clean_text(row["manual_cover_text"]),
            "categories": categories,
            "tags": [int(tag) for tag in row["tags"] or []],
            "topic_tags": [str(tag) for tag in row["topic_tag"] or []],
            "tag_names": [str(name) for name in row["tag_names"] or []],
            "video_duration_ms": row["video_duration"],
        }
    return metadata


class Feed:
    """Serves recommendations from a swappable model over dataset views plus live events.

    Thread-safe: requests run on a thread pool; live events are appended under a lock and
    the model is replaced by swapping one reference.
    """

    def __init__(self, served: ServedModel, videos: pl.DataFrame, views: pl.DataFrame) -> None:
        if videos.height == 0:
            raise ValueError("the video table is empty: nothing to recommend")
        self.video_info = video_metadata(videos)
        # Each video's metadata as the inside of a JSON object, encoded once for every answer.
        self.video_json = {
            video_id: json.dumps(info, ensure_ascii=False, separators=(",", ":"))[1:-1].encode()
            for video_id, info in self.video_info.items()
        }
        self.catalogue_ids = np.asarray(sorted(self.video_info), dtype=np.int64)
        self._catalogue = IdMap(self.catalogue_ids)
        self.base = Histories.from_frame(views)
        self._base_users = IdMap(self.base.user_ids)
        # Catalogue position of every dataset view, so a batch finds watched videos by lookup.
        self._base_columns = self._catalogue.index(self.base.video_ids).astype(np.int32)
        self.popularity = self._popularity(views)
        self._served = served
        self._live: dict[int, _LiveViews] = {}
        self._live_count = 0
        self._lock = threading.Lock()
        # Answers of `recommend` by (user, k), with the model and the user's live-view count
        # they were made from: the same model and views give the same answer, so a user asking
        # again before their next event (or a swap) costs a look-up, not a scoring.
        self._answers: dict[tuple[int, int], tuple[ServedModel, int, Recommendations]] = {}

    def _popularity(self, views: pl.DataFrame) -> np.ndarray:
        """Distinct viewers per catalogue video: the cold-start ranking."""
        counts = views.group_by("video_id").agg(pl.col("user_id").n_unique().alias("viewers"))
        popularity = np.zeros(len(self.catalogue_ids), dtype=np.float32)
        idx = self._catalogue.index(counts["video_id"])
        known = idx >= 0
        popularity[idx[known]] = counts["viewers"].to_numpy()[known]
        return popularity

    # --- model -------------------------------------------------------------------------------
    @property
    def served(self) -> ServedModel:
        return self._served

    def swap_model(self, served: ServedModel) -> ServedModel:
        """Serve `served` from the next request on; requests in flight finish on the old one."""
        old, self._served = self._served, served
        return old

    # --- events ------------------------------------------------------------------------------
    def add_views(
        self,
        user_ids: np.ndarray,
        video_ids: np.ndarray,
        watch_ratios: np.ndarray,
        timestamps: np.ndarray,
    ) -> None:
        """Append live views (already stored durably by the caller)."""
        rows = zip(
            np.asarray(user_ids, dtype=np.int64).tolist(),
            np.asarray(video_ids, dtype=np.int64).tolist(),
            np.asarray(watch_ratios, dtype=np.float64).tolist(),
            np.asarray(timestamps, dtype=np.float64).tolist(),
            strict=True,
        )
        with self._lock:
            for user_id, video_id, watch_ratio, timestamp in rows:
                live = self._live.setdefault(user_id, _LiveViews())
                live.video_ids.append(video_id)
                live.watch_ratios.append(watch_ratio)
                live.timestamps.append(timestamp)
                self._live_count += 1

    def add_views_frame(self, events: pl.DataFrame) -> None:
        self.add_views(
            events["user_id"].to_numpy(),
            events["video_id"].to_numpy(),
            events["watch_ratio"].to_numpy(),
            events["timestamp"].to_numpy(),
        )

    @property
    def live_count(self) -> int:
        return self._live_count

    def known_videos(self, video_ids: np.ndarray) -> np.ndarray:
        return self._catalogue.index(video_ids) >= 0

    def user_ids(self) -> np.ndarray:
        """Users with any views, dataset or live, sorted."""
        with self._lock:
            live = np.fromiter(self._live, dtype=np.int64, count=len(self._live))
        return np.union1d(self.base.user_ids, live)

    # --- reading -----------------------------------------------------------------------------
    def views_of(self, user_id: int) -> UserViews:
        """The user's dataset views followed by live ones, in time order, as a one-user table."""
        histories, _, live = self._one_user_views(user_id)
        return UserViews(histories=histories, live=live)

    def _one_user_views(self, user_id: int) -> tuple[Histories, np.ndarray, np.ndarray]:
        """(`views_of`'s table, the catalogue position of every view (-1: not in it), live
        flags): one user's merge by slicing, without `_merged_views`' batch bookkeeping."""
        row = int(self._base_users.index(np.array([user_id]))[0])
        if row >= 0:
            lo, hi = self.base.offsets[row], self.base.offsets[row + 1]
            video_ids = self.base.video_ids[lo:hi]
            watch_ratios = self.base.watch_ratios[lo:hi]
            timestamps = self.base.timestamps[lo:hi]
            columns = self._base_columns[lo:hi]
        else:
            video_ids = np.empty(0, np.int64)
            watch_ratios = np.empty(0, np.float32)
            timestamps = np.empty(0, np.float64)
            columns = np.empty(0, np.int32)
        live = np.zeros(len(video_ids), dtype=bool)
        with self._lock:
            extra = self._live.get(user_id)
            if extra is not None:
                extra_videos = np.asarray(extra.video_ids, dtype=np.int64)
                extra_ratios = np.asarray(extra.watch_ratios, dtype=np.float32)
                extra_times = np.asarray(extra.timestamps, dtype=np.float64)
        if extra is not None:
            video_ids = np.concatenate([video_ids, extra_videos])
            watch_ratios = np.concatenate([watch_ratios, extra_ratios])
            timestamps = np.concatenate([timestamps, extra_times])
            columns = np.concatenate([columns, self._catalogue.index(extra_videos)])
            live = np.concatenate([live, np.ones(len(extra_videos), dtype=bool)])
            # Same order as Histories.from_frame: by time, views without one first, stable.
            key = np.nan_to_num(timestamps, nan=-np.inf)
            if (np.diff(key) < 0).any():
                order = np.argsort(key, kind="stable")
                video_ids, watch_ratios = video_ids[order], watch_ratios[order]
                timestamps, columns, live = timestamps[order], columns[order], live[order]
        n = len(video_ids)
        histories = Histories(
            user_ids=np.array([user_id] if n else [], dtype=np.int64),
            offsets=np.array([0, n] if n else [0], dtype=np.int64),
            video_ids=video_ids,
            watch_ratios=watch_ratios,
            timestamps=timestamps,
        )
        return histories, columns.astype(np.int32, copy=False), live

    def cached_answer(self, user_id: int, k: int = 10) -> Recommendations | None:
        """What `recommend` would answer, if it is already known (a dict look-up: cheap
        enough for the event loop); None when the user's feed must be scored."""
        return self._look_up(user_id, k)[2]

    def _look_up(self, user_id: int, k: int) -> tuple[ServedModel, int, Recommendations | None]:
        """(model served now, the user's live-view count, the answer made from both or None)."""
        served = self._served
        with self._lock:
            extra = self._live.get(user_id)
            live = len(extra.video_ids) if extra is not None else 0
            cached = self._answers.get((user_id, k))
        if cached is not None and cached[0] is served and cached[1] == live:
            return served, live, cached[2]
        return served, live, None

    def recommend(self, user_id: int, k: int = 10) -> Recommendations:
        """Top-k unwatched catalogue videos; users with no views at all get the most popular."""
        served, live, cached = self._look_up(user_id, k)
        if cached is not None:
            return cached
        batch = self.recommend_batch(np.array([user_id], dtype=np.int64), k, served=served)
        found = batch.video_ids[0] >= 0
        answer = Recommendations(
            user_id=user_id,
            model=batch.model,
            strategy=str(batch.strategies[0]),
            history_length=int(batch.history_lengths[0]),
            video_ids=batch.video_ids[0][found],
            scores=batch.scores[0][found],
        )
        with self._lock:
            if len(self._answers) >= MAX_CACHED_ANSWERS:
                self._answers.pop(next(iter(self._answers)))  # the oldest entry
            self._answers[(user_id, k)] = (served, live, answer)
        return answer

    def histories_of(self, user_ids: np.ndarray) -> Histories:
        """Dataset views followed by live ones, in time order, of the given users (one table,
        rows in sorted user id order): what the model scores them with."""
        return self._merged_views(user_ids)[0]

    def _merged_views(self, user_ids: np.ndarray) -> tuple[Histories, np.ndarray]:
        """`histories_of` plus the catalogue position of every view (-1: not in it)."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(user_ids) == 1:  # a server's request: slicing, not the batch bookkeeping below
            histories, columns, _ = self._one_user_views(int(user_ids[0]))
            return histories, columns
        users = np.unique(user_ids)
        base_starts, base_lengths = self.base.slices(users)
        with self._lock:
            extras = [self._live.get(int(user)) for user in users]
            live_lengths = np.array([len(e.video_ids) if e else 0 for e in extras], np.int64)
            extras = [e for e in extras if e is not None]
            total = int(live_lengths.sum())
            live_videos = np.fromiter(
                chain.from_iterable(e.video_ids for e in extras), np.int64, total
            )
            live_ratios = np.fromiter(
                chain.from_iterable(e.watch_ratios for e in extras), np.float32, total
            )
            live_times = np.fromiter(
                chain.from_iterable(e.timestamps for e in extras), np.float64, total
            )
        lengths = base_lengths + live_lengths
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Flat positions: each user's dataset views, then their live views.
        base_at = flat_ranges(offsets[:-1], base_lengths)
        base_from = flat_ranges(base_starts, base_lengths)
        live_at = flat_ranges(offsets[:-1] + base_lengths, live_lengths)
        video_ids = np.empty(offsets[-1], np.int64)
        watch_ratios = np.empty(offsets[-1], np.float32)
        timestamps = np.empty(offsets[-1], np.float64)
        columns = np.empty(offsets[-1], np.int32)
        video_ids[base_at] = self.base.video_ids[base_from]
        watch_ratios[base_at] = self.base.watch_ratios[base_from]
        timestamps[base_at] = self.base.timestamps[base_from]
        columns[base_at] = self._base_columns[base_from]
        if total:
            video_ids[live_at], watch_ratios[live_at] = live_videos, live_ratios
            timestamps[live_at] = live_times
            columns[live_at] = self._catalogue.index(live_videos)
            # Same order as views_of: by time, views without one first, stable.
            key = np.nan_to_num(timestamps, nan=-np.inf)
            user_row = np.repeat(np.arange(len(users)), lengths)
            step_down = (np.diff(key) < 0) & (user_row[1:] == user_row[:-1])
            if step_down.any():
                order = np.lexsort((key, user_row))
                video_ids, watch_ratios = video_ids[order], watch_ratios[order]
                timestamps, columns = timestamps[order], columns[order]
        keep = lengths > 0
        histories = Histories(
            user_ids=users[keep],
            offsets=np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64),
            video_ids=video_ids,
            watch_ratios=watch_ratios,
            timestamps=timestamps,
        )
        return histories, columns

    def recommend_batch(
        self,
        user_ids: np.ndarray,
        k: int = 10,
        blocked: np.ndarray | None = None,
        served: ServedModel | None = None,
    ) -> RecommendationBatch:
        """Top-k unwatched catalogue videos for many users with one `score` call: what
        `recommend` serves one user, and what the feed simulator asks for every step.

        `blocked` (users x catalogue, bool) leaves out further videos per user. Users with no
        views at all get the most popular; a user with fewer than k videos left gets a row
        padded with video id -1 and score -inf. `served`: the model to use (default: the
        one served now)."""
        # One read: a swap during this request does not affect it.
        served = self._served if served is None else served
        user_ids = np.asarray(user_ids, dtype=np.int64)
        n, m = len(user_ids), len(self.catalogue_ids)
        histories, columns = self._merged_views(user_ids)
        if n == 1:  # the one user's views, in order
            lengths = np.array([len(columns)], dtype=np.int64)
            users_of_view = np.zeros(len(columns), dtype=np.int64)
        else:
            starts, lengths = histories.slices(user_ids)
            columns = columns[flat_ranges(starts, lengths)]
            users_of_view = np.repeat(np.arange(n), lengths)
        watched = np.zeros((n, m), dtype=bool) if blocked is None else blocked.copy()
        known = columns >= 0
        watched[users_of_view[known], columns[known]] = True
        cold = lengths == 0
        scores = np.empty((n, m), dtype=np.float32)  # what models return: no copy to widen
        scores[cold] = self.popularity
        if (~cold).any():
            scores[~cold] = served.model.score(user_ids[~cold], self.catalogue_ids, histories)
        scores[~np.isfinite(scores)] = -np.inf  # a broken score ranks last, never first
        top = _top_k_rows(scores, watched, k)
        top_scores = np.take_along_axis(scores, top, axis=1).astype(np.float64)
        found = ~np.take_along_axis(watched, top, axis=1)
        return RecommendationBatch(
            user_ids=user_ids,
            model=served.name,
            strategies=np.where(cold, "popularity", "model"),
            history_lengths=lengths,
            video_ids=np.where(found, self.catalogue_ids[top], -1),
            scores=np.where(found, top_scores, -np.inf),
        )


def _top_k_rows(scores: np.ndarray, hidden: np.ndarray, k: int) -> np.ndarray:
    """Per row, positions of the k best scores, best first, equal scores in column order
    (the feed's columns are its sorted video ids: the smaller id first); hidden videos come
    after every shown one, a -inf score after every finite one. The k-th best value comes
    from torch's top-k (several times faster than NumPy's argpartition on one catalogue
    row); ties at it are taken in column order."""
    k = min(k, scores.shape[1])
    rank = np.where(hidden, -np.inf, np.maximum(scores, -np.finfo(scores.dtype).max))
    if scores.shape[1] > k:
        best = torch.topk(torch.from_numpy(rank), k, dim=1, sorted=False)
        kth = best.values.numpy().min(axis=1, keepdims=True)
        if (np.count_nonzero(rank >= kth, axis=1) == k).all():  # no tie at the k-th: top-k it is
            keep = best.indices.numpy()
        else:
            above = rank > kth
            tied = rank == kth
            wanted = k - above.sum(axis=1, keepdims=True)
            chosen = above | (tied & (np.cumsum(tied, axis=1) <= wanted))
            keep = np.nonzero(chosen)[1].reshape(len(rank), k)
    else:
        keep = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    keep = np.sort(keep, axis=1)  # column order, so the stable sort breaks ties by it
    rows = np.arange(len(rank))[:, None]
    return keep[rows, np.argsort(-rank[rows, keep], axis=1, kind="stable")]

"""Where a feed is scored (`serving.scoring`), and the top-k order the feed answers with."""

from __future__ import annotations

import dataclasses
import threading
import time

import anyio
import numpy as np
from test_serving import N_VIDEOS, LastVideoNeighbours, make_feed, world  # noqa: F401

from shortrec.serving.feed import ServedModel, _top_k_rows
from shortrec.serving.scoring import TIMED_BEFORE_INLINE, Scoring


@dataclasses.dataclass
class Recording(LastVideoNeighbours):
    """Records the thread each scoring ran on; works `delay` CPU seconds per scoring."""

    delay: float = 0.0
    threads: list = dataclasses.field(default_factory=list)

    def score(self, user_ids, video_ids, histories):
        self.threads.append(threading.get_ident())
        until = time.thread_time() + self.delay
        while time.thread_time() < until:
            pass
        return super().score(user_ids, video_ids, histories)


def score_users(scoring: Scoring, users: range) -> tuple[int, list]:
    """Scores every user from one event loop; returns the loop's thread id and the answers."""

    async def main():
        return threading.get_ident(), [await scoring.recommend(u, 5) for u in users]

    return anyio.run(main)


def test_a_fast_model_is_scored_on_the_event_loop_once_timed(world):  # noqa: F811
    model = Recording()
    feed = make_feed(world, model)
    scoring = Scoring(feed, threads=2)
    loop, answers = score_users(scoring, range(1, 11))
    timed, after = model.threads[:TIMED_BEFORE_INLINE], model.threads[TIMED_BEFORE_INLINE:]
    assert loop not in timed  # a new model is timed on the scoring threads first
    assert after and set(after) == {loop}  # then scored inline
    fresh = make_feed(world, LastVideoNeighbours())
    for user, answer in zip(range(1, 11), answers, strict=True):  # the same answers
        assert answer.video_ids.tolist() == fresh.recommend(user, 5).video_ids.tolist()
    feed.swap_model(ServedModel(Recording(), name="swapped"))
    assert not scoring.inline(feed.served)  # a swapped-in model is timed anew


def test_a_slow_model_stays_on_the_scoring_threads(world):  # noqa: F811
    model = Recording(delay=0.02)  # over the 5 ms an inline scoring may take
    scoring = Scoring(make_feed(world, model), threads=2)
    loop, _ = score_users(scoring, range(1, 11))
    assert len(model.threads) == 10 and loop not in model.threads
    assert not scoring.inline(scoring.feed.served)


def test_top_k_breaks_ties_by_smaller_video_id_and_puts_hidden_last():
    scores = np.zeros((2, N_VIDEOS), dtype=np.float32)  # every score ties
    scores[1, 50] = 1.0
    hidden = np.zeros((2, N_VIDEOS), dtype=bool)
    hidden[:, :3] = True
    top = _top_k_rows(scores, hidden, 4)
    assert top[0].tolist() == [3, 4, 5, 6]  # the smallest ids that are not hidden
    assert top[1].tolist() == [50, 3, 4, 5]
    everything_hidden = _top_k_rows(scores, np.ones_like(hidden), 2)
    assert everything_hidden[0].tolist() == [0, 1]


def _reference_top_k(candidates, scores, hidden, k):
    """Every column sorted: shown before hidden, then higher score, then smaller id."""
    rank = np.where(hidden, -np.inf, np.maximum(scores, -np.finfo(scores.dtype).max))
    return np.stack([np.lexsort((candidates, -row))[:k] for row in rank])


def test_top_k_matches_a_full_sort_with_and_without_ties_at_the_kth_score():
    rng = np.random.default_rng(3)
    candidates = np.arange(7, 7 + 300)
    for case in range(40):
        distinct = rng.integers(2, 400)  # few distinct values: ties at the k-th score
        scores = rng.integers(0, distinct, size=(3, 300)).astype(np.float32)
        scores[0, rng.integers(0, 300, 5)] = -np.inf
        hidden = rng.random((3, 300)) < (0.99 if case % 10 == 0 else 0.2)
        for k in (1, 10, 50):
            top = _top_k_rows(scores, hidden, k)
            assert top.tolist() == _reference_top_k(candidates, scores, hidden, k).tolist()


def test_one_users_feed_equals_their_row_of_a_batch_with_live_views_out_of_order(world):  # noqa: F811
    feed = make_feed(world, LastVideoNeighbours())
    users = feed.base.user_ids[:4]
    first_time = float(feed.base.timestamps[0])
    # Live views: one after the dataset's, one dated before them (a skewed client clock).
    feed.add_views(
        np.array([users[0], users[0], users[1]]),
        feed.catalogue_ids[[5, 6, 7]],
        np.array([1.2, 0.1, 2.0]),
        np.array([first_time + 1e7, first_time - 1e7, first_time + 1e7]),
    )
    batch = feed.recommend_batch(users, 5)
    merged = feed.histories_of(users)  # the batch merge
    starts, lengths = merged.slices(users)
    for row, user in enumerate(users):
        one = feed.recommend_batch(np.array([user]), 5)
        assert one.video_ids[0].tolist() == batch.video_ids[row].tolist()
        assert one.history_lengths[0] == batch.history_lengths[row]
        views = feed.views_of(int(user)).histories
        span = slice(starts[row], starts[row] + lengths[row])
        assert merged.video_ids[span].tolist() == views.video_ids.tolist()
        assert np.array_equal(merged.timestamps[span], views.timestamps)
    assert feed.views_of(int(users[0])).live.sum() == 2

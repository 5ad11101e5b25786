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
    candidates = np.arange(100, 100 + N_VIDEOS)
    scores = np.zeros((2, N_VIDEOS), dtype=np.float32)  # every score ties
    scores[1, 50] = 1.0
    hidden = np.zeros((2, N_VIDEOS), dtype=bool)
    hidden[:, :3] = True
    top = _top_k_rows(candidates, scores, hidden, 4)
    assert top[0].tolist() == [3, 4, 5, 6]  # the smallest ids that are not hidden
    assert top[1].tolist() == [50, 3, 4, 5]
    everything_hidden = _top_k_rows(candidates, scores, np.ones_like(hidden), 2)
    assert everything_hidden[0].tolist() == [0, 1]

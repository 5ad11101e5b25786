"""Where a feed is scored: on the event loop while the served model scores fast, else on a
few scoring threads.

Handing one scoring to a thread costs two cross-thread wake-ups (the worker's, then the
event loop's) and the GIL passing back and forth; for SASRec on the full catalogue, about
2 ms of work, that was a quarter of the server's CPU per request at 100 req/s. So while the
served model's recent scorings took under `inline_seconds` each (CPU time of the scoring
thread, a moving average) and no scoring is running on a thread, a request is scored right
on the event loop, which it holds about that long. A slow model goes to the threads, and
the event loop stays free for cheap requests. Each model starts on the threads until its
first scorings are timed.
"""

from __future__ import annotations

import time

import anyio
import anyio.to_thread

from shortrec.serving.feed import Feed, Recommendations, ServedModel

INLINE_SECONDS = 0.005  # the longest a scoring may hold the event loop, on average
SMOOTHING = 0.2  # weight of the newest scoring in the moving average
TIMED_BEFORE_INLINE = 5  # scorings timed on the threads before a new model may run inline


class Scoring:
    def __init__(self, feed: Feed, threads: int, inline_seconds: float = INLINE_SECONDS) -> None:
        self.feed = feed
        self.limiter = anyio.CapacityLimiter(threads)
        self.inline_seconds = inline_seconds
        self._model: ServedModel | None = None  # the model the average is of
        self._timed = 0
        self._seconds = 0.0

    def _note(self, served: ServedModel, seconds: float) -> None:
        if served is not self._model:
            self._model, self._timed, self._seconds = served, 0, seconds
        self._timed += 1
        self._seconds += SMOOTHING * (seconds - self._seconds)

    def inline(self, served: ServedModel) -> bool:
        """Whether the next scoring with `served` runs on the event loop."""
        return (
            served is self._model
            and self._timed >= TIMED_BEFORE_INLINE
            and self._seconds < self.inline_seconds
            and self.limiter.borrowed_tokens == 0
        )

    def _timed_recommend(self, user_id: int, k: int) -> tuple[Recommendations, float]:
        started = time.thread_time()  # the work, not the waits of a loaded machine
        answer = self.feed.recommend(user_id, k)
        return answer, time.thread_time() - started

    async def recommend(self, user_id: int, k: int) -> Recommendations:
        """`Feed.recommend`, inline or on the scoring threads (see the module docstring)."""
        served = self.feed.served
        if self.inline(served):
            answer, seconds = self._timed_recommend(user_id, k)
        else:
            answer, seconds = await anyio.to_thread.run_sync(
                self._timed_recommend, user_id, k, limiter=self.limiter
            )
        self._note(served, seconds)
        return answer

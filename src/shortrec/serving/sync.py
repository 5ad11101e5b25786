"""One event stream, several processes: each follows the store and applies what is new.

Every process (a `--workers` worker, or a server on another host) keeps the id of the last
stored event it applied, and reads `id > last` from the store: at start-up (the replay), right
after it stores events itself (so its own answer already reflects them), and every
`poll_seconds` in a background thread (so events stored by the others reach it within that
time, 0.2 s by default). Polling was chosen over PostgreSQL LISTEN/NOTIFY because it works
the same on SQLite, needs no connection that must stay open, and cannot miss a notification
while a connection is down; a poll is one indexed range query. The store guarantees ids
become visible in increasing order, so `id > last` never skips an event (see `store`).
Each poll also asks the store for a newer model swap and reports this process (`swaps`).
"""

from __future__ import annotations

import logging
import threading
import time

from shortrec.serving.feed import Feed
from shortrec.serving.store import EventStore, StoreUnavailableError
from shortrec.serving.swaps import ModelSwapper

log = logging.getLogger("shortrec.serving")
READ_BATCH = 50_000


class EventFollower:
    """Applies every event of `store` to `feed` exactly once, in store order."""

    def __init__(
        self,
        feed: Feed,
        store: EventStore,
        poll_seconds: float = 0.2,
        swaps: ModelSwapper | None = None,
    ) -> None:
        self.feed = feed
        self.store = store
        self.poll_seconds = poll_seconds
        self.swaps = swaps
        self.last_id = 0
        self.last_read = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up(self) -> int:
        """Apply every event stored since the last call; returns how many."""
        applied = 0
        with self._lock:
            while True:
                batch = self.store.read_since(self.last_id, READ_BATCH)
                if len(batch):
                    self.feed.add_views(
                        batch.user_ids, batch.video_ids, batch.watch_ratios, batch.timestamps
                    )
                    applied += len(batch)
                self.last_id = batch.last_id
                if len(batch) < READ_BATCH:
                    break
            self.last_read = time.monotonic()
        return applied

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shortrec-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.catch_up()
                if self.swaps is not None:
                    self.swaps.poll()
            except StoreUnavailableError as error:  # keep serving; retry at the next poll
                log.warning("cannot read new events: %s", error)

"""Model swaps that reach every process on one event store, each loading in the background.

`POST /admin/model` records the swap in the store (`EventStore.record_swap`); every process
(each `--workers` worker, each host) notices it at its next event poll (see `serving.sync`),
loads the run on a background thread while it keeps serving the old model, then swaps the
new one in with one reference assignment. The run is named relative to the runs root and
every process confines it to its own runs root, so hosts may keep their runs in different
folders. A process whose load fails reports the failure and keeps its old model.

Only swaps recorded after a server started are followed: `shortrec serve` pins the latest
swap id when it starts (`pin_swap_baseline`), so a worker that replaces a crashed one still
catches up with a later swap, while a server restarted with `--run` serves that run.

Each process reports what it serves to the store every `REPORT_SECONDS` and whenever its swap
state changes; `GET /admin/model` lists the processes heard from within `STALE_AFTER_S`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shortrec.serving.deps import describe_model
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.metrics import Metrics
from shortrec.serving.settings import ServeSpec
from shortrec.serving.store import EventStore, StoreUnavailableError, SwapRecord, open_store

log = logging.getLogger("shortrec.serving")
REPORT_SECONDS = 2.0
STALE_AFTER_S = 10.0
LOAD_FAILED = "the run's model could not be loaded"


class RunNotFoundError(LookupError):
    """No trained run of that name inside the runs root (or a name the OS refuses)."""


def confined_run_dir(runs_root: str | None, name: str) -> Path:
    """The run directory `name` inside `runs_root`. A name outside it (`..`, an absolute
    path, a symlink out), a missing run and a name the OS refuses (too long, a NUL byte, a
    character the file system cannot encode) all raise the same RunNotFoundError."""
    not_found = RunNotFoundError(f"no trained run {name!r} under the runs root")
    if not runs_root:
        raise not_found
    try:
        root = Path(runs_root).resolve()
        run_dir = (root / name).resolve()
        if not run_dir.is_relative_to(root) or not (run_dir / "model").is_dir():
            raise not_found
    except (OSError, RuntimeError, ValueError):  # too long, a symlink loop, NUL, unencodable
        raise not_found from None
    return run_dir


def pin_swap_baseline(spec: ServeSpec) -> ServeSpec:
    """`spec` with the store's latest swap id, so every worker of this server (replacements
    included) follows only the swaps recorded after it started."""
    store = open_store(spec.db if spec.db is not None else Path(spec.run_dir) / "events.db")
    try:
        latest = store.latest_swap()
    except StoreUnavailableError as error:
        raise ValueError(str(error)) from error
    finally:
        store.close()
    return dataclasses.replace(spec, swaps_after=latest.id if latest else 0)


class ModelSwapper:
    """This process's side of the swaps: follows the recorded ones, loads, swaps, reports."""

    def __init__(
        self,
        feed: Feed,
        store: EventStore,
        runs_root: str | None,
        load_model: Callable[[str], ServedModel],
        metrics: Metrics,
        swaps_after: int | None = None,
    ) -> None:
        self.feed = feed
        self.store = store
        self.runs_root = runs_root
        self.load_model = load_model
        self.metrics = metrics
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.process = f"{self.host}:{self.pid}"
        if swaps_after is None:
            latest = store.latest_swap()
            swaps_after = latest.id if latest else 0
        self._changed = threading.Condition()
        self.state = "idle"  # idle | loading | failed
        self.run: str | None = None  # as the admin named it (relative to the runs root)
        self.error: str | None = None
        self.swap_id: int | None = None  # the swap this process loaded (or tried) last
        self._seen_id = swaps_after  # swaps up to this id are handled (or predate the server)
        self._done_id = swaps_after
        self._pending: SwapRecord | None = None
        self._loading = False
        self._reported_at = float("-inf")

    def as_dict(self) -> dict[str, Any]:
        with self._changed:
            return {"state": self.state, "run": self.run, "error": self.error, "id": self.swap_id}

    @property
    def loading(self) -> bool:
        with self._changed:
            return self._loading

    def request(self, record: SwapRecord) -> None:
        """Load `record`'s run in the background unless a later swap was seen already; a swap
        arriving during a load waits for it (only the latest waiting one is kept)."""
        with self._changed:
            if record.id <= self._seen_id:
                return
            self._seen_id = record.id
            self._pending = record
            if self._loading:
                return
            self._loading = True
            self.state, self.run, self.error, self.swap_id = "loading", record.run, None, record.id
        threading.Thread(target=self._load_pending, name="shortrec-model-swap", daemon=True).start()

    def wait(self, swap_id: int, timeout: float) -> None:
        """Until this process has tried swap `swap_id` (or a later one), at most `timeout` s."""
        with self._changed:
            self._changed.wait_for(lambda: self._done_id >= swap_id, timeout)

    def poll(self) -> None:
        """What the event follower calls every poll: start a newly recorded swap, and report
        this process every REPORT_SECONDS."""
        latest = self.store.latest_swap()
        if latest is not None and latest.id > self._seen_id:
            self.request(latest)
        if time.monotonic() - self._reported_at >= REPORT_SECONDS:
            self.report()

    def status(self) -> dict[str, Any]:
        model = describe_model(self.feed.served, self.runs_root)
        return {"host": self.host, "pid": self.pid, "model": model, "swap": self.as_dict()}

    def report(self) -> None:
        self._reported_at = time.monotonic()
        self.store.report_process(self.process, self.status())

    def forget_quietly(self) -> None:
        """Leave the store's list of processes (a clean shutdown); a store that is down
        drops this process from the list once it is stale instead."""
        try:
            self.store.forget_process(self.process)
        except StoreUnavailableError as error:
            log.warning("cannot remove this process from the store's list: %s", error)

    def _load_pending(self) -> None:
        """The loading thread: `request` set `_pending` before starting it."""
        while True:
            with self._changed:
                record, self._pending = self._pending, None
                self.state, self.run, self.error = "loading", record.run, None
                self.swap_id = record.id
            self._report_quietly()
            try:
                served = self.load_model(str(confined_run_dir(self.runs_root, record.run)))
            except RunNotFoundError as error:
                log.error("cannot swap to %s: %s on this host", record.run, error)
                more = self._finish(record, "failed", f"{error} of this process")
            except Exception:  # any failure keeps the old model serving
                log.exception("could not load the model of %s", record.run)
                more = self._finish(record, "failed", LOAD_FAILED)
            else:
                self.feed.swap_model(served)
                self.metrics.swaps.inc()
                more = self._finish(record, "idle", None)
            self._report_quietly()
            if not more:
                return

    def _finish(self, record: SwapRecord, state: str, error: str | None) -> bool:
        """Record the outcome; whether a later swap waits to be loaded by this thread."""
        with self._changed:
            self.state, self.error = state, error
            self._done_id = max(self._done_id, record.id)
            self._loading = self._pending is not None
            self._changed.notify_all()
            return self._loading

    def _report_quietly(self) -> None:
        try:
            self.report()
        except StoreUnavailableError as error:  # the next poll's heartbeat reports it
            log.warning("cannot report the model swap state: %s", error)

"""Durable storage of live watch events: the one stream every server process follows.

An event is acknowledged only after its transaction is committed, so a restart (or a crash)
never loses what a client was told was stored. SQLite (stdlib, WAL journal, synchronous=FULL)
is the default because it needs no server; PostgreSQL (psycopg 3) serves several processes
and hosts. Both keep one connection behind a lock: event writes are tiny and serialised
anyway by the database.

Every event gets an increasing `id`, and ids become visible in increasing order: SQLite has
one writer at a time, and PostgreSQL writers take one transaction-scoped advisory lock before
inserting, so a transaction never commits a smaller id after a larger one is visible. A process
that has read every event up to id N therefore only ever needs `id > N` (see `serving.sync`).
An optional client `event_id` is unique per store (a unique index). Checking it and storing the
event are one transaction, with the writers serialised as above: the first event stored under
an id wins, a retry of it (the same user, video, watch ratio and durations; its time may
differ, a client may stamp each send) is not stored again, and any other event under that id
makes the whole batch fail with `EventIdConflictError`, storing nothing of it.

Model swaps go through the store too, so they reach every process on it: a swap is a row of
`model_swaps`, which every process follows like the events (see `serving.swaps`), and each
process reports what it serves in `serving_processes` for `GET /admin/model`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

# The columns of a stored event, in the order they are written.
EVENT_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "video_id": pl.Int64(),
    "watch_ratio": pl.Float64(),
    "play_duration": pl.Int64(),
    "video_duration": pl.Int64(),
    "timestamp": pl.Float64(),
}
MAX_EVENT_ID_LENGTH = 128
_ADVISORY_LOCK = 0x5EC_0E7E  # PostgreSQL advisory lock key serialising event inserts
_NOW = "extract(epoch FROM clock_timestamp())"  # the database's clock: one for every host
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class StoredEvent:
    """One watch event as it is written: durations in milliseconds, unix-seconds timestamp."""

    user_id: int
    video_id: int
    watch_ratio: float
    play_duration: int | None
    video_duration: int | None
    timestamp: float
    event_id: str | None = None  # the client's idempotency key, if it gave one

    def same_view(self, stored: tuple) -> bool:
        """Whether `stored` (user, video, watch ratio, play and video duration) is this view."""
        return stored == (self.user_id, self.video_id, self.watch_ratio, self.play_duration,
                          self.video_duration)  # fmt: skip

    def row(self) -> tuple:
        return (
            self.user_id,
            self.video_id,
            self.watch_ratio,
            self.play_duration,
            self.video_duration,
            self.timestamp,
            self.event_id,
        )


@dataclass(frozen=True)
class EventBatch:
    """Events read back from a store, oldest first, as columns, and the id of the last one."""

    user_ids: np.ndarray
    video_ids: np.ndarray
    watch_ratios: np.ndarray
    timestamps: np.ndarray
    last_id: int

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class SwapRecord:
    """A model swap an admin asked for: the run, named relative to the runs root."""

    id: int
    run: str
    requested_at: float


@dataclass(frozen=True)
class ProcessReport:
    """What one server process last reported about itself, and how long ago."""

    process: str
    status: dict
    age_seconds: float


class EventStore(Protocol):
    """What the app needs from a store: append durably, follow the stream, count; record
    model swaps and what each process serves."""

    kind: str

    def append(self, events: list[StoredEvent]) -> int:
        """Store `events` in one transaction, all or nothing. An event whose `event_id` is
        stored already for the same view is a retry and skipped; for another view it raises
        `EventIdConflictError`. Returns how many were new."""
        ...

    def check_writable(self) -> None:
        """Raises StoreUnavailableError unless the store can take a write now."""
        ...

    def record_swap(self, run: str) -> SwapRecord: ...

    def latest_swap(self) -> SwapRecord | None: ...

    def report_process(self, process: str, status: dict) -> None: ...

    def processes(self, max_age_seconds: float) -> list[ProcessReport]:
        """Processes that reported within `max_age_seconds`, by name."""
        ...

    def forget_process(self, process: str) -> None: ...

    def read_since(self, after_id: int, limit: int) -> EventBatch:
        """Up to `limit` events with id > `after_id`, in id order."""
        ...

    def load(self) -> pl.DataFrame: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class StoreUnavailableError(RuntimeError):
    """The database could not take or return events (disk full, server gone)."""


class EventIdConflictError(ValueError):
    """`events[position].event_id` is stored already, for another view."""

    def __init__(self, position: int, event_id: str) -> None:
        super().__init__(
            f"events[{position}].event_id {event_id!r} was already used for another view"
        )
        self.position = position
        self.event_id = event_id


def _new_events(events: list[StoredEvent], stored: dict[str, tuple]) -> list[StoredEvent]:
    """The events not stored yet; raises EventIdConflictError for an id stored for another
    view. `stored`: event_id -> (user, video, watch ratio, play and video duration)."""
    new = []
    for position, event in enumerate(events):
        earlier = stored.get(event.event_id) if event.event_id is not None else None
        if earlier is None:
            new.append(event)
        elif not event.same_view(earlier):
            raise EventIdConflictError(position, event.event_id)
    return new


_VIEW = "event_id, user_id, video_id, watch_ratio, play_duration, video_duration"


def _frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENT_COLUMNS, orient="row")


def _batch(rows: list[tuple], after_id: int) -> EventBatch:
    """Rows of (id, user_id, video_id, watch_ratio, timestamp) -> an EventBatch."""
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return EventBatch(empty, empty, empty.astype(np.float64), empty.astype(np.float64),
                          after_id)  # fmt: skip
    ids, users, videos, ratios, timestamps = zip(*rows, strict=True)
    return EventBatch(
        np.array(users, dtype=np.int64),
        np.array(videos, dtype=np.int64),
        np.array(ratios, dtype=np.float64),
        np.array(timestamps, dtype=np.float64),
        ids[-1],
    )


_FOLLOW = "id, user_id, video_id, watch_ratio, timestamp"  # what the feed needs of an event


_COLUMNS = "user_id, video_id, watch_ratio, play_duration, video_duration, timestamp"


class SQLiteEventStore:
    """Events in one SQLite file; WAL lets readers and the writer proceed together."""

    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: requests run on a thread pool; the lock serialises use.
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # fsync per commit: acked = durable
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS events ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " user_id INTEGER NOT NULL, video_id INTEGER NOT NULL,"
                " watch_ratio REAL NOT NULL, play_duration INTEGER, video_duration INTEGER,"
                " timestamp REAL NOT NULL, event_id TEXT)"
            )
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(events)")}
            if "event_id" not in columns:  # a store written before event ids existed
                self._conn.execute("ALTER TABLE events ADD COLUMN event_id TEXT")
            self._conn.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS model_swaps (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " run TEXT NOT NULL, requested_at REAL NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS serving_processes (process TEXT PRIMARY KEY,"
                " status TEXT NOT NULL, seen_at REAL NOT NULL)"
            )
        except (sqlite3.Error, OSError) as error:
            raise ValueError(f"cannot open SQLite event store {self.path}: {error}") from error

    def _write(self, work, what: str):
        """`work(connection)` in one write transaction (BEGIN IMMEDIATE: this file's one
        writer, across processes too), committed unless it raises."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                result = work(self._conn)
                self._conn.execute("COMMIT")
                return result
            except sqlite3.Error as error:
                self._rollback()
                raise StoreUnavailableError(f"could not {what} in {self.path}: {error}") from error
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def append(self, events: list[StoredEvent]) -> int:
        def store(conn: sqlite3.Connection) -> int:
            ids = [event.event_id for event in events if event.event_id is not None]
            stored: dict[str, tuple] = {}
            for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {_VIEW} FROM events WHERE event_id IN ({marks})", chunk
                ).fetchall()
                stored.update({row[0]: row[1:] for row in rows})
            new = _new_events(events, stored)
            conn.executemany(
                f"INSERT INTO events ({_COLUMNS}, event_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [event.row() for event in new],
            )
            return len(new)

        return self._write(store, "store events")

    def check_writable(self) -> None:
        self._write(lambda conn: None, "start a write")

    def record_swap(self, run: str) -> SwapRecord:
        now = time.time()

        def insert(conn: sqlite3.Connection) -> SwapRecord:
            cursor = conn.execute(
                "INSERT INTO model_swaps (run, requested_at) VALUES (?, ?)", (run, now)
            )
            return SwapRecord(int(cursor.lastrowid), run, now)

        return self._write(insert, "record the model swap")

    def latest_swap(self) -> SwapRecord | None:
        rows = self._query("SELECT id, run, requested_at FROM model_swaps ORDER BY id DESC LIMIT 1")
        return SwapRecord(*rows[0]) if rows else None

    def report_process(self, process: str, status: dict) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT INTO serving_processes (process, status, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (process) DO UPDATE SET status = excluded.status,"
            " seen_at = excluded.seen_at", (process, json.dumps(status), time.time())),
            "report this process")  # fmt: skip

    def processes(self, max_age_seconds: float) -> list[ProcessReport]:
        now = time.time()
        rows = self._query(
            "SELECT process, status, seen_at FROM serving_processes WHERE seen_at >= ?"
            " ORDER BY process", (now - max_age_seconds,)
        )  # fmt: skip
        return [
            ProcessReport(p, json.loads(status), max(0.0, now - seen)) for p, status, seen in rows
        ]

    def forget_process(self, process: str) -> None:
        self._write(
            lambda conn: conn.execute(
                "DELETE FROM serving_processes WHERE process = ?", (process,)
            ),
            "forget the process",
        )

    def _query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise StoreUnavailableError(
                    f"could not read events from {self.path}: {error}"
                ) from error

    def read_since(self, after_id: int, limit: int) -> EventBatch:
        rows = self._query(
            f"SELECT {_FOLLOW} FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return _batch(rows, after_id)

    def load(self) -> pl.DataFrame:
        return _frame(self._query(f"SELECT {_COLUMNS} FROM events ORDER BY id"))

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresEventStore:
    """Events in a PostgreSQL table, for deployments that run several app processes."""

    kind = "postgresql"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError as error:
            raise ValueError(
                "a postgresql:// store needs psycopg 3: pip install 'shortrec[postgres]'"
            ) from error
        self._psycopg = psycopg
        self._url = url
        # A server that does not answer must not hang requests (or readiness) for minutes.
        self._connect_options = {} if "connect_timeout" in conninfo_to_dict(url) else {
            "connect_timeout": CONNECT_TIMEOUT_S}  # fmt: skip
        self._lock = threading.Lock()
        try:
            self._conn = self._connect()
        except psycopg.Error as error:
            raise ValueError(f"cannot connect to PostgreSQL at {_redact(url)}: {error}") from error
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS shortrec_events ("
            " id BIGSERIAL PRIMARY KEY,"
            " user_id BIGINT NOT NULL, video_id BIGINT NOT NULL,"
            " watch_ratio DOUBLE PRECISION NOT NULL, play_duration BIGINT, video_duration BIGINT,"
            " timestamp DOUBLE PRECISION NOT NULL, event_id TEXT)"
        )
        # A table from before event ids existed (a no-op otherwise).
        self._conn.execute("ALTER TABLE shortrec_events ADD COLUMN IF NOT EXISTS event_id TEXT")
        self._conn.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS shortrec_events_event_id"
            " ON shortrec_events (event_id)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS shortrec_model_swaps (id BIGSERIAL PRIMARY KEY,"
            " run TEXT NOT NULL, requested_at DOUBLE PRECISION NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS shortrec_processes (process TEXT PRIMARY KEY,"
            " status TEXT NOT NULL, seen_at DOUBLE PRECISION NOT NULL)"
        )

    def _connect(self):
        return self._psycopg.connect(self._url, autocommit=True, **self._connect_options)

    def _connection(self):
        """The connection, reconnected if the server dropped it (a restart, a failover)."""
        if self._conn.broken or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _write(self, work, what: str):
        """`work(cursor)` in one transaction, after the advisory lock that serialises writers
        (so ids become visible in increasing order, and a check-then-insert is atomic)."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
                    return work(cursor)
            except self._psycopg.Error as error:
                raise StoreUnavailableError(f"could not {what} in PostgreSQL: {error}") from error

    def append(self, events: list[StoredEvent]) -> int:
        def store(cursor) -> int:
            ids = [event.event_id for event in events if event.event_id is not None]
            stored: dict[str, tuple] = {}
            if ids:
                cursor.execute(
                    f"SELECT {_VIEW} FROM shortrec_events WHERE event_id = ANY(%s)", (ids,)
                )
                stored = {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
            new = _new_events(events, stored)
            if new:
                cursor.executemany(
                    f"INSERT INTO shortrec_events ({_COLUMNS}, event_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [event.row() for event in new],
                )
            return len(new)

        return self._write(store, "store events")

    def check_writable(self) -> None:
        read_only = self._query(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
        )[0][0]
        if read_only:
            raise StoreUnavailableError("PostgreSQL is read-only (a standby, or read-only mode)")

    def record_swap(self, run: str) -> SwapRecord:
        def insert(cursor) -> SwapRecord:
            cursor.execute(
                "INSERT INTO shortrec_model_swaps (run, requested_at)"
                f" VALUES (%s, {_NOW}) RETURNING id, run, requested_at",
                (run,),
            )
            return SwapRecord(*cursor.fetchone())

        return self._write(insert, "record the model swap")

    def latest_swap(self) -> SwapRecord | None:
        rows = self._query(
            "SELECT id, run, requested_at FROM shortrec_model_swaps ORDER BY id DESC LIMIT 1"
        )
        return SwapRecord(*rows[0]) if rows else None

    def report_process(self, process: str, status: dict) -> None:
        self._query(
            f"INSERT INTO shortrec_processes (process, status, seen_at) VALUES (%s, %s, {_NOW})"
            " ON CONFLICT (process) DO UPDATE SET status = excluded.status,"
            " seen_at = excluded.seen_at",
            (process, json.dumps(status)),
            rows=False,
        )

    def processes(self, max_age_seconds: float) -> list[ProcessReport]:
        rows = self._query(
            f"SELECT process, status, {_NOW} - seen_at FROM shortrec_processes"
            f" WHERE seen_at >= {_NOW} - %s ORDER BY process",
            (max_age_seconds,),
        )
        return [ProcessReport(p, json.loads(status), max(0.0, age)) for p, status, age in rows]

    def forget_process(self, process: str) -> None:
        self._query("DELETE FROM shortrec_processes WHERE process = %s", (process,), rows=False)

    def _query(self, sql: str, params: tuple | list = (), rows: bool = True) -> list[tuple]:
        """One statement, retried once on a fresh connection if the old one was dropped (a
        server restart): only for statements that are safe to repeat."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    cursor = self._connection().execute(sql, params)
                    return cursor.fetchall() if rows else []
                except self._psycopg.Error as error:
                    if attempt == 1 and self._conn.broken:
                        continue
                    raise StoreUnavailableError(
                        f"could not read events from PostgreSQL: {error}"
                    ) from error
        raise AssertionError("unreachable")

    def read_since(self, after_id: int, limit: int) -> EventBatch:
        rows = self._query(
            f"SELECT {_FOLLOW} FROM shortrec_events WHERE id > %s ORDER BY id LIMIT %s",
            (after_id, limit),
        )
        return _batch(rows, after_id)

    def load(self) -> pl.DataFrame:
        return _frame(self._query(f"SELECT {_COLUMNS} FROM shortrec_events ORDER BY id"))

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM shortrec_events")[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"


def open_store(url: str | Path) -> EventStore:
    """`sqlite:///relative.db`, `sqlite:////absolute.db`, a plain file path, or
    `postgresql://user@host/db`."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresEventStore(text)
    if text.startswith("sqlite:///"):
        # SQLAlchemy's convention: sqlite:///relative/path, sqlite:////absolute/path.
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        raise ValueError(
            f"--db must be sqlite:///PATH, postgresql://... or a file path, got {_redact(text)!r}"
        )
    if not text:
        raise ValueError("--db sqlite:/// needs a file path, e.g. sqlite:///runs/events.db")
    return SQLiteEventStore(text)

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
An optional client `event_id` is unique per store: a retried event is stored once.
"""

from __future__ import annotations

import sqlite3
import threading
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


class EventStore(Protocol):
    """What the app needs from a store: append durably, follow the stream, count."""

    kind: str

    def append(self, events: list[StoredEvent]) -> int:
        """Store `events` in one transaction; an event whose `event_id` is already stored is
        skipped. Returns how many were new."""
        ...

    def find(self, event_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(user_id, video_id) of the stored events with these client event ids."""
        ...

    def read_since(self, after_id: int, limit: int) -> EventBatch:
        """Up to `limit` events with id > `after_id`, in id order."""
        ...

    def load(self) -> pl.DataFrame: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class StoreUnavailableError(RuntimeError):
    """The database could not take or return events (disk full, server gone)."""


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
        except (sqlite3.Error, OSError) as error:
            raise ValueError(f"cannot open SQLite event store {self.path}: {error}") from error

    def append(self, events: list[StoredEvent]) -> int:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                before = self._conn.total_changes
                self._conn.executemany(
                    f"INSERT OR IGNORE INTO events ({_COLUMNS}, event_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [event.row() for event in events],
                )
                added = self._conn.total_changes - before
                self._conn.execute("COMMIT")
                return added
            except sqlite3.Error as error:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreUnavailableError(
                    f"could not store events in {self.path}: {error}"
                ) from error

    def _query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise StoreUnavailableError(
                    f"could not read events from {self.path}: {error}"
                ) from error

    def find(self, event_ids: list[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(event_ids), 500):  # SQLite caps the number of parameters
            chunk = event_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT event_id, user_id, video_id FROM events WHERE event_id IN ({marks})"
            found.update({e: (u, v) for e, u, v in self._query(sql, chunk)})
        return found

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
        except ImportError as error:
            raise ValueError(
                "a postgresql:// store needs psycopg 3: pip install 'shortrec[postgres]'"
            ) from error
        self._psycopg = psycopg
        self._url = url
        self._lock = threading.Lock()
        try:
            self._conn = psycopg.connect(url, autocommit=True)
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

    def _connection(self):
        """The connection, reconnected if the server dropped it (a restart, a failover)."""
        if self._conn.broken or self._conn.closed:
            self._conn = self._psycopg.connect(self._url, autocommit=True)
        return self._conn

    def append(self, events: list[StoredEvent]) -> int:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cursor:
                    # Writers one at a time, so ids become visible in increasing order.
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
                    cursor.executemany(
                        f"INSERT INTO shortrec_events ({_COLUMNS}, event_id)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                        [event.row() for event in events],
                    )
                    return cursor.rowcount
            except self._psycopg.Error as error:
                raise StoreUnavailableError(
                    f"could not store events in PostgreSQL: {error}"
                ) from error

    def _query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except self._psycopg.Error as error:
                raise StoreUnavailableError(
                    f"could not read events from PostgreSQL: {error}"
                ) from error

    def find(self, event_ids: list[str]) -> dict[str, tuple[int, int]]:
        rows = self._query(
            "SELECT event_id, user_id, video_id FROM shortrec_events WHERE event_id = ANY(%s)",
            (event_ids,),
        )
        return {e: (u, v) for e, u, v in rows}

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

"""Durable storage of live watch events.

An event is acknowledged only after its transaction is committed, so a restart (or a crash)
never loses what a client was told was stored. SQLite (stdlib, WAL journal, synchronous=FULL)
is the default because it needs no server; PostgreSQL (psycopg 3) serves several app
processes. Both keep one connection behind a lock: event writes are tiny and serialised
anyway by the database.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


@dataclass(frozen=True)
class StoredEvent:
    """One watch event as it is written: durations in milliseconds, unix-seconds timestamp."""

    user_id: int
    video_id: int
    watch_ratio: float
    play_duration: int | None
    video_duration: int | None
    timestamp: float

    def row(self) -> tuple:
        return (
            self.user_id,
            self.video_id,
            self.watch_ratio,
            self.play_duration,
            self.video_duration,
            self.timestamp,
        )


class EventStore(Protocol):
    """What the app needs from a store: append durably, read everything back, count."""

    kind: str

    def append(self, events: list[StoredEvent]) -> None: ...

    def load(self) -> pl.DataFrame: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class StoreUnavailableError(RuntimeError):
    """The database could not take or return events (disk full, server gone)."""


def _frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENT_COLUMNS, orient="row")


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
                " timestamp REAL NOT NULL)"
            )
        except (sqlite3.Error, OSError) as error:
            raise ValueError(f"cannot open SQLite event store {self.path}: {error}") from error

    def append(self, events: list[StoredEvent]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO events (user_id, video_id, watch_ratio, play_duration,"
                    " video_duration, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                    [event.row() for event in events],
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as error:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreUnavailableError(
                    f"could not store events in {self.path}: {error}"
                ) from error

    def load(self) -> pl.DataFrame:
        with self._lock:
            rows = self._conn.execute(
                "SELECT user_id, video_id, watch_ratio, play_duration, video_duration, timestamp"
                " FROM events ORDER BY id"
            ).fetchall()
        return _frame(rows)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

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
            " timestamp DOUBLE PRECISION NOT NULL)"
        )

    def append(self, events: list[StoredEvent]) -> None:
        with self._lock:
            try:
                with self._conn.transaction(), self._conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO shortrec_events (user_id, video_id, watch_ratio,"
                        " play_duration, video_duration, timestamp)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        [event.row() for event in events],
                    )
            except self._psycopg.Error as error:
                raise StoreUnavailableError(
                    f"could not store events in PostgreSQL: {error}"
                ) from error

    def load(self) -> pl.DataFrame:
        with self._lock:
            rows = self._conn.execute(
                "SELECT user_id, video_id, watch_ratio, play_duration, video_duration, timestamp"
                " FROM shortrec_events ORDER BY id"
            ).fetchall()
        return _frame(rows)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM shortrec_events").fetchone()[0])

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

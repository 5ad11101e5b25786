"""Event stores: what was acknowledged survives a restart (SQLite always, PostgreSQL if any)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fitting import training

from shortrec.data.dataset import load_prepared
from shortrec.models.baselines import PopularRecommender
from shortrec.serving.app import create_app
from shortrec.serving.demo import fabricate_release
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.store import (
    EventIdConflictError,
    SQLiteEventStore,
    StoredEvent,
    open_store,
)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return fabricate_release(tmp_path_factory.mktemp("store_world") / "data", n_users=20,
                             n_videos=80, views_per_user=8)  # fmt: skip


def new_app(release: Path, db: str):
    """A fresh app over the same database: what a restarted server is."""
    data = load_prepared(release)
    model = PopularRecommender().fit(training(data.big_matrix))
    feed = Feed(ServedModel(model, name="popular"), data.videos, data.big_matrix)
    return create_app(feed, open_store(db))


def check_events_survive_a_restart(release: Path, db: str) -> None:
    events = [{"user_id": 3, "video_id": v, "watch_ratio": 1.0, "timestamp": 1.9e9 + v}
              for v in (11, 12, 13)]  # fmt: skip
    events.append({"user_id": 555_555, "video_id": 14, "watch_ratio": 0.3})
    with TestClient(new_app(release, db), base_url="http://127.0.0.1") as first:
        assert first.post("/events", json={"events": events}).status_code == 200
        assert first.get("/health").json()["live_events"] == 4
    with TestClient(new_app(release, db), base_url="http://127.0.0.1") as second:
        assert second.get("/health").json()["live_events"] == 4
        history = second.get("/users/3/history?limit=3").json()["items"]
        assert [(v["video_id"], v["source"]) for v in history] == [
            (13, "live"), (12, "live"), (11, "live")]  # fmt: skip
        recommended = [
            i["video_id"] for i in second.get("/users/3/recommendations?k=80").json()["items"]
        ]
        assert {11, 12, 13}.isdisjoint(recommended)
        new_user = second.get("/users/555555/recommendations").json()
        assert new_user["strategy"] == "model" and new_user["history_length"] == 1


def test_sqlite_events_survive_a_restart(release, tmp_path):
    check_events_survive_a_restart(release, f"sqlite:///{tmp_path}/events.db")


def test_sqlite_store_is_in_wal_mode_and_round_trips(tmp_path):
    store = SQLiteEventStore(tmp_path / "e.db")
    store.append([StoredEvent(1, 2, 0.5, 100, 200, 1.5e9), StoredEvent(1, 3, 2.0, None, None, 7.0)])
    frame = store.load()
    assert frame.rows() == [(1, 2, 0.5, 100, 200, 1.5e9), (1, 3, 2.0, None, None, 7.0)]
    assert store.count() == 2
    journal = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"
    store.close()


def test_open_store_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store("sqlite:///relative.db").path == Path("relative.db")
    assert open_store(f"sqlite:///{tmp_path}/abs.db").path == tmp_path / "abs.db"
    assert open_store(tmp_path / "plain.db").kind == "sqlite"
    with pytest.raises(ValueError, match="--db must be"):
        open_store("mysql://user:secret@host/db")
    with pytest.raises(ValueError, match="needs a file path"):
        open_store("sqlite:///")
    (tmp_path / "not_a_db").write_text("hello, I am text")
    with pytest.raises(ValueError, match="cannot open SQLite event store"):
        open_store(tmp_path / "not_a_db")


def test_unreachable_postgres_is_a_clear_error_without_the_password():
    pytest.importorskip("psycopg")
    with pytest.raises(ValueError, match="cannot connect to PostgreSQL") as error:
        open_store("postgresql://me:topsecret@127.0.0.1:1/nowhere?connect_timeout=2")
    assert "topsecret" not in str(error.value)


# --- PostgreSQL (tests/conftest.py starts a throwaway server when this machine has one) --------
def test_postgres_events_survive_a_restart(release, postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS shortrec_events")
    check_events_survive_a_restart(release, postgres_url)
    store = open_store(postgres_url)
    assert store.kind == "postgresql" and store.count() == 4
    started = time.perf_counter()
    store.append([StoredEvent(9, 9, 0.1, None, None, 1.0)])
    assert time.perf_counter() - started < 5
    assert store.load().row(-1) == (9, 9, 0.1, None, None, 1.0)
    store.close()


def check_stream_and_event_ids(store) -> None:
    first = [
        StoredEvent(1, 2, 0.5, None, None, 1.6e9, "a"),
        StoredEvent(1, 3, 0.7, None, None, 1.6e9),
    ]
    assert store.append(first) == 2
    assert store.append([StoredEvent(1, 2, 0.5, None, None, 1.6e9, "a")]) == 0  # a retry
    # A retry stamped at its own send time is still a retry; the batch's new event is stored.
    retry_and_new = [StoredEvent(1, 2, 0.5, None, None, 1.7e9, "a"),
                     StoredEvent(4, 5, 0.1, None, None, 1.6e9, "b")]  # fmt: skip
    assert store.append(retry_and_new) == 1
    for other_view in (
        StoredEvent(1, 9, 0.5, None, None, 1.6e9, "a"),  # another video
        StoredEvent(1, 2, 0.9, None, None, 1.6e9, "a"),  # another watch ratio
        StoredEvent(1, 2, 0.5, 10, 20, 1.6e9, "a"),  # durations it lacked
    ):
        batch = [StoredEvent(7, 7, 1.0, None, None, 1.6e9, "c"), other_view]
        with pytest.raises(EventIdConflictError, match=r"events\[1\].event_id 'a'") as error:
            store.append(batch)
        assert error.value.position == 1
    assert store.count() == 3  # a batch with a conflict stores nothing, not even "c"
    everything = store.read_since(0, 100)
    assert everything.user_ids.tolist() == [1, 1, 4] and everything.video_ids.tolist() == [2, 3, 5]
    page = store.read_since(0, 2)
    rest = store.read_since(page.last_id, 100)
    assert page.video_ids.tolist() == [2, 3] and rest.video_ids.tolist() == [5]
    assert rest.last_id == everything.last_id
    empty = store.read_since(everything.last_id, 100)
    assert len(empty) == 0 and empty.last_id == everything.last_id
    store.close()


def test_sqlite_stream_reads_and_idempotent_appends(tmp_path):
    check_stream_and_event_ids(SQLiteEventStore(tmp_path / "e.db"))


def test_postgres_stream_reads_and_idempotent_appends(postgres_database):
    check_stream_and_event_ids(open_store(postgres_database))


def test_a_store_from_before_event_ids_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER"
            " NOT NULL, video_id INTEGER NOT NULL, watch_ratio REAL NOT NULL,"
            " play_duration INTEGER, video_duration INTEGER, timestamp REAL NOT NULL)"
        )
        conn.execute("INSERT INTO events (user_id, video_id, watch_ratio, timestamp)"
                     " VALUES (7, 8, 0.5, 1.6e9)")  # fmt: skip
    store = SQLiteEventStore(path)
    assert store.append([StoredEvent(7, 9, 0.5, None, None, 1.6e9, "x")]) == 1
    assert store.append([StoredEvent(7, 9, 0.5, None, None, 1.6e9, "x")]) == 0
    assert store.read_since(0, 10).video_ids.tolist() == [8, 9]
    store.close()

"""Liveness and readiness through a PostgreSQL outage: /health stays 200, /ready is 503 while
the store cannot take a write, nothing is acknowledged meanwhile, and all is 200 once the
database is back."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from fitting import training

from shortrec.data.dataset import load_prepared
from shortrec.models.baselines import PopularRecommender
from shortrec.serving.app import create_app
from shortrec.serving.demo import fabricate_release
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.settings import ServeSettings
from shortrec.serving.store import open_store

EVENT = {"user_id": 2, "video_id": 5, "watch_ratio": 0.5}


def status_within(client: TestClient, path: str, wanted: int, within: float = 15.0) -> int:
    """Polls `path` until it answers `wanted` (bounded); returns the last status."""
    deadline = time.monotonic() + within
    while True:
        status = client.get(path).status_code
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_ready_follows_a_postgres_outage_and_health_does_not(tmp_path, postgres_cluster):
    data = load_prepared(fabricate_release(tmp_path / "data", n_users=10, n_videos=40,
                                           views_per_user=5))  # fmt: skip
    served = ServedModel(PopularRecommender().fit(training(data.big_matrix)), name="popular")
    app = create_app(Feed(served, data.videos, data.big_matrix), open_store(postgres_cluster.url),
                     ServeSettings(poll_seconds=0.05))  # fmt: skip
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json() == {"status": "ready",
                                                             "store": "postgresql"}  # fmt: skip
        assert client.post("/events", json=EVENT).status_code == 200

        postgres_cluster.stop()
        assert status_within(client, "/ready", 503) == 503
        down = client.get("/ready")
        assert down.json()["status"] == "unavailable" and "127.0.0.1" not in down.text
        assert client.get("/health").status_code == 200  # liveness: the process is fine
        assert client.post("/events", json={**EVENT, "video_id": 6}).status_code == 503
        assert client.get("/users/2/recommendations").status_code == 200  # reads still serve

        postgres_cluster.start()
        assert status_within(client, "/ready", 200) == 200
        assert client.post("/events", json={**EVENT, "video_id": 7}).status_code == 200
        assert client.get("/health").json()["live_events"] == 2  # the 503 one was not stored
    store = open_store(postgres_cluster.url)
    assert store.load()["video_id"].to_list() == [5, 7]
    store.close()

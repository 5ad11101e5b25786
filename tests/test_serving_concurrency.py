"""Concurrent clients reusing one event_id: exactly one is stored and answered 200, every other
conflicting request gets 409, identical retries all get the first answer; on SQLite (one
process) and on PostgreSQL behind `serve --workers 2`."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fitting import training
from serving_processes import serve_in_thread, start_server, stop_server

from shortrec.data.dataset import load_prepared
from shortrec.models.baselines import PopularRecommender
from shortrec.serving.app import create_app
from shortrec.serving.demo import fabricate_release, fabricate_run
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.store import open_store

ROUNDS = 30  # event ids raced for
CLIENTS = 6  # concurrent requests per event id, each for another video
FIRST_USER = 800_000  # not in the fabricated release: one new user per round


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concurrency")
    fabricate_release(root / "data", n_users=20, n_videos=60, views_per_user=6)
    return fabricate_run(root / "run", root / "data")


def event(round_: int, video_id: int, event_id: str) -> dict:
    return {"user_id": FIRST_USER + round_, "video_id": video_id, "watch_ratio": 1.0,
            "timestamp": 1.7e9, "event_id": event_id}  # fmt: skip


def race(url: str, bodies_per_round: list[list[dict]]) -> list[list[httpx.Response]]:
    """Each round's bodies posted at once (a barrier releases them together), one client per
    request slot; returns the answers in the same shape."""
    width = max(len(bodies) for bodies in bodies_per_round)
    clients = [httpx.Client(base_url=url, timeout=20) for _ in range(width)]
    answers: list[list[httpx.Response]] = []
    try:
        with ThreadPoolExecutor(width) as pool:
            for bodies in bodies_per_round:
                barrier = threading.Barrier(len(bodies), timeout=20)

                def send(slot: int, body: dict, barrier=barrier) -> httpx.Response:
                    barrier.wait()
                    return clients[slot].post("/events", json=body)

                answers.append(list(pool.map(send, range(len(bodies)), bodies)))
    finally:
        for client in clients:
            client.close()
    return answers


def live_videos(url: str, user_id: int) -> list[int]:
    items = httpx.get(f"{url}/users/{user_id}/history?limit=100", timeout=10).json()["items"]
    return [item["video_id"] for item in items if item["source"] == "live"]


def check_one_winner_per_event_id(url: str) -> None:
    rounds = [
        [event(r, video, f"race-{r}") for video in range(1, CLIENTS + 1)] for r in range(ROUNDS)
    ]
    lost = []
    for r, answers in enumerate(race(url, rounds)):
        codes = sorted(answer.status_code for answer in answers)
        assert codes == [200] + [409] * (CLIENTS - 1), f"round {r}: {codes}"
        winner = next(rounds[r][i] for i, a in enumerate(answers) if a.status_code == 200)
        for answer in answers:
            if answer.status_code == 409:
                assert "already used" in answer.json()["error"]
        if live_videos(url, FIRST_USER + r) != [winner["video_id"]]:
            lost.append(r)
    assert not lost, f"rounds whose acknowledged event is not the stored one: {lost}"

    retry = event(ROUNDS, 7, "retry-7")
    (answers,) = race(url, [[retry] * CLIENTS])
    assert {a.status_code for a in answers} == {200}
    assert {a.text for a in answers} == {answers[0].text}
    assert live_videos(url, FIRST_USER + ROUNDS) == [7]


def test_concurrent_event_id_reuse_on_sqlite(run_dir, tmp_path):
    data = load_prepared(run_dir.parent / "data")
    served = ServedModel(PopularRecommender().fit(training(data.big_matrix)), name="popular")
    feed = Feed(served, data.videos, data.big_matrix)
    app = create_app(feed, open_store(f"sqlite:///{tmp_path}/events.db"))
    with serve_in_thread(app) as port:
        check_one_winner_per_event_id(f"http://127.0.0.1:{port}")


@pytest.mark.slow
def test_concurrent_event_id_reuse_on_postgres_with_two_workers(run_dir, postgres_database):
    process, url = start_server(["--run", str(run_dir), "--db", postgres_database,
                                 "--workers", "2"])  # fmt: skip
    try:
        check_one_winner_per_event_id(url)
        health = httpx.get(f"{url}/health", timeout=5).json()
        assert health["live_events"] == ROUNDS + 1
    finally:
        stop_server(process)

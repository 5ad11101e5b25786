"""Several server processes, one PostgreSQL event stream: an event acknowledged by any of them
shapes the next recommendation from every one within a second, also across restarts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from serving_processes import start_server, stop_server

from shortrec.serving.demo import fabricate_release, fabricate_run

pytestmark = pytest.mark.slow
VISIBLE_WITHIN_S = 1.0
NEW_USER = 900_001  # not in the fabricated release: its feed depends on live events only


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workers")
    fabricate_release(root / "data", n_users=25, n_videos=90, views_per_user=8)
    return fabricate_run(root / "run", root / "data")


def live_views(url: str, user_id: int) -> list[int]:
    """The user's live video ids, newest first, over a fresh connection."""
    response = httpx.get(f"{url}/users/{user_id}/history?limit=1000",
                         headers={"Connection": "close"}, timeout=5)  # fmt: skip
    assert response.status_code == 200, response.text
    return [v["video_id"] for v in response.json()["items"] if v["source"] == "live"]


def wait_until(check, what: str, within: float = VISIBLE_WITHIN_S) -> float:
    """Seconds until `check()` is true; fails after `within` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"{what}: not within {within} s"
        time.sleep(0.02)
    return time.monotonic() - started


def post(url: str, video_id: int, event_id: str) -> httpx.Response:
    event = {"user_id": NEW_USER, "video_id": video_id, "watch_ratio": 1.0, "event_id": event_id}
    return httpx.post(f"{url}/events", json=event, timeout=10)


def test_two_hosts_share_one_postgres_event_stream_across_a_restart(run_dir, postgres_database):
    args = ["--run", str(run_dir), "--db", postgres_database]
    first, url_a = start_server(args)
    second, url_b = start_server(args)
    try:
        assert post(url_a, 10, "a-10").status_code == 200
        assert live_views(url_a, NEW_USER) == [10]  # its own answer already includes it
        wait_until(lambda: live_views(url_b, NEW_USER) == [10], "A's event on B")
        feed = httpx.get(f"{url_b}/users/{NEW_USER}/recommendations?k=90").json()
        assert feed["strategy"] == "model" and feed["history_length"] == 1
        assert 10 not in [item["video_id"] for item in feed["items"]]
        assert post(url_b, 11, "b-11").status_code == 200
        wait_until(lambda: live_views(url_a, NEW_USER) == [11, 10], "B's event on A")

        second.send_signal(signal.SIGKILL)  # a crash, not a clean shutdown
        second.wait(10)
        for video_id in (12, 13, 14):
            assert post(url_a, video_id, f"a-{video_id}").status_code == 200
        second, url_b = start_server(args, port=int(url_b.rsplit(":", 1)[1]))
        assert live_views(url_b, NEW_USER) == [14, 13, 12, 11, 10]  # replayed, each once
        retry = post(url_b, 12, "a-12")  # a client retrying an event A acknowledged
        assert retry.status_code == 200 and retry.json() == {"accepted": 1, "users": [NEW_USER]}
        assert post(url_a, 15, "a-15").status_code == 200
        wait_until(lambda: live_views(url_b, NEW_USER) == [15, 14, 13, 12, 11, 10], "after restart")
        assert httpx.get(f"{url_a}/health").json()["live_events"] == 6
    finally:
        stop_server(first)
        stop_server(second)


def _workers_seen(url: str, expected: int, pids: set[int], tries: int = 200) -> dict[int, int]:
    """live_events per worker pid, from fresh connections (the kernel spreads them)."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        health = httpx.get(f"{url}/health", headers={"Connection": "close"}, timeout=5).json()
        seen[health["worker_pid"]] = health["live_events"]
        if set(seen) >= pids and all(count == expected for count in seen.values()):
            break
    return seen


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_serve_workers_share_the_stream_and_a_restarted_worker_catches_up(
    run_dir, postgres_database
):
    process, url = start_server(["--run", str(run_dir), "--db", postgres_database,
                                 "--workers", "2"])  # fmt: skip
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2:  # both workers up (the second may still be loading)
            assert time.monotonic() < deadline, f"only saw workers {pids}"
            health = httpx.get(f"{url}/health", headers={"Connection": "close"}, timeout=5)
            pids.add(health.json()["worker_pid"])
        for i, video_id in enumerate((20, 21, 22)):
            assert post(url, video_id, f"w-{i}").status_code == 200
        wait_until(lambda: set(_workers_seen(url, 3, pids, tries=10).values()) == {3},
                   "every worker has the 3 events")  # fmt: skip
        seen = _workers_seen(url, 3, pids)
        assert set(seen) == pids and set(seen.values()) == {3}, seen

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        assert post(url, 23, "w-3").status_code == 200  # the other worker answers meanwhile
        deadline = time.monotonic() + 60
        while True:  # uvicorn's supervisor starts a replacement worker
            seen = _workers_seen(url, 4, set(), tries=20)
            if any(pid not in pids for pid in seen):
                break
            assert time.monotonic() < deadline, f"no replacement worker: {seen}"
            time.sleep(0.5)
        replacement = next(pid for pid in seen if pid not in pids)
        wait_until(lambda: _workers_seen(url, 4, {replacement}, tries=20).get(replacement) == 4,
                   "the replacement replayed every event", within=5)  # fmt: skip
        assert victim not in _workers_seen(url, 4, set(), tries=20)
    finally:
        stop_server(process)

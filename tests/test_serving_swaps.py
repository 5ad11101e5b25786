"""Model swaps on one PostgreSQL store reach every process: both workers of `serve --workers 2`
(and a worker that replaces a crashed one), and two hosts; a host that cannot load the run
reports it and keeps its old model. `GET /admin/model` shows what each process serves."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
from serving_processes import start_server, stop_server

from shortrec.models.baselines import RecentPopularRecommender
from shortrec.serving.demo import fabricate_release, fabricate_run

pytestmark = pytest.mark.slow
TOKEN = "swap-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REACHES_ALL_WITHIN_S = 15.0  # a poll (0.2 s) + loading a small model, on a busy machine


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs_a/{popular,recent} for host A; runs_b/{popular,recent} for host B, where B's
    `recent` has a model that cannot be loaded."""
    root = tmp_path_factory.mktemp("swaps")
    fabricate_release(root / "data", n_users=20, n_videos=60, views_per_user=6)
    fabricate_run(root / "runs_a" / "popular", root / "data")
    fabricate_run(root / "runs_a" / "recent", root / "data", RecentPopularRecommender())
    shutil.copytree(root / "runs_a", root / "runs_b")
    for file in (root / "runs_b" / "recent" / "model").iterdir():
        if file.is_file():
            file.write_bytes(b"not a model")
    return root


def serve(runs: Path, host: str, db: str, *extra: str):
    return start_server(["--run", str(runs / host / "popular"), "--db", db,
                         "--admin-token", TOKEN, *extra])  # fmt: skip


def admin_model(url: str) -> dict:
    response = httpx.get(f"{url}/admin/model", headers={**AUTH, "Connection": "close"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def served_by_process(url: str) -> dict[str, tuple[str, str]]:
    """(model name, swap state) per process, as the store lists them."""
    return {p["process"]: (p["model"]["name"], p["swap"]["state"])
            for p in admin_model(url)["processes"]}  # fmt: skip


def wait_for(check, what: str, within: float = REACHES_ALL_WITHIN_S):
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(0.1)
    return result


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", headers={"Connection": "close"}, timeout=5).json()


def worker_models(url: str, pids: set[int], tries: int = 40) -> dict[int, str]:
    """Model name per worker pid, from fresh connections (the kernel spreads them)."""
    seen: dict[int, str] = {}
    for _ in range(tries):
        answer = health(url)
        seen[answer["worker_pid"]] = answer["model"]["name"]
        if pids and set(seen) >= pids:
            break
    return seen


def test_a_swap_reaches_both_workers_and_a_replacement_worker(runs, postgres_database):
    process, url = serve(runs, "runs_a", postgres_database, "--workers", "2")
    try:

        def both_workers() -> set[int] | None:
            seen = set(worker_models(url, set(), 20))
            return seen if len(seen) == 2 else None

        pids = wait_for(both_workers, "both workers answer", 60)
        wait_for(lambda: len(served_by_process(url)) == 2, "both workers reported")
        swap = httpx.post(f"{url}/admin/model?wait=true", json={"run_dir": "recent"},
                          headers=AUTH, timeout=60)  # fmt: skip
        assert swap.status_code == 200, swap.text
        assert swap.json()["model"]["name"] == "recent-popular"

        def all_swapped() -> dict | None:
            served = served_by_process(url)
            return served if set(served.values()) == {("recent-popular", "idle")} else None

        everyone = wait_for(all_swapped, "every worker serves the new model")
        assert {int(name.rsplit(":", 1)[1]) for name in everyone} == pids
        assert set(worker_models(url, pids).values()) == {"recent-popular"}

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)  # uvicorn starts a replacement, with the --run model
        replacement = wait_for(lambda: next((pid for pid in worker_models(url, set(), 20)
                                             if pid not in pids), None),
                               "a replacement worker", 60)  # fmt: skip
        wait_for(lambda: worker_models(url, {replacement}, 40).get(replacement)
                 == "recent-popular", "the replacement follows the swap")  # fmt: skip
    finally:
        stop_server(process)


def test_a_swap_reaches_another_host_and_a_failed_load_keeps_the_old_model(runs, postgres_database):
    host_a, url_a = serve(runs, "runs_a", postgres_database)
    host_b, url_b = serve(runs, "runs_b", postgres_database)
    try:
        pid_a, pid_b = health(url_a)["worker_pid"], health(url_b)["worker_pid"]
        swap = httpx.post(f"{url_a}/admin/model?wait=true", json={"run_dir": "recent"},
                          headers=AUTH, timeout=60)  # fmt: skip
        assert swap.status_code == 200, swap.text

        def b_failed():
            listed = {int(p["process"].rsplit(":", 1)[1]): p for p in
                      admin_model(url_b)["processes"]}  # fmt: skip
            b = listed.get(pid_b)
            return listed if b is not None and b["swap"]["state"] == "failed" else None

        listed = wait_for(b_failed, "host B tried the swap")
        assert listed[pid_a]["model"]["name"] == "recent-popular"
        assert listed[pid_a]["swap"]["state"] == "idle"
        b = listed[pid_b]
        assert b["model"]["name"] == "popular" and b["swap"]["run"] == "recent"
        assert b["swap"]["error"] == "the run's model could not be loaded"
        assert str(runs) not in httpx.get(f"{url_b}/admin/model", headers=AUTH).text
        feed = httpx.get(f"{url_b}/users/1/recommendations", timeout=10).json()
        assert feed["model"] == "popular"  # B still serves, on its old model

        back = httpx.post(f"{url_b}/admin/model?wait=true", json={"run_dir": "popular"},
                          headers=AUTH, timeout=60)  # a swap from B reaches A  # fmt: skip
        assert back.status_code == 200, back.text
        wait_for(lambda: health(url_a)["model"]["name"] == "popular", "B's swap on A")
        assert set(served_by_process(url_a).values()) == {("popular", "idle")}
    finally:
        stop_server(host_a)
        stop_server(host_b)

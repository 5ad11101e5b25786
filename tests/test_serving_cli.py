"""`shortrec serve` end to end: a real server process, restarted, keeps every acknowledged event."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from serving_processes import start_server, stop_server
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.serving.demo import fabricate_release, fabricate_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve_cli")
    fabricate_release(root / "data", n_users=25, n_videos=90, views_per_user=8)
    return fabricate_run(root / "run", root / "data")


def test_serve_survives_a_restart_with_every_acknowledged_event(run_dir, tmp_path):
    db = f"sqlite:///{tmp_path}/events.db"
    process, url = start_server(["--run", str(run_dir), "--db", db])
    try:
        assert httpx.get(f"{url}/").status_code == 200
        first = httpx.get(f"{url}/users/4/recommendations?k=3").json()
        top = first["items"][0]["video_id"]
        posted = httpx.post(f"{url}/events", json={"user_id": 4, "video_id": top, "watch_ratio": 1})
        assert posted.status_code == 200
        assert top not in [
            i["video_id"] for i in httpx.get(f"{url}/users/4/recommendations").json()["items"]
        ]
    finally:
        output = stop_server(process)
    assert "serving popular" in output
    process, url = start_server(["--run", str(run_dir), "--db", db])
    try:
        newest = httpx.get(f"{url}/users/4/history?limit=1").json()["items"][0]
        assert newest["video_id"] == top and newest["source"] == "live"
        again = [
            i["video_id"] for i in httpx.get(f"{url}/users/4/recommendations?k=90").json()["items"]
        ]
        assert top not in again
    finally:
        stop_server(process)


def test_serve_reports_a_bad_run_cleanly(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--run", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "is not a run directory" in result.output
    assert "Traceback" not in result.output


def test_serve_without_run_explains_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "no trained sasrec run under runs/" in result.output


def test_serve_rejects_a_bad_db_url(run_dir):
    result = CliRunner().invoke(app, ["serve", "--run", str(run_dir), "--db", "mysql://x/y"])
    assert result.exit_code == 2 and "--db must be" in result.output


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_serve_help_lists_the_options():
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--run", "--host", "--port", "--db", "--workers", "--admin-token",
                   "--events-token", "--runs-root", "--trusted-host", "--max-body-bytes",
                   "--poll-seconds"):  # fmt: skip
        assert option in result.output


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_applies_the_connection_and_time_limits_it_is_given(run_dir, tmp_path, workers):
    import socket
    import time

    db = f"sqlite:///{tmp_path}/events.db"
    process, url = start_server(["--run", str(run_dir), "--db", db, "--workers", str(workers),
                                 "--header-timeout", "1", "--max-header-bytes", "2048",
                                 "--max-event-future", "60"])  # fmt: skip
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started, answer = time.monotonic(), b""
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # and nothing more
            while chunk := sock.recv(65536):  # bounded by the socket timeout
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 8
        big = httpx.get(f"{url}/health", headers={"X-Big": "a" * 3000})
        assert big.status_code == 431 and "2048" in big.json()["error"]
        late = {"user_id": 4, "video_id": 1, "watch_ratio": 1, "timestamp": time.time() + 600}
        assert httpx.post(f"{url}/events", json=late).status_code == 422
    finally:
        stop_server(process)

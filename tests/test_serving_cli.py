"""`shortrec serve` end to end: a real server process, restarted, keeps every acknowledged event."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.serving.demo import fabricate_release, fabricate_run

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shortrec.cli", "serve", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start within 60 s")


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve_cli")
    fabricate_release(root / "data", n_users=25, n_videos=90, views_per_user=8)
    return fabricate_run(root / "run", root / "data")


def test_serve_survives_a_restart_with_every_acknowledged_event(run_dir, tmp_path):
    db = f"sqlite:///{tmp_path}/events.db"
    process, url = _start(["--run", str(run_dir), "--db", db])
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
        output = _stop(process)
    assert "serving popular" in output
    process, url = _start(["--run", str(run_dir), "--db", db])
    try:
        newest = httpx.get(f"{url}/users/4/history?limit=1").json()["items"][0]
        assert newest["video_id"] == top and newest["source"] == "live"
        again = [
            i["video_id"] for i in httpx.get(f"{url}/users/4/recommendations?k=90").json()["items"]
        ]
        assert top not in again
    finally:
        _stop(process)


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
    for option in ("--run", "--host", "--port", "--db"):
        assert option in result.output

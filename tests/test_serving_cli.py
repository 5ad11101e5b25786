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

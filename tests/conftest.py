"""Shared fixtures: a real PostgreSQL server for the event-store, multi-worker and tuning tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 that a test may stop and start again (on
    the same port)."""

    def __init__(self) -> None:
        pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (shortrec[postgres])")
        bin_dir = _postgres_bin()
        if bin_dir is None:
            pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
        self.bin_dir = bin_dir
        # PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root and no runuser to start PostgreSQL as another user")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.base = Path(tempfile.mkdtemp(prefix="shortrec-pg-"))
        os.chmod(self.base, 0o777)
        self.data_dir = self.base / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        try:
            subprocess.run([*self.as_user, str(bin_dir / "initdb"), "-D", str(self.data_dir),
                            "-U", "postgres", "--auth=trust", "--no-sync"],
                           check=True, capture_output=True)  # fmt: skip
            self.start()
        except (subprocess.CalledProcessError, OSError) as error:
            shutil.rmtree(self.base, ignore_errors=True)
            pytest.skip(f"could not start a temporary PostgreSQL: {error}")

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir),
                        *args], check=check, capture_output=True)  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-l", str(self.base / "log"), "-w", "-t", "30", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """SHORTREC_TEST_POSTGRES_URL if set, else a temporary cluster (skipped without one)."""
    if url := os.environ.get("SHORTREC_TEST_POSTGRES_URL"):
        yield url
        return
    cluster = PostgresCluster()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture
def postgres_cluster():
    """A PostgreSQL cluster of this test's own, which it may stop and restart."""
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres_database(postgres_url):
    """A new, empty database on the test server, dropped afterwards; yields its URL."""
    import secrets

    import psycopg

    name = f"shortrec_test_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = postgres_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- shared worlds (session-scoped: built once, read by many test files) --------------------
# Tests read these folders and never write into them: each writes runs under its own tmp_path.


@pytest.fixture(scope="session")
def tiny_synth_raw(tmp_path_factory) -> Path:
    """The tiny seed-0 synthetic KuaiRec world, as `shortrec data synth` writes it (CSVs)."""
    from shortrec.data.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("tiny_synth") / "raw"
    synthesize(out, SynthConfig(scale="tiny", seed=0), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_synth_world(tiny_synth_raw: Path) -> Path:
    """A folder holding `raw/` (the tiny synthetic world) and `prepared/` (its release)."""
    from shortrec.data.prepare import prepare

    root = tiny_synth_raw.parent
    prepare(tiny_synth_raw, root / "prepared", progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> Path:
    """A handmade prepared release small enough to train every model in seconds."""
    from tiny_release import write_tiny_release

    return write_tiny_release(tmp_path_factory.mktemp("tiny_release") / "world")


@pytest.fixture(scope="session")
def planted_release(tmp_path_factory):
    """(directory, KuaiRec split) of the release with planted preferences and exposure."""
    from test_features_world import write_planted_world

    from shortrec.data.dataset import load_prepared
    from shortrec.data.splits import kuairec_split

    directory = write_planted_world(tmp_path_factory.mktemp("planted") / "world")
    return directory, kuairec_split(load_prepared(directory))

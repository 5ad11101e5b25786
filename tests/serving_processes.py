"""Starting and stopping real `shortrec serve` processes on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
from conftest import free_port


def start_server(args: list[str], port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`shortrec serve ARGS --port PORT`, once /health answers; its output is piped."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shortrec.cli", "serve", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start within 90 s")


def stop_server(process: subprocess.Popen) -> str:
    """SIGINT (a clean shutdown), SIGKILL after 20 s; returns the server's output."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[int]:
    """A real uvicorn server for `app` on 127.0.0.1 in this process; yields its port."""
    import uvicorn

    port = free_port()
    from shortrec.serving.connections import uvicorn_options

    options = uvicorn_options(app.state.serving.settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", **options)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)

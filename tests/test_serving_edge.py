"""The HTTP edge on a real uvicorn server: slow clients, header bombs and connection floods
are cut off by deadlines and bounds, and what the server answers is JSON.

Every loop here is bounded by a count and a deadline, and stops as soon as the server closes
the connection."""

from __future__ import annotations

import json
import socket
import time

import pytest
from fitting import training
from serving_processes import serve_in_thread

from shortrec.data.dataset import load_prepared
from shortrec.models.baselines import PopularRecommender
from shortrec.serving.app import create_app
from shortrec.serving.connections import ConnectionLimits, uvicorn_options
from shortrec.serving.demo import fabricate_release
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.settings import ServeSettings
from shortrec.serving.store import SQLiteEventStore

HEADER_TIMEOUT = 1.0
KEEP_ALIVE = 1.0
BODY_TIMEOUT = 1.0
MAX_HEADER_BYTES = 4096
LIMIT = 6
SLACK = 3.0  # seconds a busy machine may add before the server acts


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    root = tmp_path_factory.mktemp("edge")
    data = load_prepared(fabricate_release(root / "data", n_users=8, n_videos=30,
                                           views_per_user=4))  # fmt: skip
    feed = Feed(ServedModel(PopularRecommender().fit(training(data.big_matrix)), name="popular"),
                data.videos, data.big_matrix)  # fmt: skip
    settings = ServeSettings(header_timeout_seconds=HEADER_TIMEOUT, keep_alive_seconds=KEEP_ALIVE,
                             body_timeout_seconds=BODY_TIMEOUT, max_header_bytes=MAX_HEADER_BYTES,
                             limit_concurrency=LIMIT)  # fmt: skip
    with serve_in_thread(create_app(feed, SQLiteEventStore(root / "e.db"), settings)) as port:
        yield port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + SLACK)
    return sock


def read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (bounded by `deadline_s`), and when."""
    start, data = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - start < deadline_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            return data, time.monotonic() - start
        data += chunk
    raise AssertionError(f"connection still open after {deadline_s} s; got {data[:200]!r}")


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def send_until_closed(sock: socket.socket, pieces, pause: float, deadline_s: float) -> float:
    """Send `pieces` one by one `pause` s apart until the server stops accepting; seconds."""
    start = time.monotonic()
    for piece in pieces:
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"the server still accepted data after {deadline_s} s")
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        if pause:
            time.sleep(pause)
    return time.monotonic() - start


def test_defaults_are_the_documented_limits():
    limits = ConnectionLimits.from_settings(ServeSettings())
    assert limits.header_timeout_seconds == 10.0
    assert limits.max_header_bytes == 64 * 1024
    assert limits.limit_concurrency == 512
    assert uvicorn_options(ServeSettings())["timeout_keep_alive"] == 15.0


def test_headers_sent_one_line_at_a_time_are_cut_off(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        lines = (f"X-Slow-{i}: {i}\r\n".encode() for i in range(200))
        sending = send_until_closed(sock, lines, 0.25, HEADER_TIMEOUT + SLACK + 2)
        answer, closed_after = read_until_closed(sock, HEADER_TIMEOUT + SLACK)
    assert sending + closed_after < HEADER_TIMEOUT + SLACK
    status, body = status_and_json(answer)
    assert status == 408 and "headers" in body["error"]


def test_a_slow_request_line_is_cut_off(server):
    with connect(server) as sock:
        pieces = (bytes([byte]) for byte in b"GET /health?" + b"a" * 200)
        send_until_closed(sock, pieces, 0.1, HEADER_TIMEOUT + SLACK + 2)
        answer, _ = read_until_closed(sock, HEADER_TIMEOUT + SLACK)
    assert status_and_json(answer)[0] == 408


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        answer, closed_after = read_until_closed(sock, HEADER_TIMEOUT + SLACK)
    assert closed_after >= HEADER_TIMEOUT * 0.9
    assert status_and_json(answer)[0] == 408


def test_an_idle_keep_alive_connection_is_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer, closed_after = read_until_closed(sock, KEEP_ALIVE + SLACK)
    assert answer.startswith(b"HTTP/1.1 200")
    assert closed_after < KEEP_ALIVE + SLACK


def test_a_half_sent_body_is_cut_off(server):
    head = (b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")  # fmt: skip
    with connect(server) as sock:
        sock.sendall(head + b'{"user_id": 1,')
        answer, closed_after = read_until_closed(sock, BODY_TIMEOUT + SLACK)
    assert closed_after < BODY_TIMEOUT + SLACK
    status, body = status_and_json(answer)
    assert status == 408 and "body" in body["error"]


@pytest.mark.parametrize("shape", ["one huge header", "many small headers"])
def test_a_header_bomb_gets_431_and_is_closed(server, shape):
    if shape == "one huge header":
        pieces = [b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "] + [b"a" * 1024] * 8192
    else:
        pieces = [b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"] + [
            b"".join(f"X-{i}-{j}: v\r\n".encode() for j in range(20)) for i in range(50_000)
        ]
    with connect(server) as sock:
        send_until_closed(sock, iter(pieces), 0.0, 20)
        answer, _ = read_until_closed(sock, SLACK)
    status, body = status_and_json(answer)
    assert status == 431 and str(MAX_HEADER_BYTES) in body["error"]


def test_headers_under_the_bound_are_served(server):
    headers = b"".join(f"X-{i}: {'v' * 50}\r\n".encode() for i in range(40))  # ~2.6 KB
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     + headers + b"\r\n")  # fmt: skip
        answer, _ = read_until_closed(sock, SLACK)
    assert answer.startswith(b"HTTP/1.1 200")


def test_connections_over_the_limit_get_a_quick_503(server):
    idle = [connect(server) for _ in range(LIMIT)]
    try:
        time.sleep(0.2)
        with connect(server) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer, _ = read_until_closed(sock, SLACK)
            answered_after = time.monotonic() - started
    finally:
        for sock in idle:
            sock.close()
    status, body = status_and_json(answer)
    assert status == 503 and "retry" in body["error"]
    assert answered_after < 1.0
    time.sleep(0.3)  # the idle sockets are gone: the next request is served
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock, SLACK)[0].startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "request_bytes",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
     b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
)  # fmt: skip
def test_malformed_http_is_a_json_400(server, request_bytes):
    with connect(server) as sock:
        sock.sendall(request_bytes)
        answer, _ = read_until_closed(sock, SLACK)
    status, body = status_and_json(answer)
    assert status == 400 and body["error"] == "malformed HTTP request"


def test_head_works_on_a_real_server_without_a_body(server):
    with connect(server) as sock:
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer, _ = read_until_closed(sock, SLACK)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""
    assert int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"content-length"])

"""Every finding of the serving audit, on a server started with defaults: a 4xx, never a 5xx
and never a silent 200; and acknowledged events are never lost (fuzzed)."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient
from fitting import training
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_processes import serve_in_thread

from shortrec.data.dataset import KuaiRecData, load_prepared
from shortrec.models.base import Recommender
from shortrec.models.baselines import PopularRecommender
from shortrec.serving.app import create_app
from shortrec.serving.demo import fabricate_release
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.schemas import MAX_DURATION_MS, MAX_TIMESTAMP, MIN_TIMESTAMP
from shortrec.serving.settings import ServeSettings
from shortrec.serving.store import SQLiteEventStore

BASE_URL = "http://127.0.0.1"
JSON = {"Content-Type": "application/json"}
N_VIDEOS = 50


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> KuaiRecData:
    path = fabricate_release(tmp_path_factory.mktemp("security") / "data", n_users=10,
                             n_videos=N_VIDEOS, views_per_user=5)  # fmt: skip
    return load_prepared(path)


def make_feed(data: KuaiRecData, model: Recommender | None = None) -> Feed:
    model = model or PopularRecommender().fit(training(data.big_matrix))
    return Feed(ServedModel(model, name="popular"), data.videos, data.big_matrix)


@pytest.fixture()
def app(release, tmp_path):
    return create_app(make_feed(release), SQLiteEventStore(tmp_path / "events.db"))


@pytest.fixture()
def client(app):
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as test_client:
        yield test_client


def event(**fields) -> dict:
    return {"user_id": 1, "video_id": 2, "watch_ratio": 0.5, **fields}


# --- who may write -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", json.dumps(event())),
        ("application/x-www-form-urlencoded", "user_id=1&video_id=2&watch_ratio=0.5"),
        ("multipart/form-data; boundary=x", "--x\r\n\r\n{}\r\n--x--"),
        (None, json.dumps(event())),
        ("application/jsonp", json.dumps(event())),
    ],
)
def test_events_need_a_json_content_type(client, content_type, body):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/events", content=body, headers=headers)
    assert response.status_code == 415
    assert client.get("/health").json()["live_events"] == 0


def test_json_with_a_charset_is_accepted(client):
    response = client.post("/events", content=json.dumps(event()),
                           headers={"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert response.status_code == 200


def test_events_token_when_configured(release, tmp_path):
    app = create_app(make_feed(release), SQLiteEventStore(tmp_path / "e.db"),
                     ServeSettings(events_token="ev"))  # fmt: skip
    with TestClient(app, base_url=BASE_URL) as client:
        assert client.post("/events", json=event()).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/events", json=event(), headers=wrong).status_code == 401
        ok = client.post("/events", json=event(), headers={"Authorization": "Bearer ev"})
        assert ok.status_code == 200
        assert client.get("/users/1/recommendations").status_code == 200  # reads stay open


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "", "localhost.:80"])
def test_untrusted_host_headers_are_refused(client, host):
    response = client.get("/health", headers={"Host": host})
    assert response.status_code == 400 and response.json()["error"] == "untrusted Host header"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "[::1]:9000", "LOCALHOST"])
def test_local_host_headers_are_accepted(client, host):
    assert client.get("/health", headers={"Host": host}).status_code == 200


def test_trusted_hosts_are_configurable(release, tmp_path):
    settings = ServeSettings(trusted_hosts=("feed.example.org",))
    app = create_app(make_feed(release), SQLiteEventStore(tmp_path / "e.db"), settings)
    with TestClient(app, base_url="http://feed.example.org") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"Host": "127.0.0.1"}).status_code == 400


# --- bounded input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"time": "0001-01-01T00:00:00"}, "outside"),
        ({"time": "9999-12-31T23:59:59-12:00"}, "outside"),
        ({"time": "1969-12-31T23:59:59Z"}, "outside"),
        ({"time": "yesterday"}, "not an ISO 8601 time"),
        ({"time": "0001-01-01T00:00:00", "timestamp": 1.6e9}, "outside"),
        ({"timestamp": -1.0}, "timestamp"),
        ({"timestamp": 1e12}, "timestamp"),
        ({"user_id": True}, "user_id"),
        ({"user_id": "123"}, "user_id"),
        ({"user_id": 123.0}, "user_id"),
        ({"video_id": False}, "video_id"),
        ({"watch_ratio": True}, "watch_ratio"),
        ({"watch_ratio": 1e308}, "watch_ratio"),
        ({"watch_ratio": "0.5"}, "watch_ratio"),
        ({"watch_ratio": None, "play_duration": 2**63 - 1, "video_duration": 1000},
         "play_duration"),
        ({"watch_ratio": None, "play_duration": 10**8, "video_duration": 1}, "play_duration"),
        ({"watch_ratio": None, "play_duration": 2000, "video_duration": 1}, "over 1000"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": "a b"}, "event_id"),
        ({"event_id": 7}, "event_id"),
        ({"date": "20200705"}, "date"),
    ],
)  # fmt: skip
def test_out_of_range_or_coerced_values_are_422(client, fields, where):
    response = client.post("/events", json=event(**fields))
    assert response.status_code == 422, response.text
    assert where in response.json()["message"]
    assert client.get("/users/1/history").status_code == 200
    assert client.get("/health").json()["live_events"] == 0


def test_json_infinity_and_big_exponents_are_422(client):
    for text in ('{"user_id":1,"video_id":2,"watch_ratio":Infinity}',
                 '{"user_id":1,"video_id":2,"watch_ratio":1e400}'):  # fmt: skip
        assert client.post("/events", content=text, headers=JSON).status_code == 422


def test_deep_nesting_is_422(client):
    for depth in (300, 2_000, 100_000):
        body = "[" * depth + "]" * depth
        response = client.post("/events", content=body, headers=JSON)
        assert response.status_code in (413, 422), response.text
    assert client.post("/events", content="[" * 2000 + "]" * 2000, headers=JSON).status_code == 422
    nested_swap = '{"run_dir":' + "[" * 2000 + "]" * 2000 + "}"
    assert client.post("/admin/model", content=nested_swap, headers=JSON).status_code < 500


def test_a_body_over_the_limit_is_413_before_it_is_read(release, tmp_path):
    app = create_app(make_feed(release), SQLiteEventStore(tmp_path / "e.db"),
                     ServeSettings(max_body_bytes=4096))  # fmt: skip
    with TestClient(app, base_url=BASE_URL) as client:
        big = json.dumps([event(video_id=i % N_VIDEOS) for i in range(200)])
        assert len(big) > 4096
        response = client.post("/events", content=big, headers=JSON)
        assert response.status_code == 413 and "4096" in response.json()["error"]

        def chunks():  # no Content-Length: the cap applies while the body streams in
            for _ in range(100):
                yield b" " * 1000

        streamed = client.post("/events", content=chunks(), headers=JSON)
        assert streamed.status_code == 413
        assert client.get("/health").json()["live_events"] == 0
        small = client.post("/events", json=event())
        assert small.status_code == 200


def test_idempotent_retries_store_an_event_once(client):
    first = client.post("/events", json=event(event_id="phone-7:42", video_id=9))
    again = client.post("/events", json=event(event_id="phone-7:42", video_id=9))
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert client.get("/health").json()["live_events"] == 1
    other = client.post("/events", json=event(event_id="phone-7:42", video_id=10))
    assert other.status_code == 409 and "already used" in other.json()["error"]
    batch = [event(event_id="b1", video_id=3), event(event_id="phone-7:42", video_id=9)]
    assert client.post("/events", json=batch).json()["accepted"] == 2
    assert client.get("/health").json()["live_events"] == 2  # only b1 was new
    twice = [event(event_id="c1"), event(event_id="c1")]
    response = client.post("/events", json=twice)
    assert response.status_code == 422 and "repeated event_id" in response.json()["message"]
    history = client.get("/users/1/history?limit=100").json()["items"]
    assert sum(v["source"] == "live" for v in history) == 2


def test_a_stored_time_no_datetime_can_show_does_not_break_history(release, tmp_path):
    """A store written by an older server may hold such a time: history must still answer."""
    store = SQLiteEventStore(tmp_path / "old.db")
    store._conn.execute(
        "INSERT INTO events (user_id, video_id, watch_ratio, timestamp) VALUES (1, 2, 0.5, ?)",
        (-62135596800.0 - 1e9,),
    )
    with TestClient(create_app(make_feed(release), store), base_url=BASE_URL) as client:
        response = client.get("/users/1/history?limit=100")
        assert response.status_code == 200
        assert any(v["time"] is None and v["source"] == "live" for v in response.json()["items"])


# --- errors carry no internals and keep the connection -----------------------------------------
@dataclasses.dataclass
class Exploding(Recommender):
    name: ClassVar[str] = "exploding"

    def score(self, user_ids, video_ids, histories) -> np.ndarray:
        raise RuntimeError("secret internal detail /home/operator/weights.pt")


@pytest.fixture()
def live_server(release, tmp_path):
    """A real uvicorn server (keep-alive and pipelining are what is tested) on 127.0.0.1."""
    pytest.importorskip("uvicorn")
    app = create_app(make_feed(release, Exploding()), SQLiteEventStore(tmp_path / "e.db"))
    with serve_in_thread(app) as port:
        yield port


def _read_responses(sock: socket.socket, n: int) -> list[tuple[int, bytes]]:
    """n HTTP/1.1 responses (Content-Length framed) from one connection."""
    buffer, answers = b"", []
    sock.settimeout(10)
    while len(answers) < n:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            buffer += chunk
        answers.append((int(lines[0].split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return answers


def test_an_internal_error_is_a_generic_503_and_keeps_the_connection(live_server):
    body = json.dumps(event(user_id=777, video_id=4)).encode()
    pipelined = (
        b"GET /users/1/recommendations HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", live_server)) as sock:
        sock.sendall(pipelined)
        (status1, body1), (status2, body2), (status3, body3) = _read_responses(sock, 3)
    assert status1 == 503 and b"secret" not in body1 and b"/home" not in body1
    assert json.loads(body1)["error"]
    assert status2 == 200 and json.loads(body2)["accepted"] == 1
    assert status3 == 200 and json.loads(body3)["live_events"] == 1


# --- metrics -----------------------------------------------------------------------------------
def test_metrics_labels_cannot_be_inflated(client):
    for i in range(300):
        client.request(f"FAKE{i}", f"/made/up/{i}")
        client.get(f"/nothing/{i}")
    text = client.get("/metrics").text
    assert "FAKE" not in text and "/made/up" not in text
    assert 'shortrec_requests_total{method="OTHER",route="unmatched",status="404"} 300.0' in text
    assert len(text) < 50_000
    series = [line for line in text.splitlines() if line.startswith("shortrec_requests_total")]
    assert len(series) <= 4


# --- fuzz: no 5xx, and every acknowledged event is stored and applied exactly once -------------
_valid_event = st.fixed_dictionaries(
    {"user_id": st.integers(0, 12), "video_id": st.integers(0, N_VIDEOS - 1),
     "watch_ratio": st.floats(0, 5)},
    optional={
        "timestamp": st.floats(MIN_TIMESTAMP, MAX_TIMESTAMP - 1),
        "time": st.sampled_from(["2020-07-05 05:27:48.378", "2099-12-31T00:00:00+08:00"]),
        "event_id": st.sampled_from([f"e{i}" for i in range(30)]),
        "play_duration": st.integers(0, MAX_DURATION_MS),
    },
)  # fmt: skip
_bad_values = st.sampled_from(
    [-1, 2**63, True, "3", 1.0, None, 1e308, "", "bad id", 5, [], {}, "0001-01-01T00:00:00",
     "9999-12-31T23:59:59-12:00", 2**63 - 1, N_VIDEOS + 1, -5.0, 1e20]
)  # fmt: skip
_fields = st.sampled_from(["user_id", "video_id", "watch_ratio", "timestamp", "time", "event_id",
                           "play_duration", "video_duration", "date", "extra"])  # fmt: skip
_corrupted_event = st.builds(lambda e, k, v: {**e, k: v}, _valid_event, _fields, _bad_values)
_fuzz_event = st.one_of(_valid_event, _valid_event, _corrupted_event)


@pytest.fixture()
def fuzz_server(release, tmp_path):
    """One server for every example: the invariants hold over the whole run."""
    store = SQLiteEventStore(tmp_path / "fuzz.db")
    feed = make_feed(release)
    with TestClient(create_app(feed, store), base_url=BASE_URL) as client:
        yield client, store, feed, []


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        _fuzz_event,
        st.lists(_fuzz_event, max_size=4),
        st.builds(lambda e: {"events": e}, st.lists(_fuzz_event, max_size=4)),
    )
)
def test_fuzzed_events_never_5xx_and_no_acknowledged_event_is_lost(fuzz_server, body):  # fmt: skip
    client, store, feed, acknowledged = fuzz_server
    response = client.post("/events", json=body)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        events = body["events"] if isinstance(body, dict) and "events" in body else body
        events = events if isinstance(events, list) else [events]
        assert response.json()["accepted"] == len(events)
        acknowledged.extend(events)
    else:
        assert response.status_code in (404, 409, 422), response.text
    with_ids = {e["event_id"]: e for e in acknowledged if e.get("event_id") is not None}
    wanted = [(e["user_id"], e["video_id"]) for e in acknowledged if e.get("event_id") is None]
    wanted += [(e["user_id"], e["video_id"]) for e in with_ids.values()]
    assert store.count() == len(wanted) == feed.live_count
    assert sorted(store.load().select("user_id", "video_id").rows()) == sorted(wanted)
    FUZZ_ACKNOWLEDGED.append(len(acknowledged))


FUZZ_ACKNOWLEDGED: list[int] = []


def test_the_fuzz_test_acknowledged_events():
    """Guards the fuzz test above (run before this one): it must exercise successful posts."""
    if not FUZZ_ACKNOWLEDGED:
        pytest.skip("run together with the fuzz test")
    assert max(FUZZ_ACKNOWLEDGED) >= 20, FUZZ_ACKNOWLEDGED[-5:]


# --- event times -------------------------------------------------------------------------------
def test_far_future_events_are_422_naming_the_field(client):
    now = time.time()
    cases = [
        (event(timestamp=4_000_000_000.0), "body.timestamp"),
        (event(time="2099-01-01T00:00:00+00:00"), "body.time"),
        ([event(), event(timestamp=now + 3600)], "body[1].timestamp"),
        ({"events": [event(timestamp=now + 3600)]}, "body.events[0].timestamp"),
    ]
    for body, where in cases:
        response = client.post("/events", json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["location"] == where
        assert "ahead of the server clock" in response.json()["message"]
    assert client.get("/health").json()["live_events"] == 0
    # A client clock a few minutes fast is fine.
    assert client.post("/events", json=event(timestamp=now + 300)).status_code == 200


def test_the_time_window_is_configurable(release, tmp_path):
    settings = ServeSettings(max_event_future_seconds=5, max_event_age_seconds=86_400)
    app = create_app(make_feed(release), SQLiteEventStore(tmp_path / "e.db"), settings)
    now = time.time()
    with TestClient(app, base_url=BASE_URL) as client:
        assert client.post("/events", json=event(timestamp=now + 60)).status_code == 422
        old = client.post("/events", json=event(timestamp=now - 2 * 86_400))
        assert old.status_code == 422 and old.json()["errors"][0]["location"] == "body.timestamp"
        assert "old" in old.json()["message"]
        assert client.post("/events", json=event(timestamp=now - 3600)).status_code == 200
        assert client.post("/events", json=event()).status_code == 200  # the server's time


# --- paths, methods and headers ----------------------------------------------------------------
@pytest.mark.parametrize("raw", ["23.0", "+23", "1_000", "023", "00", "-1", " 23", "0x17", "２３"])
def test_path_and_query_ids_are_plain_decimal_digits(client, raw):
    for path in (f"/users/{raw}/recommendations", f"/users/{raw}/history", f"/videos/{raw}",
                 f"/users/1/recommendations?k={raw}", f"/videos?offset={raw}"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 422, path
    assert client.get("/users/23/recommendations").status_code == 200
    assert client.get("/users/0/history").status_code == 200


GET_ROUTES = ["/", "/health", "/metrics", "/users", "/videos", "/videos/2",
              "/users/1/recommendations", "/users/1/history", "/static/app.js", "/openapi.json",
              "/docs"]  # fmt: skip


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_works_on_every_get_route(client, path):
    get = client.get(path)
    head = client.head(path)
    assert get.status_code == 200
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_every_get_operation_of_the_api_answers_head(app):
    examples = {"{video_id}": "2", "{user_id}": "1"}
    with TestClient(app, base_url=BASE_URL) as client:
        paths = [path for path, operations in client.get("/openapi.json").json()["paths"].items()
                 if "get" in operations and not path.startswith("/admin")]  # fmt: skip
        assert len(paths) >= 7
        for path in paths:
            for template, value in examples.items():
                path = path.replace(template, value)
            assert client.head(path).status_code == 200, path


@pytest.mark.parametrize("path", ["/", "/health", "/users/1/recommendations", "/nothing"])
def test_answers_carry_security_headers(client, path):
    headers = client.get(path).headers
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def test_the_api_docs_still_work_and_cannot_be_framed(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "<script" in docs.text
    assert docs.headers["content-security-policy"] == "frame-ancestors 'none'"

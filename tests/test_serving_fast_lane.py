"""The recommendations fast lane (`serving.fast_lane`): the same answers as FastAPI's route,
which still answers everything that is not the plain request."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_serving import BASE_URL, make_feed, settings_for, world  # noqa: F401

from shortrec.serving import fast_lane
from shortrec.serving.app import create_app
from shortrec.serving.fast_lane import FeedFastLane
from shortrec.serving.store import SQLiteEventStore

ASKS = [
    ("GET", "/users/{user}/recommendations"),
    ("GET", "/users/{user}/recommendations?k=3"),
    ("HEAD", "/users/{user}/recommendations?k=3"),
    ("GET", "/users/987654321/recommendations"),  # a cold user: the popular videos
    ("GET", "/users/{user}/recommendations?k=1000"),
    # Not plain: FastAPI's answers, errors included.
    ("GET", "/users/{user}/recommendations?k=0"),
    ("GET", "/users/{user}/recommendations?k=1001"),
    ("GET", "/users/{user}/recommendations?k=007"),
    ("GET", "/users/+{user}/recommendations"),
    ("GET", "/users/0{user}/recommendations"),
    ("GET", "/users/{user}/recommendations?k=4&k=5"),
    ("GET", "/users/{user}/recommendations?k=4&debug=1"),
    ("GET", "/users/99999999999999999999/recommendations"),
    ("GET", "/users/{user}/recommendations/"),
    ("POST", "/users/{user}/recommendations"),
]


def answers(world, tmp_path, lane: bool) -> list[tuple[int, list, bytes]]:  # noqa: F811
    feed = make_feed(world)
    user = int(feed.base.user_ids[0])
    app = create_app(feed, SQLiteEventStore(tmp_path / f"{lane}.db"), settings_for(world),
                     fast_lane=lane)  # fmt: skip
    out = []
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
        for method, path in ASKS:
            response = client.request(method, path.format(user=user), follow_redirects=False)
            headers = sorted((k, v) for k, v in response.headers.items() if k != "date")
            out.append((response.status_code, headers, response.content))
        event = {"user_id": user, "video_id": int(feed.catalogue_ids[0]), "watch_ratio": 1.5}
        assert client.post("/events", json=event).status_code == 200
        after = client.get(f"/users/{user}/recommendations")  # the live view is left out
        out.append((after.status_code, [], after.content))
        metrics = client.get("/metrics").text
    lane_label = 'route="/users/{user_id}/recommendations"'
    assert any(lane_label in line and 'status="200"' in line for line in metrics.splitlines())
    return out


def test_the_fast_lane_answers_exactly_as_the_route_does(world, tmp_path, monkeypatch):  # noqa: F811
    answered = []
    parse = FeedFastLane._parse
    monkeypatch.setattr(FeedFastLane, "_parse", lambda self, scope: answered.append(
        parse(self, scope)) or answered[-1])  # fmt: skip
    with_lane = answers(world, tmp_path, lane=True)
    plain = [asked for asked in answered if asked is not None]
    assert len(plain) == 6  # the five plain asks and the one after the event: in the lane
    without = answers(world, tmp_path, lane=False)
    assert [status for status, _, _ in with_lane] == [status for status, _, _ in without]
    assert with_lane == without
    assert [status for status, _, _ in with_lane][:6] == [200, 200, 200, 200, 200, 422]


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/users/5/recommendations", b"", (5, fast_lane.DEFAULT_K)),
        ("/users/0/recommendations", b"k=1", (0, 1)),
        ("/users/9223372036854775807/recommendations", b"k=1000", (2**63 - 1, 1000)),
        ("/users/9223372036854775808/recommendations", b"", None),
        ("/users/5/recommendations", b"k=", None),
        ("/users/5/recommendations", b"k=10&", None),
        ("/users/5/recommendations", b"K=10", None),
        ("/users/5/history", b"", None),
    ],
)
def test_the_fast_lane_takes_only_plain_asks(path, query, expected):
    lane = FeedFastLane(app=None, state=None, route=None)
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query}
    assert lane._parse(scope) == expected
    assert lane._parse({**scope, "method": "POST"}) is None

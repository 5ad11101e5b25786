"""Prometheus metrics whose size no client can grow.

Labels come from fixed sets only: the method is one of the standard ones or OTHER, the route
is the matched route template (/users/{user_id}/recommendations), "/static" or "unmatched",
and the status is what this app answers. So 20,000 made-up methods or paths add nothing, and
a scrape (served on the thread pool, off the event loop) stays small and fast.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Request counts and latency, events and swaps; one registry per app (no globals)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shortrec_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shortrec_request_duration_seconds",
            "Time to answer a request, by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "shortrec_events_stored", "Watch events stored by this process", registry=self.registry
        )
        self.events_applied = Counter(
            "shortrec_events_applied",
            "Watch events from the store (any process) applied to this process's feed",
            registry=self.registry,
        )
        self.stream_lag = Gauge(
            "shortrec_event_stream_lag_seconds",
            "Seconds since this process last read the event store successfully",
            registry=self.registry,
        )
        self.swaps = Counter("shortrec_model_swaps", "Models swapped in", registry=self.registry)


def route_label(scope: Scope) -> str:
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        return route
    return "/static" if scope["path"].startswith("/static/") else "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times each request under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Label children by (method, route, status): a few dozen at most (fixed label sets),
        # looked up once instead of on every request.
        self._children: dict[tuple[str, str, int], tuple] = {}

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = (self.metrics.latency.labels(method, route),
                        self.metrics.requests.labels(method, route, str(status)))  # fmt: skip
            self._children[(method, route, status)] = children
        children[0].observe(seconds)
        children[1].inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 503  # what the client sees if the answer is cut off

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self._observe(method, route_label(scope), status, time.perf_counter() - start)

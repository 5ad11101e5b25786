"""The HTTP API and web page of a live feed (FastAPI).

Every answer is JSON, including errors: bad input is a 4xx that says what is wrong, and the
database being unavailable is a 503. Scoring is CPU-bound, so those endpoints are plain `def`
(FastAPI runs them on its thread pool) and the event loop stays free for cheap requests.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.runs import load_run, load_served_model
from shortrec.serving.store import EventStore, StoredEvent, StoreUnavailableError, open_store

MAX_ID = 2**63 - 1  # ids are stored as signed 64-bit integers
MAX_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second datetime can show
MAX_EVENTS_PER_REQUEST = 10_000
KUAIREC_TIMEZONE = timezone(timedelta(hours=8))  # KuaiRec's `time` is Asia/Shanghai, no DST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Id = Annotated[int, Field(ge=0, le=MAX_ID)]
UserId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="raw KuaiRec user id")]
VideoId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="raw KuaiRec video id")]


class WatchEvent(BaseModel):
    """One view. Give `watch_ratio`, or `play_duration` and `video_duration` (ms). The time is
    `timestamp` (unix seconds) or `time` (ISO 8601; without an offset it is KuaiRec's
    Asia/Shanghai time); without either, the time the server received it. A KuaiRec row
    (with its `date`) is accepted as it is."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    video_id: Id
    watch_ratio: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    play_duration: int | None = Field(default=None, ge=0, le=MAX_ID)
    video_duration: int | None = Field(default=None, ge=0, le=MAX_ID)
    timestamp: float | None = Field(default=None, ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)
    time: datetime | None = None
    date: int | float | None = Field(default=None, description="ignored (KuaiRec's yyyymmdd)")

    @model_validator(mode="after")
    def _has_watch_ratio(self) -> WatchEvent:
        if self.watch_ratio is None and not (
            self.play_duration is not None and self.video_duration  # video_duration > 0
        ):
            raise ValueError(
                "give watch_ratio (>= 0), or play_duration and video_duration (> 0) in ms"
            )
        return self

    def stored(self, received_at: float) -> StoredEvent:
        ratio = self.watch_ratio
        if ratio is None:
            ratio = self.play_duration / self.video_duration  # checked > 0 above
        if self.timestamp is not None:
            timestamp = self.timestamp
        elif self.time is not None:
            moment = self.time if self.time.tzinfo else self.time.replace(tzinfo=KUAIREC_TIMEZONE)
            timestamp = moment.timestamp()
        else:
            timestamp = received_at
        return StoredEvent(
            user_id=self.user_id,
            video_id=self.video_id,
            watch_ratio=float(ratio),
            play_duration=self.play_duration,
            video_duration=self.video_duration,
            timestamp=float(timestamp),
        )


class ModelSwap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_dir: str = Field(min_length=1, description="a run directory written by `shortrec train`")


_EVENTS = TypeAdapter(list[WatchEvent])


class InvalidInput(Exception):
    """Bad input found outside FastAPI's own validation (the events body): answered as 422."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['location']}: {e['message']}" for e in errors))
        self.errors = errors


class NotFound(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- helpers -----------------------------------------------------------------------------------
def _location(loc: tuple | list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request"


def _error_list(errors: list[dict], prefix: tuple = ()) -> list[dict[str, str]]:
    # Only location and message: `input`/`ctx` may hold bytes or exceptions JSON can't encode.
    return [
        {
            "location": _location((*prefix, *error.get("loc", ()))),
            "message": str(error["msg"]).removeprefix("Value error, "),
        }
        for error in errors
    ]


def _invalid_response(errors: list[dict[str, str]]) -> JSONResponse:
    message = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5])
    if len(errors) > 5:
        message += f"; ... and {len(errors) - 5} more"
    return JSONResponse(
        status_code=422, content={"error": "invalid request", "message": message, "errors": errors}
    )


def parse_events(body: bytes) -> list[WatchEvent]:
    """A JSON event, a JSON list of events, or {"events": [...]}."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput([{"location": "body", "message": f"not valid JSON: {error}"}]) from None
    if isinstance(payload, dict) and "events" in payload:
        if set(payload) != {"events"}:
            extra = sorted(set(payload) - {"events"})
            raise InvalidInput([{"location": "body", "message": f"unexpected fields {extra}"}])
        items, prefix = payload["events"], ("body", "events")
    elif isinstance(payload, dict):
        items, prefix = [payload], ("body",)
    else:
        items, prefix = payload, ("body",)
    if not isinstance(items, list):
        raise InvalidInput(
            [
                {
                    "location": _location(prefix),
                    "message": 'expected an event, a list of events or {"events": [...]}',
                }
            ]  # fmt: skip
        )
    if not items:
        raise InvalidInput([{"location": _location(prefix), "message": "no events"}])
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise InvalidInput(
            [{"location": _location(prefix),
              "message": f"{len(items)} events; at most {MAX_EVENTS_PER_REQUEST} per request"}]
        )  # fmt: skip
    try:
        events = _EVENTS.validate_python(items)
    except ValidationError as error:
        if prefix == ("body",) and isinstance(payload, dict):
            # A single event: drop the list index pydantic adds.
            errors = [{**e, "loc": e["loc"][1:]} for e in error.errors()]
            raise InvalidInput(_error_list(errors, prefix)) from None
        raise InvalidInput(_error_list(error.errors(), prefix)) from None
    return events


def _iso(timestamp: float) -> str | None:
    if not math.isfinite(timestamp):
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def _model_info(served: ServedModel) -> dict[str, Any]:
    return {
        "name": served.name,
        "run_dir": served.run_dir,
        "data_dir": served.data_dir,
        "loaded_at": _iso(served.loaded_at),
    }


class _Metrics:
    """Prometheus request counts and latency histogram, one registry per app (no globals)."""

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
            "shortrec_events_stored", "Watch events stored", registry=self.registry
        )
        self.swaps = Counter("shortrec_model_swaps", "Models swapped in", registry=self.registry)


class _MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): counts and times each request
    under its route template, so /users/1/... and /users/2/... share one series."""

    def __init__(self, app, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = "/static" if scope["path"].startswith("/static/") else "unmatched"
            method = scope["method"]
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, route, str(status)).inc()


class _SwapState:
    """The background model load, if any: one at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = "idle"  # idle | loading | failed
        self.run_dir: str | None = None
        self.error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "run_dir": self.run_dir, "error": self.error}


# --- the app -----------------------------------------------------------------------------------
def create_app(
    feed: Feed,
    store: EventStore,
    *,
    load_model: Callable[[str], ServedModel] = load_served_model,
    admin_token: str | None = None,
    scoring_threads: int = 4,
) -> FastAPI:
    """An app serving `feed`; events already in `store` are replayed into it first, so a
    restarted server continues exactly where the last one stopped."""
    feed.add_views_frame(store.load())
    # Scoring holds the GIL most of the time: more concurrent scorers than cores only adds
    # contention, so they get their own small limiter instead of the 40-thread default pool.
    scoring = anyio.CapacityLimiter(scoring_threads)
    metrics = _Metrics()
    swap = _SwapState()
    static_dir = Path(str(files("shortrec.serving") / "static"))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        store.close()

    app = FastAPI(
        title="shortrec live feed",
        summary="Short-video recommendations that react to each watch event.",
        lifespan=lifespan,
    )
    app.state.feed = feed
    app.state.store = store
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    # --- errors: always JSON, never a 500 for bad input ---------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return _invalid_response(_error_list(list(error.errors())))

    @app.exception_handler(InvalidInput)
    async def _on_invalid_input(request: Request, error: InvalidInput) -> JSONResponse:
        return _invalid_response(error.errors)

    @app.exception_handler(NotFound)
    async def _on_not_found(request: Request, error: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": error.message})

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if error.status_code != 404 else f"no route {request.url.path}"
        return JSONResponse(
            status_code=error.status_code, content={"error": message}, headers=error.headers
        )

    @app.exception_handler(StoreUnavailableError)
    async def _on_store(request: Request, error: StoreUnavailableError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"error": str(error)})

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse(
            status_code=500,
            content={"error": "internal error", "message": f"{type(error).__name__}: {error}"},
        )

    def video_or_404(video_id: int) -> dict:
        info = feed.video_info.get(video_id)
        if info is None:
            raise NotFound(f"unknown video_id {video_id}: not in the catalogue")
        return info

    # --- feed ---------------------------------------------------------------------------------
    @app.get("/users/{user_id}/recommendations")
    async def recommendations(
        user_id: UserId, k: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> JSONResponse:
        """Top-k videos the user has not watched yet, with their metadata and scores."""
        rec = await anyio.to_thread.run_sync(feed.recommend, user_id, k, limiter=scoring)
        items = [
            {"rank": rank, "score": score if math.isfinite(score) else None,  # JSON has no inf
             **feed.video_info[video_id]}
            for rank, (video_id, score) in enumerate(
                zip(rec.video_ids.tolist(), rec.scores.tolist(), strict=True), start=1
            )
        ]  # fmt: skip
        # A plain JSONResponse: the content is built from trusted arrays, so FastAPI's
        # per-field validation and encoding would buy nothing.
        return JSONResponse(
            {
                "user_id": user_id,
                "model": rec.model,
                "strategy": rec.strategy,
                "history_length": rec.history_length,
                "items": items,
            }
        )

    @app.get("/users/{user_id}/history")
    def history(
        user_id: UserId, limit: Annotated[int, Query(ge=1, le=10_000)] = 20
    ) -> dict[str, Any]:
        """The user's most recent views, newest first (dataset views and live events)."""
        views = feed.views_of(user_id)
        table = views.histories
        newest = np.arange(len(table.video_ids) - 1, max(len(table.video_ids) - limit, 0) - 1, -1)
        items = [
            {
                "video_id": video_id,
                "watch_ratio": ratio,
                "timestamp": ts if math.isfinite(ts) else None,
                "time": _iso(ts),
                "source": "live" if live else "dataset",
                "caption": feed.video_info.get(video_id, {}).get("caption", ""),
                "categories": feed.video_info.get(video_id, {}).get("categories", []),
            }
            for video_id, ratio, ts, live in zip(
                table.video_ids[newest].tolist(),
                table.watch_ratios[newest].astype(np.float64).round(4).tolist(),
                table.timestamps[newest].tolist(),
                views.live[newest].tolist(),
                strict=True,
            )
        ]
        return {"user_id": user_id, "total": len(table.video_ids), "items": items}

    @app.post(
        "/events",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                WatchEvent.model_json_schema(),
                                {"type": "array", "items": WatchEvent.model_json_schema()},
                            ]
                        }
                    }
                },
            }
        },
    )
    async def post_events(request: Request) -> dict[str, Any]:
        """One event, a list, or {"events": [...]}: stored durably, then used at once.
        A batch is all or nothing."""
        events = parse_events(await request.body())
        unknown = [
            f"events[{i}].video_id {event.video_id}"
            for i, event in enumerate(events)
            if event.video_id not in feed.video_info
        ]
        if unknown:
            listed = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise NotFound(f"unknown video ids (not in the catalogue): {listed}")
        received_at = time.time()
        stored = [event.stored(received_at) for event in events]
        await run_in_threadpool(store.append, stored)  # durable before acknowledged
        feed.add_views(
            np.array([e.user_id for e in stored], dtype=np.int64),
            np.array([e.video_id for e in stored], dtype=np.int64),
            np.array([e.watch_ratio for e in stored]),
            np.array([e.timestamp for e in stored]),
        )
        metrics.events.inc(len(stored))
        return {"accepted": len(stored), "users": sorted({e.user_id for e in stored})}

    # --- catalogue and users -----------------------------------------------------------------
    @app.get("/videos/{video_id}")
    async def video(video_id: VideoId) -> dict[str, Any]:
        return video_or_404(video_id)

    @app.get("/videos")
    async def videos(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
    ) -> dict[str, Any]:
        """Catalogue video ids, in id order."""
        ids = feed.catalogue_ids[offset : offset + limit]
        return {"total": len(feed.catalogue_ids), "video_ids": ids.tolist()}

    @app.get("/users")
    def users(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
    ) -> dict[str, Any]:
        """Users with any views (dataset or live), in id order."""
        ids = feed.user_ids()
        return {"total": len(ids), "user_ids": ids[offset : offset + limit].tolist()}

    # --- operations ---------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": _model_info(feed.served),
            "videos": len(feed.catalogue_ids),
            "dataset_users": len(feed.base.user_ids),
            "live_events": feed.live_count,
            "store": store.kind,
            "model_swap": swap.as_dict(),
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text format: request counts and latency histograms by route."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def check_admin(request: Request) -> None:
        if admin_token is None:
            return
        if request.headers.get("authorization") != f"Bearer {admin_token}":
            raise StarletteHTTPException(401, "admin endpoints need 'Authorization: Bearer TOKEN'")

    @app.get("/admin/model")
    async def current_model() -> dict[str, Any]:
        return {"model": _model_info(feed.served), "swap": swap.as_dict()}

    @app.post("/admin/model", status_code=202)
    async def swap_model(request: Request, body: ModelSwap, wait: bool = False) -> JSONResponse:
        """Load the run's model in the background and swap it in atomically; requests in
        flight finish on the old model. `?wait=true` answers once the new model serves."""
        check_admin(request)
        run_dir = Path(body.run_dir)
        if not (run_dir / "model").is_dir():
            raise NotFound(f"{run_dir} has no model/ directory: not a trained run")
        with swap.lock:
            if swap.state == "loading":
                raise StarletteHTTPException(409, f"already loading {swap.run_dir}")
            swap.state, swap.run_dir, swap.error = "loading", str(run_dir), None

        def load_and_swap() -> None:
            try:
                served = load_model(str(run_dir))
            except Exception as error:  # any failure keeps the old model serving
                with swap.lock:
                    swap.state, swap.error = "failed", f"{type(error).__name__}: {error}"
                return
            feed.swap_model(served)
            metrics.swaps.inc()
            with swap.lock:
                swap.state = "idle"

        if wait:
            await run_in_threadpool(load_and_swap)
            status = 200 if swap.state == "idle" else 422
            return JSONResponse(
                status_code=status,
                content={"model": _model_info(feed.served), "swap": swap.as_dict()},
            )
        threading.Thread(target=load_and_swap, name="shortrec-model-swap", daemon=True).start()
        return JSONResponse(status_code=202, content={"swap": swap.as_dict()})

    # --- the web page -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(static_dir / "index.html")

    app.mount("/static", StaticFiles(directory=static_dir), name="static")
    return app


def create_app_from_run(
    run_dir: str | Path, db: str | Path | None = None, admin_token: str | None = None
) -> FastAPI:
    """The app for a trained run: its model, its release's videos and big_matrix histories,
    and events from `db` (default: sqlite `events.db` inside the run directory)."""
    served, _, data = load_run(run_dir)
    feed = Feed(served, data.videos, data.big_matrix)
    del data  # the feed keeps only what it needs
    store = open_store(db if db is not None else Path(run_dir) / "events.db")
    return create_app(feed, store, admin_token=admin_token)

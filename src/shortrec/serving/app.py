"""The live-feed app (FastAPI): wires the feed, the event store and the settings together.

The routes live in `serving.routes` (one router per area), what they share in `serving.deps`,
errors in `serving.errors`, the Host and body-size guards in `serving.guards`. Scoring is
CPU-bound: a slow model runs on a small thread pool so the event loop stays free for cheap
requests, a fast one on the event loop (`serving.scoring`). `create_app_from_environment` is
the factory each `--workers` process calls.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from threadpoolctl import threadpool_limits

from shortrec.serving.deps import ServingState
from shortrec.serving.errors import GuardMiddleware, install_error_handlers
from shortrec.serving.fast_lane import FeedFastLane
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.guards import BodyLimitMiddleware, EdgeMiddleware, TrustedHostMiddleware
from shortrec.serving.metrics import Metrics, MetricsMiddleware
from shortrec.serving.routes import admin, catalogue, events, ops, users
from shortrec.serving.runs import load_served_model, load_served_run
from shortrec.serving.scoring import Scoring
from shortrec.serving.settings import ServeSettings, ServeSpec, default_runs_root
from shortrec.serving.store import EventStore, open_store
from shortrec.serving.swaps import ModelSwapper
from shortrec.serving.sync import EventFollower


def create_app(
    feed: Feed,
    store: EventStore,
    settings: ServeSettings | None = None,
    *,
    load_model: Callable[[str], ServedModel] = load_served_model,
    swaps_after: int | None = None,
    fast_lane: bool = True,
) -> FastAPI:
    """An app serving `feed`; events already in `store` are replayed into it first, so a
    restarted server continues exactly where the last one stopped, and events other
    processes store reach it within `settings.poll_seconds`, as do model swaps recorded
    after `swaps_after` (default: the latest swap when the app is made; see `swaps`).
    `fast_lane` False sends every request through FastAPI (see `serving.fast_lane`)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    swaps = ModelSwapper(feed, store, settings.runs_root, load_model, metrics, swaps_after)
    follower = EventFollower(feed, store, settings.poll_seconds, swaps)
    metrics.events_applied.inc(follower.catch_up())
    metrics.stream_lag.set_function(lambda: time.monotonic() - follower.last_read)
    state = ServingState(
        feed=feed,
        store=store,
        follower=follower,
        settings=settings,
        metrics=metrics,
        # Scoring holds the GIL most of the time: more concurrent scorers than cores only
        # adds contention, so they get a small limiter instead of the 40-thread default pool;
        # a fast model scores on the event loop instead (see `scoring`).
        scoring=Scoring(feed, settings.scoring_threads),
        load_model=load_model,
        swaps=swaps,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower.start()
        try:
            yield
        finally:
            follower.stop()
            swaps.forget_quietly()
            store.close()

    app = FastAPI(
        title="shortrec live feed",
        summary="Short-video recommendations that react to each watch event.",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.state.feed = feed  # kept for callers that reach for them directly
    app.state.store = store
    install_error_handlers(app, settings.max_body_bytes)
    for module in (users, catalogue, events, admin, ops):
        app.include_router(module.router)
    # Outermost last: metrics see every answer, including the guards' refusals.
    if fast_lane:
        path = users.RECOMMENDATIONS_PATH
        route = next(r for r in users.router.routes if getattr(r, "path", None) == path)
        app.add_middleware(FeedFastLane, state=state, route=route)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, hosts=settings.trusted_hosts)
    app.add_middleware(GuardMiddleware)
    app.add_middleware(EdgeMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.mount("/static", StaticFiles(directory=ops.STATIC_DIR), name="static")
    return app


def create_app_from_run(
    run_dir: str | Path,
    db: str | Path | None = None,
    settings: ServeSettings | None = None,
    swaps_after: int | None = None,
) -> FastAPI:
    """The app for a trained run: its model, its release's videos and big_matrix histories,
    and events from `db` (default: sqlite `events.db` inside the run directory). Swaps may
    load runs next to it unless `settings.runs_root` says otherwise."""
    settings = settings or ServeSettings()
    if settings.runs_root is None:
        settings = dataclasses.replace(settings, runs_root=default_runs_root(run_dir))
    served, _, data = load_served_run(run_dir)
    feed = Feed(served, data.videos, data.big_matrix)
    del data  # the feed keeps only what it needs
    store = open_store(db if db is not None else Path(run_dir) / "events.db")
    return create_app(feed, store, settings, swaps_after=swaps_after)


def create_app_from_spec(spec: ServeSpec) -> FastAPI:
    """The app `shortrec serve` runs, in its one process or in each `--workers` process."""
    app = create_app_from_run(spec.run_dir, spec.db, spec.settings, spec.swaps_after)
    if "torch" in sys.modules:  # only when the model uses torch; this process is the server
        sys.modules["torch"].set_num_threads(spec.torch_threads)
    # NumPy's BLAS pool too: its idle threads spin between requests (`blas_threads`).
    threadpool_limits(spec.torch_threads, "blas")
    # The feed, the model and the libraries live as long as the process: keep them out of
    # the garbage collector's scans, which requests would otherwise pay for.
    gc.collect()
    gc.freeze()
    return app


def create_app_from_environment() -> FastAPI:
    """The factory uvicorn calls in each `--workers` process (see `ServeSpec`)."""
    return create_app_from_spec(ServeSpec.from_environment())

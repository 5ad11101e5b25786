"""Liveness (/health), readiness (/ready), Prometheus metrics and the web page.

/health answers 200 while the process runs, whatever the store does: a liveness probe that
failed during a database outage would only get healthy processes restarted. /ready answers
503 while the event store cannot take a write (so POST /events would fail) and 200 again once
it can: what a load balancer routes on.
"""

from __future__ import annotations

import logging
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shortrec.serving.deps import State
from shortrec.serving.store import StoreUnavailableError

log = logging.getLogger("shortrec.serving")

router = APIRouter(tags=["operations"])
STATIC_DIR = Path(str(files("shortrec.serving") / "static"))


@router.get("/health")
async def health(state: State) -> dict[str, Any]:
    return {
        "status": "ok",
        "model": state.model_info(),
        "videos": len(state.feed.catalogue_ids),
        "dataset_users": len(state.feed.base.user_ids),
        "live_events": state.feed.live_count,
        "store": state.store.kind,
        "worker_pid": os.getpid(),
        "model_swap": state.swaps.as_dict(),
    }


@router.get("/ready")
def ready(state: State) -> JSONResponse:
    """200 once the event store can take a write, else 503. A plain `def`: the check runs on
    the thread pool (a database that does not answer must not block the event loop)."""
    try:
        state.store.check_writable()
    except StoreUnavailableError as error:
        log.warning("not ready: %s", error)
        return JSONResponse(
            status_code=503,
            content={"status": "unavailable", "store": state.store.kind,
                     "error": "the event store cannot accept writes"},
            headers={"Retry-After": "1"},
        )  # fmt: skip
    return JSONResponse({"status": "ready", "store": state.store.kind})


@router.get("/metrics")
def prometheus_metrics(state: State) -> Response:
    """Prometheus text format: request counts and latency histograms by route. A plain
    `def`: rendering runs on the thread pool, never on the event loop."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")

"""Health, Prometheus metrics and the web page."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shortrec.serving.deps import State

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
        "model_swap": state.swap.as_dict(),
    }


@router.get("/metrics")
def prometheus_metrics(state: State) -> Response:
    """Prometheus text format: request counts and latency histograms by route. A plain
    `def`: rendering runs on the thread pool, never on the event loop."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")

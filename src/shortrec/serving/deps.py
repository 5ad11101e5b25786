"""What every route gets from the app (FastAPI dependencies), and who may call what.

Anonymous callers read: feeds, histories, the catalogue, health, metrics and the page.
Posting events needs a JSON body (so a cross-site form or text/plain post is refused with
415) and, when an events token is set, `Authorization: Bearer EVENTS_TOKEN`. The /admin
routes need the admin token and answer 403 while none is configured. Tokens are compared in
constant time.
"""

from __future__ import annotations

import functools
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from shortrec.serving.errors import ApiError
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.metrics import Metrics
from shortrec.serving.settings import ServeSettings
from shortrec.serving.store import EventStore

if TYPE_CHECKING:
    from shortrec.serving.scoring import Scoring
    from shortrec.serving.swaps import ModelSwapper
    from shortrec.serving.sync import EventFollower


def iso(timestamp: float) -> str | None:
    """ISO 8601 UTC, or None for a time no datetime can show (e.g. from an old store)."""
    if not math.isfinite(timestamp):
        return None
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


@dataclass
class ServingState:
    feed: Feed
    store: EventStore
    follower: EventFollower
    settings: ServeSettings
    metrics: Metrics
    scoring: Scoring
    load_model: Callable[[str], ServedModel]
    swaps: ModelSwapper

    def model_info(self) -> dict[str, Any]:
        return describe_model(self.feed.served, self.settings.runs_root)


def describe_model(served: ServedModel, runs_root: str | None) -> dict[str, Any]:
    """The served model, naming its run relative to the runs root (never a full path)."""
    return {"name": served.name, "run": run_name(served.run_dir, runs_root),
            "loaded_at": iso(served.loaded_at)}  # fmt: skip


@functools.lru_cache(maxsize=64)  # /health asks on every probe; paths are resolved once
def run_name(run_dir: str | None, runs_root: str | None) -> str | None:
    if run_dir is None:
        return None
    path = Path(run_dir).resolve()
    root = Path(runs_root).resolve() if runs_root else None
    return str(path.relative_to(root)) if root and path.is_relative_to(root) else path.name


async def get_state(request: Request) -> ServingState:  # async: no thread-pool hop
    return request.app.state.serving


State = Annotated[ServingState, Depends(get_state)]


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


async def require_admin(request: Request, state: State) -> None:
    token = state.settings.admin_token
    if not token:
        raise ApiError(403, "admin endpoints are disabled: start the server with --admin-token")
    if not _bearer_matches(request, token):
        raise ApiError(401, "admin endpoints need 'Authorization: Bearer TOKEN'", _CHALLENGE)


async def require_event_writer(request: Request, state: State) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "events must be sent as Content-Type: application/json")
    token = state.settings.events_token
    if token and not _bearer_matches(request, token):
        raise ApiError(401, "posting events needs 'Authorization: Bearer TOKEN'", _CHALLENGE)

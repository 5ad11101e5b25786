"""Posting watch events: stored durably, then applied, then acknowledged."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from shortrec.serving.deps import State, require_event_writer
from shortrec.serving.errors import ApiError
from shortrec.serving.schemas import WatchEvent, parse_events
from shortrec.serving.store import EventIdConflictError, StoredEvent

router = APIRouter(tags=["events"])
PARSE_INLINE_BYTES = 16_384  # larger bodies are parsed on the thread pool, off the event loop

_SCHEMA = WatchEvent.model_json_schema()
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _SCHEMA,
                        {"type": "array", "items": _SCHEMA, "minItems": 1, "maxItems": 10_000},
                        {
                            "type": "object",
                            "properties": {"events": {"type": "array", "items": _SCHEMA}},
                            "required": ["events"],
                            "additionalProperties": False,
                        },
                    ]
                }
            }
        },
    }
}


_ACCEPTED = {
    200: {
        "description": "Stored durably and applied",
        "content": {"application/json": {"example": {"accepted": 1, "users": [14]}}},
    }
}


@router.post(
    "/events",
    dependencies=[Depends(require_event_writer)],
    openapi_extra=_BODY,
    responses=_ACCEPTED,
)
async def post_events(request: Request, state: State) -> Response:
    """One event, a list, or {"events": [...]}: stored durably, then used at once.
    A batch is all or nothing. Retrying events that carry an `event_id` stores them once and
    answers as the first time did."""
    body = await request.body()
    if len(body) > PARSE_INLINE_BYTES:
        events = await run_in_threadpool(parse_events, body, state.settings.time_window)
    else:
        events = parse_events(body, state.settings.time_window)
    unknown = [
        f"events[{i}].video_id {event.video_id}"
        for i, event in enumerate(events)
        if event.video_id not in state.feed.video_info
    ]
    if unknown:
        listed = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ApiError(404, f"unknown video ids (not in the catalogue): {listed}")
    received_at = time.time()
    stored = [event.stored(received_at) for event in events]

    def store_and_apply(rows: list[StoredEvent]) -> int:
        try:  # checking event ids and storing are one transaction: see `store`
            added = state.store.append(rows)  # durable before acknowledged
        except EventIdConflictError as conflict:
            raise ApiError(409, str(conflict)) from None
        state.metrics.events_applied.inc(state.follower.catch_up())
        return added

    added = await run_in_threadpool(store_and_apply, stored)
    state.metrics.events.inc(added)
    answer = {"accepted": len(stored), "users": sorted({e.user_id for e in stored})}
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")

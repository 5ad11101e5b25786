"""A user's feed and history, and the list of users."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from shortrec.serving.deps import ServingState, State, iso
from shortrec.serving.schemas import MAX_ID, DecimalInt

router = APIRouter(tags=["users"])
UserId = Annotated[DecimalInt, PathParam(ge=0, le=MAX_ID, description="raw KuaiRec user id")]
MAX_K = 1000  # the longest feed one request may ask for
RECOMMENDATIONS_PATH = "/users/{user_id}/recommendations"


@router.get(RECOMMENDATIONS_PATH)
async def recommendations(
    state: State, user_id: UserId, k: Annotated[DecimalInt, Query(ge=1, le=MAX_K)] = 10
) -> Response:
    """Top-k videos the user has not watched yet, with their metadata and scores."""
    return Response(await recommendations_json(state, user_id, k), media_type="application/json")


async def recommendations_json(state: ServingState, user_id: int, k: int) -> bytes:
    """The answer of GET /users/{user_id}/recommendations (also sent by `serving.fast_lane`)."""
    feed = state.feed
    # A known answer is a look-up, given here; a new one is scored (see `serving.scoring`).
    rec = feed.cached_answer(user_id, k) or await state.scoring.recommend(user_id, k)
    # Built from bytes: each video's metadata was encoded once (`Feed.video_json`), so an
    # answer costs a join, not an encoding of ten nested dicts.
    items = b",".join(
        b'{"rank":%d,"score":%s,%s}'
        % (rank, repr(score).encode() if math.isfinite(score) else b"null",  # JSON has no inf
           feed.video_json[video_id])
        for rank, (video_id, score) in enumerate(
            zip(rec.video_ids.tolist(), rec.scores.tolist(), strict=True), start=1
        )
    )  # fmt: skip
    head = json.dumps(
        {"user_id": user_id, "model": rec.model, "strategy": rec.strategy,
         "history_length": rec.history_length}, ensure_ascii=False, separators=(",", ":"),
    ).encode()  # fmt: skip
    return head[:-1] + b',"items":[' + items + b"]}"


@router.get("/users/{user_id}/history")
def history(
    state: State, user_id: UserId, limit: Annotated[DecimalInt, Query(ge=1, le=10_000)] = 20
) -> dict[str, Any]:
    """The user's most recent views, newest first (dataset views and live events)."""
    feed = state.feed
    views = feed.views_of(user_id)
    table = views.histories
    newest = np.arange(len(table.video_ids) - 1, max(len(table.video_ids) - limit, 0) - 1, -1)
    items = [
        {
            "video_id": video_id,
            "watch_ratio": ratio if math.isfinite(ratio) else None,
            "timestamp": ts if math.isfinite(ts) else None,
            "time": iso(ts),
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


@router.get("/users")
def users(
    state: State,
    offset: Annotated[DecimalInt, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[DecimalInt, Query(ge=1, le=100_000)] = 100,
) -> dict[str, Any]:
    """Users with any views (dataset or live), in id order."""
    ids = state.feed.user_ids()
    return {"total": len(ids), "user_ids": ids[offset : offset + limit].tolist()}

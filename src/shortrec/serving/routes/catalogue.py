"""The videos that can be recommended."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from shortrec.serving.deps import State
from shortrec.serving.errors import ApiError
from shortrec.serving.schemas import MAX_ID, DecimalInt

router = APIRouter(tags=["catalogue"])
VideoId = Annotated[DecimalInt, PathParam(ge=0, le=MAX_ID, description="raw KuaiRec video id")]


@router.get("/videos/{video_id}")
async def video(state: State, video_id: VideoId) -> dict[str, Any]:
    info = state.feed.video_info.get(video_id)
    if info is None:
        raise ApiError(404, f"unknown video_id {video_id}: not in the catalogue")
    return info


@router.get("/videos")
async def videos(
    state: State,
    offset: Annotated[DecimalInt, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[DecimalInt, Query(ge=1, le=100_000)] = 100,
) -> dict[str, Any]:
    """Catalogue video ids, in id order."""
    ids = state.feed.catalogue_ids[offset : offset + limit]
    return {"total": len(state.feed.catalogue_ids), "video_ids": ids.tolist()}

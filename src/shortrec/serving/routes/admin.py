"""Model swaps: admin token only, only runs inside the runs root, and they reach every process.

The client names a run relative to the runs root; a name that resolves outside it (`..`,
an absolute path, a symlink out), a name the OS refuses and a name that does not exist get
the same 404, so the endpoint tells nothing about the rest of the file system. A swap is
recorded in the event store, so every process on it (each worker, each host) loads the run in
the background and then switches (see `serving.swaps`); `GET /admin/model` lists what each
one serves. Load failures are logged on the server; answers only say that a run could not
be loaded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shortrec.serving.deps import State, iso, require_admin
from shortrec.serving.errors import ApiError
from shortrec.serving.schemas import ModelSwap
from shortrec.serving.swaps import STALE_AFTER_S, RunNotFoundError, confined_run_dir

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
WAIT_LIMIT_S = 600.0  # ?wait=true answers after at most this long, loaded or not


def _this_process(state) -> dict[str, Any]:
    return {"model": state.model_info(), "swap": state.swaps.as_dict(),
            "process": state.swaps.process}  # fmt: skip


@router.get("/model")
def current_model(state: State) -> dict[str, Any]:
    """This process's model and swap, the latest recorded swap, and every process on the
    store heard from within the last STALE_AFTER_S seconds. A plain `def`: it reads the
    store on the thread pool."""
    swaps = state.swaps
    swaps.report()  # so this process's own row is current
    latest = state.store.latest_swap()
    return {
        **_this_process(state),
        "latest_swap": None if latest is None else {
            "id": latest.id, "run": latest.run, "requested_at": iso(latest.requested_at)},
        "processes": [
            {"process": report.process, **report.status,
             "seen_seconds_ago": round(report.age_seconds, 3)}
            for report in state.store.processes(STALE_AFTER_S)
        ],
    }  # fmt: skip


@router.post("/model", status_code=202)
async def swap_model(state: State, body: ModelSwap, wait: bool = False) -> JSONResponse:
    """Record a swap to the run: every process on the store loads its model in the
    background and swaps it in atomically (requests in flight finish on the old model).
    `?wait=true` answers once this process serves it (200) or failed to load it (422)."""
    try:
        confined_run_dir(state.settings.runs_root, body.run_dir)
    except RunNotFoundError as error:
        raise ApiError(404, str(error)) from None
    swaps = state.swaps
    if swaps.loading:
        raise ApiError(409, f"already loading {swaps.as_dict()['run']}")
    record = await run_in_threadpool(state.store.record_swap, body.run_dir)
    swaps.request(record)
    if wait:
        await run_in_threadpool(swaps.wait, record.id, WAIT_LIMIT_S)
        done = swaps.as_dict()
        status = 200 if done["state"] == "idle" and done["id"] == record.id else 422
        return JSONResponse(status_code=status, content=_this_process(state))
    return JSONResponse(status_code=202, content={"swap": swaps.as_dict(), "id": record.id})

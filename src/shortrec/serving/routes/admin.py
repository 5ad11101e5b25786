"""Model swaps: admin token only, and only runs inside the runs root.

The client names a run relative to the runs root; a name that resolves outside it (`..`,
an absolute path, a symlink out) and a name that does not exist get the same 404, so the
endpoint tells nothing about the rest of the file system. Load failures are logged on the
server; the answer only says that the run could not be loaded.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shortrec.serving.deps import State, require_admin
from shortrec.serving.errors import ApiError
from shortrec.serving.schemas import ModelSwap

log = logging.getLogger("shortrec.serving")
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def confined_run_dir(runs_root: str | None, name: str) -> Path:
    """The run directory `name` inside `runs_root`, or a 404 that reveals nothing else."""
    not_found = ApiError(404, f"no trained run {name!r} under the runs root")
    if not runs_root:
        raise not_found
    root = Path(runs_root).resolve()
    try:
        run_dir = (root / name).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise not_found from None
    if not run_dir.is_relative_to(root) or not (run_dir / "model").is_dir():
        raise not_found
    return run_dir


@router.get("/model")
async def current_model(state: State) -> dict[str, Any]:
    return {"model": state.model_info(), "swap": state.swap.as_dict()}


@router.post("/model", status_code=202)
async def swap_model(state: State, body: ModelSwap, wait: bool = False) -> JSONResponse:
    """Load the run's model in the background and swap it in atomically; requests in
    flight finish on the old model. `?wait=true` answers once the new model serves."""
    if state.settings.workers > 1:
        raise ApiError(409, "a swap would reach one worker of several: restart the server with "
                            "--run RUN instead")  # fmt: skip
    run_dir = confined_run_dir(state.settings.runs_root, body.run_dir)
    swap = state.swap
    with swap.lock:
        if swap.state == "loading":
            raise ApiError(409, f"already loading {swap.run}")
        swap.state, swap.run, swap.error = "loading", body.run_dir, None

    def load_and_swap() -> None:
        try:
            served = state.load_model(str(run_dir))
        except Exception:  # any failure keeps the old model serving
            log.exception("could not load the model of %s", run_dir)
            with swap.lock:
                swap.state, swap.error = "failed", "the run's model could not be loaded"
            return
        state.feed.swap_model(served)
        state.metrics.swaps.inc()
        with swap.lock:
            swap.state = "idle"

    if wait:
        await run_in_threadpool(load_and_swap)
        status = 200 if swap.state == "idle" else 422
        return JSONResponse(
            status_code=status, content={"model": state.model_info(), "swap": swap.as_dict()}
        )
    threading.Thread(target=load_and_swap, name="shortrec-model-swap", daemon=True).start()
    return JSONResponse(status_code=202, content={"swap": swap.as_dict()})

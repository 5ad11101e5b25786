"""Starting a server (what `shortrec serve` does): the spec from the command's options, the
app loaded and checked before anything listens, then uvicorn with one or several workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import FastAPI

from shortrec.serving.settings import LOCAL_HOSTS, ServeSettings, ServeSpec, default_runs_root


def serve_spec(
    run_dir: str | Path | None,
    host: str = "127.0.0.1",
    db: str | None = None,
    *,
    workers: int = 1,
    admin_token: str | None = None,
    events_token: str | None = None,
    runs_root: str | Path | None = None,
    trusted_hosts: Sequence[str] = (),
    max_body_bytes: int = 1 << 20,
    poll_seconds: float = 0.2,
    torch_threads: int = 1,
) -> ServeSpec:
    """The spec of a server of `run_dir` (default: the newest sasrec run under runs/); the
    run is checked to be one, and named by its absolute path so every worker finds it."""
    from shortrec.runs import Run
    from shortrec.serving.runs import find_default_run

    run = Run(run_dir if run_dir is not None else find_default_run())
    settings = ServeSettings(
        admin_token=admin_token or None,
        events_token=events_token or None,
        runs_root=str(Path(runs_root).resolve()) if runs_root else default_runs_root(run.path),
        trusted_hosts=tuple(dict.fromkeys([*LOCAL_HOSTS, host, *trusted_hosts])),
        max_body_bytes=max_body_bytes,
        poll_seconds=poll_seconds,
        workers=workers,
    )
    return ServeSpec(str(run.path.resolve()), db, settings, torch_threads)


def load_app(spec: ServeSpec) -> FastAPI | None:
    """The app of a single-process server; with several workers (each builds its own) None,
    once the event store is known to open."""
    from shortrec.serving.app import create_app_from_spec
    from shortrec.serving.store import open_store

    if spec.settings.workers == 1:
        return create_app_from_spec(spec)
    open_store(spec.db if spec.db is not None else Path(spec.run_dir) / "events.db").close()
    return None


def run_server(
    spec: ServeSpec,
    api: FastAPI | None,
    host: str,
    port: int,
    access_log: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Listen until stopped: `api` in this process, or `spec.settings.workers` processes."""
    import uvicorn

    # timeout_keep_alive: pooled clients reuse their connections between bursts.
    options = dict(
        host=host, port=port, access_log=access_log, log_level="warning", timeout_keep_alive=30
    )
    if api is not None:
        served = api.state.feed.served
        log(
            f"serving {served.name} from {spec.run_dir} on http://{host}:{port}/ "
            f"(events: {api.state.store.kind}; {api.state.feed.live_count} replayed)"
        )
        uvicorn.run(api, workers=1, **options)
        return
    from shortrec.serving.swaps import pin_swap_baseline

    # Each worker process builds its app from the spec; all of them, and any worker that
    # replaces a crashed one, follow the model swaps recorded from now on.
    pin_swap_baseline(spec).to_environment()
    workers = spec.settings.workers
    log(f"serving {spec.run_dir} with {workers} workers on http://{host}:{port}/")
    uvicorn.run("shortrec.serving.app:create_app_from_environment", factory=True,
                workers=workers, **options)  # fmt: skip

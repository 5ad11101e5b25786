"""`shortrec serve`: a trained run behind the recommendations API and the web page."""

from __future__ import annotations

from pathlib import Path

import typer

from shortrec.cli.app import app
from shortrec.cli.options import user_errors


@app.command()
def serve(
    run: Path | None = typer.Option(
        None, "--run", help="Run directory to serve (default: the newest sasrec run under runs/)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    db: str | None = typer.Option(
        None,
        help="Event store: sqlite:///relative.db, sqlite:////absolute.db, a file path, or "
        "postgresql://user@host/db (default: RUN_DIR/events.db).",
    ),
    workers: int = typer.Option(
        1, min=1, max=64, help="Server processes sharing the port and the event store."
    ),
    admin_token: str | None = typer.Option(
        None,
        envvar="SHORTREC_ADMIN_TOKEN",
        help="Bearer token for /admin (model swaps); without one /admin answers 403.",
    ),
    events_token: str | None = typer.Option(
        None,
        envvar="SHORTREC_EVENTS_TOKEN",
        help="Bearer token required by POST /events (default: none, anyone may post).",
    ),
    runs_root: Path | None = typer.Option(
        None, help="Model swaps may load runs inside this folder only (default: the run's parent)."
    ),
    trusted_host: list[str] = typer.Option(
        [],
        "--trusted-host",
        help="Host header to accept, repeatable ('*' = any); 127.0.0.1, localhost, ::1 and "
        "--host always are.",
    ),
    max_body_bytes: int = typer.Option(
        1 << 20, min=1024, help="Largest request body; larger ones get 413 unread."
    ),
    poll_seconds: float = typer.Option(
        0.2, min=0.01, max=1.0, help="How often each worker reads events stored by the others."
    ),
    torch_threads: int = typer.Option(
        1,
        min=1,
        help="CPU threads (torch's and NumPy's BLAS) per request; requests already run in "
        "parallel.",
    ),
    access_log: bool = typer.Option(False, help="Log every request (costs CPU under load)."),
    # -- limits of the HTTP edge and of event times (ServeSettings; README "Bounded input")
    header_timeout: float = typer.Option(
        10.0, min=0.1, help="Seconds for a request line + headers to arrive, else 408 + close."
    ),
    body_timeout: float = typer.Option(
        30.0, min=0.1, help="Seconds for a request body to arrive after its headers."
    ),
    keep_alive: float = typer.Option(
        15.0, min=0.1, help="Seconds an idle keep-alive connection stays open."
    ),
    max_header_bytes: int = typer.Option(
        64 * 1024, min=1024, help="Request line + headers in all; larger get 431 + close."
    ),
    limit_concurrency: int = typer.Option(
        512, min=2, help="Open connections / requests in progress per process; above: 503."
    ),
    max_event_future: float = typer.Option(
        600.0, min=0.001, help="Seconds an event's time may lie ahead of the server clock."
    ),
    max_event_age: float | None = typer.Option(
        None,
        min=0.001,
        help="Seconds an event's time may lie in the past (default: any time since 2000).",
    ),
) -> None:
    """Serve a trained model: recommendations API, live events, metrics and a web page."""
    from shortrec.serving.launch import load_app, run_server, serve_spec

    def log(line: str) -> None:
        typer.echo(line, err=True)

    with user_errors():
        spec = serve_spec(
            run, host, db, workers=workers, admin_token=admin_token,
            events_token=events_token, runs_root=runs_root, trusted_hosts=trusted_host,
            max_body_bytes=max_body_bytes, poll_seconds=poll_seconds,
            torch_threads=torch_threads,
            limits=dict(header_timeout_seconds=header_timeout, body_timeout_seconds=body_timeout,
                        keep_alive_seconds=keep_alive, max_header_bytes=max_header_bytes,
                        limit_concurrency=limit_concurrency,
                        max_event_future_seconds=max_event_future,
                        max_event_age_seconds=max_event_age),
        )  # fmt: skip
        if workers == 1:
            log(f"loading {spec.run_dir} ...")
        api = load_app(spec)
    run_server(spec, api, host, port, access_log, log)

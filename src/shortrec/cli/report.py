"""`shortrec report`: a self-contained HTML page about a folder of runs and a benchmark."""

from __future__ import annotations

from pathlib import Path

import typer

from shortrec.cli.app import app
from shortrec.cli.options import fail, runs_dir_option, storage_option, user_errors


@app.command("report")
def report_command(
    runs_dir: Path = runs_dir_option(),
    benchmark: Path | None = typer.Option(
        None, help="A `shortrec benchmark` output folder (the leaderboard's source)."
    ),
    out: Path = typer.Option(Path("report"), help="Folder for index.html and the PNGs."),
    storage: str | None = storage_option(),
    metric: str = typer.Option("ndcg@10", help="Metric of the leaderboard."),
    users: int = typer.Option(3, help="Users shown in the top-10 examples."),
    screenshot: Path | None = typer.Option(
        None,
        help="Also open the page in headless Chromium, check that every figure rendered, "
        "and save a PNG of the page.",
    ),
    screenshot_height: int | None = typer.Option(
        None, help="Keep only the top N pixels of the screenshot (default: the whole page)."
    ),
) -> None:
    """Write a self-contained HTML report (figures embedded) plus the figures as PNGs."""
    from shortrec.report.report import build_report

    with user_errors(KeyError, RuntimeError):
        page = build_report(
            runs_dir, out, benchmark, storage=storage, metric=metric, example_users=users
        )
        typer.echo(f"wrote {page}")
        if screenshot is not None:
            from shortrec.report.browser import check_page

            check = check_page(page, screenshot, height=screenshot_height)
    if screenshot is not None:
        if check.broken_images:
            fail(f"figures that did not render in Chromium: {check.broken_images}")
        typer.echo(f"{check.images} figures rendered in Chromium; screenshot {screenshot}")

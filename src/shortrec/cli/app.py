"""The root `shortrec` command and its `data` group; the area modules add their commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Honest, fast short-video recommenders on KuaiRec 2.0.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    help="Download, prepare and synthesise KuaiRec releases.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

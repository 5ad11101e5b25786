"""The `shortrec` command. Each command is a thin shell over a library function."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Honest, fast short-video recommenders on KuaiRec 2.0.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Download, prepare and synthesise KuaiRec releases.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def fail(message: str) -> None:
    """Print a clear error and exit with status 2 (no traceback for user mistakes)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


# --- data: download, prepare ---------------------------------------------------------------
# (section owned by the data layer)

# --- data: synth, calibrate ----------------------------------------------------------------
# (section owned by the synthetic world)

# --- train, evaluate, recommend, leaderboard, compare, quickstart --------------------------
# (section owned by the coordinator)

# --- serve ---------------------------------------------------------------------------------
# (section owned by serving)

# --- tune, benchmark, report ---------------------------------------------------------------
# (section owned by tuning and reporting)


if __name__ == "__main__":
    app()


__all__ = ["app", "fail", "Path"]

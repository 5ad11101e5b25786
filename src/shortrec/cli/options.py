"""Options several commands share, declared once, and how a command reports user errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer

from shortrec.data.labels import LikeRule
from shortrec.data.splits import PROTOCOLS

# Mistakes a user can fix (bad input, a missing file, an unknown name): a clear line, no trace.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError)


def fail(message: str) -> None:
    """Print a clear error and exit with status 2 (no traceback for user mistakes)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def error_text(error: Exception) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


@contextlib.contextmanager
def user_errors(*also: type[Exception]) -> Iterator[None]:
    """Turn the errors of a user's mistake (and `also`) into `fail`."""
    try:
        yield
    except (*USER_ERRORS, *also) as error:
        fail(error_text(error))


def like_rule_option() -> typer.models.OptionInfo:
    """`--like-rule`, parsed once into the `LikeRule` every later step uses."""
    return typer.Option(
        str(LikeRule()), "--like-rule", parser=LikeRule.parse,
        help="duration[:Q] (liked: top 1-Q of watch ratios within duration buckets; the "
        "default), threshold[:X] (the seed project: threshold:0.7) or all (every view liked)",
    )  # fmt: skip


def track_option() -> typer.models.OptionInfo:
    """`--track mlflow[:URI]`: mirror runs to an experiment tracker (shortrec.tracking)."""
    return typer.Option(
        None, "--track", metavar="mlflow[:URI]",
        help="Also log each run to MLflow: params, per-epoch validation, final metrics with "
        "intervals, the run folder (default URI: a file store in ./mlruns; needs "
        "pip install 'shortrec[tracking]').",
    )  # fmt: skip


def data_option(
    help: str = "Prepared release dir, or a SASRec-format .txt file.",
) -> typer.models.OptionInfo:
    return typer.Option(Path("data/prepared"), "--data", help=help)


def protocol_option() -> typer.models.OptionInfo:
    return typer.Option("kuairec", "--protocol", help=" | ".join(PROTOCOLS))


def runs_dir_option(
    default: Path = Path("runs"), help: str = "Folder of runs."
) -> typer.models.OptionInfo:
    return typer.Option(default, "--runs-dir", help=help)


def storage_option(
    help: str = "Optuna database URL (default sqlite:///RUNS_DIR/tuning.db).",
) -> typer.models.OptionInfo:
    return typer.Option(None, "--storage", help=help)


def preset_option() -> typer.models.OptionInfo:
    return typer.Option(
        None, "--preset",
        help="Named preset of a model (e.g. paper-ml-1m for sasrec): its hyperparameters and "
        "the protocol, like rule and sampled evaluation it names; explicit flags win.",
    )  # fmt: skip


def progress_option(help: str = "Progress bars.") -> typer.models.OptionInfo:
    return typer.Option(True, "--progress/--no-progress", help=help)


def seed_option(help: str) -> typer.models.OptionInfo:
    return typer.Option(0, "--seed", help=help)


def given(ctx: typer.Context, *names: str) -> tuple[str, ...]:
    """Which of `names` were set on the command line (they win over a preset)."""
    # Typer ships its own click: compare by name, not with click's enum.
    return tuple(
        name
        for name in names
        if ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")
    )

"""`shortrec train MODEL`, `evaluate`, `recommend`, `leaderboard`, `compare`, `quickstart`."""

from __future__ import annotations

import dataclasses
import enum
import inspect
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from shortrec.cli.app import app
from shortrec.cli.options import (
    data_option,
    fail,
    given,
    like_rule_option,
    preset_option,
    progress_option,
    protocol_option,
    runs_dir_option,
    track_option,
    user_errors,
)
from shortrec.data.labels import LikeRule


class _TrainGroup(TyperGroup):
    """`shortrec train MODEL`: one subcommand per registered model, built on first use so
    that starting the CLI does not import every model's dependencies."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from shortrec.models import REGISTRY

        return sorted(REGISTRY)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from shortrec.models import REGISTRY

        if name not in REGISTRY:
            return None
        single = typer.Typer(add_completion=False)
        single.command(name)(_make_train_command(name))
        return typer.main.get_command(single)


train_app = typer.Typer(
    cls=_TrainGroup,
    help="Train a model on a protocol's train split and evaluate it (tune set; --test opens "
    "the test set). Every hyperparameter of the model is a flag: `shortrec train MODEL --help`.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")


def _option_for(field: dataclasses.Field) -> inspect.Parameter:
    from shortrec.api import hyperparameter_type

    flag = "--" + field.name.replace("_", "-")
    annotation = hyperparameter_type(field)
    default = field.default
    if default is dataclasses.MISSING:
        default = field.default_factory()  # type: ignore[misc]
    help_text = field.metadata.get("help", "")
    if choices := field.metadata.get("choices"):  # typer shows an Enum as its choices
        annotation = enum.Enum(field.name, {str(c): str(c) for c in choices}, type=str)
        default = annotation(str(default))
    decl = f"{flag}/--no-{flag[2:]}" if annotation is bool else flag
    option = typer.Option(default, decl, help=help_text, rich_help_panel="Model")
    return inspect.Parameter(
        field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
    )


def _common_train_options() -> dict[str, tuple[object, typer.models.OptionInfo]]:
    return {
        "data": (Path, data_option()),
        "protocol": (str, protocol_option()),
        "like_rule": (LikeRule, like_rule_option()),
        "runs_dir": (Path, runs_dir_option(help="Where run folders go.")),
        "test": (
            bool,
            typer.Option(False, "--test/--no-test", help="Also evaluate on the test set (once)."),
        ),
        "sampled": (
            int | None,
            typer.Option(
                None, help="Paper mode: rank each positive against N sampled negatives "
                "(labelled)."
            ),
        ),
        "label": (
            str,
            typer.Option("", help="Name of this variant on leaderboards (default: the model)."),
        ),
        "progress": (bool, progress_option("Progress bars while training.")),
        "preset": (str | None, preset_option()),
        "resume": (
            Path | None,
            typer.Option(
                None, help="An interrupted run folder to continue in (models with checkpoints "
                "resume from them; the same command and flags)."
            ),
        ),
        "nproc": (
            int,
            typer.Option(1, help="Data-parallel processes on this machine (models that "
                         "support it); multi-node: launch with torchrun instead."),
        ),
        "track": (str | None, track_option()),
    }  # fmt: skip


def _make_train_command(name: str):
    from shortrec.models import model_class

    cls = model_class(name)
    model_fields = [f for f in dataclasses.fields(cls) if f.init]
    common_options = _common_train_options()

    def command(ctx: typer.Context, **kwargs):
        common = {k: kwargs.pop(k) for k in common_options}
        kwargs = {k: v.value if isinstance(v, enum.Enum) else v for k, v in kwargs.items()}
        # Only the flags given on the command line: they win over a preset, whatever their
        # value; the model's defaults fill in the rest.
        params = {k: v for k, v in kwargs.items() if k in given(ctx, *kwargs)}
        _train(name, cls, params, given(ctx, "protocol", "like_rule", "sampled"), **common)

    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    ]
    params += [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
        for k, (ann, opt) in common_options.items()
    ] + [_option_for(f) for f in model_fields]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = (cls.__doc__ or name).strip().splitlines()[0]
    return command


def _train(
    name, cls, params, explicit, data, protocol, like_rule, runs_dir, test, sampled, label,
    progress, preset, resume, nproc, track,
):  # fmt: skip
    import sys

    from shortrec.runs import RunConfig, check_resumable, metrics_summary, train_run
    from shortrec.training.distributed import run_as_ranks, world

    if nproc > 1 and not world().active:
        if not cls.distributed:
            fail(f"model {name!r} does not train data-parallel; drop --nproc")
        raise typer.Exit(run_as_ranks(nproc, sys.argv[1:]))
    with user_errors():
        config = RunConfig.build(
            name, data, params,
            protocol=protocol if "protocol" in explicit or not preset else None,
            like_rule=like_rule if "like_rule" in explicit or not preset else None,
            sampled=sampled if "sampled" in explicit else None,
            preset=preset, label=label,
        )  # fmt: skip
        if resume is not None:
            check_resumable(resume, config)
        evaluate_on = ("tune", "test") if test else ("tune",)
        run = train_run(
            config, runs_dir, evaluate_on=evaluate_on, progress=progress, run_dir=resume,
            track=track,
        )  # fmt: skip
    if run is None:  # another rank of a data-parallel job: rank 0 reports
        return
    typer.echo(f"run: {run.path}")
    for line in metrics_summary(run.metrics):
        typer.echo(line)


@app.command()
def quickstart(
    workdir: Path = typer.Option(Path("data/quickstart"), help="Where the synthetic world goes."),
    runs_dir: Path = runs_dir_option(Path("runs/quickstart"), "Where the runs go."),
    scale: str = typer.Option("small", help="tiny | small | full"),
    seed: int = typer.Option(0, help="Seed of the world and of every model."),
    models: str | None = typer.Option(None, help="Comma-separated models (default: all)."),
    user: int | None = typer.Option(
        None, help="User whose top-10 is shown (default: a test user)."
    ),
) -> None:
    """The main job: synthesise + prepare the default world, train and evaluate every model
    on the KuaiRec protocol, print the leaderboard and one user's top-10. No download."""
    from rich.console import Console

    from shortrec.leaderboard import leaderboard_table
    from shortrec.quickstart import QUICKSTART_MODELS, best_run, example_user, run_quickstart
    from shortrec.runs import recommend_from_run

    chosen = tuple(models.split(",")) if models else QUICKSTART_MODELS
    with user_errors():
        runs = run_quickstart(workdir, runs_dir, scale, seed, chosen, log=typer.echo)
    console = Console(width=220)
    console.print(leaderboard_table(runs_dir, "test", "ndcg@10", "popular"))
    best = best_run(runs)
    if best is not None:
        user = example_user(best) if user is None else user
        table = recommend_from_run(best, [user], 10)
        console.print(
            f"top-10 small_matrix videos for user {user} from {best.config.model} ({best.name}):"
        )
        console.print(table.drop("user_id"))


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    on: str = typer.Option("tune", help="tune | test"),
    sampled: int | None = typer.Option(
        None, help="N sampled negatives per positive (labelled); 0 = full ranking."
    ),
    progress: bool = progress_option(),
) -> None:
    """Evaluate a trained run on its tune or test set (full ranking unless --sampled)."""
    from shortrec.runs import Run, evaluate_run, metrics_summary

    with user_errors():
        run = Run(run_dir)
        evaluate_run(run, on, sampled=sampled, progress=progress)
    for line in metrics_summary({k: v for k, v in run.metrics.items() if k.startswith(on)}):
        typer.echo(line)


@app.command()
def leaderboard(
    runs_dir: Path = runs_dir_option(),
    on: str = typer.Option("test", help="tune | test (| test:sampled-100 ...)"),
    metric: str = typer.Option("ndcg@10", help="Metric to sort by."),
    baseline: str = typer.Option("popular", help="Model to pair every run against."),
    simulation: bool = typer.Option(
        False,
        help="Show `shortrec simulate` results of the --on users (sorted by --metric, "
        "default watch_seconds) beside the offline ndcg@10.",
    ),
    markdown: bool = typer.Option(False, help="Print the table as Markdown."),
) -> None:
    """Print runs side by side: means with 95% intervals, paired difference vs a baseline."""
    from rich.console import Console

    from shortrec.leaderboard import leaderboard_markdown, leaderboard_table, simulation_markdown

    if simulation and metric == "ndcg@10":
        metric = "watch_seconds"
    with user_errors():
        if markdown:
            as_markdown = simulation_markdown if simulation else leaderboard_markdown
            typer.echo(as_markdown(runs_dir, on, metric, baseline))
            return
        table = leaderboard_table(runs_dir, on, metric, baseline, simulation=simulation)
    Console(width=220).print(table)


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="Run A (e.g. a baseline)."),
    run_b: Path = typer.Argument(..., help="Run B."),
    on: str = typer.Option("test", help="Evaluation both runs have: tune | test"),
    metric: list[str] = typer.Option(["ndcg@10", "graded_ndcg@10", "recall@20"], help="Metrics."),
) -> None:
    """Paired comparison of two runs on the same users (B minus A)."""
    from shortrec.leaderboard import compare_runs

    with user_errors():
        for cmp in compare_runs(run_a, run_b, on, metric):
            typer.echo(
                f"{cmp.metric}: B-A {cmp.difference} p={cmp.p_value:.2g} "
                f"(B better for {cmp.b_better} users, A for {cmp.a_better}, ties {cmp.ties})"
            )


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    users: str | None = typer.Option(
        None, help="Comma-separated raw user ids (default: all users with history)."
    ),
    k: int = typer.Option(10, help="Videos per user."),
    out: Path | None = typer.Option(None, help="Write to .csv or .parquet instead of printing."),
    include_seen: bool = typer.Option(False, help="Allow already watched videos."),
    candidates: str = typer.Option(
        "evaluation",
        help="Which videos to rank: evaluation (what the run's evaluation ranked: small_matrix "
        "videos under the KuaiRec protocol) | all (every video of the data).",
    ),
) -> None:
    """Top-k videos per user from a trained run, with captions and categories."""
    from shortrec.runs import recommend_from_run

    with user_errors():
        user_ids = [int(u) for u in users.split(",")] if users else None
        table = recommend_from_run(
            run_dir, user_ids, k, include_seen=include_seen, candidates=candidates
        )
    if out is None:
        typer.echo(table.head(200))
        return
    from shortrec.io import write_table

    write_table(table, out)
    typer.echo(f"wrote {table.height} rows to {out}")

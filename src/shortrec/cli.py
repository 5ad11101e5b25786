"""The `shortrec` command. Each command is a thin shell over a library function."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Optional

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

train_app = typer.Typer(
    help="Train a model on a protocol's train split and evaluate it (tune set; --test opens "
    "the test set). Every hyperparameter of the model is a flag: see `shortrec train MODEL --help`.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")


def _option_for(field: dataclasses.Field) -> inspect.Parameter:
    flag = "--" + field.name.replace("_", "-")
    annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(
        field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "str"), str
    )
    default = field.default
    if default is dataclasses.MISSING:
        default = field.default_factory()  # type: ignore[misc]
    help_text = field.metadata.get("help", "")
    decl = f"{flag}/--no-{flag[2:]}" if annotation is bool else flag
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, decl, help=help_text, rich_help_panel="Model"),
        annotation=annotation,
    )


_COMMON_TRAIN_OPTIONS = {
    "data": (Path, typer.Option(Path("data/prepared"), "--data", help="Prepared release dir, or a SASRec-format .txt file.")),
    "protocol": (str, typer.Option("kuairec", help="kuairec | leave-last-out | temporal")),
    "like_rule_text": (str, typer.Option("threshold:0.7", "--like-rule", help="threshold[:X] or duration[:Q]")),
    "runs_dir": (Path, typer.Option(Path("runs"), help="Where run folders go.")),
    "test": (bool, typer.Option(False, "--test/--no-test", help="Also evaluate on the test set (open it once).")),
    "sampled": (Optional[int], typer.Option(None, help="Paper mode: rank each positive against N sampled negatives (labelled).")),
    "preset": (Optional[str], typer.Option(None, help="Named hyperparameter preset of the model (e.g. paper-ml-1m for sasrec).")),
}  # fmt: skip


def _make_train_command(name: str):
    from shortrec.models import model_class
    from shortrec.runs import RUN_FILLED_FIELDS

    cls = model_class(name)
    model_fields = [
        f for f in dataclasses.fields(cls) if f.name not in RUN_FILLED_FIELDS and f.init
    ]

    def command(**kwargs):
        common = {k: kwargs.pop(k) for k in _COMMON_TRAIN_OPTIONS}
        _train(name, cls, kwargs, **common)

    params = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
        for k, (ann, opt) in _COMMON_TRAIN_OPTIONS.items()
    ] + [_option_for(f) for f in model_fields]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = (cls.__doc__ or name).strip().splitlines()[0]
    return command


def _train(name, cls, params, data, protocol, like_rule_text, runs_dir, test, sampled, preset):
    from shortrec.data.labels import LikeRule
    from shortrec.runs import RunConfig, read_metrics, train_run

    if preset:
        presets = getattr(cls, "presets", None)
        if presets is None or preset not in presets():
            fail(f"model {name!r} has no preset {preset!r}")
        # Flags given explicitly on the command line win over the preset.
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for key, value in presets()[preset].items():
            if params.get(key) == defaults.get(key):
                params[key] = value
    try:
        config = RunConfig(
            model=name,
            params=params,
            data_dir=str(data),
            protocol=protocol,
            like_rule=LikeRule.parse(like_rule_text).to_dict(),
            sampled=sampled,
            seed=params.get("seed", 0),
        )
        evaluate_on = ("tune", "test") if test else ("tune",)
        run_dir = train_run(config, runs_dir, evaluate_on=evaluate_on)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"run: {run_dir}")
    _print_run_metrics(run_dir, read_metrics(run_dir))


def _print_run_metrics(run_dir: Path, metrics: dict) -> None:
    for key, result in metrics.items():
        if not isinstance(result, dict) or "summary" not in result:
            continue
        shown = {m: result["summary"][m] for m in ("ndcg@10", "graded_ndcg@10", "recall@20", "mrr") if m in result["summary"]}
        text = ", ".join(f"{m} {v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}]" for m, v in shown.items())
        typer.echo(f"{key} ({result['mode']}): {text}")


def _register_train_commands() -> None:
    from shortrec.models import REGISTRY

    for name in REGISTRY:
        train_app.command(name)(_make_train_command(name))


_register_train_commands()


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    on: str = typer.Option("tune", help="tune | test"),
    sampled: Optional[int] = typer.Option(None, help="Paper mode: N sampled negatives per positive (labelled)."),
) -> None:
    """Evaluate a trained run on its tune or test set (full ranking unless --sampled)."""
    from shortrec.runs import evaluate_run, read_metrics

    try:
        evaluate_run(run_dir, on, sampled=sampled)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_run_metrics(run_dir, {k: v for k, v in read_metrics(run_dir).items() if k.startswith(on)})


@app.command()
def leaderboard(
    runs_dir: Path = typer.Option(Path("runs"), help="Folder of runs."),
    on: str = typer.Option("test", help="tune | test (| test:sampled-100 ...)"),
    metric: str = typer.Option("ndcg@10", help="Metric to sort by."),
    baseline: str = typer.Option("popular", help="Model to pair every run against."),
) -> None:
    """Print runs side by side: means with 95% intervals, paired difference vs a baseline."""
    from rich.console import Console

    from shortrec.leaderboard import leaderboard_table

    try:
        table = leaderboard_table(runs_dir, on, metric, baseline)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
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

    try:
        for cmp in compare_runs(run_a, run_b, on, metric):
            typer.echo(
                f"{cmp.metric}: B-A {cmp.difference} p={cmp.p_value:.2g} "
                f"(B better for {cmp.b_better} users, A for {cmp.a_better}, ties {cmp.ties})"
            )
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    users: Optional[str] = typer.Option(None, help="Comma-separated raw user ids (default: all users with history)."),
    k: int = typer.Option(10, help="Videos per user."),
    out: Optional[Path] = typer.Option(None, help="Write to .csv or .parquet instead of printing."),
    include_seen: bool = typer.Option(False, help="Allow already watched videos."),
    matrix: str = typer.Option("big", help="Which videos to rank: big (all) | small (small_matrix videos)."),
) -> None:
    """Top-k videos per user from a trained run, with captions and categories."""
    from shortrec.runs import recommend_from_run

    try:
        user_ids = [int(u) for u in users.split(",")] if users else None
        table = recommend_from_run(run_dir, user_ids, k, include_seen=include_seen, matrix=matrix)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if out is None:
        typer.echo(table.head(200))
    else:
        from shortrec.io import write_table

        write_table(table, out)
        typer.echo(f"wrote {table.height} rows to {out}")

# --- serve ---------------------------------------------------------------------------------
# (section owned by serving)

# --- tune, benchmark, report ---------------------------------------------------------------
# (section owned by tuning and reporting)


if __name__ == "__main__":
    app()


__all__ = ["app", "fail", "Path"]

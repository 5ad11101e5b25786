"""The `shortrec` command. Each command is a thin shell over a library function."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from shortrec.data.labels import LikeRule

app = typer.Typer(
    help="Honest, fast short-video recommenders on KuaiRec 2.0.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    help="Download, prepare and synthesise KuaiRec releases.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


def like_rule_option() -> typer.models.OptionInfo:
    """`--like-rule`, parsed once into the `LikeRule` every later step uses."""
    return typer.Option(
        str(LikeRule()), "--like-rule", parser=LikeRule.parse,
        help="duration[:Q] (liked: top 1-Q of watch ratios within duration buckets; the "
        "default), threshold[:X] (the seed project: threshold:0.7) or all (every view liked)",
    )  # fmt: skip


def fail(message: str) -> None:
    """Print a clear error and exit with status 2 (no traceback for user mistakes)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


# --- data: download, prepare ---------------------------------------------------------------
# (section owned by the data layer)


@data_app.command("download")
def data_download(
    dest: Path = typer.Option(Path("data/raw"), "--dest", help="Folder for KuaiRec.zip."),
    url: list[str] | None = typer.Option(
        None, "--url", help="Mirror to try (repeatable); default: the official mirrors."
    ),
    md5: str | None = typer.Option(
        None, "--md5", help="Expected md5 of the archive (default: the official release's)."
    ),
    size: int | None = typer.Option(
        None,
        "--size",
        help="Expected size in bytes (default: the official release's; "
        "with --md5 alone, not checked).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Download the official KuaiRec 2.0 archive (resumable, md5-verified) and unpack it.
    An archive already in DEST is verified and used, or reported if it does not match."""
    from shortrec.data.download import (
        ARCHIVE_MD5,
        ARCHIVE_SIZE,
        KUAIREC_URLS,
        DownloadError,
        download_kuairec,
    )

    if md5 is None:  # the official release
        md5 = ARCHIVE_MD5
        size = ARCHIVE_SIZE if size is None else size
    try:
        result = download_kuairec(
            dest, urls=url or KUAIREC_URLS, size=size, md5=md5.lower(), progress=progress
        )
    except (DownloadError, OSError) as error:
        fail(str(error))
    archive_note = "downloaded and verified" if result.downloaded else "already verified"
    typer.echo(f"{result.archive}: {archive_note}")
    unpack_note = "unpacked" if result.extracted else "already unpacked"
    typer.echo(f"{result.data_dir}: {unpack_note}")
    typer.echo(f"next: shortrec data prepare {dest} --out data/prepared")


@data_app.command("prepare")
def data_prepare(
    raw_dir: Path = typer.Argument(..., help="Folder with the KuaiRec CSVs (or the download)."),
    out: Path = typer.Option(Path("data/prepared"), "--out", help="Parquet cache folder."),
    force: bool = typer.Option(False, "--force", help="Rebuild even unchanged files."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Validate the KuaiRec CSVs and write the Parquet cache with its manifest."""
    from shortrec.data.prepare import prepare

    try:
        report = prepare(raw_dir, out, force=force, progress=progress)
    except (ValueError, OSError) as error:  # bad input, an unusable --out, a full disk
        fail(str(error))
    for name in report.absent:
        typer.echo(f"note: optional {name} not found in {report.release_dir}; skipped")
    for name in report.removed:
        typer.echo(f"note: removed {out / name} (its source is gone)")
    if report.up_to_date:
        typer.echo(
            f"{out}: up to date, sources unchanged ({len(report.unchanged)} files); "
            "nothing to do (use --force to rebuild)"
        )
        return
    for name in report.unchanged:
        typer.echo(f"{name}: unchanged, skipped")
    prepared = ", ".join(report.prepared) or "no table (manifest updated)"
    typer.echo(f"{out}: prepared {prepared} from {report.release_dir}")


# --- data: import, export ------------------------------------------------------------------


@data_app.command("import")
def data_import(
    source: Path = typer.Argument(
        ..., help="A CSV/Parquet log, a RecBole .inter file (or its folder), a SASRec .txt file."
    ),
    out: Path = typer.Option(..., "--out", help="Prepared folder to write (all or nothing)."),
    fmt: str = typer.Option("table", "--format", help="table | recbole | sasrec"),
    user: str = typer.Option("user_id", help="Column of user ids (table)."),
    item: str = typer.Option("item_id", help="Column of item ids (table)."),
    time: str | None = typer.Option(None, help="Column of Unix times or ISO date-times."),
    time_unit: str = typer.Option("s", help="Unit of a numeric time column: s | ms."),
    order: str | None = typer.Option(None, help="Column giving the order within each user."),
    watch_ratio: str | None = typer.Option(None, help="Column of watch ratios."),
    play_duration: str | None = typer.Option(None, help="Column of play durations (ms)."),
    video_duration: str | None = typer.Option(None, help="Column of video durations (ms)."),
    rating: str | None = typer.Option(None, help="Column of ratings (stored as rating/max)."),
    rating_max: float = typer.Option(5.0, help="The largest rating."),
    label: str | None = typer.Option(None, help="Column of binary labels (1 liked)."),
    separator: str = typer.Option(",", help="Field separator of a CSV table."),
) -> None:
    """Import any interaction log into the prepared layout every model and protocol reads."""
    from shortrec.data.importer import ColumnMapping, LogImportError, import_log

    mapping = ColumnMapping(
        user=user, item=item, time=time, time_unit=time_unit, order=order, watch_ratio=watch_ratio,
        play_duration=play_duration, video_duration=video_duration, rating=rating,
        rating_max=rating_max, label=label,
    )  # fmt: skip
    try:
        report = import_log(source, out, fmt, mapping, separator)
    except (LogImportError, FileNotFoundError) as error:
        fail(str(error))
    sides = f"; side tables: {', '.join(report.side_tables)}" if report.side_tables else ""
    typer.echo(
        f"{out}: {report.interactions:,} interactions of {report.users:,} users x "
        f"{report.items:,} items; signal: {report.signal}{sides}"
    )
    typer.echo(
        f"next: shortrec train ease --data {out} --protocol leave-last-out "
        f"--like-rule {report.suggested_like_rule}"
    )


@data_app.command("export")
def data_export(
    data: Path = typer.Argument(..., help="A prepared folder (data prepare or data import)."),
    out: Path = typer.Option(..., "--out", help="Folder for the atomic files (all or nothing)."),
    fmt: str = typer.Option("recbole", "--format", help="recbole (atomic files)"),
    name: str | None = typer.Option(None, help="Dataset name (default: the folder's name)."),
) -> None:
    """Write a prepared dataset in another toolkit's format, to cross-check results."""
    from shortrec.data.importer import export_recbole

    if fmt != "recbole":
        fail(f"--format must be 'recbole', got {fmt!r}")
    try:
        written = export_recbole(data, out, name)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    for path in written:
        typer.echo(f"wrote {path}")


# --- data: synth, calibrate ----------------------------------------------------------------
# (section owned by the synthetic world)


def _print_calibration(directory: Path, markdown: bool = False, learnability: bool = True) -> bool:
    from rich.console import Console

    from shortrec.data.calibration import all_passed, calibrate, markdown_table, report_table

    checks = calibrate(directory, learnability=learnability)
    if markdown:
        typer.echo(markdown_table(checks), nl=False)
    else:
        Console().print(report_table(checks, title=f"Calibration of {directory}"))
    return all_passed(checks)


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Directory to write the release into."),
    scale: str = typer.Option("small", help="tiny | small | full (the real sizes)."),
    seed: int = typer.Option(0, help="Random seed; the same seed writes identical files."),
    side_files: Path | None = typer.Option(
        None, help="Directory with the real item_categories / caption / user_features CSVs."
    ),
    calibration: bool = typer.Option(True, help="Print the calibration report at the end."),
    learnability: bool = typer.Option(
        True,
        help="Include the learnability rows in that report (reference models; ~1 min at "
        "full scale).",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Write a synthetic KuaiRec 2.0 release with a known ground truth."""
    from shortrec.data.synth import SynthConfig, synthesize

    try:
        config = SynthConfig(
            scale=scale, seed=seed, side_files=str(side_files) if side_files else None
        )
        synthesize(out, config, progress=progress, log=typer.echo)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    if calibration:
        _print_calibration(out, learnability=learnability)


@data_app.command("calibrate")
def data_calibrate(
    directory: Path = typer.Argument(..., help="Directory with big_matrix.csv, small_matrix.csv."),
    strict: bool = typer.Option(False, help="Exit with status 1 when a check fails."),
    markdown: bool = typer.Option(False, help="Print a Markdown table (as in the README)."),
    learnability: bool = typer.Option(
        True,
        help="Also run the reference study's split, like rule and models (random, popularity, "
        "ALS on liked views) and compare their figures with the real ones.",
    ),
) -> None:
    """Compare a KuaiRec-format release with the published statistics of the real one."""
    try:
        passed = _print_calibration(directory, markdown, learnability)
    except (ValueError, FileNotFoundError, pl_compute_error()) as error:
        fail(str(error))
    if strict and not passed:
        typer.secho("calibration: some checks failed", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def pl_compute_error() -> type[Exception]:
    """polars' error for unreadable CSV content (imported lazily to keep startup fast)."""
    import polars.exceptions

    return polars.exceptions.PolarsError


# --- train, evaluate, recommend, leaderboard, compare, quickstart --------------------------
# (section owned by the coordinator)


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
    "data": (
        Path,
        typer.Option(
            Path("data/prepared"), "--data",
            help="Prepared release dir, or a SASRec-format .txt file.",
        ),
    ),
    "protocol": (str, typer.Option("kuairec", help="kuairec | leave-last-out | temporal")),
    "like_rule": (LikeRule, like_rule_option()),
    "runs_dir": (Path, typer.Option(Path("runs"), help="Where run folders go.")),
    "test": (
        bool,
        typer.Option(False, "--test/--no-test", help="Also evaluate on the test set (once)."),
    ),
    "sampled": (
        int | None,
        typer.Option(
            None, help="Paper mode: rank each positive against N sampled negatives (labelled)."
        ),
    ),
    "label": (
        str,
        typer.Option("", help="Name of this variant on leaderboards (default: the model)."),
    ),
    "progress": (
        bool,
        typer.Option(True, "--progress/--no-progress", help="Progress bars while training."),
    ),
    "preset": (
        str | None,
        typer.Option(None, help="Named hyperparameter preset (e.g. paper-ml-1m for sasrec)."),
    ),
    "resume": (
        Path | None,
        typer.Option(
            None, help="An interrupted run folder to continue in (models with checkpoints "
            "resume from them; the same command and flags)."
        ),
    ),
    "nproc": (
        int,
        typer.Option(1, help="Data-parallel processes on this machine (models that support "
                     "it); multi-node: launch with torchrun instead."),
    ),
}  # fmt: skip


def _make_train_command(name: str):
    from shortrec.models import model_class

    cls = model_class(name)
    model_fields = [f for f in dataclasses.fields(cls) if f.init]

    def command(ctx: typer.Context, **kwargs):
        # Typer ships its own click: compare by name, not with click's enum.
        explicit = {
            key
            for key in kwargs
            if ctx.get_parameter_source(key).name not in ("DEFAULT", "DEFAULT_MAP")
        }
        common = {k: kwargs.pop(k) for k in _COMMON_TRAIN_OPTIONS}
        _train(name, cls, kwargs, explicit, **common)

    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    ]
    params += [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
        for k, (ann, opt) in _COMMON_TRAIN_OPTIONS.items()
    ] + [_option_for(f) for f in model_fields]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = (cls.__doc__ or name).strip().splitlines()[0]
    return command


def _train(
    name, cls, params, explicit, data, protocol, like_rule, runs_dir, test, sampled, label,
    progress, preset, resume, nproc,
):  # fmt: skip
    from shortrec.runs import RunConfig, read_metrics, train_run
    from shortrec.training.distributed import torchrun_command, without_option, world

    if nproc > 1 and not world().active:
        if not cls.distributed:
            fail(f"model {name!r} does not train data-parallel; drop --nproc")
        import subprocess
        import sys

        argv = without_option(sys.argv[1:], "--nproc")
        raise typer.Exit(subprocess.run(torchrun_command(nproc, argv)).returncode)
    if preset:
        if preset not in cls.presets():
            known = ", ".join(sorted(cls.presets())) or "none"
            fail(f"model {name!r} has no preset {preset!r} (presets: {known})")
        # Flags given on the command line win over the preset, whatever their value; a
        # preset may also set the run's protocol, like rule and sampled evaluation.
        run_options = {"protocol": protocol, "like_rule": like_rule, "sampled": sampled}
        for key, value in cls.presets()[preset].items():
            if key in explicit:
                continue
            if key in run_options:
                run_options[key] = LikeRule.parse(value) if key == "like_rule" else value
            else:
                params[key] = value
        protocol, like_rule, sampled = (run_options[k] for k in ("protocol", "like_rule",
                                                                 "sampled"))  # fmt: skip
    try:
        config = RunConfig(
            model=name,
            params=params,
            data_dir=str(data),
            protocol=protocol,
            like_rule=like_rule,
            sampled=sampled,
            seed=params.get("seed", 0),
            label=label,
        )
        evaluate_on = ("tune", "test") if test else ("tune",)
        if resume is not None:
            _check_resumable(resume, config)
        run_dir = train_run(
            config, runs_dir, evaluate_on=evaluate_on, progress=progress, run_dir=resume
        )
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if run_dir is None:  # another rank of a data-parallel job: rank 0 reports
        return
    typer.echo(f"run: {run_dir}")
    _print_run_metrics(run_dir, read_metrics(run_dir))


def _check_resumable(run_dir: Path, config) -> None:
    """`--resume` continues a run of the same model on the same data, nothing else."""
    from shortrec.runs import RunConfig

    path = run_dir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"--resume {run_dir}: not a run folder (no config.json)")
    saved = RunConfig.from_json(path.read_text())
    if (saved.model, saved.comparable_key) != (config.model, config.comparable_key):
        raise ValueError(
            f"--resume {run_dir}: that run trained {saved.model} on {saved.comparable_key}, "
            f"not {config.model} on {config.comparable_key}"
        )


def _print_run_metrics(run_dir: Path, metrics: dict) -> None:
    for key, result in metrics.items():
        if not isinstance(result, dict) or "summary" not in result:
            continue
        names = ("ndcg@10", "graded_ndcg@10", "recall@20", "mrr")
        if result["mode"] != "full-ranking":  # papers report HR@10 beside NDCG@10
            names = ("ndcg@10", "hitrate@10", "mrr")
        shown = {m: result["summary"][m] for m in names if m in result["summary"]}
        text = ", ".join(
            f"{m} {v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}]" for m, v in shown.items()
        )
        typer.echo(f"{key} ({result['mode']}): {text}")
        aggregate = result.get("aggregate", {})
        if aggregate.get("liked_share") is not None:
            typer.echo(f"  {aggregate['liked_share']:.1%} of the judged {key} views are liked")
        if aggregate.get("nan_scores"):
            typer.echo(f"  warning: {int(aggregate['nan_scores'])} NaN scores ranked last")


@app.command()
def quickstart(
    workdir: Path = typer.Option(Path("data/quickstart"), help="Where the synthetic world goes."),
    runs_dir: Path = typer.Option(Path("runs/quickstart"), help="Where the runs go."),
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
    from shortrec.quickstart import QUICKSTART_MODELS, run_quickstart
    from shortrec.runs import recommend_from_run

    chosen = tuple(models.split(",")) if models else QUICKSTART_MODELS
    try:
        run_dirs = run_quickstart(workdir, runs_dir, scale, seed, chosen, log=typer.echo)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console = Console(width=220)
    console.print(leaderboard_table(runs_dir, "test", "ndcg@10", "popular"))
    best = _best_run(run_dirs)
    if best is not None:
        from shortrec.runs import RunConfig, load_data, split_for

        config = RunConfig.from_json((best / "config.json").read_text())
        if user is None:
            user = int(split_for(load_data(config.data_dir), "kuairec").test["user_id"].min())
        table = recommend_from_run(best, [user], 10)
        console.print(
            f"top-10 small_matrix videos for user {user} from {config.model} ({best.name}):"
        )
        console.print(table.drop("user_id"))


def _best_run(run_dirs: list[Path]) -> Path | None:
    """The run with the best tune-set NDCG@10 (never chosen on test), oracle excluded."""
    from shortrec.runs import RunConfig, read_metrics

    scored = []
    for run_dir in run_dirs:
        tune = read_metrics(run_dir).get("tune")
        if tune and RunConfig.from_json((run_dir / "config.json").read_text()).model != "oracle":
            scored.append((tune["summary"]["ndcg@10"]["mean"], run_dir))
    return max(scored)[1] if scored else None


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    on: str = typer.Option("tune", help="tune | test"),
    sampled: int | None = typer.Option(
        None, help="N sampled negatives per positive (labelled); 0 = full ranking."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Evaluate a trained run on its tune or test set (full ranking unless --sampled)."""
    from shortrec.runs import evaluate_run, read_metrics

    try:
        evaluate_run(run_dir, on, sampled=sampled, progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_run_metrics(
        run_dir, {k: v for k, v in read_metrics(run_dir).items() if k.startswith(on)}
    )


@app.command()
def leaderboard(
    runs_dir: Path = typer.Option(Path("runs"), help="Folder of runs."),
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
    try:
        if markdown:
            as_markdown = simulation_markdown if simulation else leaderboard_markdown
            typer.echo(as_markdown(runs_dir, on, metric, baseline))
            return
        table = leaderboard_table(runs_dir, on, metric, baseline, simulation=simulation)
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

    try:
        user_ids = [int(u) for u in users.split(",")] if users else None
        table = recommend_from_run(
            run_dir, user_ids, k, include_seen=include_seen, candidates=candidates
        )
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if out is None:
        typer.echo(table.head(200))
    else:
        from shortrec.io import write_table

        write_table(table, out)
        typer.echo(f"wrote {table.height} rows to {out}")


# --- simulate ------------------------------------------------------------------------------
# (section owned by simulation)


@app.command()
def simulate(
    run_dir: Path = typer.Argument(..., help="A run folder (kuairec protocol)."),
    users: str = typer.Option("test", help="tune | test: which small_matrix users."),
    steps: int = typer.Option(50, min=1, help="Views per session at most."),
    slate: int = typer.Option(1, min=1, help="Videos shown per step; the user watches one."),
    seed: int = typer.Option(0, help="Seed of the users' randomness (choices, noise, exits)."),
    outcomes: str = typer.Option(
        "auto",
        help="Watch ratios from: world (a synthetic world's taste model, with noise and "
        "session drift), matrix (small_matrix as observed), auto (world when there is one).",
    ),
    world: Path | None = typer.Option(
        None, help="world.json of the synthetic world (default: found via the data manifest)."
    ),
    weak_streak: int = typer.Option(
        2, min=0, help="Exit after this many weak (disliked) views in a row; 0: never."
    ),
    repeat_run: int = typer.Option(
        6, min=0, help="Exit after this many views in a row of one category; 0: never."
    ),
    leave_probability: float = typer.Option(
        0.01, min=0.0, max=1.0, help="Chance of leaving after any view."
    ),
    position_bias: float = typer.Option(
        0.5, help="Choice model: logit penalty per slate position (slates > 1)."
    ),
    live_events: bool = typer.Option(
        True,
        help="Post each view back to the policy as a live event (--no-live-events: the "
        "policy sees only the big_matrix history; recorded as simulation_<users>-static).",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Simulate a run as a feed for every tune/test user: watch time, session length, likes."""
    from shortrec.simulation.simulate import (
        SIMULATION_METRICS,
        ChoiceModel,
        ExitModel,
        SimulationConfig,
        simulate_run,
    )

    try:
        config = SimulationConfig(
            users=users, steps=steps, slate=slate, seed=seed, outcomes=outcomes,
            live_events=live_events, choice=ChoiceModel(position_bias=position_bias),
            exit=ExitModel(weak_streak, repeat_run, leave_probability),
        )  # fmt: skip
        result = simulate_run(run_dir, config, world_file=world, progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    intervals = result.intervals()
    typer.echo(
        f"{config.key} ({result.per_user.height} users, watch ratios from {result.outcomes}, "
        f"{result.seconds:.1f} s, steps {result.loop_seconds:.1f} s): "
        + ", ".join(f"{m} {intervals[m]}" for m in SIMULATION_METRICS)
    )


# --- serve ---------------------------------------------------------------------------------
# (section owned by serving)


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
        1, min=1, help="Torch threads per request (requests already run in parallel)."
    ),
    access_log: bool = typer.Option(False, help="Log every request (costs CPU under load)."),
) -> None:
    """Serve a trained model: recommendations API, live events, metrics and a web page."""
    import uvicorn

    from shortrec.serving.app import create_app_from_spec
    from shortrec.serving.runs import find_default_run
    from shortrec.serving.settings import LOCAL_HOSTS, ServeSettings, ServeSpec, default_runs_root
    from shortrec.serving.store import open_store

    try:
        run_dir = run if run is not None else find_default_run()
        if not (Path(run_dir) / "config.json").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
        settings = ServeSettings(
            admin_token=admin_token or None,
            events_token=events_token or None,
            runs_root=str(runs_root.resolve()) if runs_root else default_runs_root(run_dir),
            trusted_hosts=tuple(dict.fromkeys([*LOCAL_HOSTS, host, *trusted_host])),
            max_body_bytes=max_body_bytes,
            poll_seconds=poll_seconds,
            workers=workers,
        )
        spec = ServeSpec(str(run_dir), db, settings, torch_threads)
        if workers == 1:
            typer.echo(f"loading {run_dir} ...", err=True)
            api = create_app_from_spec(spec)
        else:
            open_store(db if db is not None else Path(run_dir) / "events.db").close()
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    # timeout_keep_alive: pooled clients reuse their connections between bursts.
    uvicorn_options = dict(
        host=host, port=port, access_log=access_log, log_level="warning", timeout_keep_alive=30
    )
    if workers == 1:
        served = api.state.feed.served
        typer.echo(
            f"serving {served.name} from {run_dir} on http://{host}:{port}/ "
            f"(events: {api.state.store.kind}; {api.state.feed.live_count} replayed)",
            err=True,
        )
        uvicorn.run(api, workers=1, **uvicorn_options)
    else:
        spec.to_environment()  # each worker process builds its app from it
        typer.echo(f"serving {run_dir} with {workers} workers on http://{host}:{port}/", err=True)
        uvicorn.run("shortrec.serving.app:create_app_from_environment", factory=True,
                    workers=workers, **uvicorn_options)  # fmt: skip


# --- tune, benchmark, report ---------------------------------------------------------------
# (section owned by tuning and reporting)

_STUDY_ERRORS = (ValueError, FileNotFoundError, KeyError, RuntimeError)


def _error_text(exc: Exception) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


@app.command("tune")
def tune_command(
    models: list[str] = typer.Argument(
        ..., help="Models to tune, or 'all' (every model but the oracle)."
    ),
    data: Path = typer.Option(
        Path("data/prepared"), "--data", help="Prepared release dir, or a SASRec-format .txt file."
    ),
    protocol: str = typer.Option("kuairec", help="kuairec | leave-last-out | temporal"),
    like_rule: LikeRule = like_rule_option(),
    trials: int = typer.Option(
        20, help="Budget: finished trials per model study, over all workers and restarts."
    ),
    timeout: float | None = typer.Option(None, help="Seconds per model for this invocation."),
    storage: str | None = typer.Option(
        None,
        help="Optuna database URL shared by workers "
        "(default sqlite:///RUNS_DIR/tuning.db; e.g. postgresql://...).",
    ),
    study_name: str | None = typer.Option(
        None, help="Study name (default MODEL-DATA-PROTOCOL); one model only."
    ),
    metric: str = typer.Option(
        "ndcg@10", help="Tune-set metric to maximise (the test set is never used)."
    ),
    runs_dir: Path = typer.Option(
        Path("runs"), help="Where trial runs (and the default database) go."
    ),
    seed: int = typer.Option(0, help="Seed of the sampler and of every trial's model."),
) -> None:
    """Search hyperparameters on the tune set with Optuna; rerun the same command to resume."""
    from shortrec.benchmark import default_models
    from shortrec.runs import load_data
    from shortrec.tuning import TuneConfig, best_hyperparameters, finished_trials, tune

    names = default_models() if models == ["all"] else models
    if study_name and len(names) > 1:
        fail("--study-name needs a single model (each model has its own study)")
    try:
        loaded = load_data(data)  # once for every model
        for name in names:
            config = TuneConfig(
                model=name,
                data_dir=str(data),
                protocol=protocol,
                like_rule=like_rule,
                trials=trials,
                timeout=timeout,
                storage=storage,
                study_name=study_name,
                metric=metric,
                runs_dir=str(runs_dir),
                seed=seed,
            )
            study = tune(config, data=loaded)
            best = best_hyperparameters(study)
            value = "-" if best is None else f"{study.best_value:.4f}"
            typer.echo(
                f"{study.study_name}: {finished_trials(study)} finished trials, "
                f"best tune {metric} {value} with {best}"
            )
    except _STUDY_ERRORS as exc:
        fail(_error_text(exc))


@app.command("benchmark")
def benchmark_command(
    data: Path = typer.Option(Path("data/prepared"), "--data", help="Prepared release dir."),
    models: str | None = typer.Option(
        None,
        help="Comma-separated models (default: all but the oracle); "
        "popular and recent-popular are always added.",
    ),
    seeds: int = typer.Option(3, help="Runs per model, seeds 0..N-1."),
    protocol: str = typer.Option("kuairec", help="kuairec | leave-last-out | temporal"),
    like_rule: LikeRule = like_rule_option(),
    metric: str = typer.Option("ndcg@10", help="Metric to rank by and pair on."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where runs go."),
    out: Path = typer.Option(Path("benchmark"), help="Folder for benchmark.md and benchmark.json."),
    from_study: bool = typer.Option(
        True,
        "--from-study/--defaults",
        help="Best hyperparameters of each model's study (when it exists), or the defaults.",
    ),
    storage: str | None = typer.Option(
        None, help="Optuna database URL (default sqlite:///RUNS_DIR/tuning.db)."
    ),
    tune_trials: int = typer.Option(
        0, help="First tune every model with this same budget of trials."
    ),
    tune_timeout: float | None = typer.Option(
        None, help="Tuning seconds per model (with --tune-trials)."
    ),
    isolate: bool = typer.Option(
        True,
        "--isolate/--no-isolate",
        help="Train each run in a fresh process, so peak memory is its own.",
    ),
) -> None:
    """Train every model's chosen configuration with several seeds; evaluate test once."""
    from rich.console import Console

    from shortrec.benchmark import BenchmarkConfig, benchmark_table, default_models, run_benchmark

    try:
        config = BenchmarkConfig(
            data_dir=str(data),
            models=[m.strip() for m in (models or "").split(",") if m.strip()] or default_models(),
            protocol=protocol,
            like_rule=like_rule,
            seeds=seeds,
            metric=metric,
            runs_dir=str(runs_dir),
            out_dir=str(out),
            from_study=from_study,
            storage=storage,
            tune_trials=tune_trials,
            tune_timeout=tune_timeout,
            isolate=isolate,
        )
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        result = run_benchmark(config)
    except _STUDY_ERRORS as exc:
        fail(_error_text(exc))
    Console(width=240).print(benchmark_table(result))
    typer.echo(f"wrote {out / 'benchmark.md'} and {out / 'benchmark.json'}")


@app.command("report")
def report_command(
    runs_dir: Path = typer.Option(Path("runs"), help="Folder of runs."),
    benchmark: Path | None = typer.Option(
        None, help="A `shortrec benchmark` output folder (the leaderboard's source)."
    ),
    out: Path = typer.Option(Path("report"), help="Folder for index.html and the PNGs."),
    storage: str | None = typer.Option(
        None, help="Optuna database URL (default sqlite:///RUNS_DIR/tuning.db)."
    ),
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

    try:
        page = build_report(
            runs_dir, out, benchmark, storage=storage, metric=metric, example_users=users
        )
        typer.echo(f"wrote {page}")
        if screenshot is not None:
            from shortrec.report.browser import check_page

            check = check_page(page, screenshot, height=screenshot_height)
            if check.broken_images:
                fail(f"figures that did not render in Chromium: {check.broken_images}")
            typer.echo(f"{check.images} figures rendered in Chromium; screenshot {screenshot}")
    except _STUDY_ERRORS as exc:
        fail(_error_text(exc))


if __name__ == "__main__":
    app()


__all__ = ["app", "fail", "Path"]

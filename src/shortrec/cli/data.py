"""`shortrec data ...`: download, prepare, import, export, synth, calibrate."""

from __future__ import annotations

from pathlib import Path

import typer

from shortrec.cli.app import data_app
from shortrec.cli.options import fail, progress_option, user_errors


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
    progress: bool = progress_option("Show a progress bar."),
) -> None:
    """Download the official KuaiRec 2.0 archive (resumable, md5-verified) and unpack it.
    An archive already in DEST is verified and used, or reported if it does not match."""
    from shortrec.data.download import KUAIREC_URLS, DownloadError, download_kuairec

    # Without --md5, the official release (and its size unless --size); with it, --size alone.
    expected = {"size": size} if md5 is None and size is not None else {}
    if md5 is not None:
        expected = {"md5": md5.lower(), "size": size}
    with user_errors(DownloadError, OSError):
        result = download_kuairec(dest, urls=url or KUAIREC_URLS, progress=progress, **expected)
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
    progress: bool = progress_option("Show a progress bar."),
) -> None:
    """Validate the KuaiRec CSVs and write the Parquet cache with its manifest."""
    from shortrec.data.prepare import prepare

    with user_errors(OSError):  # bad input, an unusable --out, a full disk
        report = prepare(raw_dir, out, force=force, progress=progress)
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
    items: Path | None = typer.Option(
        None, help="Item table (CSV/Parquet) keyed by the item column: titles, categories."
    ),
    item_title: str | None = typer.Option(
        None, help="Item field holding the title (default: title, movie_title, name, ...)."
    ),
    item_category: str | None = typer.Option(
        None, help="Item field holding categories (default: genre(s), category, ...)."
    ),
    category_separator: str = typer.Option(
        "|", help="Separator between categories in an --items cell."
    ),
) -> None:
    """Import any interaction log into the prepared layout every model and protocol reads."""
    from shortrec.data.importer import ColumnMapping, LogImportError, import_log

    mapping = ColumnMapping(
        user=user, item=item, time=time, time_unit=time_unit, order=order, watch_ratio=watch_ratio,
        play_duration=play_duration, video_duration=video_duration, rating=rating,
        rating_max=rating_max, label=label, item_title=item_title, item_category=item_category,
        category_separator=category_separator,
    )  # fmt: skip
    with user_errors(LogImportError):
        report = import_log(source, out, fmt, mapping, separator, items=items)
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
    with user_errors():
        written = export_recbole(data, out, name)
    for path in written:
        typer.echo(f"wrote {path}")


# --- data report (shortrec.report.data_report) ---------------------------------------------


@data_app.command("report")
def data_report(
    data: Path = typer.Argument(..., help="A prepared folder (data prepare or data import)."),
    out: Path = typer.Option(
        ..., "--out", help="Folder for index.html and its PNGs, or an .html file."
    ),
    like_rule: str | None = typer.Option(
        None,
        "--like-rule",
        help="Rule whose thresholds are drawn in (default: what a run on this data uses).",
    ),  # fmt: skip
    screenshot: Path | None = typer.Option(
        None, help="Also check the page in headless Chromium and save a PNG of it."
    ),
    screenshot_height: int | None = typer.Option(
        None, help="Keep only the top N pixels of the screenshot (default: the whole page)."
    ),
) -> None:
    """A self-contained HTML page about a dataset: watch ratio by duration, popularity,
    activity, like rates, the days, and the calibration of a KuaiRec-format release."""
    from shortrec.data.labels import LikeRule
    from shortrec.report.data_report import write_data_report

    with user_errors(RuntimeError):
        rule = LikeRule.parse(like_rule) if like_rule else None
        page = write_data_report(data, out, like_rule=rule)
        typer.echo(f"wrote {page}")
        if screenshot is not None:
            from shortrec.report.browser import check_page

            check = check_page(page, screenshot, height=screenshot_height)
            if check.broken_images:
                fail(f"figures that did not render in Chromium: {check.broken_images}")
            typer.echo(f"{check.images} figures rendered in Chromium; screenshot {screenshot}")


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

    with user_errors():
        config = SynthConfig(
            scale=scale, seed=seed, side_files=str(side_files) if side_files else None
        )
        synthesize(out, config, progress=progress, log=typer.echo)
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
    import polars.exceptions

    with user_errors(polars.exceptions.PolarsError):
        passed = _print_calibration(directory, markdown, learnability)
    if strict and not passed:
        typer.secho("calibration: some checks failed", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)

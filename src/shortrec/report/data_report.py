"""`shortrec data report`: one self-contained HTML page (plus its PNGs) about a dataset.

The dataset is a prepared folder: a KuaiRec release (`data prepare`, `data synth` then
`prepare`) or an imported log (`data import`). The page shows what a modeller looks at before
training: watch ratio by video duration with the like rule's thresholds drawn in, the
popularity curve (Lorenz curve, Gini), views per user and per user-day, like rates by duration
bucket and by category, views over the days and, for KuaiRec-format releases, every
calibration row against the published statistics of the real release.

Every table is scanned lazily with polars and aggregated before it is collected (per video,
per user, per user-day, per bucket), so a full-scale release (12.5M views) takes seconds and
well under 4 GB. The like rule's bucket thresholds are the one exception: fitting them needs
every view's duration and watch ratio (two columns). The calibration reads the two
interaction tables whole, as `data calibrate` does.

A log without watch ratios, durations, times or categories still gets a page: each section
says what the log lacks instead of drawing an empty figure.
"""

from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import polars as pl
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from shortrec.data.dataset import MANIFEST_FILE, read_manifest, verify_table
from shortrec.data.labels import LikeRule
from shortrec.io import atomic_write_bytes, atomic_write_text
from shortrec.report.plots import WIDTH, png_bytes

SECTIONS = {
    "overview": "Overview",
    "watch-ratio": "Watch ratio by duration",
    "popularity": "Popularity curve",
    "activity": "Views per user and per user-day",
    "like-rate": "Like rate by duration and by category",
    "timeline": "Views over the days",
    "calibration": "Calibration against KuaiRec 2.0",
}
# KuaiRec's dates and times are Beijing time; an imported log's days are UTC days.
KUAIREC_UTC_OFFSET_S = 8 * 3600
DAY_S = 86_400
TOP_CATEGORIES = 20
# KuaiRec's category names are Chinese: a CJK font (Debian: fonts-wqy-microhei or
# fonts-noto-cjk) draws them; without one they show as boxes.
CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Droid Sans Fallback")


def _font_family() -> list[str]:
    """DejaVu Sans, then the first CJK font this machine has (registered with matplotlib
    when it was installed after matplotlib built its font cache)."""
    known = {font.name for font in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in known]
    if not found:
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in ("wqy-microhei", "notosanscjk")):
                font_manager.fontManager.addfont(path)
        known = {font.name for font in font_manager.fontManager.ttflist}
        found = [name for name in CJK_FONTS if name in known]
    return ["DejaVu Sans", *found[:1]]


def _plain(text: object) -> str:
    """A label matplotlib draws as it is (a `$` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _seconds_axis(axes) -> None:
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(ScalarFormatter())
    axes.tick_params(axis="x", which="minor", labelsize=7)


@dataclass
class Section:
    key: str
    body: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.body.append(f'<p class="note">{_escape(text)}</p>')

    def absent(self, text: str) -> None:
        self.body.append(f'<p class="empty">{_escape(text)}</p>')

    def html(self) -> str:
        return (
            f'<section id="{self.key}">\n<h2>{SECTIONS[self.key]}</h2>\n'
            + "\n".join(self.body)
            + "\n</section>"
        )


class _Figures:
    """Writes each figure as a PNG beside the page and returns the <img> embedding it."""

    def __init__(self, out_dir: Path, prefix: str) -> None:
        self.out_dir, self.prefix = out_dir, prefix
        self.files: list[Path] = []

    def img(self, name: str, figure: Figure, alt: str) -> str:
        data = png_bytes(figure)
        path = self.out_dir / f"{self.prefix}{name}.png"
        atomic_write_bytes(path, data)
        self.files.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        return f'<img src="data:image/png;base64,{encoded}" alt="{_escape(alt)}">'


def _escape(value: object) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[object]], numeric_from: int = 1) -> str:
    lines = ["<tr>" + "".join(f"<th>{_escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [
            f'<td class="num">{_escape(c)}</td>' if i >= numeric_from else f"<td>{_escape(c)}</td>"
            for i, c in enumerate(row)
        ]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "\n".join(lines) + "</table>"


def _count(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


@dataclass
class Dataset:
    """What the report knows about the folder before reading any row."""

    directory: Path
    manifest: dict
    big: pl.LazyFrame
    small: pl.LazyFrame | None  # None: empty (an imported log)
    names: pl.DataFrame | None  # video_id, category (one row per video and category)
    category_source: str
    kuairec: bool  # a KuaiRec-format release (prepare), not an imported log
    has_times: bool  # timestamps are times (not positions within the user)

    @property
    def utc_offset_s(self) -> int:
        return KUAIREC_UTC_OFFSET_S if self.kuairec else 0


def _open(directory: Path) -> Dataset:
    manifest = read_manifest(directory)

    def scan(name: str) -> pl.LazyFrame | None:
        path = verify_table(directory, manifest, name)
        return None if path is None else pl.scan_parquet(path)

    big = scan("big_matrix")
    small = scan("small_matrix")
    assert big is not None and small is not None  # required tables
    if manifest["files"]["small_matrix"]["rows"] == 0:
        small = None
    kuairec = manifest.get("source") != "import"
    mapping = manifest.get("mapping") or {}
    has_times = kuairec or bool(mapping.get("time"))
    names, category_source = _categories(directory, manifest)
    return Dataset(directory, manifest, big, small, names, category_source, kuairec, has_times)


def _categories(directory: Path, manifest: dict) -> tuple[pl.DataFrame | None, str]:
    """One row per (video, category name): KuaiRec's first-level categories, an imported
    item table's categories, else the video's tags (named when the log names them)."""
    from shortrec.data.dataset import ITEM_ATTRIBUTES_TABLE, TAG_NAMES_TABLE

    captions = verify_table(directory, manifest, "kuairec_caption_category")
    if captions is not None:
        frame = pl.read_parquet(captions, columns=["video_id", "first_level_category_name"])
        frame = frame.rename({"first_level_category_name": "category"}).drop_nulls()
        return frame, "first-level category (kuairec_caption_category)"
    attributes = verify_table(directory, manifest, ITEM_ATTRIBUTES_TABLE)
    if attributes is not None:
        roles = manifest["files"][ITEM_ATTRIBUTES_TABLE].get("roles", {})
        category = roles.get("category")
        if category:
            frame = pl.read_parquet(attributes, columns=["video_id", category])
            if frame.schema[category] != pl.List(pl.String):
                frame = frame.with_columns(pl.concat_list(pl.col(category).cast(pl.String)))
            frame = frame.explode(category).rename({category: "category"}).drop_nulls()
            return frame, f"item table field {category!r}"
    tags_path = verify_table(directory, manifest, "item_categories")
    assert tags_path is not None
    tags = pl.read_parquet(tags_path).explode("tags").drop_nulls("tags")
    if tags.height == 0:
        return None, ""
    names = verify_table(directory, manifest, TAG_NAMES_TABLE)
    if names is not None:
        vocabulary = pl.read_parquet(names).select("tag", pl.col("name").alias("category"))
        frame = tags.join(vocabulary, left_on="tags", right_on="tag", how="left")
        frame = frame.select("video_id", pl.col("category").fill_null(pl.col("tags").cast(str)))
        return frame, "tags (named by the log's item file)"
    frame = tags.select("video_id", pl.format("tag {}", pl.col("tags")).alias("category"))
    return frame, "tags (item_categories; KuaiRec's tags carry no names)"


def _columns_present(frame: pl.LazyFrame) -> dict[str, int]:
    """Non-null count of each interaction column (aggregated while streaming)."""
    counts = frame.select(pl.all().count()).collect(engine="streaming")
    return {name: int(counts[name][0]) for name in counts.columns}


# --- the like rule -----------------------------------------------------------------------


def default_like_rule(manifest: dict) -> LikeRule:
    """The rule a run on this data would use by default: the project's default for a
    KuaiRec release, the import's suggestion for an imported log."""
    suggested = manifest.get("suggested_like_rule")
    return LikeRule.parse(suggested) if suggested else LikeRule()


def _fit_rule(data: Dataset, rule: LikeRule) -> LikeRule:
    if rule.kind != "duration" or rule.is_fitted:
        return rule
    views = (
        data.big.select("video_duration", "watch_ratio").drop_nulls().collect(engine="streaming")
    )
    return LikeRule(**rule.unfitted().to_dict()).fit(views)


def _bucket(rule: LikeRule, edges: list[float]) -> pl.Expr:
    """The like rule's duration bucket of each view (np.searchsorted side="right" on the
    log-duration edges, as `LikeRule` computes it)."""
    log_duration = pl.max_horizontal(pl.col("video_duration").cast(pl.Float64), 1.0).log()
    if not edges:
        return pl.lit(0, pl.Int32).alias("bucket")
    return pl.sum_horizontal(log_duration >= edge for edge in edges).cast(pl.Int32).alias("bucket")


def _duration_edges(data: Dataset, rule: LikeRule) -> list[float]:
    """The rule's bucket edges; for a fixed-threshold rule, 24 log-spaced quantile buckets
    (the duration rule's default) so the figure has the same shape."""
    if rule.kind == "duration":
        return list(rule.bucket_edges)
    quantiles = np.linspace(0, 1, LikeRule().n_buckets + 1)[1:-1]
    log_duration = pl.max_horizontal(pl.col("video_duration").cast(pl.Float64), 1.0).log()
    row = (
        data.big.filter(pl.col("video_duration") > 0)
        .select(log_duration.quantile(float(q)).alias(str(i)) for i, q in enumerate(quantiles))
        .collect(engine="streaming")
    )
    return sorted(set(row.row(0)))


def _liked_expr(rule: LikeRule) -> tuple[pl.Expr, pl.Expr]:
    """Per-view liked / disliked, given the bucket's thresholds joined as like_at/dislike_at."""
    ratio = pl.col("watch_ratio")
    if rule.kind == "all":
        return pl.lit(True), pl.lit(False)
    if rule.kind == "threshold":
        return ratio >= rule.threshold, ratio < rule.dislike_threshold
    return ratio >= pl.col("like_at"), ratio < pl.col("dislike_at")


def _with_labels(data: Dataset, rule: LikeRule) -> pl.LazyFrame:
    """big_matrix with `bucket`, `liked` and `disliked` (views without a watch ratio or, for
    the duration rule, a duration are left out: nothing judges them)."""
    liked, disliked = _liked_expr(rule)
    frame = data.big
    if rule.kind != "all":
        frame = frame.filter(pl.col("watch_ratio").is_not_null())
    if rule.kind == "duration":
        bucket = pl.col("bucket")
        like_at = dict(enumerate(rule.like_thresholds))
        dislike_at = dict(enumerate(rule.dislike_thresholds))
        frame = (
            frame.filter(pl.col("video_duration").is_not_null())
            .with_columns(_bucket(rule, rule.bucket_edges))
            .with_columns(
                bucket.replace_strict(like_at, return_dtype=pl.Float64).alias("like_at"),
                bucket.replace_strict(dislike_at, return_dtype=pl.Float64).alias("dislike_at"),
            )
        )
    return frame.with_columns(liked.alias("liked"), disliked.alias("disliked"))


# --- sections ----------------------------------------------------------------------------


def overview_section(data: Dataset, present: dict[str, int], rows: int, rule: LikeRule) -> Section:
    section = Section("overview")
    manifest = data.manifest
    if data.kuairec:
        origin = f"KuaiRec-format release prepared from {manifest.get('release_dir', '?')}"
    else:
        origin = f"log imported from {manifest.get('path', '?')} ({manifest.get('format')})"
    stats = (
        data.big.select(
            pl.col("user_id").n_unique().alias("users"),
            pl.col("video_id").n_unique().alias("videos"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    duplicates = manifest["files"]["big_matrix"].get("duplicate_rows")
    table_rows = [
        ["source", origin],
        ["signal", manifest.get("signal", "watch_ratio")],
        ["like rule drawn in", str(rule)],
        ["big_matrix views", _count(rows)],
        ["users x videos", f"{stats['users']:,} x {stats['videos']:,}"],
        ["exact duplicate rows", "-" if duplicates is None else _count(duplicates)],
    ]
    if data.small is not None:
        table_rows.append(["small_matrix views", _count(manifest["files"]["small_matrix"]["rows"])])
    if data.has_times and stats["first"] is not None:
        days = (stats["last"] - stats["first"]) / DAY_S
        table_rows.append(["time span (days)", f"{days:.1f}"])
    elif stats["first"] is not None:
        table_rows.append(["time span", "no times: the log gives only the order of views"])
    section.body.append(_table(["", "value"], table_rows, numeric_from=9))
    absent = [name for name in ("watch_ratio", "video_duration", "timestamp") if not present[name]]
    column_rows = [[name, f"{present[name] / max(rows, 1):.1%}"] for name in present]
    section.body.append("<h3>Interaction columns: share of views with a value</h3>")
    section.body.append(_table(["column", "non-null"], column_rows))
    if absent:
        section.absent(f"This log has no {', '.join(absent)}: the sections that need them say so.")
    return section


def watch_ratio_section(
    data: Dataset, present: dict[str, int], rule: LikeRule, figures: _Figures
) -> Section:
    section = Section("watch-ratio")
    if not present["watch_ratio"]:
        section.absent(
            "This log has no watch ratio (nor a rating or label stored as one): every view "
            "counts as liked (like rule `all`), so there is no distribution to draw."
        )
        return section
    if not present["video_duration"]:
        ratios = data.big.select(pl.col("watch_ratio").drop_nulls())
        histogram = (
            ratios.group_by(pl.col("watch_ratio").round(2))
            .len()
            .sort("watch_ratio")
            .collect(engine="streaming")
        )
        figure = Figure(figsize=(WIDTH, 3.6))
        axes = figure.add_subplot()
        axes.bar(histogram["watch_ratio"], histogram["len"], width=0.01, color="#4C72B0")
        _rule_lines(axes, rule)
        axes.set(
            title="watch ratio (no durations in this log)", xlabel="watch ratio", ylabel="views"
        )
        axes.grid(alpha=0.3)
        section.absent(
            "This log has no video durations: the watch ratio (for a rating, rating / max) "
            f"is shown as one distribution, with the thresholds of the like rule {rule}."
        )
        section.body.append(figures.img("watch_ratio", figure, "watch ratio distribution"))
        return section
    edges = _duration_edges(data, rule)
    quantiles = (0.1, 0.25, 0.5, 0.75, 0.9)
    buckets = (
        data.big.filter(
            pl.col("watch_ratio").is_not_null() & pl.col("video_duration").is_not_null()
        )
        .with_columns(_bucket(rule, edges))
        .group_by("bucket")
        .agg(
            pl.len().alias("views"),
            pl.col("video_duration").median().alias("duration"),
            *(pl.col("watch_ratio").quantile(q).alias(f"q{q}") for q in quantiles),
            pl.col("watch_ratio").mean().alias("mean"),
        )
        .sort("bucket")
        .collect(engine="streaming")
    )
    seconds = buckets["duration"].to_numpy() / 1000.0
    figure = Figure(figsize=(WIDTH, 4.2))
    axes = figure.add_subplot()
    axes.fill_between(seconds, buckets["q0.1"], buckets["q0.9"], alpha=0.15, color="#4C72B0",
                      label="p10-p90")  # fmt: skip
    axes.fill_between(seconds, buckets["q0.25"], buckets["q0.75"], alpha=0.3, color="#4C72B0",
                      label="p25-p75")  # fmt: skip
    axes.plot(seconds, buckets["q0.5"], color="#4C72B0", marker=".", label="median")
    axes.plot(seconds, buckets["mean"], color="#4C72B0", ls=":", label="mean")
    if rule.kind == "duration":
        at = buckets["bucket"].to_numpy()
        axes.step(seconds, np.asarray(rule.like_thresholds)[at], where="mid", color="#55A868",
                  lw=2, label=f"like threshold ({rule})")  # fmt: skip
        axes.step(seconds, np.asarray(rule.dislike_thresholds)[at], where="mid", color="#C44E52",
                  lw=1.5, ls="--", label="dislike threshold")  # fmt: skip
    else:
        _rule_lines(axes, rule)
    _seconds_axis(axes)
    axes.set_ylim(0, max(3.0, float(buckets["q0.9"].max() or 0) * 1.05))
    axes.set(xlabel="video duration (s, median of the bucket; log scale)", ylabel="watch ratio",
             title="watch ratio by video duration")  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    section.note(
        f"{len(buckets)} log-spaced duration buckets of big_matrix views. Like rule {rule}"
        + (
            ": a view is liked when its watch ratio reaches its bucket's threshold, fitted "
            "here on every big_matrix view (a run fits it on its own training views)."
            if rule.kind == "duration"
            else "."
        )
    )
    section.body.append(figures.img("watch_ratio", figure, "watch ratio by duration"))
    return section


def _rule_lines(axes, rule: LikeRule) -> None:
    if rule.kind == "threshold":
        vertical = axes.axvline if axes.get_xlabel() == "watch ratio" else axes.axhline
        vertical(rule.threshold, color="#55A868", lw=2, label=f"like threshold ({rule})")
        vertical(rule.dislike_threshold, color="#C44E52", ls="--", label="dislike threshold")
        axes.legend(fontsize=8)


def lorenz(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Lorenz curve (share of items, share of views, least viewed first) and Gini index."""
    ordered = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(ordered)
    if n == 0 or ordered.sum() == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.0
    cumulative = np.concatenate([[0.0], np.cumsum(ordered) / ordered.sum()])
    items = np.arange(n + 1) / n
    gini = 1.0 - float(np.sum(cumulative[1:] + cumulative[:-1]) / n)
    return items, cumulative, gini


def popularity_section(data: Dataset, figures: _Figures) -> tuple[Section, pl.DataFrame]:
    section = Section("popularity")
    per_video = data.big.group_by("video_id").len().collect(engine="streaming")
    counts = per_video["len"].to_numpy()
    items, share, gini = lorenz(counts)
    ordered = np.sort(counts)[::-1]
    top = {p: ordered[: max(1, math.ceil(len(ordered) * p))].sum() / ordered.sum()
           for p in (0.01, 0.1, 0.2)}  # fmt: skip
    figure = Figure(figsize=(WIDTH + 3, 4.0))
    left, right = figure.subplots(1, 2)
    left.plot(items, share, color="#4C72B0", label=f"views (Gini {gini:.3f})")
    left.plot([0, 1], [0, 1], color="#888888", ls="--", label="equal popularity")
    left.set(xlabel="share of videos (least viewed first)", ylabel="share of views",
             title="Lorenz curve")  # fmt: skip
    left.legend(fontsize=8)
    right.loglog(np.arange(1, len(ordered) + 1), ordered, color="#DD8452")
    right.set(xlabel="video rank by views", ylabel="views", title="views per video (log-log)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
    section.note(
        f"Views per video over big_matrix ({len(counts):,} videos with a view). Gini "
        f"{gini:.3f}; the most-viewed 1% of videos hold {top[0.01]:.1%} of the views, the "
        f"top 10% {top[0.1]:.1%}, the top 20% {top[0.2]:.1%}."
    )
    section.body.append(figures.img("popularity", figure, "popularity curve"))
    return section, per_video


def _day(data: Dataset) -> pl.Expr:
    """The day of a view: KuaiRec's date label where there is one, else its local day."""
    local = ((pl.col("timestamp") + data.utc_offset_s) // DAY_S).cast(pl.Int64)
    if not data.kuairec:
        return local.alias("day")
    label = pl.col("date").cast(pl.String).str.to_date("%Y%m%d", strict=False).cast(pl.Int64)
    return pl.coalesce(label, local).alias("day")


def _log_histogram(axes, values: np.ndarray, color: str, label: str) -> None:
    values = values[values > 0]
    if len(values) == 0:
        return
    bins = np.unique(np.geomspace(1, max(values.max(), 2), 40).round())
    axes.hist(values, bins=bins, color=color, alpha=0.8, label=label)
    axes.set_xscale("log")


def activity_section(data: Dataset, figures: _Figures) -> Section:
    section = Section("activity")
    per_user = data.big.group_by("user_id").len().collect(engine="streaming")["len"].to_numpy()
    figure = Figure(figsize=(WIDTH + 3, 3.8))
    left, right = figure.subplots(1, 2)
    _log_histogram(left, per_user, "#4C72B0", "big_matrix")
    left.axvline(np.median(per_user), color="#222222", ls="--",
                 label=f"median {np.median(per_user):,.0f}")  # fmt: skip
    left.set(xlabel="views per user (log scale)", ylabel="users", title="views per user")
    left.legend(fontsize=8)
    rows = [["views per user", *_quartiles(per_user)]]
    if data.has_times:
        per_day = (
            data.big.filter(pl.col("timestamp").is_not_null() | pl.col("date").is_not_null())
            .group_by("user_id", _day(data))
            .len()
            .collect(engine="streaming")["len"]
            .to_numpy()
        )
        _log_histogram(right, per_day, "#55A868", "big_matrix")
        if len(per_day):
            right.axvline(np.median(per_day), color="#222222", ls="--",
                          label=f"median {np.median(per_day):,.0f}")  # fmt: skip
            right.legend(fontsize=8)
        right.set(xlabel="views per user-day (log scale)", ylabel="user-days",
                  title="views per user-day")  # fmt: skip
        rows.append(["views per user-day", *_quartiles(per_day)])
        day_kind = "date label (Beijing day)" if data.kuairec else "UTC day of the timestamp"
        section.note(f"big_matrix; a user-day is a user's views on one {day_kind}.")
    else:
        right.set_axis_off()
        right.text(0.5, 0.5, "no times in this log:\nno user-days", ha="center", va="center")
        section.absent(
            "This log has no times (only the order of each user's views): views per user-day "
            "cannot be counted."
        )
    for axes in (left, right):
        axes.grid(alpha=0.3)
    section.body.append(figures.img("activity", figure, "views per user and per user-day"))
    section.body.append(_table(["", "p25", "median", "p75", "mean", "max"], rows))
    return section


def _quartiles(values: np.ndarray) -> list[str]:
    if len(values) == 0:
        return ["-"] * 5
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return [f"{p25:,.0f}", f"{p50:,.0f}", f"{p75:,.0f}", f"{values.mean():,.1f}",
            f"{values.max():,.0f}"]  # fmt: skip


def like_rate_section(
    data: Dataset, present: dict[str, int], rule: LikeRule, figures: _Figures
) -> Section:
    section = Section("like-rate")
    if rule.kind == "all":
        section.absent(
            "Like rule `all`: every view counts as liked (the log has no watch ratio, rating or "
            "label), so like rates are 100% everywhere and are not drawn."
        )
        return section
    labelled = _with_labels(data, rule)
    panels = []
    if present["video_duration"]:
        edges = rule.bucket_edges if rule.kind == "duration" else _duration_edges(data, rule)
        frame = labelled if rule.kind == "duration" else labelled.with_columns(_bucket(rule, edges))
        by_bucket = (
            frame.filter(pl.col("video_duration").is_not_null())
            .group_by("bucket")
            .agg(
                pl.col("video_duration").median().alias("duration"),
                pl.col("liked").mean().alias("liked"),
                pl.col("disliked").mean().alias("disliked"),
                (pl.col("watch_ratio") >= LikeRule(kind="threshold").threshold)
                .mean()
                .alias("fixed"),
                pl.len().alias("views"),
            )
            .sort("bucket")
            .collect(engine="streaming")
        )
        panels.append("duration")
    else:
        section.absent("This log has no video durations: like rate by duration is not drawn.")
    per_video = (
        labelled.group_by("video_id")
        .agg(
            pl.col("liked").sum().alias("liked"),
            pl.col("disliked").sum().alias("disliked"),
            pl.len().alias("views"),
        )  # fmt: skip
        .collect(engine="streaming")
    )
    overall = per_video["liked"].sum() / max(per_video["views"].sum(), 1)
    by_category = None
    if data.names is not None and data.names.height:
        by_category = (
            per_video.join(data.names, on="video_id", how="inner")
            .group_by("category")
            .agg(pl.col("liked").sum(), pl.col("disliked").sum(), pl.col("views").sum())
            .with_columns(
                (pl.col("liked") / pl.col("views")).alias("like_rate"),
                (pl.col("disliked") / pl.col("views")).alias("dislike_rate"),
            )
            .sort("views", descending=True)
            .head(TOP_CATEGORIES)
        )
        panels.append("category")
    else:
        section.absent("This log names no categories or tags: like rate by category is not drawn.")
    if not panels:
        return section
    figure = Figure(figsize=(WIDTH + 3, 4.6))
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(axes_list, panels, strict=True):
        if panel == "duration":
            seconds = by_bucket["duration"].to_numpy() / 1000.0
            axes.plot(seconds, by_bucket["liked"], marker=".", color="#55A868", label="liked")
            axes.plot(seconds, by_bucket["disliked"], marker=".", color="#C44E52",
                      label="disliked")  # fmt: skip
            if rule.kind == "duration":
                axes.plot(seconds, by_bucket["fixed"], ls=":", color="#555555",
                          label="liked by threshold:0.7 (for comparison)")  # fmt: skip
            axes.set_ylim(0, 1)
            _seconds_axis(axes)
            axes.set(xlabel="video duration (s, bucket median; log scale)",
                     ylabel="share of views", title="like rate by duration bucket")  # fmt: skip
            axes.legend(fontsize=8)
        else:
            ordered = by_category.sort("views")
            positions = np.arange(ordered.height)
            axes.barh(positions, ordered["like_rate"], color="#55A868", label="liked")
            axes.barh(positions, -ordered["dislike_rate"], color="#C44E52", label="disliked")
            axes.set_yticks(positions, [_plain(_shorten(str(c), 24)) for c in ordered["category"]],
                            fontsize=8, fontfamily=_font_family())  # fmt: skip
            axes.axvline(overall, color="#222222", ls="--", lw=1, label="overall like rate")
            axes.set(xlabel="share of views (disliked to the left)",
                     title=f"by category (top {ordered.height} by views)")  # fmt: skip
            axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    section.note(
        f"Like rule {rule}; {overall:.1%} of the judged big_matrix views are liked. Categories: "
        f"{data.category_source}; a video in several categories counts in each."
    )
    section.body.append(figures.img("like_rate", figure, "like rate by duration and category"))
    return section


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def timeline_section(data: Dataset, figures: _Figures) -> Section:
    section = Section("timeline")
    if not data.has_times:
        section.absent("This log has no times (only the order of each user's views): no timeline.")
        return section
    offset = data.utc_offset_s
    figure = Figure(figsize=(WIDTH + 3, 3.8))
    axes = figure.add_subplot()
    first_day = None
    matrices = [("big_matrix", data.big)]
    if data.small is not None:
        matrices.append(("small_matrix", data.small))
    for (name, frame), color in zip(matrices, ("#4C72B0", "#DD8452"), strict=False):
        days = (
            frame.filter(pl.col("timestamp").is_not_null())
            .group_by(((pl.col("timestamp") + offset) // DAY_S).cast(pl.Int64).alias("day"))
            .agg(pl.len().alias("views"), pl.col("user_id").n_unique().alias("users"))
            .sort("day")
            .collect(engine="streaming")
        )
        if days.height == 0:
            continue
        first_day = days["day"][0] if first_day is None else first_day
        dates = days["day"].cast(pl.Date)
        axes.plot(dates.to_numpy(), days["views"], color=color, label=f"{name} views")
        axes.plot(dates.to_numpy(), days["users"], color=color, ls=":",
                  label=f"{name} active users")  # fmt: skip
    axes.set(ylabel="per day", title="views and active users per day (from timestamps)")
    axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.autofmt_xdate()
    zone = "Beijing time (UTC+8)" if data.kuairec else "UTC"
    section.note(
        f"Days of the timestamps in {zone}. KuaiRec's date labels are log partitions: a few "
        "timestamps fall outside them (a skewed device clock)."
        if data.kuairec
        else f"Days of the timestamps in {zone}."
    )
    section.body.append(figures.img("timeline", figure, "views over the days"))
    return section


def first_occurrences_sorted(path: Path) -> np.ndarray:
    """True on the first occurrence of each distinct row of a Parquet table, as
    `shortrec.data.dataset.first_occurrences` (two streamed 64-bit row hashes), found by
    sorting the hashes instead of hashing them again: a third of the memory at full scale."""
    row = pl.struct(pl.all())
    hashes = (
        pl.scan_parquet(path)
        .select(a=row.hash(seed=1), b=row.hash(seed=2))
        .collect(engine="streaming")
    )
    a, b = hashes["a"].to_numpy(), hashes["b"].to_numpy()
    del hashes
    order = np.lexsort((b, a))  # stable: equal rows together, earliest first
    a, b = a[order], b[order]
    repeat = (a[1:] == a[:-1]) & (b[1:] == b[:-1])
    first = np.ones(len(order), dtype=bool)
    first[order[1:][repeat]] = False
    return first


def calibration_section(data: Dataset, figures: _Figures) -> Section:
    """Every row `shortrec.data.calibration` checks, computed on the prepared tables."""
    from shortrec.data import calibration

    section = Section("calibration")
    if not data.kuairec or data.small is None:
        section.absent(
            "Not a KuaiRec-format release (an imported log): there are no published KuaiRec "
            "statistics to compare with."
        )
        return section
    big_path = data.directory / data.manifest["files"]["big_matrix"]["parquet"]
    big = data.big.collect()
    stats = calibration.release_stats(
        big, data.small.collect(), dedup=big.filter(first_occurrences_sorted(big_path))
    )
    del big
    release_dir = data.manifest.get("release_dir")
    if release_dir and Path(release_dir).is_dir():
        stats.update(calibration._world_sizes(Path(release_dir)))
    missing = [t.label for t in calibration.TARGETS if t.key not in stats]
    stats.update({t.key: float("nan") for t in calibration.TARGETS if t.key not in stats})
    checks = calibration.calibrate(data.directory, stats)
    passed = sum(c.passed for c in checks if c.checked)
    checked = sum(c.checked for c in checks)
    section.body.append(figures.img("calibration", calibration_figure(checks), "calibration rows"))
    section.note(
        f"{passed} of {checked} checked statistics within tolerance. Each bar is the "
        "difference from the real release's statistic as a share of its tolerance (inside "
        "the band passes); rows marked reported are shown, not checked. Size targets are "
        "scaled to this release's users and videos."
    )
    if missing:
        section.absent(f"Not computable from the prepared tables: {', '.join(missing)}.")
    rows = []
    for check in checks:
        verdict = "reported" if not check.checked else ("pass" if check.passed else "FAIL")
        rows.append([
            check.target.label, calibration._number(check.expected),
            calibration._number(check.actual), calibration._difference_text(check),
            calibration._tolerance(check.target) if check.checked else "-", verdict,
        ])  # fmt: skip
    section.body.append(
        _table(["statistic", "real KuaiRec", "this release", "diff", "tolerance", "check"], rows)
    )
    return section


def calibration_figure(checks: list) -> Figure:
    """One horizontal bar per calibration row: difference / tolerance, the ±1 band passes."""
    labels, values, colors = [], [], []
    for check in checks:
        difference = check.difference
        if check.checked and check.target.tolerance:
            value = difference / check.target.tolerance
        else:  # reported rows, and a zero tolerance: the relative difference itself
            value = check.relative_difference if np.isfinite(check.relative_difference) else 0
        if not np.isfinite(value):
            value = 0.0
        labels.append(_shorten(check.target.label, 52))
        values.append(float(np.clip(value, -3, 3)))
        colors.append(
            "#999999" if not check.checked else ("#55A868" if check.passed else "#C44E52")
        )
    figure = Figure(figsize=(WIDTH + 1, 0.24 * len(checks) + 1.2))
    axes = figure.add_subplot()
    positions = np.arange(len(checks))[::-1]
    axes.barh(positions, values, color=colors)
    axes.axvspan(-1, 1, color="#55A868", alpha=0.08)
    axes.axvline(0, color="#222222", lw=0.8)
    axes.set_yticks(positions, labels, fontsize=7)
    axes.set_xlim(-3.1, 3.1)
    axes.set(xlabel="difference / tolerance (|x| <= 1 passes; clipped at ±3; grey: reported, "
             "relative difference)", title="calibration against KuaiRec 2.0")  # fmt: skip
    axes.grid(axis="x", alpha=0.3)
    return figure


# --- the page ----------------------------------------------------------------------------


def _page_paths(out: Path) -> tuple[Path, str]:
    """`out` is a folder (index.html and the PNGs in it) or an .html file (PNGs beside it,
    named after it)."""
    if out.suffix.lower() in (".html", ".htm"):
        return out, f"{out.stem}_"
    return out / "index.html", ""


def write_data_report(
    data_dir: str | Path, out: str | Path, like_rule: LikeRule | None = None
) -> Path:
    """Write the data report of the prepared folder `data_dir` to `out` (a folder: index.html
    and the PNGs; or a .html path: the PNGs beside it). `like_rule` defaults to what a run on
    this data uses by default. Returns the HTML path."""
    data_dir, out = Path(data_dir), Path(out)
    if not (data_dir / MANIFEST_FILE).is_file() and not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such folder")
    data = _open(data_dir)
    html_path, prefix = _page_paths(out)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    figures = _Figures(html_path.parent, prefix)
    present = _columns_present(data.big)
    rows = data.manifest["files"]["big_matrix"]["rows"]
    rule = like_rule or default_like_rule(data.manifest)
    if rule.kind == "duration" and not present["video_duration"]:
        # No durations to bucket by: the fixed threshold (the seed project's 0.7).
        rule = LikeRule(kind="threshold") if present["watch_ratio"] else LikeRule(kind="all")
    if rule.kind != "all" and not present["watch_ratio"]:
        rule = LikeRule(kind="all")
    rule = _fit_rule(data, rule)
    popularity, _ = popularity_section(data, figures)
    sections = [
        overview_section(data, present, rows, rule),
        watch_ratio_section(data, present, rule, figures),
        popularity,
        activity_section(data, figures),
        like_rate_section(data, present, rule, figures),
        timeline_section(data, figures),
        calibration_section(data, figures),
    ]
    template = Template(resources.files("shortrec.report").joinpath("template.html").read_text())
    page = template.substitute(
        title=f"shortrec data report: {_escape(data_dir.name)}",
        subtitle=_escape(
            f"{data_dir} · {rows:,} views · generated {time.strftime('%Y-%m-%d %H:%M')}"
        ),
        nav="".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS.items()),
        sections="\n".join(s.html() for s in sections),
    )
    atomic_write_text(html_path, page)
    return html_path

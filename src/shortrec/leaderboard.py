"""Runs side by side: means with 95% intervals and paired differences against a baseline.

Only comparable runs share a table: the same data, protocol and like rule (a rule decides what
counts as relevant, so NDCG under `threshold:0.7` and under `duration:0.8` are different
quantities). Each group gets its own table, and pairing never crosses groups.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Group
from rich.table import Table

from shortrec.evaluation.statistics import PairedComparison, format_interval, paired_comparison
from shortrec.runs import Run, RunConfig, as_run, list_runs

SHOWN_METRICS = ("ndcg@10", "graded_ndcg@10", "recall@20")
# `--simulation`: the feed simulation's per-user metrics (shortrec.simulation), with the
# offline ndcg@10 of the same users beside them.
SIMULATION_SHOWN = ("watch_seconds", "session_length", "liked_share", "categories")


def _paired_on_users(
    run_a: Run, run_b: Run, on: str, metric: str, on_b: str | None = None
) -> PairedComparison:
    a = run_a.per_user(on)
    b = run_b.per_user(on_b or on)
    joined = a.select("user_id", metric).join(
        b.select("user_id", metric), on="user_id", suffix="_b", how="inner"
    )
    if joined.height == 0:
        raise ValueError(f"{run_a.path} and {run_b.path} share no evaluated users on {on}")
    return paired_comparison(metric, joined[metric].to_numpy(), joined[f"{metric}_b"].to_numpy())


def compare_runs(
    run_a: Run | Path, run_b: Run | Path, on: str, metrics: list[str]
) -> list[PairedComparison]:
    """Paired differences B - A; refused for runs on other data, protocol or like rule."""
    run_a, run_b = as_run(run_a), as_run(run_b)
    a, b = run_a.config.comparable_key, run_b.config.comparable_key
    if a != b:
        what = [
            n for n, x, y in zip(("data", "protocol", "like rule"), a, b, strict=True) if x != y
        ]
        raise ValueError(
            f"{run_a.path} and {run_b.path} differ in {', '.join(what)} ({a} vs {b}); their "
            "metrics measure different things and cannot be paired"
        )
    return [_paired_on_users(run_a, run_b, on, m) for m in metrics]


def leaderboard_rows(runs_dir: str | Path, on: str, metric: str, baseline: str) -> list[dict]:
    """One row per run evaluated on `on`: its latest run per (model, comparable group) wins.
    Rows are sorted by group, then by `metric`; each is paired with its group's baseline."""
    latest: dict[tuple, tuple[Run, RunConfig, dict]] = {}
    for run in list_runs(runs_dir):
        metrics = run.metrics
        if on not in metrics:
            continue
        config = run.config
        latest[(config.display_name, config.comparable_key)] = (run, config, metrics)
    if not latest:
        raise ValueError(
            f"no run in {runs_dir} has a {on!r} evaluation; train with --test or run "
            f"`shortrec evaluate RUN --on {on.split(':')[0]}`"
        )
    baselines = {
        group: run_dir for (model, group), (run_dir, _, _) in latest.items() if model == baseline
    }
    rows = []
    for (model, group), (run_dir, config, metrics) in latest.items():
        result = metrics[on]
        row = {
            "model": model,
            "run": run_dir.name,
            "group": group,
            "data": Path(config.experiment.data_dir).name,
            "protocol": config.experiment.protocol,
            "like_rule": str(config.experiment.like_rule),
            "liked_share": result["aggregate"].get("liked_share"),
            "nan_scores": int(result["aggregate"].get("nan_scores", 0)),
            "mode": result["mode"],
            "users": int(result["aggregate"].get("users", 0)),
            "summary": result["summary"],
            "coverage@10": result["aggregate"].get("coverage@10"),
            "train_seconds": metrics.get("train_seconds"),
            "offline": metrics.get(on.removeprefix("simulation_").split("-")[0], {}).get(
                "summary", {}
            ),
            "paired": None,
        }
        base = baselines.get(group)
        if base is not None and base != run_dir:
            row["paired"] = _paired_on_users(base, run_dir, on, metric)
        rows.append(row)
    rows.sort(
        key=lambda r: (r["group"], -r["summary"].get(metric, {"mean": float("-inf")})["mean"])
    )
    return rows


FRAME_COLUMNS = ("model", "run", "data", "protocol", "like_rule", "mode", "users",
                 "liked_share", "coverage@10", "train_seconds")  # fmt: skip


def leaderboard_frame(runs_dir: str | Path, on: str, metric: str, baseline: str) -> pl.DataFrame:
    """`leaderboard_rows` as a polars frame (the table `shortrec leaderboard` prints): every
    summary metric's mean with its interval (`M`, `M_low`, `M_high`), the paired difference
    against `baseline` (`delta`, `delta_low`, `delta_high`, `p_value`), one row per run."""
    records = []
    for row in leaderboard_rows(runs_dir, on, metric, baseline):
        record = {k: row[k] for k in FRAME_COLUMNS}
        for name, value in row["summary"].items():
            record |= {name: value["mean"], f"{name}_low": value["low"],
                       f"{name}_high": value["high"]}  # fmt: skip
        paired = row["paired"]
        record |= {
            "delta": None if paired is None else paired.difference.mean,
            "delta_low": None if paired is None else paired.difference.low,
            "delta_high": None if paired is None else paired.difference.high,
            "p_value": None if paired is None else paired.p_value,
        }
        records.append(record)
    return pl.DataFrame(records, infer_schema_length=None)


def _groups(rows: list[dict]) -> list[list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    return list(groups.values())


def _group_title(rows: list[dict]) -> str:
    first = rows[0]
    share = first["liked_share"]
    liked = "" if share is None else f", {share:.0%} of judged views liked"
    return f"{first['data']} · {first['protocol']} · like rule {first['like_rule']}{liked}"


def _interval(summary: dict, metric: str) -> str:
    return format_interval(summary.get(metric))


def leaderboard_table(
    runs_dir: str | Path, on: str, metric: str, baseline: str, simulation: bool = False
) -> Group | Table:
    """One rich table per comparable group (data, protocol, like rule). With `simulation`,
    `on` is a set (tune/test) and the table shows the feed simulation of that set, sorted by
    `metric`, beside each run's offline ndcg@10."""
    if simulation:
        return _simulation_table(runs_dir, on, metric, baseline)
    tables = []
    for rows in _groups(leaderboard_rows(runs_dir, on, metric, baseline)):
        modes = ", ".join(sorted({r["mode"] for r in rows}))
        table = Table(
            title=f"leaderboard on {on} ({modes}), sorted by {metric}\n{_group_title(rows)}"
        )
        for column in ("model", "like rule", "users", *SHOWN_METRICS, "coverage@10",
                       f"Δ{metric} vs {baseline}", "train s"):  # fmt: skip
            table.add_column(column)
        for r in rows:
            p = r["paired"]
            paired = "-" if p is None else f"{p.difference} p={p.p_value:.1g}"
            coverage = "-" if r["coverage@10"] is None else f"{r['coverage@10']:.3f}"
            seconds = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}"
            name = r["model"] + (f" ({r['nan_scores']} NaN scores)" if r["nan_scores"] else "")
            table.add_row(
                name, r["like_rule"], str(r["users"]),
                *(_interval(r["summary"], m) for m in SHOWN_METRICS), coverage, paired, seconds,
            )  # fmt: skip
        tables.append(table)
    return Group(*tables)


def simulation_rows(runs_dir: str | Path, on: str, metric: str, baseline: str) -> list[dict]:
    """Leaderboard rows of the feed simulations of the `on` users (key `simulation_<on>`),
    sorted by `metric`, each with the run's offline `on` summary ("offline") and, when the run
    was also simulated without live events (`simulation_<on>-static`), that summary
    ("static") and the paired difference live minus static ("live_vs_static")."""
    key = f"simulation_{on}"
    try:
        rows = leaderboard_rows(runs_dir, key, metric, baseline)
    except ValueError:
        raise ValueError(
            f"no run in {runs_dir} was simulated on {on}; run `shortrec simulate RUN --users {on}`"
        ) from None
    static = f"{key}-static"
    for row in rows:
        run_dir = Run(Path(runs_dir) / row["run"])
        result = run_dir.metrics.get(static)
        row["static"] = result["summary"] if result else None
        row["live_vs_static"] = (
            _paired_on_users(run_dir, run_dir, static, metric, key) if result else None
        )
    return rows


def simulation_header(on: str, metric: str, baseline: str) -> list[str]:
    return ["model", "users", *SIMULATION_SHOWN, f"Δ{metric} vs {baseline}",
            f"{metric} without live events", f"Δ{metric} live - without",
            f"offline {on} ndcg@10"]  # fmt: skip


def simulation_cells(row: dict, metric: str) -> list[str]:
    def paired(p: PairedComparison | None) -> str:
        return "-" if p is None else f"{p.difference} p={p.p_value:.1g}"

    return [
        row["model"], str(row["users"]), *(_interval(row["summary"], m) for m in SIMULATION_SHOWN),
        paired(row["paired"]), "-" if row["static"] is None else _interval(row["static"], metric),
        paired(row["live_vs_static"]), _interval(row["offline"], "ndcg@10"),
    ]  # fmt: skip


def _simulation_table(runs_dir: str | Path, on: str, metric: str, baseline: str) -> Table:
    table = Table(title=f"feed simulation of the {on} users, sorted by {metric}")
    for column in simulation_header(on, metric, baseline):
        table.add_column(column)
    for row in simulation_rows(runs_dir, on, metric, baseline):
        table.add_row(*simulation_cells(row, metric))
    return table


def leaderboard_markdown(runs_dir: str | Path, on: str, metric: str, baseline: str) -> str:
    """The same tables as Markdown, for README and reports."""
    header = ["model", "mode", "like rule", "users", *SHOWN_METRICS,
              f"Δ{metric} vs {baseline} [95% CI]", "p", "train s"]  # fmt: skip
    lines = []
    for rows in _groups(leaderboard_rows(runs_dir, on, metric, baseline)):
        lines += ["", f"**{_group_title(rows)}**", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [_markdown_row(r) for r in rows]
    return "\n".join(lines).strip()


def _markdown_row(r: dict) -> str:
    p = r["paired"]
    cells = [
        r["model"], r["mode"], r["like_rule"], str(r["users"]),
        *(_interval(r["summary"], m) for m in SHOWN_METRICS),
        "-" if p is None else str(p.difference), "-" if p is None else f"{p.p_value:.1g}",
        "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def simulation_markdown(runs_dir: str | Path, on: str, metric: str, baseline: str) -> str:
    """The `--simulation` table as Markdown, for README and reports."""
    header = simulation_header(on, metric, baseline)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in simulation_rows(runs_dir, on, metric, baseline):
        lines.append("| " + " | ".join(simulation_cells(row, metric)) + " |")
    return "\n".join(lines)

"""Runs side by side: means with 95% intervals and paired differences against a baseline.

Only comparable runs share a table: the same data, protocol and like rule (a rule decides what
counts as relevant, so NDCG under `threshold:0.7` and under `duration:0.8` are different
quantities). Each group gets its own table, and pairing never crosses groups.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table

from shortrec.evaluation.statistics import PairedComparison, format_interval, paired_comparison
from shortrec.runs import RunConfig, list_runs, per_user_metrics, read_metrics

SHOWN_METRICS = ("ndcg@10", "graded_ndcg@10", "recall@20")
# `--simulation`: the feed simulation's per-user metrics (shortrec.simulation), with the
# offline ndcg@10 of the same users beside them.
SIMULATION_SHOWN = ("watch_seconds", "session_length", "liked_share", "categories")


def _paired_on_users(
    run_a: Path, run_b: Path, on: str, metric: str, on_b: str | None = None
) -> PairedComparison:
    a = per_user_metrics(run_a, on)
    b = per_user_metrics(run_b, on_b or on)
    joined = a.select("user_id", metric).join(
        b.select("user_id", metric), on="user_id", suffix="_b", how="inner"
    )
    if joined.height == 0:
        raise ValueError(f"{run_a} and {run_b} share no evaluated users on {on}")
    return paired_comparison(metric, joined[metric].to_numpy(), joined[f"{metric}_b"].to_numpy())


def _config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    return RunConfig.from_json(path.read_text())


def compare_runs(run_a: Path, run_b: Path, on: str, metrics: list[str]) -> list[PairedComparison]:
    """Paired differences B - A; refused for runs on other data, protocol or like rule."""
    a, b = _config(run_a).comparable_key, _config(run_b).comparable_key
    if a != b:
        what = [
            n for n, x, y in zip(("data", "protocol", "like rule"), a, b, strict=True) if x != y
        ]
        raise ValueError(
            f"{run_a} and {run_b} differ in {', '.join(what)} ({a} vs {b}); their metrics "
            "measure different things and cannot be paired"
        )
    return [_paired_on_users(Path(run_a), Path(run_b), on, m) for m in metrics]


def leaderboard_rows(runs_dir: str | Path, on: str, metric: str, baseline: str) -> list[dict]:
    """One row per run evaluated on `on`: its latest run per (model, comparable group) wins.
    Rows are sorted by group, then by `metric`; each is paired with its group's baseline."""
    latest: dict[tuple, tuple[Path, RunConfig, dict]] = {}
    for run_dir in list_runs(runs_dir):
        metrics = read_metrics(run_dir)
        if on not in metrics:
            continue
        config = RunConfig.from_json((run_dir / "config.json").read_text())
        latest[(config.display_name, config.comparable_key)] = (run_dir, config, metrics)
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
            "data": Path(config.data_dir).name,
            "protocol": config.protocol,
            "like_rule": str(config.like_rule),
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
        run_dir = Path(runs_dir) / row["run"]
        result = read_metrics(run_dir).get(static)
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

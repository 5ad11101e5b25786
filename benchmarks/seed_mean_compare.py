"""Paired comparison of two settings of a stochastic model, each the per-user mean over runs that
differ only in `--seed` (README, "Checked again on the stop-25 generator"):

    python benchmarks/seed_mean_compare.py --on tune \
        --a runs/tt-s0/* runs/tt-s1/* runs/tt-s2/* \
        --b runs/tt-lr-s0/* runs/tt-lr-s1/* runs/tt-lr-s2/*

Each side's per-user metric is averaged over its runs (users every run judged), then B minus A is
bootstrapped over users as `shortrec compare` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from shortrec.evaluation.statistics import paired_comparison


def seed_mean(runs: list[Path], on: str, metric: str) -> pl.DataFrame:
    """Per-user mean of `metric` over the runs' `per_user_{on}.parquet`, users all runs share."""
    frames = []
    for index, run in enumerate(runs):
        path = run / f"per_user_{on}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no per-user {on} metrics (trained without --{on}?)")
        frames.append(pl.read_parquet(path).select("user_id", pl.col(metric).alias(f"r{index}")))
    joined = frames[0]
    for frame in frames[1:]:
        joined = joined.join(frame, on="user_id")
    columns = [f"r{index}" for index in range(len(runs))]
    return joined.select("user_id", pl.mean_horizontal(columns).alias(metric)).sort("user_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="Run folders of A.")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="Run folders of B.")
    parser.add_argument("--on", default="tune", choices=("tune", "test"))
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()
    a = seed_mean(args.a, args.on, args.metric)
    b = seed_mean(args.b, args.on, args.metric)
    both = a.join(b, on="user_id", suffix="_b")
    result = paired_comparison(
        args.metric, both[args.metric].to_numpy(), both[f"{args.metric}_b"].to_numpy()
    )
    interval = result.difference
    print(
        f"{args.metric} ({args.on}, {both.height} users): A {both[args.metric].mean():.4f} "
        f"({len(args.a)} runs), B {both[f'{args.metric}_b'].mean():.4f} ({len(args.b)} runs), "
        f"B-A {interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}] "
        f"p={result.p_value:.2g}"
    )


if __name__ == "__main__":
    main()

"""ALS on Spark vs ALS on `implicit`: test quality and training time side by side.

Both engines train `shortrec train als` with the same hyperparameters on the same split of a
prepared release (KuaiRec protocol), are evaluated by the same code (full ranking, test set
opened once per run), and are compared per user (paired bootstrap interval and Wilcoxon p of
Spark minus implicit). Popularity is trained alongside as the floor. Spark's time is the whole
fit: starting the session (a JVM), shipping the views and collecting the factors included. Wall
time depends on what else the machine runs, so CPU seconds are printed too: this process and
its children (Spark's JVM) in all threads, for the whole run (fit, save, test evaluation).

    shortrec data synth --out data/full/raw --scale full --seed 0
    shortrec data prepare data/full/raw --out data/full/prepared
    python benchmarks/als_spark.py --data data/full/prepared [--spark-master local[*]]
"""

from __future__ import annotations

import argparse
import os

import psutil

from shortrec.leaderboard import compare_runs
from shortrec.runs import Run, RunConfig, load_data, split_for, train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/full/prepared")
    parser.add_argument("--runs-dir", default="runs/als-spark")
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_data(args.data)
    split = split_for(data, "kuairec")
    print(f"{args.data}: {split.summary()}; {os.cpu_count()} cores")
    als = {"factors": args.factors, "iterations": args.iterations}
    variants = {
        "popular": ("popular", {}),
        "als (implicit)": ("als", {**als, "engine": "implicit"}),
        "als (spark)": ("als", {**als, "engine": "spark", "spark_master": args.spark_master}),
    }
    runs, cpu = {}, {}
    for label, (model, params) in variants.items():
        config = RunConfig.build(model, args.data, params, seed=args.seed)
        started = _cpu_seconds()
        runs[label] = train_run(
            config, args.runs_dir, evaluate_on=("test",), split=split, progress=False
        )
        cpu[label] = _cpu_seconds() - started
        metrics = Run(runs[label]).metrics
        ndcg = metrics["test"]["summary"]["ndcg@10"]
        print(
            f"{label:15s} test ndcg@10 {ndcg['mean']:.4f} [{ndcg['low']:.4f}, {ndcg['high']:.4f}]"
            f" ({ndcg['n']} users); fit {metrics['train_seconds']:7.1f} s wall; run "
            f"{cpu[label]:7.1f} s CPU  ({runs[label].name})",
            flush=True,
        )
    for base in ("als (implicit)", "popular"):
        (paired,) = compare_runs(runs[base], runs["als (spark)"], "test", ["ndcg@10"])
        d = paired.difference
        print(
            f"spark - {base:14s}: ndcg@10 {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], "
            f"p={paired.p_value:.2g} (spark better for {paired.b_better} users, "
            f"worse for {paired.a_better}, ties {paired.ties})"
        )
    implicit_s = Run(runs["als (implicit)"]).metrics["train_seconds"]
    spark_s = Run(runs["als (spark)"]).metrics["train_seconds"]
    spark_cpu = cpu["als (spark)"] / cpu["als (implicit)"]
    print(
        f"spark / implicit on master {args.spark_master}: fit wall {spark_s / implicit_s:.1f}x, "
        f"run CPU {spark_cpu:.1f}x"
    )


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children, all threads."""
    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in (me, *me.children(recursive=True)))


if __name__ == "__main__":
    main()

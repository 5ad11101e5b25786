"""How fast and how lean is `shortrec data prepare` on a full-size big_matrix.csv?

Compares, on the same file and in the same run, a plain pandas pipeline (read_csv, drop `time`,
dates to int, drop null user ids, to_parquet) with our `prepare` (streaming parse, validation,
duplicate/null counts, content hashes, manifest). Each side runs in its own subprocess so its
peak RSS is its own.

    python benchmarks/prepare_speed.py                 # generates a 12.5M-row CSV first
    python benchmarks/prepare_speed.py --csv "KuaiRec 2.0/data/big_matrix.csv"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

FULL_ROWS = 12_530_806
N_USERS, N_VIDEOS = 7_176, 10_728
DUPLICATE_SHARE = 0.077  # exact duplicate rows in the real big_matrix


def generate_big_matrix(path: Path, rows: int, seed: int = 0) -> None:
    """Write a big_matrix-shaped CSV (same columns, formats, duplicate share) with numpy."""
    rng = np.random.default_rng(seed)
    unique_rows = int(rows / (1 + DUPLICATE_SHARE))
    video_duration_of = np.maximum(
        140, rng.lognormal(np.log(9_600), 0.6, N_VIDEOS).astype(np.int64)
    )
    user_id = rng.integers(0, N_USERS, unique_rows)
    video_id = rng.zipf(1.3, unique_rows) % N_VIDEOS
    video_duration = video_duration_of[video_id]
    watch_ratio = rng.lognormal(np.log(0.72), 0.9, unique_rows)
    play_duration = (watch_ratio * video_duration).astype(np.int64)
    watch_ratio = np.round(play_duration / video_duration, 6)
    timestamp = np.round(rng.uniform(1_593_878_903, 1_599_321_443, unique_rows), 3)
    frame = pl.DataFrame(
        {
            "user_id": user_id,
            "video_id": video_id,
            "play_duration": play_duration,
            "video_duration": video_duration,
            "timestamp": timestamp,
            "watch_ratio": watch_ratio,
        }
    )
    duplicates = frame.sample(rows - unique_rows, with_replacement=True, seed=seed)
    local = (
        pl.from_epoch((pl.col("timestamp") * 1000).cast(pl.Int64), time_unit="ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("Asia/Shanghai")
    )
    frame = (
        pl.concat([frame, duplicates])
        .sort("user_id", "timestamp")
        .with_columns(
            time=local.dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
            date=local.dt.strftime("%Y%m%d").cast(pl.Int64),
        )
        .select(
            "user_id",
            "video_id",
            "play_duration",
            "video_duration",
            "time",
            "date",
            "timestamp",
            "watch_ratio",
        )  # fmt: skip
    )
    frame.write_csv(path)


def run_pandas(csv: Path, out: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(csv)
    frame = frame.drop(columns="time").dropna(subset=["user_id"])
    frame["date"] = frame["date"].astype("Int32")
    frame.to_parquet(out / "big_matrix.parquet")


def run_shortrec(csv: Path, out: Path) -> None:
    from shortrec.data.prepare import prepare

    raw = out / "raw"
    raw.mkdir()
    (raw / "big_matrix.csv").symlink_to(csv.resolve())
    header = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"
    (raw / "small_matrix.csv").write_text(header + "0,1,500,1000,,,,0.5\n")
    (raw / "item_categories.csv").write_text("video_id,feat\n1,[8]\n")
    prepare(raw, out / "cache", force=True)


def child(mode: str, csv: Path, out: Path) -> None:
    start = time.perf_counter()
    {"pandas": run_pandas, "shortrec": run_shortrec}[mode](csv, out)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime
    peak_rss_bytes = usage.ru_maxrss * 1024  # Linux reports KiB
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_bytes": peak_rss_bytes}
        )
    )


def measure(mode: str, csv: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"prepare-{mode}-") as out:
        result = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--csv", str(csv), "--out", out],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, help="an existing big_matrix.csv to use")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="rows to generate")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate runs; the fastest of each is kept"
    )
    parser.add_argument("--child", choices=["pandas", "shortrec"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.csv, args.out)
        return

    csv = args.csv
    if csv is None:
        csv = args.workdir / f"shortrec_bench_big_matrix_{args.rows}.csv"
        if not csv.exists():
            start = time.perf_counter()
            generate_big_matrix(csv, args.rows)
            print(f"generated {csv} in {time.perf_counter() - start:.1f} s")
    size_mib = csv.stat().st_size / 2**20
    print(f"input: {csv} ({size_mib:,.0f} MiB); load average {os.getloadavg()[0]:.1f}")
    runs: dict[str, list[dict[str, float]]] = {"shortrec": [], "pandas": []}
    for _ in range(args.repeat):  # alternate, so a burst of load hits both sides alike
        for mode, results in runs.items():
            results.append(measure(mode, csv))
    ours = min(runs["shortrec"], key=lambda result: result["seconds"])
    baseline = min(runs["pandas"], key=lambda result: result["seconds"])
    for name, result in (("pandas baseline", baseline), ("shortrec prepare", ours)):
        print(
            f"{name:17s} {result['seconds']:7.1f} s wall  {result['cpu_seconds']:7.1f} s CPU  "
            f"peak RSS {result['peak_rss_bytes'] / 2**30:5.2f} GiB"
        )
    print(f"speedup (pandas time / shortrec time): {baseline['seconds'] / ours['seconds']:.1f}x")
    print(
        f"CPU-time ratio (pandas / shortrec): {baseline['cpu_seconds'] / ours['cpu_seconds']:.1f}x"
    )
    print(
        "peak memory ratio (shortrec / pandas): "
        f"{ours['peak_rss_bytes'] / baseline['peak_rss_bytes']:.2f}"
    )


if __name__ == "__main__":
    main()

"""Does `shortrec data prepare` keep its memory flat as the log grows?

Takes the full-scale synthetic world (12.5M-row big_matrix, every side file), makes releases
whose big_matrix is 2x and 4x as long (the 1x log repeated with user ids shifted past the last
one, so every copy is a new set of users with the same habits), and runs the real command,
`shortrec data prepare RAW --out OUT --force`, on each in its own process. Prints that process's
peak RSS, wall and CPU time. Streaming parse, streaming checks and duplicate counting in
bounded hash partitions should give the same peak at 4x as at 1x.

The inputs are made in a separate process too: a child's peak RSS counts the pages it shares
with its parent at fork, so a parent that had just written a 4 GB CSV would inflate it.

    shortrec data synth --out /tmp/full/raw --scale full --seed 0 --no-calibration
    python benchmarks/prepare_memory.py --world /tmp/full/raw --workdir /tmp/prepare-memory
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

SCALES = (1, 2, 4)


def scaled_release(world: Path, workdir: Path, scale: int) -> Path:
    """A release folder whose big_matrix.csv is `scale` copies of the world's, user ids shifted;
    the other files are links to the world's."""
    raw = workdir / f"raw-{scale}x"
    raw.mkdir(parents=True, exist_ok=True)
    for source in world.iterdir():
        if source.name != "big_matrix.csv" and not (raw / source.name).exists():
            (raw / source.name).symlink_to(source.resolve())
    big = raw / "big_matrix.csv"
    if big.exists():
        return raw
    if scale == 1:
        big.symlink_to((world / "big_matrix.csv").resolve())
        return raw
    text = pl.scan_csv(world / "big_matrix.csv", infer_schema=False)  # every field kept verbatim
    users = text.select(pl.col("user_id").cast(pl.Int64).max()).collect().item() + 1
    copies = [
        text.with_columns((pl.col("user_id").cast(pl.Int64) + copy * users).cast(pl.String))
        for copy in range(scale)
    ]
    tmp = big.with_suffix(".tmp")
    pl.concat(copies).sink_csv(tmp)
    os.replace(tmp, big)
    return raw


def measure(raw: Path, out: Path) -> dict[str, float]:
    """Run the real command in a child process; its own peak RSS comes from wait4."""
    command = [sys.executable, "-m", "shortrec.cli", "data", "prepare", str(raw),
               "--out", str(out), "--force", "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prepare failed on {raw}")
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
    }


def make_input(world: Path, workdir: Path, scale: int) -> Path:
    """`scaled_release` in a child process (see the module docstring)."""
    command = [sys.executable, __file__, "--world", str(world), "--workdir", str(workdir),
               "--make", str(scale)]  # fmt: skip
    subprocess.run(command, check=True)
    return workdir / f"raw-{scale}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("/tmp/full/raw"),
                        help="a full-scale release (shortrec data synth --scale full)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prepare-memory"))
    parser.add_argument("--scales", type=int, nargs="+", default=list(SCALES))
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs")
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        scaled_release(args.world, args.workdir, args.make)
        return
    if not (args.world / "big_matrix.csv").is_file():
        raise SystemExit(
            f"{args.world}: no big_matrix.csv; make the world first with "
            f"`shortrec data synth --out {args.world} --scale full --seed 0`"
        )
    print(f"world: {args.world}; load average {os.getloadavg()[0]:.1f}")
    peaks = {}
    for scale in args.scales:
        raw = make_input(args.world, args.workdir, scale)
        out = args.workdir / f"prepared-{scale}x"
        result = measure(raw, out)
        manifest = json.loads((out / "manifest.json").read_text())
        rows = manifest["files"]["big_matrix"]["rows"]
        peaks[scale] = result["peak_rss_bytes"]
        shutil.rmtree(out)
        mib = result["peak_rss_bytes"] / 2**20
        print(
            f"{scale}x  big_matrix {rows:>11,} rows  {result['seconds']:6.1f} s wall  "
            f"{result['cpu_seconds']:6.1f} s CPU  peak RSS {mib:6.0f} MiB"
        )
    largest, smallest = max(peaks), min(peaks)
    print(f"peak at {largest}x / peak at {smallest}x: {peaks[largest] / peaks[smallest]:.2f}")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

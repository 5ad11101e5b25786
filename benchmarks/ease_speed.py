"""EASE at full KuaiRec scale: fit time and peak memory, against the textbook implementation.

Each measurement runs in its own process (peak RSS is per process):
  data      generate the views and build the sparse matrix only (the memory floor);
  shortrec  `EASERecommender.fit` on the views (syrk gram in float32 blocks, in-place Cholesky);
  textbook  the paper's recipe on the same matrix: dense float64 X, G = X^T X, np.linalg.inv.
The views come from benchmarks/als_speed.py's generator (big_matrix's shape and density).

    python benchmarks/ease_speed.py [--l2 500] [--skip-textbook]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _child(kind: str, l2: float) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from als_speed import synthetic_views

    from shortrec.data.histories import IdMap
    from shortrec.data.labels import LikeRule
    from shortrec.models.base import TrainingData
    from shortrec.models.ease import EASERecommender

    views = synthetic_views()
    # Every view a row entry and BLAS's own threads: the textbook version's work.
    model = EASERecommender(l2=l2, signal="views", num_threads=0)
    fit_s = fit_cpu_s = float("nan")
    if kind == "shortrec":
        data = TrainingData.build(views, like_rule=LikeRule(kind="threshold"))
        del views
        started, cpu = time.perf_counter(), time.process_time()
        model.fit(data)
        fit_s, fit_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    else:
        matrix = model.views_matrix(
            views, IdMap.from_ids(views["user_id"]), IdMap.from_ids(views["video_id"])
        )
        del views
        if kind == "textbook":
            started, cpu = time.perf_counter(), time.process_time()
            dense = matrix.toarray().astype(np.float64)
            gram = dense.T @ dense
            gram[np.diag_indices_from(gram)] += l2
            precision = np.linalg.inv(gram)
            weights = precision / -np.diag(precision)
            np.fill_diagonal(weights, 0.0)
            fit_s, fit_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "peak_gb": peak_gb}


def _measure(kind: str, l2: float) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--l2", str(l2)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l2", type=float, default=500.0)
    parser.add_argument("--skip-textbook", action="store_true")
    parser.add_argument("--child", choices=("data", "shortrec", "textbook"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.l2)))
        return

    kinds = ["data", "shortrec"] + ([] if args.skip_textbook else ["textbook"])
    results = {kind: _measure(kind, args.l2) for kind in kinds}
    print("EASE on 7,176 users x 10,728 videos (~10.3M distinct pairs), l2 =", args.l2)
    floor = results["data"]["peak_gb"]
    print(f"data only (floor)  : peak RSS {floor:6.2f} GB")
    ours = results["shortrec"]
    print(
        f"shortrec EASE fit  : {ours['fit_s']:7.1f} s wall, {ours['fit_cpu_s']:7.1f} s CPU, "
        f"peak RSS {ours['peak_gb']:6.2f} GB ({ours['peak_gb'] - floor:+.2f} GB over the floor)"
    )
    if "textbook" in results:
        book = results["textbook"]
        print(
            f"textbook EASE      : {book['fit_s']:7.1f} s wall, {book['fit_cpu_s']:7.1f} s CPU, "
            f"peak RSS {book['peak_gb']:6.2f} GB"
        )
        print(
            f"shortrec / textbook: wall {ours['fit_s'] / book['fit_s']:.2f}x, "
            f"CPU {ours['fit_cpu_s'] / book['fit_cpu_s']:.2f}x, "
            f"peak memory {ours['peak_gb'] / book['peak_gb']:.2f}x"
        )
    print("under 16 GB:", "yes" if ours["peak_gb"] < 16 else "NO")


if __name__ == "__main__":
    main()

"""ALS at full KuaiRec scale: seconds per iteration of `implicit` alone vs our wrapper.

The views are generated (no dataset needed) with big_matrix's shape: 7,176 users x 10,728
videos, 12.5M views of which ~10.3M distinct pairs, with skewed user activity and video
popularity. The baseline is implicit's own `fit` on a ready-made confidence matrix; the wrapper
is `ALSRecommender.fit` on the raw views frame, so its time includes mapping raw ids, merging
repeated views and building that matrix.

    python benchmarks/als_speed.py [--iterations 5] [--factors 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import polars as pl

N_USERS, N_VIDEOS, N_VIEWS = 7_176, 10_728, 12_500_000


def _draw(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn with probability proportional to `weights` (inverse CDF)."""
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)


def synthetic_views(
    n_users: int = N_USERS, n_videos: int = N_VIDEOS, n_views: int = N_VIEWS, seed: int = 0
) -> pl.DataFrame:
    """Views with lognormal user activity and video popularity; the skews are chosen so that
    12.5M views give ~10.3M distinct pairs, as in big_matrix. Raw ids are scattered, not 0..n."""
    rng = np.random.default_rng(seed)
    user_ids = np.sort(rng.choice(10 * n_users, n_users, replace=False))
    video_ids = np.sort(rng.choice(10 * n_videos, n_videos, replace=False))
    users = _draw(rng.lognormal(0.0, 0.55, n_users), n_views, rng)
    videos = _draw(rng.lognormal(0.0, 0.9, n_videos), n_views, rng)
    return pl.DataFrame(
        {
            "user_id": user_ids[users],
            "video_id": video_ids[videos],
            "watch_ratio": rng.lognormal(-0.3, 0.8, n_views),
            "timestamp": rng.uniform(1.593e9, 1.599e9, n_views),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from shortrec.data.histories import IdMap
    from shortrec.data.labels import LikeRule
    from shortrec.models.als import ALSRecommender
    from shortrec.models.base import TrainingData

    started = time.perf_counter()
    views = synthetic_views()
    n_pairs = views.select(pl.struct("user_id", "video_id").n_unique()).item()
    print(
        f"generated {views.height:,} views, {n_pairs:,} distinct pairs, "
        f"{N_USERS:,} users x {N_VIDEOS:,} videos in {time.perf_counter() - started:.1f}s"
    )
    threads = os.cpu_count() or 1
    # Every view a positive and implicit's threads for both fits: the same work on both sides.
    model = ALSRecommender(
        factors=args.factors, iterations=args.iterations, signal="views", num_threads=threads
    )
    data = TrainingData.build(views, like_rule=LikeRule(kind="threshold"))

    # Baseline: implicit's fit alone, on the confidence matrix built beforehand (not timed).
    def build_matrix():
        users, videos = IdMap.from_ids(views["user_id"]), IdMap.from_ids(views["video_id"])
        return model.views_matrix(views, users, videos)

    confidence = model.confidences(build_matrix())

    def fit_library() -> None:
        with threadpool_limits(1, "blas"):
            AlternatingLeastSquares(
                factors=args.factors,
                regularization=model.regularization,
                alpha=1.0,
                iterations=args.iterations,
                num_threads=threads,
                random_state=0,
            ).fit(confidence, show_progress=False)

    # Alternate the two fits and keep each one's best run: the machine may be shared.
    timings: dict[str, list[tuple[float, float]]] = {"library": [], "wrapper": [], "build": []}
    for _ in range(args.repeats):
        timings["library"].append(_timed(fit_library))
        timings["wrapper"].append(_timed(lambda: model.fit(data)))
        timings["build"].append(_timed(build_matrix))
    (library_s, library_cpu), (wrapper_s, wrapper_cpu), (build_s, build_cpu) = (
        min(timings[name]) for name in ("library", "wrapper", "build")
    )

    n = args.iterations
    print(
        f"threads: {threads}; factors: {args.factors}; iterations: {n}; "
        f"best of {args.repeats} runs (wall s, CPU s in all threads)"
    )
    print(
        f"implicit fit alone        : {library_s:7.2f} s wall ({library_s / n:.2f} s/iteration), "
        f"{library_cpu:7.2f} s CPU"
    )
    print(
        f"shortrec ALS fit (wrapper): {wrapper_s:7.2f} s wall ({wrapper_s / n:.2f} s/iteration), "
        f"{wrapper_cpu:7.2f} s CPU"
    )
    print(f"  ids + matrix building   : {build_s:7.2f} s wall, {build_cpu:7.2f} s CPU")
    print(
        f"wrapper / implicit        : {wrapper_s / library_s:7.3f}x wall "
        f"(overhead {wrapper_s - library_s:+.2f} s), {wrapper_cpu / library_cpu:.3f}x CPU"
    )
    print(
        f"at the default 15 iterations the overhead would be about "
        f"{100 * build_s / (library_s / n * 15):.1f}% of implicit's fit"
    )


def _timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all the process's threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


if __name__ == "__main__":
    main()

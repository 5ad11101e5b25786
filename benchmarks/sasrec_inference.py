"""SASRec full-ranking inference at KuaiRec scale on the CPU.

7,176 users x 10,728 videos, random histories of ~1,700 views each (12.2M views, as in
big_matrix), maxlen 50, hidden 50, 2 blocks. Measures `SASRec.score` for every user over
every video (the work of a full-ranking evaluation), and `recommend` top-50 with seen videos
excluded. Baseline in the same run: the same scoring done one user at a time (what a naive
per-user loop over `Histories.views_of` costs), on a sample of users, extrapolated.
Target: full scoring under 15 s.

    python benchmarks/sasrec_inference.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
import torch

from shortrec.data.histories import Histories
from shortrec.models.base import FitContext, TrainingData
from shortrec.models.recommend import recommend
from shortrec.models.sasrec import SASRec
from shortrec.training.memory import peak_rss_mb

N_USERS, N_VIDEOS, MEAN_VIEWS = 7_176, 10_728, 1_700


def random_histories(seed: int = 0) -> Histories:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(MEAN_VIEWS // 2, MEAN_VIEWS * 3 // 2, N_USERS)
    users = np.repeat(np.arange(N_USERS), lengths)
    return Histories.from_frame(
        pl.DataFrame(
            {
                "user_id": users,
                "video_id": rng.integers(0, N_VIDEOS, len(users)),
                "watch_ratio": rng.random(len(users)),
                "timestamp": np.arange(len(users), dtype=np.float64),
            }
        )
    )


def untrained_model(threads: int) -> SASRec:
    """Random weights score as fast as trained ones: fit for zero epochs on every video."""
    videos = np.arange(N_VIDEOS)
    frame = pl.DataFrame({"user_id": np.repeat([0, 1], len(videos)),
                          "video_id": np.tile(videos, 2),
                          "timestamp": np.arange(2 * len(videos), dtype=np.float64),
                          "watch_ratio": np.ones(2 * len(videos))})  # fmt: skip
    model = SASRec(epochs=0, device="cpu", num_threads=threads)
    return model.fit(TrainingData.build(frame), FitContext(progress=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline-users", type=int, default=200)
    args = parser.parse_args()
    tick = time.perf_counter()
    histories = random_histories()
    built = time.perf_counter() - tick
    print(f"histories: {len(histories):,} users, {len(histories.video_ids):,} views "
          f"(built in {built:.1f} s); torch threads {args.threads}")  # fmt: skip
    model = untrained_model(args.threads)
    users, videos = histories.user_ids, np.arange(N_VIDEOS)

    tick, cpu = time.perf_counter(), time.process_time()
    scores = model.score(users, videos, histories)
    score_s, score_cpu = time.perf_counter() - tick, time.process_time() - cpu
    assert scores.shape == (N_USERS, N_VIDEOS) and np.isfinite(scores).all()
    del scores

    tick = time.perf_counter()
    top = recommend(model, users, histories, videos, k=50, exclude_seen=True)
    recommend_s = time.perf_counter() - tick
    assert top.height == N_USERS * 50

    sample = users[: args.baseline_users]
    tick = time.perf_counter()
    with torch.inference_mode():
        for user in sample:  # the naive baseline: one user per call
            model.score(np.array([user]), videos, histories)
    per_user_s = (time.perf_counter() - tick) / len(sample) * N_USERS

    print(f"score all users x all videos: {score_s:.2f} s wall ({score_cpu:.2f} s CPU), "
          f"{N_USERS / score_s:,.0f} users/s (target < 15 s)")  # fmt: skip
    print(f"recommend top-50, seen excluded: {recommend_s:.2f} s")
    print(f"baseline, one user per call: {per_user_s:.1f} s extrapolated from {len(sample)} "
          f"users; batched is {per_user_s / score_s:.1f}x faster")  # fmt: skip
    print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()

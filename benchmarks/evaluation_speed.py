"""Full-ranking evaluation speed: 7,176 users x 10,728 videos from a score matrix.

Target: under 10 s for all metrics at K in (10, 20, 50), MRR, popularity and coverage.
Baseline measured in the same run: a straightforward NumPy implementation that sorts every
user's full score row (np.argsort) and computes NDCG@10 / recall@20 per user in a Python loop
(what evaluation scripts commonly do).

    python benchmarks/evaluation_speed.py [--users 7176] [--videos 10728]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
import torch

from shortrec.data.labels import LikeRule
from shortrec.data.splits import Split
from shortrec.evaluation.protocol import evaluate
from shortrec.models.base import Recommender


class MatrixScores(Recommender):
    """Serves rows of a precomputed score matrix (the benchmark measures evaluation only)."""

    name = "matrix"

    def __init__(self, users: np.ndarray, scores: np.ndarray) -> None:
        self.users, self.scores = users, scores

    def score(self, user_ids, video_ids, histories):
        return self.scores[np.searchsorted(self.users, user_ids)]


def naive_loop(scores: np.ndarray, relevance: np.ndarray) -> tuple[float, float]:
    ndcg, recall = [], []
    discounts = 1 / np.log2(np.arange(2, 12))
    for u in range(scores.shape[0]):
        order = np.argsort(-scores[u])
        rel = relevance[u]
        n_rel = rel.sum()
        if n_rel == 0:
            continue
        hits10 = rel[order[:10]]
        ideal = discounts[: min(n_rel, 10)].sum()
        ndcg.append((hits10 * discounts).sum() / ideal)
        recall.append(rel[order[:20]].sum() / n_rel)
    return float(np.mean(ndcg)), float(np.mean(recall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=7176)
    parser.add_argument("--videos", type=int, default=10728)
    parser.add_argument("--density", type=float, default=0.05, help="target views per cell")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    users = np.arange(args.users, dtype=np.int64)
    videos = np.arange(args.videos, dtype=np.int64)
    scores = rng.standard_normal((args.users, args.videos), dtype=np.float32)
    mask = rng.random((args.users, args.videos)) < args.density
    u, v = np.nonzero(mask)
    wr = rng.gamma(2.0, 0.45, len(u))
    targets = pl.DataFrame(
        {"user_id": u.astype(np.int64), "video_id": v.astype(np.int64), "watch_ratio": wr,
         "video_duration": np.full(len(u), 10_000), "timestamp": np.zeros(len(u))}
    )  # fmt: skip
    empty = targets.head(0)
    split = Split("bench", empty, empty, empty, targets, empty, empty, videos)
    rule = LikeRule.parse("threshold:0.7")

    started = time.perf_counter()
    result = evaluate(MatrixScores(users, scores), split, "test", rule, progress=False)
    ours = time.perf_counter() - started

    relevance = np.zeros((args.users, args.videos), dtype=bool)
    relevance[u, v] = wr >= 0.7
    started = time.perf_counter()
    ndcg, recall = naive_loop(scores, relevance)
    baseline = time.perf_counter() - started

    ours_ndcg = result.summary["ndcg@10"].mean
    print(f"{args.users} users x {args.videos} videos, {len(u):,} target views")
    print(f"shortrec evaluate (all metrics, K=10/20/50, bootstrap CIs): {ours:.2f} s")
    print(f"baseline argsort + Python loop (NDCG@10, recall@20 only):   {baseline:.2f} s")
    print(f"speed-up: {baseline / ours:.1f}x; target < 10 s: {'met' if ours < 10 else 'MISSED'}")
    print(f"check: NDCG@10 ours {ours_ndcg:.5f} vs baseline {ndcg:.5f}")


if __name__ == "__main__":
    main()

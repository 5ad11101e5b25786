"""Ranking metrics per user, computed from a dense score matrix in one vectorised pass.

Ties are broken by a seeded random permutation of the candidates, never by candidate order: a
model that gives every video the same score must score like random, not like "the first
videos in the file". Users without any relevant candidate get NaN (excluded from means).
"""

from __future__ import annotations

import numpy as np
import torch


def _topk_with_random_ties(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Column indices of the k best scores per row; equal scores are ordered at random."""
    perm = rng.permutation(scores.shape[1])
    permuted = torch.from_numpy(np.ascontiguousarray(scores[:, perm]))
    _, top_in_perm = torch.topk(permuted, k=min(k, scores.shape[1]), dim=1, sorted=True)
    return perm[top_in_perm.numpy()]


def full_ranking_metrics(
    scores: np.ndarray,
    relevance: np.ndarray,
    gains: np.ndarray | None = None,
    ks: tuple[int, ...] = (10, 20, 50),
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-user metrics for a (users x candidates) score matrix.

    `relevance` (bool, same shape) marks the liked candidates; `gains` (float, same shape,
    >= 0) grade them for graded NDCG. Excluded candidates (already seen) must carry -inf
    scores. Returns ({metric name: per-user array}, top-max(k) candidate indices per user).
    """
    scores = np.asarray(scores, dtype=np.float32)
    relevance = np.asarray(relevance, dtype=bool)
    n_candidates = scores.shape[1]
    kmax = min(max(ks), n_candidates)
    top = _topk_with_random_ties(scores, kmax, np.random.default_rng(seed))
    hits = np.take_along_axis(relevance, top, axis=1).astype(np.float64)  # (users, kmax)
    n_relevant = np.count_nonzero(relevance, axis=1).astype(np.float64)
    has_relevant = n_relevant > 0
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal_dcg_by_count = np.concatenate([[1.0], np.cumsum(discounts)])
    ranks = np.arange(1, kmax + 1)
    out: dict[str, np.ndarray] = {}
    if gains is not None:
        gains = np.asarray(gains, dtype=np.float32)
        top_gains = np.take_along_axis(gains, top, axis=1).astype(np.float64)
        ideal_top = torch.topk(torch.from_numpy(gains), k=kmax, dim=1).values.numpy()

    cum_hits = hits.cumsum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            kk = min(k, kmax)
            h = hits[:, :kk]
            n_hits = cum_hits[:, kk - 1]
            dcg = h @ discounts[:kk]
            ideal_dcg = ideal_dcg_by_count[np.minimum(n_relevant, kk).astype(int)]
            out[f"ndcg@{k}"] = np.where(has_relevant, dcg / ideal_dcg, np.nan)
            out[f"precision@{k}"] = np.where(has_relevant, n_hits / k, np.nan)
            out[f"recall@{k}"] = np.where(has_relevant, n_hits / n_relevant, np.nan)
            out[f"hitrate@{k}"] = np.where(has_relevant, (n_hits > 0).astype(float), np.nan)
            ap = ((cum_hits[:, :kk] / ranks[:kk]) * h).sum(axis=1)
            out[f"map@{k}"] = np.where(has_relevant, ap / np.minimum(n_relevant, kk), np.nan)
            if gains is not None:
                graded = top_gains[:, :kk] @ discounts[:kk]
                ideal = ideal_top[:, :kk].astype(np.float64) @ discounts[:kk]
                out[f"graded_ndcg@{k}"] = np.where(ideal > 0, graded / ideal, np.nan)

        # MRR over the full ranking, with the expected rank of the first relevant candidate
        # under random tie-breaking: among r relevant and n other candidates tied at the best
        # relevant score, the first relevant one lands on average after n / (r + 1) others.
        best_relevant = np.where(relevance, scores, -np.inf).max(axis=1, keepdims=True)
        better = np.count_nonzero(scores > best_relevant, axis=1)
        tied = scores == best_relevant
        tied_relevant = np.count_nonzero(tied & relevance, axis=1)
        tied_other = np.count_nonzero(tied, axis=1) - tied_relevant
        expected_rank = 1.0 + better + tied_other / (tied_relevant + 1.0)
        out["mrr"] = np.where(has_relevant, 1.0 / expected_rank, np.nan)
    return out, top


def sampled_metrics(
    positive_scores: np.ndarray, negative_scores: np.ndarray, ks: tuple[int, ...] = (10,)
) -> dict[str, np.ndarray]:
    """The paper protocol: each positive ranked against its own sampled negatives.

    positive_scores: (n,), negative_scores: (n, n_negatives). Ties count half (expected rank).
    """
    pos = positive_scores[:, None]
    rank = (negative_scores > pos).sum(axis=1) + (negative_scores == pos).sum(axis=1) / 2.0
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = rank < k
        out[f"hitrate@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    out["mrr"] = 1.0 / (rank + 1.0)
    return out


def catalogue_coverage(top: np.ndarray, k: int, n_candidates: int) -> float:
    """Share of the candidate videos that appear in at least one user's top-k."""
    return float(len(np.unique(top[:, :k])) / n_candidates) if n_candidates else 0.0

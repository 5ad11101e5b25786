"""Ranking metrics per user, computed from a dense score matrix in one vectorised pass.

Ties are broken by a seeded random permutation of the candidates, never by candidate order: a
model that gives every video the same score must score like random, not like "the first
videos in the file". Users without any relevant candidate get NaN (excluded from means).
"""

from __future__ import annotations

import numpy as np
import torch


def _topk_with_random_ties(
    scores: torch.Tensor, k: int, generator: torch.Generator
) -> torch.Tensor:
    """Column indices of the k best scores per row; equal scores are ordered at random."""
    perm = torch.randperm(scores.shape[1], generator=generator)
    _, top_in_perm = torch.topk(scores[:, perm], k=min(k, scores.shape[1]), dim=1, sorted=True)
    return perm[top_in_perm]


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
    s = torch.as_tensor(np.ascontiguousarray(scores), dtype=torch.float32)
    rel = torch.as_tensor(np.ascontiguousarray(relevance), dtype=torch.bool)
    n_users, n_candidates = s.shape
    kmax = min(max(ks), n_candidates)
    generator = torch.Generator().manual_seed(seed)
    top = _topk_with_random_ties(s, kmax, generator)
    hits = torch.gather(rel, 1, top).float()  # (users, kmax)
    n_relevant = rel.sum(dim=1).float()
    has_relevant = n_relevant > 0
    nan = torch.tensor(float("nan"))
    discounts = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float32))
    ranks = torch.arange(1, kmax + 1, dtype=torch.float32)
    out: dict[str, torch.Tensor] = {}

    if gains is not None:
        g = torch.as_tensor(np.ascontiguousarray(gains), dtype=torch.float32)
        top_gains = torch.gather(g, 1, top)
        ideal_gains = torch.topk(g, k=kmax, dim=1).values

    cum_hits = hits.cumsum(dim=1)
    for k in ks:
        kk = min(k, kmax)
        h = hits[:, :kk]
        dcg = (h * discounts[:kk]).sum(dim=1)
        ideal_n = torch.clamp(n_relevant, max=kk).long()
        ideal_dcg = torch.cumsum(discounts[:kk], 0)[torch.clamp(ideal_n - 1, min=0)]
        out[f"ndcg@{k}"] = torch.where(has_relevant, dcg / ideal_dcg, nan)
        out[f"precision@{k}"] = torch.where(has_relevant, h.sum(dim=1) / k, nan)
        out[f"recall@{k}"] = torch.where(has_relevant, h.sum(dim=1) / n_relevant, nan)
        out[f"hitrate@{k}"] = torch.where(has_relevant, (h.sum(dim=1) > 0).float(), nan)
        precision_at_i = cum_hits[:, :kk] / ranks[:kk]
        ap = (precision_at_i * h).sum(dim=1) / torch.clamp(n_relevant, max=kk).clamp(min=1)
        out[f"map@{k}"] = torch.where(has_relevant, ap, nan)
        if gains is not None:
            graded = (top_gains[:, :kk] * discounts[:kk]).sum(dim=1)
            ideal = (ideal_gains[:, :kk] * discounts[:kk]).sum(dim=1)
            out[f"graded_ndcg@{k}"] = torch.where(ideal > 0, graded / ideal.clamp(min=1e-12), nan)

    # MRR over the full ranking, with the expected rank of the first relevant candidate under
    # random tie-breaking: among r relevant and n other candidates tied at the best relevant
    # score, the first relevant one lands on average after n / (r + 1) others.
    masked = torch.where(rel, s, torch.tensor(float("-inf")))
    best_relevant = masked.max(dim=1, keepdim=True).values
    better = (s > best_relevant).sum(dim=1).float()
    tied = s == best_relevant
    tied_other = (tied & ~rel).sum(dim=1).float()
    tied_relevant = (tied & rel).sum(dim=1).float()
    expected_rank = 1.0 + better + tied_other / (tied_relevant + 1.0)
    out["mrr"] = torch.where(has_relevant, 1.0 / expected_rank, nan)
    return {name: v.numpy().astype(np.float64) for name, v in out.items()}, top.numpy()


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

"""Next-item training objectives for sequence models, with disliked views as negatives.

Every objective takes the hidden states (batch, length, hidden) of right-padded sequences,
the next item at each position (`targets`, 0 on padding) and which of those next views were
disliked. Positions split into:

* positive positions - the next view was not disliked (or explicit negatives are off): the
  usual objective pulls the next item up;
* disliked positions - the user watched the next video and disliked it: there is no
  positive to learn, and the disliked video becomes an explicit negative for that context,
  weighted by `dislike_weight`. For "bce" that is binary cross-entropy with label 0 on its
  logit; for the softmax objectives it is unlikelihood, -log(1 - p(disliked)), with p over
  the same candidates the positive positions use (all items, or the sampled negatives), so
  both terms live on one scale.

Disliked views stay in the INPUT sequence (they were watched and say something about the
context); only their role as a prediction target changes. The loss is a mean over all
non-padding positions. Negatives are drawn uniformly on the model's device from a private
generator; a sampled negative that equals the position's target is masked out, and
`redraw_seen` redraws negatives the user has interacted with, as the paper's sampler does.

`batch_item_vectors` looks up every embedding a step needs (inputs, targets, negatives) in
ONE gather: each separate gather of a big item table costs a dense, zero-filled gradient of
the whole table in the backward pass, which dominated the CPU step time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

LOSSES = ("bce", "softmax", "sampled-softmax")


def draw_negatives(
    loss: str, targets: torch.Tensor, n_items: int, n_negatives: int, generator: torch.Generator
) -> torch.Tensor | None:
    """Uniform negatives (1-based ids): one per position for "bce" (batch, length),
    `n_negatives` per sequence for "sampled-softmax" (batch, n), none for "softmax"."""
    if loss == "bce":
        shape = targets.shape
    elif loss == "sampled-softmax":
        shape = (targets.shape[0], n_negatives)
    elif loss == "softmax":
        return None
    else:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    return torch.randint(1, n_items + 1, shape, generator=generator, device=targets.device)


def seen_keys(rows: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique keys row * (n_items + 1) + item of (sequence row, item) pairs."""
    return np.unique(np.asarray(rows, np.int64) * (n_items + 1) + np.asarray(items, np.int64))


def redraw_seen(
    negatives: torch.Tensor,
    rows: torch.Tensor,
    keys: torch.Tensor,
    n_items: int,
    generator: torch.Generator,
    rounds: int = 32,
) -> torch.Tensor:
    """Redraw each negative (1-based, (batch, ...)) whose (row, item) key is in `keys` (a
    sorted tensor from `seen_keys`) until none is; after `rounds` tries - a user who has seen
    nearly everything - a still-seen negative is returned as 0, which callers mask out."""
    row_key = rows.view(-1, *([1] * (negatives.dim() - 1))) * (n_items + 1)
    for _ in range(rounds):
        key = row_key + negatives
        found = keys[torch.searchsorted(keys, key).clamp(max=len(keys) - 1)] == key
        if not bool(found.any()):
            return negatives
        fresh = torch.randint(
            1, n_items + 1, negatives.shape, generator=generator, device=negatives.device
        )
        negatives = torch.where(found, fresh, negatives)
    key = row_key + negatives
    found = keys[torch.searchsorted(keys, key).clamp(max=len(keys) - 1)] == key
    return negatives.masked_fill(found, 0)


def batch_item_vectors(
    item_embedding: torch.Tensor, *ids: torch.Tensor | None
) -> list[torch.Tensor | None]:
    """Embeddings of several id tensors from one gather (None stays None)."""
    present = [t for t in ids if t is not None]
    flat = F.embedding(torch.cat([t.reshape(-1) for t in present]), item_embedding)
    parts = iter(flat.split([t.numel() for t in present]))
    return [None if t is None else next(parts).view(*t.shape, -1) for t in ids]


def next_item_loss(
    loss: str,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    target_vectors: torch.Tensor,
    negatives: torch.Tensor | None,
    negative_vectors: torch.Tensor | None,
    target_disliked: torch.Tensor,
    dislike_weight: float,
    item_embedding: torch.Tensor,
    positions_per_batch: float | None = None,
    target_unlabelled: torch.Tensor | None = None,
    sampled_weight: float = 1.0,
    target_offset: torch.Tensor | None = None,
    negative_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-item loss summed over the non-padding positions of a batch, divided by
    `positions_per_batch` (the epoch's average; default: this batch's own count).
    Positions in `target_unlabelled` (e.g. views neither liked nor disliked, when only likes
    are positives) get no positive or disliked term; "bce" still draws their negative,
    weighted `sampled_weight` (1: the paper; 0 learns only which shown videos are liked).

    A fixed divisor keeps every position's weight equal across batches: batches bucketed
    by length hold from ~100 to 6,400 positions, and dividing by each one's own count
    would weigh a position in a batch of short sequences up to 50x more.

    `target_offset` (shaped like `targets`) and `negative_offset` (like `negatives`) are
    added to the dot-product logits: a learned per-item bias, minus log q of the sampler
    (the logQ correction of Yi et al., RecSys 2019) when negatives are drawn by popularity."""
    valid = targets > 0
    disliked = target_disliked & valid
    positive = valid & ~disliked
    if target_unlabelled is not None:
        disliked = disliked & ~target_unlabelled
        positive = positive & ~target_unlabelled
    target_logit = (hidden * target_vectors).sum(-1)
    if target_offset is not None:
        target_logit = target_logit + target_offset
    if loss == "bce":
        negative_logit = (hidden * negative_vectors).sum(-1)
        if negative_offset is not None:
            negative_logit = negative_logit + negative_offset
        real_negative = valid & (negatives != targets) & (negatives > 0)
        total = (
            F.softplus(-target_logit)[positive].sum()
            + sampled_weight * F.softplus(negative_logit)[real_negative].sum()
            + dislike_weight * F.softplus(target_logit)[disliked].sum()
        )
    elif loss == "sampled-softmax":
        # Klenitskiy & Vasilev (RecSys 2023): negatives shared by a sequence's positions.
        negative_logits = torch.bmm(hidden, negative_vectors.transpose(1, 2))
        if negative_offset is not None:
            negative_logits = negative_logits + negative_offset[:, None, :]
        collision = (negatives[:, None, :] == targets[:, :, None]) | (negatives == 0)[:, None, :]
        negatives_lse = negative_logits.masked_fill(collision, float("-inf")).logsumexp(-1)
        all_lse = torch.logaddexp(negatives_lse, target_logit)
        total = (all_lse - target_logit)[positive].sum() + dislike_weight * F.softplus(
            target_logit - negatives_lse
        )[disliked].sum()
    elif loss == "softmax":
        total = _full_softmax(hidden, item_embedding, targets, positive, disliked, dislike_weight)
    else:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    if positions_per_batch is None:
        return total / valid.sum().clamp(min=1)
    return total / positions_per_batch


def _full_softmax(hidden, embedding, targets, positive, disliked, weight):
    """Cross-entropy over the whole catalogue, computed only at non-padding positions."""
    used = positive | disliked
    logits = hidden[used] @ embedding[1:].T  # (positions, n_items)
    target = targets[used] - 1
    is_positive = positive[used]
    total = F.cross_entropy(logits[is_positive], target[is_positive], reduction="sum")
    if bool(disliked.any()):
        bad = logits[~is_positive]
        bad_target = target[~is_positive]
        bad_logit = bad.gather(1, bad_target[:, None]).squeeze(1)
        others = bad.scatter(1, bad_target[:, None], float("-inf")).logsumexp(1)
        total = total + weight * F.softplus(bad_logit - others).sum()
    return total

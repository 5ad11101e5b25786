"""The SASRec network (Kang & McAuley, ICDM 2018) as one small PyTorch module.

A user's viewing sequence (dense item ids, 1-based, 0 = padding) goes through item plus
learned positional embeddings, `num_blocks` causal self-attention blocks and a final layer
norm; the hidden state at position t predicts the item at t + 1 by a dot product with the
(shared) item embedding table.

Sequences are RIGHT-padded: real items first, padding after. With causal attention a real
position never sees the padding that follows it, so no padding mask is needed, the fused
`is_causal` attention path applies, and a sequence scores the same alone or batched with
longer ones. Positions are counted from the END of each sequence (the newest item is
position 0), like the reference implementation, whose left-padded windows always put the
newest item in the last slot.

With `feedback_input`, each position also carries the outcome of that view (a code from
`training/sequences.py`: disliked, neither, liked), embedded and added to the item's
embedding, as HSTU interleaves actions with items: the context then says what the user
thought of what they watched, not only what the feed showed them.

With `history_summary`, the liked views OLDER than the attention window (a KuaiRec user has
~1,800 views; the window holds the newest `maxlen`) are averaged through their own
embedding table (as FISM pools a user's items) and added to every hidden state: a compact,
causal summary of long-term taste next to the recent window.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("original", "pre", "post")


@dataclass
class SASRecConfig:
    n_items: int
    maxlen: int = 50
    hidden_size: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    # "original": the paper's block, queries normalised, keys and values not, residual from
    # the normalised queries, layer norm before the feed-forward (q = LN(x);
    # x = LN(q + attn(q, x)); x + ffn(x)). "pre": x + f(LN(x)). "post": LN(x + f(x)).
    norm: str = "original"
    # Emulate the reference port's unmasked left padding: every query also attends to a
    # "null" key (the projection of a zero vector) counted maxlen - length times.
    attention_sink: bool = True
    # A linear layer after attention (the public PyTorch port's nn.MultiheadAttention has
    # one); the paper and the reference TensorFlow code have none: S = softmax(QK^T/sqrt d)V.
    attention_projection: bool = True
    # Embed each input view's feedback code beside its item (0 = padding).
    feedback_input: bool = False
    n_feedback: int = 4
    # Add a mean embedding of the liked views older than the window to every hidden state.
    history_summary: bool = False
    # A learned per-item score added to every logit, apart from the dot product.
    item_bias: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {self.norm!r}")


class FastDropout(nn.Module):
    """Inverted dropout from a uniform draw: on the CPU, torch's bernoulli-based dropout is
    about 4x slower than `rand` plus a comparison, and dropout runs five times per block."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = (
            nn.Linear(config.hidden_size, config.hidden_size)
            if config.attention_projection
            else nn.Identity()
        )

    def forward(
        self,
        x: torch.Tensor,
        keys_values: torch.Tensor | None = None,
        sink: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention of `x`; queries from `x`, keys and values from `keys_values`
        when given (the original SASRec block normalises only the queries)."""
        batch, length, hidden = x.shape
        if keys_values is None:
            q, k, v = self.qkv(x).split(hidden, dim=2)
        else:
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x, weight[:hidden], bias[:hidden])
            k, v = F.linear(keys_values, weight[hidden:], bias[hidden:]).split(hidden, dim=2)
        heads = (batch, length, self.num_heads, hidden // self.num_heads)
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        if sink is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            null_k, null_v = self.qkv.bias[hidden:].view(2, 1, self.num_heads, 1, -1)
            k = torch.cat([null_k.expand(batch, -1, 1, -1), k], dim=2)
            v = torch.cat([null_v.expand(batch, -1, 1, -1), v], dim=2)
            mask = _sink_and_causal_mask(sink.to(q.dtype), length)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, length, hidden))


def _sink_and_causal_mask(sink: torch.Tensor, length: int) -> torch.Tensor:
    """Additive mask (batch, 1, length, 1 + length): column 0 is the null key, weighted by
    `sink` (batch, 1, 1, 1) log-multiplicities; the rest is causal."""
    blocked = torch.ones(length, length, dtype=torch.bool, device=sink.device).triu(1)
    causal = torch.zeros(length, length, dtype=sink.dtype, device=sink.device)
    causal = causal.masked_fill(blocked, float("-inf"))
    batch = len(sink)
    return torch.cat([sink.expand(-1, 1, length, 1), causal.expand(batch, 1, -1, -1)], dim=3)


class PointWiseFeedForward(nn.Module):
    """The paper's two position-wise layers, both of width hidden_size."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            FastDropout(config.dropout),
            nn.Linear(config.hidden_size, config.hidden_size),
            FastDropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.norm = config.norm
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=1e-8)
        self.attention = CausalSelfAttention(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=1e-8)
        self.feed_forward = PointWiseFeedForward(config)

    def forward(self, x: torch.Tensor, sink: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm == "original":
            queries = self.attention_norm(x)
            x = self.feed_forward_norm(queries + self.attention(queries, x, sink))
            return x + self.feed_forward(x)
        if self.norm == "pre":
            x = x + self.attention(self.attention_norm(x), sink=sink)
            return x + self.feed_forward(self.feed_forward_norm(x))
        x = self.attention_norm(x + self.attention(x, sink=sink))
        return self.feed_forward_norm(x + self.feed_forward(x))


class SASRecNet(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.maxlen, config.hidden_size)
        self.feedback_embedding = (
            nn.Embedding(config.n_feedback, config.hidden_size, padding_idx=0)
            if config.feedback_input
            else None
        )
        self.embedding_dropout = FastDropout(config.dropout)
        self.summary_embedding = (
            nn.EmbeddingBag(config.n_items + 1, config.hidden_size, mode="mean", padding_idx=0)
            if config.history_summary
            else None
        )
        self.item_bias = (
            nn.Embedding(config.n_items + 1, 1, padding_idx=0) if config.item_bias else None
        )
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_blocks))
        # Post-norm blocks already end in a layer norm.
        self.final_norm = (
            nn.Identity() if config.norm == "post" else nn.LayerNorm(config.hidden_size, eps=1e-8)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights and zero biases, as the reference port initialises them."""
        for name, parameter in self.named_parameters():
            if parameter.dim() >= 2:
                nn.init.xavier_normal_(parameter)
            elif name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
            if self.feedback_embedding is not None:
                self.feedback_embedding.weight[0].zero_()
            if self.item_bias is not None:
                self.item_bias.weight.zero_()

    def forward(
        self,
        items: torch.Tensor,
        lengths: torch.Tensor,
        item_vectors: torch.Tensor | None = None,
        feedback: torch.Tensor | None = None,
        older: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Hidden states (batch, length, hidden) for right-padded `items` (batch, length)
        whose first `lengths` entries per row are real. `item_vectors` may carry their
        embeddings already looked up (training gathers all of a batch's items at once);
        `feedback` (batch, length) holds the views' feedback codes when the net reads them;
        `older` the (flat items, bag offsets) of the liked views before each window."""
        length = items.shape[1]
        offsets = torch.arange(length, device=items.device)
        from_end = (lengths[:, None] - 1 - offsets[None, :]).clamp(0, self.config.maxlen - 1)
        if item_vectors is None:
            item_vectors = self.item_embedding(items)
        if self.feedback_embedding is not None:
            if feedback is None:
                raise ValueError("this SASRec net reads feedback codes; pass `feedback`")
            item_vectors = item_vectors + self.feedback_embedding(feedback)
        x = item_vectors * math.sqrt(self.config.hidden_size)
        x = self.embedding_dropout(x + self.position_embedding(from_end))
        sink = None
        if self.config.attention_sink and bool((lengths < self.config.maxlen).any()):
            # log of the padding slots a maxlen window would hold: the port's multiplicity.
            slots = (self.config.maxlen - lengths).clamp(min=0).to(x.dtype)
            sink = torch.where(slots > 0, slots.log(), float("-inf"))[:, None, None, None]
        for block in self.blocks:
            x = block(x, sink)
        x = self.final_norm(x)
        if self.summary_embedding is not None:
            if older is None:
                raise ValueError("this SASRec net reads a history summary; pass `older`")
            x = x + self.summary_embedding(*older)[:, None, :]
        return x

    def last_hidden(
        self,
        items: torch.Tensor,
        lengths: torch.Tensor,
        feedback: torch.Tensor | None = None,
        older: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The hidden state after each sequence's newest item: (batch, hidden)."""
        hidden = self.forward(items, lengths, feedback=feedback, older=older)
        last = (lengths - 1).clamp(min=0)
        return hidden[torch.arange(len(items), device=items.device), last]

    def all_item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of items 1..n_items (column j is item j + 1) for hidden states (..., hidden)."""
        logits = hidden @ self.item_embedding.weight[1:].T
        if self.item_bias is not None:
            logits = logits + self.item_bias.weight[1:, 0]
        return logits

    def bias_of(self, items: torch.Tensor | None) -> torch.Tensor | None:
        """The learned per-item bias of `items` (None without an item bias or items)."""
        if self.item_bias is None or items is None:
            return None
        return self.item_bias.weight[:, 0][items]


class OneSequenceEncoder:
    """`SASRecNet.last_hidden` of ONE sequence, in NumPy: what a server computes per request.

    A feed answer scores one user. For a 50-view window the torch forward spends most of its
    time dispatching ~40 tiny ops: 0.35 ms warm, 0.8 ms in a server that sleeps between
    requests (`benchmarks/feed_warmth.py`). The same float32 arithmetic in NumPy costs 0.23
    and 0.50 ms, and the last block here computes only the newest position's query and
    feed-forward, the one hidden state scoring uses. It copies the eval net's weights once;
    build a new one after the net changes. Equal to the net within float32 rounding for every
    config (`tests/test_sasrec_encoder.py`).
    """

    def __init__(self, net: SASRecNet) -> None:
        config = net.config
        self.config = config
        weights = {name: value.detach().float().cpu().numpy() for name, value in
                   net.state_dict().items()}  # fmt: skip
        self.item_vectors = weights["item_embedding.weight"] * np.float32(
            math.sqrt(config.hidden_size)
        )
        if config.feedback_input:
            self.feedback_vectors = weights["feedback_embedding.weight"] * np.float32(
                math.sqrt(config.hidden_size)
            )
        self.positions = weights["position_embedding.weight"]
        self.summary = weights.get("summary_embedding.weight")
        self.blocks = [
            _NumpyBlock(weights, f"blocks.{b}.", config) for b in range(config.num_blocks)
        ]
        self.final_norm = (
            None
            if config.norm == "post"
            else (weights["final_norm.weight"], weights["final_norm.bias"])
        )

    def last_hidden(
        self,
        items: np.ndarray,
        feedback: np.ndarray | None = None,
        older_items: np.ndarray | None = None,
    ) -> np.ndarray:
        """Hidden state (hidden,) after the newest of `items` (1-based, oldest first, at most
        maxlen of them), with their feedback codes and the older views' items when the net
        reads them."""
        n = len(items)
        x = self.item_vectors[items]
        if self.config.feedback_input:
            if feedback is None:
                raise ValueError("this SASRec net reads feedback codes; pass `feedback`")
            x = x + self.feedback_vectors[feedback]
        x = x + self.positions[np.arange(n - 1, -1, -1)]
        slots = self.config.maxlen - n
        sink = math.log(slots) if self.config.attention_sink and slots > 0 else None
        for block in self.blocks[:-1]:
            x = block(x, sink, last_only=False)
        x = self.blocks[-1](x, sink, last_only=True)[0]
        if self.final_norm is not None:
            x = _layer_norm(x, *self.final_norm)
        if self.summary is not None:
            if older_items is None:
                raise ValueError("this SASRec net reads a history summary; pass `older_items`")
            if len(older_items):
                x = x + self.summary[older_items].mean(axis=0)
        return x


class _NumpyBlock:
    def __init__(self, weights: dict[str, np.ndarray], prefix: str, config: SASRecConfig):
        def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
            return np.ascontiguousarray(weights[name + ".weight"].T), weights[name + ".bias"]

        hidden = config.hidden_size
        self.norm, self.heads = config.norm, config.num_heads
        self.head_size = hidden // config.num_heads
        qkv_weight, qkv_bias = linear(prefix + "attention.qkv")
        self.query = (np.ascontiguousarray(qkv_weight[:, :hidden]), qkv_bias[:hidden])
        self.key_value = (np.ascontiguousarray(qkv_weight[:, hidden:]), qkv_bias[hidden:])
        null = qkv_bias[hidden:].reshape(2, self.heads, self.head_size)
        self.null_key, self.null_value = null[0], null[1]  # the projection of a zero vector
        self.out = linear(prefix + "attention.out") if config.attention_projection else None
        self.attention_norm = (weights[prefix + "attention_norm.weight"],
                               weights[prefix + "attention_norm.bias"])  # fmt: skip
        self.feed_forward_norm = (weights[prefix + "feed_forward_norm.weight"],
                                  weights[prefix + "feed_forward_norm.bias"])  # fmt: skip
        self.feed_forward = (linear(prefix + "feed_forward.net.0"),
                             linear(prefix + "feed_forward.net.3"))  # fmt: skip

    def _attention(self, queries: np.ndarray, keys_values: np.ndarray, sink: float | None):
        """Causal attention of the LAST len(queries) positions of `keys_values`."""
        m, n = len(queries), len(keys_values)
        heads, size = self.heads, self.head_size
        q = (queries @ self.query[0] + self.query[1]).reshape(m, heads, size).transpose(1, 0, 2)
        kv = keys_values @ self.key_value[0] + self.key_value[1]
        k = kv[:, : heads * size].reshape(n, heads, size).transpose(1, 2, 0)
        v = kv[:, heads * size :].reshape(n, heads, size).transpose(1, 0, 2)
        scale = np.float32(1.0 / math.sqrt(size))
        scores = (q @ k) * scale  # (heads, m, n)
        if m > 1:
            scores = scores + _causal_mask(n)[n - m :]
        if sink is not None:
            null = (q @ self.null_key[:, :, None]) * scale + np.float32(sink)  # (heads, m, 1)
            scores = np.concatenate([null, scores], axis=2)
            v = np.concatenate([np.broadcast_to(self.null_value[:, None, :], (heads, 1, size)),
                                v], axis=1)  # fmt: skip
        scores = np.exp(scores - scores.max(axis=2, keepdims=True))
        scores /= scores.sum(axis=2, keepdims=True)
        y = (scores @ v).transpose(1, 0, 2).reshape(m, heads * size)
        return y if self.out is None else y @ self.out[0] + self.out[1]

    def _feed_forward(self, x: np.ndarray) -> np.ndarray:
        (w1, b1), (w2, b2) = self.feed_forward
        return np.maximum(x @ w1 + b1, 0) @ w2 + b2

    def __call__(self, x: np.ndarray, sink: float | None, last_only: bool) -> np.ndarray:
        """The block's output at every position of `x`, or at its last one only."""
        newest = x[-1:] if last_only else x
        if self.norm == "original":
            queries = _layer_norm(newest, *self.attention_norm)
            out = _layer_norm(queries + self._attention(queries, x, sink),
                              *self.feed_forward_norm)  # fmt: skip
            return out + self._feed_forward(out)
        if self.norm == "pre":
            normed = _layer_norm(x, *self.attention_norm)
            out = newest + self._attention(normed[-len(newest) :], normed, sink)
            return out + self._feed_forward(_layer_norm(out, *self.feed_forward_norm))
        out = _layer_norm(newest + self._attention(newest, x, sink), *self.attention_norm)
        return _layer_norm(out + self._feed_forward(out), *self.feed_forward_norm)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    inverse_width = np.float32(1.0 / x.shape[-1])  # sums, not `mean`: its Python wrapper costs
    centred = x - x.sum(axis=-1, keepdims=True) * inverse_width
    variance = (centred * centred).sum(axis=-1, keepdims=True) * inverse_width
    return centred / np.sqrt(variance + np.float32(1e-8)) * weight + bias


@functools.cache
def _causal_mask(n: int) -> np.ndarray:
    return np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)

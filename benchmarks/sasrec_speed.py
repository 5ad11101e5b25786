"""SASRec training speed against a re-implementation of the public PyTorch port's step.

Data: a generated dataset of the paper's Amazon-Games size (31,013 users, 23,715 items,
~287k actions, at least 5 per user, long-tailed lengths, Markov-chain item sequences).
Settings: maxlen 50, hidden 50, 2 blocks, 1 head, batch 128, BCE, dropout 0.5.

Baseline, measured in the same run: the reference port's training step as it is written
publicly - every sequence left-padded to maxlen, per-user numpy negative sampling (`random_neq`
against the user's item set), nn.MultiheadAttention with only a causal mask, Conv1d
feed-forward - written anew here. It runs `--reference-batches` batches and extrapolates an
epoch (len(users) // batch batches). Each side runs in its own subprocess so peak RSS is its
own.

Quality (`--quality-epochs` > 0): both train the same number of epochs on a smaller dataset of
the same kind, then the shared evaluation ranks each user's held-out last item (paper
protocol: sampled-100; and full ranking).

    python benchmarks/sasrec_speed.py                  # speed + quality
    python benchmarks/sasrec_speed.py --quality-epochs 0
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import subprocess
import sys
import time

import numpy as np
import polars as pl
import torch
from torch import nn

from shortrec.data.histories import Histories
from shortrec.data.labels import LikeRule
from shortrec.data.splits import leave_last_out_split
from shortrec.evaluation.protocol import evaluate
from shortrec.models.base import FitContext, Recommender, TrainingData
from shortrec.models.sasrec import PAPER_PROTOCOL, SASRec
from shortrec.training.memory import current_rss_mb, peak_rss_mb, reset_peak_rss

GAMES = {"n_users": 31_013, "n_items": 23_715, "n_actions": 287_000}
QUALITY = {"n_users": 4_000, "n_items": 3_000, "n_actions": 37_000}
SETTINGS = {"maxlen": 50, "hidden_size": 50, "num_blocks": 2, "num_heads": 1,
            "dropout": 0.5, "learning_rate": 1e-3, "batch_size": 128}  # fmt: skip


# --- data ------------------------------------------------------------------------------------
def generate_views(n_users: int, n_items: int, n_actions: int, seed: int = 0) -> pl.DataFrame:
    """Users with >= 5 actions (mean n_actions / n_users, log-normal tail); each next item is
    with probability 0.6 one of the previous item's 3 fixed successors, else a Zipf draw."""
    rng = np.random.default_rng(seed)
    extra = n_actions / n_users - 5.0
    mu = math.log(extra + 0.5) - 0.72
    lengths = 5 + np.floor(rng.lognormal(mu, 1.2, n_users)).astype(np.int64)
    lengths = np.minimum(lengths, 2_000)
    diff = n_actions - int(lengths.sum())
    if diff > 0:
        np.add.at(lengths, rng.choice(n_users, diff), 1)
    while diff < 0:
        long = np.flatnonzero(lengths > 5)
        take = rng.choice(long, min(-diff, len(long)), replace=False)
        lengths[take] -= 1
        diff = n_actions - int(lengths.sum())
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    successors = rng.integers(0, n_items, (n_items, 3))
    items = np.zeros((n_users, lengths.max()), dtype=np.int64)
    items[:, 0] = rng.choice(n_items, n_users, p=popularity)
    for t in range(1, lengths.max()):  # vectorised over users; loops positions to build data
        follow = rng.random(n_users) < 0.6
        nxt = successors[items[:, t - 1], rng.integers(0, 3, n_users)]
        items[:, t] = np.where(follow, nxt, rng.choice(n_items, n_users, p=popularity))
    valid = np.arange(lengths.max())[None, :] < lengths[:, None]
    users = np.repeat(np.arange(1, n_users + 1), lengths)
    return pl.DataFrame(
        {
            "user_id": users,
            "video_id": items[valid] + 1,
            "timestamp": (np.nonzero(valid)[1]).astype(np.float64),
            "watch_ratio": np.ones(len(users)),
            "video_duration": np.ones(len(users), dtype=np.int64),
        }
    )


# --- the reference port, re-implemented ----------------------------------------------------------
class ReferenceFeedForward(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(hidden, hidden, 1), nn.Conv1d(hidden, hidden, 1)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x):
        y = self.drop2(self.conv2(torch.relu(self.drop1(self.conv1(x.transpose(-1, -2))))))
        return y.transpose(-1, -2) + x


class ReferenceSASRec(nn.Module):
    """The public port's model: left-padded maxlen windows, positions 1..maxlen (0 on
    padding), MultiheadAttention with a causal mask only, padding zeroed after each block."""

    def __init__(self, n_items: int, maxlen: int, hidden: int, blocks: int, heads: int,
                 dropout: float):  # fmt: skip
        super().__init__()
        self.hidden = hidden
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen + 1, hidden, padding_idx=0)
        self.emb_dropout = nn.Dropout(dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(blocks))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(hidden, heads, dropout) for _ in range(blocks)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(blocks))
        self.ffns = nn.ModuleList(ReferenceFeedForward(hidden, dropout) for _ in range(blocks))
        self.last_norm = nn.LayerNorm(hidden, eps=1e-8)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def log2feats(self, seqs_np: np.ndarray) -> torch.Tensor:
        seqs_t = torch.as_tensor(seqs_np)
        x = self.item_emb(seqs_t) * self.hidden**0.5
        positions = np.tile(np.arange(1, seqs_np.shape[1] + 1), (seqs_np.shape[0], 1))
        positions *= seqs_np != 0
        x = self.emb_dropout(x + self.pos_emb(torch.as_tensor(positions)))
        padding = (seqs_t == 0).unsqueeze(-1)
        x = x * ~padding
        length = x.shape[1]
        causal = ~torch.tril(torch.ones(length, length, dtype=torch.bool))
        for norm, attn, ffn_norm, ffn in zip(self.attn_norms, self.attns, self.ffn_norms,
                                             self.ffns, strict=True):  # fmt: skip
            x = x.transpose(0, 1)
            q = norm(x)
            out, _ = attn(q, x, x, attn_mask=causal)
            x = (q + out).transpose(0, 1)
            x = ffn(ffn_norm(x)) * ~padding
        return self.last_norm(x)

    def forward(self, seqs, pos, neg):
        feats = self.log2feats(seqs)
        pos_e, neg_e = self.item_emb(torch.as_tensor(pos)), self.item_emb(torch.as_tensor(neg))
        return (feats * pos_e).sum(-1), (feats * neg_e).sum(-1)


def reference_sample(user_items: list[np.ndarray], users: np.ndarray, maxlen: int,
                     n_items: int, rng: np.random.RandomState):  # fmt: skip
    """The port's sampler: per user a Python loop over the sequence and `random_neq`."""
    seqs, poss, negs = [], [], []
    for u in users:
        items = user_items[u]
        seq, pos, neg = (
            np.zeros(maxlen, np.int64),
            np.zeros(maxlen, np.int64),
            np.zeros(maxlen, np.int64),
        )
        nxt, idx, rated = items[-1], maxlen - 1, set(items.tolist())
        for i in reversed(items[:-1]):
            seq[idx], pos[idx] = i, nxt
            t = rng.randint(1, n_items + 1)
            while t in rated:
                t = rng.randint(1, n_items + 1)
            neg[idx] = t
            nxt, idx = i, idx - 1
            if idx == -1:
                break
        seqs.append(seq), poss.append(pos), negs.append(neg)
    return np.stack(seqs), np.stack(poss), np.stack(negs)


def reference_user_items(views: pl.DataFrame) -> list[np.ndarray]:
    h = Histories.from_frame(views)
    return [h.video_ids[h.offsets[i] : h.offsets[i + 1]] for i in range(len(h))]


def train_reference(views: pl.DataFrame, n_items: int, batches: int | None, epochs: int = 1,
                    seed: int = 0) -> tuple[ReferenceSASRec, dict]:  # fmt: skip
    """`batches` steps (or `epochs` full epochs); times sampling and model steps apart."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    user_items = reference_user_items(views)
    trainable = np.array([i for i, s in enumerate(user_items) if len(s) > 1])
    architecture = ("maxlen", "hidden_size", "num_blocks", "num_heads", "dropout")
    model = ReferenceSASRec(n_items, *(SETTINGS[k] for k in architecture))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=SETTINGS["learning_rate"], betas=(0.9, 0.98)
    )
    bce = nn.BCEWithLogitsLoss()
    per_epoch = len(user_items) // SETTINGS["batch_size"]
    steps = batches if batches is not None else epochs * per_epoch
    sample_s = step_s = 0.0
    cpu_start = time.process_time()
    model.train()
    for _ in range(steps):
        tick = time.perf_counter()
        users = trainable[rng.randint(0, len(trainable), SETTINGS["batch_size"])]
        seq, pos, neg = reference_sample(user_items, users, SETTINGS["maxlen"], n_items, rng)
        tock = time.perf_counter()
        pos_logits, neg_logits = model(seq, pos, neg)
        where = np.nonzero(pos != 0)
        loss = bce(pos_logits[where], torch.ones_like(pos_logits[where])) + bce(
            neg_logits[where], torch.zeros_like(neg_logits[where])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sample_s += tock - tick
        step_s += time.perf_counter() - tock
    scale = per_epoch / steps
    return model, {
        "batches_measured": steps,
        "batches_per_epoch": per_epoch,
        "seconds_per_epoch": (sample_s + step_s) * scale,
        "cpu_seconds_per_epoch": (time.process_time() - cpu_start) * scale,
        "model_seconds_per_epoch": step_s * scale,
        "sampling_seconds_per_epoch": sample_s * scale,
        "sequences_per_second": steps * SETTINGS["batch_size"] / (sample_s + step_s),
        "peak_rss_mb": peak_rss_mb(),
    }


@dataclasses.dataclass
class ReferenceAsRecommender(Recommender):
    """Lets the shared evaluation score the reference model (items are raw ids 1..n)."""

    def score(self, user_ids, video_ids, histories):
        seqs = np.zeros((len(user_ids), SETTINGS["maxlen"]), np.int64)
        for row, user in enumerate(user_ids):
            items, _ = histories.views_of(int(user))
            items = items[-SETTINGS["maxlen"] :]
            if len(items):
                seqs[row, -len(items) :] = items
        self.model_.eval()
        with torch.inference_mode():
            last = self.model_.log2feats(seqs)[:, -1]
            return (last @ self.model_.item_emb(torch.as_tensor(video_ids)).T).numpy()


# --- measurements ------------------------------------------------------------------------------
# "ours": shortrec's training engine (length-bucketed batches) on the paper's objective
# (every view a positive, newest window); "paper": the `paper-games` preset exactly (random
# batches, never-seen negatives, sampled validation).
VARIANTS = {
    "ours": {"explicit_negatives": False, "weighted_dislike": 1.0, "train_window": "last"},
    "paper": {k: v for k, v in SASRec.presets()["paper-games"].items() if k not in PAPER_PROTOCOL},
}


def training_peak(build):
    """Build the data, then measure the peak RSS of what follows from the RSS after it."""
    data = build()
    gc.collect()
    reset = reset_peak_rss()
    return data, reset, current_rss_mb()


def run_ours(threads: int, epochs: int, variant: str) -> dict:
    """A real run's fit: with validation (every 2 epochs) on a leave-last-out split."""

    def build():
        views = generate_views(**GAMES)
        split = leave_last_out_split(views)
        return TrainingData.build(split.train, split.validation, LikeRule(kind="all"))

    data, reset, before = training_peak(build)
    params = {**SETTINGS, **VARIANTS[variant], "epochs": epochs, "eval_every": 2}
    model = SASRec(**params, device="cpu", num_threads=threads)
    model.fit(data, FitContext(progress=False))
    history = model.fit_report_["history"]
    # Training alone: the loop's per-epoch "seconds" also hold the validations.
    seconds = [r["train_seconds"] for r in history]
    best = float(np.median(seconds[1:])) if len(seconds) > 1 else seconds[0]
    users = data.views["user_id"].n_unique()
    return {
        "threads": threads,
        "epoch_seconds": seconds,
        "cpu_seconds_per_epoch": float(np.median([r["train_cpu_seconds"] for r in history][1:])),
        "seconds_per_epoch": best,
        "sequences_per_second": users / best,
        "rss_before_training_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "peak_is_training_only": reset,
        "actions": data.views.height,
    }


def run_reference(threads: int, batches: int) -> dict:
    torch.set_num_threads(threads)
    views, reset, before = training_peak(lambda: generate_views(**GAMES))
    _, stats = train_reference(views, GAMES["n_items"], batches)
    return {"threads": threads, **stats, "rss_before_training_mb": before,
            "peak_is_training_only": reset}  # fmt: skip


def run_quality(epochs: int) -> dict:
    views = generate_views(**QUALITY, seed=1)
    split = leave_last_out_split(views)
    rule = LikeRule.parse("threshold:0.7").fit(split.train)
    models = {}
    for variant, settings in VARIANTS.items():
        model = SASRec(**{**SETTINGS, **settings, "epochs": epochs}, device="cpu", num_threads=1)
        # No validation: the same fixed number of epochs as the reference.
        models[variant] = model.fit(TrainingData.build(split.train), FitContext(progress=False))
    torch.set_num_threads(1)
    reference = ReferenceAsRecommender()
    reference.model_, _ = train_reference(split.train, QUALITY["n_items"], None, epochs)
    models["reference"] = reference
    out = {}
    for name, model in models.items():
        for sampled in (100, None):
            result = evaluate(model, split, "test", rule, ks=(10,), sampled=sampled,
                              n_resamples=200, progress=False)  # fmt: skip
            for metric in ("ndcg@10", "hitrate@10"):
                out[f"{name} {result.mode} {metric}"] = result.summary[metric].to_dict()
    return out


def in_subprocess(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(ref: dict, ours: dict) -> str:
    return (
        f"{ours['seconds_per_epoch']:.2f} s/epoch (median of epochs "
        f"{[round(x, 2) for x in ours['epoch_seconds']]}; CPU time "
        f"{ours['cpu_seconds_per_epoch']:.2f} s/epoch), {ours['sequences_per_second']:.0f} seq/s, "
        f"training peak RSS {ours['peak_rss_mb']:.0f} MiB; speed-up "
        f"{ref['seconds_per_epoch'] / ours['seconds_per_epoch']:.1f}x wall, "
        f"{ref['cpu_seconds_per_epoch'] / ours['cpu_seconds_per_epoch']:.1f}x CPU time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="our epochs (first is warm-up)")
    parser.add_argument("--reference-batches", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--quality-epochs", type=int, default=20)
    parser.add_argument(
        "--worker", choices=["ours", "reference", "quality"], help=argparse.SUPPRESS
    )
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker-variant", default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        print(json.dumps(run_ours(args.worker_threads, args.epochs, args.worker_variant)))
        return
    if args.worker == "reference":
        print(json.dumps(run_reference(args.worker_threads, args.reference_batches)))
        return
    if args.worker == "quality":
        print(json.dumps(run_quality(args.quality_epochs)))
        return

    print(f"dataset: Amazon-Games size {GAMES}; settings {SETTINGS}; torch {torch.__version__}")
    print("peak RSS: of training alone (reset after building the data), each side in its own "
          "process; ours includes validation every 2 epochs")  # fmt: skip
    for threads in args.threads:
        ref = in_subprocess("--worker", "reference", "--worker-threads", str(threads),
                            "--reference-batches", str(args.reference_batches))  # fmt: skip
        print(
            f"\nthreads={threads}\n"
            f"  reference: {ref['seconds_per_epoch']:.1f} s/epoch "
            f"(model {ref['model_seconds_per_epoch']:.1f} s + sampling "
            f"{ref['sampling_seconds_per_epoch']:.1f} s; extrapolated from "
            f"{ref['batches_measured']} of {ref['batches_per_epoch']} batches; "
            f"CPU time {ref['cpu_seconds_per_epoch']:.1f} s/epoch), "
            f"{ref['sequences_per_second']:.0f} seq/s, training peak RSS "
            f"{ref['peak_rss_mb']:.0f} MiB (from {ref['rss_before_training_mb']:.0f})"
        )
        for variant in args.variants:
            ours = in_subprocess("--worker", "ours", "--worker-threads", str(threads),
                                 "--epochs", str(args.epochs),
                                 "--worker-variant", variant)  # fmt: skip
            print(f"  {variant + ':':10s} {describe(ref, ours)} "
                  f"(from {ours['rss_before_training_mb']:.0f})")  # fmt: skip
            verdict = ours["peak_rss_mb"] <= ref["peak_rss_mb"] and (
                ref["cpu_seconds_per_epoch"] / ours["cpu_seconds_per_epoch"] >= 7
            )
            print(f"  {'':10s} target (peak RSS <= reference, >= 7x CPU time): "
                  f"{'met' if verdict else 'NOT met'}")  # fmt: skip
    if args.quality_epochs > 0:
        quality = in_subprocess("--worker", "quality", "--quality-epochs", str(args.quality_epochs))
        print(f"\nquality after {args.quality_epochs} epochs each on {QUALITY} "
              "(leave-last-out test, mean [95% CI]):")  # fmt: skip
        for name, interval in quality.items():
            print(
                f"  {name:38s} {interval['mean']:.4f} "
                f"[{interval['low']:.4f}, {interval['high']:.4f}]"
            )


if __name__ == "__main__":
    main()

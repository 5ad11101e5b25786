"""SASRec as a shortrec Recommender: dislike-aware training, checkpoints, raw-id scoring.

The network lives in `sasrec_net.py`, the objectives in `training/objectives.py`, the
sequence batching in `training/sequences.py`; this module is the training loop around them
and the `Recommender` face the rest of shortrec sees.

Likes and dislikes. The like rule (fitted on training views) marks each view disliked or
not. With `explicit_negatives` a disliked view stays in the input sequence - the user did
watch it, and it tells the model about the moment - but it is never a positive target: at
the position before it, the disliked video is pushed DOWN as an explicit negative, weighted
`weighted_dislike` times a sampled negative. Without explicit negatives every view is a
positive, as in the paper.

Speed. Sequences are bucketed by length (shuffled, then sorted inside pools of 64 batches)
and right-padded only to their batch's longest, so the mostly short sequences of real data
cost what they hold, not maxlen; attention is torch's fused causal kernel; negatives are
drawn on the device; every item embedding of a step comes from one gather; Adam is fused.
Each batch's summed loss is divided by the epoch's average positions per batch, not its
own count: with bucketed batches, a per-batch mean overweighted short sequences and cost
0.05 sampled-100 NDCG@10 against the reference port on generated Games-like data.

Determinism. Each epoch's shuffling comes from numpy seeded by (seed, epoch); negatives and
dropout come from one private torch generator whose state is checkpointed. A run resumed
from a checkpoint therefore continues exactly like an uninterrupted one (on the CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from shortrec.data.histories import Histories, IdMap
from shortrec.models.base import FitContext, Recommender, TrainingData, hyperparameter
from shortrec.models.sasrec_net import NORMS, SASRecConfig, SASRecNet
from shortrec.training.checkpoint import (
    check_compatible,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from shortrec.training.device import (
    derive_seed,
    make_generator,
    seeded_global_rng,
    select_device,
    torch_threads,
)
from shortrec.training.distributed import (
    World,
    from_main,
    gathered,
    process_group,
    rank_device,
    rank_seed,
    share_of,
    sum_across,
    wrap,
)
from shortrec.training.early_stopping import EarlyStopping
from shortrec.training.memory import peak_device_mb, peak_rss_mb
from shortrec.training.objectives import (
    LOSSES,
    batch_item_vectors,
    draw_negatives,
    next_item_loss,
    redraw_seen,
    seen_keys,
)
from shortrec.training.sequences import Sequences, epoch_batches

TRAIN_WINDOWS = ("last", "random")
SCORE_BATCH_USERS = 1024
VALIDATION_BATCH_USERS = 128  # small: full-catalogue score buffers set the peak memory

# The paper's model and protocol (Kang & McAuley, ICDM 2018, section IV and the authors'
# TensorFlow code, kang205/SASRec): hidden 50, 2 blocks, 1 head, Adam lr 0.001 with betas
# (0.9, 0.98), batch 128, no l2, BCE with one negative per position drawn from items the user
# never interacted with, each batch a mean over its positions; maxlen 200 / dropout 0.2 on
# the dense ML-1M, maxlen 50 / dropout 0.5 on the sparse Amazon (Beauty, Games) and Steam
# sets. The reference masks padding keys (no attention sink), has no projection after
# attention, samples batches without regard to length (no bucketing), trains on each user's
# newest maxlen + 1 views, treats every interaction as a positive (no dislikes), and checks
# validation every 20 epochs with the sampled-100 metric over at most 10,000 users. Its 200
# epochs never stop early; here three checks (60 epochs) without a better validation
# NDCG@10 stop, and the best checked epoch is kept. Protocol: leave-one-out, each test item
# ranked among 100 never-seen items, every interaction a positive (`like_rule` "all"), the
# test sequence including the validation item.
_PAPER_COMMON: dict[str, Any] = {
    "hidden_size": 50,
    "num_blocks": 2,
    "num_heads": 1,
    "learning_rate": 0.001,
    "l2_emb": 0.0,
    "batch_size": 128,
    "epochs": 200,
    "eval_every": 20,
    "patience": 3,
    "max_eval_users": 10_000,
    "norm": "original",
    "attention_sink": False,
    "attention_projection": False,
    "loss": "bce",
    "unseen_negatives": True,
    "bucketing": False,
    "explicit_negatives": False,
    "weighted_dislike": 1.0,
    "train_window": "last",
    "validation_sampled": 100,
    "amp": False,
}
# The run's protocol, not the model's: `--preset paper-*` sets these run options too.
PAPER_PROTOCOL: dict[str, Any] = {"protocol": "leave-last-out", "like_rule": "all", "sampled": 100}
PAPER_PRESETS: dict[str, dict[str, Any]] = {
    "ml-1m": {**_PAPER_COMMON, "maxlen": 200, "dropout": 0.2},
    "beauty": {**_PAPER_COMMON, "maxlen": 50, "dropout": 0.5},
    "games": {**_PAPER_COMMON, "maxlen": 50, "dropout": 0.5},
    "steam": {**_PAPER_COMMON, "maxlen": 50, "dropout": 0.5},
}

# Settings a checkpoint must share with the run that resumes it.
_RESUME_KEYS = ("seed", "maxlen", "hidden_size", "num_blocks", "num_heads", "dropout",
                "learning_rate", "l2_emb", "batch_size", "norm", "attention_sink",
                "attention_projection", "loss", "n_negatives", "unseen_negatives", "bucketing",
                "explicit_negatives", "weighted_dislike", "train_window",
                "validation_sampled")  # fmt: skip


def paper_preset(name: str) -> dict[str, Any]:
    """The paper's hyperparameters for `name` ("paper-ml-1m", "ml-1m", "paper-games", ...)."""
    key = name.lower().removeprefix("paper-")
    if key not in PAPER_PRESETS:
        known = ", ".join(f"paper-{k}" for k in PAPER_PRESETS)
        raise ValueError(f"unknown SASRec preset {name!r}; known: {known}")
    return dict(PAPER_PRESETS[key])


@dataclasses.dataclass
class _ValidationTargets:
    """Validation users (rows of the training sequences) and their relevant items."""

    rows: np.ndarray
    pair_user: np.ndarray  # index into `rows`, sorted
    pair_item: np.ndarray  # 0-based item column


@dataclasses.dataclass
class SASRec(Recommender):
    """Self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

    Defaults learn from likes and dislikes: a disliked view is a `weighted_dislike`-weighted
    explicit negative, never a positive target (`--no-explicit-negatives`: every view a
    positive, the paper's objective, for the ablation). They won on the full-scale world's
    tune set (README "SASRec defaults"). `patience` counts evaluations (every `eval_every`
    epochs) without a better validation NDCG@10 (full ranking, or `validation_sampled`
    never-seen negatives). `loss`: "bce" (paper), "softmax" (full catalogue) or
    "sampled-softmax" (`n_negatives` shared per sequence); `unseen_negatives` redraws sampled
    negatives the user has interacted with (the paper's sampler). `train_window`: "last"
    trains on each user's newest maxlen + 1 views (paper); "random" on a random window per
    epoch, which uses long histories better. `bucketing` batches sequences of similar length
    (fast; off: the paper's random batches). `amp` runs bfloat16 autocast on CUDA.
    `num_threads`: CPU threads; 1 is fastest at SASRec's sizes (each op is too small to
    split, and OpenMP threads spin badly on a shared machine: 2 threads ran 10x slower under
    load); 0 keeps torch's own. Given a `FitContext.checkpoint_dir`, fit checkpoints every
    epoch and resumes from it. Under `torchrun` it trains data-parallel
    (`training/distributed.py`). `norm`: "original" (the paper's block), "pre" or "post".
    `attention_sink`: every position may also attend to a null key weighted by the padding a
    maxlen window would hold, as in the public PyTorch port (whose padding keys are
    unmasked); `attention_projection`: a linear layer after attention, as in the port. The
    `paper-*` presets turn both off, as in the paper.
    """

    name: ClassVar[str] = "sasrec"
    reports_epochs: ClassVar[bool] = True
    distributed: ClassVar[bool] = True
    devices: ClassVar[tuple[str, ...]] = ("auto", "cpu", "cuda")
    maxlen: int = hyperparameter(50, "Newest views a sequence holds.", minimum=1)
    hidden_size: int = hyperparameter(50, "Item embedding and hidden size.", minimum=1)
    num_blocks: int = hyperparameter(2, "Self-attention blocks.", minimum=1)
    num_heads: int = hyperparameter(1, "Attention heads (must divide hidden_size).", minimum=1)
    dropout: float = hyperparameter(
        0.2, "Dropout on embeddings and inside blocks.", minimum=0.0, below=1.0
    )
    learning_rate: float = hyperparameter(1e-3, "Adam's learning rate.", above=0.0)
    l2_emb: float = hyperparameter(0.0, "L2 penalty on the item embeddings.", minimum=0.0)
    batch_size: int = hyperparameter(128, "Sequences per Adam step.", minimum=1)
    epochs: int = hyperparameter(30, "Most epochs; early stopping may end sooner.", minimum=1)
    patience: int = hyperparameter(
        3, "Validations (every eval_every epochs) without a better NDCG@10 to stop.", minimum=1
    )
    eval_every: int = hyperparameter(2, "Epochs between validations.", minimum=1)
    max_eval_users: int = hyperparameter(
        10_000, "Most validation users (a seeded sample beyond this).", minimum=1
    )
    validation_sampled: int = hyperparameter(
        0, "Validation ranks each item among N never-seen items (0: full ranking).", minimum=0
    )
    device: str = hyperparameter("auto", "Where torch trains: auto | cpu | cuda[:N] | mps.")
    norm: str = hyperparameter(
        "original", "Block layout: original (the paper's) | pre | post layer norm.",
        choices=NORMS,
    )  # fmt: skip
    attention_sink: bool = hyperparameter(
        True, "Let every position attend to a null key (the public PyTorch port's padding)."
    )
    attention_projection: bool = hyperparameter(
        True, "A linear layer after attention (as in the PyTorch port)."
    )
    loss: str = hyperparameter(
        "bce", "bce (the paper's) | softmax (full catalogue) | sampled-softmax.", choices=LOSSES
    )
    n_negatives: int = hyperparameter(
        256, "Sampled negatives per sequence (sampled-softmax).", minimum=1
    )
    unseen_negatives: bool = hyperparameter(
        False, "Redraw sampled negatives the user has interacted with (the paper's sampler)."
    )
    explicit_negatives: bool = hyperparameter(
        True, "Disliked views are weighted negatives, never positive targets (off: the paper)."
    )
    weighted_dislike: float = hyperparameter(
        5.0, "Weight of a disliked view as a negative, in sampled negatives.", minimum=0.0
    )
    train_window: str = hyperparameter(
        "random", "Training window: last (newest maxlen + 1 views) | random (one per epoch).",
        choices=TRAIN_WINDOWS,
    )  # fmt: skip
    bucketing: bool = hyperparameter(True, "Batch sequences of similar length (off: the paper).")
    amp: bool = hyperparameter(False, "bfloat16 autocast on CUDA.")
    num_threads: int = hyperparameter(1, "torch CPU threads; 0 keeps torch's own.", minimum=0)

    # --- configuration ---------------------------------------------------------------------
    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """Named settings for `--preset`: the paper's model and protocol, per dataset."""
        return {f"paper-{name}": {**paper_preset(name), **PAPER_PROTOCOL} for name in PAPER_PRESETS}

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """Hyperparameters worth tuning (an optuna trial suggests them)."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.6),
            "hidden_size": trial.suggest_categorical("hidden_size", [32, 50, 64, 128]),
            "num_blocks": trial.suggest_int("num_blocks", 1, 3),
            "maxlen": trial.suggest_categorical("maxlen", [25, 50, 100, 200]),
            "l2_emb": trial.suggest_float("l2_emb", 1e-8, 1e-3, log=True),
            "weighted_dislike": trial.suggest_float("weighted_dislike", 1.0, 30.0, log=True),
        }

    def _check_params(self) -> None:
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.train_window not in TRAIN_WINDOWS:
            problems.append(f"train_window must be 'last' or 'random', got {self.train_window!r}")
        for field in ("maxlen", "hidden_size", "num_blocks", "num_heads", "batch_size",
                      "eval_every", "n_negatives", "max_eval_users"):  # fmt: skip
            if getattr(self, field) < 1:
                problems.append(f"{field} must be >= 1, got {getattr(self, field)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.validation_sampled < 0:
            problems.append(f"validation_sampled must be >= 0, got {self.validation_sampled}")
        if self.weighted_dislike < 0:
            problems.append(f"weighted_dislike must be >= 0, got {self.weighted_dislike}")
        if self.hidden_size % max(self.num_heads, 1):
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_heads")
        if problems:
            raise ValueError("invalid SASRec settings: " + "; ".join(problems))

    def _net_config(self, n_items: int) -> SASRecConfig:
        return SASRecConfig(
            n_items=n_items,
            maxlen=self.maxlen,
            hidden_size=self.hidden_size,
            num_blocks=self.num_blocks,
            num_heads=self.num_heads,
            dropout=self.dropout,
            norm=self.norm,
            attention_sink=self.attention_sink,
            attention_projection=self.attention_projection,
        )

    # --- training --------------------------------------------------------------------------
    def fit(self, data: TrainingData, context: FitContext | None = None) -> SASRec:
        """Train on the training views; validation views (NDCG@10 of each user's next views
        after their training sequence) choose the best epoch and stop early."""
        self._check_params()
        _require_columns(data.views, ("user_id", "video_id", "timestamp"), "train")
        device = select_device(self.device)
        with torch_threads(self.num_threads), process_group(device) as job:
            return self._fit(data, context or FitContext(), rank_device(device, job), job)

    def _fit(self, data: TrainingData, context: FitContext, device, job: World) -> SASRec:
        train, validation = data.views, data.validation
        dislikes = self.explicit_negatives
        self.video_map_ = IdMap.from_ids(train["video_id"])
        sequences = Sequences.from_frame(
            train, self.video_map_, data.disliked if dislikes else None
        )
        n_items = len(self.video_map_)
        self.popularity_ = np.bincount(sequences.items, minlength=n_items + 1)[1:].astype(
            np.float64
        )
        trainable = np.flatnonzero(sequences.lengths >= 2)
        if len(trainable) == 0:
            raise ValueError("train has no user with 2 or more views; SASRec learns next views")
        targets = self._validation_targets(validation, sequences, dislikes)
        seen = None
        if self.unseen_negatives:
            rows, items = sequences.flat(np.arange(len(sequences.user_ids)))
            seen = torch.from_numpy(seen_keys(rows, items, n_items)).to(device)

        with seeded_global_rng(self.seed, torch.device("cpu")):  # initial weights
            net = SASRecNet(self._net_config(n_items)).to(device)
        optimizer = _adam(net, self.learning_rate)
        generator = make_generator(rank_seed(self.seed, job), device)
        stopper = EarlyStopping(patience=self.patience)
        best_state: dict | None = None
        history: list[dict[str, float]] = []
        start_epoch = 0
        config = {k: getattr(self, k) for k in _RESUME_KEYS} | {
            "like_rule": str(data.like_rule), "world_size": job.size}  # fmt: skip
        checkpoint_dir = context.checkpoint_dir if job.is_main else None
        saved = from_main(load_checkpoint(checkpoint_dir) if checkpoint_dir else None, job)
        if saved is not None:
            path = checkpoint_path(checkpoint_dir or "<rank 0>")
            check_compatible(saved["config"], config, path)
            _check_same_data(saved, self.video_map_, sequences, path)
            net.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            generator.set_state(saved["generators"][job.rank])
            stopper = EarlyStopping.from_state_dict(saved["early_stopping"])
            best_state = saved["best_model"]
            history = saved["history"]
            start_epoch = saved["epoch"]
            del saved
        model = wrap(net, job, device)

        started = time.perf_counter()
        train_seconds, sequences_trained = 0.0, 0
        show = context.progress and job.is_main
        bar = tqdm(range(start_epoch, self.epochs), desc="sasrec", disable=not show,
                   initial=start_epoch, total=self.epochs, unit="epoch")  # fmt: skip
        for epoch in bar:
            if stopper.should_stop:
                break
            rng = np.random.default_rng([self.seed, epoch])
            full = sequences.lengths[trainable]
            ends = full if self.train_window == "last" else rng.integers(2, full + 1)
            windows = np.minimum(ends, self.maxlen + 1)
            if self.bucketing:
                batches = epoch_batches(windows, self.batch_size, rng)
            else:
                order = rng.permutation(len(windows))
                batches = [order[i : i + self.batch_size]
                           for i in range(0, len(order), self.batch_size)]  # fmt: skip
            # Every rank must take part in every step: a batch too small to share is skipped.
            batches = [rows for rows in batches if len(rows) >= job.size]
            tick, cpu_tick = time.perf_counter(), time.process_time()
            with seeded_global_rng(derive_seed(generator), device):
                steps = tqdm(batches, desc=f"epoch {epoch + 1}", disable=not show, leave=False)
                mean_loss = self._train_epoch(
                    model, net, optimizer, generator, sequences, trainable, ends, steps,
                    device, job, seen,
                )  # fmt: skip
            seconds = time.perf_counter() - tick
            train_seconds += seconds
            sequences_trained += sum(len(rows) for rows in batches)
            record = {"epoch": epoch + 1, "loss": mean_loss, "seconds": seconds,
                      "cpu_seconds": time.process_time() - cpu_tick}  # fmt: skip
            last_epoch = epoch + 1 == self.epochs
            if targets is not None and ((epoch + 1) % self.eval_every == 0 or last_epoch):
                record["validation_ndcg@10"] = self._validation_ndcg(
                    net, sequences, targets, device, job, show
                )
                if stopper.update(record["validation_ndcg@10"], epoch + 1):
                    best_state = copy.deepcopy(net.state_dict())
                self.report_epoch(context, epoch + 1, record["validation_ndcg@10"])
            history.append(record)
            bar.set_postfix(loss=f"{mean_loss:.4f}", seq_s=f"{len(trainable) / seconds:.0f}",
                            best=f"{stopper.best_score:.4f}")  # fmt: skip
            generators = gathered(generator.get_state(), job)
            if checkpoint_dir:
                save_checkpoint(checkpoint_dir, {
                    "config": config, "epoch": epoch + 1, "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(), "generators": generators,
                    "early_stopping": stopper.state_dict(), "best_model": best_state,
                    "history": history, "video_ids": self.video_map_.raw_ids,
                    "user_ids": sequences.user_ids, "n_views": len(sequences.items),
                })  # fmt: skip
        bar.close()
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self._candidates = None
        summary = {
            "epochs": history[-1]["epoch"] if history else 0,
            "epochs_this_run": len(history) - start_epoch if history else 0,
            "best_epoch": stopper.best_epoch if best_state is not None else None,
            "best_validation_ndcg@10": stopper.best_score if best_state is not None else None,
            "validation": f"sampled-{self.validation_sampled}"
            if self.validation_sampled
            else "full-ranking",
            "seconds": time.perf_counter() - started,
            "train_seconds_per_epoch": train_seconds / max(len(history) - start_epoch, 1),
            "sequences_per_second": sequences_trained / train_seconds if train_seconds else 0.0,
            "peak_rss_mb": peak_rss_mb(),
            "peak_device_mb": peak_device_mb(device),
            "device": str(device),
            "world_size": job.size,
            "dislikes": "weighted negatives" if dislikes else "not used",
        }
        self.fit_report_ = {**summary, "history": history}
        if show:
            tqdm.write("sasrec: " + ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items()))
        return self

    def _train_epoch(self, model, net, optimizer, generator, sequences, trainable, ends,
                     batches, device, job, seen):  # fmt: skip
        """One pass over `batches`; each rank trains on its share of every batch, and the
        loss is scaled so the gradient is the whole batch's (`training/distributed.py`)."""
        model.train()
        losses = []
        autocast = torch.autocast(
            device_type=device.type,
            dtype=torch.bfloat16,
            enabled=self.amp and device.type == "cuda",
        )
        table = net.item_embedding.weight
        n_items = len(table) - 1
        if len(batches) == 0:
            return float("nan")
        positions = np.minimum(ends - 1, self.maxlen)
        epoch_average = float(positions[np.concatenate(list(batches))].sum()) / len(batches)
        for rows in batches:
            # The paper's random batches: a mean over the batch's own positions. Bucketed
            # batches: over the epoch's average, or short sequences would weigh up to 50x more.
            divisor = epoch_average if self.bucketing else float(positions[rows].sum())
            mine = share_of(rows, job)
            inputs, next_items, next_disliked, lengths = sequences.training_batch(
                trainable[mine], self.maxlen, ends[mine]
            )
            inputs, next_items, next_disliked, lengths = (
                torch.from_numpy(a).to(device, non_blocking=True)
                for a in (inputs, next_items, next_disliked, lengths)
            )
            negatives = draw_negatives(self.loss, next_items, n_items, self.n_negatives, generator)
            if seen is not None and negatives is not None:
                user_rows = torch.from_numpy(trainable[mine]).to(device)
                negatives = redraw_seen(negatives, user_rows, seen, n_items, generator)
            input_vectors, target_vectors, negative_vectors = batch_item_vectors(
                table, inputs, next_items, negatives
            )
            with autocast:
                hidden = model(inputs, lengths, input_vectors)
            loss = next_item_loss(
                self.loss, hidden.float(), next_items, target_vectors, negatives,
                negative_vectors, next_disliked, self.weighted_dislike, table,
                divisor / job.size,
            )  # fmt: skip
            if self.l2_emb > 0:
                loss = loss + 0.5 * self.l2_emb * table.square().sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        # Ranks' losses add up to world size x the batch loss (see the divisor above).
        total = sum_across([float(torch.stack(losses).sum())], job, device)[0]
        return float(total) / job.size / len(batches)

    # --- validation ------------------------------------------------------------------------
    def _validation_targets(self, validation, sequences, dislikes) -> _ValidationTargets | None:
        """Each validation user's next views that count as relevant: all of them, or with
        explicit negatives only the ones not disliked. Users unknown to training or whose
        relevant videos are all unknown are left out."""
        if validation is None or validation.height == 0:
            return None
        if dislikes:
            validation = validation.filter(~pl.col("disliked"))
        rows = IdMap(sequences.user_ids).index(validation["user_id"])
        items = self.video_map_.index(validation["video_id"])
        keep = (rows >= 0) & (items >= 0)
        rows, items = rows[keep], items[keep]
        users = np.unique(rows)
        if len(users) == 0:
            return None
        if len(users) > self.max_eval_users:
            users = np.sort(
                np.random.default_rng(self.seed).choice(users, self.max_eval_users, replace=False)
            )
        position = IdMap(users).index(rows)
        chosen = position >= 0
        order = np.argsort(position[chosen], kind="stable")
        return _ValidationTargets(users, position[chosen][order], items[chosen][order])

    def _validation_ndcg(self, net, sequences, targets, device, job, show) -> float:
        """Mean NDCG@10 over validation users, videos already in the training sequence
        excluded: full ranking, or each relevant video against `validation_sampled` videos
        the user never interacted with (the paper's protocol). Ranks split the users."""
        from shortrec.evaluation.metrics import full_ranking_metrics, sampled_metrics

        was_training = net.training
        net.eval()
        total, count = 0.0, 0
        n_items = len(self.video_map_)
        bounds = np.searchsorted(targets.pair_user, np.arange(len(targets.rows) + 1))
        starts = range(0, len(targets.rows), VALIDATION_BATCH_USERS)[job.rank :: job.size]
        with torch.inference_mode():
            for start in tqdm(starts, desc="sasrec validation", disable=not show, leave=False):
                stop = min(start + VALIDATION_BATCH_USERS, len(targets.rows))
                rows = targets.rows[start:stop]
                items, lengths = sequences.tail(rows, self.maxlen)
                hidden = net.last_hidden(
                    torch.from_numpy(items).to(device), torch.from_numpy(lengths).to(device)
                )
                scores = net.all_item_logits(hidden).float().cpu().numpy()
                lo, hi = bounds[start], bounds[stop]
                pair_user, pair_item = targets.pair_user[lo:hi] - start, targets.pair_item[lo:hi]
                seen_user, seen_item = sequences.flat(rows)
                if self.validation_sampled:
                    excluded = np.concatenate([seen_user * n_items + seen_item - 1,
                                               pair_user * n_items + pair_item])  # fmt: skip
                    rng = np.random.default_rng([self.seed, start])
                    negatives = _unseen_draws(
                        pair_user, np.unique(excluded), n_items, self.validation_sampled, rng
                    )
                    ndcg = sampled_metrics(
                        scores[pair_user, pair_item],
                        np.take_along_axis(scores[pair_user], negatives, axis=1),
                    )["ndcg@10"]
                    per_user = np.bincount(pair_user, ndcg, len(rows))
                    users = np.bincount(pair_user, minlength=len(rows))
                    ndcg = per_user[users > 0] / users[users > 0]
                else:
                    relevance = np.zeros(scores.shape, bool)
                    relevance[pair_user, pair_item] = True
                    scores[seen_user, seen_item - 1] = -np.inf
                    relevance[seen_user, seen_item - 1] = False
                    metrics, _ = full_ranking_metrics(
                        scores, relevance, None, ks=(10,), seed=self.seed
                    )
                    ndcg = metrics["ndcg@10"]
                finite = np.isfinite(ndcg)
                total += float(ndcg[finite].sum())
                count += int(finite.sum())
        net.train(was_training)
        total, count = sum_across([total, count], job, device)
        return float(total / count) if count else 0.0

    # --- scoring ---------------------------------------------------------------------------
    def score(
        self, user_ids: np.ndarray, video_ids: np.ndarray, histories: Histories
    ) -> np.ndarray:
        """Scores from each user's newest `maxlen` known videos in `histories`. Unknown
        videos score below every known one; users with no known video get popularity."""
        if getattr(self, "net_", None) is None:
            raise RuntimeError("SASRec must be fitted (or loaded) before scoring")
        user_ids = np.asarray(user_ids, dtype=np.int64)
        video_ids = np.asarray(video_ids, dtype=np.int64)
        out = np.empty((len(user_ids), len(video_ids)), dtype=np.float32)
        net = self.net_
        if net.training:
            net.eval()
        device = next(net.parameters()).device
        with torch_threads(self.num_threads), torch.inference_mode():
            known, weights, popularity = self._candidate_table(video_ids, device)
            for start in range(0, len(user_ids), SCORE_BATCH_USERS):
                stop = min(start + SCORE_BATCH_USERS, len(user_ids))
                batch = Sequences.from_histories(histories, user_ids[start:stop], self.video_map_)
                items, lengths = batch.tail(np.arange(stop - start), self.maxlen)
                hidden = net.last_hidden(
                    torch.from_numpy(items).to(device), torch.from_numpy(lengths).to(device)
                )
                logits = (hidden @ weights.T).float().cpu().numpy()
                logits[lengths == 0] = popularity
                block = out[start:stop]
                if known.all():
                    block[:] = logits
                else:
                    block[:, known] = logits
                    floor = logits.min(axis=1, keepdims=True) - 1.0 if logits.shape[1] else 0.0
                    block[:, ~known] = floor
        return out

    def _candidate_table(self, video_ids: np.ndarray, device) -> tuple:
        """(known mask, item embeddings, popularity fallback) of the candidate videos. A
        server ranks the same catalogue on every request: the last table is reused while the
        candidates are the same (the network does not change after fitting)."""
        cached = self._candidates
        if cached is not None and np.array_equal(cached[0], video_ids):
            return cached[1]
        candidates = self.video_map_.index(video_ids) + 1
        known = candidates > 0
        weights = self.net_.item_embedding.weight[torch.from_numpy(candidates[known]).to(device)]
        popularity = np.log1p(self.popularity_[candidates[known] - 1]).astype(np.float32)
        table = (known, weights, popularity)
        self._candidates = (video_ids.copy(), table)
        return table

    # --- persistence -----------------------------------------------------------------------
    def new_module(self, attribute: str) -> SASRecNet:
        return SASRecNet(self._net_config(len(self.video_map_)))

    def load_state(self, directory: Path) -> None:
        super().load_state(directory)
        self.net_ = self.net_.to(select_device(self.device)).eval()
        self._candidates = None


def _adam(net: torch.nn.Module, learning_rate: float) -> torch.optim.Adam:
    """Adam with the port's betas; the fused kernel updates the whole item table in one pass
    (8x faster than the default per-tensor loop on the CPU) where the device supports it."""
    try:
        return torch.optim.Adam(net.parameters(), lr=learning_rate, betas=(0.9, 0.98), fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(net.parameters(), lr=learning_rate, betas=(0.9, 0.98))


def _unseen_draws(
    pair_user: np.ndarray, excluded: np.ndarray, n_items: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """`n` item columns per pair, uniform with replacement over the items not excluded for
    its user (`excluded`: sorted keys user * n_items + column), as the reference draws."""
    draws = rng.integers(0, n_items, (len(pair_user), n))
    for _ in range(64):
        keys = pair_user[:, None] * n_items + draws
        position = np.minimum(np.searchsorted(excluded, keys), max(len(excluded) - 1, 0))
        taken = excluded[position] == keys if len(excluded) else np.zeros(keys.shape, bool)
        if not taken.any():
            return draws
        draws[taken] = rng.integers(0, n_items, int(taken.sum()))
    raise ValueError(
        f"sampled validation needs {n} never-seen items per user and some users have seen "
        "nearly every item: use validation_sampled 0 (full ranking)"
    )


def _require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"SASRec {what} views lack column(s) {', '.join(missing)}; have {frame.columns}"
        )


def _check_same_data(saved: dict, video_map: IdMap, sequences: Sequences, path: Path) -> None:
    same = (
        np.array_equal(saved["video_ids"], video_map.raw_ids)
        and np.array_equal(saved["user_ids"], sequences.user_ids)
        and saved["n_views"] == len(sequences.items)
    )
    if not same:
        raise ValueError(f"checkpoint {path} was trained on other data; use another checkpoint_dir")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)

"""SASRec: the network's masking, the objectives, dislikes, resumable training, raw-id scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fitting import training

from shortrec.data.histories import Histories
from shortrec.data.labels import LikeRule
from shortrec.data.splits import leave_last_out_split
from shortrec.models import model_class
from shortrec.models.base import FitContext, load_model
from shortrec.models.sasrec import SASRec, paper_preset
from shortrec.models.sasrec_net import SASRecConfig, SASRecNet
from shortrec.training.device import make_generator
from shortrec.training.objectives import (
    batch_item_vectors,
    draw_negatives,
    next_item_loss,
    redraw_seen,
    seen_keys,
)

N_ITEMS = 40


def cyclic_views(n_users: int = 120, length: int = 16, seed: int = 0) -> pl.DataFrame:
    """Every user walks the catalogue in order from a random start: item i is followed by
    item i + 1 (mod N_ITEMS). Raw ids are offset so dense and raw ids differ."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, N_ITEMS, n_users)
    items = (start[:, None] + np.arange(length)[None, :]) % N_ITEMS
    return pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users), length) + 5000,
            "video_id": items.ravel() + 100,
            "timestamp": np.tile(np.arange(length), n_users).astype(float),
            "watch_ratio": np.ones(n_users * length),
            "video_duration": np.full(n_users * length, 10_000),
        }
    )


THRESHOLD = LikeRule(kind="threshold")


def quiet(checkpoint_dir: Path) -> FitContext:
    return FitContext(checkpoint_dir=checkpoint_dir, progress=False)


def small_model(**overrides) -> SASRec:
    params = dict(maxlen=8, hidden_size=16, num_blocks=2, num_heads=2, dropout=0.1,
                  learning_rate=5e-3, batch_size=32, epochs=6, eval_every=2, patience=3,
                  device="cpu", n_negatives=16, num_threads=1, train_window="last")  # fmt: skip
    params.update(overrides)
    return SASRec(**params)


def tiny_net(norm: str = "original", attention_sink: bool = True) -> SASRecNet:
    torch.manual_seed(0)
    config = SASRecConfig(n_items=20, maxlen=10, hidden_size=8, num_heads=2, norm=norm,
                          attention_sink=attention_sink)  # fmt: skip
    return SASRecNet(config).eval()


@pytest.mark.parametrize("norm", ["original", "pre", "post"])
@pytest.mark.parametrize("attention_sink", [True, False])
def test_changing_a_future_item_leaves_earlier_outputs_alone(norm, attention_sink):
    net = tiny_net(norm, attention_sink)
    items = torch.tensor([[3, 5, 7, 9, 11, 13]])
    lengths = torch.tensor([6])
    changed = items.clone()
    changed[0, 4] = 2
    with torch.no_grad():
        a, b = net(items, lengths), net(changed, lengths)
    # Positions count from the end, so compare a fixed-length prefix: the hidden states
    # before position 4 depend only on items before it.
    assert torch.allclose(a[0, :4], b[0, :4], atol=1e-6)
    assert not torch.allclose(a[0, 4:], b[0, 4:], atol=1e-4)


@pytest.mark.parametrize("attention_sink", [True, False])
def test_padding_does_not_change_a_sequence_output(attention_sink):
    net = tiny_net(attention_sink=attention_sink)
    alone = torch.tensor([[4, 8, 15]])
    padded = torch.tensor([[4, 8, 15, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        h_alone = net.last_hidden(alone, torch.tensor([3]))
        h_padded = net.last_hidden(padded, torch.tensor([3, 7]))
    assert torch.allclose(h_alone[0], h_padded[0], atol=1e-5)


@pytest.mark.parametrize(
    "inputs", [{}, {"feedback_input": True}, {"history_summary": "all"}], ids=str
)
def test_scores_are_the_same_alone_or_batched_with_longer_users(inputs):
    # Alone: the NumPy one-user path; batched: the torch net.
    views = cyclic_views(n_users=40)
    model = small_model(epochs=2, **inputs).fit(training(views))
    # User 5000 gets a short history, user 5001 a long one.
    history = Histories.from_frame(
        views.filter(
            (pl.col("user_id") == 5001) | ((pl.col("user_id") == 5000) & (pl.col("timestamp") < 3))
        )
    )
    videos = np.arange(100, 100 + N_ITEMS)
    alone = model.score(np.array([5000]), videos, history)
    batched = model.score(np.array([5001, 5000]), videos, history)
    np.testing.assert_allclose(alone[0], batched[1], atol=1e-5)
    long_alone = model.score(np.array([5001]), videos, history)  # older views than maxlen
    np.testing.assert_allclose(long_alone[0], batched[0], atol=1e-5)


@pytest.mark.parametrize("loss", ["bce", "softmax", "sampled-softmax"])
def test_each_objective_lowers_its_loss(loss):
    model = small_model(loss=loss, epochs=8).fit(training(cyclic_views()))
    losses = [record["loss"] for record in model.fit_report_["history"]]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("loss", ["bce", "softmax", "sampled-softmax"])
def test_a_disliked_target_is_pushed_down_not_up(loss):
    torch.manual_seed(0)
    hidden = torch.randn(2, 3, 8)
    embedding = torch.randn(11, 8, requires_grad=True)
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    disliked = torch.tensor([[False, True, False], [False, False, False]])

    def loss_with(flags):
        negatives = draw_negatives(loss, targets, 10, 4, make_generator(0))
        target_vectors, negative_vectors = batch_item_vectors(embedding, targets, negatives)
        return next_item_loss(loss, hidden, targets, target_vectors, negatives,
                              negative_vectors, flags, 3.0, embedding)  # fmt: skip

    value = loss_with(disliked)
    value.backward()
    # Gradient descent moves item 2's embedding by -grad; its score at (0, 1) must fall.
    assert float(hidden[0, 1] @ -embedding.grad[2]) < 0
    assert not torch.isclose(value, loss_with(torch.zeros_like(disliked)))


def dislike_world(n_users: int = 150) -> pl.DataFrame:
    """The cyclic world, but the video after raw video 100 is always watched and disliked
    (watch_ratio 0.05)."""
    views = cyclic_views(n_users=n_users, length=20, seed=1)
    return views.with_columns(
        pl.when(pl.col("video_id") == 101).then(0.05).otherwise(1.0).alias("watch_ratio")
    )


def test_explicit_negatives_lower_the_disliked_video_score():
    views = dislike_world()
    history = Histories.from_frame(
        pl.DataFrame(
            {
                "user_id": [1] * 3,
                "video_id": [137, 138, 100],
                "watch_ratio": [1.0] * 3,
                "timestamp": [0.0, 1.0, 2.0],
            }
        )  # fmt: skip
    )
    videos = np.arange(100, 100 + N_ITEMS)

    def rank_of_disliked(**kwargs) -> int:
        model = small_model(epochs=10, **kwargs).fit(training(views, like_rule=THRESHOLD))
        scores = model.score(np.array([1]), videos, history)[0]
        return int((scores > scores[1]).sum())

    plain = rank_of_disliked(explicit_negatives=False)  # the view-as-positive ablation
    aware = rank_of_disliked(weighted_dislike=5.0)  # the default: dislikes are negatives
    assert plain <= 2  # learned as the likely next view
    assert aware > plain + 5  # pushed down once dislikes count as negatives


def test_random_training_windows_also_learn():
    model = small_model(maxlen=4, epochs=10, train_window="random").fit(
        training(cyclic_views(length=30))
    )
    losses = [record["loss"] for record in model.fit_report_["history"]]
    assert losses[-1] < 0.7 * losses[0]


def test_defaults_learn_from_dislikes_and_paper_presets_do_not():
    assert SASRec().explicit_negatives and SASRec().weighted_dislike > 1
    for preset in SASRec.presets().values():
        assert preset["explicit_negatives"] is False and preset["weighted_dislike"] == 1.0
        assert preset["like_rule"] == "all"  # every interaction a positive, in training and test


def test_planted_sequence_is_learned_to_near_perfect_hit_rate():
    split = leave_last_out_split(cyclic_views(n_users=200, length=16))
    model = small_model(epochs=25, eval_every=5, patience=5, hidden_size=32).fit(
        training(split.train, split.validation)
    )
    users = split.test["user_id"].to_numpy()
    scores = model.score(users, split.candidate_video_ids, Histories.from_frame(split.test_history))
    top = split.candidate_video_ids[np.argsort(-scores, axis=1)[:, :10]]
    hit_rate = (top == split.test["video_id"].to_numpy()[:, None]).any(axis=1).mean()
    assert hit_rate >= 0.95
    assert model.fit_report_["best_validation_ndcg@10"] > 0.5


def test_resumed_training_matches_uninterrupted_training(tmp_path):
    split = leave_last_out_split(cyclic_views(n_users=60))
    data = training(split.train, split.validation)
    full = small_model(epochs=4, eval_every=1).fit(data, quiet(tmp_path / "a"))
    small_model(epochs=2, eval_every=1).fit(data, quiet(tmp_path / "b"))
    resumed = small_model(epochs=4, eval_every=1).fit(data, quiet(tmp_path / "b"))
    assert resumed.fit_report_["epochs_this_run"] == 2
    assert [r["epoch"] for r in resumed.fit_report_["history"]] == [1, 2, 3, 4]
    for (name, a), b in zip(full.net_.state_dict().items(), resumed.net_.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name

    def without_time(history):
        return [{k: v for k, v in record.items() if "seconds" not in k} for record in history]

    assert without_time(full.fit_report_["history"]) == without_time(resumed.fit_report_["history"])


def test_resuming_with_other_settings_is_refused(tmp_path):
    views = cyclic_views(n_users=30)
    small_model(epochs=1).fit(training(views), quiet(tmp_path))
    with pytest.raises(ValueError, match="hidden_size"):
        small_model(epochs=2, hidden_size=8).fit(training(views), quiet(tmp_path))


def test_training_is_deterministic_and_leaves_global_rng_alone():
    views = cyclic_views(n_users=40)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = small_model(epochs=2).fit(training(views))
    assert torch.equal(torch.get_rng_state(), before)
    b = small_model(epochs=2).fit(training(views))
    for x, y in zip(a.net_.parameters(), b.net_.parameters(), strict=True):
        assert torch.equal(x, y)


def test_cross_dataset_scoring_with_unknown_users_and_videos():
    model = small_model(epochs=2).fit(training(cyclic_views(n_users=40)))
    history = Histories.from_frame(
        pl.DataFrame(
            {
                "user_id": [7, 7, 7, 7, 8],
                "video_id": [101, 102, 999_999, 103, 888_888],  # 999_999, 888_888: unknown
                "watch_ratio": [1.0] * 5,
                "timestamp": [0.0, 1.0, 2.0, 3.0, 0.0],
            }
        )
    )
    clean = Histories.from_frame(history.to_frame().filter(pl.col("video_id") < 1000))
    videos = np.array([100, 101, 777_777, 104, 105])
    scores = model.score(np.array([7, 8, 9]), videos, history)
    assert scores.shape == (3, 5) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    # The unknown candidate ranks below every known one, for every user.
    assert (scores[:, 2] < np.delete(scores, 2, axis=1).min(axis=1)).all()
    # Unknown videos in a history are skipped, not fed as garbage.
    np.testing.assert_allclose(scores[0], model.score(np.array([7]), videos, clean)[0], atol=1e-6)
    # Users with no known history (8: only an unknown video; 9: none) get popularity.
    np.testing.assert_allclose(scores[1], scores[2])


def test_save_and_load_round_trip(tmp_path):
    views = cyclic_views(n_users=40)
    model = small_model(epochs=2).fit(training(views))
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, SASRec) and loaded.hidden_size == 16
    history = Histories.from_frame(views)
    users, videos = np.array([5000, 5003]), np.arange(100, 100 + N_ITEMS)
    np.testing.assert_allclose(
        model.score(users, videos, history), loaded.score(users, videos, history), atol=1e-6
    )


def test_registered_and_bad_settings_are_clear_errors():
    assert model_class("sasrec") is SASRec
    with pytest.raises(ValueError, match="loss must be one of"):
        SASRec(loss="hinge", device="cpu").fit(training(cyclic_views(n_users=5)))
    with pytest.raises(ValueError, match="lack column"):
        SASRec(device="cpu").fit(training(pl.DataFrame({"user_id": [1], "video_id": [2]})))


def test_paper_presets_are_model_settings():
    ml = paper_preset("paper-ml-1m")
    assert (ml["maxlen"], ml["dropout"], ml["hidden_size"], ml["num_blocks"]) == (200, 0.2, 50, 2)
    games = paper_preset("games")
    assert (games["maxlen"], games["dropout"], games["learning_rate"]) == (50, 0.5, 0.001)
    assert SASRec(**ml).maxlen == 200
    with pytest.raises(ValueError, match="paper-ml-1m"):
        paper_preset("paper-netflix")
    assert SASRec.presets()["paper-beauty"]["dropout"] == 0.5


def test_a_fixed_divisor_weighs_positions_equally_across_batches():
    torch.manual_seed(0)
    hidden, embedding = torch.randn(2, 4, 8), torch.randn(11, 8)
    targets = torch.tensor([[1, 2, 0, 0], [3, 4, 5, 6]])
    no_dislikes = torch.zeros_like(targets, dtype=torch.bool)

    def loss(divisor):
        negatives = draw_negatives("bce", targets, 10, 1, make_generator(0))
        t, n = batch_item_vectors(embedding, targets, negatives)
        return next_item_loss("bce", hidden, targets, t, negatives, n, no_dislikes, 1.0,
                              embedding, divisor)  # fmt: skip

    assert torch.isclose(loss(None) * 6, loss(1.0))  # own count: 6 real positions
    assert torch.isclose(loss(3.0) * 3, loss(1.0))


def test_unseen_negatives_never_hit_the_users_items():
    keys = torch.from_numpy(seen_keys(np.array([0, 0, 1]), np.array([1, 2, 3]), n_items=5))
    drawn = torch.ones(2, 300, dtype=torch.int64)  # item 1: seen by row 0, not by row 1
    drawn[1] = 3  # seen by row 1
    fresh = redraw_seen(drawn, torch.tensor([0, 1]), keys, 5, make_generator(0))
    assert not torch.isin(fresh[0], torch.tensor([1, 2])).any()
    assert not (fresh[1] == 3).any() and (fresh > 0).all()
    # A user who has seen every item gets no negative at all (0, masked by the loss).
    everything = torch.from_numpy(seen_keys(np.zeros(5, int), np.arange(1, 6), n_items=5))
    none = redraw_seen(torch.ones(1, 4, dtype=torch.int64), torch.tensor([0]), everything, 5,
                       make_generator(0), rounds=3)  # fmt: skip
    assert (none == 0).all()


def test_the_paper_model_and_sampled_validation():
    split = leave_last_out_split(cyclic_views(n_users=120, length=16))
    sizes = ("epochs", "eval_every", "patience", "maxlen", "dropout", "hidden_size", "batch_size")
    paper = {k: v for k, v in paper_preset("paper-games").items() if k not in sizes}
    model = small_model(**{**paper, "validation_sampled": 20}, epochs=12, eval_every=4)
    model.fit(training(split.train, split.validation))
    assert not isinstance(model.net_.blocks[0].attention.out, torch.nn.Linear)
    assert model.fit_report_["validation"] == "sampled-20"
    assert model.fit_report_["best_validation_ndcg@10"] > 0.5  # the cycle is learned


# --- issue 18: feedback as input, long-history summary, targets, samplers ------------------
def branching_views(n_users: int = 200, length: int = 16, seed: int = 2) -> pl.DataFrame:
    """After a liked view of item i the next view is i + 1; after a disliked one, i + 7:
    only a model that reads each view's outcome can tell which comes next."""
    rng = np.random.default_rng(seed)
    items = np.zeros((n_users, length), np.int64)
    ratios = np.where(rng.random((n_users, length)) < 0.5, 1.0, 0.05)
    items[:, 0] = rng.integers(0, N_ITEMS, n_users)
    for t in range(1, length):  # builds test data, not library code
        step = np.where(ratios[:, t - 1] >= 0.7, 1, 7)
        items[:, t] = (items[:, t - 1] + step) % N_ITEMS
    return pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users), length) + 5000,
            "video_id": items.ravel() + 100,
            "timestamp": np.tile(np.arange(length), n_users).astype(float),
            "watch_ratio": ratios.ravel(),
        }
    )


def next_view_hit_rate(model: SASRec, views: pl.DataFrame) -> float:
    """Share of users whose top-1 after all but their last view is that last view."""
    ordered = views.sort(["user_id", "timestamp"])
    last = ordered.group_by("user_id", maintain_order=True).last()
    context = ordered.join(last.select("user_id", "timestamp"), on=["user_id", "timestamp"],
                           how="anti")  # fmt: skip
    users = last["user_id"].to_numpy()
    videos = np.arange(100, 100 + N_ITEMS)
    scores = model.score(users, videos, Histories.from_frame(context))
    return float((videos[scores.argmax(axis=1)] == last["video_id"].to_numpy()).mean())


def test_feedback_input_reads_each_views_outcome():
    views = branching_views()
    settings = dict(epochs=25, explicit_negatives=False, hidden_size=32, train_window="random")
    blind = small_model(**settings).fit(training(views, like_rule=THRESHOLD))
    reading = small_model(feedback_input=True, **settings).fit(training(views, like_rule=THRESHOLD))
    assert next_view_hit_rate(reading, views) >= 0.85
    assert next_view_hit_rate(blind, views) <= 0.65


def test_feedback_and_summary_survive_save_and_load(tmp_path):
    views = branching_views(n_users=40, length=30)
    model = small_model(epochs=2, feedback_input=True, history_summary="liked").fit(
        training(views, like_rule=THRESHOLD)
    )
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    history = Histories.from_frame(views)
    users, videos = np.array([5000, 5003]), np.arange(100, 100 + N_ITEMS)
    np.testing.assert_allclose(
        model.score(users, videos, history), loaded.score(users, videos, history), atol=1e-6
    )


def test_item_bias_is_learned_scored_and_saved(tmp_path):
    views = cyclic_views(n_users=30, length=20)
    model = small_model(
        epochs=2, item_bias=True, logq_correction=True, loss="sampled-softmax",
        n_negatives=8, negative_sampler="popularity", target_horizon=100,
    ).fit(training(views))  # fmt: skip
    bias = model.net_.item_bias.weight[1:, 0].detach().clone()
    assert float(bias.abs().max()) > 0  # trained away from its zero start
    history = Histories.from_frame(views)
    users, videos = np.array([5000, 5003]), np.arange(100, 100 + N_ITEMS)
    scores = model.score(users, videos, history)
    with torch.no_grad():
        model.net_.item_bias.weight.zero_()
    model._candidates = None
    unbiased = model.score(users, videos, history)
    np.testing.assert_allclose(scores - unbiased, np.broadcast_to(bias.numpy(), scores.shape),
                               atol=1e-5)  # fmt: skip
    model.save(tmp_path / "m")
    np.testing.assert_allclose(load_model(tmp_path / "m").score(users, videos, history), unbiased,
                               atol=1e-6)  # fmt: skip


def test_history_summary_reads_views_older_than_the_window():
    views = cyclic_views(n_users=30, length=20)
    model = small_model(epochs=1, maxlen=4, history_summary="all").fit(training(views))
    users, videos = np.array([5000]), np.arange(100, 100 + N_ITEMS)
    history = Histories.from_frame(views.filter(pl.col("user_id") == 5000))
    older = views.filter(pl.col("user_id") == 5000).with_columns(
        pl.when(pl.col("timestamp") < 10).then(pl.col("video_id") * 0 + 100 + 39)
        .otherwise(pl.col("video_id")).alias("video_id")
    )  # fmt: skip
    same_window = model.score(users, videos, Histories.from_frame(older))
    assert not np.allclose(model.score(users, videos, history), same_window)
    plain = small_model(epochs=1, maxlen=4).fit(training(views))
    np.testing.assert_allclose(plain.score(users, videos, history),
                               plain.score(users, videos, Histories.from_frame(older)),
                               atol=1e-6)  # fmt: skip


def test_older_views_are_the_views_before_each_window():
    from shortrec.data.histories import IdMap
    from shortrec.training.sequences import Sequences, feedback_codes

    views = cyclic_views(n_users=2, length=6)
    liked = np.tile([True, False], 6)
    video_map = IdMap.from_ids(views["video_id"])
    seqs = Sequences.from_frame(views, video_map, None, feedback_codes(liked, ~liked))
    items, offsets = seqs.older_views(np.array([1, 0]), np.array([3, 0]))
    assert items.tolist() == seqs.items[6:9].tolist() and offsets.tolist() == [0, 3]
    items, offsets = seqs.older_views(np.array([0, 1]), np.array([4, 4]), liked_only=True)
    assert items.tolist() == seqs.items[[0, 2, 6, 8]].tolist() and offsets.tolist() == [0, 2]


def test_a_target_horizon_draws_later_views_of_the_same_user():
    from shortrec.data.histories import IdMap
    from shortrec.training.sequences import Sequences

    views = cyclic_views(n_users=3, length=12)
    seqs = Sequences.from_frame(views, IdMap.from_ids(views["video_id"]))
    rows, ends = np.arange(3), np.array([6, 12, 8])
    rng = np.random.default_rng(0)
    inputs, targets, _, lengths = seqs.training_batch(rows, 20, ends, horizon=4, rng=rng)
    steps = set()
    for r, row in enumerate(rows):  # a handful of cells, checked one by one
        row_items = seqs.items[seqs.offsets[row] : seqs.offsets[row + 1]]
        first = ends[r] - lengths[r] - 1
        for t in range(lengths[r]):
            later = row_items[first + t + 1 : first + t + 5].tolist()
            assert targets[r, t] in later  # one of the next 4 views, never past the row
            steps.add(later.index(targets[r, t]) + 1)
    assert steps == {1, 2, 3, 4}
    nexts = seqs.training_batch(rows, 20, ends)[1]
    for r, row in enumerate(rows):
        first = seqs.offsets[row] + ends[r] - lengths[r]
        assert nexts[r, : lengths[r]].tolist() == seqs.items[first : first + lengths[r]].tolist()


def test_unlabelled_targets_get_no_positive_term():
    torch.manual_seed(0)
    hidden, embedding = torch.randn(1, 3, 8), torch.randn(11, 8)
    targets, negatives = torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6]])
    t, n = embedding[targets], embedding[negatives]
    none = torch.zeros(1, 3, dtype=torch.bool)
    middle = torch.tensor([[False, True, False]])

    def loss(unlabelled, sampled_weight=1.0):
        return next_item_loss("bce", hidden, targets, t, negatives, n, none, 1.0, embedding,
                              1.0, unlabelled, sampled_weight)  # fmt: skip

    target_logit = (hidden[0, 1] * t[0, 1]).sum()
    expected = loss(None) - torch.nn.functional.softplus(-target_logit)
    torch.testing.assert_close(loss(middle), expected)
    negative_part = torch.nn.functional.softplus((hidden * n).sum(-1)).sum()
    torch.testing.assert_close(loss(None) - loss(None, 0.0), negative_part)


def test_new_options_are_flags_with_help_and_checked():
    import dataclasses

    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(SASRec)}
    for name in ("feedback_input", "positives", "history_summary", "target_horizon",
                 "negative_sampler", "sampled_weight", "item_bias",
                 "logq_correction"):  # fmt: skip
        assert len(helps[name]) > 20, name
    with pytest.raises(ValueError, match="positives must be one of"):
        SASRec(positives="views", device="cpu").fit(training(cyclic_views(n_users=5)))
    with pytest.raises(ValueError, match="history_summary must be one of"):
        SASRec(history_summary="yes", device="cpu").fit(training(cyclic_views(n_users=5)))
    with pytest.raises(ValueError, match="logq_correction needs"):
        SASRec(logq_correction=True, device="cpu").fit(training(cyclic_views(n_users=5)))


def test_the_default_budget_stops_on_a_plateau_far_before_its_cap():
    defaults = SASRec()
    budget = {k: getattr(defaults, k)
              for k in ("epochs", "patience", "eval_every", "min_improvement",
                        "patience_fraction", "min_loss_decrease")}  # fmt: skip
    assert budget["epochs"] >= 200  # small logs may train as long as the paper's
    views = cyclic_views(length=18)  # the newest two views of each user validate
    model = small_model(**budget).fit(
        training(views.filter(pl.col("timestamp") < 16), views.filter(pl.col("timestamp") >= 16))
    )
    report = model.fit_report_
    # It trains while its loss falls 1% an epoch (66 epochs here), then stops on validation.
    assert report["epochs"] < 100 and report["best_validation_ndcg@10"] > 0.9
    waited = report["epochs"] - report["best_epoch"]
    assert waited >= budget["patience"] * budget["eval_every"]
    for preset in SASRec.presets().values():  # the paper's budget: 200 epochs, no adaptive rule
        assert (preset["epochs"], preset["min_improvement"], preset["patience_fraction"],
                preset["min_loss_decrease"]) == (200, 0.0, 0.0, 0.0)  # fmt: skip


@pytest.mark.parametrize(("item_init", "signal"), [("als", "views"), ("als-likes", "likes")])
def test_item_init_starts_the_item_tables_from_als_factors(item_init, signal):
    from shortrec.models.als import ALSRecommender

    views = cyclic_views(n_users=60)
    views = views.with_columns(watch_ratio=np.random.default_rng(0).uniform(0, 2, len(views)))
    data = training(views)
    als = ALSRecommender(signal=signal, factors=16, weighting="linear", seed=0)
    als = als.fit(data).item_factors_
    als = als - als.mean(axis=0)
    other = ALSRecommender(
        signal={"views": "likes", "likes": "views"}[signal], factors=16, weighting="linear"
    )
    other = other.fit(data).item_factors_
    assert not np.allclose(als, other - other.mean(axis=0), atol=1e-3)  # the signals differ
    frozen = small_model(epochs=2, item_init=item_init, item_init_freeze=2,
                         history_summary="all", item_init_summary_norm=2.5).fit(data)  # fmt: skip
    for table in (frozen.net_.item_embedding.weight, frozen.net_.summary_embedding.weight):
        rows = table[1:].detach().numpy()
        scale = float((rows * als).sum() / (als * als).sum())
        assert scale > 0
        np.testing.assert_allclose(rows, scale * als, rtol=1e-4, atol=1e-6)
    assert float(frozen.net_.item_embedding.weight[0].detach().abs().sum()) == 0.0  # padding
    summary = frozen.net_.summary_embedding.weight[1:].detach().numpy()
    views = data.views.with_columns(column=frozen.video_map_.index(data.views["video_id"]))
    per_user = views.group_by("user_id").agg("column")["column"].to_list()
    means = np.stack([summary[np.asarray(columns)].mean(axis=0) for columns in per_user])
    assert np.sqrt((means**2).sum(axis=1).mean()) == pytest.approx(2.5, rel=1e-4)
    params = frozen.params()
    assert (params["item_init"], params["item_init_freeze"], params["item_init_summary_norm"]) == (
        item_init, 2, 2.5)  # fmt: skip

    random = small_model(epochs=2).fit(data).net_.item_embedding.weight[1:].detach().numpy()
    assert abs(np.corrcoef(random.ravel(), als.ravel())[0, 1]) < 0.2
    thawed = small_model(epochs=2, item_init=item_init, item_init_freeze=1).fit(data)
    rows = thawed.net_.item_embedding.weight[1:].detach().numpy()
    assert not np.allclose(rows, float((rows * als).sum() / (als * als).sum()) * als, atol=1e-4)
    assert np.corrcoef(rows.ravel(), als.ravel())[0, 1] > 0.5  # trained on from the ALS start
    with pytest.raises(ValueError, match="item_init_freeze needs item_init als"):
        SASRec(item_init_freeze=3, device="cpu").fit(data)


def test_auto_window_is_the_newest_for_next_view_validation_else_random():
    views = cyclic_views(n_users=40)
    split = leave_last_out_split(views)  # validation: each user's one next view
    next_view = training(split.train, split.validation)
    auto = small_model(epochs=2, train_window="auto").fit(next_view)
    last = small_model(epochs=2, train_window="last").fit(next_view)
    assert auto.fit_report_["train_window"] == "last (auto)"
    assert last.fit_report_["train_window"] == "last"
    users, videos = np.array([5000, 5003]), np.arange(100, 100 + N_ITEMS)
    history = Histories.from_frame(split.train)
    np.testing.assert_array_equal(
        auto.score(users, videos, history), last.score(users, videos, history)
    )
    later = views.filter(pl.col("timestamp") >= 12)  # a later period: 4 views per user
    period = training(views.filter(pl.col("timestamp") < 12), later)
    assert (
        small_model(epochs=1, train_window="auto").fit(period).fit_report_["train_window"]
        == "random (auto)"
    )
    assert SASRec().train_window == "auto"

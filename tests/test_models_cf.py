"""Collaborative-filtering models (ALS, BPR, EASE, deep autoencoder, Mult-VAE) on a planted world.

Users come in two groups; each group watches its own half of the videos to the end and barely
starts the other half. A model that learned anything ranks a new user's group videos first.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fitting import training

from shortrec.data.histories import Histories, IdMap
from shortrec.models import REGISTRY, model_class
from shortrec.models.base import load_model
from shortrec.models.interactions import ViewWeighting

N_VIDEOS = 60  # videos 1000..1059; the first half belongs to group 0
GROUP_VIDEOS = {0: np.arange(1000, 1030), 1: np.arange(1030, 1060)}


def planted_views(user_ids: np.ndarray, views_per_user: int, seed: int) -> pl.DataFrame:
    """Each user (group = id % 2) watches `views_per_user` own-group videos (watch ratio ~1.2)
    and a fifth as many other-group videos (watch ratio ~0.1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for group in (0, 1):
        users = user_ids[user_ids % 2 == group]
        own = rng.choice(GROUP_VIDEOS[group], size=(len(users), views_per_user))
        other = rng.choice(GROUP_VIDEOS[1 - group], size=(len(users), max(1, views_per_user // 5)))
        for videos, ratio in ((own, 1.2), (other, 0.1)):
            rows.append(
                pl.DataFrame(
                    {
                        "user_id": np.repeat(users, videos.shape[1]),
                        "video_id": videos.ravel(),
                        "watch_ratio": rng.gamma(20.0, ratio / 20.0, videos.size),
                        "timestamp": rng.uniform(0, 1e6, videos.size),
                    }
                )
            )
    return pl.concat(rows)


@pytest.fixture(scope="module")
def world():
    train = planted_views(np.arange(200), views_per_user=15, seed=1)
    new_users = np.arange(10_000, 10_040)  # never seen in training
    history = planted_views(new_users, views_per_user=6, seed=2)
    return train, new_users, Histories.from_frame(history)


FAST = {
    "als": {"factors": 8, "iterations": 10, "regularization": 0.1},
    "bpr": {"factors": 8, "epochs": 30, "learning_rate": 0.05, "batch_size": 256},
    "ease": {},  # the default l2
    "autoencoder": {
        "hidden_sizes": "32,16",
        "epochs": 40,
        "batch_size": 32,
        "epoch_rows": 200,
        "device": "cpu",
        # These planted worlds have 200 users: the default bce loss (test_models_autoencoder.py)
        # needs more epochs than a fast test has; the multinomial one learns them in 40.
        "loss": "multinomial",
    },
    "multvae": {
        "hidden": 32,
        "latent": 8,
        "epochs": 40,
        "batch_size": 32,
        "epoch_rows": 200,
        "anneal_steps": 200,
        "device": "cpu",
    },
}
CF_MODELS = list(FAST)


@pytest.fixture(scope="module")
def fitted(world):
    train, _, _ = world
    return {name: model_class(name)(**FAST[name]).fit(training(train)) for name in CF_MODELS}


def group_auc(scores: np.ndarray, user_ids: np.ndarray, video_ids: np.ndarray) -> float:
    """Share of (own-group video, other-group video) pairs ranked the right way round."""
    own = (video_ids[None, :] >= 1030) == (user_ids[:, None] % 2 == 1)
    wins = []
    for row, mask in zip(scores, own, strict=True):
        diff = row[mask][:, None] - row[~mask][None, :]
        wins.append(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))
    return float(np.mean(wins))


def test_all_cf_models_are_registered():
    for name in CF_MODELS:
        assert name in REGISTRY
        assert model_class(name).name == name


@pytest.mark.parametrize("name", CF_MODELS)
def test_ranks_planted_group_first_for_new_users(world, fitted, name):
    _, new_users, histories = world
    videos = np.arange(1000, 1000 + N_VIDEOS)
    scores = fitted[name].score(new_users, videos, histories)
    assert scores.shape == (len(new_users), N_VIDEOS)
    assert scores.dtype == np.float32
    assert group_auc(scores, new_users, videos) > 0.9  # random ranks score 0.5


@pytest.mark.parametrize("name", CF_MODELS)
def test_unknown_videos_and_users_get_finite_low_scores(world, fitted, name):
    _, new_users, histories = world
    videos = np.array([1000, 5_555_555, 1031])
    users = np.append(new_users[:3], 77_777_777)  # the last one has no history at all
    scores = fitted[name].score(users, videos, histories)
    assert np.isfinite(scores).all()
    assert (scores[:, 1] < np.minimum(scores[:, 0], scores[:, 2])).all()
    no_history = fitted[name].score(users, videos, Histories.empty())
    assert np.isfinite(no_history).all()


@pytest.mark.parametrize("name", CF_MODELS)
def test_save_load_round_trip_scores_identically(world, fitted, name, tmp_path):
    _, new_users, histories = world
    videos = np.arange(990, 1070)  # includes unknown ids on both ends
    model = fitted[name]
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model) and loaded.params() == model.params()
    np.testing.assert_array_equal(
        loaded.score(new_users, videos, histories), model.score(new_users, videos, histories)
    )


def test_als_folds_in_updated_histories(world, fitted):
    """A user's scores follow their history: switching groups switches the top videos."""
    _, _, histories = world
    als = fitted["als"]
    user = np.array([10_000])  # group 0
    videos = np.arange(1000, 1060)
    before = als.score(user, videos, histories)[0]
    switched = histories.extend(
        pl.DataFrame(
            {
                "user_id": [10_000] * 30,
                "video_id": np.arange(1030, 1060),
                "watch_ratio": [3.0] * 30,
                "timestamp": [2e6] * 30,
            }
        )
    )
    after = als.score(user, videos, switched)[0]
    assert before[:30].mean() > before[30:].mean()
    assert after[30:].mean() > after[:30].mean()


def test_bpr_keeps_training_users_factors(world, fitted):
    bpr = fitted["bpr"]
    users = np.array([0, 1])
    factors = bpr.user_factors_from(Histories.empty(), users)
    np.testing.assert_array_equal(factors, bpr.user_factors_[bpr.user_map_.index(users)])


def test_autoencoder_early_stopping_uses_validation(world):
    train, _, _ = world
    validation = planted_views(np.arange(200), views_per_user=4, seed=3)
    model = model_class("autoencoder")(
        hidden_sizes="32,16",
        epochs=200,
        batch_size=32,
        epoch_rows=200,
        patience=2,
        device="cpu",
        loss="multinomial",
    ).fit(training(train, validation))
    history = model.fit_report_["history"]
    ndcg = [record["validation_ndcg@10"] for record in history]
    assert len(history) < 200  # stopped early
    assert max(ndcg) > 0.2  # a random ranking scores about 0.11 here
    assert ndcg.index(max(ndcg)) == len(ndcg) - 1 - 2  # best epoch is `patience` from the end


def test_bad_hyperparameters_raise_clear_errors(world):
    train, _, _ = world
    with pytest.raises(ValueError, match="weighting must be one of"):
        model_class("als")(weighting="squared").fit(training(train))
    with pytest.raises(ValueError, match="hidden_sizes"):
        model_class("autoencoder")(hidden_sizes="wide", device="cpu").fit(training(train))
    with pytest.raises(ValueError, match="l2 must be > 0"):
        model_class("ease")(l2=0.0).fit(training(train))
    with pytest.raises(ValueError, match="no views"):
        model_class("ease")().fit(training(train.head(0)))


# --- the confidence matrix ------------------------------------------------------------------
VIEWS = pl.DataFrame(
    {
        "user_id": [7, 7, 7, 9, 9, 12],
        "video_id": [100, 100, 200, 200, 300, 999],  # 999 is outside the video map
        "watch_ratio": [0.5, 2.0, 0.0, 40.0, 0.2, 1.0],
    }
)
USERS, VIDEOS = IdMap.from_ids([7, 9]), IdMap.from_ids([100, 200, 300])


def dense(weighting: ViewWeighting) -> np.ndarray:
    return weighting.views_matrix(VIEWS, USERS, VIDEOS).toarray()


def test_weighting_binary_linear_log():
    np.testing.assert_allclose(dense(ViewWeighting(weighting="binary")), [[1, 1, 0], [0, 1, 1]])
    # linear: the repeat keeps its max (2.0); 40 is clipped to max_watch_ratio=5
    np.testing.assert_allclose(
        dense(ViewWeighting(weighting="linear")), [[2.0, 0, 0], [0, 5.0, 0.2]]
    )
    np.testing.assert_allclose(
        dense(ViewWeighting(weighting="log")), np.log1p([[2.0, 0, 0], [0, 5.0, 0.2]]), rtol=1e-6
    )


def test_repeats_summed_and_filtered_views():
    np.testing.assert_allclose(dense(ViewWeighting(weighting="linear", repeat="sum"))[0, 0], 2.5)
    kept = ViewWeighting(weighting="binary", min_watch_ratio=0.7).views_matrix(VIEWS, USERS, VIDEOS)
    np.testing.assert_allclose(kept.toarray(), [[1, 0, 0], [0, 1, 0]])


def test_zero_weight_views_stay_as_explicit_entries():
    """A watch ratio of 0 weighs 0 under log weighting but is still a view for ALS."""
    matrix = ViewWeighting(weighting="log").views_matrix(VIEWS, USERS, VIDEOS)
    assert matrix.nnz == 4
    als = model_class("als")(alpha=10.0)
    confidence = als.confidences(matrix).toarray()
    assert confidence[0, 1] == pytest.approx(1.0)  # watched with ratio 0: confidence 1
    assert confidence[0, 0] == pytest.approx(1.0 + 10.0 * np.log1p(2.0))
    assert confidence[0, 2] == 0.0  # never watched: not stored


def test_history_matrix_follows_requested_user_order():
    histories = Histories.from_frame(VIEWS.with_columns(pl.lit(0.0).alias("timestamp")))
    matrix = ViewWeighting(weighting="binary").history_matrix(
        histories, np.array([9, 555, 7]), VIDEOS
    )
    np.testing.assert_allclose(matrix.toarray(), [[0, 1, 1], [0, 0, 0], [1, 1, 0]])
    empty = ViewWeighting().history_matrix(Histories.empty(), np.array([9, 7]), VIDEOS)
    assert empty.shape == (2, 3) and empty.nnz == 0


def test_ease_weights_match_the_textbook_inverse():
    import scipy.sparse as sp

    from shortrec.models.ease import ease_weights, gram_matrix

    matrix = sp.random(300, 40, density=0.2, format="csr", dtype=np.float32, random_state=0)
    dense = matrix.toarray().astype(np.float64)
    precision = np.linalg.inv(dense.T @ dense + 7.0 * np.eye(40))
    expected = precision / -np.diag(precision)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(gram_matrix(matrix), 7.0), expected, atol=1e-6)


def test_fast_argsort_matches_numpy_stable_argsort():
    from shortrec.models.interactions import stable_argsort

    rng = np.random.default_rng(0)
    for n, high in [(0, 5), (1, 5), (5_000, 50), (5_000, 2**40), (50, 2**62)]:
        keys = rng.integers(0, high, n)
        np.testing.assert_array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "flags"), [("ease", ["--l2", "50"]), ("als", ["--factors", "8"])])
def test_train_cli_end_to_end(tmp_path, name, flags):
    """`shortrec train MODEL` with model flags trains, evaluates and saves a loadable model."""
    import json

    from tiny_release import write_tiny_release
    from typer.testing import CliRunner

    from shortrec.cli import app

    data = write_tiny_release(tmp_path / "tiny")
    result = CliRunner().invoke(
        app, ["train", name, "--data", str(data), "--runs-dir", str(tmp_path / "runs"), *flags]
    )
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output
    (model_dir,) = (tmp_path / "runs").glob("*/model")
    saved = json.loads((model_dir / "model.json").read_text())
    assert saved["model"] == name
    assert saved["params"][flags[0][2:]] == float(flags[1])
    assert load_model(model_dir).name == name


# --- likes and dislikes ---------------------------------------------------------------------
def exposure_views(user_ids: np.ndarray, seed: int) -> pl.DataFrame:
    """The feed shows each user mostly the OTHER group's videos, which they swipe away (watch
    ratio ~0.1, disliked), and a few of their own group's, which they watch (~1.2, liked):
    exposure and taste point opposite ways."""
    rng = np.random.default_rng(seed)
    frames = []
    for group in (0, 1):
        users = user_ids[user_ids % 2 == group]
        for videos, n, ratio in ((GROUP_VIDEOS[group], 5, 1.2), (GROUP_VIDEOS[1 - group], 15, 0.1)):
            picked = rng.choice(videos, size=(len(users), n))
            frames.append(
                pl.DataFrame(
                    {
                        "user_id": np.repeat(users, n),
                        "video_id": picked.ravel(),
                        "watch_ratio": rng.gamma(20.0, ratio / 20.0, picked.size),
                        "timestamp": rng.uniform(0, 1e6, picked.size),
                    }
                )
            )
    return pl.concat(frames)


@pytest.mark.parametrize("name", CF_MODELS)
def test_likes_signal_learns_taste_and_views_signal_learns_exposure(name):
    train = training(exposure_views(np.arange(200), seed=4))
    new_users = np.arange(10_000, 10_040)
    histories = Histories.from_frame(exposure_views(new_users, seed=5))
    videos = np.arange(1000, 1000 + N_VIDEOS)
    auc = {}
    for signal in ("likes", "views"):
        model = model_class(name)(**FAST[name], signal=signal).fit(train)
        auc[signal] = group_auc(model.score(new_users, videos, histories), new_users, videos)
    assert auc["likes"] > 0.8, auc  # the group the user likes ranks first
    assert auc["views"] < 0.5, auc  # the group the feed showed ranks first


def test_histories_are_labelled_like_the_training_views():
    """The duration-aware rule labels a history at scoring time exactly as it labelled the
    same views in training (it needs each video's duration, which the model keeps)."""
    from shortrec.data.labels import LikeRule

    rng = np.random.default_rng(0)
    views = planted_views(np.arange(50), views_per_user=10, seed=6).with_columns(
        video_duration=pl.col("video_id").map_elements(
            lambda v: float(2000 + 977 * (v % 17)), return_dtype=pl.Float64
        )
    )
    views = views.with_columns(pl.Series("watch_ratio", rng.uniform(0, 2, views.height)))
    data = training(views, like_rule=LikeRule(kind="duration", n_buckets=4))
    model = model_class("ease")()
    users, videos = IdMap.from_ids(views["user_id"]), IdMap.from_ids(views["video_id"])
    model.fit_signal(data, videos)
    liked, disliked = model.signal_matrices(data.views, users, videos)
    from_history = model.history_signal(Histories.from_frame(views), users.raw_ids, videos)
    assert liked.nnz > 0 and disliked.nnz > 0
    np.testing.assert_array_equal(from_history[0].toarray(), liked.toarray())
    np.testing.assert_array_equal(from_history[1].toarray(), disliked.toarray())


def test_bpr_triples_pair_dislikes_with_likes_and_never_draw_a_liked_negative():
    bpr = model_class("bpr")(dislike_weight=2.0)
    import scipy.sparse as sp

    positives = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]], np.float32))
    dislikes = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], np.float32))
    users, pos, neg, weights = bpr._triples(positives, dislikes, np.random.default_rng(0))
    uniform = weights == 1.0
    assert uniform.sum() == positives.nnz and (weights[~uniform] == 2.0).sum() == 2
    assert positives[users, pos].A1.all()  # every positive is one of the user's likes
    assert not positives[users[uniform], neg[uniform]].A1.any()  # no liked negative
    assert sorted(zip(users[~uniform], neg[~uniform], strict=True)) == [(0, 2), (1, 5)]


def test_als_disliked_views_are_confident_zeros():
    """implicit reads a negative entry as preference 0 with that confidence."""
    import scipy.sparse as sp

    als = model_class("als")(alpha=2.0, dislike_confidence=0.5)
    liked = sp.csr_matrix(np.array([[1.0, 0.0, 0.0]], np.float32))
    disliked = sp.csr_matrix(np.array([[0.0, 1.0, 0.0]], np.float32))
    np.testing.assert_allclose(als.confidences(liked, disliked).toarray(), [[3.0, -2.0, 0.0]])

"""Two-tower: learns planted preferences (likes, not exposure), scores cold videos and new
users, regresses watch ratio better than the global mean, runs on a bare log, round-trips
through save/load and the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from fitting import chance_ndcg, release_training, training
from test_features_world import (
    category_of,
    exposure_log,
    preference_of,
    write_planted_world,
    write_sasrec_text,
)
from typer.testing import CliRunner

from shortrec.data.dataset import load_prepared
from shortrec.data.histories import Histories
from shortrec.data.labels import LikeRule
from shortrec.data.splits import kuairec_split
from shortrec.evaluation.extras import regression_errors
from shortrec.evaluation.protocol import evaluate
from shortrec.models.base import load_model
from shortrec.models.regression import MeanRegressor
from shortrec.models.two_tower import TwoTowerRecommender

COLD = np.arange(130, 150)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    directory = write_planted_world(tmp_path_factory.mktemp("two_tower") / "world")
    split = kuairec_split(load_prepared(directory))
    model = TwoTowerRecommender(
        embedding_dim=32, hidden_dim=64, batch_size=512, epochs=20,
        learning_rate=5e-3, regression_weight=3.0, patience=5,
    ).fit(release_training(directory, split))  # fmt: skip
    return directory, split, model


def test_beats_random_on_planted_preferences(fitted):
    _, split, model = fitted
    rule = LikeRule().fit(split.train)
    ours = evaluate(model, split, "test", rule, progress=False, n_resamples=100)
    assert ours.summary["ndcg@10"].mean > chance_ndcg(split, rule) + 0.3
    history = model.fit_report_["history"]
    assert history and "validation_ndcg@10" in history[0]


def test_cold_videos_rank_by_content(fitted):
    _, split, model = fitted
    histories = Histories.from_frame(split.train)
    users = np.arange(20)
    scores = model.score(users, COLD, histories)
    assert scores.shape == (20, 20) and np.isfinite(scores).all()
    match = category_of(COLD)[None, :] == preference_of(users)[:, None]
    # every user's cold videos of their own category outscore the unrelated cold videos
    margin = [scores[i, match[i]].mean() - scores[i, ~match[i]].mean() for i in range(20)]
    assert np.mean(np.array(margin) > 0) >= 0.9


def test_new_users_fall_back_to_features_and_history(fitted):
    _, split, model = fitted
    videos = np.arange(130)
    nobody = model.score(np.array([10_000]), videos, Histories.empty())
    assert np.isfinite(nobody).all()
    # a user the model never saw, with a fresh history in category 2, gets category 2 first
    fresh = pl.DataFrame({"user_id": [10_001] * 6, "video_id": [2, 7, 12, 17, 22, 27],
                          "watch_ratio": [1.5] * 6, "timestamp": np.arange(6.0)})  # fmt: skip
    scores = model.score(np.array([10_001]), videos, Histories.from_frame(fresh))[0]
    top = videos[np.argsort(-scores)[:10]]
    assert np.mean(category_of(top) == 2) >= 0.8


def test_regression_head_beats_the_global_mean(fitted):
    # Early stopping picks the epoch that ranks best (validation NDCG@10), which on this tiny
    # world is before the head has converged: without validation views all 20 epochs run.
    directory, split, _ = fitted
    data = release_training(directory, split)
    model = TwoTowerRecommender(
        embedding_dim=32, hidden_dim=64, batch_size=512, epochs=20,
        learning_rate=5e-3, regression_weight=3.0,
    ).fit(data.with_views(data.views))  # fmt: skip
    ours = regression_errors(model.predict_watch_ratio, split, "test", n_resamples=100)
    means = MeanRegressor(by="global").fit(training(split.train))
    mean = regression_errors(means.predict_watch_ratio, split, "test", 100)
    assert ours["mae"] < 0.8 * mean["mae"]
    assert ours["rmse"] < mean["rmse"]
    predicted = model.predict_watch_ratio(np.array([0, 0]), np.array([0, 1]), Histories.empty())
    assert predicted.shape == (2,) and (predicted >= 0).all()


def test_save_load_round_trip(fitted, tmp_path):
    _, split, model = fitted
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    histories = Histories.from_frame(split.train)
    users, videos = np.arange(10), np.arange(150)
    np.testing.assert_allclose(
        loaded.score(users, videos, histories), model.score(users, videos, histories), atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.predict_watch_ratio(users, videos[:10], histories),
        model.predict_watch_ratio(users, videos[:10], histories),
        atol=1e-6,
    )


def test_cli_trains_and_evaluates_two_tower(fitted, tmp_path):
    from shortrec.cli import app

    directory, _, _ = fitted
    result = CliRunner().invoke(
        app,
        ["train", "two-tower", "--data", str(directory), "--runs-dir", str(tmp_path),
         "--epochs", "2", "--batch-size", "512", "--embedding-dim", "16", "--hidden-dim", "32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = next(tmp_path.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tune"]["summary"]["ndcg@10"]["mean"] > 0
    assert (run_dir / "model" / "network_.pt").exists()
    assert metrics["fit"]["features"]["uses"] == [
        "user_features", "tags", "categories", "video_duration", "item_daily_features"
    ]  # fmt: skip


SMALL = dict(
    embedding_dim=16, hidden_dim=32, batch_size=256, epochs=15, patience=15, learning_rate=1e-2
)


def _preferred_margin(model: TwoTowerRecommender, log: pl.DataFrame) -> np.ndarray:
    """Per user: mean score of their preferred category minus the exposed (disliked) one."""
    users, videos = np.arange(60), np.arange(100)
    scores = model.score(users, videos, Histories.from_frame(log))
    preferred = category_of(videos)[None, :] == preference_of(users)[:, None]
    exposed = category_of(videos)[None, :] == (preference_of(users)[:, None] + 1) % 5
    return np.array([s[p].mean() - s[e].mean() for s, p, e in zip(scores, preferred, exposed,
                                                                   strict=True)])  # fmt: skip


def test_learns_likes_not_exposure_on_a_bare_log():
    log = exposure_log()
    data = training(log)
    liked = TwoTowerRecommender(**SMALL).fit(data)
    assert np.mean(_preferred_margin(liked, log) > 0) >= 0.9
    report = liked.fit_report_
    assert report["positives"] == "liked views (threshold:0.7)"
    assert report["dislikes"].startswith("explicit negatives")
    assert report["features"] == {"uses": [], "lacks": ["user_features", "tags", "categories",
                                  "video_duration", "item_daily_features"]}  # fmt: skip
    # every view a positive: the model learns what the feed showed, the wrong category
    views = TwoTowerRecommender(**SMALL, positives="views").fit(data)
    assert np.mean(_preferred_margin(views, log) < 0) >= 0.9
    assert views.fit_report_["dislikes"] == "not used"


def test_log_without_watch_ratio_treats_every_view_as_liked():
    log = exposure_log(n_users=30, views_per_user=30).drop("watch_ratio")
    data = training(log)
    model = TwoTowerRecommender(**SMALL | {"epochs": 2}).fit(data)
    assert model.fit_report_["positives"] == "every view: the log has no watch ratio"
    scores = model.score(np.array([0, 999]), np.arange(100), Histories.from_frame(data.views))
    assert np.isfinite(scores).all() and scores.std() > 0
    # as the evaluation scores it: histories of the log itself, watch ratios missing (NaN)
    raw = log.with_columns(pl.lit(None, dtype=pl.Float64).alias("watch_ratio"))
    scores = model.score(np.array([0, 1]), np.arange(100), Histories.from_frame(raw))
    assert np.isfinite(scores).all() and scores.std() > 0


def test_cli_trains_on_a_sasrec_text_file(tmp_path):
    from shortrec.cli import app

    path = write_sasrec_text(tmp_path / "log.txt", exposure_log(n_users=30, views_per_user=30))
    result = CliRunner().invoke(
        app,
        ["train", "two-tower", "--data", str(path), "--protocol", "leave-last-out",
         "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(next((tmp_path / "runs").iterdir()).joinpath("metrics.json").read_text())
    assert {"user_features", "tags", "categories"} <= set(metrics["fit"]["features"]["lacks"])
    assert metrics["tune"]["summary"]["ndcg@10"]["mean"] >= 0

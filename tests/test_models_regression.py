"""Watch-ratio regression baselines: metrics, means, ridge regression on features."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from fitting import chance_ndcg, release_training, training
from test_features_world import exposure_log, write_sasrec_text
from typer.testing import CliRunner

from shortrec.data.histories import Histories
from shortrec.data.labels import LikeRule
from shortrec.evaluation.extras import regression_errors, regression_metrics
from shortrec.evaluation.protocol import evaluate
from shortrec.models.base import load_model
from shortrec.models.regression import (
    LinearRegressionRecommender,
    MeanRegressor,
    ridge_fit,
)


def test_regression_metrics_hand_computed():
    m = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(np.sqrt(5 / 3))
    with pytest.raises(ValueError, match="shape"):
        regression_metrics(np.zeros(2), np.zeros(3))


def test_mean_regressor_means_and_fallbacks(tmp_path):
    train = pl.DataFrame({"user_id": [1, 1, 2, 2], "video_id": [10, 11, 10, 11],
                          "watch_ratio": [1.0, 3.0, 1.0, 99.0]})  # fmt: skip
    # 99 is capped at 5: global mean (1 + 3 + 1 + 5) / 4 = 2.5
    model = MeanRegressor(by="video", shrinkage=0.0).fit(training(train))
    assert model.global_mean_ == pytest.approx(2.5)
    predicted = model.predict_watch_ratio(np.array([1, 1, 7]), np.array([10, 11, 12]), None)
    assert predicted == pytest.approx([1.0, 4.0, 2.5])  # unknown video: the global mean
    assert model.score(np.array([1, 2]), np.array([10, 11]), None)[0].argmax() == 1
    by_user = MeanRegressor(by="user", shrinkage=2.0).fit(training(train))
    # user 1 residuals (-1.5, 0.5) summed over 2 views + 2 shrinkage views -> -0.25
    assert by_user.predict_watch_ratio(np.array([1]), np.array([10]), None)[0] == pytest.approx(
        2.25
    )
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(
        loaded.predict_watch_ratio(np.array([1, 7]), np.array([11, 10]), None),
        model.predict_watch_ratio(np.array([1, 7]), np.array([11, 10]), None),
    )
    with pytest.raises(ValueError, match="must be one of"):
        MeanRegressor(by="median").fit(training(train))


def test_ridge_fit_recovers_a_linear_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 3))
    y = 2.0 + x @ np.array([1.0, -3.0, 0.5])
    chunks = ((x[i : i + 1000], y[i : i + 1000]) for i in range(0, 5000, 1000))
    coef, intercept, n = ridge_fit(chunks, ridge=1e-9)
    assert n == 5000
    np.testing.assert_allclose(coef, [1.0, -3.0, 0.5], atol=1e-6)
    assert intercept == pytest.approx(2.0)


def test_linear_regression_beats_means_and_ranks(planted_release, tmp_path):
    directory, split = planted_release
    model = LinearRegressionRecommender().fit(release_training(directory, split))
    ours = regression_errors(model.predict_watch_ratio, split, "test", n_resamples=100)
    means = MeanRegressor(by="global").fit(release_training(directory, split))
    global_mean = regression_errors(means.predict_watch_ratio, split, "test", n_resamples=100)
    assert ours["mae"] < 0.7 * global_mean["mae"]
    assert ours["rmse"] < global_mean["rmse"]
    low, high = ours["mae_interval"]
    assert low <= ours["mae"] <= high
    assert ours["pairs"] > 0 and {"mae_capped", "rmse_capped"} <= set(ours)
    rule = LikeRule().fit(split.train)
    ranked = evaluate(model, split, "test", rule, progress=False, n_resamples=100)
    assert ranked.summary["ndcg@10"].mean > chance_ndcg(split, rule) + 0.3
    # the grid score is the pairwise prediction (before clipping at 0)
    histories = Histories.from_frame(split.train)
    users, videos = np.array([0, 3, 999]), np.array([1, 2, 140])
    grid = model.score(users, videos, histories)
    pairs = model.predict_watch_ratio(np.repeat(users, 3), np.tile(videos, 3), histories)
    np.testing.assert_allclose(np.maximum(grid.ravel(), 0), pairs, rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "linear")
    np.testing.assert_allclose(
        load_model(tmp_path / "linear").score(users, videos, histories), grid, rtol=1e-6
    )


def test_cli_trains_linear_regression(planted_release, tmp_path):
    from shortrec.cli import app

    directory, _ = planted_release
    result = CliRunner().invoke(
        app, ["train", "linear-regression", "--data", str(directory), "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    run_dir = next(tmp_path.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tune"]["summary"]["ndcg@10"]["mean"] > 0.5


def test_linear_regression_on_a_bare_log(tmp_path):
    """No side tables, no durations: it fits on history aggregates and training popularity and
    says so; without watch ratios it regresses "viewed" against random unviewed videos."""
    log = exposure_log(n_users=30, views_per_user=40)
    model = LinearRegressionRecommender().fit(training(log))
    assert model.fit_report_["target"] == "capped watch ratio"
    assert model.fit_report_["features"]["uses"] == []
    histories = Histories.from_frame(log)
    assert np.isfinite(model.score(np.array([0, 1, 999]), np.arange(100), histories)).all()
    bare = LinearRegressionRecommender().fit(training(log.drop("watch_ratio")))
    assert bare.fit_report_["target"].startswith("viewed in the label views or not")
    scores = bare.score(np.array([0, 1]), np.arange(100), histories)
    # the more often a video was viewed, the likelier a view: scores follow view counts
    views = np.bincount(log["video_id"].to_numpy(), minlength=100)
    assert np.corrcoef(scores.mean(0), views)[0, 1] > 0.5


def test_cli_trains_linear_regression_on_a_sasrec_text_file(tmp_path):
    from shortrec.cli import app

    path = write_sasrec_text(tmp_path / "log.txt", exposure_log(n_users=30, views_per_user=30))
    result = CliRunner().invoke(
        app,
        ["train", "linear-regression", "--data", str(path), "--protocol", "leave-last-out",
         "--runs-dir", str(tmp_path / "runs")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(next((tmp_path / "runs").iterdir()).joinpath("metrics.json").read_text())
    # positions, not times: the label views are each user's last tenth
    assert metrics["fit"]["labels"] == "each user's last 10% of views"
    assert metrics["tune"]["summary"]["ndcg@10"]["mean"] >= 0

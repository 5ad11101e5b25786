"""Two-stage: retrievers propose, LightGBM LambdaRank reranks, candidate recall is reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fitting import release_training, training
from test_features_world import exposure_log, write_planted_world, write_sasrec_text
from typer.testing import CliRunner

from shortrec.data.dataset import load_prepared
from shortrec.data.histories import Histories
from shortrec.data.labels import LikeRule
from shortrec.data.splits import kuairec_split
from shortrec.evaluation.extras import candidate_recall
from shortrec.evaluation.protocol import evaluate
from shortrec.models.base import load_model
from shortrec.models.baselines import PopularRecommender
from shortrec.models.two_stage import TwoStageRecommender


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    directory = write_planted_world(tmp_path_factory.mktemp("two_stage") / "world")
    split = kuairec_split(load_prepared(directory))
    model = TwoStageRecommender(retrievers="ease,popular", candidates_per_retriever=20).fit(
        release_training(directory, split)
    )
    return directory, split, model


def test_fit_reports_candidate_recall_on_the_label_days(fitted):
    _, _, model = fitted
    report = model.fit_report_
    assert report["label_users"] > 0 and report["candidate_rows"] > 0
    assert 0.0 < report["label_candidate_recall"] <= 1.0
    # at most 20 + 20 candidates per user, at least 20 (the retrievers may agree)
    assert 20 <= report["candidates_per_user"] <= 40


def test_reranks_candidates_above_everything_else(fitted):
    _, split, model = fitted
    histories = Histories.from_frame(split.train)
    users, videos = np.arange(12), np.arange(150)
    scores = model.score(users, videos, histories)
    mask = model.candidate_mask(users, videos, histories)
    assert scores.shape == (12, 150) and np.isfinite(scores).all()
    assert mask.sum(1).min() >= 20
    for row, is_candidate in zip(scores, mask, strict=True):
        assert row[is_candidate].min() > row[~is_candidate].max()
    seen = histories.seen_matrix(users, model.retrievers_[0].video_map_).toarray() > 0
    assert not (mask[:, :130][seen[:, :130]]).any()  # seen videos are never candidates


def test_beats_popularity_and_reports_candidate_recall(fitted):
    _, split, model = fitted
    rule = LikeRule().fit(split.train)
    ours = evaluate(model, split, "test", rule, progress=False, n_resamples=100)
    popular = PopularRecommender().fit(training(split.train))
    base = evaluate(popular, split, "test", rule, progress=False, n_resamples=100)
    assert ours.summary["ndcg@10"].mean > base.summary["ndcg@10"].mean + 0.1
    recall = candidate_recall(model.candidate_mask, split, "test", rule, n_resamples=100)
    assert 0.0 < recall["candidate_recall"] <= 1.0
    low, high = recall["candidate_recall_interval"]
    assert low <= recall["candidate_recall"] <= high
    assert recall["users"] > 0


def test_save_load_round_trip(fitted, tmp_path):
    _, split, model = fitted
    model.save(tmp_path / "two_stage")
    loaded = load_model(tmp_path / "two_stage")
    histories = Histories.from_frame(split.train)
    users, videos = np.array([0, 5, 77777]), np.arange(150)
    np.testing.assert_allclose(
        loaded.score(users, videos, histories), model.score(users, videos, histories), rtol=1e-6
    )
    assert loaded.fit_report_ == model.fit_report_


def test_unknown_retriever_is_a_clear_error(fitted):
    directory, split, _ = fitted
    with pytest.raises(ValueError, match="not usable models"):
        TwoStageRecommender(retrievers="ease,nope").fit(release_training(directory, split))


def test_cli_trains_two_stage(fitted, tmp_path):
    from shortrec.cli import app

    directory, _, _ = fitted
    result = CliRunner().invoke(
        app,
        ["train", "two-stage", "--data", str(directory), "--runs-dir", str(tmp_path),
         "--retrievers", "ease,popular", "--candidates-per-retriever", "15"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = next(tmp_path.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 < metrics["fit"]["label_candidate_recall"] <= 1.0
    assert metrics["tune"]["summary"]["ndcg@10"]["mean"] > 0


def test_two_stage_on_a_log_without_watch_ratio():
    """Every view liked: the reranker learns which candidates were viewed in the label days,
    on id-only features, and the report says so."""
    log = exposure_log(n_users=40, views_per_user=40).drop("watch_ratio")
    data = training(log)
    model = TwoStageRecommender(retrievers="ease,popular", candidates_per_retriever=20).fit(data)
    report = model.fit_report_
    assert report["labels"] == "viewed in last 3 days: the log has no watch ratio"
    assert report["features"]["uses"] == [] and report["label_users"] > 0
    scores = model.score(np.array([0, 999]), np.arange(100), Histories.from_frame(data.views))
    assert np.isfinite(scores).all()


def test_cli_trains_two_stage_on_a_sasrec_text_file(tmp_path):
    from shortrec.cli import app

    path = write_sasrec_text(tmp_path / "log.txt", exposure_log(n_users=40, views_per_user=30))
    result = CliRunner().invoke(
        app,
        ["train", "two-stage", "--data", str(path), "--protocol", "leave-last-out",
         "--runs-dir", str(tmp_path / "runs"), "--retrievers", "ease,popular"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(next((tmp_path / "runs").iterdir()).joinpath("metrics.json").read_text())
    assert metrics["fit"]["labels"].endswith("in each user's last 10% of views")
    assert metrics["tune"]["summary"]["ndcg@10"]["mean"] >= 0

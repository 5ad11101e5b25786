"""The model contract, checked on every REGISTRY entry (fit, score shape and dtype, unknown
users and videos, save/load round trip, refusing to score before fit, hyperparameter
metadata and validation); a new model plugs in with one module and one registry line;
learned state persists by default; one like rule flows from the CLI to the labels;
comparisons never mix like rules; NaN scores rank last; explicit flags win over presets."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
from fitting import release_training, training
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.histories import Histories, IdMap
from shortrec.data.labels import LikeRule
from shortrec.evaluation.metrics import full_ranking_metrics
from shortrec.evaluation.protocol import rank_nan_last
from shortrec.models import REGISTRY, model_class
from shortrec.models.base import (
    FitContext,
    NotFittedError,
    Recommender,
    TrainingData,
    hyperparameter,
    load_model,
)

runner = CliRunner()


@dataclasses.dataclass
class LikedCount(Recommender):
    """The README's "Adding a model" example: videos ranked by how many users liked them,
    shrunk by a prior; disliked views count against a video."""

    name: ClassVar[str] = "liked-count"
    prior: float = hyperparameter(1.0, "Likes' worth of shrinkage.", minimum=0.0)

    def fit(self, data: TrainingData, context: FitContext | None = None) -> LikedCount:
        views = data.views.with_columns(
            (pl.col("liked").cast(pl.Float64) - pl.col("disliked").cast(pl.Float64)).alias("s")
        )
        table = views.group_by("video_id").agg(pl.col("s").sum()).sort("video_id")
        self.video_map_ = IdMap(table["video_id"].to_numpy())
        self.scores_ = (table["s"].to_numpy() / (1.0 + self.prior)).astype(np.float32)
        self.fit_report_ = {"videos": len(self.video_map_), "rule": str(data.like_rule)}
        return self

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        rows = self.video_map_.index(video_ids)  # -1: never seen; the base ranks those last
        row = self.scores_[np.maximum(rows, 0)]
        return np.broadcast_to(row, (len(user_ids), len(row))).copy()


@dataclasses.dataclass
class NaNScorer(Recommender):
    """Scores every video NaN but one: a broken model must not look like a perfect one."""

    name: ClassVar[str] = "nan-scorer"

    def fit(self, data: TrainingData, context: FitContext | None = None) -> NaNScorer:
        return self

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        scores = np.full((len(user_ids), len(video_ids)), np.nan, dtype=np.float32)
        scores[:, 0] = 1.0
        return scores


@pytest.fixture
def registered(monkeypatch):
    module = types.ModuleType("contract_models")
    module.LikedCount, module.NaNScorer = LikedCount, NaNScorer
    monkeypatch.setitem(sys.modules, "contract_models", module)
    monkeypatch.setitem(REGISTRY, "liked-count", "contract_models:LikedCount")
    monkeypatch.setitem(REGISTRY, "nan-scorer", "contract_models:NaNScorer")


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def run_of(output: str) -> Path:
    return Path(re.search(r"run: (\S+)", output).group(1))


def test_a_new_model_plugs_in_end_to_end(registered, tiny_release, tmp_path):
    output = invoke("train", "liked-count", "--data", tiny_release, "--runs-dir", tmp_path,
                    "--prior", "2.5", "--like-rule", "threshold:0.7", "--test",
                    "--no-progress")  # fmt: skip
    run = run_of(output)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fit"]["rule"] == "threshold:0.7"  # the CLI's rule reached fit
    assert metrics["test"]["summary"]["ndcg@10"]["mean"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["params"]["prior"] == 2.5 and config["like_rule"]["kind"] == "threshold"
    loaded = load_model(run / "model")  # default persistence: arrays, id maps, fit report
    assert isinstance(loaded.video_map_, IdMap) and loaded.fit_report_["rule"] == "threshold:0.7"
    recommended = invoke("recommend", run, "--users", "0", "--k", "3")
    assert "video_id" in recommended


def test_default_persistence_round_trips_every_supported_type(tmp_path):
    import scipy.sparse as sp
    import torch

    @dataclasses.dataclass
    class Everything(Recommender):
        name: ClassVar[str] = "everything"

        def new_module(self, attribute: str) -> torch.nn.Module:
            return torch.nn.Linear(3, 2)

    model = Everything()
    model.ids_ = IdMap(np.array([3, 7]))
    model.weights_ = np.arange(6, dtype=np.float32).reshape(2, 3)
    model.table_ = pl.DataFrame({"a": [1, 2]})
    model.matrix_ = sp.csr_matrix(np.eye(3, dtype=np.float32))
    model.rule_ = LikeRule().fit(
        pl.DataFrame({"watch_ratio": [0.1, 2.0], "video_duration": [5, 9]})
    )
    model.net_ = torch.nn.Linear(3, 2)
    model.fit_report_ = {"history": [{"epoch": 1, "loss": 0.5}]}
    model._cache = object()  # private: never saved
    model.save_state(tmp_path)
    loaded = Everything()
    loaded.load_state(tmp_path)
    assert loaded.ids_.to_list() == [3, 7]
    np.testing.assert_array_equal(loaded.weights_, model.weights_)
    assert loaded.table_.equals(model.table_)
    assert (loaded.matrix_ != model.matrix_).nnz == 0
    assert loaded.rule_ == model.rule_ and loaded.rule_.is_fitted
    assert torch.equal(loaded.net_.weight, model.net_.weight)
    assert loaded.fit_report_ == model.fit_report_ and not hasattr(loaded, "_cache")
    model.odd_ = object()
    with pytest.raises(TypeError, match="override save_state"):
        model.save_state(tmp_path)


def test_training_data_labels_and_logs_without_watch_ratio():
    views = pl.DataFrame({"user_id": [1, 1, 2], "video_id": [5, 6, 5], "timestamp": [1.0, 2, 3]})
    data = TrainingData.build(views)
    assert not data.has_watch_ratio and str(data.like_rule) == "all"
    assert data.liked.all() and not data.disliked.any()
    assert data.user_map.to_list() == [1, 2] and data.video_map.to_list() == [5, 6]
    rated = training(views.with_columns(pl.Series("watch_ratio", [0.1, 0.9, 0.5])))
    assert rated.liked.tolist() == [False, True, False]
    assert rated.disliked.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="needs video durations"):
        TrainingData.build(rated.views.drop("liked", "disliked"), like_rule=LikeRule())


def test_like_rule_has_one_default_and_one_text_form():
    assert str(LikeRule()) == "duration:0.8"
    for text in ("duration:0.8", "threshold:0.7", "all", "duration:0.9"):
        assert str(LikeRule.parse(text)) == text
    for bad in ("median", "duration:1.5", "threshold:x", "all:3"):
        with pytest.raises(ValueError, match="--like-rule"):
            LikeRule.parse(bad)


def test_comparisons_never_mix_like_rules(tiny_release, tmp_path):
    runs = tmp_path / "runs"
    common = ("--data", tiny_release, "--runs-dir", runs, "--test", "--no-progress")
    a = run_of(invoke("train", "popular", *common))
    b = run_of(invoke("train", "ease", *common))
    c = run_of(invoke("train", "ease", *common, "--like-rule", "threshold:0.7"))
    output = invoke("leaderboard", "--runs-dir", runs, "--on", "test")
    assert "like rule duration:0.8" in output and "like rule threshold:0.7" in output
    assert "of judged views liked" in output
    assert "B-A" in invoke("compare", a, b, "--on", "test")
    refused = runner.invoke(app, ["compare", str(a), str(c), "--on", "test"])
    assert refused.exit_code == 2 and "like rule" in refused.output


def test_nan_scores_rank_last_and_are_reported(registered, tiny_release, tmp_path):
    output = invoke(
        "train", "nan-scorer", "--data", tiny_release, "--runs-dir", tmp_path, "--no-progress"
    )
    assert "NaN scores ranked last" in output
    metrics = json.loads((run_of(output) / "metrics.json").read_text())
    assert metrics["tune"]["aggregate"]["nan_scores"] > 0
    # torch.topk alone ranks NaN first: the relevant NaN-scored video would look perfect.
    scores = np.array([[np.nan, 0.5, 0.2, -np.inf]], dtype=np.float32)
    relevant = np.array([[True, False, False, False]])
    assert rank_nan_last(scores) == 1
    per_user, top = full_ranking_metrics(scores, relevant, ks=(1, 3))
    assert per_user["ndcg@1"][0] == 0.0 and top[0].tolist() == [1, 2, 0]


def test_explicit_flags_win_over_a_preset_even_at_the_default_value(tmp_path):
    lines = [f"{u} {(u * 7 + t) % 300 + 1}" for u in range(1, 21) for t in range(8)]
    data = tmp_path / "toy.txt"
    data.write_text("\n".join(lines) + "\n")
    invoke("train", "sasrec", "--data", data, "--protocol", "leave-last-out",
           "--preset", "paper-games", "--dropout", "0.2", "--epochs", "1", "--maxlen", "8",
           "--hidden-size", "8", "--runs-dir", tmp_path / "runs", "--no-progress")  # fmt: skip
    (model_json,) = (tmp_path / "runs").rglob("model.json")
    params = json.loads(model_json.read_text())["params"]
    assert params["dropout"] == 0.2  # the default value, given explicitly: it wins
    assert params["num_blocks"] == 2 and params["hidden_size"] == 8


# --- the contract, on every registered model ---------------------------------------------------
# Small settings so that every model trains on the tiny release in seconds; a model missing
# here trains with its defaults.
FAST: dict[str, dict] = {
    "sasrec": {"epochs": 2, "maxlen": 8, "hidden_size": 8, "eval_every": 1},
    "two-tower": {"epochs": 2, "embedding_dim": 8, "hidden_dim": 8},
    "two-stage": {"n_estimators": 10, "candidates_per_retriever": 10},
    "als": {"factors": 4, "iterations": 3},
    "bpr": {"factors": 4, "epochs": 3},
    "autoencoder": {"epochs": 2, "hidden_sizes": "8", "epoch_rows": 100},
    "multvae": {"epochs": 2, "hidden": 8, "latent": 4, "epoch_rows": 100},
}
RANDOM_BY_DESIGN = {"random"}  # ranks unknown videos at random, like every other video
UNKNOWN_USER, UNKNOWN_VIDEO = 10**9, 10**9 + 1


@pytest.fixture(scope="module")
def contract_data(tiny_synth_world):
    """The tiny synthetic release: side features for the content models, ground truth for
    the oracle."""
    from shortrec.data.dataset import load_prepared
    from shortrec.data.splits import kuairec_split

    release = tiny_synth_world / "prepared"
    split = kuairec_split(load_prepared(release))
    data = release_training(release, split)
    histories = Histories.from_frame(split.train)
    users = np.append(histories.user_ids[:6], UNKNOWN_USER)
    videos = np.append(data.video_map.raw_ids[:20], UNKNOWN_VIDEO)
    return data, histories, users, videos


def test_every_fast_setting_names_a_registered_model():
    assert set(FAST) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_keeps_the_contract(name, contract_data, tmp_path):
    data, histories, users, videos = contract_data
    cls = model_class(name)
    model = cls(**FAST.get(name, {}))
    with pytest.raises(NotFittedError, match="before scoring"):
        model.score(users, videos, histories)
    reported: list[tuple[int, float]] = []
    context = FitContext(progress=False, on_epoch_end=lambda e, s: reported.append((e, s)))
    assert model.fit(data, context) is model
    if cls.reports_epochs:  # the tuner watches the same metric for every model
        assert reported and all(0.0 <= score <= 1.0 for _, score in reported)
        validated = [r for r in model.fit_report_["history"] if "validation_ndcg@10" in r]
        assert [r["validation_ndcg@10"] for r in validated] == [s for _, s in reported]

    scores = model.score(users, videos, histories)
    assert scores.shape == (len(users), len(videos)) and scores.dtype == np.float32
    assert np.isfinite(scores).all(), "unknown users and videos still get finite scores"
    if name not in RANDOM_BY_DESIGN:
        known = model.known_videos(videos)
        assert known[:-1].any() and not known[-1]
        assert (scores[:, -1] < scores[:, known].min(axis=1)).all(), "unknown videos rank last"

    loaded = load_model(model.save(tmp_path / "model"))
    assert type(loaded) is cls and loaded.params() == model.params()
    np.testing.assert_array_equal(loaded.score(users, videos, histories), scores)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_hyperparameter_is_declared_with_help_and_checked_before_fit(name, contract_data):
    cls = model_class(name)
    fields = dataclasses.fields(cls)
    assert all(f.metadata.get("help") for f in fields), "every option has help text"
    invalid = {}
    for field in fields:
        meta = field.metadata
        if meta.get("choices"):
            invalid[field.name] = "not-a-choice"
        elif meta.get("minimum") is not None:
            invalid[field.name] = meta["minimum"] - 1
        elif meta.get("above") is not None:
            invalid[field.name] = meta["above"]
        elif meta.get("below") is not None:
            invalid[field.name] = meta["below"]
    with pytest.raises(ValueError, match=f"invalid {name} hyperparameters") as error:
        cls(**{**FAST.get(name, {}), **invalid}).fit(contract_data[0])
    for field_name in invalid:
        assert f"{field_name} must be" in str(error.value)


@dataclasses.dataclass
class Broken(LikedCount):
    """LikedCount with one breach of the contract, chosen by `breach`."""

    name: ClassVar[str] = "broken"
    breach: str = hyperparameter("forgets-state", "Which rule to break.")

    def fit(self, data: TrainingData, context: FitContext | None = None) -> Broken:
        LikedCount.fit(self, data, context)
        self._offset = 1.0  # private: never saved, so a loaded model scores otherwise
        return self

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        scores = LikedCount.score(self, user_ids, video_ids, histories)
        if self.breach == "forgets-state":
            return scores + getattr(self, "_offset", 0.0)
        if self.breach == "wrong-shape":
            return scores[:, :-1]
        if self.breach == "nan-for-new-users":
            scores[np.asarray(user_ids) == UNKNOWN_USER] = np.nan
        return scores


@pytest.mark.parametrize("breach", ["forgets-state", "wrong-shape", "nan-for-new-users"])
def test_a_model_breaking_the_contract_fails_it(breach, contract_data, tmp_path, monkeypatch):
    module = types.ModuleType("broken_models")
    module.Broken = Broken
    monkeypatch.setitem(sys.modules, "broken_models", module)
    monkeypatch.setitem(REGISTRY, "broken", "broken_models:Broken")
    monkeypatch.setitem(FAST, "broken", {"breach": breach})
    with pytest.raises((AssertionError, ValueError)):
        test_every_model_keeps_the_contract("broken", contract_data, tmp_path)
    monkeypatch.setitem(FAST, "broken", {"breach": "none"})  # keeping it passes
    test_every_model_keeps_the_contract("broken", contract_data, tmp_path / "kept")

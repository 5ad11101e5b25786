"""The deep autoencoder's loss choice: bce where likes differ from views, else multinomial."""

from __future__ import annotations

import numpy as np
import polars as pl
from fitting import training

from shortrec.data.histories import Histories
from shortrec.models.autoencoder import DeepAutoencoderRecommender
from shortrec.models.base import load_model


def _log(n: int = 1500) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame({
        "user_id": rng.integers(0, 40, n), "video_id": rng.integers(0, 60, n),
        "watch_ratio": rng.random(n) * 2, "timestamp": np.arange(n, dtype=np.float64),
    })  # fmt: skip


def test_auto_loss_is_bce_with_likes_and_multinomial_when_every_view_is_liked(tmp_path):
    log = _log()
    with_likes = DeepAutoencoderRecommender(epochs=1).fit(training(log))
    assert with_likes.loss_ == "bce" and with_likes.fit_report_["loss"] == "bce"
    bare = DeepAutoencoderRecommender(epochs=1).fit(training(log.drop("watch_ratio")))
    assert bare.loss_ == "multinomial" and bare.fit_report_["loss"] == "multinomial"
    explicit = DeepAutoencoderRecommender(epochs=1, loss="mse")
    assert explicit.fit(training(log)).loss_ == "mse"
    bare.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    histories = Histories.from_frame(log)
    assert loaded.loss_ == "multinomial"
    np.testing.assert_array_equal(
        loaded.score(np.arange(5), np.arange(60), histories),
        bare.score(np.arange(5), np.arange(60), histories),
    )

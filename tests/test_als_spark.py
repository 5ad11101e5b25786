"""ALS on Spark: `shortrec train als --engine spark` on local Spark, judged like every model.

One local Spark (two cores, bound to 127.0.0.1, no UI) trains on the tiny three-group world;
its test NDCG@10 must land inside the `implicit` engine's interval and far above popularity.
Skipped with the reason when pyspark or Java is missing (`.ci/run` installs both).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from tiny_release import write_tiny_release
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.models import model_class
from shortrec.models.als_spark import _dense, spark_available
from shortrec.models.base import load_model
from shortrec.runs import Run, RunConfig, list_runs, train_run

FAST = {"factors": 8, "iterations": 10}


def _test_ndcg(run_dir) -> dict:
    return Run(run_dir).metrics["test"]["summary"]["ndcg@10"]


@pytest.mark.slow
def test_spark_engine_matches_implicit_and_beats_popularity(tmp_path):
    missing = spark_available()
    if missing:
        pytest.skip(missing)
    world = write_tiny_release(tmp_path / "world")
    spark_runs = tmp_path / "spark"
    result = CliRunner().invoke(
        app,
        ["train", "als", "--data", str(world), "--runs-dir", str(spark_runs), "--test",
         "--engine", "spark", "--spark-master", "local[2]", "--factors", "8",
         "--iterations", "10", "--label", "als-spark"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (spark_run,) = list_runs(spark_runs)
    model = load_model(spark_run / "model")
    assert (model.engine, model.spark_master) == ("spark", "local[2]")
    assert model.item_factors_.shape == (45, 8) and np.abs(model.item_factors_).sum() > 0

    def run(name: str, params: dict):
        config = RunConfig.build(name, str(world), params)
        return train_run(config, tmp_path / name, evaluate_on=("tune", "test"), progress=False)

    spark = _test_ndcg(spark_run)
    implicit = _test_ndcg(run("als", FAST))
    popular = _test_ndcg(run("popular", {}))
    assert implicit["low"] <= spark["mean"] <= implicit["high"], (spark, implicit)
    assert spark["low"] > popular["high"], (spark, popular)


def test_spark_factors_fill_absent_ids_with_zeros():
    """Users without a kept view get no row from Spark; they get implicit's zero solution."""
    table = pa.table(
        {"id": pa.array([2, 0], pa.int32()), "features": [[1.0, 2.0], [3.0, 4.0]]},
    )
    dense = _dense(table, 4, 2)
    assert dense.tolist() == [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]


def test_an_unknown_engine_is_refused():
    import polars as pl

    views = pl.DataFrame({"user_id": [1, 2], "video_id": [5, 6], "watch_ratio": [1.0, 0.5]})
    with pytest.raises(ValueError, match="engine must be one of"):
        model_class("als")(engine="mllib").fit(views)

"""ALS on Apache Spark: MLlib's implicit-feedback ALS as a second engine for `ALSRecommender`.

Why: `implicit` trains in one process, so the log must fit one machine. MLlib's ALS splits the
users and videos into blocks and solves them on a cluster's executors, so the same model
trains on logs far beyond one machine's memory. Everything around the solver stays shortrec's:
the model builds the weighted view matrix exactly as for the `implicit` engine (same weighting,
clipping, repeats), hands its entries to Spark, and gets plain numpy factors back, which are
saved, loaded, folded in and evaluated by the same code as every model.

Semantics (Spark ALS parameter = ALSRecommender field): rank = factors, regParam =
regularization, maxIter = iterations, alpha = alpha, seed = seed, implicitPrefs = True,
nonnegative = False. Spark's confidence is 1 + alpha * rating, so the rating it gets is the
view weight, as `ALSRecommender.confidences` computes 1 + alpha * weight. Two documented
differences: Spark multiplies regParam by each user's (video's) number of views ("ALS-WR"),
where `implicit` uses it as is; and Spark's random initialisation differs from implicit's.

The driver is this process (client mode): `master` is `local[*]` for every core here, or a
cluster URL (`spark://host:7077`, `yarn`, `k8s://...`); the entries travel to the executors as
Arrow batches and only the factors come back, so executors need Spark but no Python.
Further settings (executor memory, cores, Kubernetes image) come from Spark's own
configuration: `spark-defaults.conf` in `$SPARK_CONF_DIR`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from importlib.util import find_spec

import numpy as np
import pyarrow as pa

# A local master runs the executors' work inside the driver's JVM (Spark's default: 1g).
LOCAL_DRIVER_MEMORY = "4g"
# Iterations between checkpoints of ALS's factors, where a checkpoint directory is set.
CHECKPOINT_INTERVAL = 5
# A view of weight 0 (log/linear weighting, watch ratio 0) is a stored entry for `implicit`:
# preference 1 at confidence 1. Spark would read rating 0 as "not viewed", so it gets this.
_SMALLEST_WEIGHT = float(np.finfo(np.float32).tiny)


def spark_available() -> str | None:
    """None when pyspark and a Java runtime are present, else why Spark cannot run here."""
    if find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'shortrec[spark]')"
    if shutil.which("java") is None:
        return "no Java runtime (`java`) on PATH; Spark needs one (Debian: default-jre-headless)"
    return None


@contextlib.contextmanager
def spark_session(master: str, app_name: str = "shortrec-als") -> Iterator:
    """A SparkSession on `master`, stopped on exit unless it was already running (a notebook
    or another fit started it)."""
    missing = spark_available()
    if missing:
        raise ValueError(f"engine='spark' cannot run here: {missing}")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    with tempfile.TemporaryDirectory(prefix="shortrec-spark-") as scratch:
        if master.startswith("local"):
            # Nothing outside this machine talks to a local driver: keep it (and its web UI,
            # which a cluster's users want) off the network.
            # ALS's lineage grows with every iteration; without checkpoints (and with the
            # default 1 MB thread stacks) deserialising a late task can overflow the stack.
            # On a cluster, set spark.checkpoint.dir to shared storage in spark-defaults.conf.
            builder = (
                builder.config("spark.driver.memory", LOCAL_DRIVER_MEMORY)
                .config("spark.driver.host", "127.0.0.1")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.ui.enabled", "false")
                .config("spark.checkpoint.dir", scratch)
                .config("spark.driver.extraJavaOptions", "-Xss16m")
            )
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


def spark_als_factors(
    rows: np.ndarray,
    cols: np.ndarray,
    weights: np.ndarray,
    shape: tuple[int, int],
    *,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int,
    seed: int,
    master: str = "local[*]",
) -> tuple[np.ndarray, np.ndarray]:
    """Train MLlib's implicit ALS on the entries (rows[i], cols[i]) of weight weights[i] (a
    negative weight: a disliked view, preference 0 with confidence 1 + alpha * |weight|) of a
    `shape` user x video matrix (dense indices); return (user_factors, item_factors) as float32
    arrays of `shape[0]` and `shape[1]` rows. A user or video without entries gets zeros, the
    least-squares solution `implicit` gives it."""
    if len(rows) == 0:
        raise ValueError("Spark ALS: the view matrix has no entries")
    entries = pa.table(
        {
            "user": np.asarray(rows, dtype=np.int32),
            "item": np.asarray(cols, dtype=np.int32),
            # Spark reads rating r as preference (r > 0) with confidence 1 + alpha * |r|, so a
            # negative weight is a disliked view; a 0 would read as "not viewed".
            "rating": np.where(weights == 0, _SMALLEST_WEIGHT, weights).astype(np.float32),
        }
    )
    from pyspark.ml.recommendation import ALS

    with warnings.catch_warnings():
        # pyspark checks the pandas version as it starts and converts; it warns on pandas 3,
        # which the Arrow path used here does not touch.
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
        with spark_session(master) as spark:
            # One block per core the cluster offers: no idle cores, no needless shuffles.
            blocks = max(2, spark.sparkContext.defaultParallelism)
            als = ALS(
                rank=factors,
                regParam=regularization,
                maxIter=iterations,
                alpha=alpha,
                implicitPrefs=True,
                nonnegative=False,
                seed=seed,
                numUserBlocks=blocks,
                numItemBlocks=blocks,
                userCol="user",
                itemCol="item",
                ratingCol="rating",
                checkpointInterval=CHECKPOINT_INTERVAL,
            )
            model = als.fit(spark.createDataFrame(entries))
            return (
                _dense(model.userFactors.toArrow(), shape[0], factors),
                _dense(model.itemFactors.toArrow(), shape[1], factors),
            )


def _dense(table: pa.Table, n: int, rank: int) -> np.ndarray:
    """Spark's (id, features) rows as an (n, rank) array indexed by id; absent ids are zero."""
    out = np.zeros((n, rank), dtype=np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy()
        features = table.column("features").combine_chunks().flatten().to_numpy()
        out[ids] = features.reshape(-1, rank)
    return out

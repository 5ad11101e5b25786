"""A MovieLens-like rating log made from a synthetic world's big_matrix, for checking models on
a log whose users rate one batch and leave (README, "Defaults off our world").

    python benchmarks/rating_log_analogue.py data/q0/raw/big_matrix.csv ratings.csv
    shortrec data import ratings.csv --out data/rlog --user user --item item \
        --rating rating --time t
    shortrec train two-stage --data data/rlog --protocol leave-last-out --like-rule all

Each user's first views of each video, in time order, one minute apart from a start drawn
uniformly over 1,000 days; rating = round(2.5 x watch ratio + 1), clipped to 1-5.
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl


def rating_log(big_matrix: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    views = big_matrix.sort("user_id", "timestamp").unique(
        ["user_id", "video_id"], keep="first", maintain_order=True
    )
    users = views["user_id"].unique().sort().to_numpy()
    starts = rng.uniform(0, 1000 * 86_400, len(users))
    start = dict(zip(users.tolist(), starts.tolist(), strict=True))
    return views.select(
        pl.col("user_id").alias("user"),
        pl.col("video_id").alias("item"),
        (pl.col("watch_ratio") * 2.5 + 1).round().clip(1, 5).cast(pl.Int64).alias("rating"),
        (
            pl.col("user_id").replace_strict(start)
            + pl.int_range(pl.len()).over("user_id") * 60
            + 9.5e8
        )
        .cast(pl.Int64)
        .alias("t"),
    )


if __name__ == "__main__":
    source, target = sys.argv[1:3]
    rating_log(pl.read_csv(source)).write_csv(target)

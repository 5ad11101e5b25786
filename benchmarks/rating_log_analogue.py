"""A MovieLens-like rating log made from a synthetic world's big_matrix, for checking models on
a log whose users rate one batch and leave (README, "Defaults off our world").

    python benchmarks/rating_log_analogue.py data/q0/raw/big_matrix.csv ratings.csv
    shortrec data import ratings.csv --out data/rlog --user user --item item \
        --rating rating --time t
    shortrec train two-stage --data data/rlog --protocol leave-last-out --like-rule all

    python benchmarks/rating_log_analogue.py data/q0/raw/big_matrix.csv seq.txt --sasrec-text
    shortrec train sasrec --data seq.txt --protocol leave-last-out

Each user's first views of each video, in time order, one minute apart from a start drawn
uniformly over 1,000 days; rating = round(2.5 x watch ratio + 1), clipped to 1-5. With
`--sasrec-text` the same views go out as SASRec's text format instead (`user item` per line,
ids + 1, each user's lines in time order; no ratings, no times).
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl


def first_views(big_matrix: pl.DataFrame) -> pl.DataFrame:
    """Each user's first view of each video, users in id order, views in time order."""
    return big_matrix.sort("user_id", "timestamp").unique(
        ["user_id", "video_id"], keep="first", maintain_order=True
    )


def sasrec_text(big_matrix: pl.DataFrame) -> pl.DataFrame:
    """The first views as one `user item` column, 1-based ids (SASRec's text files)."""
    views = first_views(big_matrix)
    return views.select(pl.format("{} {}", pl.col("user_id") + 1, pl.col("video_id") + 1))


def rating_log(big_matrix: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    views = first_views(big_matrix)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("big_matrix", help="a world's big_matrix.csv")
    parser.add_argument("out", help="the CSV (or, with --sasrec-text, text file) to write")
    parser.add_argument("--sasrec-text", action="store_true",
                        help="write SASRec's text format instead of a rating log")  # fmt: skip
    args = parser.parse_args()
    big_matrix = pl.read_csv(args.big_matrix)
    if args.sasrec_text:
        sasrec_text(big_matrix).write_csv(args.out, include_header=False, quote_style="never")
    else:
        rating_log(big_matrix).write_csv(args.out)

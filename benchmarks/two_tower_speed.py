"""Two-tower training speed and peak memory on full-scale-shaped data.

Generates views and side tables the size of KuaiRec's big_matrix (7,176 users x 10,728 videos,
~11M views; side tables from ../shared/kuairec-side when present), then times, in one run:
labelling the views (the run's like rule), the feature build, a popularity baseline fit, and
`--steps` two-tower training steps (with the setup a fit needs). Prints the figures, the
projected time of one full pass over the training views, the ratios against the baselines,
and the process's peak RSS (the budget is 16 GB).

    python benchmarks/two_tower_speed.py [--views 11000000] [--steps 200] [--batch-size 2048]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl

from shortrec.data.dataset import video_table
from shortrec.data.features import build_features
from shortrec.models.base import TrainingData
from shortrec.models.baselines import PopularRecommender
from shortrec.models.two_tower import TwoTowerRecommender

N_USERS, N_VIDEOS = 7_176, 10_728
DAY = 86_400.0


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def side_dir() -> Path:
    root = Path(os.environ.get("SHORTREC_SHARED", Path(__file__).parents[2] / "shared"))
    return root / "kuairec-side"


def make_release(n_views: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """(views, videos, users) with planted tastes: each user prefers a few categories."""
    rng = np.random.default_rng(seed)
    side = side_dir()
    if (side / "item_categories.csv").exists():
        categories = pl.read_csv(side / "item_categories.csv").select(
            "video_id", pl.col("feat").str.json_decode(pl.List(pl.Int64)).alias("tags")
        )
        captions = pl.read_csv(side / "kuairec_caption_category.csv")
        users_table = pl.read_csv(side / "user_features.csv")
    else:
        captions, users_table = None, None
        categories = pl.DataFrame(
            {"video_id": np.arange(N_VIDEOS), "tags": [[int(v % 31)] for v in range(N_VIDEOS)]}
        )
    first_tag = categories.sort("video_id")["tags"].list.first().fill_null(0).to_numpy()
    users = np.sort(rng.integers(0, N_USERS, n_views))
    taste = rng.integers(0, 31, (N_USERS, 3))
    likes_taste = rng.random(n_views) < 0.4
    videos = rng.integers(0, N_VIDEOS, n_views)
    by_tag = [np.flatnonzero(first_tag == t) for t in range(31)]
    chosen_tag = taste[users, rng.integers(0, 3, n_views)]
    for t in range(31):
        rows = likes_taste & (chosen_tag == t)
        if len(by_tag[t]) and rows.any():
            videos[rows] = rng.choice(by_tag[t], int(rows.sum()))
    match = (taste[users] == first_tag[videos][:, None]).any(1)
    duration = rng.integers(3_000, 120_000, N_VIDEOS)[videos]
    ratio = np.where(match, 1.1, 0.4) * rng.lognormal(0, 0.5, n_views)
    timestamp = 1_593_878_400.0 + rng.uniform(0, 60 * DAY, n_views)
    frame = pl.DataFrame(
        {"user_id": users, "video_id": videos, "play_duration": (ratio * duration).astype(np.int64),
         "video_duration": duration, "timestamp": timestamp, "watch_ratio": ratio}
    ).with_columns(
        pl.from_epoch(pl.col("timestamp").cast(pl.Int64)).dt.strftime("%Y%m%d").cast(pl.Int32)
        .alias("date")
    )  # fmt: skip
    return frame, video_table(categories, captions, [frame]), users_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=11_000_000)
    parser.add_argument("--steps", type=int, default=200, help="training steps timed")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()

    started = time.perf_counter()
    big, videos, users = make_release(args.views, args.seed)
    generate_s = time.perf_counter() - started
    cutoff = big["timestamp"].max() - 3 * DAY
    started = time.perf_counter()
    data = TrainingData.build(
        big.filter(pl.col("timestamp") <= cutoff), big.filter(pl.col("timestamp") > cutoff),
        videos=videos, users=users,
    )  # fmt: skip
    label_s = time.perf_counter() - started
    train, validation = data.views, data.validation
    del big

    started = time.perf_counter()
    build_features(
        train, data.videos, data.users, data.item_daily_features, like_rule=data.like_rule
    )
    features_s = time.perf_counter() - started

    started = time.perf_counter()
    PopularRecommender().fit(data)
    popular_s = time.perf_counter() - started

    model = TwoTowerRecommender(
        epochs=1, batch_size=args.batch_size, max_steps_per_epoch=args.steps,
        seed=args.seed, num_threads=args.threads,
    )  # fmt: skip
    started = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - started
    log = model.fit_report_["history"][0]
    step_s = log["seconds"] / args.steps
    steps_per_epoch = math.ceil(train.height / args.batch_size)
    epoch_s = step_s * steps_per_epoch
    peak = peak_rss_gb()

    rows = {
        "train views": f"{train.height:,}",
        "validation views": f"{validation.height:,}",
        "generate release (s)": f"{generate_s:.1f}",
        "label views with the like rule (s)": f"{label_s:.2f}",
        "build features (s)": f"{features_s:.2f}",
        "popular fit (s)": f"{popular_s:.2f}",
        f"two-tower fit with {args.steps} steps (s)": f"{fit_s:.1f}",
        "  of which setup + validation (s)": f"{fit_s - log['seconds']:.1f}",
        "two-tower step (ms)": f"{1000 * step_s:.1f}",
        "two-tower step, CPU time (ms)": f"{1000 * log['cpu_seconds'] / args.steps:.1f}",
        f"two-tower pass over all views, projected ({steps_per_epoch:,} steps) (s)": (
            f"{epoch_s:.0f}"
        ),
        "ratio: epoch / feature build": f"{epoch_s / features_s:.1f}x",
        "ratio: epoch / popular fit": f"{epoch_s / popular_s:.1f}x",
        "peak RSS (GB)": f"{peak:.2f}",
        "peak RSS under 16 GB": str(peak < 16),
        "torch threads": str(model.fit_report_["threads"]),
    }
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()

"""A random world and a trained run, fabricated in seconds, to exercise the serving stack.

Tests, the load benchmark and `shortrec serve --demo` need a prepared release and a run
directory at a chosen size (up to KuaiRec's 7,176 users x 10,728 videos) without the real
data or a long training run. Views follow a Zipf-like video popularity; nothing here is meant
to be statistically faithful (the synthetic world is), only the right shape and size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from shortrec.data.prepare import publish_prepared
from shortrec.models.base import Recommender, TrainingData
from shortrec.models.baselines import PopularRecommender
from shortrec.runs import Experiment, Run, RunConfig

_CATEGORIES = ("Food", "Pets", "Travel", "Music", "Dance", "Comedy", "Sports", "Games",
               "Beauty", "Cars", "Science", "Crafts")  # fmt: skip
_WORDS = ("sunset", "street food", "tiny cat", "drum solo", "street dance", "prank", "goal",
          "speedrun", "makeup", "drift", "experiment", "origami", "noodles", "puppy", "beach",
          "remix", "challenge", "fail", "trick", "recipe")  # fmt: skip
_START = 1_593_878_400.0  # 2020-07-05, where KuaiRec begins


def fabricate_views(
    n_users: int, n_videos: int, views_per_user: int, seed: int = 0
) -> pl.DataFrame:
    """Views in the prepared big_matrix layout; user u's views are in time order."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.poisson(views_per_user, n_users))
    user_ids = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    popularity = 1.0 / np.arange(1, n_videos + 1) ** 0.8
    video_ids = rng.choice(n_videos, size=len(user_ids), p=popularity / popularity.sum())
    durations = (5_000 + (np.arange(n_videos) * 7_919) % 55_000).astype(np.int64)
    video_duration = durations[video_ids]
    watch_ratio = rng.gamma(2.0, 0.45, len(user_ids))
    step = rng.exponential(600.0, len(user_ids))
    cumulative = np.cumsum(step)
    first = np.cumsum(lengths) - lengths
    timestamp = _START + cumulative - np.repeat(cumulative[first], lengths)
    return pl.DataFrame(
        {
            "user_id": user_ids,
            "video_id": video_ids.astype(np.int64),
            "play_duration": (watch_ratio * video_duration).astype(np.int64),
            "video_duration": video_duration,
            "date": np.full(len(user_ids), 20200705, dtype=np.int32),
            "timestamp": timestamp,
            "watch_ratio": watch_ratio,
        }
    )


def fabricate_release(
    directory: str | Path,
    n_users: int = 60,
    n_videos: int = 200,
    views_per_user: int = 20,
    seed: int = 0,
) -> Path:
    """A prepared release (the Parquet layout of `data.dataset`) with captions and categories."""
    directory = Path(directory)
    rng = np.random.default_rng(seed + 1)
    big = fabricate_views(n_users, n_videos, views_per_user, seed)
    small = big.filter(pl.col("user_id") < max(1, n_users // 5))
    video_ids = np.arange(n_videos, dtype=np.int64)
    category = rng.integers(0, len(_CATEGORIES), n_videos)
    words = rng.integers(0, len(_WORDS), (n_videos, 2))
    item_categories = pl.DataFrame(
        {"video_id": video_ids, "tags": [[int(c) + 1] for c in category]},
        schema={"video_id": pl.Int64, "tags": pl.List(pl.Int64)},
    )
    captions = pl.DataFrame(
        {
            "video_id": video_ids,
            "manual_cover_text": [_WORDS[w[0]].upper() for w in words],
            "caption": [f"{_WORDS[a]} and {_WORDS[b]} #{v}" for v, (a, b) in enumerate(words)],
            "topic_tag": [[_WORDS[w[1]].replace(" ", "")] for w in words],
            "first_level_category_id": category.astype(np.int64) + 1,
            "first_level_category_name": [_CATEGORIES[c] for c in category],
            "second_level_category_id": np.full(n_videos, -124, dtype=np.int64),
            "second_level_category_name": ["UNKNOWN"] * n_videos,
            "third_level_category_id": np.full(n_videos, -124, dtype=np.int64),
            "third_level_category_name": ["UNKNOWN"] * n_videos,
        },
        schema_overrides={"topic_tag": pl.List(pl.String)},
    )
    tables = {"big_matrix": big, "small_matrix": small, "item_categories": item_categories,
              "kuairec_caption_category": captions}  # fmt: skip
    source = "shortrec.serving.demo (random, for exercising the serving stack)"
    publish_prepared(directory, tables, source=source)
    return directory


def fabricate_run(
    directory: str | Path, data_dir: str | Path, model: Recommender | None = None
) -> Path:
    """A run directory (config.json, metrics.json, model/) with `model` (default: popularity)
    fitted on the release's big_matrix."""
    directory = Path(directory)
    data_dir = Path(data_dir).resolve()
    model = model if model is not None else PopularRecommender()
    model.fit(TrainingData.build(pl.read_parquet(data_dir / "big_matrix.parquet")))
    config = RunConfig(model.name, Experiment(str(data_dir)), params=model.params())
    run = Run.create(directory.parent, config, path=directory)
    run.save_model(model)
    run.record_all({})
    return directory

"""A tiny prepared release for the tuning, benchmark and report tests (seconds to train on).

Users and videos belong to one of three taste groups: a view inside the user's group has a
high watch ratio, so a collaborative model can beat popularity, and tuning has a signal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from shortrec.data.prepare import publish_prepared
from shortrec.data.schema import PREPARED_INTERACTION_COLUMNS

GROUPS = 3
DAY = 86_400.0
START = 1_593_878_400.0  # 2020-07-05


def _views(users: np.ndarray, videos: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    same = (users % GROUPS) == (videos % GROUPS)
    ratio = np.where(same, rng.uniform(0.8, 2.0, len(users)), rng.uniform(0.0, 0.6, len(users)))
    duration = np.full(len(users), 10_000, dtype=np.int64)
    timestamp = START + rng.uniform(0, 10 * DAY, len(users))
    return pl.DataFrame(
        {
            "user_id": users,
            "video_id": videos,
            "play_duration": (ratio * duration).astype(np.int64),
            "video_duration": duration,
            "date": np.full(len(users), 20200705, dtype=np.int32),
            "timestamp": timestamp,
            "watch_ratio": ratio,
        }
    ).cast(PREPARED_INTERACTION_COLUMNS)


def write_tiny_release(directory: Path, users: int = 90, videos: int = 45, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    # big_matrix: each user views 18 videos, mostly of their own group.
    big_users, big_videos = [], []
    for user in range(users):
        own = np.arange(user % GROUPS, videos, GROUPS)
        other = np.setdiff1d(np.arange(videos), own)
        chosen = np.concatenate(
            [rng.choice(own, 12, replace=False), rng.choice(other, 6, replace=False)]
        )
        big_users.append(np.full(len(chosen), user))
        big_videos.append(chosen)
    big = _views(np.concatenate(big_users), np.concatenate(big_videos), rng)
    # small_matrix: the first 45 users x the first 24 videos, fully observed.
    su, sv = np.meshgrid(np.arange(45), np.arange(24), indexing="ij")
    small = _views(su.ravel(), sv.ravel(), rng)
    video_ids = np.arange(videos, dtype=np.int64)
    categories = pl.DataFrame(
        {"video_id": video_ids, "tags": [[int(v % GROUPS)] for v in video_ids]},
        schema={"video_id": pl.Int64, "tags": pl.List(pl.Int64)},
    )
    names = ["cooking", "football", "cats"]
    captions = pl.DataFrame(
        {
            "video_id": video_ids,
            "caption": [f"{names[v % GROUPS]} clip #{v}" for v in video_ids],
            "first_level_category_name": [names[v % GROUPS] for v in video_ids],
        }
    )
    tables = {"big_matrix": big, "small_matrix": small, "item_categories": categories,
              "kuairec_caption_category": captions}  # fmt: skip
    publish_prepared(directory, tables, source="tests/tiny_release.py")
    return directory

"""A tiny prepared release with planted structure, shared by the feature and model tests.

Each user prefers one top-level category; views of that category get a high watch ratio,
others a low one. Some videos never appear in big_matrix (cold videos) but share categories
and tags with warm ones, so content features must carry them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from shortrec.data.prepare import publish_prepared
from shortrec.data.schema import ITEM_DAILY_COLUMNS, ITEM_DAILY_COUNTER_NAMES

N_CATEGORIES = 5
DAY = 86_400.0
START = 1_593_878_400.0  # 2020-07-05 00:00 +08:00


def category_of(video_ids: np.ndarray) -> np.ndarray:
    return np.asarray(video_ids) % N_CATEGORIES


def preference_of(user_ids: np.ndarray) -> np.ndarray:
    return np.asarray(user_ids) % N_CATEGORIES


def expected_watch_ratio(user_ids: np.ndarray, video_ids: np.ndarray) -> np.ndarray:
    return np.where(category_of(video_ids) == preference_of(user_ids), 1.3, 0.3)


def _views(rng, users, videos, durations, t0, t1) -> pl.DataFrame:
    wr = expected_watch_ratio(users, videos) * rng.lognormal(0.0, 0.25, len(users))
    duration = durations[videos]
    ts = rng.uniform(t0, t1, len(users))
    order = np.argsort(users, kind="stable")
    users, videos, wr, duration = users[order], videos[order], wr[order], duration[order]
    dates = pl.Series(ts * 1000).cast(pl.Int64).cast(pl.Datetime("ms")).dt.strftime("%Y%m%d")
    return pl.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "video_id": videos.astype(np.int64),
            "play_duration": (wr * duration).astype(np.int64),
            "video_duration": duration.astype(np.int64),
            "date": dates.cast(pl.Int32),
            "timestamp": ts,
            "watch_ratio": wr,
        }
    )


def write_planted_world(
    directory: Path,
    n_users: int = 80,
    n_videos: int = 150,
    n_cold: int = 20,
    views_per_user: int = 60,
    seed: int = 0,
    daily: bool = True,
) -> Path:
    """Write a prepared release (the Parquet cache layout) into `directory`."""
    rng = np.random.default_rng(seed)
    video_ids = np.arange(n_videos)
    warm = video_ids[: n_videos - n_cold]
    durations = rng.integers(5_000, 60_000, n_videos)
    users = np.repeat(np.arange(n_users), views_per_user)
    # Half of each user's views in the preferred category, half anywhere (warm videos only).
    videos = rng.choice(warm, len(users))
    pick_pref = rng.random(len(users)) < 0.5
    pref = preference_of(users)
    for c in range(N_CATEGORIES):
        rows = pick_pref & (pref == c)
        videos[rows] = rng.choice(warm[category_of(warm) == c], int(rows.sum()))
    big = _views(rng, users, videos, durations, START, START + 10 * DAY)
    small_users = np.arange(min(30, n_users))
    small_videos = np.concatenate([warm[:40], video_ids[n_videos - n_cold :]])
    su, sv = np.meshgrid(small_users, small_videos, indexing="ij")
    small = _views(rng, su.ravel(), sv.ravel(), durations, START, START + 10 * DAY)
    tables = {"big_matrix": big, "small_matrix": small}
    cats = category_of(video_ids)
    tables["item_categories"] = pl.DataFrame(
        {"video_id": video_ids.astype(np.int64),
         "tags": [[int(c), int(10 + v % 3)] for v, c in zip(video_ids, cats, strict=True)]}
    )  # fmt: skip
    tables["kuairec_caption_category"] = pl.DataFrame(
        {
            "video_id": video_ids.astype(np.int64),
            "caption": [f"video {v}" for v in video_ids],
            "topic_tag": [[] for _ in video_ids],
            "first_level_category_id": (cats + 1).astype(np.int64),
            "first_level_category_name": [f"c{c}" for c in cats],
            "second_level_category_id": np.where(video_ids % 4 == 0, -124, 100 + cats * 2),
            "second_level_category_name": ["x"] * n_videos,
            "third_level_category_id": np.full(n_videos, -124, dtype=np.int64),
            "third_level_category_name": ["UNKNOWN"] * n_videos,
        }
    )
    user_ids = np.arange(n_users)
    onehot = {f"onehot_feat{i}": rng.integers(0, 3, n_users).astype(np.float64) for i in range(18)}
    onehot["onehot_feat4"][::7] = np.nan
    tables["user_features"] = pl.DataFrame(
        {
            "user_id": user_ids.astype(np.int64),
            "user_active_degree": rng.choice(
                ["full_active", "high_active", "middle_active", "UNKNOWN"], n_users
            ),
            "is_lowactive_period": rng.integers(0, 2, n_users),
            "is_live_streamer": rng.integers(0, 2, n_users),
            "is_video_author": rng.integers(0, 2, n_users),
            "follow_user_num": rng.integers(0, 500, n_users),
            "follow_user_num_range": rng.choice(["0", "(0,10]", "(10,50]"], n_users),
            "fans_user_num": rng.integers(0, 50, n_users),
            "fans_user_num_range": rng.choice(["0", "[1,10)"], n_users),
            "friend_user_num": rng.integers(0, 20, n_users),
            "friend_user_num_range": rng.choice(["0", "[1,5)"], n_users),
            "register_days": rng.integers(10, 900, n_users),
            "register_days_range": rng.choice(["15-30", "730+"], n_users),
            **onehot,
        }
    )
    if daily:
        days = np.arange(20200705, 20200720)
        dv, dd = np.meshgrid(video_ids, days, indexing="ij")
        n = dv.size
        frame = {
            "video_id": dv.ravel().astype(np.int64),
            "date": dd.ravel().astype(np.int64),
            **{c: np.zeros(n) for c in ITEM_DAILY_COUNTER_NAMES},
        }
        frame["show_cnt"] = rng.integers(10, 100, n).astype(np.float64)
        frame["play_cnt"] = frame["show_cnt"] * 0.5
        frame["like_cnt"] = frame["play_cnt"] * 0.1
        tables["item_daily_features"] = pl.DataFrame(frame).with_columns(
            pl.lit(None, dtype=t).alias(c) for c, t in ITEM_DAILY_COLUMNS.items() if c not in frame
        )
    publish_prepared(directory, tables, source="planted-test-world", seed=seed)
    return directory


def exposure_log(
    n_users: int = 60, n_videos: int = 100, views_per_user: int = 80, seed: int = 0
) -> pl.DataFrame:
    """A bare log (user_id, video_id, watch_ratio, timestamp; no side tables, no durations)
    where exposure and taste disagree: 70% of each user's views show the category after
    their preferred one, watched briefly (0.2), 30% show their preferred one, watched
    fully (1.2). A model learning exposure ranks the wrong category first."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), views_per_user)
    preferred = rng.random(len(users)) < 0.3
    category = np.where(preferred, preference_of(users), (preference_of(users) + 1) % 5)
    videos = rng.integers(0, n_videos // N_CATEGORIES, len(users)) * N_CATEGORIES + category
    return pl.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "video_id": videos.astype(np.int64),
            "watch_ratio": np.where(preferred, 1.2, 0.2) * rng.lognormal(0, 0.1, len(users)),
            "timestamp": START + rng.uniform(0, 10 * DAY, len(users)),
        }
    )


def write_sasrec_text(path: Path, log: pl.DataFrame) -> Path:
    """`log` as a SASRec text file (1-based ids, each user's views in time order)."""
    ordered = log.sort("user_id", "timestamp")
    lines = [
        f"{u + 1} {v + 1}" for u, v in zip(ordered["user_id"], ordered["video_id"], strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_planted_world_has_the_planted_structure(tmp_path):
    directory = write_planted_world(tmp_path / "world")
    big = pl.read_parquet(directory / "big_matrix.parquet")
    liked_pref = expected_watch_ratio(big["user_id"].to_numpy(), big["video_id"].to_numpy())
    assert big["watch_ratio"].to_numpy()[liked_pref > 1].mean() > 1.0
    assert big["watch_ratio"].to_numpy()[liked_pref < 1].mean() < 0.5
    # cold videos never appear in big_matrix, only in small_matrix
    assert big["video_id"].max() < 130
    assert pl.read_parquet(directory / "small_matrix.parquet")["video_id"].max() == 149

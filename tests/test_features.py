"""Feature tables: shapes, finiteness, leak-freedom, and the real KuaiRec side files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_features_world import category_of, exposure_log

from shortrec.data.dataset import load_prepared
from shortrec.data.features import (
    build_features,
    history_features,
    history_views,
    label_holdout,
    pair_features,
    time_holdout,
    user_features,
    user_table,
    video_features,
)
from shortrec.data.histories import Histories
from shortrec.data.labels import LikeRule


def _side_dir() -> Path:
    root = Path(os.environ.get("SHORTREC_SHARED", Path(__file__).parents[2] / "shared"))
    return root / "kuairec-side"


FIXED = LikeRule(kind="threshold")  # needs no fitting


def side_features(directory: Path, train: pl.DataFrame):
    data = load_prepared(directory)
    return build_features(train, data.videos, data.users, data.item_daily_features, like_rule=FIXED)


def test_feature_set_shapes_and_finite(planted_release):
    directory, split = planted_release
    features = side_features(directory, split.train)
    assert features.users.values.shape == (80, len(features.users.names))
    # every video of the side tables, cold ones included
    assert features.videos.ids.tolist() == list(range(150))
    assert features.history.ids.tolist() == sorted(split.train["user_id"].unique().to_list())
    for table in (features.users, features.videos, features.history):
        assert np.isfinite(table.values).all()
        assert len(set(table.names)) == len(table.names)
    videos = features.videos
    cold, _ = videos.lookup(np.arange(130, 150))
    seen = videos.names.index("seen_in_train")
    assert (cold[:, seen] == 0).all()
    assert (cold[:, videos.names.index("train_log1p_views")] == 0).all()
    # cold videos keep their content: the tag of their category is set
    tag = np.array([videos.names.index(f"tag={c}") for c in category_of(np.arange(130, 150))])
    assert (cold[np.arange(20), tag] == 1).all()


def test_features_ignore_everything_after_training(planted_release):
    directory, split = planted_release
    data = load_prepared(directory)
    last_date = int(split.train["date"].max())
    daily = data.item_daily_features
    before = video_features(data.videos, split.train, daily, like_rule=FIXED)
    # Changing every daily row after the last training date, or adding validation-period
    # views to the release, must change no feature.
    tampered = daily.with_columns(
        pl.when(pl.col("date") > last_date)
        .then(pl.col("show_cnt") * 1000)
        .otherwise(pl.col("show_cnt"))
        .alias("show_cnt")
    )
    after = video_features(data.videos, split.train, tampered, like_rule=FIXED)
    np.testing.assert_array_equal(before.values, after.values)
    assert (daily["date"] > last_date).any()  # the tampering did touch rows
    built = side_features(directory, split.train)
    np.testing.assert_array_equal(
        built.history.values, history_features(split.train, like_rule=FIXED).values
    )
    with_validation = video_features(
        data.videos, pl.concat([split.train, split.validation]), like_rule=FIXED
    )
    assert not np.array_equal(
        with_validation.values, video_features(data.videos, split.train, like_rule=FIXED).values
    )


def test_user_features_nan_and_null_are_their_own_level():
    users = pl.DataFrame(
        {
            "user_id": [3, 1, 2],
            "user_active_degree": ["full_active", "UNKNOWN", "high_active"],
            "onehot_feat4": [1.0, float("nan"), None],
            "follow_user_num": [0, 10, 100],
        }
    )
    table = user_features(users)
    assert table.ids.tolist() == [1, 2, 3]
    missing = table.values[:, table.names.index("onehot_feat4=missing")]
    assert missing.tolist() == [1.0, 1.0, 0.0]
    assert table.values[0, table.names.index("active=UNKNOWN")] == 1.0
    assert table.values[:, table.names.index("log1p_follow_user_num")] == pytest.approx(
        np.log1p([10, 100, 0])
    )
    rows, found = table.lookup(np.array([2, 99]))
    assert found.tolist() == [True, False]
    assert (rows[1] == 0).all()


def test_history_views_match_histories_and_features_agree(planted_release):
    directory, split = planted_release
    videos_table = side_features(directory, split.train).videos
    histories = Histories.from_frame(split.train)
    users = np.array([5, 7, 12345])
    views = history_views(histories, users)
    videos, ratios = histories.views_of(7)
    np.testing.assert_array_equal(views.filter(pl.col("user_id") == 7)["video_id"], videos)
    assert set(views["user_id"].unique().to_list()) == {5, 7}
    from_histories = history_features(views, video_durations=videos_table, like_rule=FIXED)
    from_frame = history_features(
        split.train.filter(pl.col("user_id").is_in([5, 7])), like_rule=FIXED
    )
    assert from_histories.names == from_frame.names
    # durations from the video table (a median per video) equal the per-view ones here
    np.testing.assert_allclose(from_histories.values, from_frame.values, rtol=1e-4, atol=1e-4)


def test_affinity_reflects_the_users_category(planted_release):
    directory, split = planted_release
    features = side_features(directory, split.train)
    views = pl.DataFrame({"user_id": [1, 1, 1], "video_id": [0, 5, 10],
                          "watch_ratio": [1.0, 1.0, 1.0]})  # fmt: skip
    users = user_table(np.array([1]), features.users, views, features.videos, FIXED)
    x, names = pair_features(users, features.videos, np.array([1, 1]), np.array([15, 16]))
    assert x.shape == (2, len(names))
    affinity = x[:, names.index("cat1_affinity")]
    assert affinity.tolist() == [1.0, 0.0]  # video 15 shares category 0 with all three views


def test_time_holdout_splits_by_time_and_rejects_bad_windows(planted_release):
    _, split = planted_release
    early, late = time_holdout(split.train, days=2)
    assert early.height + late.height == split.train.height
    assert early["timestamp"].max() < late["timestamp"].min()
    with pytest.raises(ValueError, match="holdout"):
        time_holdout(split.train, days=1000)


def test_features_of_a_bare_log_degrade_and_say_so(planted_release):
    """Only ids, watch ratios and times: no duration columns, no content, and the feature set
    names every missing source; the release's features name none."""
    log = exposure_log(n_users=10, views_per_user=20)
    bare = build_features(log, log.select("video_id").unique(), like_rule=FIXED)
    assert not any(
        n.startswith(("tag=", "cat", "log_duration", "daily_")) for n in bare.videos.names
    )
    assert "train_log1p_views" in bare.videos.names and np.isfinite(bare.videos.values).all()
    assert bare.sources() == {"uses": [], "lacks": ["user_features", "tags", "categories",
                              "video_duration", "item_daily_features"]}  # fmt: skip
    directory, split = planted_release
    assert side_features(directory, split.train).sources()["lacks"] == []


def test_label_holdout_falls_back_to_each_users_last_views(planted_release):
    _, split = planted_release
    early, late, how = label_holdout(split.train, days=2)
    assert how == "last 2 days" and early["timestamp"].max() < late["timestamp"].min()
    # positions instead of times (a SASRec text file): each user's last tenth
    positions = pl.DataFrame({"user_id": [1] * 20 + [2] * 2 + [3],
                              "video_id": list(range(23)),
                              "timestamp": [float(i) for i in [*range(20), 0, 1, 0]]})  # fmt: skip
    early, late, how = label_holdout(positions, days=3)
    assert how == "each user's last 10% of views"
    assert late.sort("video_id")["video_id"].to_list() == [18, 19, 21]  # user 3 has one view
    assert early.height + late.height == positions.height
    # a rating log: users rate a batch once, days apart; the last days hold one user of four
    day = 86_400.0
    ratings = pl.DataFrame({"user_id": [u for u in range(4) for _ in range(10)],
                            "video_id": [v for _ in range(4) for v in range(10)],
                            "timestamp": [u * 30 * day + v * 60.0
                                          for u in range(4) for v in range(10)]})  # fmt: skip
    early, late, how = label_holdout(ratings, days=3)
    assert how == "each user's last 10% of views"
    assert late["user_id"].sort().to_list() == [0, 1, 2, 3]
    _, late, how = label_holdout(ratings, days=3, min_user_share=0.25)
    assert how == "last 3 days" and late["user_id"].unique().to_list() == [3]

"""Histories, like rules and protocols on small hand-made frames."""

import numpy as np
import polars as pl
import pytest

from shortrec.data.dataset import KuaiRecData
from shortrec.data.histories import Histories, IdMap
from shortrec.data.labels import LikeRule
from shortrec.data.splits import (
    kuairec_split,
    leave_last_out_split,
    stable_user_fraction,
    temporal_split,
)


def views(rows):
    return pl.DataFrame(
        rows, schema=["user_id", "video_id", "watch_ratio", "timestamp", "video_duration"],
        orient="row",
    )  # fmt: skip


def test_idmap_unknown_ids():
    ids = IdMap.from_ids(np.array([30, 10, 20, 10]))
    assert ids.raw_ids.tolist() == [10, 20, 30]
    assert ids.index(np.array([20, 99, 10, -5])).tolist() == [1, -1, 0, -1]


def test_histories_time_order_and_extend():
    h = Histories.from_frame(
        views([(7, 1, 0.5, 30.0, 1000), (7, 2, 1.0, 10.0, 1000), (3, 5, 0.1, 20.0, 1000)])
    )
    assert h.user_ids.tolist() == [3, 7]
    assert h.views_of(7)[0].tolist() == [2, 1]
    assert h.views_of(99)[0].tolist() == []
    extended = h.extend(
        pl.DataFrame({"user_id": [99], "video_id": [4], "watch_ratio": [2.0], "timestamp": [1.0]})
    )
    assert extended.views_of(99)[0].tolist() == [4]
    seen = h.seen_matrix(np.array([7, 99]), IdMap.from_ids([1, 2, 5])).toarray()
    assert seen.tolist() == [[1, 1, 0], [0, 0, 0]]


def test_threshold_rule():
    frame = views([(1, 1, 0.69, 0, 5000), (1, 2, 0.7, 0, 5000), (1, 3, 0.1, 0, 5000)])
    rule = LikeRule.parse("threshold:0.7")
    assert rule.liked(frame).tolist() == [False, True, False]
    assert rule.disliked(frame).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="like-rule"):
        LikeRule.parse("median")


def test_duration_rule_is_duration_aware():
    rng = np.random.default_rng(0)
    duration = np.where(rng.random(20_000) < 0.5, 5_000, 60_000)
    # People watch ~8 s whatever the length: short videos get high ratios.
    ratio = rng.gamma(4, 2.0, 20_000) * 1000 / duration
    train = pl.DataFrame({"watch_ratio": ratio, "video_duration": duration})
    fixed = LikeRule.parse("threshold:0.7").liked(train)
    aware = LikeRule.parse("duration:0.8")
    with pytest.raises(RuntimeError):
        aware.liked(train)
    liked = aware.fit(train).liked(train)
    short = duration == 5_000
    assert fixed[short].mean() > 0.9 and fixed[~short].mean() < 0.1
    assert abs(liked[short].mean() - 0.2) < 0.03 and abs(liked[~short].mean() - 0.2) < 0.03
    restored = LikeRule(**aware.to_dict())
    assert (restored.liked(train) == liked).all()


def test_stable_user_fraction_is_stable_and_uniform():
    users = np.arange(100_000)
    f = stable_user_fraction(users)
    assert (f == stable_user_fraction(users)).all()
    assert abs((f < 0.2).mean() - 0.2) < 0.01


def test_leave_last_out():
    frame = views(
        [(1, v, 1.0, float(t), 1000) for t, v in enumerate([10, 11, 12, 13])]
        + [(2, 20, 1.0, 5.0, 1000), (2, 21, 1.0, 6.0, 1000)]
    )
    split = leave_last_out_split(frame)
    assert split.test["video_id"].to_list() == [13]
    assert split.validation["video_id"].to_list() == [12]
    assert sorted(split.train["video_id"].to_list()) == [10, 11, 20, 21]
    assert sorted(split.test_history["video_id"].to_list()) == [10, 11, 12, 20, 21]


def test_temporal_split_orders_time():
    frame = views([(u, u, 1.0, float(u), 1000) for u in range(100)])
    split = temporal_split(frame, 0.1, 0.1)
    assert split.train["timestamp"].max() < split.validation["timestamp"].min()
    assert split.validation["timestamp"].max() < split.test["timestamp"].min()
    assert split.test.height == 10


def test_kuairec_split():
    day = 86_400.0
    big = views([(u, v, 1.0, t * day, 1000) for u in range(50) for v, t in [(1, 0), (2, 10)]])
    small = views([(u, v, 1.0, 0.0, 1000) for u in range(50) for v in (7, 8, 9)])
    data = KuaiRecData(big, small, pl.DataFrame(), None, None, None, None, source=None)
    split = kuairec_split(data, validation_days=3)
    assert split.train["video_id"].unique().to_list() == [1]
    assert split.validation["video_id"].unique().to_list() == [2]
    assert split.candidate_video_ids.tolist() == [7, 8, 9]
    tune_users = set(split.tune["user_id"].to_list())
    assert tune_users.isdisjoint(split.test["user_id"].to_list())
    assert tune_users | set(split.test["user_id"].to_list()) == set(range(50))

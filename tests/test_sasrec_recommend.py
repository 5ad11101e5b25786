"""recommend(): top-N lists from any Recommender."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from shortrec.data.histories import Histories
from shortrec.models.base import Recommender
from shortrec.models.recommend import recommend, write_recommendations


@dataclasses.dataclass
class FixedScores(Recommender):
    """Scores a video by its raw id: higher ids first, for everyone."""

    def score(self, user_ids, video_ids, histories):
        return np.tile(np.asarray(video_ids, dtype=np.float32), (len(user_ids), 1))


def history() -> Histories:
    return Histories.from_frame(
        pl.DataFrame(
            {
                "user_id": [1, 1, 2],
                "video_id": [50, 40, 10],
                "watch_ratio": [1.0] * 3,
                "timestamp": [0.0, 1.0, 0.0],
            }
        )  # fmt: skip
    )


def test_excludes_seen_videos_and_ranks_by_score():
    candidates = np.array([30, 10, 50, 20, 40])  # deliberately unsorted
    out = recommend(FixedScores(), np.array([1, 2, 3]), history(), candidates, k=3, batch_size=2)
    assert out.columns == ["user_id", "rank", "video_id", "score"]
    by_user = {u: g["video_id"].to_list() for (u,), g in out.group_by(["user_id"])}
    assert by_user == {1: [30, 20, 10], 2: [50, 40, 30], 3: [50, 40, 30]}
    assert out.filter(pl.col("user_id") == 1)["rank"].to_list() == [1, 2, 3]


def test_keeping_seen_videos_and_short_lists():
    candidates = np.array([10, 40, 50])
    kept = recommend(FixedScores(), np.array([1]), history(), candidates, k=2, exclude_seen=False)
    assert kept["video_id"].to_list() == [50, 40]
    short = recommend(FixedScores(), np.array([1]), history(), candidates, k=5)
    assert short["video_id"].to_list() == [10] and short["rank"].to_list() == [1]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_recommendations(tmp_path, suffix):
    out = recommend(FixedScores(), np.array([1, 2]), history(), np.array([10, 20, 30]), k=2)
    path = write_recommendations(out, tmp_path / f"recs{suffix}")
    back = pl.read_csv(path) if suffix == ".csv" else pl.read_parquet(path)
    assert back["video_id"].to_list() == out["video_id"].to_list()
    with pytest.raises(ValueError, match=".parquet or .csv"):
        write_recommendations(out, tmp_path / "recs.json")

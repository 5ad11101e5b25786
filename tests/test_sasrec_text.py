"""The SASRec paper's text format reader."""

from __future__ import annotations

import pytest

from shortrec.data.sasrec_text import load_sasrec_text, read_sasrec_text
from shortrec.data.splits import leave_last_out_split


def test_reads_pairs_with_per_user_positions_as_time(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text("1 5\n1 3\n2 7\n1 9\n2 5\n2 1\n1 2\n")
    frame = read_sasrec_text(path)
    assert frame.columns[:2] == ["user_id", "video_id"]
    user1 = frame.filter(frame["user_id"] == 1)
    assert user1["video_id"].to_list() == [5, 3, 9, 2]
    assert user1["timestamp"].to_list() == [0.0, 1.0, 2.0, 3.0]
    assert (frame["watch_ratio"] == 1.0).all()
    split = leave_last_out_split(frame)
    assert sorted(split.test["video_id"].to_list()) == [1, 2]  # each user's last line
    assert sorted(split.validation["video_id"].to_list()) == [5, 9]


@pytest.mark.parametrize(
    ("content", "line"),
    [("1 5\n1 x\n", 2), ("1 5\n\n2 3\n", 2), ("1 5 7\n", 1), ("0 4\n", 1)],
)
def test_malformed_lines_name_file_and_line(tmp_path, content, line):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"bad.txt, line {line}: expected 'user item'"):
        read_sasrec_text(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_sasrec_text(tmp_path / "nope.txt")


def test_loads_as_a_release_with_everything_in_big_matrix(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text("1 5\n1 3\n2 7\n")
    release = load_sasrec_text(path)
    assert release.big_matrix.height == 3 and release.small_matrix.height == 0
    assert release.videos["video_id"].to_list() == [3, 5, 7]

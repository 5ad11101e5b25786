"""Reading and validating the KuaiRec CSVs: real side files, fabricated quirks, located errors."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from shortrec.data.read import (
    KuaiRecFormatError,
    read_captions,
    read_interactions,
    read_item_categories,
    read_item_daily_features,
    read_social_network,
    read_user_features,
)
from shortrec.data.schema import (
    ITEM_DAILY_COLUMNS,
    ITEM_DAILY_COUNTER_NAMES,
    PREPARED_INTERACTION_COLUMNS,
    USER_FEATURE_COLUMNS,
)

INTERACTION_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio"
BIG_ROWS = [
    "0,10,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.273397",
    "0,11,4000,8000,2020-07-05 00:09:00.000,20200705,1593878940.0,0.5",
    "0,11,4000,8000,2020-07-05 00:09:00.000,20200705,1593878940.0,0.5",  # exact duplicate
    "1,10,100,10867,2020-08-01 10:00:00.000,20200801,1596247200.0,0.009202",
    "1,12,20000,9000,2020-08-01 10:01:00.000,20200801,1596247260.0,3.0",  # inconsistent ratio
]
SMALL_ROWS = [
    "0,10,9000,10867,2020-07-06 01:00:00.000,20200706.0,1593968400.0,0.828195",
    "1,10,0,10867,,,,0.0",  # the real file's rows without time
    "1,11,8000,8000,2020-07-06 02:00:00.000,20200706.0,1593972000.0,1.0",
]
CAPTION_HEADER = (
    "video_id,manual_cover_text,caption,topic_tag,first_level_category_id,"
    "first_level_category_name,second_level_category_id,second_level_category_name,"
    "third_level_category_id,third_level_category_name"
)
CAPTION_ROWS = [
    "10,UNKNOWN,plain caption,[],8,beauty,673,selfie,-124,UNKNOWN",
    '11,cover,"two\nlines","[tag a,tag b]",5,fashion,-124,UNKNOWN,-124,UNKNOWN',
    "12,UNKNOWN,bare\rreturn,\"['x', 'y']\",27,tech,-124,UNKNOWN,-124,UNKNOWN",
]


def user_feature_rows() -> tuple[str, list[str]]:
    header = ",".join(USER_FEATURE_COLUMNS)
    onehot = ["0"] * 18
    gap = list(onehot)
    gap[4] = ""  # the real file's missing onehot values
    base = 'full_active,0,0,1,5,"(0,10]",0,0,0,0,107,61-90'
    return header, [f"0,{base},{','.join(onehot)}", f"1,UNKNOWN,{base[12:]},{','.join(gap)}"]


def item_daily_rows() -> tuple[str, list[str]]:
    header = ",".join(ITEM_DAILY_COLUMNS)
    descriptive = "10,20200705,7,NORMAL,2020-03-01,ShortImport,public,10867.0,720,1280,55,8,beauty"
    counters = ",".join(["3"] * (len(ITEM_DAILY_COUNTER_NAMES) - 4) + [""] * 4)
    no_duration = descriptive.replace("10867.0", "").replace("10,2020", "11,2020", 1)
    return header, [f"{descriptive},{counters}", f"{no_duration},{counters}"]


def write_release(directory: Path, optional: bool = True) -> Path:
    """A tiny KuaiRec release folder with the real files' quirks; returns the folder."""
    directory.mkdir(parents=True, exist_ok=True)

    def write(name: str, header: str, rows: list[str]) -> None:
        (directory / f"{name}.csv").write_bytes(("\n".join([header, *rows]) + "\n").encode())

    write("big_matrix", INTERACTION_HEADER, BIG_ROWS)
    write("small_matrix", INTERACTION_HEADER, SMALL_ROWS)
    write("item_categories", "video_id,feat", ["10,[8]", '11,"[27, 9]"', "12,[]"])
    if optional:
        write("kuairec_caption_category", CAPTION_HEADER, CAPTION_ROWS)
        write("user_features", *user_feature_rows())
        write("item_daily_features", *item_daily_rows())
        write("social_network", "user_id,friend_list", ['0,"[1, 4]"', "1,[0]"])
    return directory


def shared_side_dir() -> Path:
    root = Path(os.environ.get("SHORTREC_SHARED", Path(__file__).parents[2] / "shared"))
    side = root / "kuairec-side"
    if not (side / "item_categories.csv").exists():
        pytest.skip(f"real KuaiRec side files not found in {side}")
    return side


# --- real side files ------------------------------------------------------------------------------


def test_real_captions_keep_10728_rows_despite_line_breaks_and_carriage_returns() -> None:
    captions = read_captions(shared_side_dir() / "kuairec_caption_category.csv")
    assert captions.height == 10_728
    assert captions["video_id"].to_list() == list(range(10_728))
    assert captions.schema["topic_tag"] == pl.List(pl.String)
    # The four captions with a bare carriage return stay one record each, fields intact.
    with_return = captions.filter(pl.col("video_id").is_in([1378, 1613, 5910, 6331]))
    assert with_return["first_level_category_id"].to_list() == [6, 6, 34, -124]
    assert with_return["caption"].str.contains("\r", literal=True).sum() >= 3
    tags_per_video = dict(captions["topic_tag"].list.len().value_counts().iter_rows())
    assert tags_per_video[0] == 4_611 and tags_per_video[5] == 1_645
    assert (captions["manual_cover_text"] == "UNKNOWN").sum() == 6_694
    assert (captions["third_level_category_id"] == -124).sum() == 6_832
    assert captions.filter(pl.col("video_id") == 4)["topic_tag"].item().to_list() == [
        "五爱市场",
        "感谢快手我要上热门",
        "搞笑",
    ]


def test_real_item_categories_parse_tag_lists() -> None:
    items = read_item_categories(shared_side_dir() / "item_categories.csv")
    assert items.columns == ["video_id", "tags"]
    assert items.height == 10_728
    assert items.filter(pl.col("video_id") == 1)["tags"].item().to_list() == [27, 9]
    sizes = dict(items["tags"].list.len().value_counts().iter_rows())
    assert sizes == {1: 8_970, 2: 1_562, 3: 185, 4: 11}
    tags = items["tags"].explode()
    assert tags.min() == 0 and tags.max() == 30 and tags.len() == 12_693


def test_real_user_features_keep_missing_onehots_as_nulls() -> None:
    users = read_user_features(shared_side_dir() / "user_features.csv")
    assert users.shape == (7_176, 31)
    nulls = users.null_count().row(0, named=True)
    assert nulls["onehot_feat4"] == 201
    assert [nulls[f"onehot_feat{i}"] for i in range(12, 18)] == [77, 75, 75, 74, 74, 74]
    assert nulls["onehot_feat3"] == 0
    assert (users["user_active_degree"] == "UNKNOWN").sum() == 118


# --- interactions --------------------------------------------------------------------------------


def test_interactions_keep_duplicates_and_type_the_prepared_columns(tmp_path: Path) -> None:
    big = read_interactions(write_release(tmp_path) / "big_matrix.csv")
    assert big.schema == pl.Schema(PREPARED_INTERACTION_COLUMNS)
    assert big.height == len(BIG_ROWS)
    assert big.height - big.unique().height == 1
    assert big["date"].to_list()[0] == 20200705


def test_small_matrix_rows_without_time_and_float_dates(tmp_path: Path) -> None:
    small = read_interactions(write_release(tmp_path) / "small_matrix.csv")
    assert small["date"].to_list() == [20200706, None, 20200706]
    assert small["timestamp"].null_count() == 1
    assert small["watch_ratio"].to_list()[1] == 0.0


def interaction_file(tmp_path: Path, rows: list[str], header: str = INTERACTION_HEADER) -> Path:
    path = tmp_path / "big_matrix.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad_row", "column", "found"),
    [
        ("0,abc,1,2,,,,0.5", "video_id", "'abc'"),
        ("0,1,1.5,2,,,,0.5", "play_duration", "'1.5'"),
        ("0,1,1,2,,,,high", "watch_ratio", "'high'"),
        ("0,1,-5,2,,,,0.5", "play_duration", "'-5'"),
        ("0,1,5,-2,,,,0.5", "video_duration", "'-2'"),
        (",1,5,2,,,,0.5", "user_id", "an empty field"),
        ("0,,5,2,,,,0.5", "video_id", "an empty field"),
        ("0,1,5,2,,20200705.5,,0.5", "date", "'20200705.5'"),
        ("0,1,5,2,,,,-0.5", "watch_ratio", "'-0.5'"),
        ("0,1,5,2,,,,inf", "watch_ratio", "'inf'"),
        ("0,1,5,2,,,,NaN", "watch_ratio", "'NaN'"),
        ("0,1,5,2,,,-inf,0.5", "timestamp", "'-inf'"),
        ("0,1,5,2,,,4102444800.0,0.5", "timestamp", "'4102444800.0'"),
        ("0,1,5,0,,,,0.5", "video_duration", "'0'"),
        ("0,1,5,2,,20201345,,0.5", "date", "'20201345'"),
        ("0,1,5,2,,20210229,,0.5", "date", "'20210229'"),
    ],
)
def test_bad_interaction_rows_are_located(
    tmp_path: Path, bad_row: str, column: str, found: str
) -> None:
    path = interaction_file(tmp_path, [*BIG_ROWS, bad_row])
    with pytest.raises(KuaiRecFormatError) as caught:
        read_interactions(path)
    message = str(caught.value)
    assert f"{path} line {len(BIG_ROWS) + 2}, column '{column}'" in message
    assert f"found {found}" in message


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (INTERACTION_HEADER.replace(",watch_ratio", ""), "missing column(s) 'watch_ratio'"),
        (INTERACTION_HEADER + ",extra", "unexpected column(s) 'extra'"),
        (INTERACTION_HEADER.replace("play_duration", "play_time"), "column 3 is 'play_time'"),
    ],
)
def test_bad_headers_name_the_columns(tmp_path: Path, header: str, expected: str) -> None:
    path = interaction_file(tmp_path, BIG_ROWS, header=header)
    with pytest.raises(KuaiRecFormatError, match="line 1") as caught:
        read_interactions(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_reordered_columns_are_accepted(tmp_path: Path) -> None:
    names = INTERACTION_HEADER.split(",")
    rows = [",".join(reversed(row.split(","))) for row in BIG_ROWS]
    path = interaction_file(tmp_path, rows, header=",".join(reversed(names)))
    assert read_interactions(path)["video_id"].to_list() == [10, 11, 11, 10, 12]


@pytest.mark.parametrize(("bad_row", "fields"), [("0,1,5", 3), ("0,1,5,2,,,,0.5,9", 9), ("", 1)])
def test_lines_with_the_wrong_number_of_fields_are_located(
    tmp_path: Path, bad_row: str, fields: int
) -> None:
    path = interaction_file(tmp_path, [*BIG_ROWS[:2], bad_row, *BIG_ROWS[2:]])
    with pytest.raises(KuaiRecFormatError, match=f"line 4: expected 8 fields, found {fields}$"):
        read_interactions(path)


def test_leap_days_and_rows_without_time_are_accepted(tmp_path: Path) -> None:
    path = interaction_file(tmp_path, [*BIG_ROWS, "0,1,5,2,,20200229,,0.5", "0,1,0,2,,,,0.0"])
    assert read_interactions(path)["date"].to_list()[-2:] == [20200229, None]


def test_damage_a_parser_would_miss_is_located(tmp_path: Path) -> None:
    body = ("\n".join([INTERACTION_HEADER, *BIG_ROWS]) + "\n").encode()
    path = tmp_path / "big_matrix.csv"
    path.write_bytes(body.replace(b"2020-08-01 10:01", b"2020-08-01 \xff\xfe:01"))
    with pytest.raises(KuaiRecFormatError, match=r"line 6: invalid UTF-8 bytes b'\\xff\\xfe"):
        read_interactions(path)
    path.write_bytes(body + b'2,10,5,2,"2020-08-02 10:00,20200802,1596333600.0,0.4\n')
    with pytest.raises(KuaiRecFormatError, match=r"line 7: a quoted field is opened here"):
        read_interactions(path)
    path.write_bytes(body + b"2,10,5000,10867,,20200802,1596333600.0,0.")
    with pytest.raises(KuaiRecFormatError, match=r"line 7: the last line has no line break"):
        read_interactions(path)
    path.write_bytes(INTERACTION_HEADER.encode() + b"\n")
    with pytest.raises(KuaiRecFormatError, match=r"has a header but no rows"):
        read_interactions(path)
    path.write_bytes(body.replace(b"video_id", b"user_id", 1))
    with pytest.raises(KuaiRecFormatError) as caught:
        read_interactions(path)
    assert "missing column(s) 'video_id'; repeated column(s) 'user_id'" in str(caught.value)
    assert "duplicated" not in str(caught.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(KuaiRecFormatError, match="empty"):
        read_interactions(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_interactions(tmp_path / "nope.csv")


# --- side files ----------------------------------------------------------------------------------


def test_fabricated_side_files_follow_the_documented_schemas(tmp_path: Path) -> None:
    release = write_release(tmp_path)
    captions = read_captions(release / "kuairec_caption_category.csv")
    assert captions["caption"].to_list() == ["plain caption", "two\nlines", "bare\rreturn"]
    assert captions["topic_tag"].to_list() == [[], ["tag a", "tag b"], ["x", "y"]]
    daily = read_item_daily_features(release / "item_daily_features.csv")
    assert daily.schema == pl.Schema(ITEM_DAILY_COLUMNS) and daily.width == 58
    assert daily["video_duration"].to_list() == [10867.0, None]
    assert daily["collect_cnt"].null_count() == 2
    social = read_social_network(release / "social_network.csv")
    assert social["friend_list"].to_list() == [[1, 4], [0]]
    users = read_user_features(release / "user_features.csv")
    assert users["onehot_feat4"].to_list() == [0.0, None]


def test_side_file_errors_count_quoted_line_breaks(tmp_path: Path) -> None:
    rows = [*CAPTION_ROWS, "oops,UNKNOWN,x,[],8,beauty,673,selfie,-124,UNKNOWN"]
    path = tmp_path / "kuairec_caption_category.csv"
    path.write_text("\n".join([CAPTION_HEADER, *rows]) + "\n")
    # Four records, one of them spans two lines: the bad record starts on line 6.
    with pytest.raises(KuaiRecFormatError, match=r"line 6, column 'video_id': expected an integer"):
        read_captions(path)


@pytest.mark.parametrize(
    ("feat", "expected"),
    [("8", "a list of integers"), ('"[8, x]"', "a list of integers"), ("", None)],
)
def test_item_category_lists_are_checked(tmp_path: Path, feat: str, expected: str | None) -> None:
    path = tmp_path / "item_categories.csv"
    path.write_text(f"video_id,feat\n0,[1]\n1,{feat}\n")
    if expected is None:  # an empty field is a missing list, not an error
        assert read_item_categories(path)["tags"].to_list() == [[1], None]
        return
    with pytest.raises(KuaiRecFormatError, match=f"line 3, column 'feat': expected {expected}"):
        read_item_categories(path)


def test_extra_fields_in_a_side_file_are_located(tmp_path: Path) -> None:
    path = tmp_path / "item_categories.csv"
    path.write_text('video_id,feat\n0,"[1, 2]"\n1,[2],oops\n')
    with pytest.raises(KuaiRecFormatError, match=r"line 3: expected 2 fields, found 3"):
        read_item_categories(path)


def test_daily_feature_counter_must_be_numeric(tmp_path: Path) -> None:
    header, rows = item_daily_rows()
    path = tmp_path / "item_daily_features.csv"
    path.write_text("\n".join([header, rows[0], rows[1].replace(",3,", ",many,", 1)]) + "\n")
    with pytest.raises(KuaiRecFormatError, match=r"line 3, column 'show_cnt': expected a number"):
        read_item_daily_features(path)

"""The seven files of the KuaiRec 2.0 release, as they are written on disk.

One place states each file's columns and raw types, so the reader, the validator, the
synthetic writer and the tests agree on the format. Column names are KuaiRec's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

INTERACTION_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "video_id": pl.Int64(),
    "play_duration": pl.Int64(),
    "video_duration": pl.Int64(),
    "time": pl.String(),
    "date": pl.Float64(),  # small_matrix writes it as a float (20200705.0) because of nulls
    "timestamp": pl.Float64(),
    "watch_ratio": pl.Float64(),
}

ITEM_CATEGORIES_COLUMNS: dict[str, pl.DataType] = {
    "video_id": pl.Int64(),
    "feat": pl.String(),  # a list written as text: "[27, 9]"
}

CAPTION_COLUMNS: dict[str, pl.DataType] = {
    "video_id": pl.Int64(),
    "manual_cover_text": pl.String(),
    "caption": pl.String(),
    "topic_tag": pl.String(),  # a list written as text, unquoted: "[五爱市场,搞笑]" or "[]"
    "first_level_category_id": pl.Int64(),
    "first_level_category_name": pl.String(),
    "second_level_category_id": pl.Int64(),
    "second_level_category_name": pl.String(),
    "third_level_category_id": pl.Int64(),
    "third_level_category_name": pl.String(),
}

USER_FEATURE_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "user_active_degree": pl.String(),
    "is_lowactive_period": pl.Int64(),
    "is_live_streamer": pl.Int64(),
    "is_video_author": pl.Int64(),
    "follow_user_num": pl.Int64(),
    "follow_user_num_range": pl.String(),
    "fans_user_num": pl.Int64(),
    "fans_user_num_range": pl.String(),
    "friend_user_num": pl.Int64(),
    "friend_user_num_range": pl.String(),
    "register_days": pl.Int64(),
    "register_days_range": pl.String(),
    **{f"onehot_feat{i}": pl.Float64() for i in range(18)},  # NaN in feat4 and feat12..17
}

SOCIAL_NETWORK_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "friend_list": pl.String(),  # a list written as text: "[4, 1069]"
}

# item_daily_features.csv: 58 columns; the first 13 are descriptive, the rest daily counters.
ITEM_DAILY_DESCRIPTIVE_COLUMNS: dict[str, pl.DataType] = {
    "video_id": pl.Int64(),
    "date": pl.Int64(),
    "author_id": pl.Int64(),
    "video_type": pl.String(),
    "upload_dt": pl.String(),
    "upload_type": pl.String(),
    "visible_status": pl.String(),
    "video_duration": pl.Float64(),
    "video_width": pl.Int64(),
    "video_height": pl.Int64(),
    "music_id": pl.Int64(),
    "video_tag_id": pl.Int64(),
    "video_tag_name": pl.String(),
}
ITEM_DAILY_COUNTER_NAMES: tuple[str, ...] = (
    "show_cnt", "show_user_num", "play_cnt", "play_user_num", "play_duration",
    "complete_play_cnt", "complete_play_user_num", "valid_play_cnt", "valid_play_user_num",
    "long_time_play_cnt", "long_time_play_user_num", "short_time_play_cnt",
    "short_time_play_user_num", "play_progress", "comment_stay_duration", "like_cnt",
    "like_user_num", "click_like_cnt", "double_click_cnt", "cancel_like_cnt",
    "cancel_like_user_num", "comment_cnt", "comment_user_num", "direct_comment_cnt",
    "reply_comment_cnt", "delete_comment_cnt", "delete_comment_user_num", "comment_like_cnt",
    "comment_like_user_num", "follow_cnt", "follow_user_num", "cancel_follow_cnt",
    "cancel_follow_user_num", "share_cnt", "share_user_num", "download_cnt",
    "download_user_num", "report_cnt", "report_user_num", "reduce_similar_cnt",
    "reduce_similar_user_num", "collect_cnt", "collect_user_num", "cancel_collect_cnt",
    "cancel_collect_user_num",
)  # fmt: skip
# Counters are float because collect_* hold NaN in the real file; play_progress is a ratio.
ITEM_DAILY_COLUMNS: dict[str, pl.DataType] = {
    **ITEM_DAILY_DESCRIPTIVE_COLUMNS,
    **{name: pl.Float64() for name in ITEM_DAILY_COUNTER_NAMES},
}

UNKNOWN_CATEGORY_ID = -124
UNKNOWN_TEXT = "UNKNOWN"


@dataclass(frozen=True)
class KuaiRecFile:
    """One file of the release: its name on disk, its columns, and whether the release needs it."""

    name: str
    columns: dict[str, pl.DataType]
    required: bool

    @property
    def csv_name(self) -> str:
        return f"{self.name}.csv"


KUAIREC_FILES: tuple[KuaiRecFile, ...] = (
    KuaiRecFile("big_matrix", INTERACTION_COLUMNS, required=True),
    KuaiRecFile("small_matrix", INTERACTION_COLUMNS, required=True),
    KuaiRecFile("item_categories", ITEM_CATEGORIES_COLUMNS, required=True),
    KuaiRecFile("kuairec_caption_category", CAPTION_COLUMNS, required=False),
    KuaiRecFile("user_features", USER_FEATURE_COLUMNS, required=False),
    KuaiRecFile("item_daily_features", ITEM_DAILY_COLUMNS, required=False),
    KuaiRecFile("social_network", SOCIAL_NETWORK_COLUMNS, required=False),
)

# Columns of the prepared interaction tables (Parquet cache). `time` is dropped: it is the
# Asia/Shanghai rendering of `timestamp` and carries nothing more.
PREPARED_INTERACTION_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "video_id": pl.Int64(),
    "play_duration": pl.Int64(),
    "video_duration": pl.Int64(),
    "date": pl.Int32(),
    "timestamp": pl.Float64(),
    "watch_ratio": pl.Float64(),
}

# A synthetic world also writes the noise-free expected watch ratio of every small_matrix pair.
GROUND_TRUTH_FILE = "ground_truth.parquet"
GROUND_TRUTH_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "video_id": pl.Int64(),
    "expected_watch_ratio": pl.Float64(),
}

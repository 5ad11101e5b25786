"""Attribute files of a synthetic KuaiRec world: tags, captions, user features, daily video
statistics and the social network, in the exact shape of the real release.

With real side files at hand (`--side-files`), tags, captions and user features are the real
rows of the chosen ids; otherwise they are drawn to match the published distributions
(tag and category frequencies, share of empty captions and UNKNOWN placeholders, NaNs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from shortrec.data.schema import (
    CAPTION_COLUMNS,
    ITEM_DAILY_COUNTER_NAMES,
    UNKNOWN_CATEGORY_ID,
    UNKNOWN_TEXT,
    USER_FEATURE_COLUMNS,
)

# Videos per tag id 0..30 in the real item_categories.csv (reference stats, section 6).
TAG_VIDEO_COUNTS = np.array(
    [24, 463, 216, 104, 164, 964, 912, 503, 1112, 696, 170, 2027, 534, 245, 63, 374,
     214, 350, 131, 686, 265, 29, 20, 39, 12, 468, 490, 31, 1360, 5, 22], dtype=np.float64,
)  # fmt: skip
TAGS_PER_VIDEO_COUNTS = {1: 8970, 2: 1562, 3: 185, 4: 11}

# First-level categories of kuairec_caption_category.csv: id, name, videos (reference stats).
FIRST_LEVEL_CATEGORIES: tuple[tuple[int, str, int], ...] = (
    (28, "民生资讯", 1095), (5, "时尚", 1034), (34, "其他", 914), (8, "颜值", 824),
    (19, "情感", 532), (12, "美食", 475), (6, "明星娱乐", 473), (1, "舞蹈", 422),
    (11, "生活", 417), (33, "自拍", 379), (9, "喜剧", 366), (25, "亲子", 363), (7, "运动", 317),
    (15, "艺术", 309), (20, "二次元", 257), (13, "三农", 236), (17, "宠物", 228),
    (26, "摄影", 211), (2, "音乐", 191), (16, "健康", 190), (31, "健身", 162), (4, "美妆", 153),
    (32, "短剧", 152), (10, "旅游", 136), (18, "汽车", 119), (3, "游戏", 105),
    (29, "科学与法律", 82), (35, "军事", 77), (38, "读书", 65), (39, "影视综", 62),
    (14, "教育", 60), (21, "人文", 50), (23, "时政资讯", 50), (36, "房产家居", 49),
    (27, "高新数码", 42), (24, "星座命理", 41), (UNKNOWN_CATEGORY_ID, UNKNOWN_TEXT, 40),
    (22, "财经", 31), (37, "奇人异象", 19),
)  # fmt: skip
CATEGORY_IDS = np.array([c[0] for c in FIRST_LEVEL_CATEGORIES], dtype=np.int64)
CATEGORY_NAMES = {c[0]: c[1] for c in FIRST_LEVEL_CATEGORIES}
CATEGORY_SHARE_IN_TAGS = 0.733  # videos whose first-level category id is among their tags

_SUBCATEGORY_SUFFIXES = ("日常", "分享", "随拍", "资讯", "互动", "教程", "合集")
_FILLER_WORDS = (
    "今天", "一起", "快乐", "记录", "生活", "美好", "喜欢", "关注我", "加油", "哈哈哈",
    "太好看了", "分享", "日常", "家人们", "新的一天", "真的", "可爱", "上热门",
)  # fmt: skip
_HASHTAGS = ("#搞笑", "#上热门", "#日常", "#热门", "#记录生活", "#感谢快手", "#美食", "#舞蹈")

# user_features.csv: observed category counts (reference stats, section 6).
ACTIVE_DEGREES = {"full_active": 6092, "high_active": 938, "UNKNOWN": 118, "middle_active": 28}
_FOLLOW_EDGES = (
    (0, "0"),
    (10, "(0,10]"),
    (50, "(10,50]"),
    (100, "(50,100]"),
    (150, "(100,150]"),
    (250, "(150,250]"),
    (500, "(250,500]"),
    (None, "500+"),
)

_FANS_EDGES = (
    (0, "0"),
    (9, "[1,10)"),
    (99, "[10,100)"),
    (999, "[100,1k)"),
    (4999, "[1k,5k)"),
    (9999, "[5k,1w)"),
    (None, "[1w,10w)"),
)

_FRIEND_EDGES = (
    (0, "0"),
    (4, "[1,5)"),
    (29, "[5,30)"),
    (59, "[30,60)"),
    (119, "[60,120)"),
    (249, "[120,250)"),
    (None, "250+"),
)

_REGISTER_EDGES = (
    (30, "15-30"),
    (60, "31-60"),
    (90, "61-90"),
    (180, "91-180"),
    (365, "181-365"),
    (730, "366-730"),
    (None, "730+"),
)

ONEHOT_CARDINALITY = (2, 8, 30, 1076, 12, 10, 3, 47, 340, 7, 5, 3, 2, 2, 2, 2, 2, 2)
ONEHOT_NAN_SHARE = {4: 201 / 7176, **{i: 75 / 7176 for i in range(12, 18)}}


def _categorical(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def _list_text(items: list) -> str:
    return "[" + ", ".join(str(x) for x in items) + "]"


def parse_int_lists(texts: pl.Series) -> list[list[int]]:
    """'[27, 9]' -> [27, 9] for a column of list texts (vectorised in polars)."""
    lists = (
        texts.str.strip_chars("[] ")
        .str.split(",")
        .list.eval(pl.element().str.strip_chars().filter(pl.element() != "").cast(pl.Int64))
    )
    return lists.to_list()


# --- videos ------------------------------------------------------------------------------------


def synth_tags(rng: np.random.Generator, n_videos: int) -> list[list[int]]:
    """1-4 distinct tags per video with the real tag frequencies."""
    counts = np.array(list(TAGS_PER_VIDEO_COUNTS.values()), dtype=np.float64)
    n_tags = np.array(list(TAGS_PER_VIDEO_COUNTS))[_categorical(rng, counts, n_videos)]
    # Gumbel top-k per video draws distinct tags proportional to frequency.
    keys = np.log(TAG_VIDEO_COUNTS)[None, :] + rng.gumbel(size=(n_videos, len(TAG_VIDEO_COUNTS)))
    order = np.argsort(-keys, axis=1)
    return [order[i, : n_tags[i]].tolist() for i in range(n_videos)]


def synth_categories(rng: np.random.Generator, tags: list[list[int]]) -> np.ndarray:
    """First-level category id per video: usually the first tag (tag ids reuse category ids)."""
    n = len(tags)
    drawn = CATEGORY_IDS[_categorical(rng, [c[2] for c in FIRST_LEVEL_CATEGORIES], n)]
    first_tag = np.array([t[0] for t in tags], dtype=np.int64)
    usable = np.isin(first_tag, CATEGORY_IDS) & (rng.random(n) < CATEGORY_SHARE_IN_TAGS)
    return np.where(usable, first_tag, drawn)


def item_categories_frame(video_ids: np.ndarray, tags: list[list[int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"video_id": video_ids, "feat": [_list_text(t) for t in tags]},
        schema={"video_id": pl.Int64, "feat": pl.String},
    )


def _caption_texts(rng: np.random.Generator, category_ids: np.ndarray) -> tuple[list, list]:
    """Made-up captions from category names and filler words, and their hashtag lists."""
    n = len(category_ids)
    words = rng.integers(0, len(_FILLER_WORDS), size=(n, 4))
    n_words = rng.integers(1, 5, size=n)
    has_hashtags = rng.random(n) < 0.65
    hashtag_pick = rng.integers(0, len(_HASHTAGS), size=(n, 3))
    n_hashtags = rng.integers(1, 4, size=n)
    empty = rng.random(n) < 0.126
    quirk = rng.random(n)
    captions: list[str | None] = []
    topic_tags: list[list[str]] = []
    for i in range(n):  # one short string per video (10k at most), not per interaction
        if empty[i]:
            captions.append(None)
            topic_tags.append([])
            continue
        name = CATEGORY_NAMES.get(int(category_ids[i]), "")
        text = name + " " + "".join(_FILLER_WORDS[w] for w in words[i, : n_words[i]])
        tags = sorted({_HASHTAGS[h] for h in hashtag_pick[i, : n_hashtags[i]]})
        if has_hashtags[i]:
            text += " " + " ".join(tags)
        if quirk[i] < 0.01:  # separators, quotes and line breaks that need CSV quoting
            text = f'{text},"{name}"\n第二行'
        elif quirk[i] < 0.03:
            text += "，真的，太好了, 哈哈"
        captions.append(text)
        topic_tags.append([t.lstrip("#") for t in tags] if has_hashtags[i] else [])
    if n and not any(c is not None and "\n" in c for c in captions):
        captions[0] = 'line one, "quoted"\nline two'  # every world exercises the quoting
    return captions, topic_tags


def synth_captions(
    rng: np.random.Generator, video_ids: np.ndarray, category_ids: np.ndarray
) -> pl.DataFrame:
    """kuairec_caption_category.csv rows with UNKNOWN / -124 placeholders at the real rates."""
    n = len(video_ids)
    captions, topic_tags = _caption_texts(rng, category_ids)
    cover_known = rng.random(n) >= 6694 / 10728
    cover = np.where(cover_known, "封面" + rng.integers(1, 99, n).astype(str), UNKNOWN_TEXT)
    second_known = rng.random(n) >= 3583 / 10728
    third_known = second_known & (rng.random(n) >= (6832 - 3583) / (10728 - 3583))
    suffix = rng.integers(0, len(_SUBCATEGORY_SUFFIXES), n)
    third_suffix = rng.integers(0, len(_SUBCATEGORY_SUFFIXES), n)
    first_names = np.array([CATEGORY_NAMES[int(c)] for c in category_ids], dtype=object)
    second_names = np.array(
        [f"{first_names[i]}{_SUBCATEGORY_SUFFIXES[suffix[i]]}" for i in range(n)], dtype=object
    )
    third_names = np.array(
        [f"{second_names[i]}·{_SUBCATEGORY_SUFFIXES[third_suffix[i]]}" for i in range(n)],
        dtype=object,
    )
    second_ids = 100 + (np.maximum(category_ids, 0) * 10 + suffix) * 7
    third_ids = 2000 + second_ids * 3 + third_suffix
    unknown_category = category_ids == UNKNOWN_CATEGORY_ID
    second_known &= ~unknown_category
    third_known &= ~unknown_category
    return pl.DataFrame(
        {
            "video_id": video_ids,
            "manual_cover_text": cover,
            "caption": captions,
            "topic_tag": ["[" + ",".join(t) + "]" for t in topic_tags],
            "first_level_category_id": category_ids,
            "first_level_category_name": first_names,
            "second_level_category_id": np.where(second_known, second_ids, UNKNOWN_CATEGORY_ID),
            "second_level_category_name": np.where(second_known, second_names, UNKNOWN_TEXT),
            "third_level_category_id": np.where(third_known, third_ids, UNKNOWN_CATEGORY_ID),
            "third_level_category_name": np.where(third_known, third_names, UNKNOWN_TEXT),
        },
        schema=CAPTION_COLUMNS,
    )


# --- users -------------------------------------------------------------------------------------


def _range_label(values: np.ndarray, edges: tuple) -> np.ndarray:
    uppers = np.array([e for e, _ in edges if e is not None], dtype=np.float64)
    labels = np.array([label for _, label in edges], dtype=object)
    return labels[np.searchsorted(uppers, values, side="left")]


def synth_user_features(rng: np.random.Generator, user_ids: np.ndarray) -> pl.DataFrame:
    """user_features.csv rows: activity degree, flags, counts with their range labels, and
    18 coded features (NaN in onehot_feat4 and 12..17, as in the real file)."""
    n = len(user_ids)
    degrees = np.array(list(ACTIVE_DEGREES), dtype=object)
    follow = np.minimum(np.round(np.exp(rng.normal(3.5, 1.9, n))), 2100).astype(np.int64)
    fans = np.where(
        rng.random(n) < 0.30, 0, np.round(np.exp(rng.normal(1.2, 1.3, n))).astype(np.int64)
    )
    friends = np.where(
        rng.random(n) < 0.61, 0, np.round(np.exp(rng.normal(0.8, 1.2, n))).astype(np.int64)
    )
    register = np.clip(np.round(np.exp(rng.normal(5.4, 0.75, n))), 15, 2245).astype(np.int64)
    columns: dict[str, object] = {
        "user_id": user_ids,
        "user_active_degree": degrees[_categorical(rng, list(ACTIVE_DEGREES.values()), n)],
        "is_lowactive_period": (rng.random(n) < 3 / 7176).astype(np.int64),
        "is_live_streamer": (rng.random(n) < 49 / 7176).astype(np.int64),
        "is_video_author": (rng.random(n) < 1217 / 7176).astype(np.int64),
        "follow_user_num": follow,
        "follow_user_num_range": _range_label(follow, _FOLLOW_EDGES),
        "fans_user_num": fans,
        "fans_user_num_range": _range_label(fans, _FANS_EDGES),
        "friend_user_num": friends,
        "friend_user_num_range": _range_label(friends, _FRIEND_EDGES),
        "register_days": register,
        "register_days_range": _range_label(register, _REGISTER_EDGES),
    }
    for i, cardinality in enumerate(ONEHOT_CARDINALITY):
        # Skewed codes: small codes are common, as with real categorical ids.
        code = np.minimum(rng.geometric(min(1.0, 3.0 / cardinality), n) - 1, cardinality - 1)
        missing = rng.random(n) < ONEHOT_NAN_SHARE.get(i, 0.0)
        columns[f"onehot_feat{i}"] = pl.Series(code.astype(np.int64)).set(pl.Series(missing), None)
    int_schema = {
        name: (pl.Int64 if dtype == pl.Float64() else dtype)
        for name, dtype in USER_FEATURE_COLUMNS.items()
    }  # the real file writes the coded features as integers with empty cells for NaN
    return pl.DataFrame(columns, schema=int_schema)


def synth_social_network(rng: np.random.Generator, user_ids: np.ndarray) -> pl.DataFrame:
    """Friend lists of ~6.6% of users; every friend is itself one of those users (symmetric)."""
    n_members = max(2, round(len(user_ids) * 472 / 7176))
    members = np.sort(rng.choice(user_ids, size=min(n_members, len(user_ids)), replace=False))
    order = rng.permutation(len(members))
    # A matching gives everyone a friend; extra random edges give the ~1.42 mean degree.
    pairs = [order[: len(order) // 2 * 2].reshape(-1, 2)]
    if len(order) % 2:
        pairs.append(np.array([[order[-1], order[0]]]))
    n_extra = round(len(members) * (1.419 - 1.0) / 2)
    pairs.append(rng.integers(0, len(members), size=(n_extra, 2)))
    edges = np.vstack(pairs)
    edges = edges[edges[:, 0] != edges[:, 1]]
    both = np.vstack([edges, edges[:, ::-1]])
    frame = (
        pl.DataFrame({"user_id": members[both[:, 0]], "friend": members[both[:, 1]]})
        .unique()
        .sort(["user_id", "friend"])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("friend"))
    )
    return frame.select(
        "user_id",
        pl.concat_str(
            pl.lit("["),
            pl.col("friend").list.eval(pl.element().cast(pl.String)).list.join(", "),
            pl.lit("]"),
        ).alias("friend_list"),
    )


# --- daily video statistics --------------------------------------------------------------------


def synth_item_daily_features(
    rng: np.random.Generator,
    video_ids: np.ndarray,
    duration_ms: np.ndarray,
    tags: list[list[int]],
    exposure: np.ndarray,
) -> pl.DataFrame:
    """item_daily_features.csv: one row per video and day it was live (~32 days on average),
    with counters that scale with the video's exposure in the world."""
    n = len(video_ids)
    first_day = np.datetime64("2020-07-05")
    n_days = 63
    before = rng.random(n) < 0.2  # uploaded before the collection started
    upload = np.where(
        before,
        first_day - rng.integers(1, 414, n).astype("timedelta64[D]"),
        first_day + rng.integers(0, n_days, n).astype("timedelta64[D]"),
    )
    start = np.maximum((upload - first_day).astype(np.int64), 0)
    days_live = n_days - start
    row_video = np.repeat(np.arange(n), days_live)
    offset = np.arange(len(row_video)) - np.repeat(np.cumsum(days_live) - days_live, days_live)
    keep = rng.random(len(row_video)) < 0.85  # some days have no statistics row
    row_video, offset = row_video[keep], offset[keep] + start[row_video[keep]]
    m = len(row_video)
    date = first_day + offset.astype("timedelta64[D]")
    date_int = (
        (date.astype("datetime64[Y]").astype(int) + 1970) * 10000
        + (date.astype("datetime64[M]").astype(int) % 12 + 1) * 100
        + (date - date.astype("datetime64[M]")).astype(int)
        + 1
    )
    n_authors = max(1, round(n * 8369 / 10728))
    author = rng.zipf(1.3, n) % n_authors
    music = rng.integers(0, max(1, round(n * 8495 / 10728)) * 10, n)
    first_tag = np.array([t[0] if t else -1 for t in tags], dtype=np.int64)
    tag_name = np.array([CATEGORY_NAMES.get(int(t), f"标签{t}") for t in first_tag], dtype=object)
    level = exposure / max(float(np.median(exposure)), 1e-9)
    show = np.round(1328 * level[row_video] * np.exp(rng.normal(0, 1.2, m))).astype(np.int64)
    play_share = np.clip(rng.normal(0.5, 0.15, m), 0.05, 0.95)
    frame: dict[str, object] = {
        "video_id": video_ids[row_video],
        "date": date_int.astype(np.int64),
        "author_id": author[row_video].astype(np.int64),
        "video_type": np.where(rng.random(n) < 0.02, "AD", "NORMAL")[row_video],
        "upload_dt": upload.astype(str)[row_video],
        "upload_type": np.array(["ShortImport", "Web", "LongImport", "PictureSet"], dtype=object)[
            _categorical(rng, [0.7, 0.1, 0.15, 0.05], n)
        ][row_video],
        "visible_status": np.array(["public", "friend", "private"], dtype=object)[
            _categorical(rng, [0.97, 0.02, 0.01], n)
        ][row_video],
        "video_duration": pl.Series(duration_ms[row_video].astype(np.float64)).set(
            pl.Series(rng.random(m) < 10598 / 343341), None
        ),
        "video_width": np.where(rng.random(n) < 0.85, 720, 1080)[row_video],
        "video_height": np.where(rng.random(n) < 0.85, 1280, 1920)[row_video],
        "music_id": music[row_video].astype(np.int64),
        "video_tag_id": first_tag[row_video],
        "video_tag_name": pl.Series(tag_name[row_video], dtype=pl.String).set(
            pl.Series(rng.random(m) < 32434 / 343341), None
        ),
    }
    play = np.round(show * play_share).astype(np.int64)
    counters = {
        "show_cnt": show,
        "show_user_num": np.round(show * 0.9).astype(np.int64),
        "play_cnt": play,
        "play_user_num": np.round(play * 0.9).astype(np.int64),
        "play_duration": np.round(play * duration_ms[row_video] * 0.6).astype(np.int64),
    }
    collect_missing = date_int < 20200718  # collection counters started later
    for name in ITEM_DAILY_COUNTER_NAMES:
        if name in counters:
            frame[name] = counters[name]
        elif name == "play_progress":
            frame[name] = np.round(np.clip(rng.normal(0.38, 0.2, m), 0, 3), 6)
        else:
            values = rng.binomial(np.maximum(play, 0), 0.01 if "cnt" in name else 0.008)
            series = pl.Series(values.astype(np.int64))
            frame[name] = (
                series.set(pl.Series(collect_missing), None) if "collect" in name else series
            )
    return pl.DataFrame(frame).sort(["video_id", "date"])


# --- real side files ---------------------------------------------------------------------------


def read_real_side_files(
    directory: Path, user_ids: np.ndarray, video_ids: np.ndarray
) -> dict[str, pl.DataFrame]:
    """The real item_categories, caption and user_features rows of the chosen ids."""
    files = {
        "item_categories": "item_categories.csv",
        "kuairec_caption_category": "kuairec_caption_category.csv",
        "user_features": "user_features.csv",
    }
    tables: dict[str, pl.DataFrame] = {}
    for name, filename in files.items():
        path = directory / filename
        if not path.exists():
            raise FileNotFoundError(
                f"--side-files: {path} is missing (expected the real {filename})"
            )
        frame = pl.read_csv(path, infer_schema_length=0)  # all text: rewritten as read
        key, ids = ("user_id", user_ids) if name == "user_features" else ("video_id", video_ids)
        if key not in frame.columns:
            raise ValueError(f"{path}: expected a '{key}' column, found {frame.columns[:5]}")
        frame = frame.with_columns(pl.col(key).cast(pl.Int64)).filter(pl.col(key).is_in(ids))
        missing = np.setdiff1d(ids, frame[key].to_numpy())
        if len(missing):
            raise ValueError(f"{path}: no row for {key} {missing[:5].tolist()} (of {len(missing)})")
        tables[name] = frame.unique(key, keep="first").sort(key)
    return tables

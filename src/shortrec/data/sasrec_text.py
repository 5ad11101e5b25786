"""Read the SASRec paper's public data format (ml-1m.txt, Beauty.txt, Steam.txt, ...).

One `user item` pair per line, whitespace separated, 1-based integer ids, each user's lines
in time order. The result is an interactions frame shaped like a prepared KuaiRec matrix, so
every protocol and model runs on it unchanged: the timestamp is the view's position in its
user's sequence, every view is "fully watched" (watch_ratio 1.0), durations are dummies.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from shortrec.data.dataset import KuaiRecData
from shortrec.data.schema import PREPARED_INTERACTION_COLUMNS

_PAIR = r"^\s*(\d+)\s+(\d+)\s*$"


def read_sasrec_text(path: str | Path) -> pl.DataFrame:
    """Interactions (PREPARED_INTERACTION_COLUMNS) from a SASRec text file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SASRec data file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="strict")
    lines = pl.Series("line", text.splitlines(), dtype=pl.String)
    if lines.len() == 0:
        raise ValueError(f"{path} is empty; expected lines of 'user item'")
    pairs = pl.DataFrame(lines).with_columns(
        pl.col("line").str.extract(_PAIR, 1).cast(pl.Int64, strict=False).alias("user_id"),
        pl.col("line").str.extract(_PAIR, 2).cast(pl.Int64, strict=False).alias("video_id"),
    )
    bad = pairs.with_row_index("line_number", offset=1).filter(
        pl.col("user_id").is_null()
        | pl.col("video_id").is_null()
        | (pl.col("user_id") < 1)
        | (pl.col("video_id") < 1)
    )
    if bad.height:
        first = bad.row(0, named=True)
        raise ValueError(
            f"{path}, line {first['line_number']}: expected 'user item' (two positive "
            f"integers), got {first['line']!r} ({bad.height} malformed line(s) in all)"
        )
    return (
        pairs.select("user_id", "video_id")
        .with_columns(
            pl.lit(1, pl.Int64).alias("play_duration"),
            pl.lit(1, pl.Int64).alias("video_duration"),
            pl.lit(None, pl.Int32).alias("date"),
            pl.int_range(pl.len()).over("user_id").cast(pl.Float64).alias("timestamp"),
            pl.lit(1.0).alias("watch_ratio"),
        )
        .select(list(PREPARED_INTERACTION_COLUMNS))
        .cast(PREPARED_INTERACTION_COLUMNS)
    )


def load_sasrec_text(path: str | Path) -> KuaiRecData:
    """A SASRec text file as a release whose big_matrix holds every view and whose
    small_matrix is empty (so only the leave-last-out and temporal protocols apply)."""
    views = read_sasrec_text(path)
    videos = views.group_by("video_id").agg(pl.col("video_duration").first()).sort("video_id")
    return KuaiRecData(
        big_matrix=views,
        small_matrix=views.clear(),
        videos=videos,
        users=None,
        item_daily_features=None,
        social_network=None,
        ground_truth=None,
        source=Path(path),
    )

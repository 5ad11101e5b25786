"""Any interaction log in, the prepared layout out: so every protocol and model runs on it.

People who train on KuaiRec also work on KuaiRand, MovieLens, Amazon and their own logs, and
cross-check with RecBole. `import_log` turns such a log into the same folder `data prepare`
writes (big_matrix.parquet with every interaction, an empty small_matrix.parquet,
item_categories.parquet, optional user_features.parquet, manifest.json), so only the
leave-last-out and temporal protocols apply (there is no fully observed matrix).

What a log may say about each interaction, and what becomes of it (`manifest["signal"]`):
- a watch ratio, or play and video durations (ms): kept as they are; like rules apply as on
  KuaiRec (`signal` "watch_ratio");
- a rating: stored in `watch_ratio` as rating / `rating_max` (so 4 of 5 stars is 0.8) and
  `video_duration` left null; the manifest suggests `--like-rule threshold:X` (`signal`
  "rating");
- a binary label: stored as watch_ratio 1.0 / 0.0 (`signal` "label", rule `threshold:0.5`);
- nothing: watch_ratio left null, so every interaction counts as liked and models say so
  (`signal` "none", rule `all`).
Times come from a time column (Unix seconds, or an ISO date-time) or an order column; without
either, the file order within each user is the order.

Raw ids that are integers stay the public ids; other ids (RecBole tokens such as "u12") are
numbered in sorted order and the mapping is kept in `imported_ids.parquet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from shortrec.data.prepare import publish_prepared
from shortrec.data.schema import PREPARED_INTERACTION_COLUMNS
from shortrec.io import atomic_replace_dir, staging_dir_for

FORMATS = ("table", "recbole", "sasrec")
IMPORTED_IDS_FILE = "imported_ids.parquet"


class LogImportError(ValueError):
    """A log that cannot be imported: the message names the file, column and expectation."""


@dataclass
class ColumnMapping:
    """Which columns of a table hold what (None: the log does not have it)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = None  # Unix seconds (or `time_unit`) or an ISO date-time
    time_unit: str = "s"  # s | ms: the unit of a numeric time column
    order: str | None = None  # any sortable position within the user
    watch_ratio: str | None = None
    play_duration: str | None = None  # ms, with video_duration
    video_duration: str | None = None  # ms
    rating: str | None = None
    rating_max: float = 5.0
    label: str | None = None  # 1 liked, 0 not

    def signal(self) -> str:
        if self.watch_ratio or (self.play_duration and self.video_duration):
            return "watch_ratio"
        if self.rating:
            return "rating"
        if self.label:
            return "label"
        return "none"


@dataclass
class ImportReport:
    out: Path
    interactions: int
    users: int
    items: int
    signal: str
    suggested_like_rule: str
    side_tables: list[str] = field(default_factory=list)


SUGGESTED_RULES = {"watch_ratio": "duration:0.8", "rating": "threshold:0.8",
                   "label": "threshold:0.5", "none": "all"}  # fmt: skip


def import_log(
    source: str | Path,
    out: str | Path,
    fmt: str = "table",
    mapping: ColumnMapping | None = None,
    separator: str = ",",
) -> ImportReport:
    """Read `source` (a CSV/Parquet table, a RecBole `.inter` file or a SASRec text file) and
    write the prepared layout to `out`, all or nothing."""
    source, out = Path(source), Path(out)
    if fmt not in FORMATS:
        raise LogImportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if out.exists() and not out.is_dir():
        raise LogImportError(f"--out {out} is a file, not a folder")
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    if fmt == "sasrec":
        from shortrec.data.sasrec_text import read_sasrec_text

        try:
            views = read_sasrec_text(source)
        except ValueError as error:
            raise LogImportError(str(error)) from error
        mapping = ColumnMapping(user="user_id", item="video_id", order="timestamp")
        signal = "none"
        views = views.with_columns(
            pl.lit(None, pl.Float64).alias("watch_ratio"),
            pl.lit(None, pl.Int64).alias("play_duration"),
            pl.lit(None, pl.Int64).alias("video_duration"),
        )
        id_maps: dict[str, pl.DataFrame] = {}
    else:
        if fmt == "recbole":
            table, mapping, items, users = read_recbole(source)
        else:
            table = _read_table(source, separator)
            mapping = mapping or ColumnMapping()
        signal = mapping.signal()
        views, id_maps = _interactions(table, mapping, source)
        items, users = _side_tables(items, users, id_maps, source)
    if views.height == 0:
        raise LogImportError(f"{source}: no interactions (a header without rows?)")
    video_ids = views.select("video_id").unique()
    categories = (items if items is not None else video_ids.with_columns(tags=None)).select(
        "video_id", pl.col("tags").cast(pl.List(pl.Int64))
    )
    categories = video_ids.join(categories, on="video_id", how="full", coalesce=True)
    tables = {
        "big_matrix": views,
        "small_matrix": views.clear(),
        "item_categories": categories.sort("video_id"),
    }
    if users is not None:
        tables["user_features"] = users
    for kind, table in id_maps.items():
        tables[f"imported_ids_{kind}"] = table
    publish_prepared(
        out, tables, source="import", format=fmt, path=str(source), mapping=asdict(mapping),
        signal=signal, suggested_like_rule=SUGGESTED_RULES[signal],
    )  # fmt: skip
    return ImportReport(
        out=out,
        interactions=views.height,
        users=views["user_id"].n_unique(),
        items=views["video_id"].n_unique(),
        signal=signal,
        suggested_like_rule=SUGGESTED_RULES[signal],
        side_tables=[n for n in ("user_features",) if n in tables]
        + (["item_categories (tags)"] if items is not None else []),
    )


def _read_table(source: Path, separator: str) -> pl.DataFrame:
    try:
        if source.suffix == ".parquet":
            return pl.read_parquet(source)
        return pl.read_csv(source, separator=separator, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as error:
        raise LogImportError(f"{source}: not a readable table ({error})") from error


def _column(table: pl.DataFrame, name: str | None, role: str, source: Path) -> pl.Series | None:
    if name is None:
        return None
    if name not in table.columns:
        raise LogImportError(
            f"{source}: no column {name!r} for the {role} (columns: {', '.join(table.columns)})"
        )
    return table[name]


def _numeric(series: pl.Series, role: str, source: Path) -> pl.Series:
    values = series.cast(pl.Float64, strict=False)
    bad = values.is_null() & series.is_not_null()
    bad = bad | values.is_nan() | values.is_infinite()
    if bad.any():
        row = int(bad.arg_max())
        raise LogImportError(
            f"{source}, row {row + 1}: the {role} column {series.name!r} must hold finite "
            f"numbers, found {series[row]!r}"
        )
    return values


def _ids(series: pl.Series, kind: str, source: Path) -> tuple[pl.Series, pl.DataFrame | None]:
    """Integer ids as they are; other tokens numbered in sorted order (mapping returned)."""
    if series.null_count():
        row = int(series.is_null().arg_max())
        raise LogImportError(f"{source}, row {row + 1}: empty {kind} id in {series.name!r}")
    as_int = series.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0 and series.dtype != pl.Float64:
        return as_int, None
    tokens = series.cast(pl.String)
    vocabulary = tokens.unique().sort()
    mapping = pl.DataFrame({"token": vocabulary, "id": pl.int_range(len(vocabulary), eager=True)})
    ids = pl.DataFrame({"token": tokens}).join(mapping, on="token", how="left")["id"]
    return ids.cast(pl.Int64), mapping.with_columns(pl.lit(kind).alias("kind"))


def _interactions(
    table: pl.DataFrame, mapping: ColumnMapping, source: Path
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    users, user_map = _ids(_column(table, mapping.user, "user id", source), "user", source)
    items, item_map = _ids(_column(table, mapping.item, "item id", source), "item", source)
    n = table.height
    timestamp = _timestamps(table, mapping, source)
    play = video = None
    if mapping.play_duration and mapping.video_duration:
        play = _numeric(_column(table, mapping.play_duration, "play duration", source),
                        "play duration", source)  # fmt: skip
    if mapping.video_duration:
        video = _numeric(_column(table, mapping.video_duration, "video duration", source),
                         "video duration", source)  # fmt: skip
        if (video <= 0).any():
            row = int((video <= 0).arg_max())
            raise LogImportError(
                f"{source}, row {row + 1}: video duration must be > 0 ms, found {video[row]}"
            )
    signal = mapping.signal()
    if mapping.watch_ratio:
        ratio = _numeric(_column(table, mapping.watch_ratio, "watch ratio", source),
                         "watch ratio", source)  # fmt: skip
    elif signal == "watch_ratio":
        ratio = play / video
    elif signal == "rating":
        ratio = _numeric(_column(table, mapping.rating, "rating", source), "rating", source)
        if mapping.rating_max <= 0:
            raise LogImportError(f"--rating-max must be > 0, got {mapping.rating_max}")
        ratio = ratio / mapping.rating_max
    elif signal == "label":
        ratio = _numeric(_column(table, mapping.label, "label", source), "label", source) > 0
        ratio = ratio.cast(pl.Float64)
    else:
        ratio = pl.Series([None] * n, dtype=pl.Float64)
    if (ratio < 0).any():
        row = int((ratio < 0).arg_max())
        raise LogImportError(
            f"{source}, row {row + 1}: watch ratio must be >= 0, found {ratio[row]}"
        )
    views = pl.DataFrame(
        {
            "user_id": users,
            "video_id": items,
            "play_duration": play.round().cast(pl.Int64) if play is not None else None,
            "video_duration": video.round().cast(pl.Int64) if video is not None else None,
            "date": pl.Series([None] * n, dtype=pl.Int32),
            "timestamp": timestamp,
            "watch_ratio": ratio,
        }
    )
    views = (
        views.with_row_index("_row")
        .sort(["user_id", "timestamp", "_row"])
        .drop("_row")
        .select(list(PREPARED_INTERACTION_COLUMNS))
        .cast(PREPARED_INTERACTION_COLUMNS)
    )
    id_maps = {k: m for k, m in (("user", user_map), ("item", item_map)) if m is not None}
    return views, id_maps


def _timestamps(table: pl.DataFrame, mapping: ColumnMapping, source: Path) -> pl.Series:
    if mapping.time:
        raw = _column(table, mapping.time, "time", source)
        if raw.dtype == pl.String:
            try:
                parsed = raw.str.to_datetime(strict=False)
            except pl.exceptions.PolarsError:  # no value looks like a date-time at all
                parsed = pl.Series([None] * len(raw), dtype=pl.Datetime("us"))
            if parsed.null_count() > raw.null_count():
                row = int((parsed.is_null() & raw.is_not_null()).arg_max())
                raise LogImportError(
                    f"{source}, row {row + 1}: time {raw[row]!r} in {raw.name!r} is neither "
                    "Unix seconds nor an ISO date-time"
                )
            return parsed.dt.epoch("ms").cast(pl.Float64) / 1000.0
        if raw.dtype.is_temporal():
            return raw.cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.Float64) / 1000.0
        if mapping.time_unit not in ("s", "ms"):
            raise LogImportError(f"--time-unit must be 's' or 'ms', got {mapping.time_unit!r}")
        seconds = _numeric(raw, "time", source)
        return seconds / 1000.0 if mapping.time_unit == "ms" else seconds
    if mapping.order:
        return _numeric(_column(table, mapping.order, "order", source), "order", source)
    users = _column(table, mapping.user, "user id", source)
    order = pl.DataFrame({"u": users}).select(pl.int_range(pl.len()).over("u").alias("order"))
    return order["order"].cast(pl.Float64)


def _side_tables(
    items: pl.DataFrame | None,
    users: pl.DataFrame | None,
    id_maps: dict[str, pl.DataFrame],
    source: Path,
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """Map side tables onto the imported ids: item tokens -> `tags`, user tokens -> codes."""

    def remap(frame: pl.DataFrame, column: str, kind: str) -> pl.DataFrame:
        if kind in id_maps:
            lookup = id_maps[kind].select(pl.col("token").alias(column), pl.col("id"))
            frame = frame.with_columns(pl.col(column).cast(pl.String))
            return frame.join(lookup, on=column, how="inner").drop(column).rename({"id": column})
        return frame.with_columns(pl.col(column).cast(pl.Int64, strict=False)).drop_nulls(column)

    if items is not None:
        items = remap(items, "video_id", "item")
    if users is not None:
        users = remap(users, "user_id", "user")
    return items, users


# --- RecBole atomic files ------------------------------------------------------------------


def _atomic(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """A RecBole atomic file: tab-separated, header `name:type` (token, token_seq, float,
    float_seq). Returns the table (bare names) and each name's type."""
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().rstrip("\n").split("\t")
    except (OSError, UnicodeDecodeError) as error:
        raise LogImportError(f"{path}: not a readable RecBole atomic file ({error})") from error
    types = {}
    for cell in header:
        name, _, kind = cell.partition(":")
        if kind not in ("token", "token_seq", "float", "float_seq"):
            raise LogImportError(
                f"{path}, header: field {cell!r} must be name:type with type token, "
                "token_seq, float or float_seq"
            )
        types[name] = kind
    try:
        table = pl.read_csv(
            path, separator="\t", has_header=True, new_columns=list(types),
            schema_overrides=dict.fromkeys(types, pl.String), quote_char=None,
        )  # fmt: skip
    except pl.exceptions.PolarsError as error:
        raise LogImportError(f"{path}: malformed RecBole atomic file ({error})") from error
    return table, types


def read_recbole(
    inter: Path,
) -> tuple[pl.DataFrame, ColumnMapping, pl.DataFrame | None, pl.DataFrame | None]:
    """A RecBole dataset from its `.inter` file (or its folder), with `.item` / `.user` side
    files beside it when present."""
    if inter.is_dir():
        found = sorted(inter.glob("*.inter"))
        if not found:
            raise LogImportError(f"{inter}: no .inter file in this folder")
        inter = found[0]
    table, types = _atomic(inter)
    user = next((n for n in ("user_id", "uid", "user") if n in types), None)
    item = next((n for n in ("item_id", "iid", "item", "video_id") if n in types), None)
    if user is None or item is None:
        raise LogImportError(f"{inter}: needs user_id:token and item_id:token fields")
    mapping = ColumnMapping(user=user, item=item)
    if "timestamp" in types:
        mapping.time = "timestamp"
    if "watch_ratio" in types:
        mapping.watch_ratio = "watch_ratio"
    if "video_duration" in types:
        mapping.video_duration = "video_duration"
        if "play_duration" in types:
            mapping.play_duration = "play_duration"
    if "rating" in types and not mapping.watch_ratio:
        mapping.rating = "rating"
        mapping.rating_max = float(table["rating"].cast(pl.Float64, strict=False).max() or 5.0)
    if "label" in types and mapping.signal() == "none":
        mapping.label = "label"
    for name in (mapping.time, mapping.watch_ratio, mapping.rating, mapping.label,
                 mapping.play_duration, mapping.video_duration):  # fmt: skip
        if name:
            table = table.with_columns(pl.col(name).cast(pl.Float64, strict=False))
    stem = inter.with_suffix("")
    items = _recbole_items(stem.with_suffix(".item"), item)
    users = _recbole_users(stem.with_suffix(".user"), user)
    return table, mapping, items, users


def _recbole_items(path: Path, item: str) -> pl.DataFrame | None:
    """Every token and token_seq field of `.item` becomes tags (one vocabulary per field)."""
    if not path.exists():
        return None
    table, types = _atomic(path)
    if item not in types:
        raise LogImportError(f"{path}: no {item} field to join items on")
    token_fields = [n for n, k in types.items() if k in ("token", "token_seq") and n != item]
    exploded = []
    for name in token_fields:
        tokens = table.select(pl.col(item), pl.col(name).str.split(" ").alias("t")).explode("t")
        exploded.append(
            tokens.filter(pl.col("t").is_not_null() & (pl.col("t") != "")).select(
                pl.col(item), pl.concat_str(pl.lit(f"{name}="), pl.col("t")).alias("t")
            )
        )
    if not exploded:
        return table.select(pl.col(item).alias("video_id")).with_columns(tags=None)
    all_tokens = pl.concat(exploded)
    vocabulary = all_tokens.select("t").unique().sort("t").with_row_index("tag")
    tags = (
        all_tokens.join(vocabulary, on="t")
        .group_by(item)
        .agg(pl.col("tag").cast(pl.Int64).sort().alias("tags"))
    )
    return table.select(item).join(tags, on=item, how="left").rename({item: "video_id"})


def _recbole_users(path: Path, user: str) -> pl.DataFrame | None:
    """Each token field of `.user` becomes a categorical code column `onehot_featN` (what the
    user-feature builder one-hot encodes), each float field a count-like feature it ignores."""
    if not path.exists():
        return None
    table, types = _atomic(path)
    if user not in types:
        raise LogImportError(f"{path}: no {user} field to join users on")
    token_fields = [n for n, k in types.items() if k == "token" and n != user]
    codes = [
        pl.col(name).rank("dense").cast(pl.Float64).alias(f"onehot_feat{i}")
        for i, name in enumerate(token_fields)
    ]
    return table.select(pl.col(user).alias("user_id"), *codes)


# --- export --------------------------------------------------------------------------------


def export_recbole(data_dir: str | Path, out: str | Path, name: str | None = None) -> list[Path]:
    """Write a prepared dataset as RecBole atomic files, so results can be cross-checked:
    `NAME.inter` (big_matrix: user_id, item_id, timestamp, watch_ratio, play and video
    duration), `NAME.item` (tags as token_seq, categories) and `NAME.user` (user features)
    when present; a non-empty small_matrix goes to `NAME-small/NAME-small.inter`. Written
    all or nothing."""
    from shortrec.data.dataset import load_prepared

    data_dir, out = Path(data_dir), Path(out)
    data = load_prepared(data_dir)
    name = name or data_dir.name
    staging = staging_dir_for(out)
    try:
        written = [_write_inter(data.big_matrix, staging / f"{name}.inter")]
        if data.small_matrix.height:
            small = staging / f"{name}-small"
            small.mkdir()
            written.append(_write_inter(data.small_matrix, small / f"{name}-small.inter"))
        written.append(_write_items(data.videos, staging / f"{name}.item"))
        if data.users is not None:
            written.append(_write_users(data.users, staging / f"{name}.user"))
        atomic_replace_dir(staging, out)
    finally:
        if staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return [out / path.relative_to(staging) for path in written]


def _write_atomic_file(table: pl.DataFrame, types: dict[str, str], path: Path) -> Path:
    renamed = table.rename({c: f"{c}:{types[c]}" for c in table.columns})
    renamed.write_csv(path, separator="\t", null_value="", quote_style="never")
    return path


def _write_inter(views: pl.DataFrame, path: Path) -> Path:
    table = views.select(
        pl.col("user_id"),
        pl.col("video_id").alias("item_id"),
        pl.col("timestamp"),
        pl.col("watch_ratio"),
        pl.col("play_duration").cast(pl.Float64),
        pl.col("video_duration").cast(pl.Float64),
    )
    types = {"user_id": "token", "item_id": "token", "timestamp": "float", "watch_ratio": "float",
             "play_duration": "float", "video_duration": "float"}  # fmt: skip
    return _write_atomic_file(table, types, path)


def _write_items(videos: pl.DataFrame, path: Path) -> Path:
    columns = [pl.col("video_id").alias("item_id")]
    types = {"item_id": "token"}
    if "tags" in videos.columns:
        columns.append(
            pl.col("tags").list.eval(pl.element().cast(pl.String)).list.join(" ").alias("tags")
        )
        types["tags"] = "token_seq"
    for level in ("first", "second", "third"):
        column = f"{level}_level_category_id"
        if column in videos.columns:
            columns.append(pl.col(column).cast(pl.String))
            types[column] = "token"
    return _write_atomic_file(videos.select(columns), types, path)


def _write_users(users: pl.DataFrame, path: Path) -> Path:
    numeric = [c for c, t in users.schema.items() if c != "user_id" and t.is_numeric()]
    tokens = [c for c, t in users.schema.items() if c != "user_id" and t == pl.String]
    types = {
        "user_id": "token",
        **dict.fromkeys(tokens, "token"),
        **dict.fromkeys(numeric, "float"),
    }
    table = users.select("user_id", *tokens, *(pl.col(c).cast(pl.Float64) for c in numeric))
    return _write_atomic_file(table, types, path)

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
numbered in sorted order and the mapping is kept in `imported_ids_{user,item}.parquet`.

Names travel with the ids. An item table (a RecBole `.item` file, or `items=` for a table
log) is kept whole and typed in `item_attributes.parquet` (token -> String, token_seq ->
List(String), float -> Float64, float_seq -> List(Float64); its manifest entry records each
field's RecBole type and which field is the title and which the category), and what each tag
id means in `tag_names.parquet` (tag, field, name). The loader turns them into the `caption`,
`categories` and `tag_names` columns of the video table, which `recommend`, the server's feed
and the reports show as they show KuaiRec's captions and categories. The title is a name,
not a feature: its words do not become tags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from shortrec.data.dataset import ITEM_ATTRIBUTES_TABLE, TAG_NAMES_TABLE
from shortrec.data.prepare import publish_prepared
from shortrec.data.schema import PREPARED_INTERACTION_COLUMNS
from shortrec.io import atomic_replace_dir, staging_dir_for

FORMATS = ("table", "recbole", "sasrec")
# Item fields recognised by name (case-insensitive) when no --item-title / --item-category
# is given: RecBole's ml-*, Amazon and Yelp item files, MovieLens' movies.csv.
TITLE_FIELDS = ("title", "movie_title", "item_name", "name", "book_title", "caption")
CATEGORY_FIELDS = ("genre", "genres", "category", "categories", "class")


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
    item_title: str | None = None  # item table field holding the title (default: by name)
    item_category: str | None = None  # item table field holding categories (default: by name)
    category_separator: str = "|"  # between categories in one cell of a table (not RecBole)

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
    items: str | Path | None = None,
) -> ImportReport:
    """Read `source` (a CSV/Parquet table, a RecBole `.inter` file or a SASRec text file) and
    write the prepared layout to `out`, all or nothing. `items`: an item table (CSV/Parquet)
    keyed by the log's item column, for a table log (a RecBole log brings its `.item`)."""
    source, out = Path(source), Path(out)
    if fmt not in FORMATS:
        raise LogImportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if out.exists() and not out.is_dir():
        raise LogImportError(f"--out {out} is a file, not a folder")
    if items is not None and fmt != "table":
        raise LogImportError(f"--items applies to a table log; a {fmt} log brings its own")
    item_table: ItemTable | None = None
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
            table, mapping, item_table, users = read_recbole(source, mapping)
        else:
            table = _read_table(source, separator)
            mapping = mapping or ColumnMapping()
            if items is not None:
                item_table = read_item_table(Path(items), mapping, separator)
        signal = mapping.signal()
        views, id_maps = _interactions(table, mapping, source)
        item_table, users = _side_tables(item_table, users, id_maps, source)
    if views.height == 0:
        raise LogImportError(f"{source}: no interactions (a header without rows?)")
    video_ids = views.select("video_id").unique()
    tagged = item_table.tags if item_table is not None else video_ids.with_columns(tags=None)
    categories = tagged.select("video_id", pl.col("tags").cast(pl.List(pl.Int64)))
    categories = video_ids.join(categories, on="video_id", how="full", coalesce=True)
    tables = {
        "big_matrix": views,
        "small_matrix": views.clear(),
        "item_categories": categories.sort("video_id"),
    }
    entries = {}
    if users is not None:
        tables["user_features"] = users
    if item_table is not None:
        attributes = item_table.attributes.select("video_id", *item_table.types)
        tables[ITEM_ATTRIBUTES_TABLE] = attributes.sort("video_id")
        entries[ITEM_ATTRIBUTES_TABLE] = {"types": item_table.types, "roles": item_table.roles,
                                          "source": str(item_table.path)}  # fmt: skip
        tables[TAG_NAMES_TABLE] = item_table.vocabulary
    for kind, table in id_maps.items():
        tables[f"imported_ids_{kind}"] = table
    publish_prepared(
        out, tables, entries, source="import", format=fmt, path=str(source),
        mapping=asdict(mapping), signal=signal, suggested_like_rule=SUGGESTED_RULES[signal],
    )  # fmt: skip
    return ImportReport(
        out=out,
        interactions=views.height,
        users=views["user_id"].n_unique(),
        items=views["video_id"].n_unique(),
        signal=signal,
        suggested_like_rule=SUGGESTED_RULES[signal],
        side_tables=[n for n in ("user_features",) if n in tables]
        + ([item_table.summary()] if item_table is not None else []),
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
    items: ItemTable | None,
    users: pl.DataFrame | None,
    id_maps: dict[str, pl.DataFrame],
    source: Path,
) -> tuple[ItemTable | None, pl.DataFrame | None]:
    """Map side tables onto the imported ids: item tokens -> `tags`, user tokens -> codes."""

    def remap(frame: pl.DataFrame, column: str, kind: str) -> pl.DataFrame:
        if kind in id_maps:
            lookup = id_maps[kind].select(pl.col("token").alias(column), pl.col("id"))
            frame = frame.with_columns(pl.col(column).cast(pl.String))
            return frame.join(lookup, on=column, how="inner").drop(column).rename({"id": column})
        return frame.with_columns(pl.col(column).cast(pl.Int64, strict=False)).drop_nulls(column)

    if items is not None:
        items.tags = remap(items.tags, "video_id", "item")
        items.attributes = remap(items.attributes, "video_id", "item")
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
    inter: Path, options: ColumnMapping | None = None
) -> tuple[pl.DataFrame, ColumnMapping, ItemTable | None, pl.DataFrame | None]:
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
    if options is not None:
        mapping.item_title, mapping.item_category = options.item_title, options.item_category
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
    items = _recbole_items(stem.with_suffix(".item"), item, mapping)
    users = _recbole_users(stem.with_suffix(".user"), user)
    return table, mapping, items, users


@dataclass
class ItemTable:
    """An item table on its way into the prepared folder, keyed by `video_id` (raw tokens
    until `_side_tables` maps them): every field typed, the tags models learn from, and the
    names of those tags."""

    path: Path
    attributes: pl.DataFrame  # video_id + every field, typed
    types: dict[str, str]  # field -> RecBole type (token, token_seq, float, float_seq)
    roles: dict[str, str]  # "title" / "category" -> field
    tags: pl.DataFrame  # video_id, tags: list[int]
    vocabulary: pl.DataFrame  # tag, field, name

    def summary(self) -> str:
        named = ", ".join(f"{role} {field!r}" for role, field in self.roles.items())
        return f"item table ({len(self.types)} fields{'; ' + named if named else ''})"


def _role(types: dict[str, str], given: str | None, known: tuple[str, ...], what: str,
          path: Path) -> str | None:  # fmt: skip
    if given is not None:
        if given not in types:
            raise LogImportError(
                f"{path}: no field {given!r} for the item {what} (fields: {', '.join(types)})"
            )
        return given
    by_name = {name.lower(): name for name in types}
    return next((by_name[name] for name in known if name in by_name), None)


def _item_table(
    table: pl.DataFrame,
    types: dict[str, str],
    key: str,
    mapping: ColumnMapping,
    path: Path,
    tag_fields: list[str],
    seq_separator: str = " ",
) -> ItemTable:
    """Type `table` (every column a string, `types` its RecBole types), pick the title and
    category fields, and number the tokens of `tag_fields` into tags. A token_seq cell is
    split on `seq_separator` (RecBole's: a space)."""
    fields = {name: kind for name, kind in types.items() if name != key}
    roles = {
        role: field
        for role, field in (
            ("title", _role(fields, mapping.item_title, TITLE_FIELDS, "title", path)),
            ("category", _role(fields, mapping.item_category, CATEGORY_FIELDS, "category", path)),
        )
        if field is not None
    }
    columns = [pl.col(key).cast(pl.String).alias("video_id")]
    for name, kind in fields.items():
        text = pl.col(name).cast(pl.String)
        if kind == "float":
            columns.append(text.cast(pl.Float64, strict=False).alias(name))
        elif kind == "float_seq":
            values = text.str.split(" ").list.eval(pl.element().cast(pl.Float64))
            columns.append(values.alias(name))
        elif kind == "token_seq" and name != roles.get("title"):
            tokens = text.str.split(seq_separator).list.eval(
                pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != "")
            )
            columns.append(tokens.alias(name))
        else:  # a token, or the title's text as written
            columns.append(text.alias(name))
    attributes = table.select(columns)
    for name, kind in fields.items():
        if kind == "float" and attributes[name].null_count() > table[name].null_count():
            row = int((attributes[name].is_null() & table[name].is_not_null()).arg_max())
            raise LogImportError(
                f"{path}, row {row + 1}: the float field {name!r} must hold numbers, "
                f"found {table[name][row]!r}"
            )
    exploded = []
    for name in tag_fields:
        values = attributes.select("video_id", pl.col(name).alias("name"))
        if fields[name] == "token_seq":
            values = values.explode("name")
        exploded.append(
            values.filter(pl.col("name").is_not_null() & (pl.col("name") != "")).with_columns(
                pl.lit(name).alias("field")
            )
        )
    schema = {"tag": pl.Int64, "field": pl.String, "name": pl.String}
    if not exploded:
        vocabulary = pl.DataFrame(schema=schema)
        tags = attributes.select("video_id").with_columns(tags=None)
    else:
        tokens = pl.concat(exploded)
        vocabulary = (
            tokens.select("field", "name")
            .unique()
            .sort("field", "name")
            .with_row_index("tag")
            .select(pl.col("tag").cast(pl.Int64), "field", "name")
        )
        tags = (
            tokens.join(vocabulary, on=["field", "name"])
            .group_by("video_id")
            .agg(pl.col("tag").sort().alias("tags"))
        )
        tags = attributes.select("video_id").join(tags, on="video_id", how="left")
    return ItemTable(path, attributes, fields, roles, tags, vocabulary)


def _recbole_items(path: Path, item: str, mapping: ColumnMapping) -> ItemTable | None:
    """`.item`: every field kept, typed; every token and token_seq field but the title
    becomes tags (one vocabulary per field)."""
    if not path.exists():
        return None
    table, types = _atomic(path)
    if item not in types:
        raise LogImportError(f"{path}: no {item} field to join items on")
    items = _item_table(table, types, item, mapping, path, [])
    title = items.roles.get("title")
    tag_fields = [n for n, k in items.types.items() if k in ("token", "token_seq") and n != title]
    return _item_table(table, types, item, mapping, path, tag_fields)


def read_item_table(path: Path, mapping: ColumnMapping, separator: str = ",") -> ItemTable:
    """An item table for a table log (MovieLens' movies.csv: movieId,title,genres): keyed by
    the log's item column; text columns are tokens, numeric ones floats, the category column
    is split on `mapping.category_separator` and its categories become the items' tags."""
    if not path.exists():
        raise FileNotFoundError(f"--items {path} does not exist")
    table = _read_table(path, separator)
    if mapping.item not in table.columns:
        raise LogImportError(
            f"{path}: no column {mapping.item!r} (the log's item column) to join items on "
            f"(columns: {', '.join(table.columns)})"
        )
    types = {n: "float" if t.is_numeric() else "token" for n, t in table.schema.items()}
    types[mapping.item] = "token"
    probe = _item_table(table.head(0), types, mapping.item, mapping, path, [])
    category = probe.roles.get("category")
    if category is not None:
        types[category] = "token_seq"
    if probe.roles.get("title"):
        types[probe.roles["title"]] = "token_seq"  # free text: RecBole's closest type
    text = table.select(pl.all().cast(pl.String))
    tag_fields = [category] if category else []
    return _item_table(
        text, types, mapping.item, mapping, path, tag_fields, mapping.category_separator
    )


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
        written.append(_write_items(data.videos, staging / f"{name}.item", data_dir))
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


def _write_items(videos: pl.DataFrame, path: Path, data_dir: Path) -> Path:
    """An imported item table goes back out field by field with its RecBole types (so the
    round trip rebuilds the same tags and names); otherwise tags and category ids."""
    from shortrec.data.dataset import read_manifest, verify_table

    manifest = read_manifest(data_dir)
    attributes_path = verify_table(data_dir, manifest, ITEM_ATTRIBUTES_TABLE)
    if attributes_path is not None:
        types = manifest["files"][ITEM_ATTRIBUTES_TABLE]["types"]
        attributes = pl.read_parquet(attributes_path)
        columns = [pl.col("video_id").cast(pl.String).alias("item_id")]
        for name in types:
            value = pl.col(name)
            if isinstance(attributes.schema[name], pl.List):
                # RecBole separates a sequence's tokens by spaces: none may hold one.
                text = pl.element().cast(pl.String).str.replace_all(" ", "_")
                value = value.list.eval(text).list.join(" ")
            columns.append(value.cast(pl.String).alias(name))
        return _write_atomic_file(attributes.select(columns), {"item_id": "token", **types}, path)
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

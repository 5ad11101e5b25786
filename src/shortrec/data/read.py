"""Read and validate the seven CSV files of a KuaiRec 2.0 release.

Every reader returns a typed polars frame or raises `KuaiRecFormatError` naming the file, the
1-based line and the column, so a user with a damaged or edited file knows what to fix.

The real files' quirks are handled here and nowhere else:
- big_matrix holds exact duplicate rows (kept here; the loader drops them);
- small_matrix has rows with empty time/date/timestamp, so its `date` is written as a float;
- list columns (`feat`, `topic_tag`, `friend_list`) are written as text and parsed into lists;
- captions hold line breaks inside quotes and four bare carriage returns;
- user_features holds empty (missing) onehot values, read as nulls;
- `UNKNOWN` and `-124` stand for missing category names and ids and are kept as written.

The interaction matrices are large (12.5M rows), so they are parsed with explicit types in one
vectorised pass; only when that fails is the file re-read as text to locate the bad field. The
side files are small and are read as text first, which gives exact line numbers for every check.

Some damage a CSV parser lets through or cannot locate: a quote that is never closed, a last
line cut short (no line break at the end), a line with a field too many, invalid UTF-8. One
pass over the raw bytes (`check_csv_bytes`, which also yields the content hash the cache
records; about 2 GB/s) finds the first three by counting; a file that fails it, or fails to
parse, is re-read to name the line.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
import xxhash

from shortrec.data.schema import (
    CAPTION_COLUMNS,
    INTERACTION_COLUMNS,
    ITEM_CATEGORIES_COLUMNS,
    ITEM_DAILY_COLUMNS,
    PREPARED_INTERACTION_COLUMNS,
    SOCIAL_NETWORK_COLUMNS,
    USER_FEATURE_COLUMNS,
)

_ROW = "__row"
_LINE = "__line"
# A date that is not a whole YYYYMMDD number becomes this value, which the row checks reject.
_INVALID_DATE = -1
# Logs of this kind are recent: dates and Unix times between 1970 and 2100 (exclusive).
_DATE_RANGE = (19700101, 20991231)
_TIMESTAMP_RANGE = (0.0, 4_102_444_800.0)
_CHUNK = 1 << 22
_HEADER_LIMIT = 1 << 20

T = TypeVar("T")


class KuaiRecFormatError(ValueError):
    """A KuaiRec file does not have the documented format."""


@dataclass(frozen=True)
class RowRule:
    """A condition every row must meet: `violated` is true on rows that break it."""

    column: str
    violated: pl.Expr
    expected: str


# --- header ------------------------------------------------------------------------------------


def read_header(path: str | Path) -> list[str]:
    """Column names on the first line of a CSV file, as written (a repeated name stays
    repeated; polars would rename it `name_duplicated_0`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, "rb") as stream:
        first = stream.readline(_HEADER_LIMIT)
    if not first:
        raise KuaiRecFormatError(f"{path}: the file is empty; expected a header line")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError as error:
        raise KuaiRecFormatError(
            f"{path} line 1: invalid UTF-8 at byte {error.start + 1} of the header; "
            "expected UTF-8 text"
        ) from error
    return next(csv.reader([text.removeprefix("\ufeff").rstrip("\r\n")]), [])


def check_header(path: str | Path, expected: dict[str, pl.DataType]) -> None:
    """The header must name exactly the documented columns (in any order)."""
    found = read_header(path)
    wanted = list(expected)
    if sorted(found) == sorted(wanted) and len(set(found)) == len(found):
        return
    missing = [name for name in wanted if name not in found]
    extra = [name for name in found if name not in wanted]
    if len(found) == len(wanted) and missing and len(missing) == len(extra):
        pairs = ", ".join(
            f"column {found.index(bad) + 1} is {bad!r} but {good!r} was expected"
            for bad, good in zip(extra, missing, strict=True)
        )
        detail = f"renamed column(s): {pairs}"
    else:
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(map(repr, missing)))
        if extra:
            parts.append("unexpected column(s) " + ", ".join(map(repr, extra)))
        repeated = sorted({name for name in found if found.count(name) > 1})
        if repeated:
            parts.append("repeated column(s) " + ", ".join(map(repr, repeated)))
        detail = "; ".join(parts)
    raise KuaiRecFormatError(f"{path} line 1: {detail}; expected the header {','.join(wanted)}")


# --- the raw bytes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvBytes:
    """What one pass over a CSV file's bytes shows."""

    size: int
    xxh3_128: str  # content hash (XXH3-128: detects changes; not a signature)
    line_breaks: int
    commas: int
    quotes: int
    ends_with_line_break: bool


def scan_csv_bytes(path: str | Path) -> CsvBytes:
    """Hash and count a file in one streamed pass (constant memory)."""
    digest = xxhash.xxh3_128()
    size = line_breaks = commas = quotes = 0
    last = b""
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            view = np.frombuffer(chunk, dtype=np.uint8)
            size += len(chunk)
            line_breaks += int(np.count_nonzero(view == 10))
            commas += int(np.count_nonzero(view == 44))
            quotes += int(np.count_nonzero(view == 34))
            last = chunk[-1:]
    return CsvBytes(size, digest.hexdigest(), line_breaks, commas, quotes, last == b"\n")


def _first_invalid_utf8(path: Path) -> KuaiRecFormatError | None:
    """Locate the first byte that is not UTF-8 (run when a parse fails: decoding every file
    up front would cost a third more time on the happy path)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line_breaks = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                # The position counts the bytes the decoder held back from the last chunk.
                start = max(error.start - (len(error.object) - len(chunk)), 0)
                line = line_breaks + chunk.count(b"\n", 0, start) + 1
                return KuaiRecFormatError(
                    f"{path} line {line}: invalid UTF-8 bytes {chunk[start : start + 4]!r}; "
                    "expected UTF-8 text (re-save the file as UTF-8)"
                )
            line_breaks += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return KuaiRecFormatError(
            f"{path} line {line_breaks + 1}: the file ends inside a multi-byte character; "
            "expected UTF-8 text (the file looks cut short)"
        )
    return None


def _physical_lines(path: Path) -> pl.LazyFrame:
    """Each physical line of a UTF-8 file as one text field, with its 1-based line number."""
    lines = pl.scan_csv(
        path, has_header=False, separator="\x1f", quote_char=None, schema={"text": pl.String}
    )
    return lines.with_row_index(_LINE, offset=1)


def _unclosed_quote_line(path: Path) -> int:
    """The line where the quote left open at the end of the file was opened: the last line
    that turns the running count of quote characters odd."""
    quotes = pl.col("text").str.count_matches('"', literal=True).fill_null(0)
    open_after = quotes.cum_sum() % 2 == 1
    opened = open_after & ~open_after.shift(1, fill_value=False)
    hit = _physical_lines(path).filter(opened).select(pl.col(_LINE).last()).collect()
    return int(hit.item()) if hit.height and hit.item() is not None else 1


def check_csv_bytes(path: str | Path, width: int | None = None) -> CsvBytes:
    """Refuse what a CSV parser would let through or fail on without a line number: invalid
    UTF-8, a quote never closed, a last line with no line break (a file cut short), and,
    given `width` (files without quoted line breaks), a line whose field count is not
    `width`. Returns the scan, whose hash the cache manifest records."""
    path = Path(path)
    scan = scan_csv_bytes(path)
    ragged = width is not None and scan.commas != (width - 1) * scan.line_breaks
    if scan.quotes % 2 or ragged:  # locating reads the text: it must be UTF-8 first
        bad_text = _first_invalid_utf8(path)
        if bad_text is not None:
            raise bad_text
    if scan.quotes % 2:
        raise KuaiRecFormatError(
            f"{path} line {_unclosed_quote_line(path)}: a quoted field is opened here and "
            'never closed; expected a closing " before the end of the file'
        )
    if scan.size and not scan.ends_with_line_break:
        raise KuaiRecFormatError(
            f"{path} line {scan.line_breaks + 1}: the last line has no line break at its end, "
            "so the file looks cut short (an interrupted copy or download?); expected every "
            "line to end with a line break (if the file is whole, add one)"
        )
    if ragged and width is not None:
        located = _first_ragged_line(path, width, exact=True)
        if located is not None:
            raise located
    return scan


# --- casting text to types, with the offending field located ------------------------------------


def _as_int(text: pl.Expr) -> pl.Expr:
    """Integer from text; also accepts whole floats ("20200705.0"), as pandas writes ints
    in columns that hold missing values."""
    as_float = text.cast(pl.Float64, strict=False)
    whole = pl.when(as_float.is_finite() & (as_float == as_float.floor())).then(as_float)
    return pl.coalesce(text.cast(pl.Int64, strict=False), whole.cast(pl.Int64, strict=False))


def _list_items(text: pl.Expr) -> pl.Expr:
    """ "[a, 'b', c]" -> ["a", "b", "c"]; "[]" -> []. Quotes around items are optional."""
    body = text.str.strip_chars().str.strip_prefix("[").str.strip_suffix("]")
    return body.str.split(",").list.eval(
        pl.element().str.strip_chars().str.strip_chars("'\"").filter(pl.element() != "")
    )


def _is_list_text(text: pl.Expr) -> pl.Expr:
    stripped = text.str.strip_chars()
    return stripped.str.starts_with("[") & stripped.str.ends_with("]")


@dataclass(frozen=True)
class _Cast:
    typed: pl.Expr  # the typed value
    bad: pl.Expr  # true where the text is present but is not a valid value
    expected: str


def _cast(column: str, dtype: pl.DataType, list_of: pl.DataType | None) -> _Cast:
    text = pl.col(column)
    present = text.is_not_null()
    if list_of is not None:
        items = _list_items(text)
        if list_of == pl.Int64():
            typed = items.list.eval(pl.element().cast(pl.Int64, strict=False))
            bad_item = typed.list.eval(pl.element().is_null()).list.any()
            expected = "a list of integers such as [27, 9] or []"
        else:
            typed, bad_item = items, pl.lit(False)
            expected = "a list such as [a,b] or []"
        return _Cast(typed.alias(column), present & (~_is_list_text(text) | bad_item), expected)
    if dtype == pl.Int64():
        typed, expected = _as_int(text), "an integer"
    elif dtype == pl.Float64():
        typed, expected = text.cast(pl.Float64, strict=False), "a number"
    else:
        return _Cast(text.alias(column), pl.lit(False), "text")
    return _Cast(typed.alias(column), present & typed.is_null(), expected)


def _with_lines(text_frame: pl.LazyFrame) -> pl.LazyFrame:
    """Add the row index and the 1-based physical line of each row (quoted line breaks count)."""
    strings = [name for name, dtype in text_frame.collect_schema().items() if dtype == pl.String]
    breaks = pl.sum_horizontal(
        [pl.col(name).str.count_matches("\n", literal=True).fill_null(0) for name in strings]
    )
    return text_frame.with_row_index(_ROW).with_columns(
        (pl.col(_ROW).cast(pl.Int64) + 2 + breaks.cum_sum() - breaks).alias(_LINE)
    )


def _field_error(path: Path, line: int, column: str, expected: str, value: object) -> str:
    found = "an empty field" if value is None else repr(value)
    return f"{path} line {line}, column {column!r}: expected {expected}, found {found}"


def _first_bad_cast(
    path: Path, text_frame: pl.LazyFrame, casts: dict[str, _Cast], line_breaks: bool = True
) -> KuaiRecFormatError | None:
    """The first field that does not convert. Without quoted line breaks (the interaction
    files) row i is line i + 2, and the search streams through the file in constant memory."""
    flags = {name: cast.bad.fill_null(False) for name, cast in casts.items()}
    if not flags:
        return None
    if line_breaks:
        numbered, engine = _with_lines(text_frame), "auto"
    else:
        numbered = text_frame.with_row_index(_ROW).with_columns(
            (pl.col(_ROW).cast(pl.Int64) + 2).alias(_LINE)
        )
        engine = "streaming"
    hit = (
        numbered.filter(pl.any_horizontal(list(flags.values())))
        .head(1)
        .with_columns(**{f"__bad_{name}": flag for name, flag in flags.items()})
        .collect(engine=engine)
    )
    if hit.is_empty():
        return None
    row = hit.row(0, named=True)
    column = next(name for name in casts if row[f"__bad_{name}"])
    return KuaiRecFormatError(
        _field_error(path, row[_LINE], column, casts[column].expected, row[column])
    )


def _first_ragged_line(path: Path, width: int, exact: bool = False) -> KuaiRecFormatError | None:
    """Locate a line with more fields than the header, or (`exact`, for files without quoted
    line breaks) with any other number of fields. Quoted text is removed before counting."""
    commas = pl.col("text").str.replace_all(r'"[^"]*"', "").str.count_matches(",", literal=True)
    wrong = pl.col("commas") != width - 1 if exact else pl.col("commas") >= width
    hit = (
        _physical_lines(path)
        .with_columns(commas.fill_null(0).alias("commas"))
        .filter(wrong)
        .head(1)
        .collect(engine="streaming")
    )
    if hit.is_empty():
        return None
    line, fields = hit[_LINE][0], hit["commas"][0] + 1
    return KuaiRecFormatError(f"{path} line {line}: expected {width} fields, found {fields}")


def _explain_parse_error(
    path: Path, columns: dict[str, pl.DataType], error: Exception
) -> KuaiRecFormatError:
    """Turn a failed typed parse into a message naming the line and the column."""
    bad_text = _first_invalid_utf8(path)
    if bad_text is not None:
        return bad_text
    text_frame = pl.scan_csv(path, infer_schema=False, truncate_ragged_lines=True)
    casts = {name: _cast(name, dtype, None) for name, dtype in columns.items()}
    first_line = str(error).strip().splitlines()[0]
    try:
        if "more fields" in str(error):
            located = _first_ragged_line(path, len(columns))
        else:
            located = _first_bad_cast(path, text_frame, casts, line_breaks=False)
    except pl.exceptions.PolarsError:  # the text re-read fails too: report the parser's words
        located = None
    if located is not None:
        return located
    return KuaiRecFormatError(f"{path}: cannot parse the file ({first_line})")


def parse_or_explain(action: Callable[[], T], path: Path, columns: dict[str, pl.DataType]) -> T:
    """Run a polars action on a CSV; a parse failure becomes a located KuaiRecFormatError."""
    try:
        return action()
    except pl.exceptions.NoDataError as error:
        raise KuaiRecFormatError(f"{path}: the file is empty; expected a header line") from error
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as error:
        raise _explain_parse_error(path, columns, error) from error


# --- row checks ----------------------------------------------------------------------------------


def first_violation(frame: pl.LazyFrame, rules: list[RowRule]) -> tuple[int, RowRule] | None:
    """The first row (0-based) that breaks a rule, and the rule; None if every row is fine.
    Streams, so a table larger than memory can be searched."""
    flags = [rule.violated.fill_null(False).alias(f"__rule_{i}") for i, rule in enumerate(rules)]
    hit = (
        frame.with_row_index(_ROW)
        .filter(pl.any_horizontal([rule.violated.fill_null(False) for rule in rules]))
        .head(1)
        .select(_ROW, *flags)
        .collect(engine="streaming")
    )
    if hit.is_empty():
        return None
    row = hit.row(0, named=True)
    rule = next(rule for i, rule in enumerate(rules) if row[f"__rule_{i}"])
    return row[_ROW], rule


def _not_null(column: str, expected: str) -> RowRule:
    return RowRule(column, pl.col(column).is_null(), expected)


def _id_rules(*columns: str) -> list[RowRule]:
    rules = []
    for column in columns:
        rules.append(_not_null(column, "an id (a non-negative integer)"))
        rules.append(RowRule(column, pl.col(column) < 0, "an id (a non-negative integer)"))
    return rules


def _calendar_date(date: pl.Expr) -> pl.Expr:
    """True where a YYYYMMDD integer is a real day (20200230 and 20201345 are not)."""
    year, month, day = date // 10_000, date // 100 % 100, date % 100
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = (
        pl.when(month == 2)
        .then(pl.when(leap).then(29).otherwise(28))
        .when(month.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )
    return date.is_between(*_DATE_RANGE) & month.is_between(1, 12) & day.is_between(1, month_days)


def interaction_rules() -> list[RowRule]:
    """Checks on a prepared interaction table: impossible values (negative or infinite
    numbers, a video lasting no time, a day that does not exist, a time outside 1970-2100)
    are refused. An inconsistent watch_ratio is not an error: the real files have
    play_duration / video_duration mismatches."""
    play = "a play duration in milliseconds (a non-negative integer)"
    video = "a video duration in milliseconds (a positive integer)"
    ratio = "a watch ratio (a finite, non-negative number)"
    return [
        *_id_rules("user_id", "video_id"),
        _not_null("play_duration", play),
        RowRule("play_duration", pl.col("play_duration") < 0, play),
        _not_null("video_duration", video),
        RowRule("video_duration", pl.col("video_duration") <= 0, video),
        RowRule(
            "date",
            ~_calendar_date(pl.col("date")),
            "a real YYYYMMDD date (1970 to 2099) such as 20200705, or an empty field",
        ),
        RowRule(
            "timestamp",
            ~pl.col("timestamp").is_between(*_TIMESTAMP_RANGE, closed="left"),
            "a Unix time in seconds (finite, between 1970 and 2100), or an empty field",
        ),
        _not_null("watch_ratio", ratio),
        RowRule(
            "watch_ratio",
            ~pl.col("watch_ratio").is_finite() | (pl.col("watch_ratio") < 0),
            ratio,
        ),
    ]


def _raw_field(path: Path, row: int, column: str) -> str | None:
    """The text of one field, read back from the CSV for an error message."""
    frame = pl.scan_csv(path, infer_schema=False, truncate_ragged_lines=True).slice(row, 1)
    return frame.select(column).collect(engine="streaming").item()


# --- interaction matrices ------------------------------------------------------------------------


def scan_interactions(path: str | Path) -> pl.LazyFrame:
    """big_matrix.csv / small_matrix.csv as a lazy frame of PREPARED_INTERACTION_COLUMNS.

    Only the header is read here; run `check_csv_bytes(path, len(INTERACTION_COLUMNS))` for the
    whole-file checks, collect or sink the frame through `parse_or_explain`, then run
    `require_rows` and `check_interactions`. `time` is dropped: it is `timestamp` rendered in
    Asia/Shanghai local time. It is never parsed (that costs a quarter more time on
    big_matrix), so a line with a field too many is found by the byte check's comma count.
    """
    path = Path(path)
    check_header(path, INTERACTION_COLUMNS)
    date = pl.col("date")
    whole_date = date.is_null() | (
        (date == date.floor()) & date.is_between(_DATE_RANGE[0], _DATE_RANGE[1])
    )
    typed_date = pl.when(whole_date).then(date).otherwise(_INVALID_DATE).cast(pl.Int32)
    return pl.scan_csv(path, schema_overrides=INTERACTION_COLUMNS).select(
        typed_date.alias(name) if name == "date" else pl.col(name)
        for name in PREPARED_INTERACTION_COLUMNS
    )


def check_interactions(frame: pl.LazyFrame, path: str | Path) -> None:
    """Row checks on a typed interaction table read from `path` (row i is on line i + 2:
    interaction files have no quoted line breaks)."""
    path = Path(path)
    found = first_violation(frame, interaction_rules())
    if found is not None:
        row, rule = found
        value = _raw_field(path, row, rule.column)
        raise KuaiRecFormatError(_field_error(path, row + 2, rule.column, rule.expected, value))


def require_rows(path: str | Path, rows: int) -> None:
    """A file with a header and no rows is refused: it would replace good data with nothing."""
    if rows == 0:
        raise KuaiRecFormatError(f"{path}: the file has a header but no rows; expected data rows")


def read_interactions(path: str | Path) -> pl.DataFrame:
    """Read and validate big_matrix.csv or small_matrix.csv (duplicate rows are kept)."""
    path = Path(path)
    lazy = scan_interactions(path)
    check_csv_bytes(path, len(INTERACTION_COLUMNS))
    frame = parse_or_explain(lazy.collect, path, INTERACTION_COLUMNS)
    require_rows(path, frame.height)
    check_interactions(frame.lazy(), path)
    return frame


# --- side files ----------------------------------------------------------------------------------


def _read_side_file(
    path: str | Path,
    columns: dict[str, pl.DataType],
    rules: list[RowRule],
    list_columns: dict[str, pl.DataType] | None = None,
) -> pl.DataFrame:
    """Read a small CSV as text, then type it column by column with located errors."""
    path = Path(path)
    check_header(path, columns)
    check_csv_bytes(path)
    list_columns = list_columns or {}

    try:
        text = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.ComputeError as error:
        raise _explain_parse_error(path, dict.fromkeys(columns, pl.String()), error) from error
    require_rows(path, text.height)
    casts = {name: _cast(name, dtype, list_columns.get(name)) for name, dtype in columns.items()}
    bad = _first_bad_cast(path, text.lazy(), casts)
    if bad is not None:
        raise bad
    frame = text.select([casts[name].typed for name in columns])
    found = first_violation(frame.lazy(), rules)
    if found is not None:
        row, rule = found
        line = _with_lines(text.lazy()).slice(row, 1).select(_LINE).collect().item()
        raise KuaiRecFormatError(
            _field_error(path, line, rule.column, rule.expected, text[rule.column][row])
        )
    return frame


def read_item_categories(path: str | Path) -> pl.DataFrame:
    """item_categories.csv -> (video_id, tags: list[int64])."""
    frame = _read_side_file(
        path, ITEM_CATEGORIES_COLUMNS, _id_rules("video_id"), {"feat": pl.Int64()}
    )
    return frame.rename({"feat": "tags"})


def read_captions(path: str | Path) -> pl.DataFrame:
    """kuairec_caption_category.csv -> CAPTION_COLUMNS with topic_tag: list[str].
    `-124` / `UNKNOWN` (missing category) are kept as written."""
    return _read_side_file(path, CAPTION_COLUMNS, _id_rules("video_id"), {"topic_tag": pl.String()})


def read_user_features(path: str | Path) -> pl.DataFrame:
    """user_features.csv -> USER_FEATURE_COLUMNS; missing onehot values are nulls."""
    return _read_side_file(path, USER_FEATURE_COLUMNS, _id_rules("user_id"))


def read_item_daily_features(path: str | Path) -> pl.DataFrame:
    """item_daily_features.csv -> ITEM_DAILY_COLUMNS (58 columns)."""
    return _read_side_file(path, ITEM_DAILY_COLUMNS, _id_rules("video_id"))


def read_social_network(path: str | Path) -> pl.DataFrame:
    """social_network.csv -> (user_id, friend_list: list[int64])."""
    return _read_side_file(
        path, SOCIAL_NETWORK_COLUMNS, _id_rules("user_id"), {"friend_list": pl.Int64()}
    )


SIDE_FILE_READERS: dict[str, Callable[[Path], pl.DataFrame]] = {
    "item_categories": read_item_categories,
    "kuairec_caption_category": read_captions,
    "user_features": read_user_features,
    "item_daily_features": read_item_daily_features,
    "social_network": read_social_network,
}

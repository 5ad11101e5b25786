"""Fuzzing `data prepare`: every damaged release is refused the same way, whatever the damage.

Variants of a tiny valid release (test_data_read.write_release, which carries the real files'
quirks) are generated: an impossible value in each column of each interaction file, and
structural damage (invalid UTF-8, an unclosed quote, a cut last line, a field too many or too
few, a blank line, a header-only or empty file, a repeated or renamed column) in every file.
Each goes through the real CLI, which must exit 2 with `error:`, the file, the line where there
is one and what was expected, no traceback; and the prepared folder from the valid release
must still be there byte for byte, with nothing left beside it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_data_read import BIG_ROWS, SMALL_ROWS, write_release
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.dataset import PreparedDataError, load_prepared
from shortrec.data.prepare import prepare, publish_prepared

COLUMNS = ["user_id", "video_id", "play_duration", "video_duration", "time", "date",
           "timestamp", "watch_ratio"]  # fmt: skip
# Values each interaction column must refuse (empty time/date/timestamp fields are allowed).
BAD_VALUES: dict[str, list[str]] = {
    "user_id": ["", "-1", "1.5", "x", "inf"],
    "video_id": ["", "-3", "7e", "nan"],
    "play_duration": ["", "-5", "2.5", "inf"],
    "video_duration": ["", "0", "-1", "nan", "ten"],
    "date": ["20201345", "20200230", "20210229", "0", "inf", "20200705.5", "2020-07-05"],
    "timestamp": ["inf", "-inf", "nan", "-1", "1e12", "noon"],
    "watch_ratio": ["", "inf", "-inf", "-0.1", "nan", "1e400", "x"],
}


@dataclass(frozen=True)
class Variant:
    name: str
    file: str  # the CSV that is damaged
    damage: Callable[[bytes], bytes]
    line: int | None  # the line the error must name, when there is one


def replace_field(line_number: int, column: str, value: str) -> Callable[[bytes], bytes]:
    def damage(body: bytes) -> bytes:
        lines = body.decode().split("\n")
        fields = lines[line_number - 1].split(",")
        fields[COLUMNS.index(column)] = value
        lines[line_number - 1] = ",".join(fields)
        return "\n".join(lines).encode()

    return damage


def edit_line(line_number: int, edit: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def damage(body: bytes) -> bytes:
        lines = body.split(b"\n")
        lines[line_number - 1] = edit(lines[line_number - 1])
        return b"\n".join(lines)

    return damage


def variants() -> list[Variant]:
    rng = np.random.default_rng(0)
    found: list[Variant] = []
    for file, rows in (("big_matrix", BIG_ROWS), ("small_matrix", SMALL_ROWS)):
        for column, values in BAD_VALUES.items():
            for value in values:
                line = int(rng.integers(2, len(rows) + 2))
                damage = replace_field(line, column, value)
                found.append(Variant(f"{file}-{column}={value!r}", file, damage, line))
        last = len(rows) + 1
        structural: list[tuple[str, Callable[[bytes], bytes], int | None]] = [
            ("ninth-field", edit_line(2, lambda b: b + b",7"), 2),
            ("seven-fields", edit_line(3, lambda b: b.rsplit(b",", 1)[0]), 3),
            ("blank-line", edit_line(3, lambda b: b"\n" + b), 3),
            ("cut-in-a-number", lambda b: b[:-4], last),
            ("bad-utf8", edit_line(3, lambda b: b[:4] + b"\xff\xfe" + b[4:]), 3),
            ("unclosed-quote", edit_line(last, lambda b: b[:-3] + b'"' + b[-3:]), last),
            ("header-only", lambda b: b.split(b"\n", 1)[0] + b"\n", None),
            ("empty", lambda b: b"", None),
            ("repeated-column", lambda b: b.replace(b"video_id", b"user_id", 1), 1),
            ("renamed-column", lambda b: b.replace(b"watch_ratio", b"ratio", 1), 1),
        ]
        found += [
            Variant(f"{file}-{name}", file, damage, line) for name, damage, line in structural
        ]
    for file in ("item_categories", "kuairec_caption_category", "user_features",
                 "social_network", "item_daily_features"):  # fmt: skip
        found += [
            Variant(f"{file}-header-only", file, lambda b: b.split(b"\n", 1)[0] + b"\n", None),
            Variant(f"{file}-cut-last-line", file, lambda b: b[:-2], None),
            Variant(f"{file}-bad-utf8", file, edit_line(2, lambda b: b"\xc3(" + b), 2),
            Variant(f"{file}-first-id", file, edit_line(2, lambda b: b"x" + b), 2),
        ]
    found.append(
        Variant("item_categories-unclosed-quote", "item_categories",
                edit_line(3, lambda b: b.replace(b"[27", b'"[27"', 1) + b'"'), 3)
    )  # fmt: skip
    return found


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("fuzz")
    raw, out = write_release(root / "raw"), root / "cache"
    prepare(raw, out)
    return raw, out, snapshot(out)


def test_every_damaged_release_is_refused_and_the_cache_kept(prepared, tmp_path: Path) -> None:
    raw, out, before = prepared
    runner = CliRunner()
    cases = variants()
    assert len(cases) > 100
    for case in cases:
        damaged = tmp_path / case.name
        shutil.copytree(raw, damaged)  # copy2 keeps mtimes: untouched files count as unchanged
        path = damaged / f"{case.file}.csv"
        path.write_bytes(case.damage(path.read_bytes()))
        result = runner.invoke(
            app, ["data", "prepare", str(damaged), "--out", str(out), "--no-progress"]
        )
        context = f"{case.name}: {result.output!r}"
        assert result.exit_code == 2, context
        assert result.output.startswith("error: "), context
        assert "Traceback" not in result.output and result.exception is not None, context
        assert str(path) in result.output and "expected" in result.output, context
        if case.line is not None:
            assert f"line {case.line}" in result.output, context
        assert snapshot(out) == before, context
        assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
        shutil.rmtree(damaged)


def test_a_valid_change_beside_a_broken_file_replaces_nothing(prepared, tmp_path: Path) -> None:
    raw, out, before = prepared
    damaged = shutil.copytree(raw, tmp_path / "raw")
    with open(damaged / "big_matrix.csv", "a") as csv:  # valid: would be rebuilt first
        csv.write("2,10,5000,10867,,20200802,1596333600.0,0.46\n")
    with open(damaged / "small_matrix.csv", "a") as csv:
        csv.write("2,10,5000,10867,,20200802,inf,0.46\n")
    with pytest.raises(ValueError, match=r"small_matrix.csv line 5, column 'timestamp'"):
        prepare(damaged, out)
    assert snapshot(out) == before
    assert load_prepared(out).big_matrix.height == len(BIG_ROWS) - 1


def test_out_must_be_a_folder_of_our_own(prepared, tmp_path: Path) -> None:
    raw = prepared[0]
    runner = CliRunner()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    result = runner.invoke(app, ["data", "prepare", str(raw), "--out", str(a_file)])
    assert result.exit_code == 2 and "is a file" in result.output, result.output
    assert a_file.read_text() == "mine"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("mine")
    result = runner.invoke(app, ["data", "prepare", str(raw), "--out", str(busy)])
    assert result.exit_code == 2 and "thesis.tex" in result.output, result.output
    assert [p.name for p in busy.iterdir()] == ["thesis.tex"]


def test_the_loader_refuses_a_folder_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    frame = pl.DataFrame({"video_id": [1, 2], "tags": [[0], [1]]})
    tables = {"big_matrix": tmp_path / "b.parquet", "small_matrix": tmp_path / "b.parquet",
              "item_categories": frame}  # fmt: skip
    pl.DataFrame(
        {"user_id": [0], "video_id": [1], "play_duration": [5], "video_duration": [9],
         "date": pl.Series([20200705], dtype=pl.Int32), "timestamp": [1.6e9],
         "watch_ratio": [0.5]}
    ).write_parquet(tables["big_matrix"])  # fmt: skip
    out = tmp_path / "out"
    publish_prepared(out, tables)
    assert load_prepared(out).big_matrix.height == 1

    big = out / "big_matrix.parquet"
    original = big.read_bytes()
    big.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(PreparedDataError, match="content hash differs"):
        load_prepared(out)
    big.write_bytes(original + b"\0")
    with pytest.raises(PreparedDataError, match="bytes but manifest.json records"):
        load_prepared(out)
    big.write_bytes(original)
    frame.write_parquet(out / "user_features.parquet")
    with pytest.raises(PreparedDataError, match="not listed"):
        load_prepared(out)
    (out / "user_features.parquet").unlink()
    (out / "item_categories.parquet").unlink()
    with pytest.raises(PreparedDataError, match="item_categories.parquet: listed"):
        load_prepared(out)
    (out / "manifest.json").write_text('{"tiny": true}')
    with pytest.raises(PreparedDataError, match="cache format None"):
        load_prepared(out)

"""Preparing the Parquet cache: layout, manifest, idempotence, atomicity, and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_data_read import BIG_ROWS, INTERACTION_HEADER, write_release
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.dataset import load_prepared
from shortrec.data.prepare import distinct_row_count, file_hash, prepare
from shortrec.data.read import KuaiRecFormatError
from shortrec.data.schema import GROUND_TRUTH_FILE, PREPARED_INTERACTION_COLUMNS


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_prepare_writes_the_documented_layout_and_manifest(tmp_path: Path) -> None:
    raw, out = write_release(tmp_path / "raw"), tmp_path / "cache"
    report = prepare(raw, out)
    assert report.prepared and not report.unchanged and not report.absent
    names = {
        "big_matrix",
        "small_matrix",
        "item_categories",
        "kuairec_caption_category",
        "user_features",
        "item_daily_features",
        "social_network",
    }
    assert {p.stem for p in out.glob("*.parquet")} == names
    big = pl.read_parquet(out / "big_matrix.parquet")
    assert big.schema == pl.Schema(PREPARED_INTERACTION_COLUMNS)
    assert pl.read_parquet(out / "item_categories.parquet").columns == ["video_id", "tags"]

    files = manifest_of(out)["files"]
    assert set(files) == names
    assert files["big_matrix"]["rows"] == len(BIG_ROWS)
    assert files["big_matrix"]["duplicate_rows"] == 1
    assert files["small_matrix"]["null_timestamp_rows"] == 1
    source = raw / "big_matrix.csv"
    assert files["big_matrix"]["source_size"] == source.stat().st_size
    assert files["big_matrix"]["source_xxh3_128"] == file_hash(source)
    assert files["big_matrix"]["parquet_xxh3_128"] == file_hash(out / "big_matrix.parquet")

    data = load_prepared(out)
    assert data.big_matrix.height == len(BIG_ROWS) - 1  # the loader drops the duplicate
    assert data.social_network["friend_list"].to_list() == [[1, 4], [0]]


def test_the_loader_reads_only_the_columns_and_tables_asked_for(tmp_path: Path) -> None:
    raw, out = write_release(tmp_path / "raw"), tmp_path / "cache"
    prepare(raw, out)
    full = load_prepared(out)
    columns = ["user_id", "video_id", "watch_ratio"]
    lean = load_prepared(out, columns=columns, side_tables=False)
    assert lean.big_matrix.columns == columns
    assert lean.big_matrix.equals(full.big_matrix.select(columns))  # the duplicate is dropped
    assert lean.small_matrix.equals(full.small_matrix.select(columns))
    assert lean.videos.equals(full.videos)  # durations still come from the views
    assert lean.users is None and lean.social_network is None and full.users is not None
    kept = load_prepared(out, columns=columns, drop_duplicates=False)
    assert kept.big_matrix.height == len(BIG_ROWS)
    with pytest.raises(ValueError, match="unknown interaction column"):
        load_prepared(out, columns=["user_id", "rating"])


def test_second_run_skips_unchanged_sources(tmp_path: Path) -> None:
    raw, out = write_release(tmp_path / "raw"), tmp_path / "cache"
    prepare(raw, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    report = prepare(raw, out)
    assert report.up_to_date and len(report.unchanged) == 7
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # A touched but identical file is recognised by its hash; an edited one is rebuilt alone.
    os.utime(raw / "small_matrix.csv", ns=(1, 1))
    assert prepare(raw, out).up_to_date
    assert manifest_of(out)["files"]["small_matrix"]["source_mtime_ns"] == 1
    with open(raw / "big_matrix.csv", "a") as csv:
        csv.write("2,10,5000,10867,2020-08-02 10:00:00.000,20200802,1596333600.0,0.46\n")
    report = prepare(raw, out)
    assert report.prepared == ["big_matrix"]
    assert manifest_of(out)["files"]["big_matrix"]["rows"] == len(BIG_ROWS) + 1

    assert len(prepare(raw, out, force=True).prepared) == 7


def test_download_folder_optional_files_and_ground_truth(tmp_path: Path) -> None:
    download = tmp_path / "download"
    release = write_release(download / "KuaiRec 2.0" / "data", optional=False)
    truth = pl.DataFrame(
        {"user_id": [0, 1], "video_id": [10, 10], "expected_watch_ratio": [0.8, 0.1]}
    )
    truth.write_parquet(release / GROUND_TRUTH_FILE)
    out = tmp_path / "cache"
    report = prepare(download, out)
    assert report.release_dir == release
    assert set(report.absent) == {
        "kuairec_caption_category.csv",
        "user_features.csv",
        "item_daily_features.csv",
        "social_network.csv",
    }
    assert pl.read_parquet(out / GROUND_TRUTH_FILE).equals(truth)
    assert load_prepared(out).ground_truth is not None

    # A source that disappears takes its cached table with it.
    (release / GROUND_TRUTH_FILE).unlink()
    report = prepare(download, out)
    assert report.removed == [GROUND_TRUTH_FILE] and not (out / GROUND_TRUTH_FILE).exists()
    assert "ground_truth" not in manifest_of(out)["files"]


def test_missing_required_file_and_bad_folder(tmp_path: Path) -> None:
    raw = write_release(tmp_path / "raw", optional=False)
    (raw / "item_categories.csv").unlink()
    with pytest.raises(FileNotFoundError, match="item_categories.csv"):
        prepare(raw, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # a failed run creates nothing
    with pytest.raises(FileNotFoundError, match="big_matrix.csv"):
        prepare(tmp_path, tmp_path / "other")


def test_bad_input_leaves_the_previous_cache_intact(tmp_path: Path) -> None:
    raw, out = write_release(tmp_path / "raw"), tmp_path / "cache"
    prepare(raw, out)
    manifest_before = (out / "manifest.json").read_text()
    parquet_before = (out / "big_matrix.parquet").read_bytes()
    with open(raw / "big_matrix.csv", "a") as csv:
        csv.write("2,10,-1,10867,,20200802,1596333600.0,0.46\n")
    with pytest.raises(KuaiRecFormatError, match="column 'play_duration'"):
        prepare(raw, out)
    assert (out / "manifest.json").read_text() == manifest_before
    assert (out / "big_matrix.parquet").read_bytes() == parquet_before
    assert not list(out.glob(".*.tmp"))


def test_distinct_row_count_on_row_hashes() -> None:
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"a": rng.integers(0, 5, 2_000), "b": rng.integers(0, 7, 2_000)})
    hashes = frame.select(pl.struct(pl.all()).hash()).to_series().to_numpy()
    assert distinct_row_count(hashes) == frame.unique().height == 35
    assert distinct_row_count(np.array([], dtype=np.uint64)) == 0


# --- CLI -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_prepare_end_to_end(tmp_path: Path) -> None:
    raw, out = write_release(tmp_path / "raw"), tmp_path / "cache"
    runner = CliRunner()
    args = ["data", "prepare", str(raw), "--out", str(out), "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "prepared big_matrix" in first.output
    assert manifest_of(out)["files"]["big_matrix"]["rows"] == len(BIG_ROWS)

    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "up to date" in second.output

    (raw / "big_matrix.csv").write_text(
        "\n".join([INTERACTION_HEADER, *BIG_ROWS, "0,ten,1,2,,,,0.5"]) + "\n"
    )
    broken = runner.invoke(app, args)
    assert broken.exit_code == 2
    assert "big_matrix.csv line 7, column 'video_id'" in broken.output
    assert "Traceback" not in broken.output

"""`shortrec data import` / `data export`: MovieLens ratings, RecBole atomic files, a KuaiRand
log and a SASRec text file become prepared releases every model trains on; the export
round-trips; bad logs are refused by name, with nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from tiny_release import write_tiny_release
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.dataset import load_prepared
from shortrec.models import REGISTRY

runner = CliRunner()
N_USERS, N_ITEMS, VIEWS = 30, 40, 16

# Small budgets: the point is that every model runs on every imported log.
FAST = {
    "sasrec": ["--epochs", "1", "--maxlen", "8", "--hidden-size", "8"],
    "autoencoder": ["--epochs", "2"],
    "multvae": ["--epochs", "2"],
    "two-tower": ["--epochs", "1"],
    "bpr": ["--epochs", "3"],
    "als": ["--iterations", "3"],
    "two-stage": ["--candidates-per-retriever", "10"],
}
MODELS = [m for m in REGISTRY if m != "oracle"]  # the oracle needs a synthetic ground truth


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def planted(seed: int = 0) -> pl.DataFrame:
    """Users like items of their own group (user % 3 == item % 3)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1, N_USERS + 1), VIEWS)
    items = rng.integers(1, N_ITEMS + 1, len(users))
    same = users % 3 == items % 3
    n = len(users)
    return pl.DataFrame({
        "user": users, "item": items,
        "rating": np.where(same, rng.integers(4, 6, n), rng.integers(1, 3, n)),
        "ratio": np.where(same, rng.uniform(0.8, 1.6, n), rng.uniform(0.0, 0.4, n)),
        # every user views every other day for a month, so time holdouts have data
        "time": 1_600_000_000 + np.tile(np.arange(VIEWS), N_USERS) * 2 * 86_400 + users * 60,
    })  # fmt: skip


@pytest.fixture(scope="module")
def movielens(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    log = planted().select(
        pl.col("user").alias("userId"), pl.col("item").alias("movieId"), "rating",
        pl.col("time").alias("timestamp"),
    )  # fmt: skip
    log.write_csv(root / "ratings.csv")
    output = invoke("data", "import", root / "ratings.csv", "--out", root / "prepared",
                    "--user", "userId", "--item", "movieId", "--rating", "rating",
                    "--time", "timestamp")  # fmt: skip
    assert "signal: rating" in output and "threshold:0.8" in output
    return root / "prepared"


@pytest.fixture(scope="module")
def recbole(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recbole")
    folder = root / "toy"
    folder.mkdir()
    log = planted(1)
    inter = log.select(
        pl.concat_str(pl.lit("u"), pl.col("user")).alias("user_id:token"),
        pl.concat_str(pl.lit("i"), pl.col("item")).alias("item_id:token"),
        pl.col("rating").cast(pl.Float64).alias("rating:float"),
        pl.col("time").cast(pl.Float64).alias("timestamp:float"),
    )
    inter.write_csv(folder / "toy.inter", separator="\t")
    items = pl.DataFrame({
        "item_id:token": [f"i{i}" for i in range(1, N_ITEMS + 1)],
        "movie_title:token_seq": [f"Film number {i} (199{i % 10})" for i in range(1, N_ITEMS + 1)],
        "genre:token_seq": [f"g{i % 3} all" for i in range(1, N_ITEMS + 1)],
        "price:float": [i * 0.5 for i in range(1, N_ITEMS + 1)],
    })  # fmt: skip
    items.write_csv(folder / "toy.item", separator="\t")
    users = pl.DataFrame({
        "user_id:token": [f"u{u}" for u in range(1, N_USERS + 1)],
        "gender:token": ["F" if u % 2 else "M" for u in range(1, N_USERS + 1)],
    })  # fmt: skip
    users.write_csv(folder / "toy.user", separator="\t")
    output = invoke("data", "import", folder, "--format", "recbole", "--out", root / "prepared")
    assert "signal: rating" in output and "user_features" in output
    return root / "prepared"


@pytest.fixture(scope="module")
def kuairand(tmp_path_factory) -> Path:
    """KuaiRand's standard log: user_id, video_id, time_ms, play_time_ms, duration_ms, ..."""
    root = tmp_path_factory.mktemp("kuairand")
    log = planted(2).select(
        pl.col("user").alias("user_id"), pl.col("item").alias("video_id"),
        (pl.col("time") * 1000).alias("time_ms"), pl.lit(1).alias("is_click"),
        (pl.col("ratio") * 12_000).round().cast(pl.Int64).alias("play_time_ms"),
        pl.lit(12_000).alias("duration_ms"), pl.lit(0).alias("is_rand"),
    )  # fmt: skip
    log.write_csv(root / "log_standard_4_22_to_5_08_pure.csv")
    output = invoke("data", "import", root / "log_standard_4_22_to_5_08_pure.csv",
                    "--out", root / "prepared", "--item", "video_id", "--time", "time_ms",
                    "--time-unit", "ms", "--play-duration", "play_time_ms",
                    "--video-duration", "duration_ms")  # fmt: skip
    assert "signal: watch_ratio" in output
    return root / "prepared"


@pytest.mark.slow
@pytest.mark.parametrize(
    "log, rule", [("movielens", "threshold:0.8"), ("recbole", "threshold:0.8"),
                  ("kuairand", "threshold:0.7")],
)  # fmt: skip
def test_every_model_trains_on_an_imported_log(log, rule, request, tmp_path):
    prepared = request.getfixturevalue(log)
    for model in MODELS:
        output = invoke("train", model, "--data", prepared, "--protocol", "leave-last-out",
                        "--like-rule", rule, "--runs-dir", tmp_path, "--no-progress",
                        *FAST.get(model, []))  # fmt: skip
        assert re.search(r"tune \(full-ranking\): ndcg@10 \d", output), (model, output)


def test_imported_tables_keep_ids_times_and_signals(movielens, recbole, kuairand):
    ml = load_prepared(movielens).big_matrix
    assert ml.height == N_USERS * VIEWS and ml["user_id"].min() == 1
    assert ml["watch_ratio"].max() <= 1.0  # rating / 5
    assert ml["video_duration"].null_count() == ml.height
    assert (ml.group_by("user_id").agg(pl.col("timestamp").diff().min())["timestamp"] >= 0).all()
    rb = load_prepared(recbole)
    assert rb.big_matrix["user_id"].n_unique() == N_USERS  # tokens "u1".. numbered
    assert (recbole / "imported_ids_user.parquet").exists()
    assert rb.users is not None and "onehot_feat0" in rb.users.columns
    assert rb.videos["tags"].drop_nulls().list.len().min() == 2  # genre g* and "all"
    assert rb.videos["tags"].drop_nulls().list.len().max() == 2  # the title's words are not tags
    kr = load_prepared(kuairand).big_matrix
    assert kr["timestamp"].min() == pytest.approx(1_600_000_000)
    ratio = planted(2)["ratio"].to_numpy()
    np.testing.assert_allclose(np.sort(kr["watch_ratio"].to_numpy()), np.sort(ratio), atol=1e-4)


def test_sasrec_text_and_a_log_without_signal(tmp_path):
    lines = [f"{u} {(u * 7 + t) % 50 + 1}" for u in range(1, 21) for t in range(6)]
    (tmp_path / "toy.txt").write_text("\n".join(lines) + "\n")
    output = invoke("data", "import", tmp_path / "toy.txt", "--format", "sasrec",
                    "--out", tmp_path / "prepared")  # fmt: skip
    assert "signal: none" in output and "--like-rule all" in output
    views = load_prepared(tmp_path / "prepared").big_matrix
    assert views["watch_ratio"].null_count() == views.height
    output = invoke("train", "ease", "--data", tmp_path / "prepared", "--protocol",
                    "leave-last-out", "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert "100.0% of the judged tune views are liked" in output


def test_export_round_trips_through_recbole(tmp_path):
    release = write_tiny_release(tmp_path / "world")
    invoke("data", "export", release, "--format", "recbole", "--out", tmp_path / "atomic",
           "--name", "tiny")  # fmt: skip
    assert (tmp_path / "atomic" / "tiny.inter").exists()
    assert (tmp_path / "atomic" / "tiny-small" / "tiny-small.inter").exists()
    header = (tmp_path / "atomic" / "tiny.inter").read_text().splitlines()[0]
    assert header.startswith("user_id:token\titem_id:token\ttimestamp:float")
    invoke("data", "import", tmp_path / "atomic" / "tiny.inter", "--format", "recbole",
           "--out", tmp_path / "back")  # fmt: skip
    keys = ["user_id", "video_id", "timestamp"]
    columns = [*keys, "watch_ratio", "play_duration", "video_duration"]
    original = load_prepared(release, drop_duplicates=False).big_matrix.select(columns).sort(keys)
    back = load_prepared(tmp_path / "back", drop_duplicates=False).big_matrix.select(columns)
    assert back.sort(keys).equals(original)


def _item_of(recbole: Path, token: str) -> int:
    ids = pl.read_parquet(recbole / "imported_ids_item.parquet")
    return ids.filter(pl.col("token") == token)["id"].item()


def test_recbole_item_names_are_kept_typed_and_shown(recbole, tmp_path):
    attributes = pl.read_parquet(recbole / "item_attributes.parquet")
    assert attributes.schema["movie_title"] == pl.String
    assert attributes.schema["genre"] == pl.List(pl.String)
    assert attributes.schema["price"] == pl.Float64
    manifest = json.loads((recbole / "manifest.json").read_text())
    entry = manifest["files"]["item_attributes"]
    assert entry["roles"] == {"title": "movie_title", "category": "genre"}
    assert entry["types"]["genre"] == "token_seq" and entry["types"]["price"] == "float"
    names = pl.read_parquet(recbole / "tag_names.parquet")
    assert set(names["name"]) == {"g0", "g1", "g2", "all"} and set(names["field"]) == {"genre"}
    videos = load_prepared(recbole).videos
    seven = videos.filter(pl.col("video_id") == _item_of(recbole, "i7")).row(0, named=True)
    assert seven["caption"] == "Film number 7 (1997)"
    assert seven["categories"] == ["g1", "all"]
    assert sorted(seven["tag_names"]) == ["all", "g1"]
    # `recommend` shows titles and genre names, not tag ids
    invoke("train", "popular", "--data", recbole, "--protocol", "leave-last-out",
           "--like-rule", "threshold:0.8", "--runs-dir", tmp_path, "--no-progress")  # fmt: skip
    (run,) = [p for p in tmp_path.iterdir() if (p / "config.json").exists()]
    out = tmp_path / "top.csv"
    invoke("recommend", run, "--users", "1", "--k", "5", "--out", out)
    top = pl.read_csv(out)
    assert top["caption"].str.starts_with("Film number ").all(), top
    assert {"categories", "tag_names"} <= set(top.columns) and "tags" not in top.columns
    # the server's feed shows them too
    from shortrec.serving.feed import video_metadata

    info = video_metadata(videos)[_item_of(recbole, "i7")]
    assert info["caption"] == "Film number 7 (1997)"
    assert [c["name"] for c in info["categories"]] == ["g1", "all"]
    assert sorted(info["tag_names"]) == ["all", "g1"]


def test_item_names_round_trip_through_the_recbole_export(recbole, tmp_path):
    invoke("data", "export", recbole, "--format", "recbole", "--out", tmp_path / "atomic",
           "--name", "toy")  # fmt: skip
    header = (tmp_path / "atomic" / "toy.item").read_text().splitlines()[0].split("\t")
    assert header == ["item_id:token", "movie_title:token_seq", "genre:token_seq", "price:float"]
    invoke("data", "import", tmp_path / "atomic", "--format", "recbole", "--out", tmp_path / "back")
    for table in ("item_attributes", "tag_names", "item_categories"):
        before = pl.read_parquet(recbole / f"{table}.parquet")
        after = pl.read_parquet(tmp_path / "back" / f"{table}.parquet")
        assert after.equals(before), table
    assert load_prepared(tmp_path / "back").videos.equals(load_prepared(recbole).videos)


def test_a_table_log_takes_its_names_from_an_item_table(tmp_path):
    planted(3).select(
        pl.col("user").alias("userId"),
        pl.col("item").alias("movieId"),
        "rating",
        pl.col("time").alias("timestamp"),
    ).write_csv(tmp_path / "ratings.csv")
    movies = pl.DataFrame({
        "movieId": list(range(1, N_ITEMS + 1)),
        "title": [f"Movie {i}, part {i % 4}" for i in range(1, N_ITEMS + 1)],
        "genres": ["Sci-Fi|Children's Comedy" if i % 2 else "Drama" for i in range(1, N_ITEMS + 1)],
        "year": [1990 + i for i in range(1, N_ITEMS + 1)],
    })  # fmt: skip
    movies.write_csv(tmp_path / "movies.csv")
    output = invoke("data", "import", tmp_path / "ratings.csv", "--out", tmp_path / "prepared",
                    "--user", "userId", "--item", "movieId", "--rating", "rating",
                    "--time", "timestamp", "--items", tmp_path / "movies.csv")  # fmt: skip
    assert "title 'title', category 'genres'" in output
    videos = load_prepared(tmp_path / "prepared").videos
    three = videos.filter(pl.col("video_id") == 3).row(0, named=True)
    assert three["caption"] == "Movie 3, part 3"
    assert three["categories"] == ["Sci-Fi", "Children's Comedy"]
    assert sorted(three["tag_names"]) == ["Children's Comedy", "Sci-Fi"]
    assert pl.read_parquet(tmp_path / "prepared" / "item_attributes.parquet")["year"].dtype == (
        pl.Float64
    )
    bad = runner.invoke(app, ["data", "import", str(tmp_path / "ratings.csv"), "--out",
                              str(tmp_path / "bad"), "--user", "userId", "--item", "item",
                              "--items", str(tmp_path / "movies.csv")])  # fmt: skip
    assert bad.exit_code == 2 and "no column 'item'" in bad.output
    bad = runner.invoke(app, ["data", "import", str(tmp_path / "ratings.csv"), "--out",
                              str(tmp_path / "bad"), "--user", "userId", "--item", "movieId",
                              "--items", str(tmp_path / "movies.csv"),
                              "--item-title", "name"])  # fmt: skip
    assert bad.exit_code == 2 and "no field 'name' for the item title" in bad.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("a,b\n1,2\n", [], "no column 'user_id' for the user id"),
        ("user_id,item_id,rating\n1,2,x\n", ["--rating", "rating"], "row 1: the rating column"),
        ("user_id,item_id\n", [], "no interactions"),
        ("user_id,item_id,t\n1,2,2020-13-45\n", ["--time", "t"], "neither Unix seconds"),
        ("user_id,item_id,p,d\n1,2,5,0\n", ["--play-duration", "p", "--video-duration", "d"],
         "video duration must be > 0"),
    ],
)  # fmt: skip
def test_bad_logs_are_refused_by_name_and_write_nothing(tmp_path, content, args, message):
    (tmp_path / "log.csv").write_text(content)
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["data", "import", str(tmp_path / "log.csv"), "--out", str(out),
                                 *args])  # fmt: skip
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists() and not list(tmp_path.glob(".prepared*"))

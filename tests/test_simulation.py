"""The feed simulator, end to end through the real CLI on a tiny synthetic world, plus the two
pieces it rests on: the batched feed the server also answers with, and the taste model's
online session drift (which must be the world's own drift, view by view)."""

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.synth import load_world_config, planted_taste
from shortrec.leaderboard import leaderboard_rows, simulation_rows
from shortrec.serving.runs import load_served_run
from shortrec.simulation.simulate import (
    SIMULATION_METRICS,
    ExitModel,
    SimulationConfig,
    simulate,
)

runner = CliRunner()
FAST_SASREC = ["--epochs", "2", "--eval-every", "1", "--hidden-size", "16", "--maxlen", "20",
               "--no-progress"]  # fmt: skip


def invoke(*args: object) -> str:
    no_progress = ["--no-progress"] if args[0] == "simulate" else []
    result = runner.invoke(app, [str(a) for a in args] + no_progress)
    assert result.exit_code == 0, result.output
    return result.output


def train(tiny_synth_world: Path, runs: Path, model: str, *flags: object) -> Path:
    output = invoke(
        "train", model, "--data", tiny_synth_world / "prepared", "--runs-dir", runs, *flags
    )
    return Path(re.search(r"run: (\S+)", output).group(1))


@pytest.fixture(scope="module")
def runs(tiny_synth_world: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("simruns")
    return {
        "popular": train(tiny_synth_world, folder, "popular", "--test"),
        "random": train(tiny_synth_world, folder, "random", "--test"),
        "oracle": train(
            tiny_synth_world,
            folder,
            "oracle",
            "--test",
            "--target",
            "watch_time",
            "--label",
            "oracle-watch-time",
        ),  # fmt: skip
        "sasrec": train(tiny_synth_world, folder, "sasrec", "--test", *FAST_SASREC),
    }


def test_simulate_writes_metrics_and_the_leaderboard_shows_them(runs, tiny_synth_world):
    for name in ("popular", "oracle", "sasrec"):
        output = invoke("simulate", runs[name], "--steps", "20")
        assert output.startswith("simulation_test (") and "watch ratios from world" in output
    run = runs["sasrec"]
    metrics = json.loads((run / "metrics.json").read_text())
    result = metrics["simulation_test"]
    assert result["mode"] == "simulation" and result["outcomes"] == "world"
    assert set(SIMULATION_METRICS) <= set(result["summary"])
    assert "test" in metrics  # the offline evaluation is kept beside it
    per_user = pl.read_parquet(run / "per_user_simulation_test.parquet")
    events = pl.read_parquet(run / "simulation_test_events.parquet")
    assert per_user.height == result["aggregate"]["users"] > 0
    assert (
        per_user["session_length"].max() <= 20 and events.height == per_user["session_length"].sum()
    )
    # The feed never shows a video twice, nor one the user watched in big_matrix.
    assert events.select("user_id", "video_id").is_unique().all()
    # Watch time is the watch ratio times the video's length, summed per user.
    lengths = (
        pl.read_parquet(tiny_synth_world / "prepared" / "small_matrix.parquet")
        .group_by("video_id")
        .agg(pl.col("video_duration").first())
    )
    timed = events.join(lengths, on="video_id")
    assert np.allclose(timed["watch_seconds"], timed["watch_ratio"] * timed["video_duration"] / 1e3)
    assert per_user["watch_seconds"].sum() == pytest.approx(events["watch_seconds"].sum())

    board = invoke("leaderboard", "--runs-dir", run.parent, "--simulation")
    models = [line.split("│")[1].strip() for line in board.splitlines() if line.startswith("│")]
    assert models[0] == "oracle-watch-time" and {"popular", "sasrec"} <= set(models)
    assert "watch_seconds" in board and "offline test ndcg@10" in board


def test_the_oracle_watches_longer_than_popularity(runs):
    for name in ("popular", "oracle"):
        invoke("simulate", runs[name], "--steps", "30", "--seed", "3")
    rows = {r["model"]: r for r in leaderboard_rows(runs["popular"].parent, "simulation_test",
                                                     "watch_seconds", "popular")}  # fmt: skip
    paired = rows["oracle-watch-time"]["paired"]
    assert paired.difference.low > 0, paired  # per user, paired, with a 95% interval
    oracle, popular = rows["oracle-watch-time"]["summary"], rows["popular"]["summary"]
    assert oracle["liked_share"]["mean"] > popular["liked_share"]["mean"]


def test_same_seed_same_sessions_other_seed_other_sessions(runs):
    served, run, data = load_served_run(runs["sasrec"])
    config = run.config
    settings = {"steps": 15, "slate": 3}
    first = simulate(served, config, data, SimulationConfig(seed=1, **settings), progress=False)
    again = simulate(served, config, data, SimulationConfig(seed=1, **settings), progress=False)
    other = simulate(served, config, data, SimulationConfig(seed=2, **settings), progress=False)
    assert first.events.equals(again.events) and first.per_user.equals(again.per_user)
    assert not first.events.equals(other.events)
    assert (first.events["slate_position"] > 0).any()  # the choice model picks lower slots too


def test_the_exit_model_ends_a_boring_feed_early(runs):
    served, run, data = load_served_run(runs["random"])
    config = run.config
    never = ExitModel(weak_streak=0, repeat_run=0, leave_probability=0.0)
    endless = simulate(served, config, data, SimulationConfig(steps=25, exit=never), progress=False)
    assert (endless.per_user["session_length"] == 25).all()
    assert set(endless.per_user["exit"]) == {"finished"}
    bored = ExitModel(weak_streak=1, repeat_run=0, leave_probability=0.0)
    short = simulate(served, config, data, SimulationConfig(steps=25, exit=bored), progress=False)
    assert short.per_user["session_length"].mean() < 25 / 2
    assert "weak" in set(short.per_user["exit"])
    # Leaving happens right after a weak view, and only then.
    last = short.events.group_by("user_id").agg(pl.col("weak").last(), pl.len())
    assert last.filter(pl.col("len") < 25)["weak"].all()


def test_matrix_outcomes_are_the_observed_small_matrix(runs, tiny_synth_world):
    invoke("simulate", runs["popular"], "--outcomes", "matrix", "--steps", "5", "--slate", "2")
    events = pl.read_parquet(runs["popular"] / "simulation_test_events.parquet")
    small = pl.read_parquet(tiny_synth_world / "prepared" / "small_matrix.parquet")
    joined = events.join(small, on=["user_id", "video_id"], suffix="_observed")
    assert joined.height == events.height
    assert np.allclose(joined["watch_ratio"], joined["watch_ratio_observed"])


def test_bad_input_is_a_clear_error(runs, tiny_synth_world, tmp_path):
    result = runner.invoke(app, ["simulate", str(runs["popular"]), "--users", "train"])
    assert result.exit_code == 2 and "--users must be tune or test" in result.output
    result = runner.invoke(app, ["simulate", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output
    bad_world = tmp_path / "world.json"  # the same world, but other tastes
    spec = json.loads((tiny_synth_world / "raw" / "world.json").read_text())
    spec["taste"]["quality_sd"] *= 2
    bad_world.write_text(json.dumps(spec))
    result = runner.invoke(app, ["simulate", str(runs["popular"]), "--world", str(bad_world)])
    assert result.exit_code == 2 and "does not reproduce" in result.output


def test_online_session_drift_is_the_worlds_drift(tiny_synth_world):
    """Driven view by view with the same random numbers, the simulator's session state gives
    exactly the drift the world generator applies to a whole sequence."""
    taste, _, _ = planted_taste(load_world_config(tiny_synth_world / "raw" / "world.json"))
    videos = np.random.default_rng(0).integers(0, taste.n_videos, 40)
    batch = taste.session_drift(np.zeros(40, np.int64), videos, np.random.default_rng(7))
    centre = taste.topic[videos].mean(axis=0, keepdims=True)
    rng = np.random.default_rng(7)
    state = taste.session_start(1, rng)
    online = []
    for video in videos:
        online.append(taste.session_drift_of(state, np.array([[video]]))[0, 0])
        state = taste.session_step(state, np.array([video]), centre, rng)
    assert np.allclose(online, batch, atol=1e-5)
    # Binge: watching one topic again and again (same shocks, with and without the push)
    # lifts the appeal of videos close to it and lowers that of videos far from it.
    binge = plain = np.zeros_like(state)
    for step in range(10):
        binge = taste.session_step(binge, videos[:1], 0 * centre, np.random.default_rng(step))
        plain = taste.session_step(
            plain, videos[:1], taste.topic[videos[:1]], np.random.default_rng(step)
        )
    near, far = np.argsort(taste.topic @ taste.topic[videos[0]])[[-1, 0]]
    gain = taste.session_drift_of(binge - plain, np.array([[near, far]]))[0]
    assert gain[0] > 0 > gain[1]


def test_the_batched_feed_gives_every_user_what_recommend_gives_one(runs):
    from shortrec.serving.feed import Feed

    served, _, data = load_served_run(runs["sasrec"])
    feed = Feed(served, data.videos, data.big_matrix)
    users = feed.base.user_ids[:6]
    feed.add_views(users[:2], feed.catalogue_ids[:2], np.array([1.5, 0.1]), np.array([2e9, 0.0]))
    batch = feed.recommend_batch(np.append(users, 10**9), k=7)  # and an unknown user
    for row, user in enumerate(np.append(users, 10**9)):
        one = feed.recommend(int(user), k=7)
        assert np.array_equal(batch.video_ids[row], one.video_ids)
        assert np.allclose(batch.scores[row], one.scores)
    assert batch.strategies[-1] == "popularity" and (batch.strategies[:-1] == "model").all()
    # The same as scoring the user's own views (dataset + live) over the unwatched videos.
    views = feed.views_of(int(users[0]))
    unwatched = feed.catalogue_ids[~np.isin(feed.catalogue_ids, views.video_ids)]
    scores = served.model.score(users[:1], unwatched, views.histories)[0]
    best = unwatched[np.lexsort((unwatched, -scores))[:7]]
    assert np.array_equal(batch.video_ids[0], best)
    assert feed.catalogue_ids[0] not in batch.video_ids[0]  # the live view is excluded


def test_static_ablation_markdown_and_report(runs, tmp_path):
    from shortrec.report.report import build_report

    run = runs["sasrec"]
    invoke("simulate", run, "--steps", "10")
    invoke("simulate", run, "--steps", "10", "--no-live-events")
    assert "simulation_test-static" in json.loads((run / "metrics.json").read_text())
    static = pl.read_parquet(run / "simulation_test-static_events.parquet")
    live = pl.read_parquet(run / "simulation_test_events.parquet")
    assert static.select("user_id", "video_id").is_unique().all()  # still never a repeat
    assert not static.equals(live)  # SASRec reacts to live events
    (row,) = [r for r in simulation_rows(run.parent, "test", "watch_seconds", "popular")
              if r["model"] == "sasrec"]  # fmt: skip
    live_seconds = pl.read_parquet(run / "per_user_simulation_test.parquet")["watch_seconds"]
    static_seconds = pl.read_parquet(run / "per_user_simulation_test-static.parquet")[
        "watch_seconds"
    ]
    difference = (live_seconds - static_seconds).mean()
    assert row["live_vs_static"].difference.mean == pytest.approx(difference)
    table = invoke("leaderboard", "--runs-dir", run.parent, "--simulation", "--markdown")
    assert table.startswith("| model | users | watch_seconds") and "without live events" in table
    html = build_report(run.parent, tmp_path / "report").read_text()
    simulation = html.split('id="simulation"')[1].split("</section>")[0]
    assert "<td>sasrec</td>" in simulation and "<img" in simulation

"""`shortrec simulate`: every tune or test user of small_matrix watches a feed from a run.

Each user starts from their big_matrix history. At each step the run's model, through
`Feed.recommend_batch` (the code `shortrec serve` answers with), recommends a slate to every
user still in session with one `score` call; each user watches one video of it (the choice
model), the watch ratio comes from small_matrix or the synthetic world (see `outcomes`), and
the view is posted back with `Feed.add_views`, as a live event is. Then the exit model decides
who leaves. Everything is vectorised over users; one step costs one `score` call.

Randomness is drawn per step from (seed, step) for every user, whether or not they are still
watching, so two policies see the same random numbers where they made the same choice: paired
comparisons between runs are then sharper, and a run is reproducible from its seed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from shortrec.data.dataset import KuaiRecData
from shortrec.data.histories import IdMap
from shortrec.data.labels import LikeRule
from shortrec.evaluation.statistics import Interval, bootstrap_intervals
from shortrec.runs import Run, RunConfig, split_for
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.runs import load_served_run
from shortrec.simulation.outcomes import MIN_RATIO, build_outcomes

# Per-user metrics, in table order; the first is what leaderboards sort by.
SIMULATION_METRICS = (
    "watch_seconds",
    "session_length",
    "liked_share",
    "categories",
    "category_repeats",
    "watch_ratio",
)
STATIC_SUFFIX = "-static"  # key suffix of a simulation without live events


@dataclass
class ChoiceModel:
    """Which video of a slate the user watches: a position-biased multinomial logit on the
    watch ratio the user would have, P(i) ~ exp(sharpness * log(r_i) - position_bias * i) for
    slate position i = 0, 1, ... (r_i: small_matrix's ratio, or on a synthetic world the taste
    model's expected ratio in the session's current state). A slate of one is always watched."""

    sharpness: float = 1.0
    position_bias: float = 0.5


@dataclass
class ExitModel:
    """When a user leaves, checked after every view (any rule ends the session; 0 disables one):
    after `weak_streak` weak views in a row (weak: disliked by the default duration-aware like
    rule, i.e. in the bottom 30% of its duration bucket), after `repeat_run` views in a row of
    the same first-level category, or at random with `leave_probability` per view."""

    weak_streak: int = 2
    repeat_run: int = 6
    leave_probability: float = 0.01


@dataclass
class SimulationConfig:
    users: str = "test"  # tune | test: which small_matrix users
    steps: int = 50
    slate: int = 1
    seed: int = 0
    outcomes: str = "auto"  # auto | world | matrix (see outcomes.build_outcomes)
    choice: ChoiceModel = field(default_factory=ChoiceModel)
    exit: ExitModel = field(default_factory=ExitModel)
    step_seconds: float = 30.0  # time between a session's events (their timestamps only)
    # False: views are not posted back, so the policy scores every step from the big_matrix
    # history alone (the static ablation of in-session reaction).
    live_events: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.choice, dict):
            self.choice = ChoiceModel(**self.choice)
        if isinstance(self.exit, dict):
            self.exit = ExitModel(**self.exit)
        if self.users not in ("tune", "test"):
            raise ValueError(f"--users must be tune or test, got {self.users!r}")
        if self.steps < 1 or self.slate < 1:
            raise ValueError(f"--steps and --slate must be >= 1, got {self.steps}, {self.slate}")
        if not 0 <= self.exit.leave_probability <= 1:
            raise ValueError("the per-view leave probability must be in [0, 1]")

    @property
    def key(self) -> str:
        """The run's metrics.json key and per-user file suffix."""
        return f"simulation_{self.users}" + ("" if self.live_events else STATIC_SUFFIX)


@dataclass
class SimulationResult:
    config: SimulationConfig
    outcomes: str  # where watch ratios came from
    per_user: pl.DataFrame
    events: pl.DataFrame
    seconds: float  # all of it, after the run was loaded
    loop_seconds: float  # the steps alone (recommend, choose, watch, post, exit)

    def intervals(self) -> dict[str, Interval]:
        """Mean of each per-user metric with its 95% bootstrap interval over users."""
        columns = {m: self.per_user[m].to_numpy().astype(np.float64) for m in SIMULATION_METRICS}
        return bootstrap_intervals(columns)

    def to_dict(self) -> dict:
        reasons = self.per_user["exit"].value_counts()
        return {
            "mode": "simulation",
            "config": dataclasses.asdict(self.config),
            "outcomes": self.outcomes,
            "aggregate": {
                "users": self.per_user.height,
                "views": self.events.height,
                "seconds": self.seconds,
                "loop_seconds": self.loop_seconds,
                "exits": dict(zip(reasons["exit"], reasons["count"], strict=True)),
            },
            "summary": {m: i.to_dict() for m, i in self.intervals().items()},
        }


def simulate(
    served: ServedModel,
    run_config: RunConfig,
    data: KuaiRecData,
    config: SimulationConfig,
    world_file: Path | None = None,
    progress: bool = True,
) -> SimulationResult:
    """Simulate the feed of `served` for the configured users; see the module docstring."""
    started = time.perf_counter()
    protocol = run_config.experiment.protocol
    if protocol != "kuairec":
        raise ValueError(
            f"simulation needs a run of the kuairec protocol (small_matrix users and videos); "
            f"this run used {protocol!r}"
        )
    split = split_for(data, "kuairec")
    users = np.sort(split.targets(config.users)[0]["user_id"].unique().to_numpy())
    videos = data.videos.filter(pl.col("video_id").is_in(split.candidate_video_ids))
    feed = Feed(served, videos, data.big_matrix.filter(pl.col("user_id").is_in(users)))
    catalogue = feed.catalogue_ids
    outcomes = build_outcomes(config.outcomes, data, users, catalogue, world_file)
    duration_ms = videos["video_duration"].to_numpy().astype(np.float64)
    category = videos["first_level_category_id"].fill_null(-1).to_numpy()
    category = np.where(category >= 0, category, -1)
    # A weak view (for the exit model) is the same for every policy: disliked under the
    # default duration-aware rule. Liked views are counted by the run's own rule.
    weak_rule = LikeRule().fit(split.train)
    run_rule = run_config.experiment.like_rule.unfitted()
    like_rule = weak_rule if run_rule == LikeRule() else run_rule.fit(split.train)
    start_time = float(np.nanmax(feed.base.timestamps)) + 86_400.0

    n, steps, exit_model = len(users), config.steps, config.exit
    viewed = np.full((n, steps), -1, dtype=np.int64)  # catalogue column of each view
    ratios = np.full((n, steps), np.nan)
    positions = np.full((n, steps), -1, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    exit_reason = np.full(n, "finished", dtype=object)
    weak_run = np.zeros(n, dtype=np.int64)
    same_run = np.zeros(n, dtype=np.int64)
    last_category = np.full(n, -2, dtype=np.int64)
    everyone = np.arange(n)
    # Without live events the feed cannot know what was watched: those videos are blocked.
    blocked = outcomes.blocked
    if not config.live_events:
        blocked = np.zeros((n, len(catalogue)), dtype=bool) if blocked is None else blocked
    outcomes.start(np.random.default_rng([config.seed, 0, 1]))
    loop_started = time.perf_counter()
    for step in tqdm(range(steps), desc="simulate", unit="step", disable=not progress):
        rows = np.flatnonzero(active)
        if len(rows) == 0:
            break
        rng = np.random.default_rng([config.seed, step])
        choice_u, leave_u = rng.random(n), rng.random(n)  # drawn for everyone: aligned streams
        batch = feed.recommend_batch(
            users[rows], k=config.slate, blocked=None if blocked is None else blocked[rows]
        )
        slate = IdMap(catalogue).index(batch.video_ids)
        exhausted = (slate < 0).all(axis=1)
        exit_reason[rows[exhausted]] = "none_left"
        active[rows[exhausted]] = False
        rows, slate = rows[~exhausted], slate[~exhausted]
        pick = _choose(config.choice, outcomes, rows, slate, choice_u[rows])
        picked = slate[np.arange(len(rows)), pick]
        columns = np.zeros(n, dtype=np.int64)
        columns[rows] = picked
        watched = outcomes.watch(everyone, columns, rng)[rows]
        outcomes.advance(everyone, columns, rng)
        viewed[rows, step], ratios[rows, step], positions[rows, step] = picked, watched, pick
        if config.live_events:
            feed.add_views(
                users[rows],
                catalogue[picked],
                watched,
                np.full(len(rows), start_time + step * config.step_seconds),
            )
        else:
            blocked[rows, picked] = True
        frame = pl.DataFrame({"video_duration": duration_ms[picked], "watch_ratio": watched})
        weak_run[rows] = np.where(weak_rule.disliked(frame), weak_run[rows] + 1, 0)
        cats = category[picked]
        same = (cats == last_category[rows]) & (cats >= 0)
        same_run[rows] = np.where(same, same_run[rows] + 1, 1)
        last_category[rows] = cats
        reasons = np.select(
            [
                (exit_model.weak_streak > 0) & (weak_run[rows] >= exit_model.weak_streak),
                (exit_model.repeat_run > 0) & (same_run[rows] >= exit_model.repeat_run),
                leave_u[rows] < exit_model.leave_probability,
            ],
            ["weak", "repeat", "random"],
            "",
        )
        leaving = reasons != ""
        exit_reason[rows[leaving]] = reasons[leaving]
        active[rows[leaving]] = False

    per_user, events = _tables(
        users, catalogue, viewed, ratios, positions, duration_ms, category, like_rule, weak_rule
    )
    per_user = per_user.with_columns(pl.Series("exit", exit_reason.astype(str)))
    return SimulationResult(
        config=config,
        outcomes=outcomes.name,
        per_user=per_user,
        events=events,
        seconds=time.perf_counter() - started,
        loop_seconds=time.perf_counter() - loop_started,
    )


def _choose(choice: ChoiceModel, outcomes, rows: np.ndarray, slate: np.ndarray, u: np.ndarray):
    """Slate position each user watches (position-biased logit; see ChoiceModel)."""
    k = slate.shape[1]
    if k == 1:
        return np.zeros(len(rows), dtype=np.int64)
    shown = slate >= 0
    expected = outcomes.expected(rows, np.where(shown, slate, 0))
    utility = choice.sharpness * np.log(np.maximum(np.nan_to_num(expected, nan=0.0), MIN_RATIO))
    utility = utility - choice.position_bias * np.arange(k)
    utility = np.where(shown, utility, -np.inf)
    weight = np.exp(utility - utility.max(axis=1, keepdims=True))
    cumulative = np.cumsum(weight / weight.sum(axis=1, keepdims=True), axis=1)
    return np.minimum((cumulative < u[:, None]).sum(axis=1), shown.sum(axis=1) - 1)


def _tables(
    users, catalogue, viewed, ratios, positions, duration_ms, category, like_rule, weak_rule
):
    """(per-user metrics, one row per view) from the step matrices."""
    n, steps = viewed.shape
    user_row, step = np.nonzero(viewed >= 0)  # row-major: each user's views in step order
    columns = viewed[user_row, step]
    frame = pl.DataFrame(
        {"video_duration": duration_ms[columns], "watch_ratio": ratios[user_row, step]}
    )
    liked, weak = like_rule.liked(frame), weak_rule.disliked(frame)
    seconds = ratios[user_row, step] * duration_ms[columns] / 1000.0
    events = pl.DataFrame(
        {
            "user_id": users[user_row],
            "step": step.astype(np.int32),
            "video_id": catalogue[columns],
            "slate_position": positions[user_row, step].astype(np.int32),
            "watch_ratio": ratios[user_row, step],
            "watch_seconds": seconds,
            "category": category[columns],
            "liked": liked,
            "weak": weak,
        }
    )
    length = np.bincount(user_row, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        liked_share = np.bincount(user_row, liked, minlength=n) / length
        mean_ratio = np.bincount(user_row, ratios[user_row, step], minlength=n) / length
        cats = np.where(viewed >= 0, category[np.maximum(viewed, 0)], -1)
        pair_known = (cats[:, 1:] >= 0) & (cats[:, :-1] >= 0)
        repeats = (pair_known & (cats[:, 1:] == cats[:, :-1])).sum(1) / pair_known.sum(1)
    ordered = np.sort(cats, axis=1)
    distinct = (ordered >= 0) & np.c_[np.ones((n, 1), bool), ordered[:, 1:] != ordered[:, :-1]]
    per_user = pl.DataFrame(
        {
            "user_id": users,
            "watch_seconds": np.bincount(user_row, seconds, minlength=n),
            "session_length": length,
            "liked_share": liked_share,
            "categories": distinct.sum(axis=1),
            "category_repeats": repeats,
            "watch_ratio": mean_ratio,
        }
    )
    return per_user, events


def simulate_run(
    run_dir: Run | str | Path,
    config: SimulationConfig,
    world_file: Path | None = None,
    progress: bool = True,
) -> SimulationResult:
    """Simulate a trained run and record the result in its folder: metrics.json key
    `simulation_<users>`, `per_user_simulation_<users>.parquet` (what the leaderboard pairs)
    and `simulation_<users>_events.parquet` (every simulated view)."""
    served, run, data = load_served_run(run_dir)
    result = simulate(served, run.config, data, config, world_file, progress)
    run.write_per_user(config.key, result.per_user)
    run.write_table(f"{config.key}_events.parquet", result.events)
    run.record(config.key, result.to_dict())
    return result

"""Where a simulated view's watch ratio comes from.

Real release: small_matrix is 99.6% observed, so a (user, video) pair's watch ratio is the one
the user really had; the 0.4% of pairs it lacks cannot be recommended (they are blocked in the
feed, which the policy never learns from). The value is fixed: watching the same pair again in
another session gives the same ratio, and nothing about the session changes it.

Synthetic world: the world's own taste model, rebuilt from its world.json, samples every view
with its noise (log-normal play time, swipes, zero plays, replays) and its short-term interest
drift, advanced view by view along the session, so a policy that follows the session's drift
is paid exactly as the world says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from shortrec.data.dataset import MANIFEST_FILE, KuaiRecData
from shortrec.data.histories import IdMap
from shortrec.data.schema import GROUND_TRUTH_FILE
from shortrec.data.synth import WORLD_FILE, load_world_config, planted_taste
from shortrec.data.synth_taste import TasteModel

OUTCOME_SOURCES = ("auto", "world", "matrix")
MIN_RATIO = 0.01  # floor of a watch ratio inside the choice model's logarithm


@dataclass
class ObservedMatrix:
    """Watch ratios read from small_matrix, users x catalogue (NaN where not observed)."""

    ratios: np.ndarray
    name: str = "small_matrix"

    @classmethod
    def build(cls, small: pl.DataFrame, users: np.ndarray, catalogue: np.ndarray) -> ObservedMatrix:
        frame = (
            small.filter(pl.col("user_id").is_in(users))
            .group_by("user_id", "video_id")
            .agg(
                pl.col("watch_ratio").mean()  # a pair logged twice counts as its mean
            )
        )
        ratios = np.full((len(users), len(catalogue)), np.nan, dtype=np.float32)
        rows = IdMap(users).index(frame["user_id"].to_numpy())
        cols = IdMap(catalogue).index(frame["video_id"].to_numpy())
        ok = (rows >= 0) & (cols >= 0)
        ratios[rows[ok], cols[ok]] = frame["watch_ratio"].to_numpy()[ok]
        return cls(ratios)

    @property
    def blocked(self) -> np.ndarray | None:
        return np.isnan(self.ratios)

    def start(self, rng: np.random.Generator) -> None:
        """Nothing carries over between views."""

    def expected(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        return self.ratios[rows[:, None], columns]

    def watch(self, rows: np.ndarray, columns: np.ndarray, rng: np.random.Generator):
        return self.ratios[rows, columns].astype(np.float64)

    def advance(self, rows: np.ndarray, columns: np.ndarray, rng: np.random.Generator) -> None:
        """A fixed matrix has no session state."""


@dataclass
class WorldTaste:
    """Watch ratios sampled from a synthetic world's taste model, with its session drift."""

    taste: TasteModel  # rows: the simulated users; videos: the catalogue, in feed order
    centre: np.ndarray  # users x topics: mean topic of each user's history
    state: np.ndarray | None = None
    name: str = "world"

    @classmethod
    def build(
        cls, world_file: Path, data: KuaiRecData, users: np.ndarray, catalogue: np.ndarray
    ) -> WorldTaste:
        world, world_users, world_videos = planted_taste(load_world_config(world_file))
        user_pos, video_pos = IdMap(world_users).index(users), IdMap(world_videos).index(catalogue)
        if (user_pos < 0).any() or (video_pos < 0).any():
            raise ValueError(f"{world_file} does not describe the users and videos of this release")
        taste = world.restricted(user_pos, video_pos)  # rows: simulated users, catalogue videos
        _check_reproduces(taste, world_file, data, users, catalogue)
        history = data.big_matrix.filter(pl.col("user_id").is_in(users))
        rows = IdMap(users).index(history["user_id"].to_numpy())
        videos = IdMap(world_videos).index(history["video_id"].to_numpy())
        ok = videos >= 0
        centre = np.zeros((len(users), world.params.n_topics), dtype=np.float64)
        np.add.at(centre, rows[ok], world.topic[videos[ok]])
        counts = np.bincount(rows[ok], minlength=len(users))[:, None]
        return cls(taste, (centre / np.maximum(counts, 1)).astype(np.float32))

    @property
    def blocked(self) -> np.ndarray | None:
        return None  # the taste model defines every pair

    def start(self, rng: np.random.Generator) -> None:
        self.state = self.taste.session_start(self.taste.n_users, rng)

    def expected(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Expected watch ratio of slate videos (rows x k) given each session's state now."""
        drift = self.taste.session_drift_of(self.state[rows], columns)
        users = np.broadcast_to(rows[:, None], columns.shape)
        expected = self.taste.expected_watch_ratio(users.ravel(), columns.ravel(), drift.ravel())
        return expected.reshape(columns.shape)

    def watch(self, rows: np.ndarray, columns: np.ndarray, rng: np.random.Generator):
        drift = self.taste.session_drift_of(self.state[rows], columns[:, None])[:, 0]
        play_ms = self.taste.sample_play_ms(rows, columns, drift, rng)
        return play_ms / self.taste.duration_ms[columns]

    def advance(self, rows: np.ndarray, columns: np.ndarray, rng: np.random.Generator) -> None:
        self.state[rows] = self.taste.session_step(
            self.state[rows], columns, self.centre[rows], rng
        )


def find_world_file(data_dir: Path) -> Path | None:
    """world.json of a prepared synthetic world: beside the raw files it was prepared from."""
    manifest = data_dir / MANIFEST_FILE
    candidates = [data_dir / WORLD_FILE]
    if manifest.exists():
        entries = json.loads(manifest.read_text())
        source = entries.get("files", {}).get(GROUND_TRUTH_FILE, {}).get("source")
        folders = [Path(source).parent] if source else []
        if entries.get("release_dir"):
            folders.append(Path(entries["release_dir"]))
        for folder in folders:
            candidates.append(folder / WORLD_FILE)
            # Moved together with the prepared folder (raw/ beside prepared/): its sibling.
            candidates.append(data_dir.parent / folder.name / WORLD_FILE)
    return next((path for path in candidates if path.exists()), None)


def _check_reproduces(taste, world_file, data, users, catalogue) -> None:
    """The rebuilt taste model must give the release's ground truth (same generator code)."""
    if data.ground_truth is None:
        return
    sample = data.ground_truth.filter(
        pl.col("user_id").is_in(users) & pl.col("video_id").is_in(catalogue)
    ).head(2000)
    rebuilt = taste.expected_watch_ratio(
        IdMap(users).index(sample["user_id"].to_numpy()),
        IdMap(catalogue).index(sample["video_id"].to_numpy()),
    )
    if not np.allclose(rebuilt, sample["expected_watch_ratio"].to_numpy(), rtol=1e-4):
        raise ValueError(
            f"{world_file} does not reproduce {GROUND_TRUTH_FILE} (the world was generated by "
            "another version of shortrec); regenerate it, or simulate with --outcomes matrix"
        )


def build_outcomes(
    source: str,
    data: KuaiRecData,
    users: np.ndarray,
    catalogue: np.ndarray,
    world_file: Path | None = None,
) -> ObservedMatrix | WorldTaste:
    """`world` (the synthetic world's taste model), `matrix` (small_matrix as observed), or
    `auto`: the world when the release is synthetic and its world.json is found."""
    if source not in OUTCOME_SOURCES:
        raise ValueError(f"--outcomes must be one of {', '.join(OUTCOME_SOURCES)}; got {source!r}")
    if source != "matrix":
        world_file = world_file or find_world_file(Path(data.source))
        if world_file is not None:
            return WorldTaste.build(world_file, data, users, catalogue)
        if source == "world":
            raise ValueError(
                f"{data.source} is not a synthetic world with a world.json (searched beside the "
                "prepared files and the raw files they came from); pass --world PATH"
            )
    return ObservedMatrix.build(data.small_matrix, users, catalogue)

"""The planted ground truth of a synthetic KuaiRec world: who likes what, and how much they watch.

A view's play time in seconds is log-normal around a static part (user bias, video quality,
user-video affinity over tags, first-level categories and latent factors, a weak length effect)
plus a session drift that follows the user's recent viewing. People watch roughly the same
~7-12 s whatever the length, so watch_ratio = play time / length falls with length. On top sit
instant zero plays, quick swipes (more likely when the video does not suit the user) and
replays with a Pareto tail (a multiple of the play time, or, in a logging context with
`replay_loops` such as big_matrix's feed, whole loops of the video), truncated so a view never
exceeds ~573 plays of the video (both real
matrices top out there: 573.5 in big_matrix, 571.5 in small_matrix). The noise-free expectation of
that mixture is the oracle's score.

The defaults (chosen so the reference models of `shortrec data calibrate` score as on the real
release, issue 16) split the spread of log play time in small_matrix between a learnable personal
part (affinity over tags, categories and 16 latent factors, sd ~0.27), an idiosyncratic per-pair
part no model can learn from others (sd 0.12), a small video quality (sd 0.07, what popularity
captures) and a large per-view noise of forced exposure (sd 0.35), while the total spread stays
at the calibrated width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import scipy.signal
import scipy.special

N_TAGS = 31  # KuaiRec item_categories tag ids 0..30
REFERENCE_DURATION_S = 9.6  # per-video median length; the length effect is relative to it
LENGTH_EFFECT_CAP_S = 13.0
MAX_PLAY_MS = 7_988_155  # longest play in the real small_matrix
MAX_WATCH_RATIO = 573.5  # most plays of one video in one view, in both real matrices
DENSE_APPEAL_MAX_CELLS = 100_000_000  # above this, pair appeals are computed in chunks


@dataclass
class TasteParams:
    """Hyperparameters of the taste model, in log-seconds of play time unless noted."""

    n_factors: int = 16
    n_topics: int = 8
    base_log_seconds: float = 1.88  # exp -> ~6.5 s typical play
    duration_elasticity: float = 0.2  # longer videos (up to 13 s) are watched a bit longer
    # ... and past 13 s people give a video a little less time, down to ~15% less at 60 s,
    # flat beyond (the real like thresholds put the 80th-percentile play at ~12 s for 13 s
    # videos and ~11-11.7 s from 25 s on; the feed shows long videos mostly to users who
    # like them, which lifts their watched seconds back, so the decline runs past 25 s:
    # with it ending at 25 s the thresholds above 57 s came out 8-17% high).
    long_decline_elasticity: float = 0.1
    long_decline_end_s: float = 60.0  # length (s) from which play time stays flat
    user_bias_sd: float = 0.07
    quality_sd: float = 0.07
    tag_weight: float = 0.08
    category_weight: float = 0.07
    latent_weight: float = 0.25
    # Forced exposure: small_matrix users were shown every video, so much of a watch time there
    # is momentary (log-seconds sd of the per-view noise; big_matrix has its own, in synth).
    noise_sd: float = 0.35
    # Idiosyncratic taste: a static per-(user, video) part of appeal that no tag, category or
    # low-rank factor explains (log-seconds sd; a deterministic hash of the pair).
    pair_sd: float = 0.12
    drift_weight: float = 0.15  # session drift: weight of <state, video topic>
    drift_memory: float = 0.9  # AR(1) coefficient of the session state per view
    binge_strength: float = 2.0  # how much a watched topic pushes the state toward itself
    zero_rate: float = 0.0065  # plays of 0 ms
    skip_rate: float = 0.024  # quick swipes at average appeal
    skip_slope: float = 1.5  # swipes fall with affinity (logit per log-second)
    skip_max_seconds: float = 1.6
    exit_rate: float = 0.0  # views left at a uniformly random point of the would-be play time
    replay_rate: float = 0.035
    replay_tail: float = 1.6  # Pareto shape of extra plays (in units of the play time)
    max_watch_ratio: float = MAX_WATCH_RATIO  # replays are truncated at this watch ratio


@dataclass(frozen=True)
class ViewContext:
    """Event noise of one logging context; None keeps the taste model's own value."""

    log_shift: float = 0.0
    noise_sd: float | None = None
    zero_rate: float | None = None
    skip_rate: float | None = None
    replay_rate: float | None = None
    skip_max_seconds: float | None = None
    exit_rate: float | None = None
    replay_tail: float | None = None
    max_play_ms: int | None = None  # the logger's longest play (default MAX_PLAY_MS)
    # Replays loop the video: the extra plays are Pareto(replay_tail) whole plays of the video
    # on top of the view's own play time, rather than a Pareto multiple of the play time.
    replay_loops: bool = False


def _truncated_pareto_mean(shape: float, most: np.ndarray) -> np.ndarray:
    """Mean of a Pareto(shape) variable on [1, most]."""
    return shape / (shape - 1.0) * (1.0 - most ** (1.0 - shape)) / (1.0 - most**-shape)


def _pair_hash01(users: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """A deterministic number in (0, 1) per (user key, video key) pair (splitmix64 mix)."""
    with np.errstate(over="ignore"):
        x = np.asarray(users).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ np.asarray(videos).astype(np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)


def _tag_matrix(tags: list[list[int]], n_videos: int) -> np.ndarray:
    """Videos x tags, each row averaging over the video's tags (rows of untagged videos are 0)."""
    lengths = np.array([len(t) for t in tags], dtype=np.int64)
    flat = np.fromiter((tag for t in tags for tag in t), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(n_videos), lengths)
    matrix = np.zeros((n_videos, N_TAGS), dtype=np.float32)
    np.add.at(matrix, (rows, flat), 1.0)
    return matrix / np.maximum(lengths, 1)[:, None].astype(np.float32)


@dataclass
class TasteModel:
    """The planted tastes of one world: dense arrays indexed by user and video position."""

    params: TasteParams
    duration_ms: np.ndarray  # (videos,) int64
    user_bias: np.ndarray  # (users,)
    quality: np.ndarray  # (videos,)
    user_features: np.ndarray  # (users, D): tag interests, category interests, factors
    video_features: np.ndarray  # (videos, D): tag shares, category one-hot, factors
    topic: np.ndarray  # (videos, n_topics) unit vectors for the session drift
    user_key: np.ndarray | None = None  # (users,) int64 keys of the idiosyncratic pair term
    video_key: np.ndarray | None = None  # (videos,)
    _appeal_matrix: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def sample(
        cls,
        params: TasteParams,
        rng: np.random.Generator,
        n_users: int,
        duration_ms: np.ndarray,
        tags: list[list[int]],
        category: np.ndarray,
        n_categories: int,
    ) -> TasteModel:
        """Draw tastes for `n_users` and videos with the given lengths, tags and categories."""
        n_videos = len(duration_ms)
        p = params
        tag_interest = rng.standard_normal((n_users, N_TAGS)).astype(np.float32)
        category_interest = rng.standard_normal((n_users, n_categories)).astype(np.float32)
        user_factors = rng.standard_normal((n_users, p.n_factors)).astype(np.float32)
        video_factors = rng.standard_normal((n_videos, p.n_factors)).astype(np.float32)
        category_onehot = np.zeros((n_videos, n_categories), dtype=np.float32)
        category_onehot[np.arange(n_videos), category] = 1.0
        # Averaging over a video's tags shrinks its spread; rescale so each block has unit sd.
        tag_share = _tag_matrix(tags, n_videos)
        tag_scale = 1.0 / max(float(np.sqrt((tag_share**2).sum(1)).mean()), 1e-6)
        user_features = np.hstack(
            [
                p.tag_weight * tag_scale * tag_interest,
                p.category_weight * category_interest,
                p.latent_weight / np.sqrt(p.n_factors) * user_factors,
            ]
        ).astype(np.float32)
        video_features = np.hstack([tag_share, category_onehot, video_factors]).astype(np.float32)
        # Session topics: videos of one category share a direction, with per-video jitter.
        category_topic = rng.standard_normal((n_categories, p.n_topics))
        topic = category_topic[category] + 0.5 * rng.standard_normal((n_videos, p.n_topics))
        topic /= np.linalg.norm(topic, axis=1, keepdims=True)
        return cls(
            params=p,
            duration_ms=np.asarray(duration_ms, dtype=np.int64),
            user_bias=(p.user_bias_sd * rng.standard_normal(n_users)).astype(np.float32),
            quality=(p.quality_sd * rng.standard_normal(n_videos)).astype(np.float32),
            user_features=user_features,
            video_features=video_features,
            topic=topic.astype(np.float32),
            user_key=np.arange(n_users, dtype=np.int64),
            video_key=np.arange(n_videos, dtype=np.int64) + (1 << 32),
        )

    def restricted(self, users: np.ndarray, videos: np.ndarray) -> TasteModel:
        """The same tastes for a subset of users and videos (rows in the given order), so a
        dense appeal block of just those pairs is cheap."""
        return dataclasses.replace(
            self,
            duration_ms=self.duration_ms[videos],
            user_bias=self.user_bias[users],
            quality=self.quality[videos],
            user_features=self.user_features[users],
            video_features=self.video_features[videos],
            topic=self.topic[videos],
            user_key=self._user_keys()[users],
            video_key=self._video_keys()[videos],
            _appeal_matrix=None,
        )

    @property
    def n_users(self) -> int:
        return len(self.user_bias)

    @property
    def n_videos(self) -> int:
        return len(self.quality)

    def _user_keys(self) -> np.ndarray:
        return np.arange(self.n_users) if self.user_key is None else self.user_key

    def _video_keys(self) -> np.ndarray:
        if self.video_key is None:
            return np.arange(self.n_videos, dtype=np.int64) + (1 << 32)
        return self.video_key

    def idiosyncratic(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """The static per-pair part of appeal (broadcasts like `users + videos`)."""
        if self.params.pair_sd == 0:
            return np.zeros(np.broadcast(users, videos).shape, np.float32)
        uniform = _pair_hash01(self._user_keys()[users], self._video_keys()[videos])
        return (self.params.pair_sd * scipy.special.ndtri(uniform)).astype(np.float32)

    def appeal(self, users: np.ndarray | slice, videos: np.ndarray | slice) -> np.ndarray:
        """Dense block of static appeal (log-seconds, length effect excluded): bias + quality +
        affinity + the idiosyncratic pair term. It drives exposure, swipes and play time."""
        affinity = self.user_features[users] @ self.video_features[videos].T
        affinity += self.user_bias[users][:, None] + self.quality[videos][None, :]
        if self.params.pair_sd:
            rows = np.arange(self.n_users)[users]
            cols = np.arange(self.n_videos)[videos]
            for lo in range(0, len(rows), 512):
                affinity[lo : lo + 512] += self.idiosyncratic(
                    rows[lo : lo + 512, None], cols[None, :]
                )
        return affinity

    def appeal_matrix(self) -> np.ndarray:
        """Dense users x videos appeal (float32; 300 MB at KuaiRec's full size), computed once."""
        if self._appeal_matrix is None:
            self._appeal_matrix = self.appeal(slice(None), slice(None)).astype(np.float32)
        return self._appeal_matrix

    def mean_appeal(self) -> float:
        """Average static appeal over every (user, video) cell, without the dense matrix."""
        users = self.user_features.mean(0, dtype=np.float64)
        videos = self.video_features.mean(0, dtype=np.float64)
        return float(users @ videos + self.user_bias.mean() + self.quality.mean())

    def pair_appeal(
        self, users: np.ndarray, videos: np.ndarray, chunk: int = 1 << 20
    ) -> np.ndarray:
        """Static appeal of each (user, video) pair."""
        if self.n_users * self.n_videos <= DENSE_APPEAL_MAX_CELLS:
            return self.appeal_matrix()[users, videos].astype(np.float64)
        out = np.empty(len(users), dtype=np.float64)  # in chunks, so memory stays bounded
        for lo in range(0, len(users), chunk):
            u, v = users[lo : lo + chunk], videos[lo : lo + chunk]
            out[lo : lo + chunk] = (
                np.einsum("ij,ij->i", self.user_features[u], self.video_features[v])
                + self.user_bias[u]
                + self.quality[v]
                + self.idiosyncratic(u, v)
            )
        return out

    def _length_log_seconds(self, videos: np.ndarray | slice) -> np.ndarray:
        # Play time grows a little with length up to ~13 s, falls a little to 25 s, then stays
        # flat (reference table of the 80th-percentile seconds watched per length bucket).
        seconds = self.duration_ms[videos] / 1000.0
        rise = np.log(np.minimum(seconds, LENGTH_EFFECT_CAP_S) / REFERENCE_DURATION_S)
        fall = np.log(np.clip(seconds, LENGTH_EFFECT_CAP_S, self.params.long_decline_end_s))
        fall -= np.log(LENGTH_EFFECT_CAP_S)
        return self.params.duration_elasticity * rise - self.params.long_decline_elasticity * fall

    def _skip_probability(self, appeal: np.ndarray) -> np.ndarray:
        p = self.params
        return scipy.special.expit(scipy.special.logit(p.skip_rate) - p.skip_slope * appeal)

    def expected_watch_ratio(
        self, users: np.ndarray, videos: np.ndarray, drift: np.ndarray | float = 0.0
    ) -> np.ndarray:
        """Noise-free expected watch_ratio of each (user, video) pair: the mixture's mean with
        the session state at its average (zero drift), or with the given session `drift`."""
        p = self.params
        appeal = self.pair_appeal(users, videos) + drift
        play_s = np.exp(p.base_log_seconds + appeal + self._length_log_seconds(videos))
        duration_s = self.duration_ms[videos] / 1000.0
        longest_s = np.minimum(p.max_watch_ratio * duration_s, MAX_PLAY_MS / 1000.0)
        most = np.maximum(longest_s / play_s, 1.0 + 1e-9)
        replay_mean = 1.0 + p.replay_rate * (_truncated_pareto_mean(p.replay_tail, most) - 1.0)
        watched = play_s * np.exp(p.noise_sd**2 / 2) * replay_mean * (1.0 - p.exit_rate / 2)
        skip = self._skip_probability(appeal)
        seconds = (1.0 - p.zero_rate) * ((1.0 - skip) * watched + skip * p.skip_max_seconds / 2)
        return seconds / duration_s

    def session_drift(
        self, users: np.ndarray, videos: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Per-view drift (log-seconds) along each user's sequence; rows sorted by (user, time).

        The state is an AR(1) over views, pushed toward the topics just watched (binge) and by
        random shocks; it is centred per user so it carries no static taste. Sequence models can
        read it from recent views; static models cannot.
        """
        p = self.params
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        lengths = np.diff(np.r_[starts, len(users)])
        topic = self.topic[videos]
        user_mean = np.add.reduceat(topic, starts, axis=0) / lengths[:, None]
        centred = topic - np.repeat(user_mean, lengths, axis=0)
        previous = np.vstack([np.zeros((1, p.n_topics), np.float32), centred[:-1]])
        previous[starts] = 0.0
        rho = p.drift_memory
        shocks = rng.standard_normal(topic.shape).astype(np.float32)
        inputs = p.binge_strength * (1 - rho) * previous + np.sqrt(1 - rho**2) * shocks
        state = scipy.signal.lfilter([1.0], [1.0, -rho], inputs, axis=0)
        # lfilter runs across user boundaries; remove what leaks from the previous user.
        position = np.arange(len(users)) - np.repeat(starts, lengths)
        carried = np.repeat(
            np.vstack([np.zeros((1, p.n_topics)), state[starts[1:] - 1]]), lengths, 0
        )
        state -= (rho ** (position + 1.0))[:, None] * carried
        return p.drift_weight * np.einsum("ij,ij->i", state, topic)

    # --- one session, view by view (the feed simulator) ------------------------------------
    # The same AR(1) as `session_drift`, advanced online: state_0 is a shock, and each view
    # pushes the next state toward the topic just watched, relative to `centre`, the topic the
    # user watches on average (`session_drift` centres on the sequence's own mean, which an
    # online session cannot know in advance).

    def session_start(self, n_sessions: int, rng: np.random.Generator) -> np.ndarray:
        """Session states (sessions x n_topics) at each session's first view."""
        p = self.params
        shocks = rng.standard_normal((n_sessions, p.n_topics))
        return (np.sqrt(1 - p.drift_memory**2) * shocks).astype(np.float32)

    def session_step(
        self,
        state: np.ndarray,
        watched: np.ndarray,
        centre: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """States after each session watched one more video (`watched`: video positions)."""
        p = self.params
        rho = p.drift_memory
        shocks = rng.standard_normal(state.shape)
        pushed = p.binge_strength * (1 - rho) * (self.topic[watched] - centre)
        return (rho * state + pushed + np.sqrt(1 - rho**2) * shocks).astype(np.float32)

    def session_drift_of(self, state: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """Drift (log-seconds) of candidate `videos` (sessions x k positions) in each state."""
        return self.params.drift_weight * np.einsum("ij,ikj->ik", state, self.topic[videos])

    def sample_play_ms(
        self,
        users: np.ndarray,
        videos: np.ndarray,
        drift: np.ndarray,
        rng: np.random.Generator,
        context: ViewContext | None = None,
        appeal_offset: float = 0.0,
    ) -> np.ndarray:
        """Observed play_duration (ms) of each view: noisy, with zeros, swipes and replays.
        `context` overrides the event noise for a logging context other than the fully
        observed one (big_matrix's production feed); `appeal_offset` is added to every appeal
        (big_matrix uses it to take out the average appeal its taste-driven exposure selects)."""
        p = self.params
        c = context or ViewContext()
        n = len(users)
        appeal = self.pair_appeal(users, videos) + appeal_offset
        log_s = p.base_log_seconds + c.log_shift + appeal + self._length_log_seconds(videos) + drift
        play_s = np.exp(log_s + (c.noise_sd or p.noise_sd) * rng.standard_normal(n))
        replay = np.flatnonzero(rng.random(n) < (c.replay_rate or p.replay_rate))
        # Extra plays: Pareto(tail) times the play, truncated at max_watch_ratio plays of the video
        # and at the logger's longest play, so neither limit piles rows up.
        tail = c.replay_tail or p.replay_tail
        max_play_ms = c.max_play_ms or MAX_PLAY_MS
        longest = np.minimum(p.max_watch_ratio * self.duration_ms[videos[replay]], max_play_ms)
        if c.replay_loops:
            length_s = self.duration_ms[videos[replay]] / 1000.0
            most = (longest / 1000.0 - play_s[replay]) / length_s
            cut = 1.0 - np.maximum(most, 1.0) ** -tail
            loops = (1.0 - rng.random(len(replay)) * cut) ** (-1.0 / tail)
            play_s[replay] += length_s * loops
        else:
            most = longest / 1000.0 / play_s[replay]
            cut = 1.0 - np.maximum(most, 1.0) ** -tail
            play_s[replay] *= (1.0 - rng.random(len(replay)) * cut) ** (-1.0 / tail)
        exit_rate = p.exit_rate if c.exit_rate is None else c.exit_rate
        early_exit = rng.random(n) < exit_rate
        play_s[early_exit] *= rng.random(int(early_exit.sum()))
        skip_odds = (c.skip_rate or p.skip_rate) / p.skip_rate
        skip = rng.random(n) < self._skip_probability(
            appeal + drift - np.log(skip_odds) / p.skip_slope
        )
        play_s[skip] = rng.uniform(0.0, c.skip_max_seconds or p.skip_max_seconds, int(skip.sum()))
        play_s[rng.random(n) < (c.zero_rate or p.zero_rate)] = 0.0
        return np.minimum(np.round(play_s * 1000.0), max_play_ms).astype(np.int64)

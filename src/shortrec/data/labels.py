"""Likes and dislikes from watch_ratio.

Raw watch_ratio mostly reflects video length: people watch ~7-12 s whatever the length, so a
fixed threshold calls most short videos liked and most long ones disliked. The duration-aware
rule learns, on training data only, the q-th quantile of watch_ratio inside log-spaced duration
buckets and calls a view liked when it beats its bucket's threshold.

One `LikeRule` object travels from the command line (parsed once, by `LikeRule.parse`) through
the run config to the labels every model trains on and the evaluation judges by; `LikeRule()`
is the project's one default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

KINDS = ("duration", "threshold", "all")


@dataclass
class LikeRule:
    """`kind="duration"` (the default): liked iff watch_ratio >= the `quantile` of its duration
    bucket, disliked iff below the `dislike_quantile` of its bucket. The fixed 0.7 threshold
    mostly rewards short videos (a per-video mean nearly matches the oracle); the
    duration-aware rule rewards personalisation.
    `kind="threshold"`: liked iff watch_ratio >= threshold (the seed project's 0.7);
    disliked iff watch_ratio < dislike_threshold.
    `kind="all"`: every view is liked, none disliked: logs without a watch ratio."""

    kind: str = "duration"
    threshold: float = 0.7
    dislike_threshold: float = 0.3
    quantile: float = 0.8
    dislike_quantile: float = 0.3
    n_buckets: int = 24
    bucket_edges: list[float] = field(default_factory=list)
    like_thresholds: list[float] = field(default_factory=list)
    dislike_thresholds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"like rule kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def parse(cls, text: str) -> LikeRule:
        """`duration`, `duration:0.8` (the like quantile), `threshold`, `threshold:0.7`, `all`."""
        kind, _, value = text.partition(":")
        try:
            if kind == "threshold":
                return cls(kind=kind, threshold=float(value) if value else 0.7)
            if kind == "duration":
                rule = cls(kind=kind, quantile=float(value) if value else 0.8)
                if not 0.0 < rule.quantile < 1.0:
                    raise ValueError
                return rule
            if kind == "all" and not value:
                return cls(kind=kind)
        except ValueError:
            pass
        raise ValueError(
            f"--like-rule must be 'duration[:Q]' (0<Q<1), 'threshold[:X]' or 'all', got {text!r}"
        )

    def __str__(self) -> str:
        """The text `parse` reads back: what leaderboards show."""
        if self.kind == "threshold":
            return f"threshold:{self.threshold:g}"
        if self.kind == "duration":
            return f"duration:{self.quantile:g}"
        return "all"

    @property
    def is_fitted(self) -> bool:
        return self.kind != "duration" or bool(self.like_thresholds)

    def unfitted(self) -> LikeRule:
        """The same rule without learned thresholds (what a run config records)."""
        return LikeRule(
            kind=self.kind, threshold=self.threshold, dislike_threshold=self.dislike_threshold,
            quantile=self.quantile, dislike_quantile=self.dislike_quantile,
            n_buckets=self.n_buckets,
        )  # fmt: skip

    def fit(self, train: pl.DataFrame) -> LikeRule:
        """Learn bucket thresholds from training views (a no-op for the other kinds)."""
        if self.kind != "duration":
            return self
        duration = train["video_duration"].to_numpy().astype(np.float64)
        ratio = train["watch_ratio"].to_numpy().astype(np.float64)
        positive = duration[duration > 0]
        if len(positive) == 0:
            raise ValueError("duration-aware like rule needs views with video_duration > 0")
        # Interior edges at log-spaced quantiles of duration, so every bucket has data.
        qs = np.linspace(0, 1, self.n_buckets + 1)[1:-1]
        edges = np.unique(np.quantile(np.log(positive), qs))
        bucket = np.searchsorted(edges, np.log(np.maximum(duration, 1.0)), side="right")
        like, dislike = [], []
        for b in range(len(edges) + 1):
            in_bucket = ratio[bucket == b]
            if len(in_bucket) == 0:  # only possible with degenerate data; fall back to all
                in_bucket = ratio
            like.append(float(np.quantile(in_bucket, self.quantile)))
            dislike.append(float(np.quantile(in_bucket, self.dislike_quantile)))
        self.bucket_edges = edges.tolist()
        self.like_thresholds = like
        self.dislike_thresholds = dislike
        return self

    def _thresholds(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        n = frame.height
        if self.kind == "all":
            return np.full(n, -np.inf), np.full(n, -np.inf)
        if self.kind == "threshold":
            return np.full(n, self.threshold), np.full(n, self.dislike_threshold)
        if not self.is_fitted:
            raise RuntimeError("the duration-aware like rule must be fitted on training data")
        duration = frame["video_duration"].to_numpy().astype(np.float64)
        bucket = np.searchsorted(
            np.asarray(self.bucket_edges), np.log(np.maximum(duration, 1.0)), side="right"
        )
        return np.asarray(self.like_thresholds)[bucket], np.asarray(self.dislike_thresholds)[bucket]

    def _ratios(self, frame: pl.DataFrame) -> np.ndarray:
        if self.kind == "all":
            return np.zeros(frame.height)
        return frame["watch_ratio"].fill_null(np.nan).to_numpy().astype(np.float64)

    def like_threshold(self, frame: pl.DataFrame) -> np.ndarray:
        """The watch ratio each view of `frame` must reach to count as liked (-inf: any)."""
        return self._thresholds(frame)[0]

    def liked(self, frame: pl.DataFrame) -> np.ndarray:
        like_at, _ = self._thresholds(frame)
        return self._ratios(frame) >= like_at

    def disliked(self, frame: pl.DataFrame) -> np.ndarray:
        _, dislike_at = self._thresholds(frame)
        return self._ratios(frame) < dislike_at

    def label(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with boolean `liked` and `disliked` columns added."""
        return frame.with_columns(
            pl.Series("liked", self.liked(frame)), pl.Series("disliked", self.disliked(frame))
        )

    def to_dict(self) -> dict:
        return asdict(self)

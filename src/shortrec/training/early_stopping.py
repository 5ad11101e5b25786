"""Stop training when the validation score has not improved for `patience` evaluations.

Two rules make the stopping adapt to the data rather than to a count tuned on one log:
`min_relative_improvement` counts a validation as better only when it beats the best by that
fraction of the best (a slow creep inside validation noise is a plateau, so large logs stop),
and `patience_fraction` also requires that many epochs without improvement as a fraction of
the epoch of the best (a model still learning at epoch 100 waits longer than one that peaked
at epoch 4, so small logs that learn slowly are not cut short by one noisy validation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    """Tracks the best validation score (higher is better) and when it was reached.

    Its state is plain numbers, so it goes into a checkpoint as a dict and a resumed run
    stops exactly where an uninterrupted one would.
    """

    patience: int = 5
    min_delta: float = 0.0
    min_relative_improvement: float = 0.0
    patience_fraction: float = 0.0
    best_score: float = float("-inf")
    best_epoch: int = -1
    last_epoch: int = -1
    evaluations_without_improvement: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record one evaluation; True when it is a new best."""
        self.last_epoch = int(epoch)
        margin = self.min_delta
        if self.best_score != float("-inf"):
            margin = max(margin, self.min_relative_improvement * abs(self.best_score))
        if score > self.best_score + margin:
            self.best_score = float(score)
            self.best_epoch = int(epoch)
            self.evaluations_without_improvement = 0
            return True
        self.evaluations_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        if self.evaluations_without_improvement < self.patience:
            return False
        return self.last_epoch - self.best_epoch >= self.patience_fraction * self.best_epoch

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> EarlyStopping:
        return cls(**state)

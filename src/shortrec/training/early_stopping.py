"""Stop training when the validation score has not improved for `patience` evaluations."""

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
    best_score: float = float("-inf")
    best_epoch: int = -1
    evaluations_without_improvement: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record one evaluation; True when it is a new best."""
        if score > self.best_score + self.min_delta:
            self.best_score = float(score)
            self.best_epoch = int(epoch)
            self.evaluations_without_improvement = 0
            return True
        self.evaluations_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.evaluations_without_improvement >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> EarlyStopping:
        return cls(**state)

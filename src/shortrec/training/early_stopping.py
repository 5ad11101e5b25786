"""Stop training when the validation score has not improved for `patience` evaluations.

Two rules make the stopping adapt to the data rather than to a count tuned on one log:
`min_relative_improvement` counts a validation as better only when it beats the best by that
fraction of the best (a slow creep inside validation noise is a plateau, so large logs stop),
and `patience_fraction` also requires that many epochs without improvement as a fraction of
the epoch of the best (a model still learning at epoch 100 waits longer than one that peaked
at epoch 4, so small logs that learn slowly are not cut short by one noisy validation).
A third, `min_loss_decrease`, does not stop while the training loss still falls by at least
that fraction per epoch since the best validated epoch: a model still learning its objective
is not stopped by a validation score that dips or stalls on the way (SASRec on a Markov-like
log: full-ranking validation flat for 10 epochs, then 6x higher after 100).
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
    min_loss_decrease: float = 0.0
    best_score: float = float("-inf")
    best_epoch: int = -1
    last_epoch: int = -1
    evaluations_without_improvement: int = 0
    best_loss: float = float("nan")  # training loss of the best epoch and of the last one
    last_loss: float = float("nan")

    def update(self, score: float, epoch: int, loss: float = float("nan")) -> bool:
        """Record one evaluation (and that epoch's training loss); True when it is a new
        best."""
        self.last_epoch = int(epoch)
        self.last_loss = float(loss)
        margin = self.min_delta
        if self.best_score != float("-inf"):
            margin = max(margin, self.min_relative_improvement * abs(self.best_score))
        if score > self.best_score + margin:
            self.best_score = float(score)
            self.best_epoch = int(epoch)
            self.best_loss = float(loss)
            self.evaluations_without_improvement = 0
            return True
        self.evaluations_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        if self.evaluations_without_improvement < self.patience:
            return False
        if self.last_epoch - self.best_epoch < self.patience_fraction * self.best_epoch:
            return False
        return not self.loss_still_falling

    @property
    def loss_still_falling(self) -> bool:
        """Whether the training loss fell by at least `min_loss_decrease` of the best epoch's
        loss per epoch since then (False when the rule is off or a loss is unknown)."""
        epochs = self.last_epoch - self.best_epoch
        if self.min_loss_decrease <= 0 or epochs <= 0 or not self.best_loss > 0:
            return False  # `not > 0` is also True for NaN
        fall = (self.best_loss - self.last_loss) / self.best_loss / epochs
        return bool(fall >= self.min_loss_decrease)  # NaN last_loss compares False

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> EarlyStopping:
        return cls(**state)

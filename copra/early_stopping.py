"""Early stopping on the validation metric, ties broken by the validation loss."""

import math
from dataclasses import dataclass

from copra.errors import InputError


def check_converged(best_state, learning_rate_key: str):
    """The best state, or a clear error when no epoch gave a finite validation number."""
    if best_state is None:
        raise InputError(
            "training diverged: validation loss and metric were never finite; lower "
            f"{learning_rate_key} (or the gradient clipping threshold)"
        )
    return best_state


@dataclass
class EarlyStopping:
    """Tracks the best epoch; `stop` once `patience` epochs brought no improvement."""

    patience: int
    best: tuple = (-math.inf, -math.inf)
    waited: int = 0

    def update(self, metric: float, loss: float) -> bool:
        """Record an epoch; True when it is the best so far (NaN counts as worst)."""
        key = tuple(v if math.isfinite(v) else -math.inf for v in (metric, -loss))
        if key == (-math.inf, -math.inf):  # no usable number: not an improvement
            self.waited += 1
            return False
        if key > self.best:
            self.best, self.waited = key, 0
            return True
        self.waited += 1
        return False

    @property
    def stop(self) -> bool:
        return self.waited >= self.patience

"""Early stopping on the validation metric, ties broken by the validation loss."""

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Tracks the best epoch; `stop` once `patience` epochs brought no improvement."""

    patience: int
    best: tuple = (-math.inf, -math.inf)
    waited: int = 0

    def update(self, metric: float, loss: float) -> bool:
        """Record an epoch; True when it is the best so far (a NaN metric counts as lowest)."""
        key = (metric if math.isfinite(metric) else -math.inf, -loss)
        if key > self.best:
            self.best, self.waited = key, 0
            return True
        self.waited += 1
        return False

    @property
    def stop(self) -> bool:
        return self.waited >= self.patience

"""95% intervals of a mean over seeds (or seed pairs): Student t across them, or, for a single
value, the bootstrap interval its metrics row carries. The one home of this rule."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
COLUMNS = ["value", "low", "high", "n", "interval"]


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval, over `n` values; `kind` is t, bootstrap or none."""

    value: float
    low: float
    high: float
    n: int
    kind: str


def t_interval(values) -> tuple[float, float]:
    """mean -/+ t_{0.975, n-1} sd / sqrt(n) of two or more values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return values.mean() - half, values.mean() + half


def mean_interval(values, ci_low=None, ci_high=None) -> Interval:
    """The mean of the defined `values` with a t-interval across them; a single value keeps its
    own bootstrap interval (`ci_low`, `ci_high`, beside `values`) where it has one."""
    values = np.asarray(values, dtype=float)
    defined = np.isfinite(values)
    n = int(defined.sum())
    if n > 1:
        return Interval(values[defined].mean(), *t_interval(values[defined]), n, "t")
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, "none")
    bounds = [_first(c, defined) for c in (ci_low, ci_high)]
    kind = "bootstrap" if np.isfinite(bounds).all() else "none"
    return Interval(float(values[defined][0]), *bounds, 1, kind)


def _first(column, defined) -> float:
    """The entry of `column` beside the one defined value (NaN without a column)."""
    return float(np.asarray(column, dtype=float)[defined][0]) if column is not None else np.nan


def interval_table(frame: pd.DataFrame, keys: list[str], value: str = "value") -> pd.DataFrame:
    """Per group of `keys`: the mean of column `value` with its interval (`mean_interval`; the
    bootstrap bounds from `ci_low` and `ci_high` where `frame` has them), in COLUMNS."""
    rows = []
    for key, part in frame.groupby(keys, sort=False, dropna=False):
        bounds = [part.get(c) for c in ("ci_low", "ci_high")]
        found = mean_interval(part[value], *bounds)
        rows.append((*key, found.value, found.low, found.high, found.n, found.kind))
    return pd.DataFrame(rows, columns=[*keys, *COLUMNS])

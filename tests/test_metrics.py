"""copra.metrics' numpy metrics equal scikit-learn's, ties, absent labels and all."""

import numpy as np
import pytest
from sklearn import metrics as skm

from copra import metrics

CASES = range(40)


def _scores(rng, shape):
    """Scores with many ties (rounded to one decimal), as probabilities often are."""
    return np.round(rng.random(shape), 1)


@pytest.mark.parametrize("case", CASES)
def test_ranking_metrics_equal_sklearn(case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(4, 60))
    y = rng.integers(0, 2, size=n).astype(np.float32 if case % 2 else np.int64)
    y[:2] = [0, 1]  # both classes
    scores = _scores(rng, n).astype(np.float32 if case % 3 else np.float64)
    assert metrics.average_precision(y, scores) == pytest.approx(
        skm.average_precision_score(y, scores), abs=1e-12
    )
    assert metrics.roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_label_metrics_equal_sklearn(case):
    rng = np.random.default_rng(case)
    n, classes = int(rng.integers(2, 50)), int(rng.integers(2, 6))
    y, predicted = rng.integers(0, classes, size=n), rng.integers(0, classes, size=n)
    if case % 5 == 0:
        predicted[:] = predicted[0]  # one side constant: MCC is 0
    assert metrics.matthews(y, predicted) == pytest.approx(
        skm.matthews_corrcoef(y, predicted), abs=1e-12
    )
    assert metrics.f1_macro(y, predicted) == pytest.approx(
        skm.f1_score(y, predicted, average="macro", zero_division=0), abs=1e-12
    )
    indicator = rng.integers(0, 2, size=(n, classes))
    guessed = rng.integers(0, 2, size=(n, classes))
    indicator[:, 0] = guessed[:, 0] = 0  # a label neither side has
    assert metrics.f1_macro(indicator, guessed) == pytest.approx(
        skm.f1_score(indicator, guessed, average="macro", zero_division=0), abs=1e-12
    )

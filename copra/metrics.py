"""Metrics per task kind and bootstrap 95% intervals, in the tidy long format of metrics.tsv.

The ranking and label metrics are plain numpy, equal to scikit-learn's (tests/test_metrics.py
compares them): scikit-learn's checks of its arguments cost milliseconds a call, most of a
bootstrap of 200 resamples.
"""

import warnings

import numpy as np
from scipy import stats

from copra.targets import Targets


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one column (sklearn's: a step per distinct score, highest first)."""
    order = np.argsort(-scores, kind="mergesort")
    scores, y_true = scores[order], y_true[order].astype(float)
    last_of_each = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(y_true)[last_of_each]
    precision = true_positives / (last_of_each + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of one column: the Mann-Whitney statistic, ties counted half."""
    positive = y_true.astype(bool)
    n_positive, n_negative = positive.sum(), (~positive).sum()
    ranks = stats.rankdata(scores)
    return float(
        (ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
    )


def _macro(metric, y_true: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean([metric(y_true[:, j], scores[:, j]) for j in range(y_true.shape[1])]))


def _confusion(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The confusion matrix over the labels either side has (rows true, columns predicted)."""
    labels, coded = np.unique(np.concatenate([y, predicted]), return_inverse=True)
    truth, guess = coded[: len(y)], coded[len(y) :]
    return np.bincount(truth * len(labels) + guess, minlength=len(labels) ** 2).reshape(
        len(labels), len(labels)
    )


def matthews(y: np.ndarray, predicted: np.ndarray) -> float:
    """Matthews correlation of (multi-class) labels; 0 where one side is constant."""
    confusion = _confusion(y, predicted).astype(float)
    true, guessed, n = confusion.sum(axis=1), confusion.sum(axis=0), confusion.sum()
    covariance = np.trace(confusion) * n - true @ guessed
    denominator = np.sqrt((n**2 - true @ true) * (n**2 - guessed @ guessed))
    return float(covariance / denominator) if denominator else 0.0


def _f1(true_positives, false_positives, false_negatives) -> np.ndarray:
    """F1 per label; 0 where a label is in neither side (sklearn's zero_division=0)."""
    denominator = 2 * true_positives + false_positives + false_negatives
    return np.divide(
        2.0 * true_positives,
        denominator,
        out=np.zeros(len(denominator)),
        where=denominator > 0,
    )


def f1_macro(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean F1 over the labels either side has (columns, for a label indicator matrix)."""
    if y.ndim == 2:
        y, predicted = y.astype(bool), predicted.astype(bool)
        scores = _f1(
            (y & predicted).sum(axis=0), (~y & predicted).sum(axis=0), (y & ~predicted).sum(axis=0)
        )
        return float(scores.mean())
    confusion = _confusion(y, predicted)
    hits = np.diag(confusion)
    return float(_f1(hits, confusion.sum(axis=0) - hits, confusion.sum(axis=1) - hits).mean())


def _ranking(y_true: np.ndarray, scores: np.ndarray):
    """AUPR and AUROC thunks over the classes (columns) that have both positives and negatives."""
    y_true = y_true.reshape(len(y_true), -1)
    scores = scores.reshape(len(scores), -1)
    both = (y_true.sum(axis=0) > 0) & (y_true.sum(axis=0) < len(y_true))
    if not both.any():
        return {"aupr": _undefined, "auroc": _undefined}
    y_true, scores = y_true[:, both], scores[:, both]
    return {
        "aupr": lambda: _macro(average_precision, y_true, scores),
        "auroc": lambda: _macro(roc_auc, y_true, scores),
    }


def _labels(y: np.ndarray, predicted: np.ndarray):
    return {
        "mcc": lambda: matthews(y, predicted),
        "accuracy": lambda: float(np.mean(y == predicted)),
        "f1_macro": lambda: f1_macro(y, predicted),
    }


def _metric_thunks(y: np.ndarray, scores: np.ndarray, targets: Targets):
    if targets.kind == "regression":
        y, predicted = y.astype(float), scores[:, 0]
        return {
            "spearman": lambda: stats.spearmanr(y, predicted).statistic,
            "pearson": lambda: stats.pearsonr(y, predicted).statistic,
            "rmse": lambda: np.sqrt(np.mean((y - predicted) ** 2)),
            "mae": lambda: np.mean(np.abs(y - predicted)),
        }
    if targets.kind == "binary":
        return {**_ranking(y, scores[:, 0]), **_labels(y, (scores[:, 0] >= 0.5).astype(int))}
    if targets.kind == "multiclass":
        onehot = np.eye(len(targets.classes))[y]
        return {**_ranking(onehot, scores), **_labels(y, scores.argmax(axis=1))}
    predicted = (scores >= 0.5).astype(int)
    return {
        **_ranking(y, scores),
        "f1_macro": lambda: f1_macro(y, predicted),
    }


def _undefined() -> float:
    return float("nan")


def compute_metrics(y: np.ndarray, scores: np.ndarray, targets: Targets) -> dict[str, float]:
    """All metrics of the task kind; one undefined on this sample (a single class) is NaN."""
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, thunk in _metric_thunks(y, scores, targets).items():
            try:
                values[name] = float(thunk())
            except ValueError:
                values[name] = float("nan")
    return values


def metric_names(targets: Targets) -> list[str]:
    if targets.kind == "regression":
        return ["spearman", "pearson", "rmse", "mae"]
    if targets.kind == "multilabel":
        return ["aupr", "auroc", "f1_macro"]
    return ["aupr", "auroc", "mcc", "accuracy", "f1_macro"]


def bootstrap_intervals(
    y: np.ndarray, scores: np.ndarray, targets: Targets, resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals over `resamples` seeded bootstrap samples of the rows."""
    names = metric_names(targets)
    if resamples == 0:
        return dict.fromkeys(names, (float("nan"), float("nan")))
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in names}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), size=len(y))
        for name, value in compute_metrics(y[rows], scores[rows], targets).items():
            draws[name].append(value)
    intervals = {}
    for name, values in draws.items():
        values = np.array(values)
        values = values[np.isfinite(values)]
        intervals[name] = (
            tuple(np.percentile(values, [2.5, 97.5])) if values.size else (np.nan, np.nan)
        )
    return intervals


def loss_and_primary_metric(outputs, encoded, targets: Targets) -> tuple[float, float]:
    """The training loss and the primary metric of raw model outputs against encoded targets."""
    labels = encoded.numpy()
    if targets.kind == "regression":
        labels = labels * targets.std + targets.mean
    metric = compute_metrics(labels, targets.scores(outputs), targets)[targets.primary_metric]
    return float(targets.loss(outputs, encoded)), metric

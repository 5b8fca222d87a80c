"""Metrics per task kind and bootstrap 95% intervals, in the tidy long format of metrics.tsv."""

import warnings

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from copra.targets import Targets


def _ranking(y_true: np.ndarray, scores: np.ndarray):
    """AUPR and AUROC thunks over the classes (columns) that have both positives and negatives."""
    y_true = y_true.reshape(len(y_true), -1)
    scores = scores.reshape(len(scores), -1)
    both = (y_true.sum(axis=0) > 0) & (y_true.sum(axis=0) < len(y_true))
    if not both.any():
        return {"aupr": _undefined, "auroc": _undefined}
    y_true, scores = y_true[:, both], scores[:, both]
    return {
        "aupr": lambda: skm.average_precision_score(y_true, scores, average="macro"),
        "auroc": lambda: skm.roc_auc_score(y_true, scores, average="macro"),
    }


def _labels(y: np.ndarray, predicted: np.ndarray):
    return {
        "mcc": lambda: skm.matthews_corrcoef(y, predicted),
        "accuracy": lambda: skm.accuracy_score(y, predicted),
        "f1_macro": lambda: skm.f1_score(y, predicted, average="macro"),
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
        "f1_macro": lambda: skm.f1_score(y, predicted, average="macro", zero_division=0),
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

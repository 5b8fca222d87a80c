"""Metrics per task kind and bootstrap 95% intervals, in the tidy long format of metrics.tsv."""

import warnings

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from copra.targets import Targets


def _classification(y: np.ndarray, scores: np.ndarray, targets: Targets) -> dict[str, float]:
    if targets.kind == "binary":
        predicted = (scores[:, 0] >= 0.5).astype(int)
        return {
            "aupr": skm.average_precision_score(y, scores[:, 0]),
            "auroc": skm.roc_auc_score(y, scores[:, 0]),
            "mcc": skm.matthews_corrcoef(y, predicted),
            "accuracy": skm.accuracy_score(y, predicted),
            "f1_macro": skm.f1_score(y, predicted, average="macro"),
        }
    onehot = np.eye(len(targets.classes))[y]
    predicted = scores.argmax(axis=1)
    present = onehot.sum(axis=0) > 0
    return {
        "aupr": skm.average_precision_score(
            onehot[:, present], scores[:, present], average="macro"
        ),
        "auroc": skm.roc_auc_score(onehot[:, present], scores[:, present], average="macro"),
        "mcc": skm.matthews_corrcoef(y, predicted),
        "accuracy": skm.accuracy_score(y, predicted),
        "f1_macro": skm.f1_score(y, predicted, average="macro"),
    }


def _multilabel(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    present = (y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y))
    return {
        "aupr": skm.average_precision_score(y[:, present], scores[:, present], average="macro"),
        "auroc": skm.roc_auc_score(y[:, present], scores[:, present], average="macro"),
        "f1_macro": skm.f1_score(y, (scores >= 0.5).astype(int), average="macro"),
    }


def _regression(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "spearman": stats.spearmanr(y, predicted).statistic,
        "pearson": stats.pearsonr(y, predicted).statistic,
        "rmse": float(np.sqrt(np.mean((y - predicted) ** 2))),
        "mae": float(np.mean(np.abs(y - predicted))),
    }


def compute_metrics(y: np.ndarray, scores: np.ndarray, targets: Targets) -> dict[str, float]:
    """All metrics of the task kind; a metric undefined on this sample (one class only) is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if targets.kind == "regression":
                values = _regression(y.astype(float), scores[:, 0])
            elif targets.kind == "multilabel":
                values = _multilabel(y, scores)
            else:
                values = _classification(y, scores, targets)
        except ValueError:
            return dict.fromkeys(metric_names(targets), float("nan"))
    return {name: float(value) for name, value in values.items()}


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

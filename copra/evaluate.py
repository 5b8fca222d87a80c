"""Evaluation: metrics with bootstrap intervals per run, gathered into results/metrics.tsv."""

from pathlib import Path

import pandas as pd

from copra.atomic import write_table
from copra.metrics import bootstrap_intervals, compute_metrics
from copra.provenance import write_manifest
from copra.settings import EvaluationSettings
from copra.targets import Targets

COLUMNS = ["task", "method", "seed", "split", "metric", "value", "ci_low", "ci_high"]
# ddg: predicted mutation effects of complex tasks against the measured ones (where given).
EVALUATED_SPLITS = ("valid", "test", "ddg")


def evaluate_predictions(
    predictions_path,
    targets_path,
    *,
    task: str,
    method: str,
    seed: int,
    settings: EvaluationSettings | None = None,
) -> pd.DataFrame:
    """Tidy metrics of one run's predictions on the valid, test and ddg splits (labelled rows)."""
    settings = settings or EvaluationSettings()
    targets = Targets.from_json(Path(targets_path).read_text())
    label_type = float if targets.kind == "regression" else str
    predictions = pd.read_csv(predictions_path, sep="\t", dtype={"label": label_type})
    rows = []
    for split in EVALUATED_SPLITS:
        part = predictions[(predictions.split == split) & predictions.label.notna()]
        if part.empty:
            continue
        scores = part[targets.score_columns()].to_numpy(dtype=float)
        y = targets.label_values(part["label"])
        values = compute_metrics(y, scores, targets)
        intervals = bootstrap_intervals(
            y, scores, targets, settings.bootstrap, settings.bootstrap_seed
        )
        for metric, value in values.items():
            low, high = intervals[metric]
            rows.append((task, method, seed, split, metric, value, low, high))
    return pd.DataFrame(rows, columns=COLUMNS)


def run_evaluate(predictions_path, targets_path, output, **run) -> None:
    write_table(output, evaluate_predictions(predictions_path, targets_path, **run))


def gather_metrics(inputs: list, output, config_snapshot: dict | None = None) -> pd.DataFrame:
    """Concatenate per-run metric tables into one, with a manifest beside it."""
    frames = [pd.read_csv(p, sep="\t") for p in inputs]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    table = table.sort_values(["task", "method", "seed", "split", "metric"], kind="stable")
    write_table(output, table)
    seeds = sorted({int(s) for s in table["seed"]}) if len(table) else []
    write_manifest(
        Path(output).with_suffix(".manifest.json"),
        inputs=inputs,
        config=config_snapshot,
        seeds=seeds,
        tasks=sorted(set(table["task"])),
        methods=sorted(set(table["method"])),
    )
    return table

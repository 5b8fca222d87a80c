"""The run at a glance: the best method per task, LoRA beside CopRA, and what each method cost.

Reads results/metrics.tsv and the run manifests; writes results/summary.tsv and
results/efficiency.tsv, both in the report's Summary category.
"""

import json
from pathlib import Path

import pandas as pd

from copra.atomic import write_table
from copra.plots import seed_summary
from copra.targets import PRIMARY_METRIC

SHOWN = set(PRIMARY_METRIC.values())
COST = ["trainable_parameters", "total_parameters", "wall_time_s", "peak_memory_mb", "epochs_run"]


def efficiency(manifest_paths) -> pd.DataFrame:
    """Per run: trainable and total parameters, wall time, peak memory (as each run recorded)."""
    rows = []
    for path in map(Path, manifest_paths):
        manifest = json.loads(path.read_text())
        row = {"task": path.parts[-4], "method": path.parts[-3], "seed": int(manifest["seed"])}
        row.update({key: manifest.get(key) for key in COST})
        if row["trainable_parameters"] is None:  # complex tasks: one model per fold
            row["trainable_parameters"] = manifest.get("trainable_parameters_per_fold")
        rows.append(row)
    table = pd.DataFrame(rows, columns=["task", "method", "seed", *COST])
    table["trainable_fraction"] = table.trainable_parameters / table.total_parameters
    return table.sort_values(["task", "method", "seed"], ignore_index=True)


def best_methods(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per task: the primary metric of each method (mean over seeds, with its interval), the
    best method, and CopRA minus LoRA."""
    metrics = metrics[(metrics.split == split) & metrics.metric.isin(SHOWN)]
    rows = []
    for task, part in metrics.groupby("task"):
        metric = part.metric.iloc[0]
        summary = seed_summary(part[part.metric == metric])
        best = summary.value.idxmax()
        row = {"task": task, "metric": metric, "best_method": best,
               "best_value": summary.value[best], "best_low": summary.low[best],
               "best_high": summary.high[best]}  # fmt: skip
        for method in summary.index:
            row[method] = summary.value[method]
        if {"lora", "copra"} <= set(summary.index):
            row["copra_minus_lora"] = summary.value["copra"] - summary.value["lora"]
        rows.append(row)
    return pd.DataFrame(rows)


def run_summary(metrics_path, manifest_paths, summary_output, efficiency_output) -> None:
    write_table(summary_output, best_methods(pd.read_csv(metrics_path, sep="\t")))
    write_table(efficiency_output, efficiency(manifest_paths))

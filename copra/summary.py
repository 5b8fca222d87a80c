"""The run at a glance: the best method per task, each method beside the one it refines (CopRA
beside LoRA: `compared_with` in copra/methods/), and what each method cost.

Reads results/metrics.tsv and the run manifests; writes results/summary.tsv,
results/efficiency.tsv and results/comparison.tsv, all in the report's Summary category.
"""

import json
from pathlib import Path

import pandas as pd

from copra import methods
from copra.atomic import write_table
from copra.plots import seed_summary
from copra.targets import PRIMARY_METRIC

SHOWN = set(PRIMARY_METRIC.values())
COST = ["trainable_parameters", "total_parameters", "wall_time_s", "peak_memory_mb", "epochs_run"]


def compared_pairs() -> list[tuple[str, str]]:
    """(baseline, method) for every registered method that refines another."""
    return [
        (methods.get(name).compared_with, name)
        for name in methods.names()
        if methods.get(name).compared_with
    ]


def difference(method: str, baseline: str) -> str:
    return f"{method}_minus_{baseline}"


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
    best method (none where the metric is undefined for every method), and each method minus
    the one it refines (CopRA minus LoRA)."""
    metrics = metrics[(metrics.split == split) & metrics.metric.isin(SHOWN)]
    rows = []
    for task, part in metrics.groupby("task"):
        metric = part.metric.iloc[0]
        summary = seed_summary(part[part.metric == metric])
        defined = summary.value.dropna()  # undefined where a split had one class or value
        best = defined.idxmax() if len(defined) else None
        row = {"task": task, "metric": metric, "best_method": best}
        for column in ("value", "low", "high"):
            row[f"best_{column}"] = summary[column][best] if best else float("nan")
        for method in summary.index:
            row[method] = summary.value[method]
        for baseline, method in compared_pairs():
            if {baseline, method} <= set(summary.index):
                row[difference(method, baseline)] = summary.value[method] - summary.value[baseline]
        rows.append(row)
    return pd.DataFrame(rows)


def primary_metrics(metrics: pd.DataFrame) -> dict[str, str]:
    """Each task's primary metric, as its metrics table names it."""
    shown = metrics[metrics.metric.isin(SHOWN)]
    return shown.groupby("task").metric.first().to_dict()


SINGLE_TASK = "single task"
QUANTITY_COLUMNS = ["task", "method", "quantity", "value", "ci_low", "ci_high"]


def _labelled(part: pd.DataFrame, column: str, label: str) -> pd.DataFrame:
    """`part`'s values of `column` as rows of quantity `label`, with its bootstrap bounds
    (metrics rows; NaN for the others)."""
    labelled = part.assign(quantity=label, value=part[column])
    return labelled.reindex(columns=QUANTITY_COLUMNS)


def quantity_rows(metrics, merging=None, pruning=None, split: str = "test") -> pd.DataFrame:
    """Every value (a seed, a merge, a pruned run) of each way of using a method: alone, its
    seeds merged 1:1 and the tasks merged (exact, linear), pruned (every other layer; magnitude
    of dW at 50%), on `split`'s primary metric; in QUANTITY_COLUMNS."""
    primary = primary_metrics(metrics)

    def scored(table):
        return table[(table.split == split) & (table.metric == table.task.map(primary))]

    parts = [_labelled(scored(metrics), "value", SINGLE_TASK)]
    if merging is not None:
        merged = scored(merging)
        seeds = merged[(merged["merge"] == "seeds") & (merged.weights == "1:1")]
        for chosen, label in ((seeds, "seeds 1:1"), (merged[merged["merge"] == "tasks"], "tasks")):
            for combination in ("exact", "linear"):
                mine = chosen[chosen.combination == combination]
                parts.append(_labelled(mine, "merged", f"merged {label} ({combination})"))
    if pruning is not None:
        pruned = scored(pruning)
        every_other = pruned[pruned.scheme == "every_other"]
        parts.append(_labelled(every_other, "value", "pruned every other layer"))
        half = pruned[(pruned.scheme == "magnitude_dw") & ((pruned.amount - 0.5).abs() < 1e-9)]
        parts.append(_labelled(half, "value", "pruned magnitude_dw 50%"))
    return pd.concat(parts, ignore_index=True)


def comparison(metrics, merging=None, pruning=None, split: str = "test") -> pd.DataFrame:
    """Each method beside the one it refines (CopRA beside LoRA) per task: alone, merged (seeds
    1:1, tasks) and pruned, on the test split's primary metric (mean over seeds), with the
    difference."""
    pairs = compared_pairs()
    shown = list(dict.fromkeys(name for pair in pairs for name in pair))
    columns = [*shown, *(difference(m, b) for b, m in pairs)]
    long = quantity_rows(metrics, merging, pruning, split)
    long = long[long.method.isin(shown)]
    if long.empty:
        return pd.DataFrame(columns=["task", "quantity", *columns])
    wide = long.pivot_table(index=["task", "quantity"], columns="method", values="value")
    wide = wide.reindex(columns=shown).reset_index()
    for baseline, method in pairs:
        wide[difference(method, baseline)] = wide[method] - wide[baseline]
    order = {SINGLE_TASK: 0}
    wide["_order"] = wide.quantity.map(
        lambda q: (order.get(q, 1 if q.startswith("merged") else 2), q)
    )
    return wide.sort_values(["task", "_order"]).drop(columns="_order").reset_index(drop=True)


def optional_table(path) -> pd.DataFrame | None:
    """The table at `path`; None where the analysis did not run (no path)."""
    return pd.read_csv(path, sep="\t") if path else None


def run_summary(
    metrics_path,
    manifest_paths,
    summary_output,
    efficiency_output,
    comparison_output,
    merging_path=None,
    pruning_path=None,
) -> None:
    metrics = pd.read_csv(metrics_path, sep="\t")
    write_table(summary_output, best_methods(metrics))
    write_table(efficiency_output, efficiency(manifest_paths))
    merging, pruning = optional_table(merging_path), optional_table(pruning_path)
    write_table(comparison_output, comparison(metrics, merging, pruning))

"""The metrics of continual learning, computed from the jobs' saved predictions alone.

For every method of a job (one sequence, order and seed), after every step t:
- the matrix a[t, j]: the metric on step j's test rows (j <= t), scored over every class seen by t;
- A_t (`seen`): the metric on the test rows of every step seen by t;
then A_last = A_T (after the last step), A_bar = the mean of A_t over the steps, and forgetting
F = mean over j < T of (max over t < T of a[t, j]) - a[T, j]. Classification reports accuracy and
the task's primary metric; regression its primary metric (Spearman). The gathered table adds, per
sequence and method, the mean, spread (sample std) and count of the summaries over orders x seeds.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from copra.atomic import write_table
from copra.continual import SequenceSpec
from copra.metrics import compute_metrics
from copra.targets import Targets

COLUMNS = [
    "sequence",
    "mode",
    "method",
    "order",
    "seed",
    "metric",
    "quantity",
    "after_step",
    "on_step",
    "statistic",
    "value",
]
SUMMARIES = ("A_last", "A_bar", "forgetting")


def metric_names(targets: Targets) -> list[str]:
    if targets.kind == "regression":
        return [targets.primary_metric]
    return ["accuracy", targets.primary_metric]


def step_targets(targets: Targets, frame: pd.DataFrame) -> Targets:
    """The label space the scores after one step cover: the classes with scores (class
    incremental), or the sequence's (domain incremental)."""
    if targets.kind != "multiclass":
        return targets
    columns = [c for c in targets.score_columns() if frame[c].notna().all()]
    return Targets("multiclass", classes=[c.split(":", 1)[1] for c in columns])


def scored(frame: pd.DataFrame, targets: Targets) -> dict[str, float]:
    y = targets.label_values(frame["label"])
    scores = frame[targets.score_columns()].to_numpy(dtype=np.float32)
    return compute_metrics(y, scores, targets)


def job_metrics(predictions: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Rows of COLUMNS for one job: a[t, j], A_t and the summaries of each of its methods."""
    targets = Targets(**manifest["targets"])
    names = metric_names(targets)
    rows = []
    for method, frame in predictions.groupby("method", sort=False):
        seen, matrix = {}, {}  # {(metric, t): A_t}, {(metric, t, j): a[t, j]}
        for t, after in frame.groupby("after_step"):
            label_space = step_targets(targets, after)
            seen.update({(n, t): v for n, v in scored(after, label_space).items()})
            for j, on in after.groupby("on_step"):
                matrix.update({(n, t, j): v for n, v in scored(on, label_space).items()})
        last = int(frame.after_step.max())
        for name in names:
            rows += [(method, name, "seen", t, "all", seen[name, t]) for t in range(last + 1)]
            rows += [
                (method, name, "a", t, j, matrix[name, t, j])
                for t in range(last + 1)
                for j in range(t + 1)
            ]
            for quantity, value in summaries(seen, matrix, name, last).items():
                rows.append((method, name, quantity, None, None, value))
    job = [manifest["sequence"], manifest["mode"]]
    return pd.DataFrame(
        [
            (*job, method, manifest["order"], manifest["seed"], *rest[:-1], "value", rest[-1])
            for method, *rest in rows
        ],
        columns=COLUMNS,
    )


def summaries(seen: dict, matrix: dict, name: str, last: int) -> dict[str, float]:
    """A_last, A_bar and forgetting of one metric."""
    dropped = [
        max(matrix[name, t, j] for t in range(j, last)) - matrix[name, last, j] for j in range(last)
    ]
    return {
        "A_last": seen[name, last],
        "A_bar": float(np.mean([seen[name, t] for t in range(last + 1)])),
        "forgetting": float(np.mean(dropped)) if dropped else float("nan"),
    }


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count of every summary over the orders and seeds."""
    runs = table[table.quantity.isin(SUMMARIES)]
    keys = ["sequence", "mode", "method", "metric", "quantity"]
    stats = runs.groupby(keys, sort=False).value.agg(["mean", "std", "count"]).reset_index()
    long = stats.melt(id_vars=keys, var_name="statistic", value_name="value")
    long = long.assign(order="all", seed="all", after_step=None, on_step=None)
    return long[COLUMNS]


def gather_continual(inputs, output, figure, config: dict | None = None) -> pd.DataFrame:
    """results/continual.tsv from the jobs' folders (their predictions.tsv and manifest.json),
    and the figure; a config's `continual:` section keeps each sequence's methods (a job of
    `lae` also scores `online` and `offline`), without one every method is kept."""
    from copra.plots import plot_continual

    section = (config or {}).get("continual")
    tables = []
    for path in inputs:
        folder = Path(path).parent
        manifest = json.loads((folder / "manifest.json").read_text())
        predictions = pd.read_csv(folder / "predictions.tsv", sep="\t", dtype={"label": str})
        if section is not None:
            entry = section["sequences"][manifest["sequence"]]
            methods = SequenceSpec.from_config(manifest["sequence"], entry).methods_of(section)
            predictions = predictions[predictions.method.isin(methods)]
        tables.append(job_metrics(predictions, manifest))
    table = pd.concat(tables, ignore_index=True)
    table = pd.concat([table, aggregate(table)], ignore_index=True)
    table["after_step"] = table.after_step.astype("Int64")
    write_table(output, table)
    plot_continual(table, figure)
    return table

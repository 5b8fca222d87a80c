"""Figures people compare: test metrics per task and method, with intervals."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from copra.atomic import atomic_path  # noqa: E402
from copra.targets import PRIMARY_METRIC  # noqa: E402

SHOWN = sorted(set(PRIMARY_METRIC.values()))


def plot_metrics(metrics_path, output, split: str = "test") -> None:
    """One panel per task: its primary metric per method, mean over seeds, bootstrap interval."""
    table = pd.read_csv(metrics_path, sep="\t")
    table = table[(table.split == split) & table.metric.isin(SHOWN)]
    tasks = sorted(table.task.unique())
    fig, axes = plt.subplots(
        1, max(len(tasks), 1), figsize=(3.2 * max(len(tasks), 1), 3.2), squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=False):
        part = table[table.task == task]
        metric = part.metric.iloc[0]
        part = part[part.metric == metric].groupby("method")[["value", "ci_low", "ci_high"]].mean()
        errors = [part.value - part.ci_low, part.ci_high - part.value]
        ax.bar(part.index, part.value, yerr=errors, capsize=4, color="#4C72B0")
        ax.set_title(task)
        ax.set_ylabel(f"{split} {metric}")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    with atomic_path(output, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)

"""What a task's data looks like: split sizes, labels, lengths, and sequences shared across splits.

Exact sequence duplicates between the training split and valid/test inflate the metrics; they are
counted and logged as warnings (the report shows the count).
"""

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from copra.atomic import write_table  # noqa: E402
from copra.plots import _save  # noqa: E402
from copra.settings import TaskSettings  # noqa: E402
from copra.tables import (  # noqa: E402
    COMPLEX_KIND,
    hash_columns,
    read_sequences,
    read_task_table,
)

log = logging.getLogger(__name__)
COLUMNS = ["task", "section", "split", "name", "value"]


def _groups(table: pd.DataFrame) -> pd.Series:
    """The split of each row; complex tasks without a split use their folds."""
    if (table.split == "cv").all():
        return "fold " + table.fold.astype(str)
    return table.split


def summarize(
    table: pd.DataFrame, lengths: dict[str, int], kind: str, multilabel: bool, separator: str
) -> list[tuple]:
    """(section, split, name, value) rows: sizes, labels, lengths and cross-split duplicates."""
    rows = []
    groups = _groups(table)
    regression = kind in ("sequence_regression", COMPLEX_KIND)
    order = {"train": 0, "valid": 1, "test": 2}
    for split in sorted(groups.unique(), key=lambda g: (order.get(g, 3), g)):
        part = table[groups == split]
        rows.append(("size", split, "rows", len(part)))
        if regression:
            values = part.label.astype(float).describe()
            rows += [
                ("label", split, stat, float(values[stat]))
                for stat in ("mean", "std", "min", "max")
            ]
        else:
            labels = part.label.astype(str)
            if multilabel:
                labels = labels.str.split(separator).explode()
            rows += [("class", split, str(c), int(n)) for c, n in labels.value_counts().items()]
        if lengths:
            hashes = pd.concat([part[c] for c in hash_columns(kind)])
            described = hashes.map(lengths).describe()
            rows += [
                ("length", split, stat, float(described[stat]))
                for stat in ("min", "50%", "mean", "max")
            ]
    return rows


def cross_split_duplicates(table: pd.DataFrame, kind: str) -> list[tuple]:
    """Rows of valid/test whose sequence (a pair: the same two sequences) occurs in training."""
    if kind == COMPLEX_KIND or (table.split == "cv").all():
        return []
    keys = table[hash_columns(kind)].apply(frozenset, axis=1)
    train = set(keys[table.split == "train"])
    return [
        (
            "duplicates",
            split,
            "rows duplicating a training sequence",
            int(keys[table.split == split].isin(train).sum()),
        )
        for split in ("valid", "test")
    ]


def run_data_summary(
    name: str, table_path, sequences_path, output, figure, *, task: TaskSettings
) -> pd.DataFrame:
    """summary.tsv and a figure of task `name`'s data; logs a warning per duplicated split."""
    kind, multilabel, separator = task.kind, task.multilabel, task.label_separator
    table = read_task_table(table_path, "sequence_regression" if kind == COMPLEX_KIND else kind)
    lengths = {}  # complex tasks: their rows are complexes, not sequences
    if kind != COMPLEX_KIND:
        lengths = {key: len(seq) for key, seq in read_sequences(sequences_path).items()}
    rows = summarize(table, lengths, kind, multilabel, separator)
    rows += cross_split_duplicates(table, kind)
    for _, split, _, value in (r for r in rows if r[0] == "duplicates"):
        if value:
            log.warning(
                "%s: %d %s rows duplicate a training sequence (pairs: both sequences)",
                name,
                value,
                split,
            )
    frame = pd.DataFrame([(name, *row) for row in rows], columns=COLUMNS)
    write_table(output, frame)
    plot_data_summary(frame, figure)
    return frame


def plot_data_summary(frame: pd.DataFrame, output) -> None:
    """Rows per split, and the labels (class counts, or label range) per split."""
    fig, (sizes, labels) = plt.subplots(1, 2, figsize=(9, 3.2))
    size = frame[frame.section == "size"]
    sizes.bar(size.split, size.value.astype(float), color="#4C72B0")
    sizes.set_ylabel("rows")
    sizes.set_title(f"{frame.task.iloc[0]}: split sizes", fontsize=10)
    classes = frame[frame.section == "class"]
    if len(classes):
        pivot = classes.pivot_table(index="split", columns="name", values="value", aggfunc="sum")
        pivot.plot.bar(stacked=True, ax=labels, rot=0)
        labels.set_ylabel("rows per class")
        labels.legend(fontsize=7)
    else:
        stats = frame[frame.section == "label"].pivot(index="split", columns="name", values="value")
        labels.errorbar(stats.index, stats["mean"], yerr=stats["std"], fmt="o", capsize=4)
        labels.vlines(stats.index, stats["min"], stats["max"], color="grey", linewidth=1)
        labels.set_ylabel("label: mean ± sd, min-max")
    labels.set_title("labels per split", fontsize=10)
    for ax in (sizes, labels):
        ax.tick_params(axis="x", rotation=30)
    _save(fig, output)

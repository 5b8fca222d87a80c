"""What makes a task's labels unusable, found at ingest: an id labelled twice differently, and a
split on which the task cannot be trained or scored (one class, or one label value)."""

import logging

import pandas as pd

from copra.errors import InputError
from copra.tables import PAIR_KIND

log = logging.getLogger(__name__)
SPLIT_ORDER = ("train", "valid", "test")


def _row_keys(table: pd.DataFrame, kind: str) -> pd.Series:
    """What names a row: its id, or its pair of ids in either order."""
    if kind == PAIR_KIND:
        return table[["id_a", "id_b"]].apply(lambda r: " + ".join(sorted(r)), axis=1)
    return table["id"]


def check_contradictions(table: pd.DataFrame, kind: str, path) -> None:
    """Refuse an id (a pair) labelled twice with different labels; warn about exact repeats.
    Rows named by their inline sequence only are not checked (replicate measurements)."""
    if kind != PAIR_KIND and (table["id"] == table["seq_hash"]).all():
        return
    keys = _row_keys(table, kind)
    for key, rows in table.groupby(keys, sort=False):
        if len(rows) < 2:
            continue
        first, later = rows.iloc[0], rows.iloc[1:]
        other = later[later.label.astype(str) != str(first.label)]
        if len(other):
            raise InputError(
                f"'{key}' is labelled '{first.label}' at line {first._line} and "
                f"'{other.label.iloc[0]}' here: one label per "
                f"{'pair' if kind == PAIR_KIND else 'id'}; keep the right row",
                path=path,
                line=int(other._line.iloc[0]),
            )
        log.warning(
            "%s: %r appears on lines %s with the same label; every row is kept",
            path,
            key,
            ", ".join(map(str, rows._line)),
        )


def _classes(labels: pd.Series, multilabel: bool, separator: str) -> list[set]:
    if multilabel:
        return [set(value.split(separator)) for value in labels]
    return [{str(value)} for value in labels]


def check_informative_splits(table: pd.DataFrame, task, path) -> None:
    """A split needs two classes (multi-label: a class present in some rows and absent in
    others) or two label values. Training without is refused: it learns nothing. A valid or
    test split without is accepted with a warning: the metrics that need both (AUPR, AUROC,
    MCC, Spearman) are undefined there, left empty in the tables, and early stopping follows
    the validation loss."""
    for split in SPLIT_ORDER:
        part = table[table.split == split]
        problem = None if part.empty else _sameness(part, task)
        if problem is None:
            continue
        if split == "train":
            raise InputError(
                f"the training split is degenerate: {problem}, so there is nothing to learn; "
                "give it rows of two classes (two label values): a split column, other "
                "ingest.split_fractions or another ingest.split_seed",
                path=path,
            )
        consequence = "early stopping follows the loss" if split == "valid" else "kept"
        log.warning(
            "%s: the %s split is degenerate: %s; its metrics that need two classes or values "
            "are undefined (left empty); %s",
            path,
            split,
            problem,
            consequence,
        )


def _sameness(part: pd.DataFrame, task) -> str | None:
    """What makes every row of a split alike, or None when two rows differ."""
    if task.kind == "sequence_regression":
        values = part.label.astype(float)
        if values.nunique() > 1:
            return None
        return f"all its {len(part)} labels are {values.iloc[0]:g}"
    sets = _classes(part.label, task.multilabel, task.label_separator)
    present = set.union(*sets)
    if any(not all(c in labels for labels in sets) for c in present):
        return None
    return f"all its {len(part)} rows have the class(es) {', '.join(map(repr, sorted(present)))}"

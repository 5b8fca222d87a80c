"""Reading the normalized task table and writing predictions in the shared format."""

import numpy as np
import pandas as pd

from copra.atomic import write_table
from copra.targets import Targets

PAIR_KIND = "pair_classification"
COMPLEX_KIND = "complex_regression"


def read_task_table(path, kind: str) -> pd.DataFrame:
    """The table written by ingest; class labels stay text, regression labels are floats."""
    label_type = float if kind == "sequence_regression" else str
    return pd.read_csv(
        path, sep="\t", dtype={"label": label_type, "id": str, "id_a": str, "id_b": str}
    )


def read_sequences(path) -> dict[str, str]:
    """The sequence table written by ingest, as {sequence hash: sequence}."""
    table = pd.read_csv(path, sep="\t", dtype=str)
    return dict(zip(table.seq_hash, table.sequence, strict=True))


def key_columns(kind: str) -> list[str]:
    return ["id_a", "id_b"] if kind == PAIR_KIND else ["id"]


def hash_columns(kind: str | None) -> list[str]:
    """The columns naming a row's sequences by hash (two for pairs)."""
    return ["hash_a", "hash_b"] if kind == PAIR_KIND else ["seq_hash"]


def write_predictions(path, table: pd.DataFrame, kind: str, targets: Targets, scores: np.ndarray):
    """predictions.tsv: the row's ids, split and label, then one column per score."""
    out = table[[*key_columns(kind), "split", "label"]].copy()
    for i, column in enumerate(targets.score_columns()):
        out[column] = scores[:, i]
    write_table(path, out)


def concat_tables(paths) -> pd.DataFrame:
    """The TSV tables at `paths`, one below the other."""
    return pd.concat([pd.read_csv(path, sep="\t") for path in paths], ignore_index=True)


def gather(inputs, output, figure, plot) -> None:
    """The tables at `inputs` as one table at `output`, and `plot(table, figure)`."""
    table = concat_tables(inputs)
    write_table(output, table)
    plot(table, figure)

"""The data summary of a task: split sizes, labels, lengths, and duplicates across splits."""

import pandas as pd

from copra.data_summary import run_data_summary
from copra.settings import TaskSettings


def write(folder, table: pd.DataFrame, sequences: dict[str, str]):
    table.to_csv(folder / "table.tsv", sep="\t", index=False)
    rows = [(key, len(seq), seq) for key, seq in sequences.items()]
    pd.DataFrame(rows, columns=["seq_hash", "length", "sequence"]).to_csv(
        folder / "sequences.tsv", sep="\t", index=False
    )
    return folder / "table.tsv", folder / "sequences.tsv"


def summary(tmp_path, table, sequences, kind, **extra):
    paths = write(tmp_path, table, sequences)
    task = TaskSettings(kind, **extra)
    frame = run_data_summary("t", *paths, tmp_path / "s.tsv", tmp_path / "s.png", task=task)
    assert (tmp_path / "s.png").stat().st_size > 5_000
    assert frame.equals(pd.read_csv(tmp_path / "s.tsv", sep="\t").astype(frame.dtypes))
    return frame.set_index(["section", "split", "name"]).value


def test_classes_lengths_and_a_duplicate_across_splits(tmp_path, caplog):
    sequences = {"h1": "MKV", "h2": "MKVLA", "h3": "MA"}
    table = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "seq_hash": ["h1", "h2", "h1", "h3"],
            "label": ["x", "y", "x", "y"],
            "split": ["train", "train", "test", "valid"],
        }
    )
    values = summary(tmp_path, table, sequences, "sequence_classification")
    assert values["size", "train", "rows"] == 2 and values["size", "test", "rows"] == 1
    assert values["class", "train", "x"] == 1 and values["class", "valid", "y"] == 1
    assert values["length", "train", "max"] == 5 and values["length", "valid", "min"] == 2
    assert values["duplicates", "test", "rows duplicating a training sequence"] == 1
    assert values["duplicates", "valid", "rows duplicating a training sequence"] == 0
    assert "t: 1 test rows duplicate a training sequence" in caplog.text


def test_multilabel_classes_are_counted_one_by_one(tmp_path):
    table = pd.DataFrame(
        {
            "id": ["a", "b"],
            "seq_hash": ["h1", "h2"],
            "label": ["x;y", "y"],
            "split": ["train", "valid"],
        }
    )
    values = summary(
        tmp_path, table, {"h1": "MK", "h2": "MKV"}, "sequence_classification", multilabel=True
    )
    assert values["class", "train", "x"] == 1 and values["class", "train", "y"] == 1


def test_a_pair_is_a_duplicate_in_either_order_not_for_one_shared_protein(tmp_path):
    sequences = {h: "M" * (i + 2) for i, h in enumerate(["h1", "h2", "h3"])}
    table = pd.DataFrame(
        {
            "id_a": list("abcd"),
            "id_b": list("efgh"),
            "hash_a": ["h1", "h2", "h1", "h2"],
            "hash_b": ["h2", "h1", "h3", "h2"],
            "label": [1, 0, 1, 0],
            "split": ["train", "test", "test", "valid"],
        }
    )
    values = summary(tmp_path, table, sequences, "pair_classification")
    assert values["duplicates", "test", "rows duplicating a training sequence"] == 1
    assert values["duplicates", "valid", "rows duplicating a training sequence"] == 0
    assert values["class", "test", "1"] == 1 and values["class", "test", "0"] == 1


def test_complex_tasks_are_summarized_per_fold(tmp_path):
    table = pd.DataFrame(
        {
            "id": list("abcdef"),
            "label": [-7.0, -8.0, -9.0, -6.0, -7.5, -8.5],
            "split": "cv",
            "fold": [0, 1, 2, 0, 1, 2],
        }
    )
    values = summary(tmp_path, table, {"h1": "MKV"}, "complex_regression")
    assert values["size", "fold 0", "rows"] == 2
    assert values["label", "fold 1", "mean"] == -7.75 and values["label", "fold 2", "min"] == -9
    assert "duplicates" not in values.index.get_level_values(0)

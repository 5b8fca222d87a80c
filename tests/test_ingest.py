"""Tests for copra.ingest and `copra ingest`: label tables and FASTA into the normalized tables.

Bad input goes through the command line: exit status 2, one message naming the file and line,
and nothing (not even a temporary file) left in the output folder.
"""

import numpy as np
import pandas as pd
import pytest

from copra.cli import main
from copra.errors import InputError
from copra.ingest import ingest_task, run_ingest
from copra.sequences import sequence_hash
from copra.settings import IngestSettings, TaskSettings

FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}
PROTEINS = {
    "p1": "MKTAYIAKQR",
    "p2": "GSHMLEDPVA",
    "p3": "MKTAYIAKQR",  # the same sequence as p1 under another id
    "p4": "WWYYCCWWYY",
    "p5": "LIVFALIVFA",
    "unused": "KEDRKEDRKE",
}
CLASS_ROWS = [
    ["id", "label", "split"],
    ["p1", "cytoplasm", "train"],
    ["p2", "membrane", "train"],
    ["p3", "cytoplasm", "train"],
    ["p4", "membrane", "valid"],
    ["p5", "cytoplasm", "test"],
]
SEQUENCE_KINDS = ("sequence_classification", "sequence_regression")


def _fasta(tmp_path, records=None, name="proteins.fasta"):
    path = tmp_path / name
    records = PROTEINS if records is None else records
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records.items()))
    return path


def _table(tmp_path, rows, name="labels.tsv"):
    path = tmp_path / name
    separator = "," if name.endswith(".csv") else "\t"
    path.write_text("".join(separator.join(map(str, row)) + "\n" for row in rows))
    return path


def _ingest(kind, labels, sequences=None, *, split_fractions=FRACTIONS, split_seed=0, **task):
    """ingest_task on a task of `kind` (further TaskSettings fields in `task`)."""
    return ingest_task(
        TaskSettings(kind, labels, sequences, **task), IngestSettings(split_fractions, split_seed)
    )


def _cli(capsys, tmp_path, *args):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    code = main(
        [
            "ingest",
            *map(str, args),
            "--table",
            str(out / "table.tsv"),
            "--sequence-table",
            str(out / "sequences.tsv"),
        ]
    )
    return code, capsys.readouterr().err


def _fails(capsys, tmp_path, *args, where) -> str:
    """Run `copra ingest`, expect exit 2 with `where` (path:line) first, and an empty out folder."""
    code, err = _cli(capsys, tmp_path, *args)
    assert code == 2, err
    assert err.startswith(f"copra: error: {where}: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert list((tmp_path / "out").iterdir()) == []
    return err


def _classification_args(labels, fasta):
    return ["--kind", "sequence_classification", "--labels", labels, "--sequences", fasta]


# --- normalized output ---------------------------------------------------------------------


def test_sequence_classification_table_and_sequence_table(tmp_path):
    table, seqs = _ingest("sequence_classification", _table(tmp_path, CLASS_ROWS), _fasta(tmp_path))
    assert list(table.columns) == ["id", "seq_hash", "label", "split"]
    assert table["id"].tolist() == ["p1", "p2", "p3", "p4", "p5"]
    assert table["seq_hash"].tolist() == [sequence_hash(PROTEINS[i]) for i in table["id"]]
    assert table["label"].tolist() == [row[1] for row in CLASS_ROWS[1:]]
    assert table["split"].tolist() == ["train", "train", "train", "valid", "test"]
    assert list(seqs.columns) == ["seq_hash", "length", "sequence"]
    # p1 and p3 share one row; the unused FASTA record is not in the task's sequence table.
    assert sorted(seqs["sequence"]) == sorted({PROTEINS[i] for i in ("p1", "p2", "p4", "p5")})
    assert seqs["seq_hash"].is_unique
    for row in seqs.itertuples():
        assert row.seq_hash == sequence_hash(row.sequence)
        assert row.length == len(row.sequence)


def test_identical_sequences_under_different_ids_share_one_hash(tmp_path):
    table, seqs = _ingest("sequence_classification", _table(tmp_path, CLASS_ROWS), _fasta(tmp_path))
    hashes = dict(zip(table["id"], table["seq_hash"], strict=True))
    assert hashes["p1"] == hashes["p3"]
    assert (seqs["seq_hash"] == hashes["p1"]).sum() == 1


def test_run_ingest_writes_both_tables_and_no_temporary_file(tmp_path):
    out = tmp_path / "results" / "task"
    task = TaskSettings(
        kind="sequence_regression",
        labels=_table(
            tmp_path,
            [
                ["id", "label", "split"],
                ["p1", "1.5", "train"],
                ["p2", "-2e-1", "train"],
                ["p4", "3", "valid"],
            ],
        ),
        sequences=_fasta(tmp_path),
    )
    run_ingest(task, out / "table.tsv", out / "sequences.tsv", IngestSettings(FRACTIONS, 0))
    assert sorted(p.name for p in out.iterdir()) == ["sequences.tsv", "table.tsv"]
    table = pd.read_csv(out / "table.tsv", sep="\t")
    assert list(table.columns) == ["id", "seq_hash", "label", "split"]
    assert table["label"].tolist() == [1.5, -0.2, 3.0]
    assert table["split"].tolist() == ["train", "train", "valid"]
    seqs = pd.read_csv(out / "sequences.tsv", sep="\t")
    assert list(seqs.columns) == ["seq_hash", "length", "sequence"]
    assert sorted(seqs["sequence"]) == sorted([PROTEINS[p] for p in ("p1", "p2", "p4")])
    assert set(table["seq_hash"]) == set(seqs["seq_hash"])


def test_cli_ingest_writes_both_tables(capsys, tmp_path):
    labels, fasta = _table(tmp_path, CLASS_ROWS), _fasta(tmp_path)
    code, err = _cli(capsys, tmp_path, *_classification_args(labels, fasta))
    assert code == 0, err
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["sequences.tsv", "table.tsv"]
    table = pd.read_csv(out / "table.tsv", sep="\t")
    assert table["id"].tolist() == ["p1", "p2", "p3", "p4", "p5"]
    assert len(pd.read_csv(out / "sequences.tsv", sep="\t")) == 4


def test_csv_with_own_column_names_mapped_by_columns(tmp_path):
    rows = [["protein", "is_membrane", "fold"], ["p1", "0", "train"], ["p2", "1", "Train"]]
    rows += [["p4", "1", "valid"], ["p5", "0", "test"]]
    labels = _table(tmp_path, rows, name="membrane.csv")
    columns = {"id": "protein", "label": "is_membrane", "split": "fold"}
    table, _ = _ingest("sequence_classification", labels, _fasta(tmp_path), columns=columns)
    assert table["id"].tolist() == ["p1", "p2", "p4", "p5"]
    assert table["label"].tolist() == ["0", "1", "1", "0"]
    assert table["split"].tolist() == ["train", "train", "valid", "test"]


def test_cli_column_mapping(capsys, tmp_path):
    rows = [["protein", "loc", "fold"], ["p1", "a", "train"], ["p2", "b", "train"]]
    rows += [["p4", "a", "val"]]
    labels = _table(tmp_path, rows, name="labels.csv")
    args = _classification_args(labels, _fasta(tmp_path))
    args += ["--column", "id=protein", "--column", "label=loc", "--column", "split=fold"]
    code, err = _cli(capsys, tmp_path, *args)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out" / "table.tsv", sep="\t")
    assert table["split"].tolist() == ["train", "train", "valid"]


@pytest.mark.parametrize("name", ["labels.tsv", "labels.tab", "labels.txt", "labels.TSV"])
def test_tab_separated_extensions(tmp_path, name):
    table, _ = _ingest(
        "sequence_classification", _table(tmp_path, CLASS_ROWS, name=name), _fasta(tmp_path)
    )
    assert len(table) == 5


def test_split_values_are_case_insensitive_with_validation_aliases(tmp_path):
    rows = [["id", "label", "split"], ["p1", "a", " TRAIN "], ["p2", "b", "Validation"]]
    rows += [["p3", "a", "VAL"], ["p4", "b", "Train"], ["p5", "a", "Test"]]
    table, _ = _ingest("sequence_classification", _table(tmp_path, rows), _fasta(tmp_path))
    assert table["split"].tolist() == ["train", "valid", "valid", "train", "test"]


def test_inline_sequences_are_cleaned_and_hashed(tmp_path):
    rows = [["sequence", "label", "split"], ["mktay*", "1.0", "train"], ["MKTAY", "2", "train"]]
    rows += [["GSHM", "3", "valid"]]
    table, seqs = _ingest("sequence_regression", _table(tmp_path, rows))
    assert list(table.columns) == ["id", "seq_hash", "label", "split"]
    assert table["seq_hash"].tolist() == [sequence_hash(s) for s in ("MKTAY", "MKTAY", "GSHM")]
    assert table["id"].tolist() == table["seq_hash"].tolist()
    assert table["label"].tolist() == [1.0, 2.0, 3.0]
    assert sorted(seqs["sequence"]) == ["GSHM", "MKTAY"]


def test_ids_with_slashes_colons_and_full_header_descriptions(tmp_path):
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text(">demo:prot/0001\nMKTA\n>sp|P1|X_Y membrane protein: GN=a/b\nGSHM\n")
    rows = [["id", "label", "split"], ["demo:prot/0001", "a", "train"]]
    rows += [["sp|P1|X_Y membrane protein: GN=a/b", "b", "train"], ["sp|P1|X_Y", "a", "valid"]]
    table, _ = _ingest("sequence_classification", _table(tmp_path, rows), fasta)
    assert table["seq_hash"].tolist() == [sequence_hash(s) for s in ("MKTA", "GSHM", "GSHM")]


def test_labels_and_ids_are_stripped(tmp_path):
    rows = [["id", "label", "split"], [" p1 ", " a ", "train"], ["p2", "b ", "train"]]
    rows += [["p4", "a", "valid"]]
    table, _ = _ingest("sequence_classification", _table(tmp_path, rows), _fasta(tmp_path))
    assert table["id"].tolist() == ["p1", "p2", "p4"]
    assert table["label"].tolist() == ["a", "b", "a"]


def test_regression_labels_are_floats(tmp_path):
    rows = [["id", "label", "split"], ["p1", "1", "train"], ["p2", "-3.5e2", "train"]]
    rows += [["p4", "2", "valid"]]
    table, _ = _ingest("sequence_regression", _table(tmp_path, rows), _fasta(tmp_path))
    assert table["label"].tolist() == [1.0, -350.0, 2.0]
    assert table["label"].dtype == float


def test_multilabel_labels_are_sorted_and_deduplicated(tmp_path):
    rows = [["id", "label", "split"], ["p1", "b; a;b", "train"], ["p2", "c", "train"]]
    rows += [["p4", "a;c", "valid"]]
    table, _ = _ingest(
        "sequence_classification", _table(tmp_path, rows), _fasta(tmp_path), multilabel=True
    )
    assert table["label"].tolist() == ["a;b", "c", "a;c"]


def test_pair_task_with_product_ids(tmp_path):
    fasta = _fasta(
        tmp_path,
        {"product:A/1": "MKTAYI", "product:B/2": "GSHMLE", "product C": "MKTAYI"},
        name="partners.fasta",
    )
    rows = [["id_a", "id_b", "label", "split"], ["product:A/1", "product:B/2", "1", "train"]]
    rows += [["product:B/2", "product C", "0", "train"], ["product C", "product:A/1", "1.0", "val"]]
    rows += [["product:B/2", "product:B/2", "0", "test"]]
    table, seqs = _ingest("pair_classification", _table(tmp_path, rows), fasta)
    assert list(table.columns) == ["id_a", "id_b", "hash_a", "hash_b", "label", "split"]
    assert table["id_a"].tolist() == ["product:A/1", "product:B/2", "product C", "product:B/2"]
    a, b = sequence_hash("MKTAYI"), sequence_hash("GSHMLE")
    assert table["hash_a"].tolist() == [a, b, a, b]
    assert table["hash_b"].tolist() == [b, a, a, b]
    assert table["label"].tolist() == [1, 0, 1, 0]
    assert table["split"].tolist() == ["train", "train", "valid", "test"]
    assert sorted(seqs["seq_hash"]) == sorted([a, b])


def test_pair_task_with_own_column_names(tmp_path):
    rows = [["left", "right", "interacts"]] + [["p1", "p2", "1"], ["p2", "p4", "0"]] * 20
    columns = {"id_a": "left", "id_b": "right", "label": "interacts"}
    table, _ = _ingest(
        "pair_classification",
        _table(tmp_path, rows, name="pairs.csv"),
        _fasta(tmp_path),
        columns=columns,
        split_fractions={"train": 0.5, "valid": 0.5, "test": 0.0},
    )
    assert len(table) == 40
    assert set(table["label"]) == {0, 1}
    assert set(table["split"]) == {"train", "valid"}


def test_no_header_uses_positions(tmp_path):
    rows = [["p1", "a", "train"], ["p2", "b", "train"], ["p4", "a", "valid"]]
    table, _ = _ingest(
        "sequence_classification", _table(tmp_path, rows), _fasta(tmp_path), header=False
    )
    assert table["id"].tolist() == ["p1", "p2", "p4"]
    assert table["split"].tolist() == ["train", "train", "valid"]


def test_cli_no_header_with_mapped_positions(capsys, tmp_path):
    labels = _table(tmp_path, [["train", "a", "p1"], ["train", "b", "p4"], ["valid", "a", "p2"]])
    args = _classification_args(labels, _fasta(tmp_path))
    args += ["--no-header", "--column", "split=0", "--column", "label=1", "--column", "id=2"]
    code, err = _cli(capsys, tmp_path, *args)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out" / "table.tsv", sep="\t")
    assert table[["id", "label", "split"]].values.tolist() == [
        ["p1", "a", "train"],
        ["p4", "b", "train"],
        ["p2", "a", "valid"],
    ]


def test_no_header_with_an_inline_sequence_column(tmp_path):
    rows = [["MKTA", "1.5", "train"], ["GSHM", "2.5", "train"], ["WWYY", "0", "valid"]]
    table, seqs = _ingest(
        "sequence_regression", _table(tmp_path, rows), header=False, columns={"sequence": 0}
    )
    assert table["seq_hash"].tolist() == [sequence_hash(s) for s in ("MKTA", "GSHM", "WWYY")]
    assert table["label"].tolist() == [1.5, 2.5, 0.0]


def test_blank_lines_in_the_label_table_are_skipped(tmp_path):
    labels = tmp_path / "labels.tsv"
    labels.write_text("id\tlabel\tsplit\np1\ta\ttrain\n\np2\tb\ttrain\n\np4\ta\tvalid\n\n\n")
    table, _ = _ingest("sequence_classification", labels, _fasta(tmp_path))
    assert table["id"].tolist() == ["p1", "p2", "p4"]


# --- random split --------------------------------------------------------------------------


def _random_split(tmp_path, seed, fractions=FRACTIONS, n=1000):
    rows = [["id", "label"]] + [[f"p{1 + i % 5}", str(i % 5 % 3)] for i in range(n)]
    labels = _table(tmp_path, rows)
    table, _ = _ingest(
        "sequence_classification",
        labels,
        _fasta(tmp_path),
        split_fractions=fractions,
        split_seed=seed,
    )
    return table["split"].to_numpy()


def test_random_split_same_seed_same_split(tmp_path):
    assert np.array_equal(_random_split(tmp_path, 0), _random_split(tmp_path, 0))


def test_random_split_different_seed_different_split(tmp_path):
    assert not np.array_equal(_random_split(tmp_path, 0), _random_split(tmp_path, 1))


def test_random_split_does_not_depend_on_the_order_of_the_fractions(tmp_path):
    """The rules pass the config as JSON with sorted keys (test, train, valid)."""
    reordered = {"test": 0.1, "valid": 0.1, "train": 0.8}
    assert np.array_equal(_random_split(tmp_path, 0), _random_split(tmp_path, 0, reordered))


def test_random_split_respects_the_fractions(tmp_path):
    splits = _random_split(tmp_path, 3, {"train": 0.6, "valid": 0.3, "test": 0.1})
    shares = {name: np.mean(splits == name) for name in ("train", "valid", "test")}
    assert shares == pytest.approx({"train": 0.6, "valid": 0.3, "test": 0.1}, abs=0.05)


def test_random_split_with_a_zero_test_fraction(tmp_path):
    splits = _random_split(tmp_path, 0, {"train": 0.7, "valid": 0.3, "test": 0.0}, n=200)
    assert set(splits) == {"train", "valid"}


def test_cli_split_fractions_and_seed(capsys, tmp_path):
    rows = [["id", "label"]] + [[f"p{1 + i % 5}", "ab"[i % 5 % 2]] for i in range(300)]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = [*_classification_args(labels, fasta), "--split-fractions", "0.5,0.5,0"]
    splits = []
    for seed in (7, 7, 8):
        code, err = _cli(capsys, tmp_path, *args, "--split-seed", seed)
        assert code == 0, err
        splits.append(pd.read_csv(tmp_path / "out" / "table.tsv", sep="\t")["split"].tolist())
    assert splits[0] == splits[1] != splits[2]
    assert set(splits[0]) == {"train", "valid"}


# --- bad label tables, through the command line --------------------------------------------


def test_unknown_id(capsys, tmp_path):
    rows = [*CLASS_ROWS[:3], ["nope", "cytoplasm", "train"], *CLASS_ROWS[3:]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=f"{labels}:4")
    assert "'nope'" in err and str(fasta) in err


def test_unknown_id_after_blank_lines_names_the_right_line(capsys, tmp_path):
    labels, fasta = tmp_path / "labels.tsv", _fasta(tmp_path)
    labels.write_text("id\tlabel\tsplit\np1\ta\ttrain\n\np2\ta\tvalid\nnope\ta\ttest\n")
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=f"{labels}:5")
    assert "'nope'" in err


def test_ids_without_a_fasta(capsys, tmp_path):
    labels = _table(tmp_path, CLASS_ROWS)
    err = _fails(
        capsys, tmp_path, "--kind", "sequence_classification", "--labels", labels, where=labels
    )
    assert "sequences:" in err


def test_missing_label(capsys, tmp_path):
    rows = [*CLASS_ROWS[:4], ["p4", " ", "valid"], *CLASS_ROWS[5:]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=f"{labels}:5")
    assert "missing label" in err


def test_short_row_is_named_with_its_field_count(capsys, tmp_path):
    rows = [*CLASS_ROWS[:2], ["p2"], *CLASS_ROWS[3:]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=f"{labels}:3")
    assert "this row has 1 fields but the first line has 3" in err


@pytest.mark.parametrize("value", ["high", "1,5", "nan", "inf"])
def test_non_numeric_regression_label(capsys, tmp_path, value):
    rows = [["id", "label", "split"], ["p1", "1.0", "train"], ["p2", value, "valid"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = ["--kind", "sequence_regression", "--labels", labels, "--sequences", fasta]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:3")
    assert f"label {value!r} is not a number" in err


@pytest.mark.parametrize("value", ["2", "-1", "0.5"])
def test_pair_label_not_zero_or_one(capsys, tmp_path, value):
    rows = [["id_a", "id_b", "label", "split"], ["p1", "p2", "1", "train"]]
    rows += [["p2", "p4", "0", "train"], ["p4", "p5", value, "valid"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = ["--kind", "pair_classification", "--labels", labels, "--sequences", fasta]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:4")
    assert f"pair label {value!r} is not 0 or 1" in err


def test_pair_label_not_a_number(capsys, tmp_path):
    rows = [["id_a", "id_b", "label", "split"], ["p1", "p2", "yes", "train"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = ["--kind", "pair_classification", "--labels", labels, "--sequences", fasta]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:2")
    assert "'yes'" in err


def test_pair_unknown_id_on_the_b_side(capsys, tmp_path):
    rows = [["id_a", "id_b", "label", "split"], ["p1", "p2", "1", "train"]]
    rows += [["p2", "ghost", "0", "valid"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = ["--kind", "pair_classification", "--labels", labels, "--sequences", fasta]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:3")
    assert "'ghost'" in err


@pytest.mark.parametrize("value", ["training", "dev", ""])
def test_bad_split_value(capsys, tmp_path, value):
    rows = [*CLASS_ROWS[:5], ["p5", "cytoplasm", value]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=f"{labels}:6")
    assert "train, valid" in err


def test_no_training_rows(capsys, tmp_path):
    rows = [["id", "label", "split"], ["p1", "a", "valid"], ["p2", "a", "test"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=labels)
    assert "no train rows" in err


def test_no_validation_rows(capsys, tmp_path):
    rows = [["id", "label", "split"], ["p1", "a", "train"], ["p2", "a", "test"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=labels)
    assert "no valid rows" in err


def test_random_split_without_training_rows(capsys, tmp_path):
    rows = [["id", "label"], ["p1", "a"], ["p2", "a"], ["p4", "a"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = [*_classification_args(labels, fasta), "--split-fractions", "0,0.5,0.5"]
    err = _fails(capsys, tmp_path, *args, where=labels)
    assert "no train rows" in err


@pytest.mark.parametrize("split", ["valid", "test"])
def test_class_never_seen_in_training(capsys, tmp_path, split):
    rows = [*CLASS_ROWS[:4], ["p4", "membrane", "valid"], ["p5", "nucleus", split]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=f"{labels}:6")
    assert f"class 'nucleus' in the {split} split never occurs in training" in err


def test_multilabel_class_never_seen_in_training(capsys, tmp_path):
    rows = [["id", "label", "split"], ["p1", "a;b", "train"], ["p3", "a", "train"]]
    rows += [["p2", "b;zz", "valid"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = [*_classification_args(labels, fasta), "--multilabel"]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:4")
    assert "'zz'" in err


def test_missing_required_column(capsys, tmp_path):
    rows = [["protein", "label", "split"], ["p1", "a", "train"], ["p2", "a", "valid"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=labels)
    assert "no column for id" in err
    assert "protein, label, split" in err
    assert "columns:" in err


def test_missing_pair_column(capsys, tmp_path):
    rows = [["id_a", "partner", "label"], ["p1", "p2", "1"]]
    labels, fasta = _table(tmp_path, rows), _fasta(tmp_path)
    args = ["--kind", "pair_classification", "--labels", labels, "--sequences", fasta]
    err = _fails(capsys, tmp_path, *args, where=labels)
    assert "no column for id_b" in err and "id_a, partner, label" in err
    assert "columns:" in err


def test_mapped_column_not_in_the_table(capsys, tmp_path):
    # A typo in `columns:` must not silently fall back to a random split.
    labels, fasta = _table(tmp_path, CLASS_ROWS), _fasta(tmp_path)
    args = [*_classification_args(labels, fasta), "--column", "split=fold"]
    err = _fails(capsys, tmp_path, *args, where=labels)
    assert "no column for split" in err and "columns:" in err


def test_unsupported_extension(capsys, tmp_path):
    labels, fasta = _table(tmp_path, CLASS_ROWS, name="labels.xlsx"), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=labels)
    assert ".tsv" in err and ".csv" in err


def test_missing_label_file(capsys, tmp_path):
    labels, fasta = tmp_path / "absent.tsv", _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=labels)
    assert "not found" in err


def test_empty_label_file(capsys, tmp_path):
    labels, fasta = tmp_path / "labels.tsv", _fasta(tmp_path)
    labels.write_text("")
    _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=labels)


def test_header_only_label_file(capsys, tmp_path):
    labels, fasta = _table(tmp_path, CLASS_ROWS[:1]), _fasta(tmp_path)
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=labels)
    assert "no rows" in err


def test_bad_inline_sequence_names_the_table_line(capsys, tmp_path):
    rows = [["sequence", "label", "split"], ["MKTA", "a", "train"], ["MK1A", "a", "valid"]]
    labels = _table(tmp_path, rows)
    args = ["--kind", "sequence_classification", "--labels", labels]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:3")
    assert "'1' at residue 3" in err


def test_empty_inline_sequence(capsys, tmp_path):
    rows = [["sequence", "label", "split"], ["MKTA", "a", "train"], ["*", "a", "valid"]]
    labels = _table(tmp_path, rows)
    args = ["--kind", "sequence_classification", "--labels", labels]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:3")
    assert "empty sequence" in err


def test_bad_fasta_fails_the_ingest(capsys, tmp_path):
    labels, fasta = _table(tmp_path, CLASS_ROWS), _fasta(tmp_path, {"p1": "MK", "p2": "M-K"})
    err = _fails(capsys, tmp_path, *_classification_args(labels, fasta), where=f"{fasta}:4")
    assert "'-' at residue 2" in err


def test_unknown_kind_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown task kind 'protein_folding'"):
        _ingest("protein_folding", _table(tmp_path, CLASS_ROWS), _fasta(tmp_path))


# --- degenerate labels and contradictions (refused at ingest) ------------------------------

SPLIT3 = ("train", "train", "valid")


@pytest.mark.parametrize(
    ("kind", "rows", "extra", "found"),
    [
        (
            "sequence_classification",
            [["p1", "a"], ["p2", "a"], ["p4", "b"]],
            [],
            "rows have the class(es) 'a'",
        ),
        ("sequence_regression", [["p1", "2"], ["p2", "2.0"], ["p4", "1"]], [], "labels are 2"),
        (
            "sequence_classification",
            [["p1", "a;b"], ["p2", "b;a"], ["p4", "a"]],
            ["--multilabel"],
            "rows have the class(es) 'a', 'b'",
        ),
    ],
)
def test_a_training_split_of_one_class_is_refused(capsys, tmp_path, kind, rows, extra, found):
    table = [["id", "label", "split"], *[[*r, s] for r, s in zip(rows, SPLIT3, strict=True)]]
    labels = _table(tmp_path, table)
    args = ["--kind", kind, "--labels", labels, "--sequences", _fasta(tmp_path), *extra]
    err = _fails(capsys, tmp_path, *args, where=labels)
    assert f"the training split is degenerate: all its 2 {found}" in err
    assert "a split column, other ingest.split_fractions or another ingest.split_seed" in err


def test_a_pair_training_split_of_one_label_is_refused(capsys, tmp_path):
    rows = [["id_a", "id_b", "label", "split"], ["p1", "p2", "1", "train"]]
    rows += [["p2", "p4", "1", "train"], ["p4", "p5", "0", "valid"]]
    labels = _table(tmp_path, rows)
    args = ["--kind", "pair_classification", "--labels", labels, "--sequences", _fasta(tmp_path)]
    assert "training split is degenerate" in _fails(capsys, tmp_path, *args, where=labels)


def test_a_valid_split_of_one_class_is_accepted_with_a_warning(caplog, tmp_path):
    rows = [["id", "label", "split"], ["p1", "a", "train"], ["p2", "b", "train"]]
    rows += [["p4", "a", "valid"], ["p5", "a", "valid"]]
    table, _ = _ingest("sequence_classification", _table(tmp_path, rows), _fasta(tmp_path))
    assert len(table) == 4
    assert "the valid split is degenerate: all its 2 rows have the class(es) 'a'" in caplog.text
    assert "early stopping follows the loss" in caplog.text


def test_a_multilabel_row_without_a_class_names_its_line(capsys, tmp_path):
    rows = [["id", "label", "split"], ["p1", "a", "train"], ["p2", " ; ", "train"]]
    labels = _table(tmp_path, rows)
    args = [*_classification_args(labels, _fasta(tmp_path)), "--multilabel"]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:3")
    assert "label ' ; ' names no class" in err


@pytest.mark.parametrize(
    ("kind", "rows", "message"),
    [
        (
            "sequence_classification",
            [["p1", "a"], ["p2", "b"], ["p1", "b"]],
            "'p1' is labelled 'a' at line 2 and 'b' here: one label per id",
        ),
        (
            "sequence_regression",
            [["p1", "1.5"], ["p2", "2"], ["p1", "1.25"]],
            "'p1' is labelled '1.5' at line 2 and '1.25' here",
        ),
    ],
)
def test_an_id_labelled_twice_differently_is_refused(capsys, tmp_path, kind, rows, message):
    labels = _table(tmp_path, [["id", "label"], *rows])
    args = ["--kind", kind, "--labels", labels, "--sequences", _fasta(tmp_path)]
    assert message in _fails(capsys, tmp_path, *args, where=f"{labels}:4")


def test_a_pair_labelled_twice_differently_in_either_order_is_refused(capsys, tmp_path):
    rows = [["id_a", "id_b", "label"], ["p1", "p2", "1"], ["p2", "p4", "0"], ["p2", "p1", "0"]]
    labels = _table(tmp_path, rows)
    args = ["--kind", "pair_classification", "--labels", labels, "--sequences", _fasta(tmp_path)]
    err = _fails(capsys, tmp_path, *args, where=f"{labels}:4")
    assert "'p1 + p2' is labelled '1' at line 2 and '0' here: one label per pair" in err


def test_a_column_named_twice_is_refused(capsys, tmp_path):
    labels = _table(tmp_path, [["id", "label", "label"], ["p1", "a", "b"], ["p2", "b", "a"]])
    err = _fails(
        capsys, tmp_path, *_classification_args(labels, _fasta(tmp_path)), where=f"{labels}:1"
    )
    assert "column 'label' is named twice (fields 2 and 3); rename one" in err


def test_split_fractions_that_do_not_sum_to_one_are_refused(capsys, tmp_path):
    rows = [["id", "label"]] + [[f"p{1 + i % 5}", "ab"[i % 5 % 2]] for i in range(50)]
    labels = _table(tmp_path, rows)
    args = [*_classification_args(labels, _fasta(tmp_path)), "--split-fractions", "0.8,0.2,0.2"]
    err = _fails(capsys, tmp_path, *args, where=labels)
    assert "ingest.split_fractions (train 0.8, valid 0.2, test 0.2) sum to 1.2, not 1" in err


# --- files that are not what their name says ----------------------------------------------


def test_a_trailing_tab_is_named_not_blamed_on_the_ids(capsys, tmp_path):
    labels = tmp_path / "labels.tsv"
    labels.write_text("id\tlabel\tsplit\np1\ta\ttrain\t\np2\tb\ttrain\np4\ta\tvalid\n")
    err = _fails(
        capsys, tmp_path, *_classification_args(labels, _fasta(tmp_path)), where=f"{labels}:2"
    )
    assert "this row has 4 fields but the first line has 3 (a trailing separator?)" in err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("labels.csv", "id;label\np1;a\np2;b\n", "the file looks semicolon-separated"),
        ("labels.tsv", "id,label\np1,a\np2,b\n", "comma-separated: name it .csv"),
        ("labels.csv", "id\tlabel\np1\ta\n", "tab-separated: name it .tsv"),
    ],
)
def test_a_table_with_another_separator_says_which(capsys, tmp_path, name, text, message):
    labels = tmp_path / name
    labels.write_text(text)
    err = _fails(
        capsys, tmp_path, *_classification_args(labels, _fasta(tmp_path)), where=f"{labels}:1"
    )
    assert message in err


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00", "is a zip archive (an Excel .xlsx workbook?)", None),
        ("id\tlabel\n".encode("utf-16"), "is UTF-16 text (a 'Unicode text' export)", None),
        (b"id\tlabel\tsplit\np1\tcaf\xe9\ttrain\n", "byte 0xe9 is not UTF-8 (latin-1", 2),
    ],
)
def test_a_table_that_is_not_utf8_text_says_what_it_is(capsys, tmp_path, data, message, line):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(data)
    where = f"{labels}:{line}" if line else labels
    err = _fails(capsys, tmp_path, *_classification_args(labels, _fasta(tmp_path)), where=where)
    assert message in err


def test_gzipped_and_byte_order_marked_inputs_are_read(tmp_path):
    import gzip

    text = "".join("\t".join(row) + "\n" for row in CLASS_ROWS)
    labels = tmp_path / "labels.tsv.gz"
    labels.write_bytes(gzip.compress(("\ufeff" + text).encode()))
    fasta = tmp_path / "proteins.fasta.gz"
    fasta.write_bytes(gzip.compress(_fasta(tmp_path).read_bytes()))
    table, _ = _ingest("sequence_classification", labels, fasta)
    plain, _ = _ingest("sequence_classification", _table(tmp_path, CLASS_ROWS), _fasta(tmp_path))
    pd.testing.assert_frame_equal(table, plain)


def test_the_real_yeast_pairs_hold_pairs_labelled_both_ways(shared_data, capsys, tmp_path):
    """D-SCRIPT's yeast file lists a few pairs as interacting and, reversed, as not: ingest
    names the first such pair instead of training on both labels."""
    pairs = shared_data / "ppi_yeast" / "pairs.tsv"
    args = ["--kind", "pair_classification", "--labels", pairs, "--no-header"]
    args += ["--sequences", shared_data / "ppi_yeast" / "sequences.fasta"]
    code, err = _cli(capsys, tmp_path, *args)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"copra: error: {pairs}:" in err and "one label per pair; keep the right row" in err
    assert list((tmp_path / "out").iterdir()) == []

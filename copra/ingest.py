"""Ingest: a task's FASTA and label table into one normalized table and a sequence table.

The normalized table names sequences by content hash, so later steps never depend on ids.
"""

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from copra.atomic import write_tables
from copra.errors import InputError
from copra.label_checks import check_contradictions, check_informative_splits
from copra.sequences import clean_sequence, read_fasta, sequence_hash
from copra.settings import IngestSettings, TaskSettings
from copra.tables import PAIR_KIND
from copra.text_files import read_text

SPLITS = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "test": "test"}
KINDS = ("sequence_classification", "sequence_regression", PAIR_KIND)


SEPARATORS = {".tsv": "\t", ".tab": "\t", ".txt": "\t", ".csv": ","}
SEPARATOR_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon"}
LOOKS_SEPARATED = {
    "\t": "tab-separated: name it .tsv",
    ",": "comma-separated: name it .csv",
    ";": "semicolon-separated (a European CSV export): save it with commas as .csv, or with "
    "tabs as .tsv",
}


def read_label_table(path, header: bool = True) -> pd.DataFrame:
    """A TSV or CSV (by extension, optionally gzipped) as strings, with the file's line number of
    every row; its layout checked first (`check_layout`)."""
    path = Path(path)
    suffix = Path(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
    separator = SEPARATORS.get(suffix.lower())
    if separator is None:
        raise InputError(
            "label table must end in .tsv, .tab, .txt (tab-separated) or .csv (optionally .gz)",
            path=path,
        )
    text = read_text(path, "label table")
    check_layout(text, separator, header, path)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=separator,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"cannot be read as a table: {error}", path=path) from None
    frame["_line"] = np.arange(len(frame)) + (2 if header else 1)
    # Blank lines are read as rows (to keep line numbers right); they are no rows of the task.
    blank = (frame.drop(columns="_line").apply(lambda c: c.str.strip()) == "").all(axis=1)
    return frame[~blank].reset_index(drop=True)


def check_layout(text: str, separator: str, header: bool, path) -> None:
    """Refuse a table whose rows do not line up with its first line: another separator than its
    extension says, a row with more or fewer fields (a trailing tab), a column named twice."""
    reader = csv.reader(io.StringIO(text), delimiter=separator)
    first = next(reader, None)
    if first is None:
        return
    if len(first) == 1:
        for other, advice in LOOKS_SEPARATED.items():
            if other != separator and other in first[0]:
                raise InputError(
                    f"the first line holds no {SEPARATOR_NAMES[separator]} but "
                    f"{SEPARATOR_NAMES[other]}s: the file looks {advice}",
                    path=path,
                    line=1,
                )
    if header:
        names = [name.strip() for name in first]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            where = [i + 1 for i, name in enumerate(names) if name == twice[0]]
            raise InputError(
                f"column {twice[0]!r} is named twice (fields {' and '.join(map(str, where))}); "
                "rename one",
                path=path,
                line=1,
            )
    for row in reader:
        if row and any(field.strip() for field in row) and len(row) != len(first):
            trailing = " (a trailing separator?)" if len(row) > len(first) else ""
            raise InputError(
                f"this row has {len(row)} fields but the first line has {len(first)}{trailing}; "
                "every row needs one field per column",
                path=path,
                line=reader.line_num,
            )


def _canonical_columns(kind: str, frame: pd.DataFrame, columns: dict, path) -> dict[str, object]:
    """Map canonical names (id/sequence, id_a, id_b, label, split) to the table's columns."""
    own = [c for c in frame.columns if c != "_line"]
    keys = ["id_a", "id_b"] if kind == PAIR_KIND else ["id", "sequence"]
    wanted = {name: columns.get(name, name) for name in [*keys, "label", "split"]}
    if not all(isinstance(c, str) for c in own):  # no header: canonical order by position
        order = (
            ["id_a", "id_b", "label", "split"] if kind == PAIR_KIND else ["id", "label", "split"]
        )
        wanted = {
            name: columns.get(name, order.index(name) if name in order else None) for name in wanted
        }
    if "sequence" in columns and "id" not in columns:  # a mapped sequence column wins over ids
        wanted["id"] = None
    found = {name: col for name, col in wanted.items() if col in own}
    needed = ["id_a", "id_b", "label"] if kind == PAIR_KIND else ["label"]
    if kind != PAIR_KIND and "id" not in found and "sequence" not in found:
        needed.append("id")
    needed += [name for name in columns if name in wanted and name not in needed]  # mapped
    missing = [name for name in needed if name not in found]
    if missing:
        raise InputError(
            f"no column for {', '.join(missing)} (the table has: {', '.join(map(str, own))}); "
            "rename the columns or map them in the task's `columns:` setting",
            path=path,
        )
    return found


def _parse_labels(kind: str, values: pd.Series, lines: pd.Series, path, multilabel, separator):
    """Labels as floats (regression, pairs) or class strings; error on the first bad row."""
    for value, line in zip(values, lines, strict=True):
        if not value.strip():
            raise InputError("missing label", path=path, line=line)
    if kind == "sequence_classification":
        if multilabel:
            sets = [{p.strip() for p in v.split(separator)} - {""} for v in values]
            for value, classes, line in zip(values, sets, lines, strict=True):
                if not classes:
                    raise InputError(
                        f"label {value!r} names no class (classes are separated by "
                        f"{separator!r}); give each row at least one",
                        path=path,
                        line=line,
                    )
            return pd.Series([separator.join(sorted(c)) for c in sets], index=values.index)
        return values.str.strip()
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | ~np.isfinite(numbers)
    if bad.any():
        first = bad.to_numpy().nonzero()[0][0]
        raise InputError(
            f"label {values.iloc[first]!r} is not a number", path=path, line=lines.iloc[first]
        )
    if kind != PAIR_KIND:
        return numbers
    if not numbers.isin([0, 1]).all():
        first = (~numbers.isin([0, 1])).to_numpy().nonzero()[0][0]
        raise InputError(
            f"pair label {values.iloc[first]!r} is not 0 or 1", path=path, line=lines.iloc[first]
        )
    return numbers.astype(int)


def _parse_splits(frame, column, lines, path, fractions: dict, seed: int) -> np.ndarray:
    if column is None:
        rng = np.random.default_rng(seed)
        names = ["train", "valid", "test"]  # a fixed order: the config's order must not matter
        probabilities = np.array([fractions[n] for n in names], dtype=float)
        if abs(probabilities.sum() - 1) > 1e-6:
            given = ", ".join(f"{n} {fractions[n]:g}" for n in names)
            raise InputError(
                f"ingest.split_fractions ({given}) sum to {probabilities.sum():g}, not 1; "
                "the random split needs fractions that add up to 1",
                path=path,
            )
        return rng.choice(names, size=len(frame), p=probabilities / probabilities.sum())
    values = frame[column].str.strip().str.lower()
    for value, line in zip(values, lines, strict=True):
        if value not in SPLITS:
            raise InputError(
                f"split {value!r} is not train, valid (or validation/val) or test",
                path=path,
                line=line,
            )
    return values.map(SPLITS).to_numpy()


def _check_classes(table: pd.DataFrame, path, separator: str, multilabel: bool) -> None:
    """Every class named outside the training split must occur in training."""
    split_labels = (
        table["label"].str.split(separator) if multilabel else table["label"].map(lambda v: [v])
    )
    seen = {c for labels in split_labels[table["split"] == "train"] for c in labels}
    for labels, split, line in zip(split_labels, table["split"], table["_line"], strict=True):
        unseen = [c for c in labels if c not in seen]
        if unseen:
            raise InputError(
                f"class {unseen[0]!r} in the {split} split never occurs in training "
                f"(training classes: {', '.join(sorted(seen))})",
                path=path,
                line=line,
            )


class SequenceResolver:
    """Turns ids (via the FASTA) or inline sequences into content hashes, collecting sequences."""

    def __init__(self, fasta_path):
        self.fasta_path = fasta_path
        self.by_id: dict[str, str] = {}
        if fasta_path is not None:
            for record in read_fasta(fasta_path):
                self.by_id[record.id] = record.sequence
                self.by_id.setdefault(record.description, record.sequence)
        self.sequences: dict[str, str] = {}

    def _add(self, sequence: str) -> str:
        key = sequence_hash(sequence)
        self.sequences[key] = sequence
        return key

    def by_name(self, ids: pd.Series, lines: pd.Series, path) -> list[str]:
        if self.fasta_path is None:
            raise InputError(
                "the table names sequences by id but the task has no `sequences:` FASTA", path=path
            )
        hashes = []
        for name, line in zip(ids, lines, strict=True):
            sequence = self.by_id.get(name.strip())
            if sequence is None:
                raise InputError(
                    f"id {name!r} is not in {self.fasta_path} ({len(self.by_id)} records)",
                    path=path,
                    line=line,
                )
            hashes.append(self._add(sequence))
        return hashes

    def inline(self, sequences: pd.Series, lines: pd.Series, path) -> list[str]:
        return [
            self._add(clean_sequence(raw, path=path, line=line, record=f"row at line {line}"))
            for raw, line in zip(sequences, lines, strict=True)
        ]


def ingest_task(task: TaskSettings, settings: IngestSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, check and normalize one task; returns (table, sequence table)."""
    kind, labels, multilabel, label_separator = (
        task.kind,
        task.labels,
        task.multilabel,
        task.label_separator,
    )
    if kind not in KINDS:
        raise InputError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")
    if multilabel and kind != "sequence_classification":
        raise InputError(
            f"multilabel: true needs kind sequence_classification, not {kind}; its head would "
            "predict several classes for a task that has none",
            path=labels,
        )
    frame = read_label_table(labels, task.header)
    if frame.empty:
        raise InputError("label table has no rows", path=labels)
    found = _canonical_columns(kind, frame, task.columns or {}, labels)
    lines = frame["_line"]
    resolver = SequenceResolver(task.sequences)
    table = pd.DataFrame({"_line": lines})
    if kind == PAIR_KIND:
        for side in ("a", "b"):
            ids = frame[found[f"id_{side}"]]
            table[f"id_{side}"] = ids.str.strip()
            table[f"hash_{side}"] = resolver.by_name(ids, lines, labels)
    elif "id" in found:
        table["id"] = frame[found["id"]].str.strip()
        table["seq_hash"] = resolver.by_name(frame[found["id"]], lines, labels)
    else:
        table["seq_hash"] = resolver.inline(frame[found["sequence"]], lines, labels)
        table["id"] = table["seq_hash"]
    table["label"] = _parse_labels(
        kind, frame[found["label"]], lines, labels, multilabel, label_separator
    )
    check_contradictions(table, kind, labels)
    table["split"] = _parse_splits(
        frame, found.get("split"), lines, labels, settings.split_fractions, settings.split_seed
    )
    for split in ("train", "valid"):
        if not (table["split"] == split).any():
            raise InputError(
                f"the task has no {split} rows; give a split column with train/valid/test or "
                "leave it out for a random split",
                path=labels,
            )
    check_informative_splits(table, task, labels)
    if kind == "sequence_classification":
        _check_classes(table, labels, label_separator, multilabel)
    seq_table = pd.DataFrame(
        [(key, len(seq), seq) for key, seq in resolver.sequences.items()],
        columns=["seq_hash", "length", "sequence"],
    )
    keys = ["id_a", "id_b", "hash_a", "hash_b"] if kind == PAIR_KIND else ["id", "seq_hash"]
    return table[[*keys, "label", "split"]], seq_table


def run_ingest(task: TaskSettings, out_table, out_sequences, settings: IngestSettings) -> None:
    """Ingest one task as configured (a `tasks:` entry) and write both tables atomically."""
    table, seq_table = ingest_task(task, settings)
    write_tables({out_sequences: seq_table, out_table: table})

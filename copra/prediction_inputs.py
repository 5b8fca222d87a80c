"""What `copra predict` reads: proteins (a FASTA, or a table of inline sequences or FASTA ids),
pairs (a pair table of FASTA ids, or `all`), or complexes; read and checked as ingest reads the
inputs of training, and refused when they are not of the runs' task kind."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from copra.errors import InputError
from copra.ingest import SequenceResolver, read_label_table
from copra.sequences import read_fasta, sequence_hash
from copra.tables import COMPLEX_KIND, PAIR_KIND, hash_columns


@dataclass
class Inputs:
    """What to predict: rows of ids with sequence hashes, and the sequences by hash."""

    rows: pd.DataFrame  # id, seq_hash  |  id_a, id_b, hash_a, hash_b
    sequences: dict[str, str]
    pair: bool

    @property
    def keys(self) -> list[list[str]]:
        columns = hash_columns(PAIR_KIND if self.pair else None)
        return [self.rows[column].tolist() for column in columns]


def fasta_inputs(fasta) -> Inputs:
    """Every record of a FASTA, in file order."""
    records = read_fasta(fasta)
    hashes = [sequence_hash(r.sequence) for r in records]
    rows = pd.DataFrame({"id": [r.id for r in records], "seq_hash": hashes})
    sequences = {h: r.sequence for h, r in zip(hashes, records, strict=True)}
    return Inputs(rows, sequences, pair=False)


def table_inputs(table, fasta=None, header: bool = True) -> Inputs:
    """Proteins of a table: a `sequence` column (and an `id` one), or `id`s of FASTA records."""
    frame = read_label_table(table, header)
    if frame.empty:
        raise InputError("the table has no rows", path=table)
    own = [c for c in frame.columns if c != "_line"]
    resolver, lines = SequenceResolver(fasta), frame["_line"]
    if "sequence" in own:
        hashes = resolver.inline(frame["sequence"], lines, table)
        ids = frame["id"].str.strip().tolist() if "id" in own else hashes
    elif "id" in own:
        ids, hashes = frame["id"].str.strip().tolist(), resolver.by_name(frame["id"], lines, table)
    else:
        raise InputError(
            f"no column sequence or id (the table has: {', '.join(map(str, own))}); name the "
            "column of inline sequences `sequence`, or that of FASTA ids `id`",
            path=table,
        )
    return Inputs(pd.DataFrame({"id": ids, "seq_hash": hashes}), resolver.sequences, pair=False)


def pair_inputs(pairs, fasta, header: bool = True) -> Inputs:
    """Pairs of a table (`id_a`, `id_b`; without a header its first two columns) of FASTA ids."""
    if fasta is None:
        raise InputError("a pair table names proteins by id: give the FASTA (sequences:) too")
    frame = read_label_table(pairs, header)
    if frame.empty:
        raise InputError("the pair table has no rows", path=pairs)
    own = [c for c in frame.columns if c != "_line"]
    wanted = ["id_a", "id_b"] if header else own[:2]
    if len(own) < 2 or not set(wanted) <= set(own):
        raise InputError(
            f"no columns id_a and id_b (the table has: {', '.join(map(str, own))}); name them "
            "so, or give a table without a header whose first two columns are the pair's ids",
            path=pairs,
        )
    resolver, lines = SequenceResolver(fasta), frame["_line"]
    rows = pd.DataFrame()
    for side, column in zip("ab", wanted, strict=True):
        rows[f"id_{side}"] = frame[column].str.strip().tolist()
        rows[f"hash_{side}"] = resolver.by_name(frame[column], lines, pairs)
    return Inputs(rows, resolver.sequences, pair=True)


@dataclass(frozen=True)
class InputFiles:
    """What a prediction reads: a FASTA and/or a table of proteins, or a FASTA and pairs (a pair
    table, or `all`)."""

    sequences: str | Path | None = None
    table: str | Path | None = None
    pairs: str | Path | None = None
    header: bool = True
    complexes: str | Path | None = None  # complex tasks: pdb,protein_chains,rna_chains
    structures: str | Path | None = None  # ... and the folder of their structure files

    def files(self) -> list:
        given = (self.sequences, self.table, self.pairs, self.complexes)
        return [p for p in given if p not in (None, "all")]

    def read(self, kind: str) -> Inputs:
        """The inputs of a run of task kind `kind`, refused when they are of another kind."""
        if (kind == COMPLEX_KIND) != (self.complexes is not None):
            raise InputError(
                "the runs are of a complex task (complex_regression): give complexes (a table "
                "pdb,protein_chains,rna_chains) and their structures folder"
                if kind == COMPLEX_KIND
                else f"the runs are of a {kind} task: they score proteins, not complexes"
            )
        if kind == COMPLEX_KIND:
            return None
        if kind == PAIR_KIND:
            if self.pairs is None:
                raise InputError(
                    "the runs are of a pair task (pair_classification): give pairs, a pair "
                    "table (id_a, id_b) or `all` for every pair of the FASTA"
                )
            if self.table is not None:
                raise InputError("a pair task reads a FASTA and pairs, not a sequence table")
            return pair_inputs(self.pairs, self.sequences, self.header)
        if self.pairs is not None:
            raise InputError(
                f"the runs are of a {kind} task: they score single proteins, not pairs; "
                "leave out pairs (or predict with the runs of a pair task)"
            )
        if self.table is not None:
            return table_inputs(self.table, self.sequences, self.header)
        if self.sequences is None:
            raise InputError("give the proteins: a FASTA (sequences:) or a table (table:)")
        return fasta_inputs(self.sequences)

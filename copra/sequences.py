"""Protein sequences: FASTA reading through biopython, alphabet checks and content hashes.

Every sequence that enters the pipeline passes `clean_sequence`, so errors name the file and line.
"""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from Bio import SeqIO

from copra.atomic import atomic_path
from copra.errors import InputError
from copra.text_files import read_text

STANDARD = "ACDEFGHIKLMNPQRSTVWY"
# fair-esm's alphabet has its own tokens for these; they are kept as they are.
NONSTANDARD = "XBUZO"
ALPHABET = frozenset(STANDARD + NONSTANDARD)


@dataclass(frozen=True)
class FastaRecord:
    id: str
    description: str
    sequence: str
    line: int


def sequence_hash(sequence: str) -> str:
    """Content hash of a cleaned sequence: the cache and table key (128 bits of sha256)."""
    return hashlib.sha256(sequence.encode()).hexdigest()[:32]


def clean_sequence(raw: str, *, path, line: int, record: str, residue_line=None) -> str:
    """Upper-case `raw`, drop a terminal stop `*`, and check it is a non-empty protein sequence.

    `residue_line(position)`, when given, turns a residue position into the file's line number.
    """
    sequence = "".join(raw.split()).upper()
    if sequence.endswith("*"):
        sequence = sequence[:-1]
    if not sequence:
        raise InputError(f"record '{record}' has an empty sequence", path=path, line=line)
    bad = [(i, c) for i, c in enumerate(sequence) if c not in ALPHABET]
    if bad:
        position, char = bad[0]
        raise InputError(
            f"record '{record}' has {char!r} at residue {position + 1}, outside the amino-acid "
            f"alphabet ({len(bad)} such residue(s); allowed: {STANDARD} and {NONSTANDARD}, "
            "which fair-esm keeps as its own tokens). Remove or replace them, e.g. with X.",
            path=path,
            line=residue_line(position) if residue_line else line,
        )
    return sequence


def _residue_locator(text_lines: list[str], header: int):
    """A function from a residue position of the record at `header` to its line number."""

    def locate(position: int) -> int:
        seen = 0
        for number in range(header + 1, len(text_lines) + 1):
            seen += len("".join(text_lines[number - 1].split()))
            if seen > position:
                return number
        return header

    return locate


def _check_start(text_lines: list[str], path: Path) -> int:
    """The line number of the first header; only blank lines may stand before it."""
    for number, text in enumerate(text_lines, 1):
        if text.strip():
            if not text.startswith(">"):
                raise InputError(
                    "text before the first '>' header line; a FASTA file starts with '>id'",
                    path=path,
                    line=number,
                )
            return number
    raise InputError("no FASTA records (a record starts with a '>' header line)", path=path)


def read_fasta(path) -> list[FastaRecord]:
    """Read and check a FASTA file (gzipped or not); ids are unique (a repeated id must repeat
    its sequence)."""
    path = Path(path)
    text = read_text(path, "FASTA file")
    # Lines as biopython reads them: universal newlines, split at line breaks only (not at \f).
    text_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = _check_start(text_lines, path)
    lines = [number for number, text in enumerate(text_lines, 1) if text.startswith(">")]
    try:
        # biopython's parser wants '>' on its first line: hand it the text from the first header.
        parsed = list(SeqIO.parse(io.StringIO("\n".join(text_lines[start - 1 :])), "fasta"))
    except ValueError as error:
        first = str(error).splitlines()[0]
        raise InputError(f"not a valid FASTA file: {first}", path=path) from None
    if not parsed:
        raise InputError("no FASTA records (a record starts with a '>' header line)", path=path)
    records: dict[str, FastaRecord] = {}
    for line, entry in zip(lines, parsed, strict=True):
        if not entry.id:
            raise InputError("header line without an id", path=path, line=line)
        locate = _residue_locator(text_lines, line)
        sequence = clean_sequence(
            str(entry.seq), path=path, line=line, record=entry.id, residue_line=locate
        )
        known = records.get(entry.id)
        if known and known.sequence != sequence:
            raise InputError(
                f"id '{entry.id}' appears again with a different sequence (first at line "
                f"{known.line}); ids must be unique",
                path=path,
                line=line,
            )
        records.setdefault(entry.id, FastaRecord(entry.id, entry.description, sequence, line))
    return list(records.values())


def write_fasta(path, records) -> None:
    """(name, sequence) records as FASTA, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))

"""Ingest of `complex_regression` tasks: a label table of complexes and their structure files.

Each complex becomes a patch of tokens (protein residues and nucleotides nearest its interface
centre) with coordinates; protein chain sequences go to the sequence table so that they join the
embedding cache like any other sequence. Mutations (`A:Y23F`) are checked against the structure.
"""

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from copra.atomic import write_tables
from copra.errors import InputError
from copra.ingest import SPLITS, read_label_table
from copra.provenance import write_manifest
from copra.sequences import sequence_hash, write_fasta
from copra.settings import ComplexSettings, TaskSettings
from copra.structures import chain_fasta, crop_patch, interface, read_structure, resolve_chains
from copra.tables import COMPLEX_KIND

log = logging.getLogger(__name__)
KIND = COMPLEX_KIND
SUFFIXES = (".pdb", ".cif", ".ent")
TABLE_COLUMNS = [
    "id",
    "file",
    "protein_chains",
    "rna_chains",
    "label",
    "split",
    "fold",
    "tokens",
    "interface",
    "gaps",
]
MUTATION_COLUMNS = [
    "variant",
    "id",
    "mutation",
    "chain",
    "kind",
    "position",
    "wild",
    "mutant",
    "ddg",
    "line",
]
MUTATION = re.compile(
    r"^(?P<chain>[^:\s]+):(?P<wild>[A-Z])(?P<number>-?\d+[A-Za-z]?)(?P<mutant>[A-Z])$"
)


@dataclass
class IngestedComplexes:
    """The tables ingest writes for one complex task."""

    table: pd.DataFrame  # one row per complex
    chains: pd.DataFrame  # one row per named chain
    patches: pd.DataFrame  # one row per token
    sequences: pd.DataFrame  # protein chain sequences (wild type and mutants) for the embedder
    mutations: pd.DataFrame  # one row per mutation of a variant
    skipped: pd.DataFrame  # complexes left out under on_error: skip
    fasta: list[tuple[str, str]]


def find_structure(folder, name: str) -> Path:
    """`<name>.pdb`, `.cif` or `.ent` (optionally .gz; the name in any case) in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("structures folder not found", path=folder)
    for stem in dict.fromkeys([name, name.upper(), name.lower()]):
        for suffix in SUFFIXES:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix}.gz"):
                if candidate.is_file():
                    return candidate
    raise InputError(
        f"no structure file for {name!r} ({name}.pdb, .cif or .ent, optionally .gz)", path=folder
    )


def _columns(frame: pd.DataFrame, columns: dict, path, labelled: bool = True) -> dict[str, str]:
    own = [c for c in frame.columns if c != "_line"]
    wanted = {n: columns.get(n, n) for n in ("pdb", "protein_chains", "rna_chains", "label")}
    wanted["split"] = columns.get("split", "split")
    if not all(isinstance(c, str) for c in own):  # no header: canonical order by position
        order = ["pdb", "protein_chains", "rna_chains", "label", "split"]
        wanted = {name: columns.get(name, order.index(name)) for name in order}
    needed = ("pdb", "protein_chains", "rna_chains", *(["label"] if labelled else []))
    missing = [n for n in needed if wanted[n] not in own]
    if missing:
        raise InputError(
            f"no column for {', '.join(missing)} (the table has: {', '.join(map(str, own))}); "
            "rename the columns or map them in the task's `columns:` setting "
            "(e.g. columns: {label: dG_kcal_mol})",
            path=path,
        )
    return {name: col for name, col in wanted.items() if col in own}


def _check_unique(ids: pd.Series, lines: pd.Series, path) -> None:
    first: dict[str, int] = {}
    for name, line in zip(ids, lines, strict=True):
        if name in first:
            raise InputError(
                f"complex {name!r} is listed twice (lines {first[name]} and {line}); "
                "one row per complex",
                path=path,
                line=line,
            )
        first[name] = line


def _label(value: str, path, line) -> float:
    number = pd.to_numeric(value.strip(), errors="coerce")
    if pd.isna(number) or not np.isfinite(number):
        raise InputError(f"label {value!r} is not a number", path=path, line=line)
    return float(number)


def _one_complex(name, row, found, structures, settings, path):
    """(table row, chain rows, patch rows, fasta records, structure) of one complex."""
    line = row["_line"]
    structure = read_structure(find_structure(structures, name))
    proteins = resolve_chains(structure, row[found["protein_chains"]])
    rnas = resolve_chains(structure, row[found["rna_chains"]])
    contacts = interface(structure, proteins, rnas, settings.cutoff)
    patch = crop_patch(structure, contacts, settings.patch_residues)
    chains, patches = [], []
    for cid in (*proteins, *rnas):
        chain = structure.chains[cid]
        chains.append(
            (name, cid, chain.kind, sequence_hash(chain.sequence), chain.sequence, len(chain.gaps))
        )
    position = {
        (cid, rid): (i, structure.chains[cid])
        for cid in (*proteins, *rnas)
        for i, rid in enumerate(structure.chains[cid].residue_ids)
    }
    for cid, rid in patch:
        i, chain = position[(cid, rid)]
        patches.append((name, cid, chain.kind, rid, i, chain.sequence[i], *chain.coords[i]))
    record = (
        name,
        structure.path.name,
        ",".join(proteins),
        ",".join(rnas),
        _label(row[found["label"]], path, line) if "label" in found else float("nan"),
        len(patch),
        len(contacts.residues),
        sum(len(structure.chains[c].gaps) for c in (*proteins, *rnas)),
        line,
        row[found["split"]].strip().lower() if "split" in found else "",
    )
    return record, chains, patches, chain_fasta(structure, [*proteins, *rnas]), structure


def assign_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Balanced random folds 0..folds-1 (sizes differ by at most one)."""
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=int)
    fold[order] = np.arange(n) % folds
    return fold


def parse_mutation(text: str, where) -> list[tuple[str, str, str, str]]:
    """(chain, wild type, residue number, mutant) of each mutation in 'A:Y23F,B:G5A'."""
    parts = [p.strip() for p in re.split(r"[,;]", str(text)) if p.strip()]
    if not parts:
        raise InputError("empty mutation", **where)
    out = []
    for part in parts:
        match = MUTATION.match(part)
        if not match:
            raise InputError(
                f"mutation {part!r} is not like A:Y23F (chain, wild type, residue number with "
                "optional insertion code, mutant)",
                **where,
            )
        out.append(tuple(match.group("chain", "wild", "number", "mutant")))
    return out


def read_mutations(path, complexes: pd.DataFrame, chains: pd.DataFrame, parsed: dict, skipped=()):
    """One row per mutation of each variant, checked against its complex's structure (`parsed`:
    the structures ingest already read, by complex id).

    Variants of `skipped` complexes (left out under on_error: skip) are left out, logged.
    """
    frame = read_label_table(path)
    for column in ("pdb", "mutation"):
        if column not in frame.columns:
            raise InputError("the mutations table needs columns pdb, mutation[, ddg]", path=path)
    known = set(complexes["id"])
    rows = []
    for variant, row in enumerate(frame.to_dict("records")):
        where = {"path": path, "line": row["_line"]}
        name = row["pdb"].strip()
        if name in skipped:
            log.warning(
                "leaving out mutation %s (line %d): complex %s was skipped",
                row["mutation"].strip(),
                row["_line"],
                name,
            )
            continue
        if name not in known:
            raise InputError(f"complex {name!r} is not in the task's label table", **where)
        ddg = _label(row["ddg"], path, row["_line"]) if row.get("ddg", "").strip() else np.nan
        structure = parsed[name]
        named = chains[chains.id == name].set_index("chain")
        for chain_id, wild, number, mutant in parse_mutation(row["mutation"], where):
            if chain_id not in named.index:
                raise InputError(
                    f"chain {chain_id} of {row['mutation']!r} is not one of the complex's chains "
                    f"({', '.join(named.index)})",
                    **where,
                )
            chain = structure.chains[chain_id]
            if number not in chain.residue_ids:
                raise InputError(f"chain {chain_id} has no residue {number}", **where)
            index = chain.residue_ids.index(number)
            if chain.sequence[index] != wild:
                raise InputError(
                    f"residue {chain_id}:{number} is {chain.sequence[index]} "
                    f"({chain.residue_names[index]}), not {wild}",
                    **where,
                )
            alphabet = "ACGU" if chain.kind == "rna" else "ACDEFGHIKLMNPQRSTVWY"
            if mutant not in alphabet:
                raise InputError(f"mutant {mutant!r} is not one of {alphabet}", **where)
            rows.append(
                (
                    variant,
                    name,
                    row["mutation"].strip(),
                    chain_id,
                    chain.kind,
                    index,
                    wild,
                    mutant,
                    ddg,
                    row["_line"],
                )
            )
    return pd.DataFrame(rows, columns=MUTATION_COLUMNS)


def mutant_sequences(mutations: pd.DataFrame, chains: pd.DataFrame) -> dict[tuple[int, str], str]:
    """{(variant, chain): mutated sequence} of every chain a variant changes."""
    wild = {(r.id, r.chain): r.sequence for r in chains.itertuples()}
    out = {}
    for row in mutations.itertuples():
        sequence = out.get((row.variant, row.chain), wild[(row.id, row.chain)])
        out[(row.variant, row.chain)] = (
            sequence[: row.position] + row.mutant + sequence[row.position + 1 :]
        )
    return out


def _folds(table, given: bool, path, settings: ComplexSettings) -> None:
    """The table's own split (one fold), or K balanced random folds (split `cv`)."""
    if given:
        for value, line in zip(table["split"], table["line"], strict=True):
            if value not in SPLITS:
                raise InputError(
                    f"split {value!r} is not train, valid (or validation/val) or test",
                    path=path,
                    line=line,
                )
        table["split"] = table["split"].map(SPLITS)
        table["fold"] = 0
        return
    if len(table) < settings.folds:
        raise InputError(
            f"{len(table)} complexes cannot fill {settings.folds} folds; lower complex.folds",
            path=path,
        )
    table["split"] = "cv"
    table["fold"] = assign_folds(len(table), settings.folds, settings.fold_seed)


def ingest_complexes(
    labels,
    structures,
    *,
    columns=None,
    header=True,
    mutations=None,
    settings=None,
    to_predict=False,
) -> IngestedComplexes:
    """Read, check and normalize one complex task (`settings`: ComplexSettings); `to_predict`:
    complexes without labels (`pdb,protein_chains,rna_chains`), for a trained model to score."""
    settings = settings or ComplexSettings()
    frame = read_label_table(labels, header)
    if frame.empty:
        raise InputError("label table has no rows", path=labels)
    found = _columns(frame, columns or {}, labels, labelled=not to_predict)
    ids = frame[found["pdb"]].str.strip()
    _check_unique(ids, frame["_line"], labels)
    records, chains, patches, fasta, skipped, parsed = [], [], [], [], [], {}
    for name, row in zip(ids, frame.to_dict("records"), strict=True):
        try:
            record, own_chains, own_patches, own_fasta, parsed[name] = _one_complex(
                name, row, found, structures, settings, labels
            )
        except InputError as error:
            if settings.on_error != "skip":
                raise InputError(
                    f"complex {name} (line {row['_line']} of {labels}): {error}"
                ) from None
            log.warning("skipping complex %s (line %d): %s", name, row["_line"], error)
            skipped.append((name, row["_line"], str(error)))
            continue
        records.append(record)
        chains += own_chains
        patches += own_patches
        fasta += own_fasta
    if not records:
        raise InputError("every complex was skipped; see the messages above", path=labels)
    table = pd.DataFrame(records, columns=[*TABLE_COLUMNS[:5], *TABLE_COLUMNS[7:], "line", "split"])
    if to_predict:
        table["split"], table["fold"] = "predict", -1
    else:
        _folds(table, "split" in found, labels, settings)
    chain_table = pd.DataFrame(
        chains, columns=["id", "chain", "kind", "seq_hash", "sequence", "gaps"]
    )
    patch_table = pd.DataFrame(
        patches, columns=["id", "chain", "kind", "residue_id", "position", "letter", "x", "y", "z"]
    )
    mutation_table = pd.DataFrame(columns=MUTATION_COLUMNS)
    if mutations is not None:
        mutation_table = read_mutations(
            mutations, table, chain_table, parsed, {name for name, _, _ in skipped}
        )
    proteins = chain_table[chain_table.kind == "protein"]["sequence"].tolist()
    mutated = mutation_table[mutation_table.kind == "protein"]
    proteins += list(mutant_sequences(mutated, chain_table).values())
    unique = dict.fromkeys(proteins)
    sequences = pd.DataFrame(
        [(sequence_hash(s), len(s), s) for s in unique], columns=["seq_hash", "length", "sequence"]
    )
    skipped_table = pd.DataFrame(skipped, columns=["id", "line", "reason"])
    return IngestedComplexes(
        table[TABLE_COLUMNS],
        chain_table,
        patch_table,
        sequences,
        mutation_table,
        skipped_table,
        fasta,
    )


def run_ingest_complexes(
    task: TaskSettings, out_dir, settings: ComplexSettings
) -> IngestedComplexes:
    """Ingest one complex task as configured and write its tables into `out_dir`."""
    ingested = ingest_complexes(
        task.labels,
        task.structures,
        columns=task.columns,
        header=task.header,
        mutations=task.mutations,
        settings=settings,
    )
    out_dir = Path(out_dir)
    structures = [Path(task.structures) / name for name in ingested.table.file]
    write_manifest(
        out_dir / "manifest.json",
        inputs=[
            task.labels,
            *([task.mutations] if task.mutations else []),
            *structures,
        ],
        config={"task": asdict(task), "complex": asdict(settings)},
        complexes=len(ingested.table),
        skipped=ingested.skipped.to_dict("records"),
    )
    names = ("chains", "patches", "mutations", "skipped", "sequences", "table")
    write_tables({out_dir / f"{name}.tsv": getattr(ingested, name) for name in names})
    write_fasta(out_dir / "chains.fasta", ingested.fasta)
    log.info(
        "%d complexes ingested (%d skipped), %d tokens, %d protein sequences, %d mutations",
        len(ingested.table),
        len(ingested.skipped),
        len(ingested.patches),
        len(ingested.sequences),
        ingested.mutations.variant.nunique(),
    )
    return ingested

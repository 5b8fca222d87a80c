"""Structures: protein-RNA complexes (PDB or mmCIF) read into chains, interfaces and patches.

The structure half of ingest for `complex_regression` (CoPRA). Each chain is classified as
protein, rna, dna or other by its polymer residues; modified polymer residues count as their
parent, while waters, ions and ligands are left out and counted.
"""

import gzip
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from Bio.Data.PDBData import (
    nucleic_letters_3to1_extended,
    protein_letters_3to1,
    protein_letters_3to1_extended,
)
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.PDBExceptions import PDBConstructionException
from scipy.spatial import cKDTree

from copra.errors import InputError
from copra.sequences import clean_sequence

RNA = {"A": "A", "C": "C", "G": "G", "U": "U"}
DNA = {"DA": "A", "DC": "C", "DG": "G", "DT": "T", "DU": "U"}
# Beyond biopython's tables: fair-esm's own letters, and the commonest modified nucleotides.
PROTEIN_EXTRA = {"SEC": "U", "PYL": "O", "UNK": "X"}
NUCLEOTIDE_EXTRA = {
    "PSU": "U",
    "5MC": "C",
    "OMG": "G",
    "OMC": "C",
    "OMU": "U",
    "2MG": "G",
    "H2U": "U",
    "1MA": "A",
    "7MG": "G",
    "M2G": "G",
    "5MU": "U",
    "4SU": "U",
}
REPRESENTATIVE = {"protein": ("CA",), "rna": ("C4'", "P"), "dna": ("C4'", "P")}
BOND = {"protein": ("C", "N"), "rna": ("O3'", "P"), "dna": ("O3'", "P")}  # (this, next) atoms
MAX_BOND = 2.0  # Å: a longer C-N or O3'-P bond is a chain break
PARSE_ERRORS = (PDBConstructionException, ValueError, KeyError, IndexError, TypeError, OSError)


@dataclass(frozen=True, eq=False)
class Chain:
    """A chain's polymer residues in order; `atoms` are heavy atoms, `atom_residue` their owner."""

    id: str
    kind: str  # protein, rna, dna or other
    sequence: str
    residue_ids: tuple[str, ...]  # residue number plus insertion code: "52", "52A"
    residue_names: tuple[str, ...]
    coords: np.ndarray  # (residues, 3): CA for protein, C4' (else P) for nucleic acids
    atoms: np.ndarray  # (heavy atoms, 3)
    atom_residue: np.ndarray  # (heavy atoms,): index into residue_ids
    gaps: tuple[tuple[str, str], ...]  # (after residue id, before residue id)
    skipped: dict[str, int]  # hetero groups left out (waters, ions, ligands), by residue name
    modified: dict[str, int]  # modified polymer residues kept as their parent, by residue name
    coarse: bool  # every residue has a single heavy atom (a CA-only or P-only model)


@dataclass(frozen=True, eq=False)
class Structure:
    """The first model of a structure file."""

    path: Path
    name: str  # file name without its extensions, e.g. "1MMS"
    chains: dict[str, Chain]
    models: int


@dataclass(frozen=True)
class Interface:
    """Residues of the named chains in contact with the other side, in chain/sequence order."""

    protein_chains: tuple[str, ...]
    rna_chains: tuple[str, ...]
    residues: tuple[tuple[str, str], ...]  # (chain id, residue id)
    cutoff: float


def parse_chains(spec) -> list[str]:
    """Chain ids from "AB", "A,B" or "AA,BB"; a prime belongs to its chain ("AA'" = A, A')."""
    text = str(spec).strip()
    if re.search(r"[,\s]", text):
        names = re.split(r"\s*[,\s]\s*", text)
    else:
        names = re.findall(r"[^']'*", text)
    if not text or "" in names or "".join(names) != re.sub(r"[,\s]", "", text):
        raise InputError(f"chain list {spec!r} is not like 'AB', 'A,B' or 'AA,BB'")
    if len(set(names)) != len(names):
        raise InputError(f"chain list {spec!r} names a chain twice")
    return names


def _parse(path: Path, parser):
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt") as handle:
            return parser.get_structure(path.name, handle)
    except (*PARSE_ERRORS, UnicodeDecodeError, EOFError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        line = re.search(r"line (\d+)", message)
        raise InputError(
            f"cannot be read as {'mmCIF' if isinstance(parser, MMCIFParser) else 'PDB'}: {message}",
            path=path,
            line=int(line.group(1)) if line else None,
        ) from None


def _pick(residue):
    """A residue with one name: the most occupied of a point mutation's alternatives."""
    if residue.is_disordered() == 2:
        return max(
            residue.child_dict.values(), key=lambda r: np.mean([a.get_occupancy() or 0 for a in r])
        )
    return residue


def _polymer(residue) -> tuple[str, str] | None:
    """(kind, one-letter code) of a polymer residue, or None for a hetero group."""
    name = residue.get_resname().strip().upper()
    letter = protein_letters_3to1_extended.get(name) or PROTEIN_EXTRA.get(name)
    if letter:
        return "protein", letter
    if name in RNA:
        return "rna", RNA[name]
    if name in DNA:
        return "dna", DNA[name]
    letter = NUCLEOTIDE_EXTRA.get(name) or nucleic_letters_3to1_extended.get(name.ljust(3))
    if letter:
        return ("rna" if "O2'" in residue else "dna"), letter
    if residue.id[0] == " " and all(n in residue for n in ("N", "CA", "C")):
        return "protein", "X"
    if residue.id[0] == " " and "C4'" in residue:
        return ("rna" if "O2'" in residue else "dna"), "N"
    return None


def _bond(residue, following, kind) -> float | None:
    """Length of the backbone bond from `residue` to `following`; None if an atom is missing."""
    first, second = BOND.get(kind, (None, None))
    if first not in residue or second not in following:
        return None
    return float(np.linalg.norm(residue[first].coord - following[second].coord))


def _linked(residue, neighbour, kind, before: bool) -> bool:
    pair = (neighbour, residue) if before else (residue, neighbour)
    length = _bond(*pair, kind)
    return length is not None and length <= MAX_BOND


def _heavy(residue) -> list:
    # Iterating a residue gives one atom per name: biopython keeps the most occupied altloc.
    return [atom for atom in residue if atom.element not in ("H", "D")]


def _chain(chain) -> Chain:
    residues = [_pick(r) for r in chain]
    calls = [_polymer(r) for r in residues]
    kept, skipped, modified = [], Counter(), Counter()
    for i, (residue, call) in enumerate(zip(residues, calls, strict=True)):
        name = residue.get_resname().strip()
        if call and residue.id[0] != " ":  # a HETATM polymer residue must be bonded in the chain
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(residues) and calls[j]]
            if not any(_linked(residue, residues[j], call[0], j < i) for j in near):
                call = None
        if call is None or not _heavy(residue):
            skipped[name] += 1
            continue
        if name not in RNA and name not in DNA and name not in protein_letters_3to1:
            modified[name] += 1
        kept.append((residue, *call))
    kinds = Counter(kind for _, kind, _ in kept)
    kind = max(("protein", "rna", "dna"), key=lambda k: kinds[k]) if kept else "other"
    ids = tuple(f"{r.id[1]}{r.id[2].strip()}" for r, _, _ in kept)
    gaps = []
    for i in range(len(kept) - 1):
        (residue, own, _), (following, other, _) = kept[i], kept[i + 1]
        length = _bond(residue, following, own) if own == other else None
        # The backbone bond decides (renumbered or engineered loops stay bonded); the numbering
        # decides only where a bond atom is missing.
        jump = following.id[1] - residue.id[1] not in (0, 1)
        if (length is None and jump) or (length is not None and length > MAX_BOND):
            gaps.append((ids[i], ids[i + 1]))
    coords, atoms, owner = [], [], []
    for index, (residue, own, _) in enumerate(kept):
        heavy = _heavy(residue)
        atoms += [a.coord for a in heavy]
        owner += [index] * len(heavy)
        centre = next((residue[n].coord for n in REPRESENTATIVE.get(own, ()) if n in residue), None)
        coords.append(np.mean([a.coord for a in heavy], axis=0) if centre is None else centre)
    return Chain(
        id=chain.id,
        kind=kind,
        sequence="".join(letter for _, _, letter in kept),
        residue_ids=ids,
        residue_names=tuple(r.get_resname().strip() for r, _, _ in kept),
        coords=np.array(coords, dtype=np.float64).reshape(-1, 3),
        atoms=np.array(atoms, dtype=np.float64).reshape(-1, 3),
        atom_residue=np.array(owner, dtype=np.int64),
        gaps=tuple(gaps),
        skipped=dict(skipped),
        modified=dict(modified),
        coarse=bool(kept) and all(len(_heavy(r)) == 1 for r, _, _ in kept),
    )


def _coarse_message(chain: Chain) -> str:
    atoms = "CA atoms" if chain.kind == "protein" else "one atom per residue"
    return (
        f"chain {chain.id} has only {atoms} ({len(chain.residue_ids)} residues): a coarse-grained "
        "model cannot give heavy-atom contacts; use an all-atom structure"
    )


def read_structure(path) -> Structure:
    """Read the first model of a .pdb/.ent/.cif file (optionally .gz) into classified chains."""
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix not in (".pdb", ".ent", ".cif"):
        raise InputError("structure files end in .pdb, .ent or .cif (optionally .gz)", path=path)
    if not path.is_file():
        raise InputError("structure file not found", path=path)
    parser = MMCIFParser(QUIET=True) if suffix == ".cif" else PDBParser(QUIET=True)
    parsed = _parse(path, parser)
    models = list(parsed)
    if not models or not any(True for _ in models[0].get_atoms()):
        raise InputError("no atom records: not a PDB or mmCIF structure", path=path)
    chains = {chain.id: _chain(chain) for chain in models[0]}
    polymers = [c for c in chains.values() if c.kind != "other"]
    if polymers and all(c.coarse for c in polymers):
        raise InputError(_coarse_message(polymers[0]), path=path)
    stem = path.name[: -len(".gz")] if path.name.lower().endswith(".gz") else path.name
    return Structure(path, stem[: -len(suffix)], chains, len(models))


def _present(structure: Structure) -> str:
    return ", ".join(f"{c.id} ({c.kind})" for c in structure.chains.values())


def resolve_chains(structure: Structure, names) -> list[str]:
    """The file's chain ids for `names` (a spec or a list).

    PRDB names symmetry copies with a prime (A' is a copy of A) and gives them another id in the
    file: `X'` maps to the one unnamed chain with X's kind, residues and sequence.
    """
    names = parse_chains(names) if isinstance(names, str) else list(names)
    present = structure.chains
    taken = {name for name in names if name in present}
    resolved = []
    for name in names:
        base = name.rstrip("'")
        copies = []
        if name not in present and base != name and base in present:
            ref = present[base]
            copies = [
                c.id
                for c in present.values()
                if c.id != base
                and c.id not in taken
                and c.kind == ref.kind
                and c.sequence == ref.sequence
                and c.residue_ids == ref.residue_ids
            ]
        if name in present:
            resolved.append(name)
        elif len(copies) == 1:
            resolved.append(copies[0])
            taken.add(copies[0])
        else:
            raise InputError(
                f"chain {name} is not in the structure; chains present: {_present(structure)}",
                path=structure.path,
            )
    return resolved


def _checked(structure: Structure, names, kind: str) -> list[str]:
    names = parse_chains(names) if isinstance(names, str) else list(names)
    ids = resolve_chains(structure, names)
    if not ids:
        raise InputError(f"no {kind} chains named", path=structure.path)
    for name, cid in zip(names, ids, strict=True):
        chain = structure.chains[cid]
        label = name if name == cid else f"{name} (chain {cid} in the file)"
        if chain.kind != kind:
            raise InputError(
                f"chain {label} is {chain.kind}, not {kind}; chains present: {_present(structure)}",
                path=structure.path,
            )
        if chain.coarse:
            raise InputError(_coarse_message(chain), path=structure.path)
    return ids


def _contacts(chain: Chain, tree: cKDTree, cutoff: float) -> list[int]:
    distance, _ = tree.query(chain.atoms, distance_upper_bound=cutoff + 1e-6)
    return sorted(set(chain.atom_residue[distance <= cutoff].tolist()))


def interface(structure: Structure, protein_chains, rna_chains, cutoff: float = 8.0) -> Interface:
    """Residues of the named chains with a heavy atom within `cutoff` Å of the other side."""
    proteins = _checked(structure, protein_chains, "protein")
    rnas = _checked(structure, rna_chains, "rna")
    sides = {}
    for own, other in ((proteins, rnas), (rnas, proteins)):
        tree = cKDTree(np.concatenate([structure.chains[c].atoms for c in other]))
        for cid in own:
            chain = structure.chains[cid]
            sides[cid] = [(cid, chain.residue_ids[i]) for i in _contacts(chain, tree, cutoff)]
    if not any(sides.values()):
        raise InputError(
            f"no contact within {cutoff} Å between protein chains {','.join(proteins)} and RNA "
            f"chains {','.join(rnas)}; check the chains or raise the cutoff",
            path=structure.path,
        )
    residues = tuple(r for cid in (*proteins, *rnas) for r in sides[cid])
    return Interface(tuple(proteins), tuple(rnas), residues, cutoff)


def crop_patch(structure: Structure, interface_residues: Interface, size: int = 256):
    """The `size` residues of the interface's chains nearest its centre, in chain/sequence order.

    The centre is the mean representative coordinate (CA, C4') of the interface residues.
    """
    if size < 1:
        raise InputError(f"patch size must be at least 1, not {size}")
    chains = [
        structure.chains[c]
        for c in (*interface_residues.protein_chains, *interface_residues.rna_chains)
    ]
    everyone = [(c.id, rid) for c in chains for rid in c.residue_ids]
    coords = np.concatenate([c.coords for c in chains])
    where = {residue: i for i, residue in enumerate(everyone)}
    centre = coords[[where[r] for r in interface_residues.residues]].mean(axis=0)
    distance = np.linalg.norm(coords - centre, axis=1)
    nearest = np.sort(np.argsort(distance, kind="stable")[:size])
    return [everyone[i] for i in nearest]


def chain_fasta(structure: Structure, chains) -> list[tuple[str, str]]:
    """(`<name>_<chain>`, sequence) per chain, ready to be hashed like any other sequence."""
    records = []
    for cid in resolve_chains(structure, chains):
        chain, record = structure.chains[cid], f"{structure.name}_{cid}"
        if chain.kind == "protein":
            sequence = clean_sequence(chain.sequence, path=structure.path, line=None, record=record)
        elif not chain.sequence:
            raise InputError(f"chain {cid} has no polymer residues", path=structure.path)
        else:
            sequence = chain.sequence
        records.append((record, sequence))
    return records

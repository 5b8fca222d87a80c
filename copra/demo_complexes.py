"""The bundled demo's protein-RNA complex task: synthetic all-atom structures with a planted rule.

Each complex has a protein chain A (an ideal alpha helix with standard bond lengths and angles),
an RNA strand B crossing it 4-7 Å off its surface, in about a third a second bound protein
chain C on the strand's far side, and in some a distant distractor chain D with waters and a
magnesium ion. The label is planted: dG = -6 - 0.35 * (K/R residues of the bound proteins with
CA within 10 Å of an RNA atom) - 0.15 * (G in the RNA) + noise; a K/R-to-A mutation near the
RNA costs +0.35 kcal/mol.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from Bio.Data.PDBData import protein_letters_1to3
from Bio.PDB import PDBIO
from Bio.PDB.StructureBuilder import StructureBuilder

from copra.atomic import atomic_directory, atomic_path

FILES = ("complexes.csv", "complex_mutations.csv")
STRUCTURES = "structures"
PLAIN = "ACDEFGHILMNPQSTVWY"  # residues other than K and R
REACH, KR_STEP, G_STEP = 10.0, 0.35, 0.15  # the planted rule
PHI, PSI = -57.8, -47.0  # alpha helix
PROTEIN_ATOMS = ("N", "CA", "C", "O", "CB")
# The RNA backbone P-O5'-C5'-C4'-C3'-O3'-P(next) as a zigzag with 110° bond angles.
BACKBONE = (("P", 1.60), ("O5'", 1.44), ("C5'", 1.51), ("C4'", 1.52), ("C3'", 1.43), ("O3'", 1.60))
RNA_ATOMS = ("P", "OP1", "OP2", "O5'", "C5'", "C4'", "O4'", "C3'", "O3'", "C2'", "O2'", "C1'")
PENTAGON = np.array([[-0.5, 0.0], [0.5, 0.0], [0.809, 0.951], [0.0, 1.539], [-0.809, 0.951]])


def _unit(vector):
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


def _place(a, b, c, bond: float, angle: float, torsion: float):
    """The atom bonded to `c` at `bond` Å, with angle b-c-x and dihedral a-b-c-x in degrees."""
    bc = _unit(c - b)
    normal = _unit(np.cross(b - a, bc))
    angle, torsion = np.radians(angle), np.radians(torsion)
    return c + bond * (
        -np.cos(angle) * bc
        + np.sin(angle) * np.cos(torsion) * np.cross(normal, bc)
        + np.sin(angle) * np.sin(torsion) * normal
    )


def _turn(angle: float):
    """Rotation by `angle` radians about x."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])


def _helix(n: int):
    """(n, 5, 3) N, CA, C, O, CB of an ideal alpha helix, centred, its axis along z."""
    backbone = [np.zeros(3), np.array([1.458, 0.0, 0.0])]
    backbone.append(
        backbone[1] + 1.525 * np.array([np.cos(np.radians(68.8)), np.sin(np.radians(68.8)), 0])
    )
    for _ in range(n - 1):
        backbone.append(_place(*backbone[-3:], 1.329, 116.2, PSI))
        backbone.append(_place(*backbone[-3:], 1.458, 121.7, 180.0))
        backbone.append(_place(*backbone[-3:], 1.525, 111.2, PHI))
    n_, ca, c = np.array(backbone).reshape(n, 3, 3).transpose(1, 0, 2)
    o = np.array(
        [_place(*atoms, 1.231, 120.5, PSI + 180.0) for atoms in zip(n_, ca, c, strict=True)]
    )
    b, d = ca - n_, c - ca  # the ideal CB of an L-amino acid
    cb = ca - 0.58273431 * np.cross(b, d) + 0.56802827 * b - 0.54067466 * d
    # The axis: cross products of successive CA bisectors are parallel to it.
    bisector = ca[:-2] + ca[2:] - 2 * ca[1:-1]
    z = _unit(np.cross(bisector[:-1], bisector[1:]).mean(axis=0))
    x = _unit(ca[0] - ca.mean(axis=0) - np.dot(ca[0] - ca.mean(axis=0), z) * z)
    frame = np.array([x, np.cross(z, x), z])
    return (np.stack([n_, ca, c, o, cb], axis=1) - ca.mean(axis=0)) @ frame.T


def _strand(bases: str):
    """(n, 13, 3) RNA_ATOMS and the base's N9/N1 of a straight strand along z, centred.

    The backbone zigzags in x, the sugar rings stand out in +y and the phosphates face -x.
    """
    u, p, q = np.eye(3)[[2, 0, 1]]
    chain, side = [np.zeros(3)], 1
    for _ in bases:
        for _, bond in BACKBONE:
            chain.append(
                chain[-1] + bond * (np.cos(np.radians(35)) * u + side * np.sin(np.radians(35)) * p)
            )
            side = -side
    spine = np.array(chain)
    residues = []
    for i in range(len(bases)):
        at = dict(zip([name for name, _ in BACKBONE], spine[6 * i : 6 * i + 6], strict=True))
        away = _unit(2 * at["P"] - spine[max(6 * i - 1, 0)] - at["O5'"])
        edge = at["C3'"] - at["C4'"]
        middle, plane = (at["C3'"] + at["C4'"]) / 2, np.linalg.norm(edge)
        ring = middle + plane * (PENTAGON[:, :1] * _unit(edge) + PENTAGON[:, 1:] * q)
        normal, centre = _unit(np.cross(edge, q)), ring.mean(axis=0)
        at["OP1"], at["OP2"] = (
            at["P"] + 1.48 * _unit(0.577 * away + s * 0.816 * q + 0.5 * u) for s in (1, -1)
        )
        at["O4'"], at["C2'"], at["C1'"] = ring[4], ring[2], ring[3]
        at["O2'"] = at["C2'"] + 1.41 * _unit(_unit(at["C2'"] - centre) + 0.7 * normal)
        base = at["C1'"] + 1.47 * _unit(_unit(at["C1'"] - centre) - 0.5 * normal)
        residues.append([at[name] for name in RNA_ATOMS] + [base])
    residues = np.array(residues)
    return residues - residues.reshape(-1, 3).mean(axis=0)


def _sequence(rng, n: int, rich: float) -> str:
    """Random protein sequence; each residue is K or R with probability `rich`."""
    charged = rng.random(n) < rich
    return "".join(rng.choice(list("KR") if k else list(PLAIN)) for k in charged)


def _polymer(letters: str, start: int, coords) -> list:
    """Residues (field, number, name, atoms) numbered from `start`: 5 atoms each is protein."""
    residues = []
    for i, (letter, xyz) in enumerate(zip(letters, coords, strict=True)):
        if len(xyz) == len(PROTEIN_ATOMS):
            name = protein_letters_1to3[letter].upper()
            names = PROTEIN_ATOMS[: 4 if name == "GLY" else 5]
        else:
            name, names = letter, (*RNA_ATOMS, "N9" if letter in "AG" else "N1")
        residues.append((" ", start + i, name, list(zip(names, xyz, strict=False))))
    return residues


def _near(ca, atoms):
    """Which CA positions lie within REACH Å of any of `atoms`."""
    return np.linalg.norm(ca[:, None] - atoms[None], axis=-1).min(axis=1) <= REACH


def _complex(rng, name: str):
    """One complex: its chains {id: residues}, its table row and its mutation rows."""
    rich, angle = rng.uniform(0.0, 0.4), np.radians(rng.uniform(20, 45))
    gap, gap_c, shift = rng.uniform(8.5, 10.0), rng.uniform(8.5, 10.0), rng.uniform(-5, 5)
    bases = "".join(rng.choice(list("ACGU"), size=int(rng.integers(8, 17))))
    turn = _turn(-angle)
    parts = {"A": (_sequence(rng, int(rng.integers(40, 71)), rich), int(rng.integers(1, 30)))}
    parts["B"] = (bases, 1)
    if rng.random() < 1 / 3:
        parts["C"] = (_sequence(rng, int(rng.integers(12, 21)), rich), int(rng.integers(1, 30)))
    decorated = rng.random() < 0.4
    if decorated:
        parts["D"] = (_sequence(rng, int(rng.integers(10, 17)), 0.2), 1)
    placement = {
        "A": (np.eye(3), [0, 0, 0]),
        "B": (turn, [gap, 0, shift]),
        "C": (turn, [gap + gap_c, 0, shift]),
        "D": (np.eye(3), [-30, 0, 0]),
    }
    coords = {}
    for cid, (letters, _) in parts.items():
        local = _strand(letters) if cid == "B" else _helix(len(letters))
        rotation, offset = placement[cid]
        coords[cid] = np.round(local @ rotation.T + offset, 3)
    rna = coords["B"].reshape(-1, 3)
    near = {cid: _near(coords[cid][:, 1], rna) for cid in parts if cid in "AC"}
    charged = {cid: np.array([r in "KR" for r in parts[cid][0]]) & near[cid] for cid in near}
    kr = sum(int(c.sum()) for c in charged.values())
    dg = -6.0 - KR_STEP * kr - G_STEP * bases.count("G") + rng.normal(0, 0.2)
    chains = {cid: _polymer(letters, start, coords[cid]) for cid, (letters, start) in parts.items()}
    if decorated:
        far = [i for i, r in enumerate(parts["A"][0]) if r != "G" and not near["A"][i]]
        for j, i in enumerate(far[:: max(1, len(far) // 3)][:3]):
            _, ca, _, _, cb = coords["A"][i]
            water = np.round(cb + 2.9 * _unit(cb - ca), 3)
            chains["A"].append(("W", parts["A"][1] + len(parts["A"][0]) + j, "HOH", [("O", water)]))
        p, op1 = coords["B"][len(bases) // 2, :2]
        magnesium = np.round(op1 + 2.1 * _unit(op1 - p), 3)
        chains["B"].append(("H", len(bases) + 1, "MG", [("MG", magnesium)]))
    row = (name, "AC" if "C" in parts else "A", "B", round(dg, 3))
    return chains, row, _mutations(rng, name, parts["A"], charged["A"])


def _mutations(rng, name: str, chain, charged) -> list:
    """For about half the complexes, K/R-to-A variants of chain A near the RNA: ddg rows."""
    letters, start = chain
    candidates = np.flatnonzero(charged)
    if rng.random() >= 0.5 or not candidates.size:
        return []
    rows = []
    for size in range(1, min(2, candidates.size) + 1):
        picked = np.sort(rng.choice(candidates, size=size, replace=False))
        mutation = ",".join(f"A:{letters[i]}{start + i}A" for i in picked)
        rows.append((name, mutation, round(KR_STEP * size + rng.normal(0, 0.05), 3)))
    return rows


def _save(path: Path, chains: dict) -> None:
    """Write chains {id: [(field, number, name, [(atom, xyz)])]} as a PDB file."""
    builder = StructureBuilder()
    builder.init_structure(path.stem)
    builder.init_model(0)
    for cid, residues in chains.items():
        builder.init_chain(cid)
        builder.init_seg("    ")
        for field, number, resname, atoms in residues:
            builder.init_residue(resname, field, number, " ")
            for atom, xyz in atoms:
                element = "MG" if atom == "MG" else atom[0]
                builder.init_atom(atom, xyz, 20.0, 1.0, " ", atom, element=element)
    io = PDBIO()
    io.set_structure(builder.get_structure())
    io.save(str(path))


def write_demo_complexes(folder, n_complexes: int, seed: int) -> list[Path]:
    """Write structures/<id>.pdb, complexes.csv and complex_mutations.csv into `folder`.

    The same seed gives the same bytes.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rows, mutations = [], []
    with atomic_directory(folder / STRUCTURES) as structures:
        for i in range(n_complexes):
            chains, row, variants = _complex(rng, f"cplx_{i:03d}")
            _save(structures / f"{row[0]}.pdb", chains)
            rows.append(row)
            mutations += variants
    tables = (
        pd.DataFrame(rows, columns=["pdb", "protein_chains", "rna_chains", "dG_kcal_mol"]),
        pd.DataFrame(mutations, columns=["pdb", "mutation", "ddg"]),
    )
    for file, table in zip(FILES, tables, strict=True):
        with atomic_path(folder / file) as tmp:
            table.to_csv(tmp, index=False)
    return [folder / FILES[0], folder / FILES[1], folder / STRUCTURES]

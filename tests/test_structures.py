"""Structure ingest for complex_regression: real PRDB complexes, PDB/mmCIF parity, edge cases."""

import gzip
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from Bio.PDB import MMCIFIO, PDBParser

from copra.errors import InputError
from copra.sequences import sequence_hash
from copra.structures import (
    chain_fasta,
    crop_patch,
    interface,
    parse_chains,
    read_structure,
    resolve_chains,
)


class Pdb:
    """PDB text built atom by atom, in the fixed columns of the format."""

    def __init__(self):
        self.lines: list[str] = []

    def atom(
        self,
        chain,
        resseq,
        resname,
        name,
        xyz,
        *,
        het=False,
        icode="",
        altloc="",
        occupancy=1.0,
        element=None,
    ):
        element = element or name.lstrip("0123456789")[0]
        padded = f" {name:<3}" if len(name) < 4 and len(element) == 1 else f"{name:<4}"
        x, y, z = xyz
        self.lines.append(
            f"{'HETATM' if het else 'ATOM':<6}{len(self.lines) + 1:>5} {padded}{altloc or ' '}"
            f"{resname:>3} {chain}{resseq:>4}{icode or ' '}   {x:8.3f}{y:8.3f}{z:8.3f}"
            f"{occupancy:6.2f}{20.0:6.2f}          {element:>2}"
        )

    def amino(
        self,
        chain,
        resseq,
        k,
        resname="ALA",
        *,
        y=0.0,
        names=("N", "CA", "C", "O", "CB"),
        **options,
    ):
        """A residue at position k of a straight chain: C(k) to N(k+1) is 1.4 Å."""
        x = 3.8 * k
        where = {
            "N": (x - 1.2, y, 0),
            "CA": (x, y, 0),
            "C": (x + 1.2, y, 0),
            "O": (x + 1.2, y + 1.2, 0),
            "CB": (x, y - 1.5, 0),
        }
        for name in names:
            self.atom(chain, resseq, resname, name, where[name], **options)

    def nucleotide(
        self,
        chain,
        resseq,
        k,
        resname="G",
        *,
        y=-7.0,
        het=False,
        rna=True,
        names=("P", "C4'", "O3'", "N1"),
    ):
        """A nucleotide at position k: O3'(k) to P(k+1) is 1.6 Å."""
        x = 6.0 * k
        where = {
            "P": (x, y, 0),
            "C4'": (x + 2, y, 0),
            "O3'": (x + 4.4, y, 0),
            "N1": (x + 2, y - 1.5, 0),
            "O2'": (x + 2, y + 1.2, 0),
        }
        for name in (*names, "O2'") if rna else names:
            self.atom(chain, resseq, resname, name, where[name], het=het)

    def write(self, path):
        path.write_text("\n".join(self.lines) + "\nEND\n")
        return path


def synthetic(path, rna_y=-7.0):
    """A small complex with every edge case: protein A, RNA B, DNA C, hetero groups."""
    pdb = Pdb()
    pdb.amino("A", 1, 0)
    pdb.amino("A", 2, 1, names=("N", "C", "O", "CB"))  # CA in two places: B is more occupied
    pdb.atom("A", 2, "ALA", "CA", (3.8, 0, 0.4), altloc="A", occupancy=0.3)
    pdb.atom("A", 2, "ALA", "CA", (3.8, 0, -0.4), altloc="B", occupancy=0.7)
    pdb.amino("A", 3, 2, "MSE", het=True)
    pdb.atom("A", 3, "MSE", "SE", (7.6, -3.0, 0), het=True, element="SE")
    pdb.amino("A", 3, 3, icode="A")
    pdb.amino("A", 4, 4, "GLY", names=("N", "CA", "C", "O"))
    pdb.amino("A", 5, 5)
    pdb.amino("A", 9, 6)  # renumbered, but bonded to 5: no gap
    pdb.amino("A", 10, 9)  # numbered next, but 9 Å away: a gap
    pdb.amino("A", 11, 10)
    pdb.amino("A", 12, 11, "GLY", names=("N", "CA", "C", "O"), altloc="A", occupancy=0.6)
    pdb.amino("A", 12, 11, "ALA", altloc="B", occupancy=0.4)  # a point mutation: GLY is kept
    pdb.atom("A", 201, "HOH", "O", (100, 100, 100), het=True)
    pdb.atom("A", 202, "HOH", "O", (103, 100, 100), het=True)
    pdb.atom("A", 203, " MG", "MG", (50, 50, 50), het=True, element="MG")
    for name, x in (("PA", 0.0), ("O3'", 1.5), ("C4'", 3.0), ("N1", 4.5)):  # a free nucleotide
        pdb.atom("A", 204, "GTP", name, (x, 60, 60), het=True)
    pdb.nucleotide("B", 1, 0, y=rna_y)
    pdb.nucleotide("B", 2, 1, "PSU", y=rna_y, het=True)
    pdb.nucleotide("B", 3, 2, "C", y=rna_y)
    pdb.nucleotide("C", 1, 0, "DA", y=40, rna=False)
    pdb.nucleotide("C", 2, 1, "DC", y=40, rna=False, names=("P", "C4'", "N1"))  # no O3'
    pdb.nucleotide("C", 5, 2, "DG", y=40, rna=False)  # numbering decides: a gap
    return pdb.write(path)


def brute_interface(path, protein, rna, cutoff):
    """Interface residues from all pairwise heavy-atom distances of biopython's own parse."""
    model = PDBParser(QUIET=True).get_structure("x", path)[0]

    def atoms(chain):
        return [
            (chain, f"{r.id[1]}{r.id[2].strip()}", a.coord)
            for r in model[chain]
            for a in r
            if r.id[0] != "W" and a.element != "H"
        ]

    sides = [[a for c in protein for a in atoms(c)], [a for c in rna for a in atoms(c)]]
    xyz = [np.array([a[2] for a in side]) for side in sides]
    distance = np.linalg.norm(xyz[0][:, None] - xyz[1][None], axis=2)
    near = [distance.min(axis=1) <= cutoff, distance.min(axis=0) <= cutoff]
    return [
        {a[:2] for a, hit in zip(side, hits, strict=True) if hit}
        for side, hits in zip(sides, near, strict=True)
    ]


def check_patch(path, found, size):
    """crop_patch against a brute-force ordering of CA/C4' coordinates from biopython."""
    structure = read_structure(path)
    model = PDBParser(QUIET=True).get_structure("x", path)[0]
    chains = [*found.protein_chains, *found.rna_chains]
    residues = {(c, f"{r.id[1]}{r.id[2].strip()}"): r for c in chains for r in model[c]}
    everyone = [(c, rid) for c in chains for rid in structure.chains[c].residue_ids]

    def centre_of(key):
        residue = residues[key]
        return next(residue[n].coord for n in ("CA", "C4'", "P") if n in residue)

    centre = np.mean([centre_of(key) for key in found.residues], axis=0)
    distance = {key: np.linalg.norm(centre_of(key) - centre) for key in everyone}
    patch = crop_patch(structure, found, size)
    assert len(patch) == min(size, len(everyone)) and len(set(patch)) == len(patch)
    assert patch == [key for key in everyone if key in set(patch)]  # chain/sequence order
    rest = [distance[key] for key in everyone if key not in set(patch)]
    if rest:
        assert max(distance[key] for key in patch) <= min(rest)
    return patch


@pytest.fixture(scope="module")
def affinity(shared_data):
    table = pd.read_csv(shared_data / "pra" / "affinity.csv", dtype=str)
    table["path"] = [shared_data / "pra" / "pdb" / f"{pdb}.pdb" for pdb in table["pdb"]]
    return table


def test_all_real_complexes_ingest(affinity):
    assert len(affinity) == 70
    gapped, skipped, modified, deoxy, models, chains, extra = (
        0,
        Counter(),
        Counter(),
        Counter(),
        set(),
        0,
        0,
    )
    for row in affinity.itertuples():
        structure = read_structure(row.path)
        proteins = resolve_chains(structure, row.protein_chains)
        rnas = resolve_chains(structure, row.rna_chains)
        assert {structure.chains[c].kind for c in proteins} == {"protein"}, row.pdb
        assert {structure.chains[c].kind for c in rnas} == {"rna"}, row.pdb
        found = interface(structure, row.protein_chains, row.rna_chains)
        touched = {chain for chain, _ in found.residues}
        assert touched & set(proteins) and touched & set(rnas), row.pdb
        records = chain_fasta(structure, [*proteins, *rnas])
        assert [r for r, _ in records] == [f"{row.pdb}_{c}" for c in [*proteins, *rnas]]
        assert all(sequence and len(sequence_hash(sequence)) == 32 for _, sequence in records)
        assert len(crop_patch(structure, found)) <= 256
        gapped += any(structure.chains[c].gaps for c in proteins + rnas)
        for chain in structure.chains.values():
            assert len(chain.sequence) == len(chain.residue_ids) == len(chain.coords)
            skipped.update(chain.skipped)
            modified.update(chain.modified)
            if chain.kind == "rna":
                deoxy.update(n for n in chain.residue_names if n.startswith("D"))
        models.add(structure.models)
        chains += len(structure.chains)
        extra += len(set(structure.chains) - {*proteins, *rnas})
    # What these PRDB files hold (measured): gaps in half the complexes; no hetero groups,
    # modified residues, altlocs, insertion codes, extra models or unnamed chains (the files are
    # pre-cleaned to the named chains); deoxy residues inside two RNA chains (3DD2 B, 2Y8W B).
    assert gapped == 35
    assert sum(skipped.values()) == 0 and sum(modified.values()) == 0
    assert deoxy == {"DC": 6, "DU": 4, "DT": 1, "DG": 1}
    assert models == {1} and chains == 179 and extra == 0


def test_real_specifics(affinity):
    paths = dict(zip(affinity["pdb"], affinity["path"], strict=True))
    # PRDB's primed chains are symmetry copies under another id in the file.
    assert resolve_chains(read_structure(paths["3HL2"]), "AA'BB'") == ["A", "K", "B", "M"]
    assert resolve_chains(read_structure(paths["7OG0"]), "EE'") == ["E", "B"]
    assert chain_fasta(read_structure(paths["7OG0"]), "E'")[0][0] == "7OG0_B"
    thrombin = read_structure(paths["3DD2"])
    # Residues with insertion codes (36A, 60A-I...) were dropped from the file: real breaks.
    assert ("36", "37") in thrombin.chains["H"].gaps and ("60", "61") in thrombin.chains["H"].gaps
    assert thrombin.chains["B"].kind == "rna" and thrombin.chains["B"].sequence.endswith("CCCT")
    # A numbering jump over an engineered deletion, bonded (1.34 Å): no gap.
    coat = read_structure(paths["2QUX"]).chains["A"]
    assert coat.residue_ids[coat.residue_ids.index("68") + 1] == "75"
    assert ("68", "75") not in coat.gaps


@pytest.mark.parametrize("pdb", ["1MMS", "7OG0"])
def test_real_interface_matches_brute_force(affinity, pdb):
    row = affinity.set_index("pdb").loc[pdb]
    structure = read_structure(row.path)
    proteins = resolve_chains(structure, row.protein_chains)
    rnas = resolve_chains(structure, row.rna_chains)
    found = interface(structure, row.protein_chains, row.rna_chains, cutoff=6.0)
    expected = brute_interface(row.path, proteins, rnas, 6.0)
    assert set(found.residues) == expected[0] | expected[1]
    check_patch(row.path, found, 64)


def summary(path, protein, rna):
    structure = read_structure(path)
    chains = [
        (c.id, c.kind, c.sequence, c.residue_ids, c.gaps, c.skipped, c.modified)
        for c in structure.chains.values()
    ]
    coords = {c.id: (c.coords, c.atoms) for c in structure.chains.values()}
    return chains, coords, interface(structure, protein, rna).residues


@pytest.mark.parametrize("pdb", ["3DD2", "3HL2", "synthetic"])
def test_pdb_and_mmcif_agree(affinity, tmp_path, pdb):
    if pdb == "synthetic":
        source, protein, rna = synthetic(tmp_path / "synthetic.pdb"), "A", "B"
    else:
        row = affinity.set_index("pdb").loc[pdb]
        source, protein, rna = row.path, row.protein_chains, row.rna_chains
    writer = MMCIFIO()
    writer.set_structure(PDBParser(QUIET=True).get_structure(pdb, source))
    cif = tmp_path / f"{pdb}.cif"
    writer.save(str(cif))
    copies = [cif]
    for plain in (source, cif):
        copies.append(tmp_path / f"{pdb}{plain.suffix}.gz")
        with open(plain, "rb") as raw, gzip.open(copies[-1], "wb") as packed:
            shutil.copyfileobj(raw, packed)
    chains, coords, residues = summary(source, protein, rna)
    assert residues and chains
    for copy in copies:
        other_chains, other_coords, other_residues = summary(copy, protein, rna)
        assert other_chains == chains, copy.name
        assert other_residues == residues, copy.name
        for cid, arrays in coords.items():
            for mine, theirs in zip(arrays, other_coords[cid], strict=True):
                np.testing.assert_allclose(mine, theirs, atol=1e-3)


def test_synthetic_chains(tmp_path):
    structure = read_structure(synthetic(tmp_path / "complex.pdb"))
    assert structure.name == "complex" and structure.models == 1
    protein, rna, dna = (structure.chains[c] for c in "ABC")
    assert (protein.kind, rna.kind, dna.kind) == ("protein", "rna", "dna")
    assert protein.sequence == "AAMAGAAAAG"  # MSE as M
    assert protein.residue_ids == ("1", "2", "3", "3A", "4", "5", "9", "10", "11", "12")
    assert protein.modified == {"MSE": 1}
    assert protein.skipped == {"HOH": 2, "MG": 1, "GTP": 1}  # the unbonded GTP is a ligand
    assert protein.gaps == (("9", "10"),)  # 5 -> 9 is bonded; 9 -> 10 is 9 Å apart
    assert (rna.sequence, rna.modified, rna.gaps) == ("GUC", {"PSU": 1}, ())
    assert (dna.sequence, dna.gaps) == ("ACG", (("2", "5"),))  # no O3': the numbering decides
    # Altloc: the CA of residue 2 is the 0.7-occupancy one, in coords and in atoms.
    np.testing.assert_allclose(protein.coords[1], [3.8, 0, -0.4], atol=1e-6)
    own = protein.atoms[protein.atom_residue == 1]
    assert len(own) == 5 and (own[:, 2] < 0.1).all() and np.isclose(own[:, 2], -0.4).sum() == 1
    np.testing.assert_allclose(rna.coords[0], [2.0, -7.0, 0], atol=1e-6)  # C4'
    assert chain_fasta(structure, "A,B") == [("complex_A", "AAMAGAAAAG"), ("complex_B", "GUC")]


def test_synthetic_interface_and_patch(tmp_path):
    path = synthetic(tmp_path / "complex.pdb")
    structure = read_structure(path)
    for cutoff in (3.0, 5.0, 8.0):
        found = interface(structure, "A", "B", cutoff=cutoff)
        expected = brute_interface(path, ["A"], ["B"], cutoff)
        assert set(found.residues) == expected[0] | expected[1]
        assert list(found.residues) == sorted(
            found.residues, key=lambda r: (r[0], structure.chains[r[0]].residue_ids.index(r[1]))
        )
    found = interface(structure, "A", "B")
    assert 0 < len(found.residues) < 13
    for size in (1, 3, 5, 12, 13, 40):
        assert len(check_patch(path, found, size)) == min(size, 13)


def test_crop_patch_real_large(affinity):
    row = affinity.set_index("pdb").loc["5WTK"]  # 1,255 residues in the named chains
    structure = read_structure(row.path)
    found = interface(structure, row.protein_chains, row.rna_chains)
    patch = check_patch(row.path, found, 256)
    assert len(patch) == 256 and {c for c, _ in patch} == {"A", "B"}


def test_refusals(tmp_path):
    path = synthetic(tmp_path / "complex.pdb")
    structure = read_structure(path)
    with pytest.raises(
        InputError,
        match=r"chain Z is not in .*chains present: A \(protein\), "
        r"B \(rna\), C \(dna\)",
    ) as error:
        interface(structure, "Z", "B")
    assert str(path) in str(error.value)
    with pytest.raises(InputError, match=r"chain B is rna, not protein"):
        interface(structure, "B", "B")
    with pytest.raises(InputError, match=r"chain C is dna, not rna"):
        interface(structure, "A", "C")
    with pytest.raises(InputError, match=r"chain A' is not in"):  # no copy of A to map it to
        interface(structure, "A'", "B")
    far = read_structure(synthetic(tmp_path / "apart.pdb", rna_y=-60.0))
    with pytest.raises(
        InputError,
        match=r"apart\.pdb: no contact within 8\.0 Å between protein "
        r"chains A and RNA chains B",
    ):
        interface(far, "A", "B")
    assert interface(far, "A", "B", cutoff=60.0).residues
    with pytest.raises(InputError, match="patch size"):
        crop_patch(structure, interface(structure, "A", "B"), 0)


def test_coarse_grained_refused(tmp_path):
    pdb = Pdb()
    for k in range(4):
        pdb.amino("A", k + 1, k, names=("CA",))
    for k in range(3):
        pdb.nucleotide("B", k + 1, k, names=("P",), rna=False)
    with pytest.raises(InputError, match=r"ca_only\.pdb: chain A has only CA atoms"):
        read_structure(pdb.write(tmp_path / "ca_only.pdb"))
    for k in range(3):  # an all-atom chain beside a CA-only one: refused where it is named
        pdb.nucleotide("C", k + 1, k, y=-5.0)
    structure = read_structure(pdb.write(tmp_path / "mixed.pdb"))
    assert structure.chains["A"].coarse and not structure.chains["C"].coarse
    with pytest.raises(InputError, match=r"chain A has only CA atoms .*coarse-grained"):
        interface(structure, "A", "C")


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        (
            "bad.pdb",
            "ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 20.00"
            "           N\nATOM      2  CA  ALA A   1       x.xxx   2.000   3.000  1.00 20.00"
            "           C\n",
            r"bad\.pdb:2: cannot be read as PDB: Invalid or missing coordinate",
        ),
        ("empty.pdb", "HEADER    NOTHING HERE\n", r"empty\.pdb: no atom records"),
        ("bad.cif", "data_x\n_atom_site.id 1\n", r"bad\.cif: cannot be read as mmCIF"),
        ("plain.pdb.gz", "ATOM  \n", r"plain\.pdb\.gz: cannot be read as PDB"),
        ("model.txt", "ATOM  \n", r"model\.txt: structure files end in \.pdb, \.ent or \.cif"),
    ],
)
def test_unreadable_files_refused(tmp_path, name, text, pattern):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=pattern):
        read_structure(path)


def test_missing_file_refused(tmp_path):
    with pytest.raises(InputError, match=r"gone\.cif: structure file not found"):
        read_structure(tmp_path / "gone.cif")


def test_parse_chains():
    assert parse_chains("AB") == ["A", "B"]
    assert parse_chains("A,B") == ["A", "B"]
    assert parse_chains(" A , B ") == ["A", "B"]
    assert parse_chains("AA,BB1") == ["AA", "BB1"]
    assert parse_chains("AA'BB'") == ["A", "A'", "B", "B'"]
    assert parse_chains("EE'") == ["E", "E'"]
    for bad in ("", "A,,B", "'A", "AA", "A,A"):
        with pytest.raises(InputError, match="chain list"):
            parse_chains(bad)

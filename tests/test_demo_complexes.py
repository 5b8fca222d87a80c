"""The demo's protein-RNA complex task: reproducible bytes, readable structures, planted labels."""

import re

import numpy as np
import pandas as pd
import pytest
from Bio.PDB import PDBParser
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

from copra.demo_complexes import FILES, STRUCTURES, write_demo_complexes
from copra.structures import chain_fasta, crop_patch, interface, read_structure

N = 40
KINDS = {"A": "protein", "B": "rna", "C": "protein", "D": "protein"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The generated folder, its two tables and every structure read by the project's reader."""
    folder = tmp_path_factory.mktemp("complexes")
    paths = write_demo_complexes(folder, N, seed=0)
    assert paths == [folder / FILES[0], folder / FILES[1], folder / STRUCTURES]
    complexes, mutations = (pd.read_csv(path) for path in paths[:2])
    structures = {
        name: read_structure(folder / STRUCTURES / f"{name}.pdb") for name in complexes["pdb"]
    }
    return folder, complexes, mutations, structures


def _contents(folder) -> dict:
    files = [*(folder / name for name in FILES), *sorted((folder / STRUCTURES).iterdir())]
    return {path.relative_to(folder): path.read_bytes() for path in files}


def _near_charged(structure, chain_id) -> dict[str, bool]:
    """Residue id -> whether it is a K/R with CA within 10 Å of an RNA atom of chain B."""
    chain = structure.chains[chain_id]
    distance, _ = cKDTree(structure.chains["B"].atoms).query(chain.coords)
    return {
        rid: letter in "KR" and d <= 10.0
        for rid, letter, d in zip(chain.residue_ids, chain.sequence, distance, strict=True)
    }


def test_same_seed_same_bytes_other_seed_differs(demo, tmp_path):
    folder = demo[0]
    write_demo_complexes(tmp_path / "again", N, seed=0)
    write_demo_complexes(tmp_path / "other", N, seed=1)
    first, again, other = (
        _contents(folder),
        _contents(tmp_path / "again"),
        _contents(tmp_path / "other"),
    )
    assert len(first) == N + 2
    assert again == first
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first)


def test_tables_have_the_expected_columns_and_mix(demo):
    _, complexes, mutations, _ = demo
    assert list(complexes.columns) == ["pdb", "protein_chains", "rna_chains", "dG_kcal_mol"]
    assert list(mutations.columns) == ["pdb", "mutation", "ddg"]
    assert list(complexes["pdb"]) == [f"cplx_{i:03d}" for i in range(N)]
    assert set(complexes["protein_chains"]) == {"A", "AC"}
    assert 0.15 < (complexes["protein_chains"] == "AC").mean() < 0.55
    assert set(complexes["rna_chains"]) == {"B"}
    assert complexes["dG_kcal_mol"].between(-16, -4).all()
    assert complexes["dG_kcal_mol"].max() - complexes["dG_kcal_mol"].min() > 2.5
    assert 0.2 < mutations["pdb"].nunique() / N < 0.8


def test_every_structure_reads_cleanly_with_an_interface(demo):
    _, complexes, _, structures = demo
    decorated, starts = 0, set()
    for row in complexes.itertuples():
        structure = structures[row.pdb]
        chains = structure.chains
        assert set(chains) >= set(row.protein_chains) | {"B"}
        assert set(chains) <= set(KINDS)
        for chain in chains.values():
            assert chain.kind == KINDS[chain.id], (row.pdb, chain.id)
            assert chain.gaps == () and not chain.coarse and not chain.modified, (row.pdb, chain.id)
            assert len(chain.sequence) == len(chain.residue_ids) == len(chain.coords)
        assert 40 <= len(chains["A"].sequence) <= 70
        assert 8 <= len(chains["B"].sequence) <= 16 and set(chains["B"].sequence) <= set("ACGU")
        starts.add(chains["A"].residue_ids[0])
        if "D" in chains:
            decorated += 1
            assert set(chains["A"].skipped) <= {"HOH"} and chains["B"].skipped == {"MG": 1}
            assert "X" not in chains["A"].sequence and "X" not in chains["B"].sequence
            rna = cKDTree(chains["B"].atoms)
            assert rna.query(chains["D"].atoms)[0].min() > 15.0  # the distractor is far away
        else:
            assert all(chain.skipped == {} for chain in chains.values())
        contacts = interface(structure, row.protein_chains, row.rna_chains)
        protein = [r for r in contacts.residues if r[0] == "A"]
        assert protein and len(protein) < len(chains["A"].residue_ids) / 2
        assert any(r[0] == "B" for r in contacts.residues)
        if "C" in row.protein_chains:
            assert any(r[0] == "C" for r in contacts.residues)
        assert len(crop_patch(structure, contacts, size=24)) == 24
        names = [name for name, _ in chain_fasta(structure, row.protein_chains + "B")]
        assert names == [f"{row.pdb}_{c}" for c in row.protein_chains + "B"]
    assert 0 < decorated < N
    assert len(starts) > 5  # chain A's numbering starts at various offsets


def test_no_atoms_overlap(demo):
    folder, complexes, _, _ = demo
    parser = PDBParser(QUIET=True)
    for name in complexes["pdb"]:
        atoms = list(parser.get_structure(name, folder / STRUCTURES / f"{name}.pdb").get_atoms())
        coords = np.array([atom.coord for atom in atoms])
        assert not cKDTree(coords).query_pairs(1.2), name
        # Between residues only backbone bonds and the Mg-phosphate contact are under 2.2 Å.
        for i, j in cKDTree(coords).query_pairs(2.2):
            pair = {atoms[i].get_id(), atoms[j].get_id()}
            if atoms[i].get_parent() is not atoms[j].get_parent():
                assert pair in ({"C", "N"}, {"O3'", "P"}, {"MG", "OP1"}), (name, pair)


def test_label_follows_the_planted_count(demo):
    _, complexes, _, structures = demo
    planted, counts = [], []
    for row in complexes.itertuples():
        structure = structures[row.pdb]
        count = sum(sum(_near_charged(structure, c).values()) for c in row.protein_chains)
        counts.append(count)
        planted.append(-6.0 - 0.35 * count - 0.15 * structure.chains["B"].sequence.count("G"))
    residual = complexes["dG_kcal_mol"].to_numpy() - np.array(planted)
    assert spearmanr(planted, complexes["dG_kcal_mol"]).statistic > 0.9
    assert abs(residual.mean()) < 0.15 and residual.std() < 0.35
    assert min(counts) == 0 and max(counts) >= 6


def test_mutations_name_charged_interface_residues_of_chain_a(demo):
    _, _, mutations, structures = demo
    assert len(mutations) > 0
    for row in mutations.itertuples():
        structure = structures[row.pdb]
        chain = structure.chains["A"]
        letters = dict(zip(chain.residue_ids, chain.sequence, strict=True))
        near = _near_charged(structure, "A")
        changes = row.mutation.split(",")
        for change in changes:
            match = re.fullmatch(r"A:([KR])(\d+)A", change)
            assert match, row.mutation
            wild, number = match.groups()
            assert letters[number] == wild and near[number], (row.pdb, change)
        assert row.ddg == pytest.approx(0.35 * len(changes), abs=0.25)

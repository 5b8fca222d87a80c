"""The demo's order-signal proteins (copra/demo_data.py): composition the same in every protein,
the label only in which markers form a run."""

import re

import numpy as np
import pytest

from copra import demo_data

MARKERS = "".join(demo_data.RUN_MARKERS.values())


def repeats(protein: str) -> set[str]:
    """Residues that stand beside their own kind somewhere."""
    return {a for a, b in zip(protein, protein[1:], strict=False) if a == b}


@pytest.mark.parametrize("runs", ["", "K", "WE", MARKERS])
@pytest.mark.parametrize("length", [16, demo_data.RUN_LENGTHS[0], demo_data.RUN_LENGTHS[1]])
def test_run_proteins_hold_the_same_composition_and_runs_only_where_asked(runs, length):
    """Also at 16 residues, where the last marker often finds no room (the generator drew
    forever there before it started such proteins over)."""
    rng = np.random.default_rng(0)
    scattered = "".join(m for m in MARKERS if m not in runs)
    for _ in range(50):
        protein = demo_data._run_protein(rng, length, runs, scattered)
        assert len(protein) == length and protein[0] == "M" and "M" not in protein[1:]
        assert all(protein.count(m) == demo_data.RUN_COPIES for m in MARKERS)
        assert repeats(protein) == set(runs)
        for marker in runs:
            assert re.search(marker * demo_data.RUN_COPIES, protein)


def test_order_tasks_are_reproducible(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        demo_data.sequence_tasks(np.random.default_rng(3), 30, folder)
    for name in ("proteins.fasta", "localization.tsv", "stability.tsv", "membrane.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()

"""The embedding summary of a task: provenance, size, and the PCA map coloured by label."""

import numpy as np
import pandas as pd
import pytest

from copra.cli import main
from copra.embed import write_embeddings
from copra.embedding_summary import pca, run_embedding_summary, sequence_colours

METADATA = {"model": "esm2_t6_8M_UR50D", "layer": 6, "pooling": "mean", "weights": "random-seed0"}


def test_pca_finds_the_direction_of_most_variance():
    rng = np.random.default_rng(0)
    points = np.outer(rng.normal(size=200), [3.0, 4.0, 0.0]) + rng.normal(scale=0.01, size=(200, 3))
    coordinates, variance = pca(points)
    assert variance[0] > 0.99 and variance.sum() <= 1 + 1e-9
    along = points - points.mean(axis=0)
    assert abs(np.corrcoef(coordinates[:, 0], along @ [0.6, 0.8, 0.0])[0, 1]) > 0.999


def test_pca_of_fewer_points_than_components_pads_with_zeros():
    coordinates, variance = pca(np.array([[1.0, 2.0]]))
    assert coordinates.shape == (1, 2) and not coordinates.any() and len(variance) == 2


def test_colours_per_kind():
    single = pd.DataFrame({"seq_hash": ["h1", "h2", "h1"], "label": ["1.5", "2", "1.5"]})
    assert sequence_colours("sequence_regression", single, None).to_dict() == {"h1": 1.5, "h2": 2}
    assert sequence_colours("sequence_classification", single, None)["h2"] == "2"
    pairs = pd.DataFrame(
        {"hash_a": ["h1", "h3"], "hash_b": ["h2", "h1"], "split": ["train", "test"]}
    )
    assert sequence_colours("pair_classification", pairs, None).to_dict() == {
        "h1": "train",
        "h2": "train",
        "h3": "test",
    }
    complexes = pd.DataFrame({"id": ["c1", "c2"], "label": ["-7", "-9"]})
    chains = pd.DataFrame(
        {
            "id": ["c1", "c1", "c2"],
            "kind": ["protein", "rna", "protein"],
            "seq_hash": ["p", "r", "p"],
        }
    )
    assert sequence_colours("complex_regression", complexes, chains).to_dict() == {"p": -8.0}


def test_summary_of_pooled_embeddings(tmp_path):
    rng = np.random.default_rng(1)
    write_embeddings(tmp_path / "e.npz", ["h1", "h2", "h3"], rng.normal(size=(3, 8)), METADATA)
    table = pd.DataFrame(
        {
            "id": list("abc"),
            "seq_hash": ["h1", "h2", "h3"],
            "label": list("xyx"),
            "split": ["train", "valid", "test"],
        }
    )
    table.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    frame = run_embedding_summary(
        "t",
        tmp_path / "e.npz",
        tmp_path / "t.tsv",
        tmp_path / "s.tsv",
        tmp_path / "m.png",
        kind="sequence_classification",
    )
    values = frame.set_index("name").value
    assert values["model"] == "esm2_t6_8M_UR50D" and values["sequences"] == 3
    assert values["dimension"] == 8 and not values["per_residue"]
    assert (tmp_path / "m.png").stat().st_size > 5_000 and (tmp_path / "m.svg").is_file()
    assert pd.read_csv(tmp_path / "s.tsv", sep="\t").name.tolist() == frame.name.tolist()


def test_complex_task_needs_its_chains_and_counts_residues(tmp_path):
    matrices = [np.ones((4, 8)), np.zeros((2, 8)), np.eye(3, 8)]
    write_embeddings(tmp_path / "r.npz", ["p1", "p2", "mutant"], matrices, METADATA)
    pd.DataFrame({"id": ["c1", "c2"], "label": ["-7", "-9"]}).to_csv(
        tmp_path / "t.tsv", sep="\t", index=False
    )
    pd.DataFrame(
        {"id": ["c1", "c2"], "kind": ["protein", "protein"], "seq_hash": ["p1", "p2"]}
    ).to_csv(tmp_path / "c.tsv", sep="\t", index=False)
    args = [
        "embedding-summary",
        "--kind",
        "complex_regression",
        "--task",
        "t",
        "--embeddings",
        str(tmp_path / "r.npz"),
        "--table",
        str(tmp_path / "t.tsv"),
        "--output",
        str(tmp_path / "s.tsv"),
        "--figure",
        str(tmp_path / "m.png"),
    ]
    assert main(args) == 2
    assert not (tmp_path / "s.tsv").exists() and not (tmp_path / "m.png").exists()
    assert main([*args, "--chains", str(tmp_path / "c.tsv")]) == 0
    values = pd.read_csv(tmp_path / "s.tsv", sep="\t").set_index("name").value
    assert values["residues"] == "9" and values["sequences"] == "3"


@pytest.mark.parametrize("kind", ["sequence_regression", "pair_classification"])
def test_every_kind_draws_its_map(tmp_path, kind):
    rng = np.random.default_rng(2)
    write_embeddings(tmp_path / "e.npz", ["h1", "h2", "h3"], rng.normal(size=(3, 4)), METADATA)
    columns = {
        "sequence_regression": {"seq_hash": ["h1", "h2", "h3"], "label": [0.1, 0.5, 0.9]},
        "pair_classification": {"hash_a": ["h1", "h2"], "hash_b": ["h2", "h3"], "label": [0, 1]},
    }[kind]
    split = ["train", "valid", "test"][: len(columns["label"])]
    pd.DataFrame({**columns, "split": split}).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    run_embedding_summary(
        "t",
        tmp_path / "e.npz",
        tmp_path / "t.tsv",
        tmp_path / "s.tsv",
        tmp_path / "m.png",
        kind=kind,
    )
    assert (tmp_path / "m.png").stat().st_size > 5_000

"""The protein-RNA affinity model: Co-Former, RNA encoders, per-residue embeddings, K-fold CV."""

import json
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch

from copra import methods, rna_encoders
from copra.coformer import CoFormer
from copra.complex_training import (
    BackboneResidues,
    ComplexTraining,
    read_complexes,
    run_complex,
)
from copra.complexes import run_ingest_complexes
from copra.demo_complexes import write_demo_complexes
from copra.embed import read_embeddings, run_embed
from copra.errors import InputError
from copra.methods.full import Full
from copra.methods.head import Head
from copra.methods.layer_drop import LayerDropSettings
from copra.settings import (
    CoFormerSettings,
    ComplexSettings,
    ComplexTrainingSettings,
    EmbeddingSettings,
    ModelSettings,
    TaskSettings,
)

SMALL = CoFormerSettings(embed_dim=32, blocks=2, heads=4, pair_dim=8)
FAST = ComplexTrainingSettings(learning_rate=1e-3, max_epochs=3, patience=2, batch_size=4)
MODEL = ModelSettings(name="esm2_t6_8M_UR50D", weights="random")


@pytest.fixture(scope="module")
def complex_task(tmp_path_factory):
    """12 demo complexes ingested into data/ (3 folds), with per-residue embeddings."""
    folder = tmp_path_factory.mktemp("complexes")
    write_demo_complexes(folder, 12, seed=1)
    task = TaskSettings(
        "complex_regression",
        labels=folder / "complexes.csv",
        structures=folder / "structures",
        mutations=folder / "complex_mutations.csv",
        columns={"label": "dG_kcal_mol"},
    )
    run_ingest_complexes(task, folder / "data", ComplexSettings(folds=3, patch_residues=48))
    run_embed(
        folder / "data/residue_embeddings.npz",
        model=MODEL,
        settings=EmbeddingSettings(
            pooling="none", long_sequences="windows", cache_dir=folder / "cache"
        ),
        sequence_table=folder / "data/sequences.tsv",
    )
    return folder


def train(folder, out, method="head", settings=FAST):
    """3-fold cross-validation of `method` on the demo complexes (seed 0)."""
    training = ComplexTraining(
        methods.get(method)(), 0, MODEL, replace(settings, folds=3), coformer=SMALL
    )
    return run_complex(
        folder / "data", out, training, residue_embeddings=folder / "data/residue_embeddings.npz"
    )


def complexes(n_protein, n_rna, seed):
    generator = torch.Generator().manual_seed(seed)
    protein = torch.randn(n_protein, 16, generator=generator)
    rna = torch.randn(n_rna, 8, generator=generator)
    coords = torch.randn(n_protein + n_rna, 3, generator=generator) * 10
    return protein, rna, coords


def test_coformer_output_does_not_depend_on_padding_or_batch():
    torch.manual_seed(0)
    model = CoFormer(16, 8, SMALL).eval()
    small, large = complexes(5, 3, 0), complexes(30, 12, 1)
    alone = model(*[[part] for part in small])
    together = model(*[[a, b] for a, b in zip(small, large, strict=True)])
    assert together.shape == (2,)
    torch.testing.assert_close(alone[0], together[0], atol=1e-5, rtol=1e-5)


def test_coformer_attention_sees_the_distances():
    torch.manual_seed(0)
    model = CoFormer(16, 8, SMALL).eval()
    protein, rna, coords = complexes(10, 4, 0)
    near = model([protein], [rna], [coords])
    far = model([protein], [rna], [coords * 3])
    assert not torch.allclose(near, far)


def test_an_rna_language_model_plugs_in(monkeypatch):
    """Any RNAEncoder registered by name is used: here one that embeds by position only."""

    class Positional(rna_encoders.RNAEncoder):
        def __init__(self, out_dim):
            super().__init__()
            self.out_dim = 6
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, sequences):
            return [self.scale * torch.arange(len(s) * 6.0).view(len(s), 6) for s in sequences]

    monkeypatch.setitem(rna_encoders.RNA_ENCODERS, "positional", Positional)
    assert isinstance(rna_encoders.rna_encoder("positional", 32), Positional)
    with pytest.raises(InputError, match="RNA encoder 'rinalmo' is not one of learned"):
        rna_encoders.rna_encoder("rinalmo", 32)
    learned = rna_encoders.rna_encoder("learned", 4)
    same = learned(["ACGU", "ACGT"])  # a DNA-like T reads as U
    torch.testing.assert_close(same[0], same[1])


def test_per_residue_embeddings_match_one_forward_pass(complex_task):
    ids, matrices, metadata = read_embeddings(complex_task / "data/residue_embeddings.npz")
    sequences = pd.read_csv(complex_task / "data/sequences.tsv", sep="\t")
    assert ids == sequences.seq_hash.tolist() and metadata["pooling"] == "none"
    backbone = MODEL.load()
    sequence = sequences.sequence.iloc[0]
    _, _, tokens = backbone.alphabet.get_batch_converter()([("", sequence)])
    with torch.no_grad():
        reps = backbone.model(tokens, repr_layers=[6])["representations"][6][0, 1:-1]
    assert matrices[0].shape == (len(sequence), 320)
    np.testing.assert_allclose(matrices[0], reps.numpy(), atol=1e-4)


def test_cross_validation_predicts_each_complex_once(complex_task, tmp_path):
    folds = train(complex_task, tmp_path / "a")
    table = pd.read_csv(complex_task / "data/table.tsv", sep="\t")
    predictions = pd.read_csv(tmp_path / "a/predictions.tsv", sep="\t")
    test = predictions[predictions.split == "test"].set_index("id")
    assert sorted(test.index) == sorted(table.id)
    assert (test.fold[table.id].to_numpy() == table.fold.to_numpy()).all()
    assert len(folds) == 3 and set(folds.columns) >= {"spearman", "pearson", "rmse", "mae"}
    # ddG: mutant minus wild type, by the model of the complex's test fold.
    mutations = pd.read_csv(tmp_path / "a/mutations.tsv", sep="\t")
    assert len(mutations) == pd.read_csv(complex_task / "complex_mutations.csv").shape[0]
    np.testing.assert_allclose(
        mutations.ddg_predicted, mutations.mutant - mutations.wild, atol=1e-5
    )
    assert (mutations.fold.to_numpy() == test.fold[mutations.id].to_numpy()).all()
    ddg = predictions[predictions.split == "ddg"]
    np.testing.assert_allclose(ddg.prediction, mutations.ddg_predicted, atol=1e-5)
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    assert manifest["folds"] == 3 and len(manifest["fold_metrics"]) == 3
    assert manifest["backbone"]["pooling"] == "none"
    # The same seed on the CPU gives the same numbers.
    train(complex_task, tmp_path / "b")
    again = pd.read_csv(tmp_path / "b/predictions.tsv", sep="\t")
    pd.testing.assert_frame_equal(predictions, again)


@pytest.mark.parametrize("method", ["lora", "copra"])
def test_adapters_train_in_every_fold(complex_task, tmp_path, method):
    settings = ComplexTrainingSettings(learning_rate=1e-3, max_epochs=1, batch_size=4)
    train(complex_task, tmp_path, method, settings=settings)
    from safetensors.torch import load_file

    states = load_file(tmp_path / "folds.safetensors")
    names = {k.split(".", 1)[1] for k in states}
    assert {f"fold{k}" for k in range(3)} == {k.split(".")[0] for k in states}
    lora = [n for n in names if "lora_" in n]
    assert lora and all(
        "lora_A" in n or "lora_B" in n or "coformer" in n or "rna" in n for n in names
    )
    # lora_B starts at zero: training moved it.
    assert any(states[f"fold0.{n}"].abs().sum() > 0 for n in lora if "lora_B" in n)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["lora"]["rank"] == 8
    # The method's own sections only: layer dropping is recorded for copra runs alone.
    assert ("layer_drop" in manifest) == (method == "copra")
    if method == "copra":
        assert manifest["layer_drop"] == asdict(LayerDropSettings())


def test_a_given_split_is_one_fold(complex_task, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("chains", "patches", "mutations", "residue_embeddings.npz"):
        source = complex_task / "data" / (name if "." in name else f"{name}.tsv")
        (data / source.name).write_bytes(source.read_bytes())
    table = pd.read_csv(complex_task / "data/table.tsv", sep="\t")
    table["split"] = ["train"] * 6 + ["valid"] * 3 + ["test"] * 3
    table["fold"] = 0
    table.to_csv(data / "table.tsv", sep="\t", index=False)
    training = ComplexTraining(Head(), 0, settings=FAST, coformer=SMALL)
    run_complex(
        data, tmp_path / "run", training, residue_embeddings=data / "residue_embeddings.npz"
    )
    predictions = pd.read_csv(tmp_path / "run/predictions.tsv", sep="\t")
    assert predictions.groupby("split").size().to_dict()["valid"] == 3
    assert (predictions[predictions.split != "ddg"].fold == 0).all()
    assert sorted(predictions.id[predictions.split == "test"]) == sorted(table.id[9:])


def test_long_chains_go_through_the_window_around_their_patch():
    backbone = MODEL.load()
    residues = BackboneResidues(backbone.model, backbone.alphabet, 6, max_residues=50).eval()
    sequence = "".join(np.random.default_rng(0).choice(list("ACDEFGHIKLMNPQRSTVWY"), 200))
    positions = np.array([90, 100, 110, 180])  # mean 120: the window is 95..144
    assert residues.window(sequence, positions) == 95
    with torch.no_grad():
        (features,) = residues([("A", sequence, positions)])
        _, _, tokens = backbone.alphabet.get_batch_converter()([("", sequence[95:145])])
        reps = backbone.model(tokens, repr_layers=[6])["representations"][6][0]
    torch.testing.assert_close(features[1:3], reps[[1 + 5, 1 + 15]])
    assert (features[0] == 0).all()  # outside the window: no feature
    assert (features[3] == 0).all()  # outside the window: no feature


def test_missing_residue_embeddings_are_a_clear_error(complex_task, tmp_path):
    _, inputs, _ = read_complexes(complex_task / "data")
    empty = tmp_path / "empty.npz"
    np.savez(
        empty,
        ids=np.array(["x"]),
        embeddings=np.zeros((2, 320), np.float32),
        lengths=np.array([2]),
        metadata=np.array("{}"),
    )
    training = ComplexTraining(Head(), 0, settings=replace(FAST, folds=3), coformer=SMALL)
    with pytest.raises(InputError, match="has no per-residue embedding; re-run"):
        run_complex(complex_task / "data", tmp_path / "run", training, residue_embeddings=empty)
    with pytest.raises(InputError, match="complex tasks train with head, lora, copra"):
        run_complex(complex_task / "data", tmp_path / "run", ComplexTraining(Full(), 0))
    assert not (tmp_path / "run").exists() and inputs


def test_predict_gives_out_of_fold_predictions_and_scores_new_complexes(complex_task, tmp_path):
    """`copra predict` on a complex run: its own complexes exactly as its predictions.tsv (the
    fold that held each out), new ones (other structures) the mean over the folds."""
    from copra.cli import main

    train(complex_task, tmp_path / "head")
    settings = ComplexTrainingSettings(learning_rate=1e-3, max_epochs=1, batch_size=4)
    train(complex_task, tmp_path / "lora", "lora", settings=settings)
    new, structures = tmp_path / "new", tmp_path / "structures"
    write_demo_complexes(new, 3, seed=7)
    own = pd.read_csv(complex_task / "complexes.csv").head(4)
    others = pd.read_csv(new / "complexes.csv").assign(pdb=lambda t: "new_" + t.pdb)
    structures.mkdir()
    for name in [*own.pdb, *others.pdb]:
        source = new / "structures" / f"{name[4:]}.pdb" if name.startswith("new_") else None
        source = source or complex_task / "structures" / f"{name}.pdb"
        (structures / f"{name}.pdb").write_bytes(source.read_bytes())
    table = tmp_path / "complexes.csv"
    pd.concat([own, others]).drop(columns=["dG_kcal_mol"]).to_csv(table, index=False)
    for method in ("head", "lora"):
        out = tmp_path / f"{method}.tsv"
        words = ["predict", "--run", tmp_path / method, "--complexes", table]
        words += ["--structures", structures, "--output", out]
        words += ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]
        words += ["--cache-dir", complex_task / "cache"]
        assert main(list(map(str, words))) == 0
        predicted = pd.read_csv(out, sep="\t")
        assert predicted.in_training.tolist() == [True] * 4 + [False] * 3
        saved = pd.read_csv(tmp_path / method / "predictions.tsv", sep="\t")
        saved = saved[saved.split == "test"].set_index("id")
        mine = predicted.head(4).set_index("id")
        assert (mine["prediction@seed0"] == saved.prediction[mine.index]).all(), method
        assert (mine.held_out_fold == saved.fold[mine.index]).all()
        assert predicted.tail(3).held_out_fold.isna().all()
        assert predicted.prediction.notna().all()

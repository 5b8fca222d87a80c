"""Cross-validated complex runs (copra/complex_training.py) applied to complexes.

Each fold's model is rebuilt as it trained (the method, the Co-Former, the seed) and its weights
are read from `folds.safetensors`. A complex of the run's own table gets the prediction of the
fold that held it out, exactly as in the run's predictions.tsv; any other complex the mean over
the folds. Each complex goes through a model alone, as cross-validation scored it.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from copra.complex_training import (
    CachedResidues,
    FoldRun,
    complex_inputs,
    fold_plan,
    predict,
)
from copra.complexes import ingest_complexes
from copra.device import pick_device
from copra.errors import InputError
from copra.settings import (
    CoFormerSettings,
    ComplexSettings,
    ComplexTrainingSettings,
    EmbeddingSettings,
    from_section,
)
from copra.targets import Targets

log = logging.getLogger(__name__)


def read_new_complexes(table, structures, settings: ComplexSettings):
    """Complexes to score (`pdb,protein_chains,rna_chains`, labels not needed), checked and cut
    into patches as ingest does for training."""
    if table is None or structures is None:
        raise InputError(
            "the runs are of a complex task (complex_regression): give the complexes "
            "(a table pdb,protein_chains,rna_chains) and their structures folder"
        )
    ingested = ingest_complexes(table, structures, settings=settings, to_predict=True)
    return ingested, complex_inputs(ingested.chains, ingested.patches)


class FoldModels:
    """One complex run's fold models, and what each fold trained on."""

    def __init__(self, run, data_dir: Path, backbone, embedding: EmbeddingSettings, chains):
        self.run, self.manifest = run, run.manifest
        self.settings = ComplexTrainingSettings(**self.manifest["settings"])
        coformer = CoFormerSettings(**self.manifest["coformer"])
        self.fold_run = FoldRun(run.method, self.settings, coformer)
        self.table = pd.read_csv(data_dir / "table.tsv", sep="\t", dtype={"id": str})
        self.chains = pd.read_csv(data_dir / "chains.tsv", sep="\t", dtype={"id": str})
        self.plan = fold_plan(self.table, self.settings.folds)
        self.states = load_file(str(run.folder / "folds.safetensors"))
        if run.method.cached_embeddings:
            self.fold_run.cached = cached_residues(run, backbone, embedding, chains)
        else:
            self.fold_run.backbone = backbone

    def targets(self, k: int) -> Targets:
        """Fold k's label standardization (its training complexes')."""
        label = dict(zip(self.table.id, self.table.label.astype(float), strict=True))
        train = pd.Series([label[i] for i in self.plan[k]["train"]])
        return Targets.from_training("sequence_regression", train)

    def model(self, k: int):
        """Fold k's model with its trained weights."""
        model = self.fold_run.build(self.manifest["seed"] + 1000 * k)
        prefix = f"fold{k}."
        state = {n[len(prefix) :]: t for n, t in self.states.items() if n.startswith(prefix)}
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise InputError(
                f"folds.safetensors does not fit the model: {result.unexpected_keys[:3]}",
                path=self.run.folder,
            )
        return model

    def held_out(self) -> dict[tuple, int]:
        """The run's complexes (`complex_keys`) -> the fold that tested it."""
        tested = {i: k for k, ids in enumerate(self.plan) for i in ids["test"]}
        keys = complex_keys(self.table, self.chains)
        return {key: tested[key[0]] for key in keys if key[0] in tested}


def complex_keys(table: pd.DataFrame, chains: pd.DataFrame) -> list[tuple]:
    """Per complex: its id, chains and their sequences' hashes (what makes two the same)."""
    hashes = chains.groupby("id", sort=False).seq_hash.apply(tuple).to_dict()
    columns = (table.id, table.protein_chains, table.rna_chains)
    return [(i, p, r, hashes.get(i, ())) for i, p, r in zip(*columns, strict=True)]


def cached_residues(run, backbone, configured: EmbeddingSettings, chains: pd.DataFrame):
    """Per-residue embeddings of the complexes' protein chains as the run had them (cache)."""
    from copra.embed import embed_unique, recorded_settings

    recorded = run.manifest["backbone"]
    settings = recorded_settings(recorded, configured)
    proteins = chains[chains.kind == "protein"]
    sequences = dict(zip(proteins.seq_hash, proteins.sequence, strict=False))
    vectors = embed_unique(backbone, sequences, settings, {k: k for k in sequences})
    return CachedResidues(vectors=vectors, metadata=recorded)


def score_complexes(runs, data_dir, backbone, embedding, table, structures):
    """The complexes' table, the fold that held each out (-1: none), and per seed their
    predictions."""
    made = json.loads((data_dir / "manifest.json").read_text())["config"]["complex"]
    ingested, inputs = read_new_complexes(table, structures, from_section(ComplexSettings, made))
    rows = ingested.table
    device = pick_device(embedding.device)
    per_seed, source = [], None
    for run in runs:
        models = FoldModels(run, data_dir, backbone, embedding, ingested.chains)
        held_out = models.held_out()
        keys = complex_keys(rows, ingested.chains)
        own = np.array([held_out.get(key, -1) for key in keys])
        values = np.full((len(rows), len(models.plan)), np.nan, dtype=np.float32)
        for k in range(len(models.plan)):
            log.info("%s: fold %d", run.folder, k)
            model, targets = models.model(k).to(device), models.targets(k)
            for i, name in enumerate(rows.id):
                if own[i] in (-1, k):
                    outputs = predict(model, [inputs[name]], 1, device)
                    values[i, k] = targets.scores(torch.from_numpy(outputs))[0, 0]
        chosen = np.where(own >= 0, values[np.arange(len(rows)), np.maximum(own, 0)], 0)
        mean = np.nanmean(values, axis=1).astype(np.float32)
        per_seed.append(np.where(own >= 0, chosen, mean).reshape(-1, 1).astype(np.float32))
        source = own
    return rows, source, per_seed

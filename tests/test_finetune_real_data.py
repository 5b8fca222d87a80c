"""LoRA and CopRA fine-tuning for a few steps on real data: yeast PPI pairs and GB1 fitness.

Small subsets of `../shared/data` in their own formats go through `run_ingest` and `run_finetune`
with the real ESM-2 t6 architecture and seeded random weights (no pretrained weights here).
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open

from copra import methods
from copra.finetune import Training, run_finetune
from copra.ingest import run_ingest
from copra.methods.layer_drop import LayerDropSettings
from copra.sequences import read_fasta
from copra.settings import FinetuneSettings, IngestSettings, ModelSettings, TaskSettings

pytestmark = pytest.mark.slow

MODEL = "esm2_t6_8M_UR50D"
NUM_LAYERS = 6
SETTINGS = FinetuneSettings(
    batch_size=8,
    gradient_accumulation=1,
    max_epochs=1,
    patience=1,
    eval_batch_size=16,
    max_residues=256,  # GB1 (265 aa) is cropped: random windows in training, truncated in eval
)
SPLIT = IngestSettings({"train": 0.6, "valid": 0.2, "test": 0.2}, split_seed=0)
MAX_YEAST_LENGTH = 250
EVALUATED = ("valid", "test")  # the splits predictions.tsv covers (no forward pass on train)


def yeast_pairs(shared_data, folder, positives=12, negatives=20, seed=0):
    """Headerless pairs of short proteins (both < 250 aa), in the D-SCRIPT file's own format."""
    lengths = {
        r.id: len(r.sequence) for r in read_fasta(shared_data / "ppi_yeast" / "sequences.fasta")
    }
    pairs = pd.read_csv(shared_data / "ppi_yeast" / "pairs.tsv", sep="\t", header=None)
    short = pairs[
        (pairs[0].map(lengths) < MAX_YEAST_LENGTH) & (pairs[1].map(lengths) < MAX_YEAST_LENGTH)
    ]
    chosen = pd.concat(
        [
            short[short[2] == 1.0].sample(positives, random_state=seed),
            short[short[2] == 0.0].sample(negatives, random_state=seed),
        ]
    ).sample(frac=1, random_state=seed)
    path = folder / "yeast_pairs.tsv"
    chosen.to_csv(path, sep="\t", header=False, index=False)
    return path


def gb1_variants(shared_data, folder, per_split=20, seed=0):
    """GB1 variants with a split column from FLIP's `set` and `validation` columns."""
    frame = pd.read_csv(shared_data / "gb1" / "sampled.csv")
    validation = frame["validation"].astype(str).str.lower() == "true"
    frame["split"] = np.where(validation, "valid", frame["set"])
    chosen = pd.concat(
        [
            frame[frame.split == split].sample(per_split, random_state=seed)
            for split in ("train", "valid", "test")
        ]
    )
    path = folder / "gb1.csv"
    chosen.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tasks(shared_data, tmp_path_factory):
    """The two ingested tasks: {name: (task settings, table path, sequences path)}."""
    folder = tmp_path_factory.mktemp("real_tasks")
    configured = {
        "yeast": TaskSettings(
            "pair_classification",
            labels=str(yeast_pairs(shared_data, folder)),
            sequences=str(shared_data / "ppi_yeast" / "sequences.fasta"),
            header=False,
        ),
        "gb1": TaskSettings(
            "sequence_regression",
            labels=str(gb1_variants(shared_data, folder)),
            columns={"sequence": "sequence", "label": "target", "split": "split"},
        ),
    }
    out = {}
    for name, task in configured.items():
        table, sequences = folder / f"{name}_table.tsv", folder / f"{name}_sequences.tsv"
        run_ingest(task, table, sequences, SPLIT)
        out[name] = (task, table, sequences)
    return out


@pytest.fixture(scope="module")
def finetuned(tasks, tmp_path_factory):
    """Fine-tune (task, method) once per module; its run folder."""
    runs = {}

    def run(name, method):
        if (name, method) not in runs:
            task, table, sequences = tasks[name]
            out_dir = tmp_path_factory.mktemp(f"{name}_{method}")
            model = ModelSettings(name=MODEL, weights="random")
            training = Training(task, methods.get(method)(), 0, model, SETTINGS)
            run_finetune(table, sequences, out_dir, training)
            runs[name, method] = out_dir
        return runs[name, method]

    return run


def test_ingested_subsets_are_the_real_data(tasks):
    _, table, sequences = tasks["yeast"]
    yeast = pd.read_csv(table, sep="\t")
    seqs = pd.read_csv(sequences, sep="\t")
    assert len(yeast) == 32 and yeast.id_a.str.startswith("4932.").all()
    assert set(yeast.label) == {0, 1}
    assert set(yeast[yeast.split == "train"].label) == {0, 1}
    assert seqs.length.between(50, MAX_YEAST_LENGTH - 1).all()
    assert set(seqs.seq_hash) == set(yeast.hash_a) | set(yeast.hash_b)

    _, table, sequences = tasks["gb1"]
    gb1 = pd.read_csv(table, sep="\t")
    assert gb1.split.value_counts().to_dict() == {"train": 20, "valid": 20, "test": 20}
    assert (pd.read_csv(sequences, sep="\t").length == 265).all()
    assert gb1.label.between(0, 9).all()


@pytest.mark.parametrize("method", ["lora", "copra"])
@pytest.mark.parametrize("name", ["yeast", "gb1"])
def test_finetune_writes_a_complete_run(tasks, finetuned, name, method):
    task, table_path, _ = tasks[name]
    out = finetuned(name, method)
    for path in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "head.safetensors",
        "targets.json",
        "training_log.tsv",
        "manifest.json",
        "predictions.tsv",
    ]:
        assert (out / path).is_file(), path
    assert not (out / "checkpoint.pt").exists()

    table = pd.read_csv(table_path, sep="\t")
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    keys = ["id_a", "id_b"] if task.kind == "pair_classification" else ["id"]
    evaluated = table[table.split.isin(EVALUATED)].reset_index(drop=True)
    assert len(predictions) == len(evaluated) > 0
    assert predictions[keys].equals(evaluated[keys])
    assert predictions.split.tolist() == evaluated.split.tolist()
    assert predictions.label.tolist() == evaluated.label.tolist()
    score = "prediction" if name == "gb1" else "score"
    assert list(predictions.columns) == [*keys, "split", "label", score]
    assert np.isfinite(predictions[score]).all()
    if name == "yeast":
        assert predictions.score.between(0, 1).all()
    else:  # regression in label units: de-standardized, not stuck at one value
        assert predictions.prediction.std() > 0

    log = pd.read_csv(out / "training_log.tsv", sep="\t")
    assert len(log) == 1 and log.epoch.tolist() == [1]
    assert np.isfinite(log.train_loss).all() and np.isfinite(log.valid_loss).all()

    manifest = json.loads((out / "manifest.json").read_text())
    train_rows = int((table.split == "train").sum())
    assert manifest["optimizer_steps"] == math.ceil(train_rows / SETTINGS.batch_size)
    assert manifest["epochs_run"] == 1
    assert manifest["backbone"] == {"name": MODEL, "weights": "random-seed0"}
    assert 0 < manifest["trainable_parameters"] < manifest["total_parameters"]
    wrapped = manifest["wrapped_modules"]
    assert len(wrapped) == 2 * NUM_LAYERS
    for layer in range(NUM_LAYERS):
        for target in ("k_proj", "v_proj"):
            assert sum(w.endswith(f"layers.{layer}.self_attn.{target}") for w in wrapped) == 1

    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"k_proj", "v_proj"}
    assert MODEL in config["base_model_name_or_path"]
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as adapter:
        keys = list(adapter.keys())
    assert len(keys) == 2 * 2 * NUM_LAYERS  # lora_A and lora_B of every wrapped module
    assert all("lora_A" in k or "lora_B" in k for k in keys)


@pytest.mark.parametrize("name", ["yeast", "gb1"])
def test_copra_records_layer_dropping(tasks, finetuned, name):
    out = finetuned(name, "copra")
    manifest = json.loads((out / "manifest.json").read_text())
    steps = manifest["optimizer_steps"]
    history = pd.read_csv(out / "layer_drop.tsv", sep="\t")
    assert history.step.tolist() == list(range(steps))
    assert history.p_active.iloc[0] == pytest.approx(LayerDropSettings().p0)
    assert history.p_active.is_monotonic_increasing and (history.p_active <= 1).all()
    assert history.active_layers.between(1, NUM_LAYERS).all()

    counts = manifest["layer_activation_counts"]
    assert sorted(counts, key=int) == [str(i) for i in range(NUM_LAYERS)]
    assert all(0 <= c <= steps for c in counts.values())
    assert sum(counts.values()) == history.active_layers.sum()
    assert manifest["layer_drop"] == {
        "p0": LayerDropSettings().p0,
        "stage1_fraction": LayerDropSettings().stage1_fraction,
        "schedule": LayerDropSettings().schedule,
    }
    assert manifest["lora"]["rank"] == 8 and len(manifest["wrapped_modules"]) == 2 * NUM_LAYERS


@pytest.mark.parametrize("name", ["yeast", "gb1"])
def test_lora_has_no_layer_dropping(finetuned, name):
    out = finetuned(name, "lora")
    manifest = json.loads((out / "manifest.json").read_text())
    assert not (out / "layer_drop.tsv").exists()
    # A lora run's manifest records its own sections only: no layer-dropping keys at all.
    assert "layer_activation_counts" not in manifest
    assert "layer_drop" not in manifest
    assert "lora" in manifest and "wrapped_modules" in manifest

"""copra's GPU paths (marker `gpu`): they run where torch sees a CUDA device and skip elsewhere;
`COPRA_GPU_CHECK=cpu` runs them on the CPU (`benchmarks/gpu_check.sh --cpu`: proof that the
prepared check is not broken, not of the GPU paths). Each measured value is also appended to
`$COPRA_GPU_CHECK_OUT/gpu_tests.tsv` (check, value, bound)."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from copra.backbone import load_backbone
from copra.cli import main
from copra.embed import embed_sequences
from copra.settings import EmbeddingSettings
from tests.conftest import (
    KILLED_MID_EPOCH,
    finetune_argv,
    kill_when_marked,
    small_regression_task,
    train_runs,
)

pytestmark = pytest.mark.gpu
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
ONE_EPOCH = ["--batch-size", "8", "--max-epochs", "1"]


def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("COPRA_GPU_CHECK") == "cpu":
        return "cpu"
    pytest.skip("needs a CUDA GPU (COPRA_GPU_CHECK=cpu runs it on the CPU)")


def record(check: str, value, bound: str = "") -> None:
    """A measured value of the check, appended to $COPRA_GPU_CHECK_OUT/gpu_tests.tsv."""
    out = os.environ.get("COPRA_GPU_CHECK_OUT")
    print(f"{check}: {value} {bound}")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / "gpu_tests.tsv"
        new = not path.exists()
        with path.open("a") as table:
            table.write("check\tdevice\tvalue\tbound\n" if new else "")
            table.write(f"{check}\t{device()}\t{value}\t{bound}\n")


def random_sequences(count: int, low: int, high: int, seed: int = 0) -> list[str]:
    generator = np.random.default_rng(seed)
    lengths = generator.integers(low, high + 1, count)
    return ["".join(generator.choice(list(AMINO_ACIDS), n)) for n in lengths]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    return (folder, *small_regression_task(folder))


def test_bf16_embeddings_against_float32_on_the_cpu():
    """Mean-pooled vectors under bf16 autocast (the GPU) against float32 on the CPU; bound:
    every cosine similarity above 0.999 and the largest difference below 5% of the largest
    value (bf16 keeps 8 bits of mantissa)."""
    where = device()
    backbone = load_backbone("esm2_t6_8M_UR50D", "random")
    sequences = random_sequences(12, 30, 300)
    reference = embed_sequences(backbone, sequences, EmbeddingSettings(device="cpu"))
    vectors = embed_sequences(backbone, sequences, EmbeddingSettings(device=where))
    cosine = (vectors * reference).sum(1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
    )
    relative = float(np.abs(vectors - reference).max() / np.abs(reference).max())
    record("embedding bf16 vs float32 CPU: largest difference / largest value", relative, "< 0.05")
    record("embedding bf16 vs float32 CPU: smallest cosine", float(cosine.min()), "> 0.999")
    assert relative < 0.05 and cosine.min() > 0.999


def test_out_of_memory_halves_the_batch_until_everything_is_embedded(caplog):
    """The 650M architecture on a card capped at its weights plus 512 MiB, one batch of 32
    sequences of 1,000 residues: out of memory, halved until it fits, every vector made."""
    if device() != "cuda":
        pytest.skip("running out of GPU memory on purpose needs a GPU")
    backbone = load_backbone("esm2_t33_650M_UR50D", "random")
    sequences = random_sequences(32, 1000, 1000, seed=1)
    settings = EmbeddingSettings(device="cuda", batch_tokens=10**6)
    alone = embed_sequences(backbone, sequences[:2], EmbeddingSettings(device="cuda"))
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 2**29) / total)
    try:
        with caplog.at_level(logging.WARNING, logger="copra.embed"):
            vectors = embed_sequences(backbone, sequences, settings)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    halvings = caplog.text.count("retrying in halves")
    record("out-of-memory fallback: halvings of a 32-sequence batch", halvings, ">= 1")
    assert halvings >= 1
    assert vectors.shape == (32, backbone.embed_dim) and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[:2], alone, rtol=0.05, atol=0.05 * np.abs(alone).max())


@pytest.mark.parametrize("method", ["lora", "copra", "full"])
def test_a_training_run_on_the_device(task, method):
    """One epoch of the demo's regression task: bf16 autocast and CUDA peak memory recorded."""
    where = device()
    folder, table, sequences = task
    run = folder / f"{method}-{where}"
    argv = finetune_argv(method, "sequence_regression", table, sequences, run, *ONE_EPOCH)
    assert main([*argv, "--device", where]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    record(f"{method} training: peak memory (MB)", manifest["peak_memory_mb"])
    record(f"{method} training: wall time (s)", manifest["wall_time_s"])
    assert manifest["device"].startswith(where)
    if where == "cuda":
        assert manifest["precision"] == "bf16" and manifest["peak_memory_mb"] > 0


def test_a_killed_run_resumes_on_the_device(task):
    """Killed mid-epoch 2, the rerun resumes from epoch 1's checkpoint and finishes its epochs."""
    where = device()
    folder, table, sequences = task
    run, marker = folder / f"killed-{where}", folder / f"marker-{where}"
    flags = ["--batch-size", "8", "--max-epochs", "3", "--patience", "3", "--device", where]
    argv = finetune_argv("lora", "sequence_regression", table, sequences, run, *flags)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_EPOCH, str(marker), *argv], stderr=subprocess.PIPE
    )
    kill_when_marked(process, marker)
    assert (run / "checkpoint.pt").is_file()
    assert main(argv) == 0
    log = pd.read_csv(run / "training_log.tsv", sep="\t")
    record("resumed run: epochs in its log", len(log), "3")
    assert list(log.epoch) == [1, 2, 3]


def tables_of(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p, sep="\t") for p in sorted(folder.rglob("*.tsv"))}


def test_merging_and_lmc_on_the_device_match_the_cpu(task):
    """`copra merge` and `copra lmc` (float32 merges, scored on the device) against the same
    commands with no GPU visible: every number within 1e-3 of the largest."""
    where = device()
    folder, table, sequences = task
    runs = train_runs(folder / "seeds", table, sequences, [0, 1])
    backbone = ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]
    data = ["--table", table, "--sequences", sequences, "--task", "stability"]
    commands = {
        "merge": ["merge", "--runs", *runs, *data, "--schemes", "1:1"],
        "lmc": ["lmc", "--run-a", runs[0], "--run-b", runs[1], *data, "--alphas", "3"],
    }
    for name, words in commands.items():
        outputs = {}
        sides = {"device": {}, "cpu": {"CUDA_VISIBLE_DEVICES": ""}}
        for side, env in sides.items() if where == "cuda" else [("device", {})]:
            out = folder / f"{name}-{side}"
            argv = [*map(str, words), *backbone, "--output", str(out / f"{name}.tsv")]
            command = [sys.executable, "-m", "copra", "--threads", "1", *argv]
            subprocess.run(command, check=True, env={**os.environ, **env}, capture_output=True)
            outputs[side] = tables_of(out)
        outputs.setdefault("cpu", outputs["device"])  # the CPU mode: one side, compared to itself
        assert outputs["device"].keys() == outputs["cpu"].keys() and outputs["cpu"]
        for table_name, cpu in outputs["cpu"].items():
            here = outputs["device"][table_name]
            numbers = cpu.select_dtypes("number").columns
            scale = max(float(cpu[numbers].abs().max().max()), 1.0)
            difference = float((here[numbers] - cpu[numbers]).abs().max().max())
            record(f"{name} {table_name}: device vs CPU, largest difference", difference)
            assert difference <= 1e-3 * scale, (table_name, difference)


def test_the_complex_model_trains_a_fold_on_the_device(tmp_path):
    """The protein-RNA affinity model (Co-Former on per-residue embeddings) cross-validated on
    the device: three folds of 9 demo complexes, one epoch each."""
    from copra import methods
    from copra.complex_training import ComplexTraining, run_complex
    from copra.complexes import run_ingest_complexes
    from copra.demo_complexes import write_demo_complexes
    from copra.embed import run_embed
    from copra.settings import (
        CoFormerSettings,
        ComplexSettings,
        ComplexTrainingSettings,
        ModelSettings,
        TaskSettings,
    )

    where = device()
    write_demo_complexes(tmp_path, 9, seed=1)
    task = TaskSettings(
        "complex_regression",
        labels=tmp_path / "complexes.csv",
        structures=tmp_path / "structures",
        columns={"label": "dG_kcal_mol"},
    )
    run_ingest_complexes(task, tmp_path / "data", ComplexSettings(folds=3, patch_residues=48))
    model = ModelSettings(name="esm2_t6_8M_UR50D", weights="random")
    embeddings = tmp_path / "data/residue_embeddings.npz"
    settings = EmbeddingSettings(pooling="none", long_sequences="windows", device=where)
    run_embed(
        embeddings, model=model, settings=settings, sequence_table=tmp_path / "data/sequences.tsv"
    )
    fast = ComplexTrainingSettings(max_epochs=1, batch_size=4, folds=3, device=where)
    small = CoFormerSettings(embed_dim=32, blocks=2, heads=4, pair_dim=8)
    training = ComplexTraining(methods.get("lora")(), 0, model, fast, coformer=small)
    folds = run_complex(
        tmp_path / "data", tmp_path / "run", training, residue_embeddings=embeddings
    )
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    record("complex model: peak memory (MB)", manifest.get("peak_memory_mb"))
    assert len(folds) == 3 and np.isfinite(folds.pearson.astype(float)).all()

"""Shared fixtures: the repository root, the shared real data, and running Snakemake for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# `--config` values that cut the demo to its head baseline: fast, for tests of the machinery.
ANALYSES = ("lmc", "merging", "federated", "continual", "shapley", "pruning", "predict")


def _head_only() -> tuple[str, ...]:
    """`methods=[head]`, the same for every demo task with methods of its own (but those of
    continual sequences only: `methods: []`), and every analysis switched off (continual: also
    each sequence with methods of its own; design: each problem)."""
    import yaml

    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    own = {
        name: {"methods": ["head"]} for name, entry in demo["tasks"].items() if entry.get("methods")
    }
    sequences = {
        name: {"methods": []}
        for name, entry in demo["continual"]["sequences"].items()
        if "methods" in entry
    }
    designs = {name: {"methods": []} for name in demo.get("design") or {}}
    return (
        "methods=[head]",
        f"tasks={json.dumps(own)}",
        *(f'{section}={{"methods": []}}' for section in ANALYSES if section != "continual"),
        f"continual={json.dumps({'methods': [], 'sequences': sequences})}",
        f"design={json.dumps(designs)}",
    )


HEAD_ONLY = _head_only()
# The ways of using an adapter that the comparison and CopRA's Table r3 report, in their order.
R3_QUANTITIES = [
    "single task",
    "merged seeds 1:1 (exact)",
    "merged seeds 1:1 (linear)",
    "merged tasks (exact)",
    "merged tasks (linear)",
    "pruned every other layer",
    "pruned magnitude_dw 50%",
]


def snakemake(workdir, *args, check=True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in `workdir` with the venv's snakemake."""
    command = [
        str(Path(sys.executable).with_name("snakemake")),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *map(str, args),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def small_regression_task(folder: Path, sequences: int = 40) -> tuple[Path, Path]:
    """The demo's stability task (generated), ingested: its table and sequence table."""
    from copra.demo_data import write_demo_data
    from copra.ingest import run_ingest
    from copra.settings import IngestSettings, TaskSettings

    write_demo_data(folder / "demo", sequences, 0)
    demo = folder / "demo"
    task = TaskSettings("sequence_regression", demo / "stability.tsv", demo / "proteins.fasta")
    table, sequence_table = folder / "table.tsv", folder / "sequences.tsv"
    split = IngestSettings({"train": 0.7, "valid": 0.15, "test": 0.15}, 0)
    run_ingest(task, table, sequence_table, split)
    return table, sequence_table


def finetune_argv(method, kind, table, sequences, out_dir, *extra, seed=0) -> list[str]:
    """`copra finetune` of one task on one thread, ESM-2 8M with seeded random weights."""
    task = ["--method", method, "--kind", kind, "--table", table, "--sequences", sequences]
    run = ["--seed", seed, "--output-dir", out_dir]
    backbone = ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]
    return [str(word) for word in ["--threads", 1, "finetune", *task, *run, *backbone, *extra]]


def train_runs(folder: Path, table, sequences, seeds, method="lora", *extra) -> list[Path]:
    """One-epoch runs of the regression task through the CLI, one folder per seed."""
    import torch

    from copra.cli import main

    threads, runs = torch.get_num_threads(), []
    for seed in seeds:
        runs.append(folder / f"{method}{''.join(extra)}-seed{seed}")
        short = ["--batch-size", "8", "--max-epochs", "1", *extra]
        kind = "sequence_regression"
        assert main(finetune_argv(method, kind, table, sequences, runs[-1], *short, seed=seed)) == 0
    torch.set_num_threads(threads)
    return runs


def rows_as_inputs(table_path, sequences_path, kind, folder: Path, splits=("valid", "test")):
    """Rows of an ingested task's splits as `copra predict` options: a FASTA of their proteins
    (by id) and, for pairs, their pair table."""
    from copra.tables import PAIR_KIND, read_sequences, read_task_table

    table = read_task_table(table_path, kind)
    table = table[table.split.isin(splits)]
    sequences = read_sequences(sequences_path)
    sides = ["a", "b"] if kind == PAIR_KIND else [""]
    named = {}
    for side in sides:
        ids, keys = (f"id_{side}", f"hash_{side}") if side else ("id", "seq_hash")
        named.update(zip(table[ids], (sequences[k] for k in table[keys]), strict=True))
    fasta = folder / "inputs.fasta"
    fasta.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in named.items()))
    if kind != PAIR_KIND:
        return ["--sequences", str(fasta)]
    pairs = folder / "pairs.tsv"
    table[["id_a", "id_b"]].to_csv(pairs, sep="\t", index=False)
    return ["--sequences", str(fasta), "--pairs", str(pairs)]


def scores_as_saved(model, targets, table, sequences):
    """A task model's scores of table rows, computed as a run writes its predictions.tsv."""
    from copra.inference import HeadScorer, NetworkEncoder, score_table
    from copra.tables import PAIR_KIND

    encoder = NetworkEncoder(model, 1022, "cpu", 1)
    scorer = HeadScorer(model.head, targets, model.pair_combination)
    kind = PAIR_KIND if "hash_a" in table else None
    return score_table(encoder, scorer, table, sequences, kind)


def check_predicted_like_saved(predicted_path, run_folder, kind) -> None:
    """`copra predict` output equals the run's own predictions.tsv on those rows, exactly."""
    import pandas as pd

    from copra.tables import key_columns
    from copra.targets import Targets

    targets = Targets.from_json((Path(run_folder) / "targets.json").read_text())
    seed = json.loads((Path(run_folder) / "manifest.json").read_text())["seed"]
    keys = key_columns(kind)
    saved = pd.read_csv(
        Path(run_folder) / "predictions.tsv", sep="\t", dtype={k: str for k in keys}
    )
    predicted = pd.read_csv(predicted_path, sep="\t", dtype={k: str for k in keys})
    merged = saved.merge(predicted, on=keys, validate="many_to_one")
    assert len(merged) == len(saved[saved.split.isin(["valid", "test"])]) > 0
    for column in targets.score_columns():
        assert (merged[column + "_x"] == merged[f"{column}@seed{seed}"]).all(), column


# `python -c KILLED_MID_EPOCH MARKER <copra arguments>`: a fine-tuning job that writes MARKER and
# waits (to be killed) in the middle of epoch 2, after its first checkpoint.
KILLED_MID_EPOCH = "\n".join(
    [
        "import pathlib, runpy, sys, time",
        "from copra import finetune, task_data",
        "marker = pathlib.Path(sys.argv.pop(1))",
        "saved, batches = [], []",
        "save, tokens = finetune.Trainer.save, task_data.Batcher.tokens",
        "def save_and_note(self, path):",
        "    save(self, path)",
        "    saved.append(path)",
        "def tokens_or_wait(self, data, rows, generator=None):",
        "    if saved and generator is not None:  # a training batch after the first checkpoint",
        "        batches.append(rows)",
        "        if len(batches) == 2:  # epoch 2's first batch went backward: wait to be killed",
        "            marker.write_text('mid-epoch 2')",
        "            time.sleep(3600)",
        "    return tokens(self, data, rows, generator)",
        "finetune.Trainer.save = save_and_note",
        "task_data.Batcher.tokens = tokens_or_wait",
        "runpy.run_module('copra', run_name='__main__')",
    ]
)


def kill_when_marked(process, marker: Path) -> None:
    """SIGKILL `process` once it has written `marker` (where it then waits to be killed)."""
    import signal
    import time

    try:
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def check_figure(png: Path) -> None:
    """A figure that shows something: a PNG of at least 300 x 200 pixels that is not one flat
    colour, with its SVG (for print) beside it."""
    from matplotlib import image

    pixels = image.imread(png)
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 300, (png, pixels.shape)
    assert pixels[..., :3].std() > 0.02, f"{png} is (nearly) one colour"
    assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml"), png


def skip_or_fail(reason: str) -> None:
    """Skip a test that cannot run here (no real data, no browser, no SLURM, no root), except
    under COPRA_NO_SKIPS=1 (.ci/run sets it): CI runs every test or fails."""
    if os.environ.get("COPRA_NO_SKIPS") == "1":
        pytest.fail(f"COPRA_NO_SKIPS=1, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        skip_or_fail(f"real data not found at {SHARED_DATA} (it sits beside the repository in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The whole demo (config.yaml), as `make demo` runs it: once per test session."""
    workdir = tmp_path_factory.mktemp("demo")
    snakemake(workdir, "--configfile", REPO / "config.yaml")
    return workdir


@pytest.fixture(scope="session")
def head_only_demo(tmp_path_factory) -> Path:
    """The demo's head baseline (every task, method head, no analyses), run locally once."""
    workdir = tmp_path_factory.mktemp("head_only_demo")
    snakemake(workdir, "--configfile", REPO / "config.yaml", "--config", *HEAD_ONLY)
    return workdir

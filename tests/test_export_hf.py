"""`copra export-hf`: trained runs loaded by transformers and peft alone (a fresh process that
imports no copra module) reproduce the runs' own predictions.tsv."""

import json
import subprocess
import sys

import pytest
import torch

from copra.cli import main
from copra.demo_data import write_demo_data
from copra.ingest import run_ingest
from copra.settings import IngestSettings, TaskSettings
from tests.conftest import finetune_argv, small_regression_task
from tests.esm_checkpoints import write_hf_checkpoint

BACKBONE = ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]
ONE_EPOCH = ["--batch-size", "8", "--max-epochs", "1"]

# Run in a fresh process: scores every valid and test row of each export as the export's README
# says, and prints the largest difference from the run's predictions.tsv per export.
LOAD_WITHOUT_COPRA = """
import csv, json, sys
from pathlib import Path
import torch
from peft import PeftModel
from transformers import AutoTokenizer, EsmModel

def read(path):
    return list(csv.DictReader(open(path), delimiter="\\t"))

differences = {}
for case in json.loads(sys.argv[1]):
    export = case["export"]
    sys.path.insert(0, export)
    import copra_head
    model = EsmModel.from_pretrained(case["base"], add_pooling_layer=False)
    if (Path(export) / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(model, export)
    tokenizer = AutoTokenizer.from_pretrained(export)
    residues = {r["seq_hash"]: r["sequence"] for r in read(case["sequences"])}
    sides = ["_a", "_b"] if case["pairs"] else [""]
    saved = [r for r in read(Path(case["run"]) / "predictions.tsv") if r["split"] != "train"]
    table = {tuple(r["id" + s] for s in sides): r for r in read(case["table"])}
    rows = [table[tuple(r["id" + s] for s in sides)] for r in saved]
    hashes = ["hash" + s if s else "seq_hash" for s in sides]
    head = copra_head.load(export)
    proteins = [[residues[r[h]] for r in rows] for h in hashes]
    scores = head.predict(model.eval(), tokenizer, *proteins)
    expected = torch.tensor([[float(r[c]) for c in head.score_columns] for r in saved])
    differences[export] = [(scores - expected.double()).abs().max().item(), len(saved)]
    sys.path.remove(export)
    del sys.modules["copra_head"]
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "copra")
print(json.dumps({"differences": differences, "copra_modules": loaded}))
"""


def copra(*words) -> int:
    return main(["--threads", "1", *map(str, words)])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Runs of the demo's regression task (LoRA on a Hugging Face checkpoint, truncated at 40
    residues; AdaLoRA; full; a head on windowed embeddings) and of its pair task (LoRA on
    random weights), each exported."""
    folder = tmp_path_factory.mktemp("export_hf")
    threads = torch.get_num_threads()
    hf = write_hf_checkpoint(folder / "hf_esm2", seed=5)
    table, sequences = small_regression_task(folder)
    write_demo_data(folder / "demo", 40, 0)
    demo = folder / "demo"
    pairs = TaskSettings("pair_classification", demo / "interactions.tsv", demo / "partners.fasta")
    pair_table, pair_sequences = folder / "pairs.tsv", folder / "pairs.sequences.tsv"
    split = IngestSettings({"train": 0.7, "valid": 0.15, "test": 0.15}, 0)
    run_ingest(pairs, pair_table, pair_sequences, split)
    regression = ("sequence_regression", table, sequences)
    with_base = [*BACKBONE, "--include-base"]
    trained = {  # name: (task, method, training options, export options)
        "lora_hf": (regression, "lora", ["--weights", hf, "--max-residues", 40], []),
        "adalora": (regression, "adalora", ["--max-epochs", 4], with_base),
        "full": (regression, "full", [], BACKBONE),
        "lora_pairs": (("pair_classification", pair_table, pair_sequences), "lora", [], with_base),
    }
    cases = []
    for name, ((kind, rows, residues), method, extra, options) in trained.items():
        run, export = folder / name, folder / f"{name}.export"
        argv = finetune_argv(method, kind, rows, residues, run, *ONE_EPOCH, *map(str, extra))
        assert main(argv) == 0
        assert copra("export-hf", "--run", run, "--output", export, *options) == 0
        base = export / "base" if options == with_base else export if options else hf
        cases.append(case(export, run, rows, residues, base, kind.startswith("pair")))
    cases.append(head_run_export(folder, table, sequences))
    torch.set_num_threads(threads)
    return {"folder": folder, "cases": cases, "hf": hf}


def case(export, run, table, sequences, base, pairs) -> dict:
    names = ("export", "run", "table", "sequences", "base")
    values = (export, run, table, sequences, base)
    return {**{k: str(v) for k, v in zip(names, values, strict=True)}, "pairs": pairs}


def head_run_export(folder, table, sequences) -> dict:
    """A head run on embeddings of 30-residue windows (stride 10) of the 40 sequences."""
    embeddings = folder / "windows.npz"
    windows = ["--long-sequences", "windows", "--max-residues", 30, "--window-stride", 10]
    cache = ["--cache-dir", folder / "cache"]
    embed = ["embed", "--sequence-table", sequences, "--output", embeddings, *windows, *cache]
    assert copra(*embed, *BACKBONE) == 0
    run = folder / "head"
    train = ["train-head", "--kind", "sequence_regression", "--table", table]
    assert copra(*train, "--embeddings", embeddings, "--output-dir", run, "--seed", 0) == 0
    export = folder / "head.export"
    assert copra("export-hf", "--run", run, "--output", export, *BACKBONE, "--include-base") == 0
    return case(export, run, table, sequences, export / "base", False)


def test_exports_load_in_transformers_and_peft_alone(exports):
    """Every export, loaded as its README says in a process without copra, gives the run's
    saved scores within 1e-5 (measured: below 3e-7)."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_COPRA, json.dumps(exports["cases"])],
        capture_output=True,
        text=True,
        check=True,
        cwd=exports["folder"],
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["copra_modules"] == []
    assert len(found["differences"]) == 5
    for export, (difference, rows) in found["differences"].items():
        assert rows > 0 and difference < 1e-5, (export, difference)


def test_the_adapter_is_in_transformers_names(exports):
    folder = exports["folder"]
    config = json.loads((folder / "lora_hf.export/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "facebook/esm2_t6_8M_UR50D"
    assert "encoder.layer.5.attention.self.key" in config["target_modules"]
    pattern = json.loads((folder / "adalora.export/adapter_config.json").read_text())
    assert all(k.startswith("encoder.layer.") for k in pattern["rank_pattern"])
    readme = (folder / "lora_hf.export/README.md").read_text()
    assert 'EsmModel.from_pretrained("facebook/esm2_t6_8M_UR50D"' in readme
    assert (folder / "full.export/model.safetensors").is_file()
    assert not (folder / "lora_hf.export/base").exists()
    spec = json.loads((folder / "head.export/head.json").read_text())
    assert (spec["long_sequences"], spec["max_residues"], spec["window_stride"]) == (
        "windows",
        30,
        10,
    )


def test_what_cannot_be_exported_is_refused(exports, tmp_path, capsys):
    folder = exports["folder"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/keep.txt").write_text("mine")
    cases = {
        "random weights, no base": (
            [folder / "adalora", tmp_path / "new", *BACKBONE],
            "trained on random weights (random-seed0), which facebook/esm2_t6_8M_UR50D is not",
        ),
        "a folder that is not an export": (
            [folder / "lora_hf", tmp_path / "notes", "--model", "esm2_t6_8M_UR50D"],
            "exists and is not an export",
        ),
        "another backbone": (
            [folder / "full", tmp_path / "new", *BACKBONE[:3], exports["hf"]],
            "was trained on esm2_t6_8M_UR50D (random-seed0), not on",
        ),
        "not a run": ([tmp_path, tmp_path / "new", *BACKBONE], "manifest.json is missing"),
    }
    for name, (words, message) in cases.items():
        run, output, *options = words
        assert copra("export-hf", "--run", run, "--output", output, *options) == 2, name
        assert message in capsys.readouterr().err, name
        assert not (tmp_path / "new").exists(), name
    assert (tmp_path / "notes/keep.txt").read_text() == "mine"

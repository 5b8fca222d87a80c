"""Fine-tuning: outputs, exact reload with peft, determinism, resume after a kill, bad settings,
activation checkpointing."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    KILLED_MID_EPOCH,
    check_predicted_like_saved,
    finetune_argv,
    kill_when_marked,
    rows_as_inputs,
)

from copra import methods, protein_model
from copra.backbone import load_backbone
from copra.cli import main
from copra.demo_data import write_demo_data
from copra.finetune import Trainer
from copra.ingest import run_ingest
from copra.methods.layer_drop import LayerDropSettings
from copra.settings import FinetuneSettings, HeadArchitecture, IngestSettings, TaskSettings
from copra.targets import Targets
from copra.task_data import task_data

SPLIT = IngestSettings({"train": 0.8, "valid": 0.1, "test": 0.1}, 0)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Small demo tasks, ingested: {name: (kind, table, sequences)}."""
    folder = tmp_path_factory.mktemp("tasks")
    write_demo_data(folder / "demo", 40, 0)
    specs = {
        "localization": ("sequence_classification", "localization.tsv", "proteins.fasta"),
        "stability": ("sequence_regression", "stability.tsv", "proteins.fasta"),
        "interaction": ("pair_classification", "interactions.tsv", "partners.fasta"),
    }
    out = {}
    for name, (kind, labels, fasta) in specs.items():
        task = TaskSettings(kind, folder / "demo" / labels, folder / "demo" / fasta)
        table, sequences = folder / name / "table.tsv", folder / name / "sequences.tsv"
        run_ingest(task, table, sequences, SPLIT)
        out[name] = (kind, table, sequences)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def finetune_args(tasks, name, method, out_dir, *extra):
    kind, table, sequences = tasks[name]
    short = ["--batch-size", 8, "--gradient-accumulation", 2, "--max-epochs", 2, "--patience", 2]
    return finetune_argv(method, kind, table, sequences, out_dir, *short, *extra)


@pytest.mark.parametrize(
    ("name", "method"),
    [("localization", "lora"), ("interaction", "copra"), ("stability", "full")],
)
def test_saved_model_reloads_and_reproduces_predictions_exactly(tasks, tmp_path, name, method):
    out = tmp_path / method
    assert main(finetune_args(tasks, name, method, out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    if method == "full":
        assert (out / "backbone.safetensors").is_file()
        assert manifest["trainable_parameters"] == manifest["total_parameters"]
    else:
        adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == "esm2_t6_8M_UR50D@random-seed0"
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        assert 0 < manifest["trainable_parameters"] < manifest["total_parameters"] / 10
        assert len(manifest["wrapped_modules"]) == 12
    assert not (out / "checkpoint.pt").exists()

    # `copra predict` rebuilds the model from the folder and gives its own predictions back
    kind, table_path, sequences_path = tasks[name]
    inputs = rows_as_inputs(table_path, sequences_path, kind, tmp_path)
    backbone = ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]
    predicted = tmp_path / "predicted.tsv"
    assert main(["predict", "--run", str(out), *inputs, "--output", str(predicted), *backbone]) == 0
    check_predicted_like_saved(predicted, out, kind)


def test_copra_logs_schedule_and_activation_counts(tasks, tmp_path):
    assert main(finetune_args(tasks, "localization", "copra", tmp_path, "--max-epochs", 3)) == 0
    schedule = pd.read_csv(tmp_path / "layer_drop.tsv", sep="\t")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    steps = manifest["optimizer_steps"]
    assert list(schedule.step) == list(range(steps))
    ramp = int(np.ceil(0.75 * steps))
    expected = np.minimum(0.1 + 0.9 * schedule.step / ramp, 1.0)
    assert np.allclose(schedule.p_active, expected)
    assert (schedule.active_layers >= 1).all()
    counts = manifest["layer_activation_counts"]
    assert sorted(counts) == [str(i) for i in range(6)]
    assert sum(counts.values()) == schedule.active_layers.sum()


def test_same_seed_same_metrics(tasks, tmp_path):
    for run in ("a", "b"):
        assert main(finetune_args(tasks, "stability", "lora", tmp_path / run)) == 0
    logs = [pd.read_csv(tmp_path / run / "training_log.tsv", sep="\t") for run in ("a", "b")]
    pd.testing.assert_frame_equal(*logs)
    predictions = [(tmp_path / run / "predictions.tsv").read_text() for run in ("a", "b")]
    assert predictions[0] == predictions[1]


def test_killed_job_resumes_to_the_same_result(tasks, tmp_path, caplog):
    """Killed in the middle of epoch 2 (its first accumulated batch done, the step not taken:
    the job waits there until the kill), the rerun resumes from epoch 1's checkpoint and ends
    exactly as an uninterrupted run."""
    args = finetune_args(tasks, "interaction", "copra", tmp_path / "killed", "--max-epochs", 4)
    marker = tmp_path / "mid-epoch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", KILLED_MID_EPOCH, str(marker), *args]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    kill_when_marked(process, marker)
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "killed" / "predictions.tsv").exists()

    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert "after epoch 1" in caplog.text  # the rerun resumed from epoch 1's checkpoint
    straight = finetune_args(
        tasks, "interaction", "copra", tmp_path / "straight", "--max-epochs", 4
    )
    assert main(straight) == 0
    for name in ("training_log.tsv", "predictions.tsv", "layer_drop.tsv"):
        resumed = (tmp_path / "killed" / name).read_text()
        assert resumed == (tmp_path / "straight" / name).read_text(), name


def training_step(method: str, checkpointing: bool):
    """Loss, gradients, active blocks and blocks of one training step of a fresh seeded 8M model
    (CopRA: its draw at step 0 of a p0 = 0.3 schedule, blocks 2 and 3 active)."""
    torch.manual_seed(0)
    backbone = load_backbone("esm2_t6_8M_UR50D", "random", seed=0)
    kind = "sequence_classification"
    targets = Targets.from_training(kind, pd.Series(["a", "b"]))
    chosen = methods.get(method)
    given = {"layer_drop": LayerDropSettings(p0=0.3)} if "layer_drop" in chosen.sections else {}
    chosen = chosen(**given)
    model = chosen.build(backbone, targets.out_dim, kind, HeadArchitecture())
    settings = FinetuneSettings(device="cpu", activation_checkpointing=checkpointing)
    trainer = Trainer(model, chosen, targets, settings, 0, 10)
    if checkpointing:  # a second call (another Trainer on the model) wraps nothing twice
        assert protein_model.checkpoint_blocks(model.backbone) == backbone.num_layers
    dropper = getattr(trainer.method, "dropper", None)
    active = dropper.draw(0) if dropper else list(range(backbone.num_layers))
    sequences = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLEDPVDAFQNNLLKELQKAGW"]
    data = task_data(
        pd.DataFrame({"seq_hash": ["a", "b"], "label": ["a", "b"]}),
        dict(zip("ab", sequences, strict=True)),
        kind,
        targets,
    )
    blocks = [m for m in model.modules() if isinstance(m, protein_model.TransformerLayer)]
    model.train()
    torch.manual_seed(1)  # the same LoRA dropout masks in both runs
    loss = targets.loss(model(*trainer.batcher.tokens(data, [0, 1])), data.targets)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, active, blocks


@pytest.mark.parametrize("method", ["lora", "copra", "full"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(method, monkeypatch):
    calls = []
    original = protein_model.checkpoint

    def recording(forward, *args, **kwargs):
        calls.append(forward.args[0])  # the block of its fused forward (copra.fast_esm)
        return original(forward, *args, **kwargs)

    loss, grads, active, _ = training_step(method, False)
    monkeypatch.setattr(protein_model, "checkpoint", recording)
    loss_ckpt, grads_ckpt, active_ckpt, blocks = training_step(method, True)
    assert active_ckpt == active
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert sorted(grads_ckpt) == sorted(grads) and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # Every block from the lowest active one up runs checkpointed, once per forward; the blocks
    # below it (CopRA's dropped ones there) need no backward and run plainly.
    assert [blocks.index(block) for block in calls] == list(range(min(active), 6))
    if method == "copra":
        assert min(active) > 0 and len(active) < 6, active
        dropped = {f".layers.{i}." for i in range(6) if i not in active}
        assert not [n for n in grads if "lora_" in n and any(d in n for d in dropped)]


def test_activation_checkpointing_through_the_cli(tasks, tmp_path):
    """`--activation-checkpointing True` (as the workflow writes it) trains CopRA the same."""
    for run, extra in (("plain", []), ("checkpointed", ["--activation-checkpointing", "True"])):
        assert main(finetune_args(tasks, "localization", "copra", tmp_path / run, *extra)) == 0
    logs = [
        pd.read_csv(tmp_path / r / "training_log.tsv", sep="\t") for r in ("plain", "checkpointed")
    ]
    np.testing.assert_allclose(logs[1].to_numpy(float), logs[0].to_numpy(float), rtol=1e-4)
    drops = [(tmp_path / r / "layer_drop.tsv").read_text() for r in ("plain", "checkpointed")]
    assert drops[0] == drops[1]
    manifests = [
        json.loads((tmp_path / r / "manifest.json").read_text()) for r in ("plain", "checkpointed")
    ]
    assert [m["settings"]["activation_checkpointing"] for m in manifests] == [False, True]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lora-rank", "400"], "lora.rank 400 does not fit"),
        (["--lora-target-modules", "k_proj", "key"], "not known; valid: q_proj, k_proj"),
        (["--lora-layers-to-transform", "7"], "outside 0..5"),
    ],
)
def test_bad_settings_fail_before_training(tasks, tmp_path, capsys, extra, message):
    assert main(finetune_args(tasks, "localization", "lora", tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_multilabel_task_trains_and_is_evaluated(tmp_path):
    """Several classes per protein: through ingest, training and the metrics."""
    write_demo_data(tmp_path / "demo", 40, 1)
    demo = pd.read_csv(tmp_path / "demo" / "localization.tsv", sep="\t")
    extra = np.where(np.arange(len(demo)) % 2 == 0, ";aromatic", "")  # a second class on half
    demo["label"] = demo.label + extra
    demo.to_csv(tmp_path / "multi.tsv", sep="\t", index=False)
    task = TaskSettings(
        "sequence_classification",
        tmp_path / "multi.tsv",
        tmp_path / "demo" / "proteins.fasta",
        multilabel=True,
    )
    table, sequences = tmp_path / "table.tsv", tmp_path / "sequences.tsv"
    run_ingest(task, table, sequences, SPLIT)
    args = finetune_args(
        {"multi": ("sequence_classification", table, sequences)},
        "multi",
        "lora",
        tmp_path / "run",
        "--multilabel",
        "--max-epochs",
        1,
    )
    assert main(args) == 0
    targets = json.loads((tmp_path / "run" / "targets.json").read_text())
    assert targets["kind"] == "multilabel" and "aromatic" in targets["classes"]
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(tmp_path / "run" / "predictions.tsv"),
                "--targets",
                str(tmp_path / "run" / "targets.json"),
                "--task",
                "multi",
                "--method",
                "lora",
                "--seed",
                "0",
                "--bootstrap",
                "10",
                "--output",
                str(tmp_path / "metrics.tsv"),
            ]
        )
        == 0
    )
    metrics = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert set(metrics.metric) == {"aupr", "auroc", "f1_macro"}


def test_multilabel_head_needs_a_classification_task(tmp_path, capsys):
    (tmp_path / "a.fasta").write_text(">p1\nMKV\n>p2\nMKL\n")
    (tmp_path / "a.tsv").write_text("id\tlabel\tsplit\np1\t1.5\ttrain\np2\t2.0\tvalid\n")
    out = tmp_path / "out"
    args = [
        "ingest",
        "--kind",
        "sequence_regression",
        "--multilabel",
        "--labels",
        str(tmp_path / "a.tsv"),
        "--sequences",
        str(tmp_path / "a.fasta"),
        "--table",
        str(out / "t.tsv"),
        "--sequence-table",
        str(out / "s.tsv"),
    ]
    assert main(args) == 2
    assert "multilabel: true needs kind sequence_classification" in capsys.readouterr().err
    assert not out.exists()


def test_diverging_training_stops_with_a_clear_error(tasks, tmp_path, capsys):
    args = finetune_args(
        tasks,
        "stability",
        "lora",
        tmp_path,
        "--learning-rate",
        "1e30",
        "--max-grad-norm",
        "1e30",
        "--max-epochs",
        1,
    )
    assert main(args) == 2
    assert "training diverged" in capsys.readouterr().err
    assert not (tmp_path / "predictions.tsv").exists()

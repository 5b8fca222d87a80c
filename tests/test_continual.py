"""Continual learning (LAE and its baselines) on the demo's generated sequences, through the CLI:
the one-step and no-EMA identities, metrics recomputed from the saved predictions, the refusals,
a killed job resumed, and a step's expert applied by `copra predict`."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from safetensors.torch import load_file

from copra.cli import main
from copra.continual import SequenceSpec, check_continual, class_steps
from copra.errors import InputError

TASKS = {
    "compartments": ("compartments.tsv", "compartments.fasta"),
    "organism_a": ("organism_a.tsv", "organisms.fasta"),
    "organism_b": ("organism_b.tsv", "organisms.fasta"),
}
CLASSES = ["cytoplasm", "membrane", "mitochondrion", "nucleus", "peroxisome", "secreted"]
BACKBONE = ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The demo's continual tasks (and the regression task), ingested: {task: (table, seqs)}."""
    from copra.demo_data import write_demo_data
    from copra.ingest import run_ingest
    from copra.settings import IngestSettings, TaskSettings

    folder = tmp_path_factory.mktemp("continual")
    write_demo_data(folder / "demo", 90, 0)
    files = {}
    for name, (labels, fasta) in TASKS.items():
        task = TaskSettings(
            "sequence_classification", folder / "demo" / labels, folder / "demo" / fasta
        )
        files[name] = (folder / name / "table.tsv", folder / name / "sequences.tsv")
        run_ingest(task, *files[name], IngestSettings())
    return folder, files


def config(sequence: dict, **continual) -> dict:
    return {
        "tasks": {name: {"kind": "sequence_classification", "labels": "x"} for name in TASKS},
        "continual": {"sequences": {"seq": sequence}, "epochs": 2, "frozen_epochs": 1, **continual},
        "lora": {"rank": 4},
        "finetune": {"batch_size": 16, "patience": 2},
    }


def continual_argv(ingested, out_dir, tree: dict, learner="lae", seed=0, order=0) -> list[str]:
    _, files = ingested
    entry = tree["continual"]["sequences"]["seq"]
    names = [entry["task"]] if "task" in entry else entry["tasks"]
    tasks = [word for name in names for word in ("--task", name, *map(str, files[name]))]
    job = ["--sequence", "seq", "--learner", learner, "--seed", seed, "--order", order]
    argv = ["--threads", 1, "continual", *job, *tasks, "--output-dir", out_dir, *BACKBONE]
    return [*map(str, argv), "--config-json", json.dumps(tree)]


def learn(ingested, out_dir, tree, **job) -> pd.DataFrame:
    assert main(continual_argv(ingested, out_dir, tree, **job)) == 0
    return pd.read_csv(out_dir / "predictions.tsv", sep="\t", dtype={"label": str})


CLASS_STEPS = {"task": "compartments", "classes_per_step": 2}


@pytest.fixture(scope="module")
def lae_run(ingested):
    """LAE over the six compartments in three steps of two (its EMA at the default decay)."""
    folder = ingested[0] / "lae"
    return folder, learn(ingested, folder, config(CLASS_STEPS))


def test_lae_writes_every_step_and_expert(lae_run):
    folder, predictions = lae_run
    assert set(predictions.method) == {"lae", "online", "offline"}
    assert sorted(predictions.after_step.unique()) == [0, 1, 2]
    for t, experts in ((0, {"online"}), (1, {"online", "offline"}), (2, {"online", "offline"})):
        step = folder / f"step{t}"
        assert {p.name for p in step.iterdir() if p.is_dir()} == experts
        targets = json.loads((step / "online" / "targets.json").read_text())
        assert len(targets["classes"]) == 2 * (t + 1)  # the classes seen so far
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["steps"] == [
        "cytoplasm+membrane",
        "mitochondrion+nucleus",
        "peroxisome+secreted",
    ]
    assert manifest["step_seeds"] == [0, 1000, 2000] and manifest["pet"] == "lora"
    assert not (folder / "progress.pt").exists()
    # After the first step the offline expert moved away from the online one (the EMA ran).
    online = load_file(folder / "step2/online/adapter/adapter_model.safetensors")
    offline = load_file(folder / "step2/offline/adapter/adapter_model.safetensors")
    assert online.keys() == offline.keys()
    assert any(not (online[k] == offline[k]).all() for k in online)


def test_metrics_are_recomputed_from_the_saved_predictions(lae_run, tmp_path):
    """a[t, j], A_t, A_last, A_bar and forgetting by hand from predictions.tsv."""
    from copra.continual_metrics import gather_continual

    folder, predictions = lae_run
    table = gather_continual([folder / "predictions.tsv"], tmp_path / "c.tsv", tmp_path / "c.png")
    lae = predictions[predictions.method == "lae"]

    def accuracy(rows, t):
        seen = [c for c in predictions.columns if c.startswith("score:") and rows[c].notna().all()]
        assert len(seen) == 2 * (t + 1)
        chosen = rows[seen].to_numpy().argmax(axis=1)
        labels = [f"score:{label}" for label in rows.label]
        return float(np.mean([seen[k] == label for k, label in zip(chosen, labels, strict=True)]))

    a = {}
    for t in range(3):
        after = lae[lae.after_step == t]
        for j in range(t + 1):
            a[t, j] = accuracy(after[after.on_step == j], t)
    accuracy_rows = table[(table.method == "lae") & (table.metric == "accuracy")]
    cells = accuracy_rows[accuracy_rows.quantity == "a"]
    for row in cells.itertuples():
        assert row.value == pytest.approx(a[int(row.after_step), int(row.on_step)])
    assert len(cells) == 6
    seen = [accuracy(lae[lae.after_step == t], t) for t in range(3)]
    summary = accuracy_rows[accuracy_rows.statistic == "value"].set_index("quantity").value
    assert summary["A_last"] == pytest.approx(seen[-1])
    assert summary["A_bar"] == pytest.approx(np.mean(seen))
    forgetting = np.mean([max(a[t, j] for t in range(j, 2)) - a[2, j] for j in range(2)])
    assert summary["forgetting"] == pytest.approx(forgetting)
    means = table[(table.statistic == "mean") & (table.method == "lae")]
    assert set(means.quantity) == {"A_last", "A_bar", "forgetting"}
    assert set(table.metric) == {"accuracy", "aupr"}


def test_one_step_lae_is_ordinary_fine_tuning(ingested, tmp_path):
    """One step of all six classes: the EMA never starts; the adapter, head and test scores
    are exactly those of `copra finetune` with the same seed and epochs."""
    from conftest import finetune_argv

    _, files = ingested
    continual = learn(ingested, tmp_path / "lae", config({**CLASS_STEPS, "classes_per_step": 6}))
    run = tmp_path / "finetune"
    extra = ["--batch-size", "16", "--max-epochs", "2", "--patience", "2", "--lora-rank", "4"]
    argv = finetune_argv("lora", "sequence_classification", *files["compartments"], run, *extra)
    assert main(argv) == 0
    step = tmp_path / "lae" / "step0" / "online"
    for name in ("adapter/adapter_model.safetensors", "head.safetensors"):
        ours, theirs = load_file(step / name), load_file(run / name)
        assert ours.keys() == theirs.keys()
        assert all((ours[k] == theirs[k]).all() for k in ours), name
    saved = pd.read_csv(run / "predictions.tsv", sep="\t")
    saved = saved[saved.split == "test"].set_index("id")
    lae = continual[continual.method == "lae"].set_index("id")
    columns = [f"score:{c}" for c in CLASSES]
    assert len(lae) == len(saved) > 0
    assert (lae.loc[saved.index, columns].to_numpy() == saved[columns].to_numpy()).all()


def test_ema_decay_zero_makes_the_offline_expert_the_online_one(ingested, tmp_path):
    sequence = {"tasks": ["organism_a", "organism_b"]}
    predictions = learn(ingested, tmp_path, config(sequence, ema_decay=0.0))
    online = load_file(tmp_path / "step1/online/adapter/adapter_model.safetensors")
    offline = load_file(tmp_path / "step1/offline/adapter/adapter_model.safetensors")
    assert all((online[k] == offline[k]).all() for k in online)
    scores = {
        m: predictions[predictions.method == m].score.to_numpy() for m in ("online", "offline")
    }
    assert (scores["online"] == scores["offline"]).all()


def test_each_baseline_learns_a_domain_sequence(ingested, tmp_path):
    """sequential, joint, independent and head on the two organisms, in the second order."""
    sequence = {"tasks": ["organism_a", "organism_b"]}
    for learner in ("sequential", "joint", "independent", "head"):
        predictions = learn(
            ingested, tmp_path / learner, config(sequence), learner=learner, order=1
        )
        assert set(predictions.method) == {learner}
        first = predictions[predictions.after_step == 0]
        assert set(first.task) == {"organism_b"}  # order 1: the permutation
        assert predictions.score.between(0, 1).all()
    assert (tmp_path / "joint/step1/online/adapter").is_dir()
    assert not (tmp_path / "head/step0/online").exists()  # no adapter to save


def test_refusals_name_what_is_wrong(ingested, tmp_path, capsys):
    tasks = {
        "compartments": {"kind": "sequence_classification"},
        "stability": {"kind": "sequence_regression"},
        "organism_a": {"kind": "sequence_classification"},
    }
    single = {"continual": {"sequences": {"s": {"task": "compartments", "steps": [["cytoplasm"]]}}}}
    with pytest.raises(InputError, match="step 1 has only.*at least 2 new classes"):
        check_continual({"tasks": tasks, **single})
    mixed = {"continual": {"sequences": {"s": {"tasks": ["organism_a", "stability"]}}}}
    with pytest.raises(InputError, match="organism_a .*sequence_classification.* and stability"):
        check_continual({"tasks": tasks, **mixed})
    sequence = {"sequences": {"s": {"task": "compartments", "classes_per_step": 2}}}
    frozen = {"continual": {**sequence, "methods": ["online"], "epochs": 2, "frozen_epochs": 2}}
    with pytest.raises(InputError, match="frozen_epochs .2. must be below continual.epochs"):
        check_continual({"tasks": tasks, **frozen})
    # copra check-config says so too, naming the file.
    path = tmp_path / "bad.yaml"
    labelled = {name: {**entry, "labels": "x.tsv"} for name, entry in tasks.items()}
    path.write_text(json.dumps({"tasks": labelled, **single}))
    assert main(["check-config", str(path)]) == 2
    assert f"{path}: continual.sequences.s: step 1 has only" in capsys.readouterr().err
    spec = SequenceSpec("s", task="compartments", classes_per_step=4)
    with pytest.raises(InputError, match="leave class 'peroxisome' alone in the last step"):
        class_steps(spec, CLASSES[:5], 0)
    # Same kind, other label space (six classes vs membrane or not): refused naming both.
    out = tmp_path / "refused"
    tree = config({"tasks": ["compartments", "organism_a"]})
    assert main(continual_argv(ingested, out, tree)) == 2
    message = capsys.readouterr().err
    assert "tasks compartments and organism_a differ in label space" in message
    assert not (out / "predictions.tsv").exists() and not list(out.glob("step*"))


KILLED_AFTER_STEP_1 = "\n".join(
    [
        "import os, runpy, signal",
        "from copra import continual_learning",
        "save = continual_learning.Job.save_progress",
        "def save_and_die(self, t, model, extra):",
        "    save(self, t, model, extra)",
        "    if t == 1:",
        "        os.kill(os.getpid(), signal.SIGKILL)",
        "continual_learning.Job.save_progress = save_and_die",
        "runpy.run_module('copra', run_name='__main__')",
    ]
)


def test_a_killed_job_resumes_at_its_last_finished_step(ingested, lae_run, tmp_path):
    """SIGKILL after step 2 of 3 is saved; the rerun trains step 3 only and ends where the
    uninterrupted job did."""
    folder, complete = lae_run
    argv = continual_argv(ingested, tmp_path, config(CLASS_STEPS))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_STEP_1, *argv], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "progress.pt").is_file() and (tmp_path / "step1").is_dir()
    assert not (tmp_path / "step2").exists() and not (tmp_path / "predictions.tsv").exists()
    resumed = learn(ingested, tmp_path, config(CLASS_STEPS))
    pd.testing.assert_frame_equal(resumed, complete)
    for name in ("online", "offline"):
        adapter = f"step2/{name}/adapter/adapter_model.safetensors"
        ours, theirs = load_file(tmp_path / adapter), load_file(folder / adapter)
        assert all((ours[k] == theirs[k]).all() for k in ours)


def test_copra_predict_applies_a_step_s_offline_expert(ingested, lae_run, tmp_path):
    """step1/offline is a run folder: `copra predict` gives its saved scores of the test rows."""
    folder, predictions = lae_run
    _, files = ingested
    table = pd.read_csv(files["compartments"][0], sep="\t")
    sequences = pd.read_csv(files["compartments"][1], sep="\t").set_index("seq_hash").sequence
    saved = predictions[(predictions.method == "offline") & (predictions.after_step == 1)]
    rows = table.set_index("id").loc[saved.id]
    fasta = tmp_path / "test.fasta"
    named = zip(saved.id, rows.seq_hash, strict=True)
    fasta.write_text("".join(f">{i}\n{sequences[h]}\n" for i, h in named))
    out = tmp_path / "predicted.tsv"
    run = folder / "step1" / "offline"
    argv = ["predict", "--run", run, "--sequences", fasta, "--output", out, *BACKBONE]
    assert main(list(map(str, argv))) == 0
    predicted = pd.read_csv(out, sep="\t").set_index("id").loc[saved.id]
    seen = [c for c in saved.columns if c.startswith("score:") and saved[c].notna().all()]
    assert len(seen) == 4
    for column in seen:
        assert (predicted[f"{column}@seed1000"].to_numpy() == saved[column].to_numpy()).all()

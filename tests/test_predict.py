"""copra predict and copra screen: trained runs applied to new inputs, exactly as they scored
their own rows; ensembles, other adapters (pruned, merged), truncation, pair screens, bad input.
Fine-tuned runs (lora, copra, full) reproduce their predictions in tests/test_finetune.py."""

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import check_figure, check_predicted_like_saved, rows_as_inputs, train_runs

from copra.cli import main
from copra.demo_data import write_demo_data
from copra.ingest import run_ingest
from copra.sequences import read_fasta
from copra.settings import IngestSettings, TaskSettings

BACKBONE = ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]
SPLIT = IngestSettings({"train": 0.7, "valid": 0.15, "test": 0.15}, 0)


def predict(*words) -> int:
    return main(["--threads", "1", *map(str, words), *BACKBONE])


@pytest.fixture(scope="module")
def head_runs(tmp_path_factory):
    """Head runs (seeds 0 and 1) of the demo's localization (3 classes) and interaction tasks."""
    folder = tmp_path_factory.mktemp("predict")
    write_demo_data(folder / "demo", 40, 0)
    demo, threads = folder / "demo", torch.get_num_threads()
    tasks = {
        "localization": ("sequence_classification", "localization.tsv", "proteins.fasta"),
        "interaction": ("pair_classification", "interactions.tsv", "partners.fasta"),
    }
    runs = {}
    for name, (kind, labels, fasta) in tasks.items():
        table, sequences = folder / f"{name}.tsv", folder / f"{name}.sequences.tsv"
        run_ingest(TaskSettings(kind, demo / labels, demo / fasta), table, sequences, SPLIT)
        embeddings = folder / f"{name}.npz"
        cache = ["--cache-dir", folder / "cache"]
        assert predict("embed", "--sequence-table", sequences, "--output", embeddings, *cache) == 0
        folders = [folder / name / f"seed{seed}" for seed in (0, 1)]
        for seed, out in enumerate(folders):
            head = ["train-head", "--kind", kind, "--table", table, "--embeddings", embeddings]
            assert main([*map(str, head), "--seed", str(seed), "--output-dir", str(out)]) == 0
        runs[name] = {"kind": kind, "table": table, "sequences": sequences, "runs": folders}
        runs[name]["embeddings"] = embeddings
    torch.set_num_threads(threads)
    runs["cache"], runs["fasta"] = ["--cache-dir", folder / "cache"], demo / "partners.fasta"
    return runs


def run_options(folders) -> list:
    return [w for folder in folders for w in ("--run", folder)]


@pytest.mark.parametrize("name", ["localization", "interaction"])
def test_head_ensemble_reproduces_each_seed_and_summarises(head_runs, tmp_path, name):
    task = head_runs[name]
    inputs = rows_as_inputs(task["table"], task["sequences"], task["kind"], tmp_path)
    out, figure = tmp_path / "predicted.tsv", tmp_path / "predicted.png"
    runs = run_options(task["runs"])
    cache = head_runs["cache"]
    assert predict("predict", *runs, *inputs, "--output", out, "--figure", figure, *cache) == 0
    for folder in task["runs"]:
        check_predicted_like_saved(out, folder, task["kind"])
    table = pd.read_csv(out, sep="\t")
    columns = ["score:cytoplasm", "score:membrane", "score:secreted"]
    for column in columns if name == "localization" else ["score"]:
        seeds = table[[f"{column}@seed0", f"{column}@seed1"]].to_numpy(np.float64)
        assert np.allclose(table[column], seeds.mean(1), atol=1e-7)
        assert np.allclose(table[f"{column}_std"], seeds.std(1, ddof=1), atol=1e-7)
    assert table.in_training.dtype == bool
    manifest = json.loads(out.with_suffix(".manifest.json").read_text())
    assert [r["seed"] for r in manifest["runs"]] == [0, 1]
    assert all(len(r["files"]) == 3 for r in manifest["runs"])  # manifest, targets, head
    check_figure(figure)


def test_screen_scores_every_pair_like_the_pair_table(head_runs, tmp_path):
    task, fasta = head_runs["interaction"], head_runs["fasta"]
    ids = [record.id for record in read_fasta(fasta)]
    pairs = tmp_path / "pairs.tsv"
    all_pairs = pd.DataFrame(list(itertools.combinations(ids, 2)), columns=["id_a", "id_b"])
    all_pairs.to_csv(pairs, sep="\t", index=False)
    runs, cache = run_options(task["runs"]), head_runs["cache"]
    explicit, screen, top = (tmp_path / f"{n}.tsv" for n in ("explicit", "screen", "top"))
    assert (
        predict(
            "predict", *runs, "--sequences", fasta, "--pairs", pairs, "--output", explicit, *cache
        )
        == 0
    )
    every = [
        "--top",
        len(all_pairs),
        "--block-pairs",
        7,
        "--all-scores",
        "--figure",
        tmp_path / "s.png",
    ]
    assert predict("screen", *runs, "--sequences", fasta, "--output", screen, *every, *cache) == 0
    assert predict("screen", *runs, "--sequences", fasta, "--output", top, "--top", 5, *cache) == 0

    explicit, screen, top = (pd.read_csv(p, sep="\t") for p in (explicit, screen, top))
    assert len(screen) == len(explicit) == len(ids) * (len(ids) - 1) // 2
    merged = explicit.merge(screen, on=["id_a", "id_b"], suffixes=("", "_screen"))
    for column in ("score", "score_std", "score@seed0", "score@seed1", "in_training"):
        assert (merged[column] == merged[f"{column}_screen"]).all(), column
    ranked = explicit.assign(order=range(len(explicit)))
    ranked = ranked.sort_values(["score", "order"], ascending=[False, True])
    assert top[["id_a", "id_b"]].values.tolist() == ranked[["id_a", "id_b"]].head(5).values.tolist()
    assert screen[["id_a", "id_b"]].values.tolist() == ranked[["id_a", "id_b"]].values.tolist()
    # every score, in scipy's condensed order (i < j, row by row), and the histogram of them all
    stored = np.load(tmp_path / "screen.scores.npz")
    assert stored["ids"].tolist() == ids
    assert np.array_equal(stored["score"], explicit.score.to_numpy(np.float32))
    histogram = pd.read_csv(tmp_path / "screen.histogram.tsv", sep="\t")
    assert histogram.pairs.sum() == len(explicit)
    # in_training: exactly the training pairs (in either order)
    training = pd.read_csv(task["table"], sep="\t")
    training = {frozenset(p) for p in training[training.split == "train"][["id_a", "id_b"]].values}
    flagged = {frozenset(p) for p in explicit[explicit.in_training][["id_a", "id_b"]].values}
    assert flagged == {p for p in training if len(p) == 2} and flagged
    check_figure(tmp_path / "s.png")


def test_screen_of_another_pair_combination_keeps_pairs_above_a_score(head_runs, tmp_path):
    """product_difference (no per-protein first layer): the screen still equals the explicit
    pair table, and keeps the top pairs and every pair at or above min_score."""
    task, fasta, cache = head_runs["interaction"], head_runs["fasta"], head_runs["cache"]
    run = tmp_path / "product"
    head = ["train-head", "--kind", "pair_classification", "--table", task["table"]]
    head += ["--embeddings", task["embeddings"], "--seed", 0, "--output-dir", run]
    assert main([*map(str, head), "--pair-combination", "product_difference"]) == 0
    ids = [record.id for record in read_fasta(fasta)]
    pairs = tmp_path / "pairs.tsv"
    pd.DataFrame(list(itertools.combinations(ids, 2)), columns=["id_a", "id_b"]).to_csv(
        pairs, sep="\t", index=False
    )
    explicit, screen = tmp_path / "explicit.tsv", tmp_path / "screen.tsv"
    words = ["--run", run, "--sequences", fasta, *cache]
    assert predict("predict", *words, "--pairs", pairs, "--output", explicit) == 0
    explicit = pd.read_csv(explicit, sep="\t")
    distinct = np.sort(explicit.score.unique())[::-1]
    threshold = float(distinct[15] + distinct[16]) / 2  # between two scores, not on one
    kept = ["--top", 3, "--min-score", threshold, "--block-pairs", 11]
    assert predict("screen", *words, *kept, "--output", screen) == 0
    screen = pd.read_csv(screen, sep="\t")
    ranked = explicit.assign(order=range(len(explicit)))
    ranked = ranked.sort_values(["score", "order"], ascending=[False, True])
    expected = ranked[(ranked.score >= threshold) | (np.arange(len(ranked)) < 3)]
    assert screen[["id_a", "id_b"]].values.tolist() == expected[["id_a", "id_b"]].values.tolist()
    assert (screen.score.to_numpy() == expected.score.to_numpy()).all()


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """Two one-epoch LoRA runs of the demo's regression task, cropped at 40 residues."""
    from conftest import small_regression_task

    folder = tmp_path_factory.mktemp("predict_lora")
    table, sequences = small_regression_task(folder)
    return (
        table,
        sequences,
        train_runs(folder, table, sequences, [0, 1], "lora", "--max-residues", "40"),
    )


def test_other_adapters_and_truncation(lora_runs, tmp_path):
    table, sequences, (seed0, seed1) = lora_runs
    inputs = rows_as_inputs(table, sequences, "sequence_regression", tmp_path)

    def predicted(name, *extra):
        out = tmp_path / f"{name}.tsv"
        assert predict("predict", "--run", seed0, *inputs, "--output", out, *extra) == 0
        return pd.read_csv(out, sep="\t")["prediction@seed0"].to_numpy()

    own = predicted("own")
    check_predicted_like_saved(tmp_path / "own.tsv", seed0, "sequence_regression")
    # A pruned adapter that removes nothing, and a merge of the adapter with itself (exact in dW)
    adapter = seed0 / "adapter"
    kept = ["prune", "--adapter", adapter, "--scheme", "lowest_norm", "--amount", 0]
    assert main([*map(str, kept), "--output", str(tmp_path / "kept")]) == 0
    assert np.array_equal(predicted("kept", "--adapter", tmp_path / "kept"), own)
    halved = ["prune", "--adapter", adapter, "--scheme", "lowest_norm", "--amount", 0.5]
    assert main([*map(str, halved), "--output", str(tmp_path / "halved")]) == 0
    assert not np.allclose(predicted("halved", "--adapter", tmp_path / "halved"), own)
    merges = {"self": ([adapter, adapter], "1:1"), "seeds": ([adapter, seed1 / "adapter"], "1:1")}
    merges["first"] = ([adapter, seed1 / "adapter"], "1:0")  # the first adapter, as it was
    for name, (sources, scheme) in merges.items():
        merge = ["merge-adapters", "--adapters", *sources, "--scheme", scheme]
        assert main([*map(str, merge), "--output", str(tmp_path / name)]) == 0
    assert np.array_equal(predicted("first", "--adapter", tmp_path / "first"), own)
    assert np.allclose(predicted("self", "--adapter", tmp_path / "self"), own, atol=1e-5)
    assert not np.allclose(predicted("seeds", "--adapter", tmp_path / "seeds"), own, atol=1e-4)
    # Longer than the run's max_residues (40): truncated, as in its evaluation
    record = next(iter(read_fasta(tmp_path / "inputs.fasta")))
    long = record.sequence * 3  # the small task's proteins are 30 to 79 residues
    fasta = tmp_path / "long.fasta"
    fasta.write_text(f">whole\n{long}\n>first40\n{long[:40]}\n")
    out = tmp_path / "long.tsv"
    assert predict("predict", "--run", seed0, "--sequences", fasta, "--output", out) == 0
    assert pd.read_csv(out, sep="\t").prediction.nunique() == 1


def bad_cases(head_runs, lora_runs, tmp_path):
    """(arguments, what the message says) of every kind of bad input."""
    sequence, pair = head_runs["localization"], head_runs["interaction"]
    fasta = head_runs["fasta"]
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("id_a\tid_b\npartner_0001\tpartner_0002\npartner_0001\tnobody\n")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(lora_runs[2][0], incomplete)
    (incomplete / "adapter" / "adapter_model.safetensors").unlink()
    proteins = ["--sequences", fasta]
    return {
        "unknown id": (
            [pair["runs"][0], *proteins, "--pairs", unknown],
            f"{unknown}:3: id 'nobody'",
        ),
        "pairs for a sequence run": (
            [sequence["runs"][0], *proteins, "--pairs", unknown],
            "single proteins",
        ),
        "no pairs for a pair run": ([pair["runs"][0], *proteins], "pair task"),
        "other weights": ([sequence["runs"][0], *proteins, "--model-seed", 1], "was trained on"),
        "incomplete run": ([incomplete, *proteins], "adapter/adapter_model.safetensors is missing"),
        "mixed methods": (
            [sequence["runs"][0], "--run", lora_runs[2][0], *proteins],
            "mix methods",
        ),
    }


def test_bad_inputs_exit_2_and_write_nothing(head_runs, lora_runs, tmp_path, capsys):
    for case, (words, message) in bad_cases(head_runs, lora_runs, tmp_path).items():
        out = tmp_path / case.replace(" ", "_") / "out.tsv"
        assert predict("predict", "--run", *words, "--output", out, *head_runs["cache"]) == 2, case
        error = capsys.readouterr().err
        assert "copra: error:" in error and message in error, (case, error)
        assert not out.parent.exists() or not any(out.parent.iterdir()), case

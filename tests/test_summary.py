"""The summary tables: the best method per task with its interval, and each run's cost."""

import json

import pandas as pd
import pytest
from conftest import R3_QUANTITIES

from copra.summary import best_methods, comparison, run_summary


def metrics_rows():
    rows = []
    for method, values in {"lora": [0.70, 0.74], "copra": [0.80, 0.78], "head": [0.6, 0.6]}.items():
        for seed, value in enumerate(values):
            rows.append(("t", method, seed, "test", "aupr", value, value - 0.1, value + 0.1))
            rows.append(("t", method, seed, "test", "mcc", 0.99, 0.9, 1.0))  # not the primary
            rows.append(("t", method, seed, "valid", "aupr", 1.0, 1.0, 1.0))  # not the test split
    columns = ["task", "method", "seed", "split", "metric", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def test_best_method_with_its_interval_and_copra_minus_lora():
    (row,) = best_methods(metrics_rows()).to_dict("records")
    assert row["metric"] == "aupr" and row["best_method"] == "copra"
    assert row["best_value"] == pytest.approx(0.79)
    assert row["best_low"] < 0.79 < row["best_high"]  # the t-interval over the two seeds
    assert row["copra_minus_lora"] == pytest.approx(0.79 - 0.72)


def test_an_undefined_metric_leaves_the_best_method_empty(tmp_path):
    """A test split of one class makes AUPR undefined (empty in metrics.tsv) for every method:
    the summary names no best method for that task and still writes every table."""
    metrics = metrics_rows()
    undefined = metrics[metrics.split == "test"].assign(task="u", value=float("nan"))
    both = pd.concat([metrics, undefined], ignore_index=True)
    rows = best_methods(both).set_index("task")
    assert rows.best_method["t"] == "copra" and pd.isna(rows.best_method["u"])
    assert pd.isna(rows.best_value["u"]) and pd.isna(rows.copra_minus_lora["u"])
    path = tmp_path / "metrics.tsv"
    both.to_csv(path, sep="\t", index=False)
    outputs = [tmp_path / f"{name}.tsv" for name in ("summary", "efficiency", "comparison")]
    run_summary(path, [], *outputs)
    assert all(output.is_file() for output in outputs)


def test_efficiency_reads_every_manifest(tmp_path):
    metrics = tmp_path / "metrics.tsv"
    metrics_rows().to_csv(metrics, sep="\t", index=False)
    manifests = []
    for method, fields in {
        "lora": {"trainable_parameters": 100, "total_parameters": 1000, "peak_memory_mb": 9.5},
        "rna": {"trainable_parameters_per_fold": 50},  # a complex task's run
    }.items():
        path = tmp_path / "results" / "t" / method / "seed0" / "manifest.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"seed": 0, "wall_time_s": 2.5, "epochs_run": 3, **fields}))
        manifests.append(path)
    run_summary(
        metrics,
        manifests,
        tmp_path / "summary.tsv",
        tmp_path / "efficiency.tsv",
        tmp_path / "comparison.tsv",
    )
    table = pd.read_csv(tmp_path / "efficiency.tsv", sep="\t").set_index("method")
    assert table.trainable_fraction["lora"] == pytest.approx(0.1)
    assert table.trainable_parameters["rna"] == 50 and table.wall_time_s.tolist() == [2.5, 2.5]
    assert pd.read_csv(tmp_path / "summary.tsv", sep="\t").best_method.tolist() == ["copra"]
    assert pd.read_csv(tmp_path / "comparison.tsv", sep="\t").quantity.tolist() == ["single task"]


def test_lora_beside_copra_alone_merged_and_pruned():
    metrics = metrics_rows()
    merging = pd.DataFrame(
        [
            ("t", method, merge, weights, combination, split, metric, value)
            for method, value in (("lora", 0.5), ("copra", 0.7))
            for merge, weights in (("seeds", "1:1"), ("seeds", "1:2"), ("tasks", "1 each"))
            for combination in ("exact", "linear", "ties")
            for split, metric in (("test", "aupr"), ("valid", "aupr"), ("test", "mcc"))
        ],
        columns=["task", "method", "merge", "weights", "combination", "split", "metric", "merged"],
    )
    pruning = pd.DataFrame(
        [
            ("t", method, seed, scheme, amount, "test", "aupr", value + seed * 0.1)
            for method, value in (("lora", 0.4), ("copra", 0.6))
            for seed in (0, 1)
            for scheme, amount in (
                ("every_other", 0.5),
                ("magnitude_dw", 0.5),
                ("magnitude_dw", 0.9),
                ("none", 0.0),
            )
        ],
        columns=["task", "method", "seed", "scheme", "amount", "split", "metric", "value"],
    )
    table = comparison(metrics, merging, pruning).set_index("quantity")
    assert table.index.tolist() == R3_QUANTITIES
    assert table.lora["single task"] == pytest.approx(0.72)
    assert table.copra["merged tasks (exact)"] == pytest.approx(0.7)
    assert table.copra["pruned magnitude_dw 50%"] == pytest.approx(0.65)  # mean over seeds
    assert table.copra_minus_lora["merged seeds 1:1 (linear)"] == pytest.approx(0.2)
    alone = comparison(metrics).set_index("quantity")
    assert alone.index.tolist() == ["single task"]

"""The summary tables: the best method per task with its interval, and each run's cost."""

import json

import pandas as pd
import pytest

from copra.summary import best_methods, run_summary


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
    run_summary(metrics, manifests, tmp_path / "summary.tsv", tmp_path / "efficiency.tsv")
    table = pd.read_csv(tmp_path / "efficiency.tsv", sep="\t").set_index("method")
    assert table.trainable_fraction["lora"] == pytest.approx(0.1)
    assert table.trainable_parameters["rna"] == 50 and table.wall_time_s.tolist() == [2.5, 2.5]
    assert pd.read_csv(tmp_path / "summary.tsv", sep="\t").best_method.tolist() == ["copra"]

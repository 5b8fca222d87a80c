"""Linear mode connectivity and adapter algebra: exact endpoints and sums, barriers, bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import scores_as_saved, small_regression_task, train_runs

from copra.adapter_algebra import (
    delta_weights,
    interpolate_factors,
    load_adapter,
    weighted_delta_sum,
)
from copra.backbone import load_backbone
from copra.errors import InputError
from copra.lmc import barriers, path_model, run_lmc
from copra.settings import LmcSettings, ModelSettings
from copra.tables import read_sequences, read_task_table
from copra.trained_run import TrainedRun

MODEL = ModelSettings("esm2_t6_8M_UR50D", "random")


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Two LoRA runs (seeds 0 and 1) of a small regression task, in seed0/ and seed1/."""
    folder = tmp_path_factory.mktemp("lmc")
    table, sequences = small_regression_task(folder)
    for seed, run in enumerate(train_runs(folder, table, sequences, [0, 1])):
        run.rename(folder / f"seed{seed}")
    return folder, table, sequences


def test_endpoints_reproduce_each_run_exactly(two_seeds):
    folder, table_path, sequences_path = two_seeds
    runs = [TrainedRun.open(folder / f"seed{s}") for s in (0, 1)]
    adapters = [load_adapter(run.adapter_folder) for run in runs]
    heads = [run.head_state() for run in runs]
    backbone = load_backbone("esm2_t6_8M_UR50D", "random")
    targets = runs[0].targets
    table = read_task_table(table_path, "sequence_regression")
    rows = (table[table.split != "train"], read_sequences(sequences_path))
    # The runs were trained on 1 thread: fused attention's CPU kernel sums in an order that
    # depends on the thread count, so exact equality needs the same count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check_endpoints(runs, adapters, heads, backbone, targets, rows, folder)
    finally:
        torch.set_num_threads(threads)


def check_endpoints(runs, adapters, heads, backbone, targets, rows, folder):
    for path in ("product", "factors"):
        for alpha, seed in ((0.0, 0), (1.0, 1)):
            model = path_model(runs, adapters, heads, backbone, path, alpha)
            scores = scores_as_saved(model, targets, *rows)[:, 0]
            saved = pd.read_csv(folder / f"seed{seed}" / "predictions.tsv", sep="\t")
            assert np.array_equal(scores, saved.prediction.to_numpy(np.float32)), (path, alpha)


def lmc(run_a, run_b, table, sequences, output):
    """`run_lmc` of two runs of the stability task at three alphas."""
    settings = LmcSettings(alphas=3)
    paths = (run_a, run_b, table, sequences, output)
    return run_lmc(*paths, task="stability", settings=settings, model=MODEL)


def test_lmc_table_has_both_paths_and_the_cross_terms(two_seeds):
    folder, table, sequences = two_seeds
    curve = lmc(folder / "seed0", folder / "seed1", table, sequences, folder / "lmc.tsv")
    assert list(curve.columns) == [
        "task",
        "method",
        "seed_a",
        "seed_b",
        "path",
        "alpha",
        "split",
        "metric",
        "value",
    ]
    assert set(curve.path) == {"product", "factors"} and sorted(set(curve.alpha)) == [0, 0.5, 1]
    assert set(curve.metric) == {"loss", "spearman"} and set(curve.split) == {"valid", "test"}
    ends = curve[curve.alpha != 0.5].pivot_table(
        index=["alpha", "split", "metric"], columns="path", values="value"
    )
    assert np.array_equal(ends["product"], ends["factors"])
    middle = curve[(curve.alpha == 0.5) & (curve.metric == "loss") & (curve.split == "test")]
    assert middle.value.nunique() == 2


def test_barrier_is_the_rise_above_the_line():
    alpha = np.linspace(0, 1, 5)
    loss = [1.0, 1.5, 2.5, 2.2, 2.0]  # line: 1.0 .. 2.0; largest rise 2.5 - 1.5 = 1.0
    metric = [0.8, 0.7, 0.5, 0.7, 0.6]  # line: 0.8 .. 0.6; largest fall 0.7 - 0.5 = 0.2
    base = {
        "task": "t",
        "method": "lora",
        "seed_a": 0,
        "seed_b": 1,
        "path": "product",
        "split": "test",
    }
    rows = [(a, "loss", v) for a, v in zip(alpha, loss, strict=True)]
    rows += [(a, "aupr", v) for a, v in zip(alpha, metric, strict=True)]
    curve = pd.DataFrame([{**base, "alpha": a, "metric": m, "value": v} for a, m, v in rows])
    table = barriers(curve).set_index("metric").barrier
    assert table["loss"] == pytest.approx(1.0) and table["aupr"] == pytest.approx(0.2)


def test_exact_sum_has_the_summed_delta_and_factor_interpolation_does_not(two_seeds):
    folder, _, _ = two_seeds
    a, b = (load_adapter(folder / f"seed{s}" / "adapter") for s in (0, 1))
    summed = weighted_delta_sum([a, b], [0.3, 0.7])
    assert summed.config["r"] == a.config["r"] + b.config["r"]
    da, db, ds = delta_weights(a), delta_weights(b), delta_weights(summed)
    for module in da:
        assert torch.allclose(ds[module], 0.3 * da[module] + 0.7 * db[module], atol=1e-6)
    assert weighted_delta_sum([a, b], [1, 0]) is a
    mixed = delta_weights(interpolate_factors(a, b, 0.5))
    assert any(not torch.allclose(mixed[m], 0.5 * da[m] + 0.5 * db[m], atol=1e-6) for m in da)


def test_incompatible_adapters_are_refused_naming_both(two_seeds, tmp_path):
    folder, table, sequences = two_seeds
    other = tmp_path / "other"
    shutil.copytree(folder / "seed1", other)
    config_path = other / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "esm2_t6_8M_UR50D@sha256:0000"
    config_path.write_text(json.dumps(config))
    a, b = load_adapter(folder / "seed0" / "adapter"), load_adapter(other / "adapter")
    with pytest.raises(InputError, match="seed0/adapter and .*other/adapter were trained on diff"):
        weighted_delta_sum([a, b], [0.5, 0.5])
    (other / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(InputError, match="adapter file missing"):
        load_adapter(other / "adapter")
    with pytest.raises(InputError, match="not a trained run"):
        lmc(folder / "seed0", tmp_path / "missing", table, sequences, tmp_path / "x.tsv")

"""Merging adapters: exact methods are exact in dW and in outputs, the table, and bad input."""

import json
import shutil

import pandas as pd
import pytest
import torch
from conftest import small_regression_task, train_runs
from peft.tuners.lora import LoraLayer

from copra.adapter_algebra import add_adapter, delta_weights, load_adapter, with_adapter
from copra.cli import main
from copra.errors import InputError
from copra.merging import COMBINATIONS, add_merged, merge_seeds, merge_tasks
from copra.settings import MergeSettings, ModelSettings

MODEL = ModelSettings("esm2_t6_8M_UR50D", "random")


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    """Three LoRA seeds, one CopRA seed and one rank-4 LoRA run of a small regression task."""
    folder = tmp_path_factory.mktemp("merging")
    table, sequences = small_regression_task(folder)
    runs = train_runs(folder, table, sequences, [0, 1, 2])
    runs += train_runs(folder, table, sequences, [0], "copra")
    runs += train_runs(folder, table, sequences, [0], "lora", "--lora-rank", "4")
    return folder, table, sequences, runs


def merged_deltas(adapters, weights, combination):
    """dW of each module of the adapter peft (or `exact`) merges from `adapters`."""
    backbone = MODEL.load()
    model = with_adapter(backbone.model, adapters[0], "source0")
    for i, adapter in enumerate(adapters[1:], start=1):
        add_adapter(model, adapter, f"source{i}")
    name = add_merged(model, adapters, weights, combination, MergeSettings())
    return {
        module_name.removeprefix("base_model.model."): module.get_delta_weight(name)
        for module_name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }


@pytest.mark.parametrize("combination", ["exact", "cat"])
def test_exact_methods_give_the_weighted_sum_of_delta_weights(task_runs, combination):
    runs = task_runs[3]
    adapters = [load_adapter(run / "adapter") for run in runs[:3]]
    weights = [0.2, 0.3, 0.5]
    merged = merged_deltas(adapters, weights, combination)
    sources = [delta_weights(a) for a in adapters]
    for module in sources[0]:
        expected = sum(w * d[module] for w, d in zip(weights, sources, strict=True))
        assert torch.allclose(merged[module.removeprefix("base_model.model.")], expected, atol=1e-6)


def test_linear_merge_of_identical_adapters_is_not_their_average(task_runs):
    """peft's linear scales A and B each by sqrt(w s): 1:1 of one adapter doubles its dW."""
    adapter = load_adapter(task_runs[3][0] / "adapter")
    merged = merged_deltas([adapter, adapter], [0.5, 0.5], "linear")
    for module, delta in delta_weights(adapter).items():
        assert torch.allclose(
            merged[module.removeprefix("base_model.model.")], 2 * delta, atol=1e-6
        )


def test_merge_seeds_table(task_runs, tmp_path):
    folder, table_path, sequences, runs = task_runs
    output = tmp_path / "merging.tsv"
    table = merge_seeds(
        runs[:3],
        table_path,
        sequences,
        output,
        task="stability",
        settings=MergeSettings(schemes=["1:2", "1:1:1"], combinations=list(COMBINATIONS)),
        model=MODEL,
    )
    assert pd.read_csv(output, sep="\t").shape == table.shape
    assert (tmp_path / "merging.manifest.json").is_file()
    assert set(table.weights) == {"1:2", "1:1:1"} and set(table.combination) == set(COMBINATIONS)
    assert set(table.metric) == {"loss", "spearman"} and set(table.split) == {"valid", "test"}
    # every 2 (3) of the three seeds, in their order: an interval across the merges
    pairs = {"seed0,seed1", "seed0,seed2", "seed1,seed2"}
    assert set(table[table.weights == "1:2"].sources) == pairs
    assert set(table[table.weights == "1:1:1"].sources) == {"seed0,seed1,seed2"}
    exact = table[table.combination.isin(["exact", "cat"])]
    assert exact.max_output_diff_vs_sum.max() < 1e-5
    assert table[table.combination == "linear"].max_output_diff_vs_sum.min() > 1e-4
    # exact and cat are the same model: the same metrics to rounding
    pivot = exact.pivot_table(
        index=["weights", "split", "metric"], columns="combination", values="merged"
    )
    assert (pivot["exact"] - pivot["cat"]).abs().max() < 1e-5


def test_merging_one_adapter_with_itself_exactly_gives_its_own_scores(task_runs, tmp_path):
    _, table_path, sequences, runs = task_runs
    table = merge_seeds(
        [runs[0], runs[0]],
        table_path,
        sequences,
        tmp_path / "self.tsv",
        task="stability",
        settings=MergeSettings(schemes=["1:1"], combinations=["exact"]),
        model=MODEL,
    )
    assert (table.merged - table.source_mean).abs().max() < 1e-5


def test_merge_tasks_keeps_each_task_head(task_runs, tmp_path):
    _, table_path, sequences, runs = task_runs
    inputs = {"a": (runs[0], table_path, sequences), "b": (runs[3], table_path, sequences)}
    settings = MergeSettings(combinations=["exact", "ties"], multitask_weight=1.0)
    table = merge_tasks(inputs, tmp_path / "tasks.tsv", settings=settings, model=MODEL)
    assert set(table.task) == {"a", "b"} and set(table.method) == {"copra+lora"}
    assert set(table[table.task == "b"].sources) == {"b"}
    assert table[table.combination == "exact"].max_output_diff_vs_sum.max() < 1e-5


def test_cli_merge_writes_the_table(task_runs, tmp_path):
    _, table_path, sequences, runs = task_runs
    output = tmp_path / "cli.tsv"
    args = [
        "merge",
        "--weights",
        "random",
        "--runs",
        *map(str, runs[:2]),
        "--table",
        str(table_path),
        "--sequences",
        str(sequences),
        "--task",
        "stability",
        "--schemes",
        "1:1",
        "--combinations",
        "exact",
        "ties_svd",
        "--density",
        "0.3",
        "--output",
        str(output),
    ]
    assert main(args) == 0
    assert set(pd.read_csv(output, sep="\t").combination) == {"exact", "ties_svd"}


def test_bad_sources_are_refused_naming_both(task_runs, tmp_path):
    folder, table_path, sequences, runs = task_runs

    def merge(sources, combinations=("exact",)):
        merge_seeds(
            sources,
            table_path,
            sequences,
            tmp_path / "bad.tsv",
            task="stability",
            settings=MergeSettings(schemes=["1:1"], combinations=list(combinations)),
            model=MODEL,
        )

    rank4 = runs[4]
    with pytest.raises(InputError, match=rf"{runs[0]} and {rank4} have ranks 8 and 4: linear"):
        merge([runs[0], rank4], ["exact", "linear"])
    merge([runs[0], rank4], ["exact", "cat", "svd"])  # exact in dW: any ranks
    (tmp_path / "bad.tsv").unlink()

    other_backbone = tmp_path / "other_backbone"
    shutil.copytree(runs[1], other_backbone)
    manifest = json.loads((other_backbone / "manifest.json").read_text())
    manifest["backbone"]["weights"] = "sha256:0000"
    (other_backbone / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=f"{runs[0]} and {other_backbone} were trained on diff"):
        merge([runs[0], other_backbone])

    other_modules = tmp_path / "other_modules"
    shutil.copytree(runs[1], other_modules)
    adapter = load_adapter(other_modules / "adapter")
    from safetensors.torch import save_file

    kept = {k: v for k, v in adapter.tensors.items() if "layers.0." not in k}
    save_file(kept, str(other_modules / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(
        InputError, match=f"{runs[0]}/adapter and {other_modules}/adapter adapt diff"
    ):
        merge([runs[0], other_modules])

    missing = tmp_path / "missing"
    shutil.copytree(runs[1], missing)
    (missing / "adapter" / "adapter_model.safetensors").unlink()
    incomplete = f"{missing}: the run is incomplete: adapter/adapter_model.safetensors is missing"
    with pytest.raises(InputError, match=incomplete):
        merge([runs[0], missing])
    assert not (tmp_path / "bad.tsv").exists()

    with pytest.raises(InputError, match="scheme '1' is not like"):
        merge_seeds(
            runs[:2],
            table_path,
            sequences,
            tmp_path / "bad.tsv",
            task="stability",
            settings=MergeSettings(schemes=["1"], combinations=["exact"]),
            model=MODEL,
        )

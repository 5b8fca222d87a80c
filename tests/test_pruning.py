"""Pruning adapters: amount 0 is the adapter itself, every scheme prunes what it says, the
table, and pruned adapters that peft reloads."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import scores_as_saved, small_regression_task, train_runs
from peft import PeftModel

from copra.adapter_algebra import delta_weights, load_adapter, with_adapter
from copra.backbone import load_backbone
from copra.cli import main
from copra.errors import InputError
from copra.pruning import (
    layer_norms,
    magnitude,
    module_layer,
    pruned_adapters,
    run_pruning,
    structured,
)
from copra.settings import ModelSettings, PruningSettings
from copra.tables import read_sequences, read_task_table
from copra.trained_run import TrainedRun

MODEL = ModelSettings("esm2_t6_8M_UR50D", "random")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pruning")
    table, sequences = small_regression_task(folder)
    (run,) = train_runs(folder, table, sequences, [0])
    return folder, table, sequences, run


def nonzero_layers(adapter):
    return sorted(
        {module_layer(m) for m in adapter.modules if adapter.factors(m)[1].abs().sum() > 0}
    )


def test_amount_zero_reproduces_the_unpruned_predictions_exactly(trained):
    _, table_path, sequences_path, run_dir = trained
    run = TrainedRun.open(run_dir)
    adapter = load_adapter(run.adapter_folder)
    backbone = load_backbone("esm2_t6_8M_UR50D", "random")
    table = read_task_table(table_path, "sequence_regression")
    rows = (table[table.split != "train"], read_sequences(sequences_path))
    saved = pd.read_csv(run_dir / "predictions.tsv", sep="\t").prediction.to_numpy(np.float32)
    settings = PruningSettings(schemes=["every_other", "magnitude_dw", "magnitude_ab"])
    zero = [(s, a) for s, amount, a in pruned_adapters(adapter, settings) if amount == 0]
    assert {s for s, _ in zero} == {"none", "magnitude_dw", "magnitude_ab"}
    # The run was trained on 1 thread: fused attention's CPU kernel sums in an order that
    # depends on the thread count, so exact equality needs the same count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for scheme, variant in zero:
            network = with_adapter(load_backbone("esm2_t6_8M_UR50D", "random").model, variant)
            model = run.model(network, backbone)
            scores = scores_as_saved(model, run.targets, *rows)
            assert np.array_equal(scores[:, 0], saved), scheme
    finally:
        torch.set_num_threads(threads)


def test_structured_schemes_keep_what_they_say(trained):
    adapter = load_adapter(trained[3] / "adapter")
    every_other, amount = structured(adapter, "every_other")
    assert nonzero_layers(every_other) == [0, 2, 4] and amount == 0.5
    assert nonzero_layers(structured(adapter, "keep_low")[0]) == [0, 1]
    assert nonzero_layers(structured(adapter, "keep_middle")[0]) == [2, 3]
    assert nonzero_layers(structured(adapter, "keep_high")[0]) == [4, 5]
    only_v, amount = structured(adapter, "keep_v")
    kept = [m for m in only_v.modules if only_v.factors(m)[0].abs().sum() > 0]
    assert kept and all(m.endswith("v_proj") for m in kept) and amount == 0.5
    assert structured(adapter, "keep_q") is None  # the demo adapts k and v only


def test_ranked_schemes_remove_layers_in_their_order(trained):
    adapter = load_adapter(trained[3] / "adapter")
    norms = layer_norms(adapter)
    variants = list(pruned_adapters(adapter, PruningSettings(schemes=["lowest_norm", "random"])))
    lowest = [v for s, a, v in variants if s == "lowest_norm"]
    assert len(lowest) == 6
    assert nonzero_layers(lowest[0]) == sorted(set(range(6)) - {min(norms, key=norms.get)})
    assert nonzero_layers(lowest[-1]) == []
    again = list(pruned_adapters(adapter, PruningSettings(schemes=["random"])))
    first = [nonzero_layers(v) for s, a, v in variants if s == "random"]
    assert first == [nonzero_layers(v) for s, a, v in again if s == "random"]
    shapley = pd.DataFrame(
        {"layer": range(6), "value": "spearman", "shapley": [0.3, -0.2, 0.1, 0.0, 0.5, 0.2]}
    )
    ranked = [
        v
        for s, a, v in pruned_adapters(
            adapter, PruningSettings(schemes=["lowest_shapley"]), shapley
        )
        if s == "lowest_shapley"
    ]
    assert nonzero_layers(ranked[1]) == [0, 2, 4, 5]  # layers 1 and 3 go first
    with pytest.raises(InputError, match="needs the run's Shapley table"):
        list(pruned_adapters(adapter, PruningSettings(schemes=["lowest_shapley"])))


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_magnitude_pruning_zeroes_the_smallest_entries(trained, sparsity):
    adapter = load_adapter(trained[3] / "adapter")
    original = delta_weights(adapter)
    pruned = delta_weights(magnitude(adapter, "magnitude_dw", sparsity))
    for module, delta in original.items():
        kept = pruned[module].abs() > 1e-6
        assert abs(1 - kept.float().mean().item() - sparsity) < 0.01
        assert torch.allclose(pruned[module][kept], delta[kept], atol=1e-5)
        assert delta[kept].abs().min() >= delta[~kept].abs().max() - 1e-6
    factors = magnitude(adapter, "magnitude_ab", sparsity)
    for key, tensor in factors.tensors.items():
        assert abs((tensor == 0).float().mean().item() - sparsity) < 0.02, key


def test_pruning_table(trained, tmp_path):
    folder, table, sequences, run = trained
    settings = PruningSettings(
        schemes=["every_other", "keep_q", "lowest_norm", "magnitude_ab"], sparsities=[0.0, 0.5]
    )
    result = run_pruning(
        run,
        table,
        sequences,
        tmp_path / "pruning.tsv",
        task="stability",
        settings=settings,
        model=MODEL,
    )
    assert list(result.columns) == [
        "task",
        "method",
        "seed",
        "scheme",
        "amount",
        "split",
        "metric",
        "value",
    ]
    assert set(result.scheme) == {"none", "every_other", "lowest_norm", "magnitude_ab"}
    assert sorted(result[result.scheme == "lowest_norm"].amount.unique()) == pytest.approx(
        [k / 6 for k in range(1, 7)]
    )
    values = result.set_index(["scheme", "amount", "split", "metric"]).value
    assert values["magnitude_ab", 0.0, "test", "loss"] == values["none", 0.0, "test", "loss"]
    assert (tmp_path / "pruning.manifest.json").is_file()


@pytest.mark.parametrize(
    "scheme,amount", [("every_other", 0), ("magnitude_dw", 0.75), ("lowest_norm", 0.5)]
)
def test_a_pruned_adapter_is_written_in_peft_format_and_reloads(trained, tmp_path, scheme, amount):
    source = trained[3] / "adapter"
    output = tmp_path / "pruned"
    assert (
        main(
            [
                "prune",
                "--adapter",
                str(source),
                "--scheme",
                scheme,
                "--amount",
                str(amount),
                "--output",
                str(output),
            ]
        )
        == 0
    )
    written = load_adapter(output)
    reloaded = PeftModel.from_pretrained(
        load_backbone("esm2_t6_8M_UR50D", "random").model, str(output)
    )
    for name, module in reloaded.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
            expected = delta_weights(written)[name]
            assert torch.allclose(module.get_delta_weight("default"), expected, atol=1e-6)
    assert delta_weights(written).keys() == delta_weights(load_adapter(source)).keys()


def test_prune_refuses_what_it_cannot_do(trained, tmp_path):
    source = str(trained[3] / "adapter")
    assert (
        main(["prune", "--adapter", source, "--scheme", "keep_q", "--output", str(tmp_path / "q")])
        == 2
    )
    assert (
        main(
            [
                "prune",
                "--adapter",
                source,
                "--scheme",
                "magnitude_dw",
                "--amount",
                "1.5",
                "--output",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "prune",
                "--adapter",
                str(tmp_path / "none"),
                "--scheme",
                "every_other",
                "--output",
                str(tmp_path / "n"),
            ]
        )
        == 2
    )
    assert not any(tmp_path.iterdir())

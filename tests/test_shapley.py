"""Shapley values of adapter layers: efficiency, dummy and symmetric players, sampling vs exact."""

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import small_regression_task, train_runs
from safetensors.torch import load_file, save_file

from copra.cli import main
from copra.errors import InputError
from copra.settings import ModelSettings, ShapleySettings
from copra.shapley import CoalitionGame, run_shapley, shapley_values

MODEL = ModelSettings("esm2_t6_8M_UR50D", "random")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch LoRA run of a small regression task, on the 6-layer ESM-2 8M."""
    folder = tmp_path_factory.mktemp("shapley")
    table, sequences = small_regression_task(folder)
    (run,) = train_runs(folder, table, sequences, [0])
    return folder, table, sequences, run


def shapley(trained, output, run=None, **settings):
    folder, table, sequences, trained_run = trained
    return run_shapley(
        run or trained_run,
        table,
        sequences,
        output,
        task="stability",
        settings=ShapleySettings(**settings),
        model=MODEL,
    )


def test_exact_values_are_efficient(trained, tmp_path):
    values = shapley(trained, tmp_path / "exact.tsv")
    assert set(values.estimator) == {"exact"} and values.evaluations.iloc[0] == 2**6
    assert sorted(values.layer.unique()) == list(range(6))
    for kind, part in values.groupby("value"):
        total = part.v_all.iloc[0] - part.v_none.iloc[0]
        assert part.shapley.sum() == pytest.approx(total, abs=1e-9)
        assert total != 0 or kind != "neg_loss"  # one epoch moves the loss, maybe not the ranks
    assert pd.read_csv(tmp_path / "exact.tsv", sep="\t").shape == values.shape


def test_a_zeroed_layer_gets_zero(trained, tmp_path):
    run = tmp_path / "dummy"
    shutil.copytree(trained[3], run)
    weights = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    for key in tensors:
        if ".layers.2." in key and "lora_B" in key:
            tensors[key] = tensors[key] * 0
    save_file(tensors, str(weights))
    values = shapley(trained, tmp_path / "dummy.tsv", run=run)
    assert (values[values.layer == 2].shapley.abs() < 1e-12).all()
    assert (values[values.layer != 2].shapley.abs() > 0).any()


def test_symmetric_players_get_equal_values_by_both_estimators():
    """v(S) = |S & {a, b}|^2 + 2 [c in S] + [c in S][d in S]: a, b symmetric; c, d not."""

    def game():
        current = {}

        def switch(coalition):
            current["S"] = coalition

        def evaluate():
            s = current["S"]
            value = len(s & {"a", "b"}) ** 2 + 2 * ("c" in s) + ("c" in s) * ("d" in s)
            return {"metric": float(value), "neg_loss": -float(value)}

        return CoalitionGame(["a", "b", "c", "d"], switch, evaluate)

    exact = shapley_values(game(), ShapleySettings()).set_index(["value", "player"]).shapley
    assert exact["metric", "a"] == pytest.approx(exact["metric", "b"]) == pytest.approx(2.0)
    assert exact["metric", "c"] == pytest.approx(2.5) and exact["metric", "d"] == pytest.approx(0.5)
    sampled = shapley_values(
        game(), ShapleySettings(max_exact_players=0, tolerance=1e-3, max_permutations=2000)
    )
    sampled = sampled[sampled.value == "metric"].set_index("player")
    assert set(sampled.estimator) == {"sampling"}
    assert sampled.shapley.sum() == pytest.approx(7.0)  # every sample is efficient
    for player in "abcd":
        gap = abs(sampled.shapley[player] - exact["metric", player])
        assert gap <= 4 * sampled.stderr[player] + 1e-9, player


def test_sampling_agrees_with_enumeration_within_its_error(trained, tmp_path):
    exact = shapley(trained, tmp_path / "exact.tsv").set_index(["value", "player"])
    sampled = shapley(
        trained,
        tmp_path / "sampled.tsv",
        max_exact_players=0,
        tolerance=0.002,
        max_permutations=300,
    )
    assert set(sampled.estimator) == {"sampling"} and (sampled.evaluations <= 64).all()
    for row in sampled.itertuples():
        gap = abs(row.shapley - exact.shapley[row.value, row.player])
        assert gap <= 4 * row.stderr + 1e-9, (row.value, row.player, gap, row.stderr)
    metric = sampled[sampled.value != "neg_loss"]
    assert metric.stderr.max() < 0.002 or metric.permutations.iloc[0] == 600
    assert metric.shapley.sum() == pytest.approx(metric.v_all.iloc[0] - metric.v_none.iloc[0])


def test_layer_module_players_through_the_cli(trained, tmp_path):
    folder, table, sequences, run = trained
    output = tmp_path / "modules.tsv"
    args = [
        "shapley",
        "--weights",
        "random",
        "--run",
        str(run),
        "--table",
        str(table),
        "--sequences",
        str(sequences),
        "--task",
        "stability",
        "--players",
        "modules",
        "--max-permutations",
        "4",
        "--min-permutations",
        "2",
        "--output",
        str(output),
    ]
    assert main(args) == 0
    values = pd.read_csv(output, sep="\t")
    assert len(values.player.unique()) == 12 and set(values.estimator) == {"sampling"}
    assert set(values.module) == {"self_attn.k_proj", "self_attn.v_proj"}
    assert values.player.str.match(r"^\d:self_attn\.[kv]_proj$").all()
    assert np.isfinite(values.stderr).all()


def test_a_run_without_adapter_is_refused(trained, tmp_path):
    folder, table, sequences, _ = trained
    (full,) = train_runs(tmp_path, table, sequences, [0], "full")
    refusal = r"Shapley values needs a peft adapter; method full has none \(methods that do: lora"
    with pytest.raises(InputError, match=refusal):
        shapley(trained, tmp_path / "x.tsv", run=full)
    assert not (tmp_path / "x.tsv").exists()

"""AdaLoRA and Lingo (copra/adaptive_rank.py): the budget, Lingo's draws, the orthogonality loss,
exact reload and conversion to LoRA, resume after a kill, the analyses, bad settings."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import (
    KILLED_MID_EPOCH,
    check_predicted_like_saved,
    finetune_argv,
    kill_when_marked,
    rows_as_inputs,
    small_regression_task,
)
from peft import AdaLoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from scipy import stats

from copra.adapter_algebra import delta_weights, load_adapter, save_adapter, with_adapter
from copra.adaptive_rank import LingoAllocator, orthogonality_penalty, schedule
from copra.backbone import load_backbone
from copra.cli import main
from copra.config import check_analysis_methods
from copra.errors import InputError
from copra.lmc import run_lmc
from copra.merging import merge_seeds
from copra.methods.adalora import AdaLoraSettings, LingoSettings
from copra.pruning import run_pruning
from copra.settings import (
    LmcSettings,
    MergeSettings,
    ModelSettings,
    PruningSettings,
    ShapleySettings,
)
from copra.shapley import run_shapley

MODEL = ModelSettings("esm2_t6_8M_UR50D", "random")
MODULES = 12  # k_proj and v_proj of 6 blocks
# 28 training rows in batches of 8, one batch per step: 4 steps an epoch, 12 in 3 epochs;
# tinit 0.1 -> 1 step, tfinal 0.2 -> 2 steps: the pattern is fixed at step 10.
SHORT = ["--batch-size", 8, "--gradient-accumulation", 1, "--max-epochs", 3, "--patience", 1]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adaptive")
    return (folder, *small_regression_task(folder))


@pytest.fixture(scope="module")
def runs(task):
    """Train (name, method, seed, flags) once per module; the run folder."""
    folder, table, sequences = task
    made = {}

    def run(name, method="adalora", seed=0, *extra):
        if name not in made:
            out = folder / name / f"seed{seed}"
            argv = finetune_argv(
                method, "sequence_regression", table, sequences, out, *SHORT, *extra, seed=seed
            )
            assert main(argv) == 0
            made[name] = out
        return made[name]

    return run


def test_adalora_reaches_its_budget_and_reloads_exactly(runs, task, tmp_path):
    run = runs("adalora")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["rank_schedule"] == {"total_step": 12, "tinit": 1, "tfinal": 2, "deltaT": 1}
    assert manifest["optimizer_steps"] == 12 and manifest["epochs_run"] == 3
    assert manifest["kept_triplets"] == manifest["budget_triplets"] == 4 * MODULES
    assert sum(manifest["final_ranks"].values()) == 4 * MODULES
    per_triplet = 320 + 320 + 1  # a row of A, a column of B and an entry of E
    assert manifest["adapter_parameters"] == 4 * MODULES * per_triplet
    assert manifest["adapter_parameters_at_start"] == 8 * MODULES * per_triplet
    head = sum(t.numel() for t in load_file(run / "head.safetensors").values())
    assert manifest["trainable_parameters"] == manifest["adapter_parameters"] + head

    allocation = pd.read_csv(run / "rank_allocation.tsv", sep="\t")
    assert list(allocation.columns) == [
        "step",
        "module",
        "layer",
        "type",
        "kept",
        "budget",
        "reintroduced",
        "dropped",
    ]
    per_step = allocation.groupby("step").agg(kept=("kept", "sum"), budget=("budget", "first"))
    assert per_step.index.tolist() == list(range(2, 11))  # after tinit, every step to step 10
    assert (per_step.kept == per_step.budget).all()  # AdaLoRA keeps exactly its budget
    assert per_step.budget.is_monotonic_decreasing and per_step.budget.iloc[-1] == 4 * MODULES
    assert per_step.budget.iloc[0] < 8 * MODULES
    assert (allocation[["reintroduced", "dropped"]] == 0).all().all()

    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and len(config["rank_pattern"]) == MODULES
    assert sum(map(sum, config["rank_pattern"].values())) == 4 * MODULES
    # peft's PeftModel.from_pretrained (through `copra predict`) gives the saved predictions back
    folder, table, sequences = task
    inputs = rows_as_inputs(table, sequences, "sequence_regression", tmp_path)
    predicted = tmp_path / "predicted.tsv"
    backbone = ["--model", "esm2_t6_8M_UR50D", "--weights", "random"]
    assert main(["predict", "--run", str(run), *inputs, "--output", str(predicted), *backbone]) == 0
    check_predicted_like_saved(predicted, run, "sequence_regression")


def test_lingo_without_draws_is_adalora(runs):
    adalora = runs("adalora")
    lingo = runs("lingo_p0", "lingo", 0, "--lingo-p-keep", 0, "--lingo-p-drop", 0)
    for name in ("rank_allocation.tsv", "predictions.tsv", "training_log.tsv"):
        assert (lingo / name).read_text() == (adalora / name).read_text(), name
    tensors = [load_file(run / "adapter" / "adapter_model.safetensors") for run in (adalora, lingo)]
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])


def test_lingo_reintroduces_and_drops_triplets(runs):
    run = runs("lingo", "lingo", 0, "--lingo-p-keep", 0.3, "--lingo-p-drop", 0.3)
    allocation = pd.read_csv(run / "rank_allocation.tsv", sep="\t")
    per_step = allocation.groupby("step")[["kept", "budget", "reintroduced", "dropped"]].agg(
        {"kept": "sum", "budget": "first", "reintroduced": "sum", "dropped": "sum"}
    )
    expected = per_step.budget + per_step.reintroduced - per_step.dropped
    assert (per_step.kept == expected).all()
    assert per_step.reintroduced.sum() > 0 and per_step.dropped.sum() > 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kept_triplets"] == per_step.kept.iloc[-1]


def adalora_network(backbone, **settings):
    from copra.adaptive_rank import add_adalora

    return add_adalora(backbone.model, AdaLoraSettings(**settings), "test")


def test_lingo_draws_follow_from_its_generator():
    network = adalora_network(load_backbone("esm2_t6_8M_UR50D", "random"))
    tuner = network.base_model
    names = [n for n, _ in tuner.model.named_parameters() if ".lora_E." in n]
    with torch.no_grad():
        for name in names:
            tuner.model.get_parameter(name).fill_(1.0)
    rows = torch.Generator().manual_seed(5)
    pattern = {n: (torch.rand(8, generator=rows) < 0.5).tolist() for n in names}
    settings = LingoSettings(p_keep=0.25, p_drop=0.2)
    config = tuner.peft_config["default"]
    allocator = LingoAllocator(tuner.model, config, "default", settings=settings, seed=7)
    resampled, reintroduced, dropped = allocator.resample(tuner.model, pattern)

    draws = torch.Generator().manual_seed(7)
    below = ~torch.tensor([kept for n in names for kept in pattern[n]])
    u, v = torch.rand(len(below), generator=draws), torch.rand(len(below), generator=draws)
    keep = (below & (u < 0.25)) | (~below & (v >= 0.2))  # Lingo's rule, written out
    start = 0
    for name in names:
        low, kept = below[start : start + 8], keep[start : start + 8]
        start += 8
        assert resampled[name] == kept.tolist()
        assert reintroduced[name] == int((low & kept).sum())
        assert dropped[name] == int((~low & ~kept).sum())
        values = tuner.model.get_parameter(name).view(-1)
        assert torch.equal(values == 0, ~kept)  # pruned: E = 0; kept and reintroduced untouched
    assert sum(reintroduced.values()) > 0 and sum(dropped.values()) > 0


class WithLoss(torch.nn.Module):
    """A model whose output has a loss: peft's AdaLoraModel.forward adds its penalty to it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(16, 24), torch.nn.Linear(24, 8)

    def forward(self, x):
        return SimpleNamespace(loss=torch.zeros(()), value=self.fc2(self.fc1(x)))


def test_orthogonality_penalty_is_peft_s():
    torch.manual_seed(0)
    config = AdaLoraConfig(init_r=4, target_modules=["fc1", "fc2"], total_step=10)
    model = get_peft_model(WithLoss(), config)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".lora_" in name:
                weight.normal_()
    peft_term = model.base_model(torch.randn(3, 16)).loss  # peft's own: 0.5 * R
    assert torch.allclose(peft_term, 0.5 * orthogonality_penalty(model.base_model.model))


def test_the_training_loss_includes_the_orthogonality_penalty(runs):
    """E starts at zero, so the task loss gives A and B no gradient at first: their distance
    from orthonormal falls only when the penalty is in the loss."""

    def penalty(run):
        tensors = load_file(run / "adapter" / "adapter_model.safetensors")
        terms = [
            torch.linalg.matrix_norm(w @ w.T - torch.eye(len(w)))
            if k.endswith("lora_A")
            else torch.linalg.matrix_norm(w.T @ w - torch.eye(w.shape[1]))
            for k, w in tensors.items()
            if not k.endswith("lora_E")
        ]
        return float(torch.stack(terms).mean())

    without = runs("adalora_no_orth", "adalora", 0, "--adalora-orth-reg-weight", 0)
    assert penalty(runs("adalora")) < penalty(without) - 0.05


def test_adaptive_rank_adapter_converts_exactly_to_lora(runs, tmp_path):
    run = runs("adalora")
    lora = load_adapter(run / "adapter")
    assert lora.config["use_rslora"] is False and set(lora.ranks().values()) <= set(range(9))
    backbone = load_backbone("esm2_t6_8M_UR50D", "random")
    adalora = PeftModel.from_pretrained(backbone.model, str(run / "adapter"))
    converted = delta_weights(lora)
    for module, delta in converted.items():
        layer = adalora.get_submodule(module)
        assert lora.rank(module) == max(1, layer.r["default"])
        expected = layer.get_delta_weight("default")
        assert torch.allclose(delta, expected, rtol=1e-5, atol=1e-8), module
    # the LoRA form written in peft's format reloads as the same network
    save_adapter(lora, tmp_path / "as_lora")
    tokens = torch.randint(4, 24, (2, 30))
    as_lora = PeftModel.from_pretrained(
        load_backbone("esm2_t6_8M_UR50D", "random").model, str(tmp_path / "as_lora")
    )
    out = [m(tokens, repr_layers=[6])["representations"][6] for m in (adalora, as_lora)]
    assert torch.allclose(*out, atol=1e-5)
    rebuilt = with_adapter(load_backbone("esm2_t6_8M_UR50D", "random").model, lora).eval()
    assert torch.allclose(rebuilt(tokens, repr_layers=[6])["representations"][6], out[0], atol=1e-5)


def test_analyses_take_adaptive_rank_runs(runs, task, tmp_path):
    folder, table, sequences = task
    first, second = runs("adalora"), runs("adalora_seed1", "adalora", 1)
    common = {"task": "stability", "model": MODEL}
    lmc = LmcSettings(alphas=3)
    curve = run_lmc(first, second, table, sequences, tmp_path / "lmc.tsv", settings=lmc, **common)
    assert set(curve.path) == {"product"}  # the factor path needs one fixed rank
    assert curve.value.notna().all()

    pair = [first, second]
    settings = MergeSettings(schemes=["1:1"], combinations=["exact", "cat"])
    merged = merge_seeds(pair, table, sequences, tmp_path / "m.tsv", settings=settings, **common)
    assert merged.max_output_diff_vs_sum.max() < 1e-4
    with pytest.raises(InputError, match="different ranks per module.*linear need equal ranks"):
        linear = MergeSettings(schemes=["1:1"], combinations=["exact", "linear"])
        merge_seeds(pair, table, sequences, tmp_path / "l.tsv", settings=linear, **common)
    assert not (tmp_path / "l.tsv").exists()

    shapley = ShapleySettings()
    values = run_shapley(first, table, sequences, tmp_path / "s.tsv", settings=shapley, **common)
    for _, part in values.groupby("value"):
        assert abs(part.shapley.sum() - (part.v_all.iloc[0] - part.v_none.iloc[0])) < 1e-9

    pruning = PruningSettings(schemes=["every_other", "magnitude_dw"], sparsities=[0.5])
    pruned = run_pruning(first, table, sequences, tmp_path / "p.tsv", settings=pruning, **common)
    assert {"none", "every_other", "magnitude_dw"} == set(pruned.scheme)
    none = pruned[(pruned.scheme == "none") & (pruned.split == "test")].set_index("metric").value
    saved = pd.read_csv(first / "predictions.tsv", sep="\t")
    test = saved[saved.split == "test"]
    own = stats.spearmanr(test.prediction, test.label).statistic  # the unpruned adapter: the run's
    assert none["spearman"] == pytest.approx(own, abs=1e-6)


def test_killed_lingo_run_resumes_to_the_same_adapter(task, tmp_path):
    """Killed mid-epoch 2, the rerun resumes from epoch 1's checkpoint (the allocator's scores,
    its events and Lingo's generator with it) and ends as an uninterrupted run."""
    folder, table, sequences = task
    flags = [*SHORT, "--max-epochs", 4]

    def argv(out):
        return finetune_argv("lingo", "sequence_regression", table, sequences, out, *flags)

    marker = tmp_path / "mid-epoch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", KILLED_MID_EPOCH, str(marker), *argv(tmp_path / "killed")]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    kill_when_marked(process, marker)
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    assert main(argv(tmp_path / "killed")) == 0
    assert main(argv(tmp_path / "straight")) == 0
    for name in ("rank_allocation.tsv", "predictions.tsv", "training_log.tsv"):
        assert (tmp_path / "killed" / name).read_text() == (
            tmp_path / "straight" / name
        ).read_text()
    adapters = [
        load_file(tmp_path / run / "adapter" / "adapter_model.safetensors")
        for run in ("killed", "straight")
    ]
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tinit": 9, "tfinal": 3}, r"adalora.tinit \(9 steps\) must be below .* 12 optimizer"),
        ({"tfinal": 0.01}, "adalora.tfinal 0.01 is 0 of the run's 12 optimizer steps"),
    ],
)
def test_schedules_peft_cannot_follow_are_refused(values, message):
    with pytest.raises(InputError, match=message):
        schedule(AdaLoraSettings(**values), 12)


def test_bad_adaptive_rank_settings_fail_before_training(task, tmp_path, capsys):
    folder, table, sequences = task
    out = tmp_path / "refused"
    for flags, message in (
        (["--adalora-tinit", 20], "adalora.tinit (20 steps) must be below"),
        (["--adalora-target-r", 9], "adalora.target_r 9 must be from 1 to adalora.init_r (8)"),
    ):
        argv = finetune_argv("adalora", "sequence_regression", table, sequences, out, *SHORT)
        assert main([*argv, *map(str, flags)]) == 2
        assert message in capsys.readouterr().err
        assert not (out / "manifest.json").exists() and not (out / "predictions.tsv").exists()


def test_federated_training_refuses_adaptive_rank_methods():
    with pytest.raises(InputError, match="federated.methods.*one fixed rank for every module"):
        check_analysis_methods({"federated": {"methods": ["lora", "lingo"]}})
    check_analysis_methods({"merging": {"methods": ["adalora", "lingo"]}})

"""Merging LoRA adapters: seeds of one task, or one adapter per task into one backbone.

Every `combination_type` of peft's `add_weighted_adapter`, plus `exact`: the weighted sum of
dW = s B A as one adapter of the concatenated factors. Merging and evaluation run in float32.
Each merged model is compared with its sources: their own metrics, and the largest difference
between its outputs and those of the unmerged sum (all sources active at once, each scaled by its
weight), which is zero up to rounding for the methods exact in dW.
"""

import copy
import logging
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from copra import config
from copra.adapter_algebra import (
    add_adapter,
    check_compatible,
    load_adapter,
    weighted_delta_sum,
    with_adapter,
)
from copra.atomic import write_table
from copra.backbone import load_backbone
from copra.device import pick_device
from copra.errors import InputError
from copra.finetune import Batcher, TaskData, predict, task_data
from copra.metrics import loss_and_primary_metric
from copra.provenance import write_manifest
from copra.tables import read_sequences, read_task_table
from copra.trained_run import TrainedRun

log = logging.getLogger(__name__)
PEFT_COMBINATIONS = (
    "linear",
    "cat",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
COMBINATIONS = ("exact", *PEFT_COMBINATIONS)
EXACT_IN_DW = ("exact", "cat")
SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
SPLITS = ("valid", "test")
COLUMNS = [
    "task",
    "method",
    "merge",
    "weights",
    "combination",
    "exact_in_dw",
    "split",
    "metric",
    "merged",
    "sources",
    "source_values",
    "source_mean",
    "source_best",
    "max_output_diff_vs_sum",
]


@dataclass(frozen=True)
class MergeSettings:
    density: float = config.default("merging.density")
    majority_sign_method: str = config.default("merging.majority_sign_method")
    svd_rank: int | None = config.default("merging.svd_rank")
    seed: int = config.default("merging.seed")


@dataclass
class Evaluation:
    """One task's valid and test data, scored under a head."""

    task: str
    run: TrainedRun
    data: dict[str, TaskData]

    def outputs(self, network, backbone, head: dict, batcher) -> dict[str, torch.Tensor]:
        model = self.run.model(network, backbone, head).to(batcher.device)
        return {s: predict(model, self.data[s], batcher, 16, float32=True) for s in SPLITS}

    def scores(self, outputs: dict[str, torch.Tensor]) -> dict[tuple[str, str], float]:
        scores = {}
        for split in SPLITS:
            loss, metric = loss_and_primary_metric(
                outputs[split], self.data[split].targets, self.run.targets
            )
            scores[split, "loss"], scores[split, self.run.targets.primary_metric] = loss, metric
        return scores


def parse_scheme(scheme: str) -> list[float]:
    """'1:2' -> [1/3, 2/3]: the weights of the first seeds, normalised to sum to one."""
    try:
        parts = [float(p) for p in scheme.split(":")]
    except ValueError:
        parts = []
    if len(parts) < 2 or min(parts) < 0 or sum(parts) <= 0:
        raise InputError(f"merging scheme {scheme!r} is not like '1:1' or '1:2' (two or more >= 0)")
    return [p / sum(parts) for p in parts]


def check_sources(runs: list[TrainedRun], adapters, combinations) -> None:
    """Refuse sources that cannot merge: other backbones, modules, or ranks a method needs equal."""
    names = [str(run.folder) for run in runs]
    for run, name in zip(runs[1:], names[1:], strict=True):
        if run.manifest["backbone"] != runs[0].manifest["backbone"]:
            raise InputError(
                f"{names[0]} and {name} were trained on different backbones "
                f"({runs[0].manifest['backbone']} vs {run.manifest['backbone']})"
            )
    check_compatible(adapters)
    needs_rank = [c for c in combinations if c in SAME_RANK]
    ranks = {a.config["r"] for a in adapters}
    if needs_rank and len(ranks) > 1:
        raise InputError(
            f"{' and '.join(names)} have ranks {sorted(ranks)}: {', '.join(needs_rank)} need "
            "equal ranks; use exact, cat or the svd methods"
        )


def open_sources(folders) -> tuple[list[TrainedRun], list]:
    """The trained runs and their adapters; a missing adapter names every source."""
    runs = [TrainedRun.open(folder) for folder in folders]
    for run in runs:
        if run.manifest["method"] not in ("lora", "copra"):
            raise InputError("only LoRA and CopRA adapters merge", path=run.folder)
    try:
        adapters = [load_adapter(run.adapter_folder) for run in runs]
    except InputError as error:
        raise InputError(f"merging {', '.join(map(str, folders))}: {error}") from None
    return runs, adapters


def add_merged(model, adapters, weights, combination: str, settings: MergeSettings) -> str:
    """Add the merged adapter to `model` (sources named source0..); return its name."""
    name = f"merged_{combination}"
    if combination == "exact":
        add_adapter(model, weighted_delta_sum(adapters, weights), name)
        return name
    torch.manual_seed(settings.seed)  # dare_* drop at random
    model.add_weighted_adapter(
        [f"source{i}" for i in range(len(adapters))],
        list(weights),
        name,
        combination_type=combination,
        svd_rank=settings.svd_rank,
        density=settings.density,
        majority_sign_method=settings.majority_sign_method,
    )
    return name


def activate(model, names: list[str], scales: list[float]) -> None:
    """Make `names` the active adapters, each scaled by its factor (1 = as trained)."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, scale in zip(names, scales, strict=True):
                module.set_scale(name, scale)
    model.base_model.set_adapter(names)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[s] - b[s]).abs().max()) for s in SPLITS)


def merge_and_score(
    backbone, runs, adapters, weights, evaluations, heads, owners, combinations, settings
):
    """Rows of (evaluation index, combination, scores, output difference), and source scores.

    Merged models are scored on `evaluations[j]` under `heads[j]`; source i only on the evaluation
    `owners[i]` of its own task, under its own head.
    """
    device = pick_device()
    network = copy.deepcopy(backbone.model).float().to(device)
    model = with_adapter(network, adapters[0], "source0")
    for i, adapter in enumerate(adapters[1:], start=1):
        add_adapter(model, adapter, f"source{i}")
    names = [f"source{i}" for i in range(len(adapters))]
    batcher = Batcher(backbone.alphabet, device, runs[0].manifest["settings"]["max_residues"])
    activate(model, names, weights)
    summed = [
        e.outputs(model, backbone, h, batcher) for e, h in zip(evaluations, heads, strict=True)
    ]
    sources = []
    for i, (run, name, j) in enumerate(zip(runs, names, owners, strict=True)):
        activate(model, [name], [1.0])
        outputs = evaluations[j].outputs(model, backbone, run.head_state(), batcher)
        sources.append((j, i, evaluations[j].scores(outputs)))
    merged = []
    for combination in tqdm(combinations, desc="merging", mininterval=10):
        activate(model, names, [1.0] * len(names))  # peft merges the sources as trained
        name = add_merged(model, adapters, weights, combination, settings)
        model.base_model.set_adapter(name)
        for j, (evaluation, head) in enumerate(zip(evaluations, heads, strict=True)):
            outputs = evaluation.outputs(model, backbone, head, batcher)
            difference = max_difference(outputs, summed[j])
            merged.append((j, combination, evaluation.scores(outputs), difference))
        model.base_model.set_adapter(names)
        model.delete_adapter(name)
    return merged, sources


def tidy_rows(evaluations, labels, merged, sources, merge: str, weights: str, method: str):
    """One row per task, combination, split and metric: the merged value beside its sources'."""
    rows = []
    for j, combination, scores, difference in merged:
        own = [(i, s) for k, i, s in sources if k == j]
        for (split, metric), value in scores.items():
            values = [s[split, metric] for _, s in own]
            higher_is_better = metric != "loss" and metric != "rmse"
            best = max(values) if higher_is_better else min(values)
            rows.append(
                (
                    evaluations[j].task,
                    method,
                    merge,
                    weights,
                    combination,
                    combination in EXACT_IN_DW,
                    split,
                    metric,
                    value,
                    ",".join(labels[i] for i, _ in own),
                    ",".join(f"{v:.6g}" for v in values),
                    sum(values) / len(values),
                    best,
                    difference,
                )
            )
    return rows


def read_evaluation(task: str, run: TrainedRun, table_path, sequences_path) -> Evaluation:
    kind = run.manifest["kind"]
    table = read_task_table(table_path, kind)
    sequences = read_sequences(sequences_path)
    data = {s: task_data(table[table.split == s], sequences, kind, run.targets) for s in SPLITS}
    return Evaluation(task, run, data)


def _backbone(runs, model_name, weights, model_seed, weights_dir):
    backbone = load_backbone(model_name, weights, seed=model_seed, weights_dir=weights_dir)
    for run in runs:
        run.check_backbone(backbone)
    return backbone


def merge_seeds(
    run_folders,
    table_path,
    sequences_path,
    output,
    *,
    task: str,
    schemes: list[str],
    combinations: list[str],
    model_name: str,
    weights: str,
    model_seed: int = 0,
    weights_dir=None,
    settings: MergeSettings | None = None,
    config_snapshot: dict | None = None,
) -> pd.DataFrame:
    """Same-task merges: scheme 'w1:w2[:w3]' merges the first 2 (3) runs with those weights."""
    settings = settings or MergeSettings()
    runs, adapters = open_sources(run_folders)
    check_sources(runs, adapters, combinations)
    if {run.manifest["method"] for run in runs} != {runs[0].manifest["method"]}:
        raise InputError(
            f"{', '.join(map(str, run_folders))} mix methods: merge one method's seeds"
        )
    if any(run.targets != runs[0].targets for run in runs):
        raise InputError(f"{', '.join(map(str, run_folders))} have different label spaces")
    backbone = _backbone(runs, model_name, weights, model_seed, weights_dir)
    evaluation = read_evaluation(task, runs[0], table_path, sequences_path)
    rows = []
    for scheme in schemes:
        scheme_weights = parse_scheme(scheme)
        if len(scheme_weights) > len(runs):
            raise InputError(
                f"merging scheme {scheme} needs {len(scheme_weights)} seeds; {len(runs)} given"
            )
        chosen = runs[: len(scheme_weights)]
        heads = [run.head_state() for run in chosen]
        head = {
            k: sum(w * h[k] for w, h in zip(scheme_weights, heads, strict=True)) for k in heads[0]
        }
        log.info("%s: merging %d seeds with weights %s", task, len(chosen), scheme)
        merged, sources = merge_and_score(
            backbone,
            chosen,
            adapters[: len(chosen)],
            scheme_weights,
            [evaluation],
            [head],
            [0] * len(chosen),
            combinations,
            settings,
        )
        labels = [f"seed{run.manifest['seed']}" for run in chosen]
        method = runs[0].manifest["method"]
        rows += tidy_rows([evaluation], labels, merged, sources, "seeds", scheme, method)
    return _write(rows, output, runs, [table_path, sequences_path], settings, config_snapshot)


def merge_tasks(
    task_inputs: dict[str, tuple],
    output,
    *,
    weight: float,
    combinations: list[str],
    model_name: str,
    weights: str,
    model_seed: int = 0,
    weights_dir=None,
    settings: MergeSettings | None = None,
    config_snapshot: dict | None = None,
) -> pd.DataFrame:
    """Multi-task merge: one adapter per task (`task -> (run, table, sequences)`), each task
    evaluated with its own head on the merged backbone."""
    settings = settings or MergeSettings()
    if len(task_inputs) < 2:
        raise InputError("a multi-task merge needs adapters of two or more tasks")
    tasks = list(task_inputs)
    runs, adapters = open_sources([task_inputs[t][0] for t in tasks])
    check_sources(runs, adapters, combinations)
    backbone = _backbone(runs, model_name, weights, model_seed, weights_dir)
    evaluations = [
        read_evaluation(t, run, *task_inputs[t][1:]) for t, run in zip(tasks, runs, strict=True)
    ]
    heads = [run.head_state() for run in runs]
    merged, sources = merge_and_score(
        backbone,
        runs,
        adapters,
        [weight] * len(runs),
        evaluations,
        heads,
        list(range(len(runs))),
        combinations,
        settings,
    )
    methods = "+".join(sorted({run.manifest["method"] for run in runs}))
    rows = tidy_rows(evaluations, tasks, merged, sources, "tasks", f"{weight:g} each", methods)
    inputs = [path for t in tasks for path in task_inputs[t][1:]]
    return _write(rows, output, runs, inputs, settings, config_snapshot)


def _write(rows, output, runs, inputs, settings, config_snapshot) -> pd.DataFrame:
    from dataclasses import asdict

    table = pd.DataFrame(rows, columns=COLUMNS)
    write_table(output, table)
    write_manifest(
        str(output).removesuffix(".tsv") + ".manifest.json",
        inputs=[*inputs, *(run.adapter_folder / "adapter_model.safetensors" for run in runs)],
        config=config_snapshot,
        sources=[str(run.folder) for run in runs],
        settings=asdict(settings),
        precision="float32",
    )
    return table

"""Merging LoRA adapters: seeds of one task, or one adapter per task into one backbone.

Every `combination_type` of peft's `add_weighted_adapter`, plus `exact`: the weighted sum of
dW = s B A as one adapter of the concatenated factors. Merging and evaluation run in float32.
Each merged model is compared with its sources: their own metrics, and the largest difference
between its outputs and those of the unmerged sum (all sources active at once, each scaled by its
weight), which is zero up to rounding for the methods exact in dW.
"""

import copy
import itertools
import logging
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from tqdm import tqdm

from copra.adapter_algebra import (
    Adapter,
    add_adapter,
    check_compatible,
    load_adapter,
    rank_difference,
    save_adapter,
    weighted_delta_sum,
    with_adapter,
)
from copra.atomic import write_table
from copra.device import pick_device
from copra.errors import InputError
from copra.provenance import write_manifest
from copra.settings import SAME_RANK_COMBINATIONS, MergeSettings, ModelSettings
from copra.trained_run import Scorer, TrainedRun, open_runs, shared_backbone

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


@dataclass
class Evaluation:
    """One task's valid and test splits, scored under a head."""

    task: str
    scorer: Scorer

    def outputs(self, network, backbone, head: dict) -> dict[str, torch.Tensor]:
        return self.scorer.outputs(self.scorer.run.model(network, backbone, head))


@dataclass
class Sources:
    """The adapters being merged, the runs they come from and the backbone they share."""

    runs: list[TrainedRun]
    adapters: list[Adapter]
    backbone: object


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
    needs_rank = [c for c in combinations if c in SAME_RANK_COMBINATIONS]
    differ = [i for i, a in enumerate(adapters) if a.ranks() != adapters[0].ranks()]
    if needs_rank and differ:
        other = differ[0]
        raise InputError(
            f"{names[0]} and {names[other]} {rank_difference(adapters[0], adapters[other])}: "
            f"{', '.join(needs_rank)} need equal ranks; use exact, cat or the svd methods"
        )


def open_sources(folders, combinations, model: ModelSettings) -> Sources:
    """The trained runs, their adapters (a missing one names every source) and the backbone."""
    runs = open_runs(folders, "merging")
    try:
        adapters = [load_adapter(run.adapter_folder) for run in runs]
    except InputError as error:
        raise InputError(f"merging {', '.join(map(str, folders))}: {error}") from None
    check_sources(runs, adapters, combinations)
    return Sources(runs, adapters, shared_backbone(runs, model))


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
    return max(float((a[s] - b[s]).abs().max()) for s in a)


def merge_and_score(sources: Sources, weights, evaluations, heads, owners, settings):
    """Rows of (evaluation index, combination, scores, output difference), and source scores.

    Merged models are scored on `evaluations[j]` under `heads[j]`; source i only on the evaluation
    `owners[i]` of its own task, under its own head.
    """
    runs, adapters, backbone = sources.runs, sources.adapters, sources.backbone
    network = copy.deepcopy(backbone.model).float().to(pick_device())
    model = with_adapter(network, adapters[0], "source0")
    for i, adapter in enumerate(adapters[1:], start=1):
        add_adapter(model, adapter, f"source{i}")
    names = [f"source{i}" for i in range(len(adapters))]
    activate(model, names, weights)
    summed = [e.outputs(model, backbone, h) for e, h in zip(evaluations, heads, strict=True)]
    scored = []
    for i, (run, name, j) in enumerate(zip(runs, names, owners, strict=True)):
        activate(model, [name], [1.0])
        outputs = evaluations[j].outputs(model, backbone, run.head_state())
        scored.append((j, i, evaluations[j].scorer.scores(outputs)))
    merged = []
    for combination in tqdm(settings.combinations, desc="merging", mininterval=10):
        activate(model, names, [1.0] * len(names))  # peft merges the sources as trained
        name = add_merged(model, adapters, weights, combination, settings)
        model.base_model.set_adapter(name)
        for j, (evaluation, head) in enumerate(zip(evaluations, heads, strict=True)):
            outputs = evaluation.outputs(model, backbone, head)
            difference = max_difference(outputs, summed[j])
            merged.append((j, combination, evaluation.scorer.scores(outputs), difference))
        model.base_model.set_adapter(names)
        model.delete_adapter(name)
    return merged, scored


def tidy_rows(evaluations, labels, merged, sources, merge: str, weights: str, method: str):
    """One row per task, combination, split and metric: the merged value beside its sources'."""
    rows = []
    for j, combination, scores, difference in merged:
        own = [(i, s) for k, i, s in sources if k == j]
        for split, values in scores.items():
            for metric, value in values.items():
                mine = [s[split][metric] for _, s in own]
                higher_is_better = metric != "loss" and metric != "rmse"
                best = max(mine) if higher_is_better else min(mine)
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
                        ",".join(f"{v:.6g}" for v in mine),
                        sum(mine) / len(mine),
                        best,
                        difference,
                    )
                )
    return rows


def merge_seeds(
    run_folders,
    table_path,
    sequences_path,
    output,
    *,
    task: str,
    settings: MergeSettings | None = None,
    model: ModelSettings | None = None,
    config_snapshot: dict | None = None,
) -> pd.DataFrame:
    """Same-task merges: scheme 'w1:w2[:w3]' merges every 2 (3) of the runs, in their order,
    with those weights (three seeds: three 1:1 merges, an interval across them)."""
    settings, model = settings or MergeSettings(), model or ModelSettings()
    sources = open_sources(run_folders, settings.combinations, model)
    runs = sources.runs
    if {run.manifest["method"] for run in runs} != {runs[0].manifest["method"]}:
        raise InputError(
            f"{', '.join(map(str, run_folders))} mix methods: merge one method's seeds"
        )
    if any(run.targets != runs[0].targets for run in runs):
        raise InputError(f"{', '.join(map(str, run_folders))} have different label spaces")
    scorer = Scorer(runs[0], sources.backbone, table_path, sequences_path)
    evaluation = Evaluation(task, scorer)
    rows = []
    for scheme in settings.schemes:
        scheme_weights = parse_scheme(scheme)
        if len(scheme_weights) > len(runs):
            raise InputError(
                f"merging scheme {scheme} needs {len(scheme_weights)} seeds; {len(runs)} given"
            )
        count = len(scheme_weights)
        for picked in itertools.combinations(range(len(runs)), count):
            chosen = Sources(
                [runs[i] for i in picked], [sources.adapters[i] for i in picked], sources.backbone
            )
            heads = [run.head_state() for run in chosen.runs]
            head = {
                k: sum(w * h[k] for w, h in zip(scheme_weights, heads, strict=True))
                for k in heads[0]
            }
            labels = [f"seed{run.manifest['seed']}" for run in chosen.runs]
            log.info("%s: merging %s with weights %s", task, "+".join(labels), scheme)
            merged, scored = merge_and_score(
                chosen, scheme_weights, [evaluation], [head], [0] * count, settings
            )
            method = runs[0].manifest["method"]
            rows += tidy_rows([evaluation], labels, merged, scored, "seeds", scheme, method)
    return _write(rows, output, runs, [table_path, sequences_path], settings, config_snapshot)


def merge_tasks(
    task_inputs: dict[str, tuple],
    output,
    *,
    settings: MergeSettings | None = None,
    model: ModelSettings | None = None,
    config_snapshot: dict | None = None,
) -> pd.DataFrame:
    """Multi-task merge: one adapter per task (`task -> (run, table, sequences)`), each task
    evaluated with its own head on the merged backbone, every adapter at multitask_weight."""
    settings, model = settings or MergeSettings(), model or ModelSettings()
    if len(task_inputs) < 2:
        raise InputError("a multi-task merge needs adapters of two or more tasks")
    tasks = list(task_inputs)
    sources = open_sources([task_inputs[t][0] for t in tasks], settings.combinations, model)
    runs = sources.runs
    evaluations = [
        Evaluation(t, Scorer(run, sources.backbone, *task_inputs[t][1:]))
        for t, run in zip(tasks, runs, strict=True)
    ]
    heads = [run.head_state() for run in runs]
    weight = settings.multitask_weight
    merged, scored = merge_and_score(
        sources, [weight] * len(runs), evaluations, heads, list(range(len(runs))), settings
    )
    methods = "+".join(sorted({run.manifest["method"] for run in runs}))
    rows = tidy_rows(evaluations, tasks, merged, scored, "tasks", f"{weight:g} each", methods)
    inputs = [path for t in tasks for path in task_inputs[t][1:]]
    return _write(rows, output, runs, inputs, settings, config_snapshot)


def _write(rows, output, runs, inputs, settings, config_snapshot) -> pd.DataFrame:
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


def write_merged_adapter(adapter_dirs, output, *, scheme: str) -> Adapter:
    """One adapter in peft's format whose dW is the weighted sum of the adapters' (`scheme`
    'w1:w2[:...]', normalised; the `exact` combination): for `copra predict --adapter`."""
    weights = parse_scheme(scheme)
    if len(weights) != len(adapter_dirs):
        raise InputError(
            f"scheme {scheme} has {len(weights)} weights for {len(adapter_dirs)} adapters"
        )
    merged = weighted_delta_sum([load_adapter(folder) for folder in adapter_dirs], weights)
    save_adapter(merged, output)
    return merged

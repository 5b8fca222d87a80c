"""Pruning a trained adapter, structured (whole layers or module types) and unstructured
(magnitude of dW, or of A and B), and how the task metric holds up.

Every pruned adapter is an ordinary adapter in peft's format: a dropped module has zero factors,
and a magnitude-pruned dW (no longer of rank r) is stored exactly as a full-rank factorisation.
Amount 0 returns the adapter unchanged.
"""

import copy
import logging
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from copra.adapter_algebra import (
    Adapter,
    add_adapter,
    delta_weights,
    load_adapter,
    save_adapter,
    unit_scaled,
    with_adapter,
)
from copra.atomic import write_table
from copra.errors import InputError
from copra.provenance import write_manifest
from copra.settings import ModelSettings, PruningSettings
from copra.trained_run import Scorer, open_runs, shared_backbone

log = logging.getLogger(__name__)
COLUMNS = ["task", "method", "seed", "scheme", "amount", "split", "metric", "value"]
STRUCTURED = ("every_other", "keep_low", "keep_middle", "keep_high", "keep_q", "keep_k", "keep_v")
RANKED = ("lowest_shapley", "lowest_norm", "random")
MAGNITUDE = ("magnitude_dw", "magnitude_ab")
SCHEMES = STRUCTURED + RANKED + MAGNITUDE


def module_layer(module: str) -> int:
    parts = module.split(".")
    return int(parts[parts.index("layers") + 1])


def layers_of(adapter: Adapter) -> list[int]:
    return sorted({module_layer(m) for m in adapter.modules})


def keep_modules(adapter: Adapter, kept, name: str) -> Adapter:
    """`adapter` with the factors of every module not in `kept` set to zero."""
    tensors = {
        k: v if k.rsplit(".lora_", 1)[0] in kept else torch.zeros_like(v)
        for k, v in adapter.tensors.items()
    }
    return replace(adapter, name=name, tensors=tensors)


def without_layers(adapter: Adapter, removed, name: str) -> Adapter:
    removed = set(removed)
    kept = [m for m in adapter.modules if module_layer(m) not in removed]
    return keep_modules(adapter, kept, name)


def structured(adapter: Adapter, scheme: str) -> tuple[Adapter, float] | None:
    """The adapter under a structured scheme and the fraction of modules it drops (None when
    the scheme keeps a module type the adapter does not have)."""
    layers = layers_of(adapter)
    if scheme == "every_other":
        kept = [m for m in adapter.modules if layers.index(module_layer(m)) % 2 == 0]
    elif scheme.startswith("keep_") and scheme[5:] in ("low", "middle", "high"):
        third = np.array_split(layers, 3)[("low", "middle", "high").index(scheme[5:])]
        kept = [m for m in adapter.modules if module_layer(m) in set(third.tolist())]
    else:
        kept = [m for m in adapter.modules if m.endswith(f"{scheme[5:]}_proj")]
        if not kept:
            return None
    return keep_modules(adapter, kept, scheme), 1 - len(kept) / len(adapter.modules)


def layer_norms(adapter: Adapter) -> dict[int, float]:
    """||dW||_F of each layer (all its modules together)."""
    norms = {}
    for module, delta in delta_weights(adapter).items():
        norms[module_layer(module)] = norms.get(module_layer(module), 0.0) + float(
            delta.square().sum()
        )
    return {layer: value**0.5 for layer, value in norms.items()}


def layer_order(
    adapter: Adapter, scheme: str, shapley: pd.DataFrame | None, seed: int
) -> list[int]:
    """Layers in the order a ranked scheme removes them (lowest first)."""
    layers = layers_of(adapter)
    if scheme == "random":
        return [layers[i] for i in np.random.default_rng(seed).permutation(len(layers))]
    if scheme == "lowest_norm":
        norms = layer_norms(adapter)
        return sorted(layers, key=lambda layer: (norms[layer], layer))
    if shapley is None:
        raise InputError("pruning scheme lowest_shapley needs the run's Shapley table (--shapley)")
    by_layer = shapley[shapley.value != "neg_loss"].groupby("layer").shapley.sum()
    missing = [layer for layer in layers if layer not in by_layer.index]
    if missing:
        raise InputError(f"the Shapley table has no value for layers {missing}: not this run's")
    return sorted(layers, key=lambda layer: (by_layer[layer], layer))


def magnitude(adapter: Adapter, scheme: str, sparsity: float) -> Adapter:
    """Zero the smallest `sparsity` of each module's dW entries (magnitude_dw, stored as a
    full-rank factorisation) or of A's and B's entries separately (magnitude_ab)."""
    if sparsity == 0:
        return adapter
    name = f"{scheme}({sparsity:g})"
    if scheme == "magnitude_ab":
        return replace(
            adapter,
            name=name,
            tensors={k: prune_smallest(v, sparsity) for k, v in adapter.tensors.items()},
        )
    deltas = {m: prune_smallest(d, sparsity) for m, d in delta_weights(adapter).items()}
    rank = max(min(d.shape) for d in deltas.values())
    tensors = {}
    for module, delta in deltas.items():
        u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
        root = s.sqrt()
        a, b = root[:, None] * vh, u * root
        tensors[f"{module}.lora_A.weight"] = pad_rows(a, rank).float()
        tensors[f"{module}.lora_B.weight"] = pad_rows(b.T, rank).T.float()
    return Adapter(name, unit_scaled(adapter.config, dict.fromkeys(deltas, rank)), tensors)


def pad_rows(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([matrix, matrix.new_zeros(rows - len(matrix), matrix.shape[1])])


def prune_smallest(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """`tensor` with its `sparsity` fraction of smallest-magnitude entries set to zero."""
    count = int(round(sparsity * tensor.numel()))
    if count == 0:
        return tensor
    threshold = tensor.abs().flatten().kthvalue(count).values
    return torch.where(tensor.abs() <= threshold, torch.zeros_like(tensor), tensor)


def pruned_adapters(adapter: Adapter, settings: PruningSettings, shapley=None):
    """(scheme, amount, adapter) of every scheme and amount of the settings."""
    yield "none", 0.0, adapter
    layers = layers_of(adapter)
    for scheme in settings.schemes:
        if scheme in STRUCTURED:
            result = structured(adapter, scheme)
            if result is None:
                log.info("skipping %s: the adapter has no such modules", scheme)
                continue
            yield scheme, result[1], result[0]
        elif scheme in RANKED:
            order = layer_order(adapter, scheme, shapley, settings.seed)
            for k in range(1, len(layers) + 1):
                yield scheme, k / len(layers), without_layers(adapter, order[:k], f"{scheme}({k})")
        elif scheme in MAGNITUDE:
            for sparsity in settings.sparsities:
                yield scheme, float(sparsity), magnitude(adapter, scheme, sparsity)
        else:
            raise InputError(f"pruning scheme {scheme!r} is not one of {', '.join(SCHEMES)}")


def run_pruning(
    run_dir,
    table_path,
    sequences_path,
    output,
    *,
    task: str,
    shapley_path=None,
    settings: PruningSettings | None = None,
    model: ModelSettings | None = None,
) -> pd.DataFrame:
    """Evaluate every pruned variant of one run's adapter on valid and test."""
    settings, model = settings or PruningSettings(), model or ModelSettings()
    (run,) = open_runs([run_dir], "pruning")
    adapter = load_adapter(run.adapter_folder)
    shapley = pd.read_csv(shapley_path, sep="\t") if shapley_path else None
    backbone = shared_backbone([run], model)
    network = with_adapter(copy.deepcopy(backbone.model).float(), adapter)
    scored = run.model(network, backbone).float()
    scorer = Scorer(run, backbone, table_path, sequences_path)
    rows = []
    key = (task, run.manifest["method"], run.manifest["seed"])
    for scheme, amount, variant in tqdm(
        list(pruned_adapters(adapter, settings, shapley)), desc=f"{task} pruning", mininterval=10
    ):
        add_adapter(network, variant, "pruned")
        network.base_model.set_adapter("pruned")
        for split, scores in scorer.score(scored).items():
            rows += [(*key, scheme, amount, split, m, v) for m, v in scores.items()]
        network.base_model.set_adapter("default")
        network.delete_adapter("pruned")
    result = pd.DataFrame(rows, columns=COLUMNS)
    write_table(output, result)
    write_manifest(
        str(output).removesuffix(".tsv") + ".manifest.json",
        inputs=[
            table_path,
            sequences_path,
            run.adapter_folder / "adapter_model.safetensors",
            *([shapley_path] if shapley_path else []),
        ],
        settings=asdict(settings),
        run=str(run.folder),
        precision="float32",
    )
    return result


def prune_adapter(
    adapter_dir, output, *, scheme: str, amount: float, seed: int = 0, shapley_path=None
) -> Adapter:
    """Write one pruned adapter in peft's format. `amount`: the sparsity of magnitude schemes,
    the fraction of layers removed by ranked ones; structured schemes take none."""
    adapter = load_adapter(adapter_dir)
    if scheme in STRUCTURED:
        result = structured(adapter, scheme)
        if result is None:
            raise InputError(f"{adapter_dir}: no {scheme[5:]}_proj modules to keep")
        pruned = result[0]
    elif scheme in RANKED:
        shapley = pd.read_csv(shapley_path, sep="\t") if shapley_path else None
        order = layer_order(adapter, scheme, shapley, seed)
        pruned = without_layers(adapter, order[: int(round(amount * len(order)))], scheme)
    elif scheme in MAGNITUDE:
        if not 0 <= amount < 1:
            raise InputError(f"sparsity {amount} is outside [0, 1)")
        pruned = magnitude(adapter, scheme, amount)
    else:
        raise InputError(f"pruning scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    save_adapter(pruned, output)
    return pruned

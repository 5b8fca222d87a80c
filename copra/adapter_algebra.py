"""LoRA adapters as data: load peft's files, check they combine, and combine them.

A module's update is dW = s * B @ A (s = alpha / r, per module where peft's rank and alpha
patterns say so). Interpolating the factors A and B adds cross terms; a weighted sum of dW is
exact, as one adapter of the concatenated factors. An AdaLoRA adapter (methods adalora and lingo)
loads as the LoRA adapter of its kept triplets with the same dW: A' = diag(E) A, B' = s B.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils.other import get_pattern_key
from safetensors.torch import load_file, save_file

from copra.atomic import atomic_directory
from copra.errors import InputError

CONFIG_FIELDS = (
    "r",
    "lora_alpha",
    "target_modules",
    "layers_to_transform",
    "layers_pattern",
    "lora_dropout",
    "use_rslora",
    "rank_pattern",
    "alpha_pattern",
    "base_model_name_or_path",
)
PREFIX = "base_model.model."  # of peft's saved keys; patterns name modules without it
ADALORA_EPSILON = 1e-5  # peft's AdaLoRA scales by alpha / (init_r + 1e-5)


@dataclass(frozen=True)
class Adapter:
    """One LoRA adapter in peft's saved layout (keys `...<module>.lora_A.weight`)."""

    name: str
    config: dict
    tensors: dict

    def _pattern(self, name: str, module: str, default):
        pattern = self.config.get(name) or {}
        return pattern.get(get_pattern_key(pattern, module.removeprefix(PREFIX)), default)

    def rank(self, module: str) -> int:
        """The module's rank as peft builds it (its `rank_pattern` entry, or `r`)."""
        return self._pattern("rank_pattern", module, self.config["r"])

    def scaling(self, module: str) -> float:
        r, alpha = (
            self.rank(module),
            self._pattern("alpha_pattern", module, self.config["lora_alpha"]),
        )
        return alpha / r**0.5 if self.config.get("use_rslora") else alpha / r

    def ranks(self) -> dict[str, int]:
        return {module: self.rank(module) for module in self.modules}

    @property
    def modules(self) -> list[str]:
        return sorted({key.rsplit(".lora_", 1)[0] for key in self.tensors})

    def factors(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[f"{module}.lora_A.weight"], self.tensors[f"{module}.lora_B.weight"]


def unit_scaled(config: dict, ranks: dict[str, int]) -> dict:
    """`config` for factors whose scaling already sits in B: every module's alpha is its rank
    (scaling 1); modules of another rank than the most common one are named in the patterns."""
    values = list(ranks.values())
    r = max(set(values), key=lambda rank: (values.count(rank), rank))
    pattern = {m.removeprefix(PREFIX): k for m, k in ranks.items() if k != r}
    return {
        **config,
        "r": r,
        "lora_alpha": r,
        "use_rslora": False,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
    }


def adalora_as_lora(name: str, config: dict, tensors: dict) -> Adapter:
    """The LoRA adapter with an AdaLoRA adapter's dW = s B diag(E) A (s = alpha / (init_r +
    1e-5)): A' = diag(E) A and B' = s B over the kept triplets. A module with none kept becomes
    rank 1 with zero factors (peft's LoRA needs a rank of at least 1)."""
    scale = config["lora_alpha"] / (config["init_r"] + ADALORA_EPSILON)
    converted, ranks = {}, {}
    for module in sorted({key.rsplit(".lora_", 1)[0] for key in tensors}):
        a, e, b = (tensors[f"{module}.lora_{part}"] for part in "AEB")
        a, b = (
            (a * e, b * scale) if len(a) else (a.new_zeros(1, a.shape[1]), b.new_zeros(len(b), 1))
        )
        converted[f"{module}.lora_A.weight"], converted[f"{module}.lora_B.weight"] = a, b
        ranks[module] = len(a)
    lora = unit_scaled({k: config.get(k) for k in CONFIG_FIELDS}, ranks)
    return Adapter(name, lora, converted)


def load_adapter(folder) -> Adapter:
    """An adapter folder written by peft's save_pretrained (LoRA, or AdaLoRA as its LoRA)."""
    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise InputError("adapter file missing (was the run trained?)", path=path)
    config = json.loads(config_path.read_text())
    if config.get("use_dora"):
        raise InputError("DoRA adapters cannot be combined", path=folder)
    if config.get("peft_type") == "ADALORA":
        return adalora_as_lora(str(folder), config, load_file(weights_path))
    return Adapter(str(folder), {k: config.get(k) for k in CONFIG_FIELDS}, load_file(weights_path))


def check_compatible(adapters: list[Adapter], same_rank: bool = False) -> None:
    """Refuse adapters of different backbones or modules (or ranks, where a method needs one)."""
    first = adapters[0]
    for other in adapters[1:]:
        names = f"{first.name} and {other.name}"
        if first.config["base_model_name_or_path"] != other.config["base_model_name_or_path"]:
            raise InputError(
                f"{names} were trained on different backbones "
                f"({first.config['base_model_name_or_path']} vs "
                f"{other.config['base_model_name_or_path']})"
            )
        if first.modules != other.modules:
            extra = sorted(set(first.modules) ^ set(other.modules))
            raise InputError(f"{names} adapt different modules (e.g. {extra[0]})")
        if same_rank and first.ranks() != other.ranks():
            raise InputError(f"{names} {rank_difference(first, other)}; this needs equal ranks")


def rank_difference(first: Adapter, other: Adapter) -> str:
    """How two adapters' ranks differ, in words (e.g. for a refusal)."""
    uniform = [set(a.ranks().values()) for a in (first, other)]
    if all(len(ranks) == 1 for ranks in uniform):
        return f"have ranks {uniform[0].pop()} and {uniform[1].pop()}"
    differ = [m for m in first.modules if first.rank(m) != other.rank(m)]
    example = differ[0]  # called for adapters of the same modules whose ranks differ
    return (
        f"have different ranks per module ({len(differ)} differ, e.g. "
        f"{example.removeprefix(PREFIX)}: {first.rank(example)} and {other.rank(example)})"
    )


def interpolate_factors(a: Adapter, b: Adapter, alpha: float) -> Adapter:
    """(1 - alpha) * a + alpha * b on A and B separately (not on dW: adds cross terms)."""
    check_compatible([a, b], same_rank=True)
    tensors = {k: (1 - alpha) * a.tensors[k] + alpha * b.tensors[k] for k in a.tensors}
    return replace(a, name=f"factors({alpha:g})", tensors=tensors)


def weighted_delta_sum(adapters: list[Adapter], weights: list[float]) -> Adapter:
    """The adapter whose dW is exactly sum_i w_i dW_i: factors concatenated, rank sum_i r_i.

    Zero weights are dropped, and one adapter of weight 1 is returned unchanged.
    """
    check_compatible(adapters)
    kept = [(a, w) for a, w in zip(adapters, weights, strict=True) if w != 0]
    if len(kept) == 1 and kept[0][1] == 1:
        return kept[0][0]
    tensors, ranks = {}, {}
    for module in kept[0][0].modules:
        tensors[f"{module}.lora_A.weight"] = torch.cat([a.factors(module)[0] for a, _ in kept])
        tensors[f"{module}.lora_B.weight"] = torch.cat(
            [w * a.scaling(module) * a.factors(module)[1] for a, w in kept], dim=1
        )
        ranks[module] = sum(a.rank(module) for a, _ in kept)
    # The weights and scalings already sit in B: every module's scaling is 1.
    config = unit_scaled(kept[0][0].config, ranks)
    return Adapter(f"sum({', '.join(a.name for a, _ in kept)})", config, tensors)


def delta_weights(adapter: Adapter) -> dict[str, torch.Tensor]:
    """dW = s * B @ A of every module, in float32."""
    return {
        m: adapter.scaling(m) * (adapter.factors(m)[1].float() @ adapter.factors(m)[0].float())
        for m in adapter.modules
    }


def lora_config(adapter: Adapter) -> LoraConfig:
    config = {k: v for k, v in adapter.config.items() if k != "base_model_name_or_path"}
    patterns = {name: config.get(name) or {} for name in ("rank_pattern", "alpha_pattern")}
    return LoraConfig(**{**config, **patterns})


def load_into(model: PeftModel, adapter: Adapter, name: str) -> None:
    """Set the weights of `model`'s adapter `name` to `adapter`'s."""
    result = set_peft_model_state_dict(model, adapter.tensors, adapter_name=name)
    if result.unexpected_keys:
        raise InputError(
            f"{adapter.name}: adapter keys do not fit the backbone: {result.unexpected_keys[:3]}"
        )


def with_adapter(network: torch.nn.Module, adapter: Adapter, name: str = "default") -> PeftModel:
    """`network` (consumed: pass a copy) wrapped by peft with `adapter`'s weights."""
    model = get_peft_model(network, lora_config(adapter), adapter_name=name)
    load_into(model, adapter, name)
    return model


def add_adapter(model: PeftModel, adapter: Adapter, name: str) -> None:
    """One more (inactive) adapter `name` in `model`, with `adapter`'s weights."""
    model.add_adapter(name, lora_config(adapter))
    load_into(model, adapter, name)


def save_adapter(adapter: Adapter, output) -> None:
    """`adapter` in peft's LoRA layout (adapter_config.json written by peft's LoraConfig)."""
    config = lora_config(adapter)
    config.base_model_name_or_path = adapter.config["base_model_name_or_path"]
    with atomic_directory(output) as tmp:
        config.save_pretrained(str(tmp))
        save_file(
            {k: v.contiguous() for k, v in adapter.tensors.items()},
            str(tmp / "adapter_model.safetensors"),
        )

"""LoRA adapters as data: load peft's files, check they combine, and combine them.

A module's update is dW = s * B @ A (s = alpha / r). Interpolating the factors A and B adds cross
terms; a weighted sum of dW is exact, as one adapter of the concatenated factors.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
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
    "base_model_name_or_path",
)


@dataclass(frozen=True)
class Adapter:
    """One LoRA adapter in peft's saved layout (keys `...<module>.lora_A.weight`)."""

    name: str
    config: dict
    tensors: dict

    @property
    def scaling(self) -> float:
        r, alpha = self.config["r"], self.config["lora_alpha"]
        return alpha / r**0.5 if self.config.get("use_rslora") else alpha / r

    @property
    def modules(self) -> list[str]:
        return sorted({key.rsplit(".lora_", 1)[0] for key in self.tensors})

    def factors(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[f"{module}.lora_A.weight"], self.tensors[f"{module}.lora_B.weight"]


def load_adapter(folder) -> Adapter:
    """An adapter folder written by peft's save_pretrained."""
    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise InputError("adapter file missing (was the run trained?)", path=path)
    config = json.loads(config_path.read_text())
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise InputError(
            "DoRA and per-module rank or alpha patterns cannot be combined", path=folder
        )
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
        if same_rank and first.config["r"] != other.config["r"]:
            raise InputError(
                f"{names} have ranks {first.config['r']} and {other.config['r']}; this "
                "combination needs equal ranks"
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
    rank = sum(a.config["r"] for a, _ in kept)
    tensors = {}
    for module in kept[0][0].modules:
        tensors[f"{module}.lora_A.weight"] = torch.cat([a.factors(module)[0] for a, _ in kept])
        tensors[f"{module}.lora_B.weight"] = torch.cat(
            [w * a.scaling * a.factors(module)[1] for a, w in kept], dim=1
        )
    # lora_alpha = rank makes the scaling 1: the weights and scalings already sit in B.
    config = {**kept[0][0].config, "r": rank, "lora_alpha": rank, "use_rslora": False}
    return Adapter(f"sum({', '.join(a.name for a, _ in kept)})", config, tensors)


def delta_weights(adapter: Adapter) -> dict[str, torch.Tensor]:
    """dW = s * B @ A of every module, in float32."""
    return {
        m: adapter.scaling * (adapter.factors(m)[1].float() @ adapter.factors(m)[0].float())
        for m in adapter.modules
    }


def lora_config(adapter: Adapter) -> LoraConfig:
    return LoraConfig(**{k: v for k, v in adapter.config.items() if k != "base_model_name_or_path"})


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


def save_adapter(adapter: Adapter, source_dir, output) -> None:
    """`adapter` in peft's layout: the source's adapter_config.json with its rank and alpha."""
    saved = json.loads((Path(source_dir) / "adapter_config.json").read_text())
    saved.update(
        r=adapter.config["r"],
        lora_alpha=adapter.config["lora_alpha"],
        use_rslora=adapter.config["use_rslora"],
    )
    with atomic_directory(output) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(saved, indent=2))
        save_file(
            {k: v.contiguous() for k, v in adapter.tensors.items()},
            str(tmp / "adapter_model.safetensors"),
        )

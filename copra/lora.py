"""LoRA on fair-esm's ESM-2 through peft: settings, checks before training, and the wrapped layers.

Module names are peft's on ESM-2: `layers.N.self_attn.{q,k,v,out}_proj` and `layers.N.fc1/fc2`.
"""

from collections import defaultdict

from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from copra.errors import InputError
from copra.methods.lora import LoraSettings

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _linear(model: nn.Module, layer: int, target: str) -> nn.Linear:
    block = model.layers[layer]
    return getattr(block.self_attn, target) if target.endswith("proj") else getattr(block, target)


def check_lora_settings(settings: LoraSettings, model: nn.Module) -> None:
    """Refuse settings that peft would reject late or silently: before any training starts."""
    check_adapter_settings(model, settings, settings.rank)


def check_adapter_settings(model: nn.Module, settings, rank: int, section="lora", key="rank"):
    """Target modules, layers and a rank (`section.key`) that fit the backbone, or a clear
    error naming the keys."""
    unknown = [t for t in settings.target_modules if t not in TARGET_MODULES]
    if unknown or not settings.target_modules:
        raise InputError(
            f"{section}.target_modules {unknown or '[]'} not known; "
            f"valid: {', '.join(TARGET_MODULES)}"
        )
    num_layers = len(model.layers)
    layers = settings.layers_to_transform
    if layers is not None:
        outside = [i for i in layers if not 0 <= i < num_layers]
        if outside or not layers:
            raise InputError(
                f"{section}.layers_to_transform {outside or '[]'} outside 0..{num_layers - 1} "
                f"of this {num_layers}-layer backbone"
            )
    for target in settings.target_modules:
        linear = _linear(model, 0, target)
        largest = min(linear.in_features, linear.out_features)
        if not 1 <= rank <= largest:
            raise InputError(
                f"{section}.{key} {rank} does not fit {target} ({linear.in_features} -> "
                f"{linear.out_features}); use a rank from 1 to {largest}"
            )


def add_lora(model: nn.Module, settings: LoraSettings, backbone_id: str) -> PeftModel:
    """Wrap `model` with LoRA adapters; only the adapters are trainable afterwards.

    `backbone_id` names the local backbone and weights in the adapter's metadata (never a hub id).
    """
    check_lora_settings(settings, model)
    lora_config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        layers_to_transform=settings.layers_to_transform,
        layers_pattern="layers" if settings.layers_to_transform is not None else None,
    )
    # peft records the model's `name_or_path` as the adapter's base model: a local id, no hub name.
    model.name_or_path = backbone_id
    return get_peft_model(model, lora_config)


def lora_layers_by_block(model: nn.Module) -> dict[int, list[LoraLayer]]:
    """The LoRA-wrapped modules of each transformer block, by block index."""
    blocks = defaultdict(list)
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            parts = name.split(".")
            blocks[int(parts[parts.index("layers") + 1])].append(module)
    return dict(sorted(blocks.items()))


def wrapped_module_names(model: nn.Module) -> list[str]:
    """Names of the modules LoRA actually wrapped (recorded in the manifest)."""
    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]

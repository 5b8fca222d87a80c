"""LoRA through peft on ESM-2: what gets wrapped and trained, and settings refused up front."""

import pytest

from copra.backbone import load_backbone
from copra.errors import InputError
from copra.lora import add_lora, check_lora_settings, wrapped_module_names
from copra.methods.lora import LoraSettings


@pytest.fixture()
def backbone():
    return load_backbone("esm2_t6_8M_UR50D", "random")


def test_default_wraps_key_and_value_of_every_block(backbone):
    model = add_lora(backbone.model, LoraSettings(), "esm2_t6_8M_UR50D@random-seed0")
    names = wrapped_module_names(model)
    expected = {f"layers.{i}.self_attn.{m}" for i in range(6) for m in ("k_proj", "v_proj")}
    assert {n.removeprefix("base_model.model.") for n in names} == expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # rank 8 on 320 -> 320: A 8x320 + B 320x8 per module, 12 modules
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 12 * 2 * 8 * 320
    assert model.peft_config["default"].base_model_name_or_path == "esm2_t6_8M_UR50D@random-seed0"


def test_layers_and_modules_from_settings(backbone):
    settings = LoraSettings(target_modules=["q_proj", "fc2"], layers_to_transform=[4, 5], rank=2)
    model = add_lora(backbone.model, settings, "x")
    names = {n.removeprefix("base_model.model.") for n in wrapped_module_names(model)}
    assert names == {
        "layers.4.self_attn.q_proj",
        "layers.5.self_attn.q_proj",
        "layers.4.fc2",
        "layers.5.fc2",
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (LoraSettings(rank=321), "lora.rank 321 does not fit k_proj .*use a rank from 1 to 320"),
        (
            LoraSettings(target_modules=["k_proj", "kv"]),
            r"\['kv'\] not known; valid: q_proj, k_proj",
        ),
        (LoraSettings(layers_to_transform=[2, 6]), r"\[6\] outside 0..5 of this 6-layer backbone"),
        (LoraSettings(layers_to_transform=[-1]), r"\[-1\] outside 0..5"),
    ],
)
def test_bad_settings_are_refused_before_training(backbone, settings, message):
    with pytest.raises(InputError, match=message):
        check_lora_settings(settings, backbone.model)

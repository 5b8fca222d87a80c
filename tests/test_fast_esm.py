"""The fast inference path (copra/fast_esm.py) equals fair-esm's own forward pass."""

import random

import pytest
import torch

from copra.backbone import load_backbone
from copra.fast_esm import esm2_representation, fast_path_supported, representation, sdpa_attention
from copra.sequences import STANDARD

NAME = "esm2_t6_8M_UR50D"
SEED = 0


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(NAME, "random", seed=SEED)


def padded_tokens(backbone, lengths, seed):
    """A padded batch of random sequences of `lengths`, one with a <mask> token in it."""
    rng = random.Random(seed)
    records = [("", "".join(rng.choices(STANDARD, k=n))) for n in lengths]
    records[0] = ("", records[0][1][:3] + "<mask>" + records[0][1][4:])
    return backbone.alphabet.get_batch_converter()(records)[2]


@pytest.mark.parametrize("lengths", [[5, 37, 90, 64], [40, 40]])
def test_sdpa_attention_equals_fair_esm_attention(backbone, lengths):
    torch.manual_seed(0)
    tokens = padded_tokens(backbone, lengths, seed=3)
    padding = tokens.eq(backbone.alphabet.padding_idx)
    x = torch.randn(tokens.shape[1], tokens.shape[0], 320)  # fair-esm's (T, B, E)
    for layer in backbone.model.layers[:2]:
        attention = layer.self_attn
        mask = padding if padding.any() else None
        with torch.no_grad():
            expected, _ = attention(query=x, key=x, value=x, key_padding_mask=mask)
            got = sdpa_attention(attention, x.transpose(0, 1), mask).transpose(0, 1)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < 1e-5  # padded query rows included


@pytest.mark.parametrize("layer", [0, 1, 3, 6])
def test_fast_forward_equals_fair_esm_forward(backbone, layer):
    tokens = padded_tokens(backbone, [3, 50, 120, 77, 9], seed=4)
    assert fast_path_supported(backbone.model)
    with torch.inference_mode():
        expected = backbone.model(tokens, repr_layers=[layer])["representations"][layer]
        got = esm2_representation(backbone.model, tokens, layer)
    assert (got - expected).abs().max() < 1e-5


def test_fast_forward_under_bf16_autocast_stays_near_fair_esm(backbone):
    """The GPU's precision (bf16 autocast), tried on the CPU: the fast path runs and agrees."""
    tokens = padded_tokens(backbone, [30, 80], seed=6)
    with torch.inference_mode():
        exact = backbone.model(tokens, repr_layers=[6])["representations"][6]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fair_esm = backbone.model(tokens, repr_layers=[6])["representations"][6]
            fast = esm2_representation(backbone.model, tokens, 6)
    fair_esm_error = (fair_esm.float() - exact).abs().max()
    assert (fast.float() - exact).abs().max() < 2 * fair_esm_error + 1e-3


def test_fast_path_with_lora_wrapped_layers_and_fallbacks(backbone):
    from copra.lora import LoraSettings, add_lora

    model = load_backbone(NAME, "random", seed=SEED).model
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    peft_model = add_lora(model, LoraSettings(target_modules=targets), "test")
    torch.manual_seed(1)
    with torch.no_grad():  # adapters start as a no-op (B = 0): make them count
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    peft_model.eval()
    tokens = padded_tokens(backbone, [20, 61], seed=5)
    with torch.inference_mode():
        expected = peft_model(tokens, repr_layers=[6])["representations"][6]
        base = peft_model.get_base_model()
        assert fast_path_supported(base) and not fast_path_supported(peft_model)
        got = esm2_representation(base, tokens, 6)
        assert (got - expected).abs().max() < 1e-5
        assert torch.equal(representation(peft_model, tokens, 6), expected)  # its forward
    plain = load_backbone(NAME, "random", seed=SEED).model
    with torch.inference_mode():
        assert (plain(tokens, repr_layers=[6])["representations"][6] - expected).abs().max() > 1e-3
    plain.train()
    assert not fast_path_supported(plain)  # dropout and training go through fair-esm

"""The fast inference path (copra/fast_esm.py) equals fair-esm's own forward pass."""

import random

import pytest
import torch

from copra.backbone import load_backbone
from copra.fast_esm import (
    esm2_representation,
    fast_path_supported,
    representation,
    sdpa_attention,
    use_fused_attention,
)
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
    from copra.lora import add_lora
    from copra.methods.lora import LoraSettings

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


@pytest.mark.parametrize("padded", [True, False])
def test_fused_blocks_train_as_fair_esm_does(padded):
    """Loss and gradients of a LoRA-wrapped ESM-2 in training mode, fused against fair-esm.

    LoRA dropout is off: the fused block calls v_proj first, so dropout draws a different mask
    than fair-esm's order would (each run is still reproducible)."""
    from copra.lora import add_lora
    from copra.methods.lora import LoraSettings

    settings = LoraSettings(
        target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1"], dropout=0.0
    )
    lengths = [20, 61, 33] if padded else [40, 40]
    results = []
    for fused in (False, True):
        torch.manual_seed(1)  # the same adapters (A is drawn at random) in both models
        model = add_lora(load_backbone(NAME, "random", seed=SEED).model, settings, "test")
        with torch.no_grad():  # adapters start as a no-op (B = 0): make them count
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=0.05)
        if fused:
            assert use_fused_attention(model) == 6
            assert use_fused_attention(model) == 6  # again: nothing changes
        model.train()
        torch.manual_seed(2)
        tokens = padded_tokens(load_backbone(NAME, "random", seed=SEED), lengths, seed=7)
        reps = model(tokens, repr_layers=[6])["representations"][6]
        loss = (reps * torch.randn(reps.shape, generator=torch.Generator().manual_seed(5))).sum()
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (loss, grads), (fused_loss, fused_grads) = results
    assert (loss - fused_loss).abs() < 1e-3 and grads.keys() == fused_grads.keys()
    for name, grad in grads.items():
        assert (grad - fused_grads[name]).norm() <= 1e-4 * grad.norm(), name


def test_fused_blocks_give_attention_weights_when_asked(backbone):
    model = load_backbone(NAME, "random", seed=SEED).model
    use_fused_attention(model)
    tokens = padded_tokens(backbone, [12, 30], seed=8)
    with torch.no_grad():
        out = model(tokens, repr_layers=[6], need_head_weights=True)
        expected = backbone.model(tokens, repr_layers=[6], need_head_weights=True)
    assert torch.allclose(out["attentions"], expected["attentions"])
    assert (out["representations"][6] - expected["representations"][6]).abs().max() < 1e-5

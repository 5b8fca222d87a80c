"""Test helper: write checkpoints in fair-esm's own on-disk format (the layout of its released
ESM-2 .pt files: cfg Namespace + prefixed state dict) and in Hugging Face's (`save_pretrained`),
from seeded random weights."""

import argparse
from pathlib import Path

import esm
import torch

from copra.backbone import ESM2_ARCHITECTURES

REGRESSION_PREFIX = "contact_head.regression."


def write_fair_esm_checkpoint(
    path, name="esm2_t6_8M_UR50D", seed=0, num_layers=None, with_regression=True
):
    """Write ESM-2 `name` (optionally with `num_layers`) as fair-esm does; return its state dict."""
    path = Path(path)
    layers, dim, heads = ESM2_ARCHITECTURES[name]
    layers = num_layers or layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = esm.ESM2(layers, dim, heads, esm.data.Alphabet.from_architecture("ESM-1b"))
    state = model.state_dict()
    cfg = argparse.Namespace(
        encoder_layers=layers,
        encoder_embed_dim=dim,
        encoder_attention_heads=heads,
        token_dropout=True,
    )
    encoder = {
        f"encoder.sentence_encoder.{key}": value
        for key, value in state.items()
        if not key.startswith(REGRESSION_PREFIX)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"cfg": {"model": cfg}, "model": encoder}, path)
    if with_regression:
        regression = {k: v for k, v in state.items() if k.startswith(REGRESSION_PREFIX)}
        torch.save({"model": regression}, path.with_name(f"{path.stem}-contact-regression.pt"))
    return state


def write_hf_checkpoint(folder, name: str = "esm2_t6_8M_UR50D", seed: int = 0, state=None):
    """EsmForMaskedLM with seeded random weights (or fair-esm's `state`, mapped backwards)
    saved by transformers' `save_pretrained`."""
    from transformers import EsmForMaskedLM

    from copra.hf_checkpoint import fair_esm_name
    from copra.hf_export import esm2_hf_config

    torch.manual_seed(seed)
    model = EsmForMaskedLM(esm2_hf_config(*ESM2_ARCHITECTURES[name]))
    if state is not None:
        backwards = {fair_esm_name(k): k for k in model.state_dict() if fair_esm_name(k)}
        model.load_state_dict(
            {backwards[k]: v for k, v in state.items() if k in backwards}, strict=False
        )
    model.save_pretrained(folder)
    return folder

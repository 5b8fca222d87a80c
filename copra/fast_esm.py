"""A faster forward pass of fair-esm's ESM-2 for inference, equal to `ESM2.forward` within float
rounding: attention through `scaled_dot_product_attention` (with fair-esm's rotary embeddings and
padding mask), the built-in GELU, no LM head and no layers above the one asked for.

The model itself is never modified; LoRA-wrapped projections work, since they are called as
modules. Anything else (training mode, a PeftModel wrapper, other attention) takes the model's
own forward. `benchmarks/embed_vs_fair_esm.py` measures what each part gives.
"""

from functools import partial

import esm
import torch
import torch.nn.functional as F
from esm.modules import TransformerLayer
from esm.multihead_attention import MultiheadAttention


def sdpa_attention(attention: MultiheadAttention, x: torch.Tensor, padding_mask=None):
    """fair-esm's rotary self-attention on x (B, T, E) through `scaled_dot_product_attention`.

    `padding_mask` (B, T) is True at padding: those keys are left out, as fair-esm does.
    """
    batch, length, dim = x.shape

    def heads(projection: torch.nn.Module) -> torch.Tensor:  # (B, H, T, head_dim)
        return projection(x).view(batch, length, attention.num_heads, -1).transpose(1, 2)

    v = heads(attention.v_proj)
    q, k = attention.rot_emb(heads(attention.q_proj), heads(attention.k_proj))
    q, k = q.to(v.dtype), k.to(v.dtype)  # rotary tables are float32; bf16 under autocast
    keep = None if padding_mask is None else ~padding_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return attention.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


def fast_layer(layer: TransformerLayer, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
    """fair-esm's pre-norm TransformerLayer on x (B, T, E), with SDPA attention and fused GELU."""
    x = x + sdpa_attention(layer.self_attn, layer.self_attn_layer_norm(x), padding_mask)
    return x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))


def _plain_layer(layer) -> bool:
    """An ESM-2 block as fair-esm builds it: rotary attention, no extra key/value biases."""
    attention = getattr(layer, "self_attn", None)
    return (
        isinstance(layer, TransformerLayer)
        and isinstance(attention, MultiheadAttention)
        and attention.rot_emb is not None
        and attention.bias_k is None
        and not attention.add_zero_attn
    )


def fast_path_supported(model) -> bool:
    """True for a fair-esm ESM2 in eval mode whose blocks `fast_layer` reproduces.

    LoRA-wrapped projections are fine (they are called as modules); a PeftModel wrapper or any
    other model goes through its own forward instead.
    """
    return (
        isinstance(model, esm.ESM2) and not model.training and all(map(_plain_layer, model.layers))
    )


def esm2_representation(
    model: "esm.ESM2", tokens: torch.Tensor, layer: int, embedded: torch.Tensor | None = None
) -> torch.Tensor:
    """`model(tokens, repr_layers=[layer])["representations"][layer]` for inference, faster.

    `embedded` (B, T, E), when given, replaces `embed_tokens(tokens)` (before fair-esm's scale and
    token-dropout rescaling): a soft embedding, e.g. of a one-hot's straight-through estimate."""
    padding = tokens.eq(model.padding_idx)
    x = model.embed_scale * (model.embed_tokens(tokens) if embedded is None else embedded)
    if model.token_dropout:  # fair-esm's rescaling for the 15% x 80% masking of training
        masked = tokens == model.mask_idx
        x = x.masked_fill(masked.unsqueeze(-1), 0.0)
        observed = masked.sum(-1).to(x.dtype) / (~padding).sum(-1)
        x = x * (1 - 0.15 * 0.8) / (1 - observed)[:, None, None]
    x = x * (1 - padding.unsqueeze(-1).type_as(x))
    mask = padding if padding.any() else None
    for block in model.layers[:layer]:
        x = fast_layer(block, x, mask)
    return model.emb_layer_norm_after(x) if layer == len(model.layers) else x


def representation(model, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Per-token representations (B, T, E) of `layer`: the fast path where it applies."""
    if fast_path_supported(model):
        return esm2_representation(model, tokens, layer)
    return model(tokens, repr_layers=[layer])["representations"][layer]


def fused_block_forward(
    block: TransformerLayer,
    x: torch.Tensor,
    self_attn_mask=None,
    self_attn_padding_mask=None,
    need_head_weights=False,
):
    """fair-esm's `TransformerLayer.forward` (x as (T, B, E)) through `fast_layer`, for training
    and evaluation alike; asked for attention weights or an attention mask, fair-esm's own."""
    if need_head_weights or self_attn_mask is not None:
        return type(block).forward(
            block, x, self_attn_mask, self_attn_padding_mask, need_head_weights
        )
    out = fast_layer(block, x.transpose(0, 1), self_attn_padding_mask).transpose(0, 1)
    return out, None


def use_fused_attention(network: torch.nn.Module) -> int:
    """Every plain ESM-2 block of `network` (inside peft's wrapper too) runs `fused_block_forward`.

    Names, parameters and state dicts stay as they are; returns the number of blocks. Call it
    before `checkpoint_blocks`, which then recomputes the fused forward in backward."""
    blocks = [module for module in network.modules() if _plain_layer(module)]
    for block in blocks:
        if "forward" not in vars(block):  # a forward set before (checkpointing) is kept
            block.forward = partial(fused_block_forward, block)
    return len(blocks)

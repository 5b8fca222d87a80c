"""A backbone (plain, LoRA-wrapped or fully trainable ESM-2) with mean pooling and a task head.

Pairs go through the one shared backbone separately and are combined symmetrically.
"""

from functools import partial

import torch
from esm.modules import TransformerLayer
from torch import nn
from torch.nn.functional import pad
from torch.utils.checkpoint import checkpoint

from copra.fast_esm import use_fused_attention
from copra.tables import PAIR_KIND
from copra.task_head import TaskHead, combine_pair, combined_dim


def mean_pool(representations: torch.Tensor, tokens: torch.Tensor, alphabet) -> torch.Tensor:
    """Mean over residue positions; BOS, EOS and padding excluded."""
    special = (tokens == alphabet.padding_idx) | (tokens == alphabet.cls_idx)
    special |= tokens == alphabet.eos_idx
    mask = (~special).unsqueeze(-1).to(representations.dtype)
    return (representations * mask).sum(1) / mask.sum(1).clamp_min(1)


class ProteinModel(nn.Module):
    """Backbone -> last-layer mean pooling -> (pair combination) -> task head."""

    def __init__(
        self,
        backbone: nn.Module,
        alphabet,
        num_layers: int,
        embed_dim: int,
        out_dim: int,
        hidden: int,
        dropout: float,
        pair_combination: str | None = None,
    ):
        super().__init__()
        use_fused_attention(backbone)
        self.backbone = backbone
        self.alphabet = alphabet
        self.num_layers = num_layers
        self.pair_combination = pair_combination
        in_dim = combined_dim(embed_dim, pair_combination) if pair_combination else embed_dim
        self.head = TaskHead(in_dim, out_dim, hidden, dropout)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.backbone(tokens, repr_layers=[self.num_layers])
        return mean_pool(out["representations"][self.num_layers], tokens, self.alphabet)

    def forward(self, tokens: torch.Tensor, tokens_b: torch.Tensor | None = None) -> torch.Tensor:
        if tokens_b is None:
            return self.head(self.pooled(tokens).float())
        # Both proteins of every pair in one pass of the shared backbone.
        width = max(tokens.shape[1], tokens_b.shape[1])
        padded = [
            pad(t, (0, width - t.shape[1]), value=self.alphabet.padding_idx)
            for t in (tokens, tokens_b)
        ]
        pooled_a, pooled_b = self.pooled(torch.cat(padded)).chunk(2)
        return self.head(combine_pair(pooled_a, pooled_b, self.pair_combination).float())


def task_model(network: nn.Module, backbone, out_dim: int, kind: str, head) -> ProteinModel:
    """`network` (the backbone as a method adapted it) under a fresh head of architecture `head`
    (a HeadArchitecture): the pair combination applies to pair tasks only."""
    pair = head.pair_combination if kind == PAIR_KIND else None
    sizes = (backbone.num_layers, backbone.embed_dim, out_dim)
    return ProteinModel(network, backbone.alphabet, *sizes, head.hidden, head.dropout, pair)


def needs_backward(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether backward passes through `block`: a gradient flows in, or it has a trainable
    parameter switched on (peft freezes the adapters of a block that CopRA dropped)."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for p in block.parameters())


def _checkpointed_forward(block: nn.Module, forward, x: torch.Tensor, *args, **kwargs):
    if not needs_backward(block, x):  # evaluation, or a frozen block below every trainable one
        return forward(x, *args, **kwargs)
    # Non-reentrant: parameter gradients flow even when `x` needs none (the lowest LoRA block),
    # and the RNG state (LoRA dropout) is replayed, so the recomputation is the same forward.
    return checkpoint(forward, x, *args, use_reentrant=False, **kwargs)


def checkpoint_blocks(network: nn.Module) -> int:
    """Activation checkpointing of every ESM-2 transformer block of `network` (plain, or inside
    peft's wrapper): in training only each block's input is kept, and the block's forward runs
    again in backward. Wraps the block's forward as it is (fair-esm's, or one set on the block
    before); module names and state dicts stay as they are; returns the block count."""
    blocks = [module for module in network.modules() if isinstance(module, TransformerLayer)]
    for block in blocks:
        if getattr(block.forward, "func", None) is not _checkpointed_forward:  # not twice
            block.forward = partial(_checkpointed_forward, block, block.forward)
    return len(blocks)

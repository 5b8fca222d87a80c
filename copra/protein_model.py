"""A backbone (plain, LoRA-wrapped or fully trainable ESM-2) with mean pooling and a task head.

Pairs go through the one shared backbone separately and are combined symmetrically.
"""

import torch
from torch import nn
from torch.nn.functional import pad

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
        padded = [pad(t, (0, width - t.shape[1]), value=self.alphabet.padding_idx)
                  for t in (tokens, tokens_b)]  # fmt: skip
        pooled_a, pooled_b = self.pooled(torch.cat(padded)).chunk(2)
        return self.head(combine_pair(pooled_a, pooled_b, self.pair_combination).float())

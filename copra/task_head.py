"""Task heads over pooled protein vectors, and the symmetric combination of a pair's two vectors.

The PEFT-for-proteins head: dropout, Linear(d, hidden), tanh, dropout, Linear(hidden, out).
"""

import torch
from torch import nn

PAIR_COMBINATIONS = ("mean", "product_difference")


def combine_pair(a: torch.Tensor, b: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """A vector for the pair that does not depend on the order of its two proteins."""
    if how == "mean":
        return (a + b) / 2
    if how == "product_difference":
        return torch.cat([a * b, (a - b).abs()], dim=-1)
    raise ValueError(f"pair combination {how!r} is not one of {PAIR_COMBINATIONS}")


def combined_dim(embed_dim: int, how: str) -> int:
    return 2 * embed_dim if how == "product_difference" else embed_dim


class TaskHead(nn.Module):
    """Dropout -> Linear -> tanh -> dropout -> Linear."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

"""The Co-Former-style joint transformer of CoPRA over a complex's protein and RNA tokens.

Tokens: learned pooling tokens, then the patch's protein residues and nucleotides. Every block's
attention is biased per head by a pair representation of the binned distance between the two
tokens and their types; the pooling tokens' mean goes through an MLP to dG.
"""

import torch
import torch.nn.functional as F
from torch import nn

from copra.settings import CoFormerSettings

POOL, PROTEIN, RNA = 0, 1, 2


class PairRepresentation(nn.Module):
    """Pair features (batch, n, n, pair_dim) from binned distances and the two tokens' types."""

    def __init__(self, settings: CoFormerSettings):
        super().__init__()
        self.bins, self.max_distance = settings.distance_bins, settings.max_distance
        # One extra bin for pairs with a pooling token (they have no position).
        self.distance = nn.Embedding(settings.distance_bins + 1, settings.pair_dim)
        self.types = nn.Embedding(9, settings.pair_dim)
        self.norm = nn.LayerNorm(settings.pair_dim)

    def forward(self, coords: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(coords, coords)
        bins = (distance / self.max_distance * self.bins).long().clamp(max=self.bins - 1)
        pooled = (types == POOL).unsqueeze(1) | (types == POOL).unsqueeze(2)
        bins = bins.masked_fill(pooled, self.bins)
        pair_types = types.unsqueeze(2) * 3 + types.unsqueeze(1)
        return self.norm(self.distance(bins) + self.types(pair_types))


class BiasedBlock(nn.Module):
    """Pre-norm self-attention with a per-head pair bias, then a feed-forward layer."""

    def __init__(self, settings: CoFormerSettings):
        super().__init__()
        dim, self.heads = settings.embed_dim, settings.heads
        if dim % self.heads:
            raise ValueError(
                f"complex.embed_dim {dim} is not divisible by complex.heads {self.heads}"
            )
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias = nn.Linear(settings.pair_dim, self.heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(settings.dropout)

    def forward(self, x, pair, key_mask):
        batch, n, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.bias(pair).permute(0, 3, 1, 2).masked_fill(~key_mask[:, None, None, :], -1e9)
        # Dropout acts on the residual branches only: on CPU, dropping attention weights
        # (batch x heads x n x n draws per block) cost about a sixth of a training step.
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, n, dim)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class CoFormer(nn.Module):
    """Protein and RNA token features -> joint transformer -> pooled dG (one number per complex)."""

    def __init__(self, protein_dim: int, rna_dim: int, settings: CoFormerSettings):
        super().__init__()
        dim = settings.embed_dim
        self.protein_in = nn.Sequential(nn.LayerNorm(protein_dim), nn.Linear(protein_dim, dim))
        self.rna_in = nn.Sequential(nn.LayerNorm(rna_dim), nn.Linear(rna_dim, dim))
        self.type_embedding = nn.Embedding(3, dim)
        self.pool = nn.Parameter(torch.randn(settings.pool_tokens, dim) * 0.02)
        self.pair = PairRepresentation(settings)
        self.blocks = nn.ModuleList(BiasedBlock(settings) for _ in range(settings.blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(settings.dropout), nn.Linear(dim, 1)
        )

    def forward(self, protein: list[torch.Tensor], rna: list[torch.Tensor], coords: list):
        """Per complex: protein token features, RNA token features, token coordinates (Å)."""
        pool = self.pool.shape[0]
        lengths = [pool + len(p) + len(r) for p, r in zip(protein, rna, strict=True)]
        batch, width = len(lengths), max(lengths)
        device = self.pool.device
        x = torch.zeros(batch, width, self.pool.shape[1], device=device)
        types = torch.full((batch, width), POOL, dtype=torch.long, device=device)
        xyz = torch.zeros(batch, width, 3, device=device)
        mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
        for i, (p, r, c) in enumerate(zip(protein, rna, coords, strict=True)):
            tokens = torch.cat([self.pool, self.protein_in(p.float()), self.rna_in(r.float())])
            x[i, : lengths[i]] = tokens
            types[i, pool : pool + len(p)] = PROTEIN
            types[i, pool + len(p) : lengths[i]] = RNA
            xyz[i, pool : lengths[i]] = c
            mask[i, : lengths[i]] = True
        x = x + self.type_embedding(types)
        pair = self.pair(xyz, types)
        for block in self.blocks:
            x = block(x, pair, mask)
        return self.head(self.norm(x[:, :pool]).mean(1)).squeeze(-1)

"""Nucleotide features for complex tasks, behind one interface so an RNA language model fits in.

An encoder maps RNA chain sequences to per-nucleotide feature matrices. `learned` is a trainable
embedding of the nucleotide letter; an RNA language model (RiNALMo, say) would be another class
with the same `out_dim` and `forward`, registered in `RNA_ENCODERS`.
"""

import torch
from torch import nn

from copra.errors import InputError

NUCLEOTIDES = "ACGUN"  # N: anything else (modified bases are mapped to their parent at ingest)


class RNAEncoder(nn.Module):
    """Interface: `forward(sequences)` gives one (length, out_dim) matrix per RNA sequence."""

    out_dim: int

    def forward(self, sequences: list[str]) -> list[torch.Tensor]:
        raise NotImplementedError


class LearnedNucleotideEmbedding(RNAEncoder):
    """A trainable vector per nucleotide letter (T, from DNA-like residues, counts as U)."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.embedding = nn.Embedding(len(NUCLEOTIDES), out_dim)

    @staticmethod
    def indices(sequence: str) -> torch.Tensor:
        letters = sequence.upper().replace("T", "U")
        return torch.tensor([NUCLEOTIDES.find(c) if c in "ACGU" else 4 for c in letters])

    def forward(self, sequences: list[str]) -> list[torch.Tensor]:
        device = self.embedding.weight.device
        return [self.embedding(self.indices(s).to(device)) for s in sequences]


RNA_ENCODERS = {"learned": LearnedNucleotideEmbedding}


def rna_encoder(name: str, out_dim: int) -> RNAEncoder:
    """The registered encoder `name`."""
    if name not in RNA_ENCODERS:
        raise InputError(f"RNA encoder {name!r} is not one of {', '.join(RNA_ENCODERS)}")
    return RNA_ENCODERS[name](out_dim)

"""A task's split as model input: rows of one or two sequences with encoded targets, tokenized
batches (random crops in training, fair-esm truncation otherwise), and a model's raw outputs."""

import contextlib
from dataclasses import dataclass

import pandas as pd
import torch

from copra.device import autocast
from copra.tables import hash_columns, read_sequences, read_task_table
from copra.targets import Targets


@dataclass
class TaskData:
    """One split of a task: sequences per row (one or two) and encoded targets."""

    sequences: list[tuple[str, ...]]
    targets: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        return [max(len(s) for s in row) for row in self.sequences]


def task_data(table: pd.DataFrame, sequences: dict[str, str], kind: str, targets: Targets):
    rows = [
        tuple(sequences[h] for h in hashes)
        for hashes in table[hash_columns(kind)].itertuples(index=False)
    ]
    return TaskData(rows, targets.encode(table["label"]))


def read_splits(table_path, sequences_path, kind: str, targets: Targets, splits) -> dict:
    """{split: TaskData} of an ingested task's table and sequence table."""
    table = read_task_table(table_path, kind)
    sequences = read_sequences(sequences_path)
    return {s: task_data(table[table.split == s], sequences, kind, targets) for s in splits}


def crop(sequence: str, max_residues: int, generator=None) -> str:
    """A random window in training (generator given); fair-esm's truncation otherwise."""
    if len(sequence) <= max_residues:
        return sequence
    start = 0
    if generator is not None:
        start = int(torch.randint(0, len(sequence) - max_residues + 1, (1,), generator=generator))
    return sequence[start : start + max_residues]


class Batcher:
    """Tokenizes rows of a split for the model's device."""

    def __init__(self, alphabet, device, max_residues: int):
        self.converter = alphabet.get_batch_converter()
        self.device = torch.device(device)
        self.max_residues = max_residues

    def tokens(self, data: TaskData, rows: list[int], generator=None) -> list[torch.Tensor]:
        sides = len(data.sequences[0])
        out = []
        for side in range(sides):
            seqs = [crop(data.sequences[i][side], self.max_residues, generator) for i in rows]
            _, _, tokens = self.converter([("", s) for s in seqs])
            out.append(tokens.to(self.device))
        return out


@torch.no_grad()
def predict(model, data: TaskData, batcher: Batcher, batch_size: int, float32: bool = False):
    """Raw outputs of `model` in eval mode, in row order (length-sorted batches, truncation).

    On a GPU the forward runs under bf16 autocast unless `float32`.
    """
    model.eval()
    precision = contextlib.nullcontext if float32 else lambda: autocast(batcher.device)
    order = sorted(range(len(data.sequences)), key=lambda i: data.lengths[i])
    outputs = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        with precision():
            batch = model(*batcher.tokens(data, rows)).float().cpu()
        if outputs is None:
            outputs = torch.empty(len(order), batch.shape[1])
        outputs[rows] = batch
    return outputs

"""A trained model applied to sequences: one pooled vector per unique sequence, then the head.

Used for a run's own predictions.tsv and by `copra predict` and `copra screen` alike, so both give
the same numbers. On the CPU each sequence goes through the backbone alone (no padding: as fast
as padded batches there, and a protein's vector does not depend on what else is in the file); on
a GPU in length-sorted batches of a token budget. The head runs in float64 and its scores are
rounded to float32, so they do not depend on which matrix-multiply kernel a batch size picks.
"""

import copy
import logging

import numpy as np
import torch
from tqdm import tqdm

from copra.device import autocast
from copra.embed import Chunk, token_batches
from copra.targets import Targets
from copra.task_data import crop
from copra.task_head import combine_pair

log = logging.getLogger(__name__)


class HeadScorer:
    """A task head (and the pair combination) as float32 scores of pooled vectors."""

    def __init__(self, head: torch.nn.Module, targets: Targets, pair_combination: str | None):
        self.head = copy.deepcopy(head).double().eval().cpu()
        self.targets, self.pair_combination = targets, pair_combination

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        """Scores (n, score columns) of rows `a` (sequences) or of pairs (`a[i]`, `b[i]`)."""
        x = torch.as_tensor(np.asarray(a), dtype=torch.float64)
        if b is not None:
            y = torch.as_tensor(np.asarray(b), dtype=torch.float64)
            x = combine_pair(x, y, self.pair_combination)
        return self.targets.scores(self.head(x))

    def rows(self, vectors: dict, keys_a, keys_b=None) -> np.ndarray:
        """Scores of table rows named by sequence hashes (`keys_b` for pairs)."""
        a = np.stack([vectors[k] for k in keys_a]) if len(keys_a) else np.zeros((0, 0))
        if keys_b is None:
            return self(a) if len(keys_a) else self._empty()
        b = np.stack([vectors[k] for k in keys_b]) if len(keys_b) else None
        return self(a, b) if len(keys_a) else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, len(self.targets.score_columns())), dtype=np.float32)


class NetworkEncoder:
    """Pooled last-layer vectors of a task model's (adapted) backbone, fair-esm truncation at
    `max_residues` as in evaluation."""

    def __init__(self, model, max_residues: int, device: torch.device, batch_tokens: int):
        self.model, self.max_residues, self.device = model, max_residues, torch.device(device)
        # One sequence per forward pass on the CPU (a budget no two sequences fit in).
        self.batch_tokens = batch_tokens if self.device.type == "cuda" else 1
        self.converter = model.alphabet.get_batch_converter()

    @torch.no_grad()
    def __call__(self, sequences: dict[str, str]) -> dict[str, np.ndarray]:
        """{key: float32 vector} of {key: sequence}."""
        keys = list(sequences)
        chunks = [
            Chunk(i, 0, crop(sequences[key], self.max_residues)) for i, key in enumerate(keys)
        ]
        self.model.eval().to(self.device)
        out = {}
        with tqdm(total=len(chunks), desc="backbone", unit="seq", mininterval=5) as bar:
            for batch in token_batches(chunks, self.batch_tokens):
                _, _, tokens = self.converter([("", chunk.residues) for chunk in batch])
                with autocast(self.device):
                    pooled = self.model.pooled(tokens.to(self.device)).float().cpu().numpy()
                for chunk, vector in zip(batch, pooled, strict=True):
                    out[keys[chunk.sequence]] = vector
                bar.update(len(batch))
        return out


def score_table(encoder, scorer: HeadScorer, table, sequences: dict[str, str], pair: bool):
    """Scores of an ingested table's rows (hash columns), each unique sequence encoded once."""
    columns = ["hash_a", "hash_b"] if pair else ["seq_hash"]
    needed = {key: sequences[key] for column in columns for key in table[column]}
    vectors = encoder(needed)
    return scorer.rows(vectors, *(table[column].tolist() for column in columns))

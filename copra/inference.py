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
from copra.tables import hash_columns
from copra.targets import Targets
from copra.task_data import crop
from copra.task_head import combine_pair

log = logging.getLogger(__name__)


class HeadScorer:
    """A task head (and the pair combination) as float32 scores of pooled vectors.

    The head is standardization (for `head` runs), Linear, tanh, Linear. Its first Linear runs
    once per protein (`prepare`): for the `mean` combination a pair's first layer is the mean of
    its two proteins' (the layer is affine), so a pair costs an addition, not a matrix product."""

    def __init__(self, head: torch.nn.Module, targets: Targets, pair_combination: str | None):
        head = copy.deepcopy(head).double().eval().cpu()
        self.standardize = getattr(head, "mean", None) is not None
        self.mean, self.std = (head.mean, head.std) if self.standardize else (None, None)
        layers = (head.head if self.standardize else head).layers
        self.first, self.rest = layers[1], layers[2:]
        self.targets, self.pair_combination = targets, pair_combination

    def _standardized(self, vectors) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(vectors), dtype=torch.float64)
        return (x - self.mean) / self.std if self.standardize else x

    @torch.no_grad()
    def prepare(self, vectors) -> torch.Tensor:
        """What a protein brings to its rows: the first layer of its vector (`mean` pairs and
        single sequences), or the vector itself (other pair combinations)."""
        if self.pair_combination in (None, "mean"):
            return self.first(self._standardized(vectors))
        return torch.as_tensor(np.asarray(vectors), dtype=torch.float64)

    @torch.no_grad()
    def scores(self, a: torch.Tensor, b: torch.Tensor | None = None) -> np.ndarray:
        """Scores (n, score columns) of prepared rows `a` (sequences) or pairs (`a[i]`, `b[i]`)."""
        if b is None:
            hidden = a
        elif self.pair_combination == "mean":
            hidden = torch.add(a, b).mul_(0.5)
        else:
            combined = combine_pair(a, b, self.pair_combination)
            hidden = self.first((combined - self.mean) / self.std if self.standardize else combined)
        return self.targets.scores(self.rest(hidden))

    @torch.no_grad()
    def segments(self, prepared: torch.Tensor, segments) -> np.ndarray:
        """Scores of the pairs (i, j), j0 <= j < j1, of each segment (i, j0, j1) of `prepared`
        rows: for `mean` pairs the sums of contiguous rows, no gathering."""
        if self.pair_combination != "mean":
            rows = [torch.full((j1 - j0,), i) for i, j0, j1 in segments]
            columns = [torch.arange(j0, j1) for _, j0, j1 in segments]
            return self.scores(prepared[torch.cat(rows)], prepared[torch.cat(columns)])
        total = sum(j1 - j0 for _, j0, j1 in segments)
        hidden = torch.empty(total, prepared.shape[1], dtype=prepared.dtype)
        at = 0
        for i, j0, j1 in segments:
            torch.add(prepared[i], prepared[j0:j1], out=hidden[at : at + j1 - j0])
            at += j1 - j0
        return self.scores(hidden.mul_(0.5))

    def __call__(self, a, b=None) -> np.ndarray:
        """Scores of pooled vectors `a` (sequences) or of the pairs (`a[i]`, `b[i]`)."""
        return self.scores(self.prepare(a), None if b is None else self.prepare(b))

    def rows(self, vectors: dict, keys_a, keys_b=None) -> np.ndarray:
        """Scores of table rows named by sequence hashes (`keys_b` for pairs)."""
        if not len(keys_a):
            return np.zeros((0, len(self.targets.score_columns())), dtype=np.float32)
        a = np.stack([vectors[k] for k in keys_a])
        return self(a, None if keys_b is None else np.stack([vectors[k] for k in keys_b]))


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


def score_table(encoder, scorer: HeadScorer, table, sequences: dict[str, str], kind: str):
    """Scores of an ingested table's rows (hash columns), each unique sequence encoded once."""
    columns = hash_columns(kind)
    needed = {key: sequences[key] for column in columns for key in table[column]}
    vectors = encoder(needed)
    return scorer.rows(vectors, *(table[column].tolist() for column in columns))

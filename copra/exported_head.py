"""Scoring proteins with a `copra export-hf` folder through transformers and peft alone.

This file is copied verbatim into every export as `copra_head.py` and imports nothing of copra:
torch, safetensors and a transformers ESM model are all it needs. It computes what copra's run
computed: the mean over the residues (not BOS, EOS or padding) of one ESM-2 layer's
representations (truncated to `max_residues`, or averaged over overlapping windows where the
run's embedding used windows), the pair combination for pair tasks, the run's standardization
(head runs), then Linear, tanh, Linear in float64 and the targets' output transform.

    import copra_head  # this file, from the export folder
    from peft import PeftModel
    from transformers import AutoTokenizer, EsmModel
    base = EsmModel.from_pretrained("facebook/esm2_t33_650M_UR50D", add_pooling_layer=False)
    model = PeftModel.from_pretrained(base, EXPORT).eval()
    tokenizer = AutoTokenizer.from_pretrained(EXPORT)
    scores = copra_head.load(EXPORT).predict(model, tokenizer, sequences)
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def load(folder) -> "ExportedHead":
    """The head of an export folder (head.json and head.safetensors)."""
    folder = Path(folder)
    spec = json.loads((folder / "head.json").read_text())
    return ExportedHead(spec, load_file(str(folder / "head.safetensors")))


def combine_pair(a: torch.Tensor, b: torch.Tensor, how: str) -> torch.Tensor:
    """A pair's vector, the same in either order."""
    if how == "mean":
        return (a + b) / 2
    return torch.cat([a * b, (a - b).abs()], dim=-1)


def windows(sequence: str, size: int, stride: int, long_sequences: str) -> list[tuple[int, str]]:
    """(start, residues) of the pieces the run embedded: the first `size` residues, or windows."""
    if len(sequence) <= size or long_sequences == "truncate":
        return [(0, sequence[:size])]
    starts = list(range(0, len(sequence) - size, stride)) + [len(sequence) - size]
    return [(start, sequence[start : start + size]) for start in starts]


class ExportedHead:
    def __init__(self, spec: dict, state: dict):
        self.spec = spec
        self.state = {key: value.double() for key, value in state.items()}

    @property
    def score_columns(self) -> list[str]:
        return self.spec["score_columns"]

    @torch.no_grad()
    def pooled(self, model, tokenizer, sequences: list[str], batch_size: int = 8) -> torch.Tensor:
        """(n, dim) float32: each sequence's mean representation of the run's layer."""
        spec = self.spec
        pieces = [
            (index, start, residues)
            for index, sequence in enumerate(sequences)
            for start, residues in windows(
                sequence, spec["max_residues"], spec["window_stride"], spec["long_sequences"]
            )
        ]
        lengths = [0] * len(sequences)
        for index, start, residues in pieces:
            lengths[index] = max(lengths[index], start + len(residues))
        sums = [torch.zeros(length, spec["embed_dim"]) for length in lengths]
        counts = [torch.zeros(length, 1) for length in lengths]
        device = next(model.parameters()).device
        for first in range(0, len(pieces), batch_size):
            batch = pieces[first : first + batch_size]
            residues = [piece[2] for piece in batch]
            inputs = tokenizer(residues, return_tensors="pt", padding=True).to(device)
            out = model(**inputs, output_hidden_states=True)
            layer = out.hidden_states[spec["layer"]].float().cpu()
            for row, (index, start, residues) in enumerate(batch):
                span = slice(start, start + len(residues))
                sums[index][span] += layer[row, 1 : len(residues) + 1]
                counts[index][span] += 1
        return torch.stack(
            [(total / count).mean(0) for total, count in zip(sums, counts, strict=True)]
        )

    @torch.no_grad()
    def scores(self, vectors: torch.Tensor, partners: torch.Tensor | None = None) -> torch.Tensor:
        """(n, score columns) float64 of pooled vectors (pair tasks: and their partners')."""
        state, targets = self.state, self.spec["targets"]
        x = vectors.double()
        if partners is not None:
            x = combine_pair(x, partners.double(), self.spec["pair_combination"])
        if "mean" in state:
            x = (x - state["mean"]) / state["std"]
        hidden = torch.tanh(x @ state["dense.weight"].T + state["dense.bias"])
        out = hidden @ state["out_proj.weight"].T + state["out_proj.bias"]
        if targets["kind"] == "regression":
            return out * targets["std"] + targets["mean"]
        if targets["kind"] == "multiclass":
            return torch.softmax(out, dim=-1)
        return torch.sigmoid(out)

    def predict(self, model, tokenizer, sequences: list[str], partners: list[str] | None = None):
        """Scores of sequences (pair tasks: of the pairs sequences[i], partners[i])."""
        vectors = self.pooled(model, tokenizer, sequences)
        if partners is None:
            return self.scores(vectors)
        return self.scores(vectors, self.pooled(model, tokenizer, partners))

"""Task targets: how labels become tensors, which loss trains them, and how outputs become scores.

Shared by every method, so predictions files look the same whatever trained the model. Light:
torch is imported by the methods that make tensors (jobs that only compute metrics skip it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

PRIMARY_METRIC = {
    "binary": "aupr",
    "multiclass": "aupr",
    "multilabel": "aupr",
    "regression": "spearman",
}


@dataclass
class Targets:
    """The label space of one task: binary, multiclass, multilabel or regression."""

    kind: str
    classes: list[str] = field(default_factory=list)
    separator: str = ";"
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def from_training(
        cls, task_kind: str, labels: pd.Series, multilabel: bool = False, separator=";"
    ):
        """Fit the label space on the training labels of a task."""
        if task_kind == "sequence_regression":
            values = labels.astype(float)
            std = float(values.std(ddof=0)) or 1.0
            return cls("regression", mean=float(values.mean()), std=std)
        if task_kind == "pair_classification":
            return cls("binary", classes=["0", "1"])
        if multilabel:
            classes = sorted({c for value in labels for c in str(value).split(separator)})
            return cls("multilabel", classes=classes, separator=separator)
        classes = sorted({str(v) for v in labels})
        return cls("binary" if len(classes) == 2 else "multiclass", classes=classes)

    @property
    def out_dim(self) -> int:
        return len(self.classes) if self.kind in ("multiclass", "multilabel") else 1

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.kind]

    def encode(self, labels: pd.Series) -> torch.Tensor:
        """Training targets as a float tensor (class indices as long for multiclass)."""
        import torch

        if self.kind == "regression":
            standardized = (labels.astype(float).to_numpy() - self.mean) / self.std
            return torch.from_numpy(standardized.astype(np.float32))
        return torch.from_numpy(self.label_values(labels))

    def label_values(self, labels: pd.Series) -> np.ndarray:
        """Labels as the metrics compare them with scores: values in label units (regression),
        0/1 (binary), class indices (multiclass), a 0/1 matrix (multilabel)."""
        if self.kind == "regression":
            return labels.astype(float).to_numpy()
        if self.kind == "binary":
            return (labels.astype(str) == self.classes[1]).to_numpy().astype(np.float32)
        if self.kind == "multiclass":
            index = {c: i for i, c in enumerate(self.classes)}
            return np.array([index[str(v)] for v in labels], dtype=np.int64)
        matrix = np.zeros((len(labels), len(self.classes)), dtype=np.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        for row, value in enumerate(labels):
            for c in str(value).split(self.separator):
                matrix[row, index[c]] = 1.0
        return matrix

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if self.kind == "regression":
            return F.mse_loss(outputs.squeeze(-1), targets)
        if self.kind == "multiclass":
            return F.cross_entropy(outputs, targets)
        if self.kind == "binary":
            return F.binary_cross_entropy_with_logits(outputs.squeeze(-1), targets)
        return F.binary_cross_entropy_with_logits(outputs, targets)

    def score_columns(self) -> list[str]:
        if self.kind == "regression":
            return ["prediction"]
        if self.kind == "binary":
            return ["score"]
        return [f"score:{c}" for c in self.classes]

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        """Predictions in label units (regression) or probabilities, shape (n, columns), float32.

        Float64 outputs are scored in float64 and rounded once at the end."""
        import torch

        outputs = outputs.detach().cpu()
        if outputs.dtype != torch.float64:
            outputs = outputs.float()
        if self.kind == "regression":
            scores = (outputs * self.std + self.mean).reshape(-1, 1)
        elif self.kind == "multiclass":
            scores = torch.softmax(outputs, dim=-1)
        else:
            scores = torch.sigmoid(outputs).reshape(len(outputs), -1)
        return scores.float().numpy()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Targets:
        return cls(**json.loads(text))

"""The head-only baseline: a task head trained on cached embeddings of the frozen backbone.

Seeded, early-stopped on the validation split's primary metric; writes the head, predictions,
the training log and a manifest into one run folder.
"""

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from copra.atomic import atomic_path, write_table, write_text
from copra.early_stopping import EarlyStopping, check_converged
from copra.embed import read_embeddings
from copra.inference import HeadScorer
from copra.methods.head import Head, HeadSettings
from copra.metrics import loss_and_primary_metric
from copra.provenance import write_manifest
from copra.settings import TaskSettings
from copra.tables import PAIR_KIND, hash_columns, read_task_table, write_predictions
from copra.targets import Targets
from copra.task_head import TaskHead, combine_pair, combined_dim

log = logging.getLogger(__name__)


class StandardizedHead(torch.nn.Module):
    """A task head behind a fixed standardization fitted on the training features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, head: TaskHead):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std)


def features(
    table: pd.DataFrame, vectors: dict[str, np.ndarray], kind: str, how: str
) -> torch.Tensor:
    """One input vector per row: the sequence's, or the symmetric combination of a pair's."""
    if kind == PAIR_KIND:
        a = torch.from_numpy(np.stack([vectors[h] for h in table["hash_a"]]))
        b = torch.from_numpy(np.stack([vectors[h] for h in table["hash_b"]]))
        return combine_pair(a, b, how)
    return torch.from_numpy(np.stack([vectors[h] for h in table["seq_hash"]]))


def evaluate_outputs(model, x, y, targets: Targets) -> tuple[float, float]:
    """(loss, primary metric) of `model` on one split."""
    model.eval()
    with torch.no_grad():
        return loss_and_primary_metric(model(x), y, targets)


def new_head(x_train, targets: Targets, settings: HeadSettings):
    """A freshly initialised head standardizing like the training features, and its AdamW."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    head = TaskHead(x_train.shape[1], targets.out_dim, settings.hidden, settings.dropout)
    model = StandardizedHead(mean, std, head)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    return model, optimizer


def train_epoch(model, optimizer, x, y, targets: Targets, settings: HeadSettings, generator):
    """One epoch over the training features in random batches; the mean training loss."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for start in range(0, len(order), settings.batch_size):
        rows = order[start : start + settings.batch_size]
        loss = targets.loss(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(rows)
    return total / len(order)


def fit_head(
    x_train, y_train, x_valid, y_valid, targets: Targets, settings: HeadSettings, seed: int
):
    """Train with AdamW and early stopping; returns the best model and the per-epoch log."""
    torch.manual_seed(seed)
    model, optimizer = new_head(x_train, targets, settings)
    generator = torch.Generator().manual_seed(seed)
    best, rows, stopping = None, [], EarlyStopping(settings.patience)
    for epoch in tqdm(range(1, settings.max_epochs + 1), desc="head", mininterval=5):
        train_loss = train_epoch(model, optimizer, x_train, y_train, targets, settings, generator)
        valid_loss, value = evaluate_outputs(model, x_valid, y_valid, targets)
        rows.append((epoch, train_loss, valid_loss, value))
        if stopping.update(value, valid_loss):
            best = copy.deepcopy(model.state_dict())
        if stopping.stop:
            break
    model.load_state_dict(check_converged(best, "head.learning_rate"))
    columns = ["epoch", "train_loss", "valid_loss", f"valid_{targets.primary_metric}"]
    return model, pd.DataFrame(rows, columns=columns)


def run_head_baseline(
    table_path,
    embeddings_path,
    out_dir,
    *,
    task: TaskSettings,
    seed: int,
    settings: HeadSettings | None = None,
    config_snapshot: dict | None = None,
) -> None:
    """Train the head of one task and seed; write the run folder."""
    started = time.time()
    out_dir = Path(out_dir)
    settings = settings or HeadSettings()
    kind = task.kind
    table = read_task_table(table_path, kind)
    ids, matrix, embedding_meta = read_embeddings(embeddings_path)
    vectors = dict(zip(ids, matrix, strict=True))
    train, valid = table[table.split == "train"], table[table.split == "valid"]
    targets = Targets.from_training(kind, train["label"], task.multilabel, task.label_separator)
    how = settings.pair_combination
    x = {
        name: features(part, vectors, kind, how)
        for name, part in [("train", train), ("valid", valid)]
    }
    y = {"train": targets.encode(train["label"]), "valid": targets.encode(valid["label"])}
    model, history = fit_head(
        x["train"], y["train"], x["valid"], y["valid"], targets, settings, seed
    )
    keys = [table[c].tolist() for c in hash_columns(kind)]
    scores = HeadScorer(model, targets, how if kind == PAIR_KIND else None).rows(vectors, *keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "head.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_text(out_dir / "targets.json", targets.to_json())
    write_table(out_dir / "training_log.tsv", history)
    write_manifest(
        out_dir / "manifest.json",
        inputs=[table_path, embeddings_path],
        config=config_snapshot,
        method=Head.name,
        kind=kind,
        training_table=str(table_path),
        seed=seed,
        embedding=embedding_meta,
        head={
            "in_dim": combined_dim(matrix.shape[1], how) if kind == PAIR_KIND else matrix.shape[1],
            **asdict(settings),
        },
        trainable_parameters=sum(p.numel() for p in model.parameters()),
        epochs_run=len(history),
        wall_time_s=round(time.time() - started, 3),
    )
    write_predictions(out_dir / "predictions.tsv", table, kind, targets, scores)
    log.info(
        "head trained for %d epochs; best valid %s %.4f",
        len(history),
        targets.primary_metric,
        history.iloc[:, 3].max(),
    )

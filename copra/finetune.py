"""Fine-tuning ESM-2 per task with a method of the registry (copra/methods/): LoRA, CopRA, full.

AdamW with warmup + cosine, gradient accumulation and clipping, length-bucketed batches, random
crops in training and fair-esm truncation in evaluation, early stopping on the validation metric,
and a checkpoint every epoch from which a killed job resumes to the same result. The method
builds the model, names the parameter groups and takes part in every step through its hooks.
"""

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from copra.atomic import atomic_path, write_table, write_text
from copra.device import autocast, pick_device, precision
from copra.early_stopping import EarlyStopping, check_converged
from copra.inference import HeadScorer, NetworkEncoder, score_table
from copra.methods.base import Method
from copra.metrics import loss_and_primary_metric
from copra.protein_model import ProteinModel, checkpoint_blocks
from copra.provenance import file_sha256, write_manifest
from copra.settings import FinetuneSettings, HeadArchitecture, ModelSettings, TaskSettings
from copra.tables import read_sequences, read_task_table, write_predictions
from copra.targets import Targets
from copra.task_data import Batcher, TaskData, predict, task_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    """What one fine-tuning run is told: the task, the method, the backbone, how to train."""

    task: TaskSettings
    method: Method
    seed: int
    model: ModelSettings = field(default_factory=ModelSettings)
    settings: FinetuneSettings = field(default_factory=FinetuneSettings)
    head: HeadArchitecture = field(default_factory=HeadArchitecture)


def length_bucketed_batches(lengths: list[int], batch_size: int, generator) -> list[list[int]]:
    """Batches of similar length (sorted, random tie order), served in random order."""
    noise = torch.rand(len(lengths), generator=generator).tolist()
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], noise[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def warmup_cosine(total_steps: int, warmup_fraction: float):
    """Learning-rate factor: linear warmup, then cosine decay to zero."""
    warmup = max(1, math.ceil(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def steps_per_epoch(rows: int, settings: FinetuneSettings) -> int:
    """Optimizer steps in one epoch over `rows` training rows (the last group may be short)."""
    return math.ceil(math.ceil(rows / settings.batch_size) / settings.gradient_accumulation)


class Trainer:
    """Owns the model, optimizer, schedule, the method's per-run state and early stopping of one
    run; the method takes part through its hooks."""

    def __init__(self, model, method: Method, targets, settings: FinetuneSettings, seed, steps):
        self.model, self.targets, self.settings = model, targets, settings
        self.device = pick_device(settings.device)
        self.model.to(self.device)
        if settings.activation_checkpointing:
            checkpoint_blocks(model.backbone)
        self.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            method.parameter_groups(model, settings), weight_decay=settings.weight_decay
        )
        self.total_steps = steps * settings.max_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, settings.warmup_fraction)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.method = method.fresh()
        self.method.start(model, self.total_steps, seed)
        self.batcher = Batcher(model.alphabet, self.device, settings.max_residues)
        self.step, self.epoch = 0, 0
        self.stopping = EarlyStopping(settings.patience)
        self.best_state, self.history = None, []
        self.fingerprint = ""

    def trainable_state(self) -> dict:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().cpu().clone() for n in self.trainable}

    def train_epoch(self, data: TaskData) -> float:
        self.model.train()
        accumulation = self.settings.gradient_accumulation
        batches = length_bucketed_batches(data.lengths, self.settings.batch_size, self.generator)
        total = 0.0
        for i, rows in enumerate(tqdm(batches, desc=f"epoch {self.epoch + 1}", mininterval=10)):
            group_start = i - i % accumulation
            group = batches[group_start : group_start + accumulation]
            if i == group_start:
                self.method.before_step(self.step)
            weight = len(rows) / sum(len(b) for b in group)
            with autocast(self.device):
                outputs = self.model(*self.batcher.tokens(data, rows, self.generator))
            loss = self.targets.loss(outputs.float(), data.targets[rows].to(self.device))
            extra = self.method.extra_loss()
            ((loss if extra is None else loss + extra) * weight).backward()
            self.method.after_backward(self.step)
            total += loss.item() * len(rows)
            if i + 1 == group_start + len(group):
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
                self.optimizer.step()
                self.method.after_step(self.step)
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
        self.method.before_evaluation()
        return total / len(data.sequences)

    def predict(self, data: TaskData) -> torch.Tensor:
        """Raw outputs of the model as it is saved, in row order."""
        self.method.before_evaluation()
        return predict(self.model, data, self.batcher, self.settings.eval_batch_size)

    def inference(self) -> tuple[NetworkEncoder, HeadScorer]:
        """The model as it is saved, as `copra predict` applies it (copra/inference.py)."""
        self.method.before_evaluation()
        budget = self.settings.eval_batch_size * (self.settings.max_residues + 2)
        encoder = NetworkEncoder(self.model, self.settings.max_residues, self.device, budget)
        return encoder, HeadScorer(self.model.head, self.targets, self.model.pair_combination)

    def validate(self, data: TaskData) -> tuple[float, float]:
        return loss_and_primary_metric(self.predict(data), data.targets, self.targets)

    def fit(self, train: TaskData, valid: TaskData, checkpoint: Path) -> None:
        """Train epoch by epoch from wherever the checkpoint left off."""
        while not self.stopping.stop and self.epoch < self.settings.max_epochs:
            train_loss = self.train_epoch(train)
            self.epoch += 1
            valid_loss, value = self.validate(valid)
            self.history.append((self.epoch, self.step, train_loss, valid_loss, value))
            settled = self.method.settled(self.step)
            if settled and self.stopping.update(value, valid_loss):
                self.best_state = self.trainable_state()
            log.info(
                "epoch %d: train loss %.4f, valid loss %.4f, valid %s %.4f",
                self.epoch,
                train_loss,
                valid_loss,
                self.targets.primary_metric,
                value,
            )
            self.save(checkpoint)
        best = check_converged(self.best_state, "finetune.learning_rate (full_learning_rate)")
        self.model.load_state_dict(best, strict=False)
        self.method.finalize(self.model)

    def save(self, path: Path) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "method": self.method.state_dict(),
            "progress": [self.step, self.epoch, self.stopping.waited, list(self.stopping.best)],
            "best_state": self.best_state,
            "history": self.history,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def resume(self, path: Path) -> bool:
        """Continue from a checkpoint of this very run, if there is one."""
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != self.fingerprint:
            log.info("ignoring %s: it belongs to other inputs or settings", path)
            return False
        self.model.load_state_dict(state["trainable"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.method.load_state_dict(state["method"])
        self.step, self.epoch, self.stopping.waited, best = state["progress"]
        self.stopping.best = tuple(best)
        self.best_state, self.history = state["best_state"], [tuple(r) for r in state["history"]]
        log.info("resumed from %s after epoch %d", path, self.epoch)
        return True


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory of this process, or its peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def save_head(model: ProteinModel, out_dir: Path) -> None:
    with atomic_path(out_dir / "head.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(tmp))


def read_training_task(table_path, sequences_path, task: TaskSettings):
    """The task table, its sequences, and the targets encoded from its training rows."""
    table = read_task_table(table_path, task.kind)
    train_labels = table[table.split == "train"]["label"]
    targets = Targets.from_training(task.kind, train_labels, task.multilabel, task.label_separator)
    return table, read_sequences(sequences_path), targets


def fingerprint(training: Training, backbone, paths) -> str:
    """What a checkpoint must have been written with to be resumed."""
    record = [training.method.name, training.seed, asdict(training.settings)]
    record += [training.method.settings_record(), asdict(training.head), backbone.weights_id]
    return json.dumps([*record, *map(file_sha256, paths)], sort_keys=True)


def run_finetune(
    table_path, sequences_path, out_dir, training: Training, config_snapshot: dict | None = None
) -> None:
    """Fine-tune one task with one method and seed; write the run folder."""
    started = time.time()
    out_dir = Path(out_dir)
    kind, settings, method = training.task.kind, training.settings, training.method
    table, sequences, targets = read_training_task(table_path, sequences_path, training.task)
    data = {
        s: task_data(table[table.split == s], sequences, kind, targets) for s in ("train", "valid")
    }
    torch.manual_seed(training.seed)
    backbone = training.model.load()
    model = method.build(backbone, targets.out_dim, kind, training.head)
    steps = steps_per_epoch(len(data["train"].sequences), settings)
    trainer = Trainer(model, method, targets, settings, training.seed, steps)
    trainer.fingerprint = fingerprint(training, backbone, [table_path, sequences_path])
    checkpoint = out_dir / "checkpoint.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.resume(checkpoint)
    trainer.fit(data["train"], data["valid"], checkpoint)
    evaluated = table[table.split.isin(["valid", "test"])]  # training rows: no forward pass
    scores = score_table(*trainer.inference(), evaluated, sequences, kind)
    trainer.method.save(model.backbone, out_dir)
    save_head(model, out_dir)
    write_text(out_dir / "targets.json", targets.to_json())
    columns = ["epoch", "step", "train_loss", "valid_loss", f"valid_{targets.primary_metric}"]
    write_table(out_dir / "training_log.tsv", pd.DataFrame(trainer.history, columns=columns))
    trainer.method.write_records(out_dir)
    write_manifest(
        out_dir / "manifest.json",
        inputs=[table_path, sequences_path],
        config=config_snapshot,
        method=method.name,
        kind=kind,
        training_table=str(table_path),
        seed=training.seed,
        backbone={"name": backbone.name, "weights": backbone.weights_id},
        head=asdict(training.head),
        device=str(trainer.device),
        precision=precision(trainer.device),
        settings=asdict(settings),
        **trainer.method.manifest(model),
        trainable_parameters=sum(
            p.numel() for n, p in model.named_parameters() if n in trainer.trainable
        ),
        total_parameters=sum(p.numel() for p in model.parameters()),
        optimizer_steps=trainer.step,
        epochs_run=trainer.epoch,
        wall_time_s=round(time.time() - started, 3),
        peak_memory_mb=round(peak_memory_mb(trainer.device), 1),
    )
    write_predictions(out_dir / "predictions.tsv", evaluated, kind, targets, scores)
    checkpoint.unlink(missing_ok=True)

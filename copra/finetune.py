"""Fine-tuning ESM-2 per task: LoRA, CopRA (LoRA with layer dropping) and full fine-tuning.

AdamW with warmup + cosine, gradient accumulation and clipping, length-bucketed batches, random
crops in training and fair-esm truncation in evaluation, early stopping on the validation metric,
and a checkpoint every epoch from which a killed job resumes to the same result.
"""

import contextlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from copra import config
from copra.atomic import atomic_directory, atomic_path, write_table, write_text
from copra.backbone import load_backbone
from copra.device import autocast, pick_device, precision
from copra.early_stopping import EarlyStopping, check_converged
from copra.errors import InputError
from copra.layer_drop import LayerDropper, LayerDropSettings
from copra.lora import LoraSettings, add_lora, lora_layers_by_block, wrapped_module_names
from copra.metrics import loss_and_primary_metric
from copra.protein_model import ProteinModel, checkpoint_blocks
from copra.provenance import file_sha256, write_manifest
from copra.tables import PAIR_KIND, read_sequences, read_task_table, write_predictions
from copra.targets import Targets
from copra.trained_run import TrainedRun

log = logging.getLogger(__name__)
METHODS = ("lora", "copra", "full")


@dataclass(frozen=True)
class FinetuneSettings:
    learning_rate: float = config.default("finetune.learning_rate")
    full_learning_rate: float = config.default("finetune.full_learning_rate")
    weight_decay: float = config.default("finetune.weight_decay")
    batch_size: int = config.default("finetune.batch_size")
    gradient_accumulation: int = config.default("finetune.gradient_accumulation")
    max_grad_norm: float = config.default("finetune.max_grad_norm")
    warmup_fraction: float = config.default("finetune.warmup_fraction")
    max_epochs: int = config.default("finetune.max_epochs")
    patience: int = config.default("finetune.patience")
    max_residues: int = config.default("finetune.max_residues")
    eval_batch_size: int = config.default("finetune.eval_batch_size")
    device: str = config.default("finetune.device")
    activation_checkpointing: bool = config.default("finetune.activation_checkpointing")


@dataclass
class TaskData:
    """One split of a task: sequences per row (one or two) and encoded targets."""

    sequences: list[tuple[str, ...]]
    targets: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        return [max(len(s) for s in row) for row in self.sequences]


def task_data(table: pd.DataFrame, sequences: dict[str, str], kind: str, targets: Targets):
    columns = ["hash_a", "hash_b"] if kind == PAIR_KIND else ["seq_hash"]
    rows = [
        tuple(sequences[h] for h in hashes) for hashes in table[columns].itertuples(index=False)
    ]
    return TaskData(rows, targets.encode(table["label"]))


def length_bucketed_batches(lengths: list[int], batch_size: int, generator) -> list[list[int]]:
    """Batches of similar length (sorted, random tie order), served in random order."""
    noise = torch.rand(len(lengths), generator=generator).tolist()
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], noise[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


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
def predict(
    model: ProteinModel, data: TaskData, batcher: Batcher, batch_size: int, float32: bool = False
) -> torch.Tensor:
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


def score_split(model, data: TaskData, targets: Targets, batcher: Batcher) -> dict[str, float]:
    """Loss and primary metric of `model` on one split, evaluated in float32."""
    outputs = predict(model, data, batcher, 16, float32=True)
    loss, metric = loss_and_primary_metric(outputs, data.targets, targets)
    return {"loss": loss, targets.primary_metric: metric}


def build_model(method: str, backbone, targets: Targets, kind: str, lora: LoraSettings, head: dict):
    """The ProteinModel of a method: only adapters + head train for lora/copra, all for full."""
    network = backbone.model
    if method in ("lora", "copra"):
        network = add_lora(network, lora, f"{backbone.name}@{backbone.weights_id}")
    elif method == "full":
        network.requires_grad_(True)
    else:
        raise InputError(f"method {method!r} is not one of {', '.join(METHODS)}")
    pair = head["pair_combination"] if kind == PAIR_KIND else None
    return ProteinModel(
        network,
        backbone.alphabet,
        backbone.num_layers,
        backbone.embed_dim,
        targets.out_dim,
        head["hidden"],
        head["dropout"],
        pair,
    )


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
    """Owns the model, optimizer, schedule, layer dropping and early stopping of one run."""

    def __init__(
        self,
        model,
        method,
        targets,
        settings: FinetuneSettings,
        seed,
        steps_per_epoch,
        layer_drop: LayerDropSettings,
    ):
        self.model, self.method, self.targets, self.settings = model, method, targets, settings
        self.device = pick_device(settings.device)
        self.model.to(self.device)
        if settings.activation_checkpointing:
            checkpoint_blocks(model.backbone)
        self.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        head = [params[n] for n in self.trainable if n.startswith("head.")]
        body = [params[n] for n in self.trainable if not n.startswith("head.")]
        body_lr = settings.full_learning_rate if method == "full" else settings.learning_rate
        self.optimizer = torch.optim.AdamW(
            [{"params": body, "lr": body_lr}, {"params": head, "lr": settings.learning_rate}],
            weight_decay=settings.weight_decay,
        )
        self.total_steps = steps_per_epoch * settings.max_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, settings.warmup_fraction)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.dropper = None
        if method == "copra":
            blocks = lora_layers_by_block(model.backbone)
            self.dropper = LayerDropper(blocks, self.total_steps, layer_drop, seed)
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
            if i == group_start and self.dropper:
                self.dropper.draw(self.step)
            weight = len(rows) / sum(len(b) for b in group)
            with autocast(self.device):
                outputs = self.model(*self.batcher.tokens(data, rows, self.generator))
            loss = self.targets.loss(outputs.float(), data.targets[rows].to(self.device))
            (loss * weight).backward()
            total += loss.item() * len(rows)
            if i + 1 == group_start + len(group):
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
        if self.dropper:
            self.dropper.activate_all()
        return total / len(data.sequences)

    def predict(self, data: TaskData) -> torch.Tensor:
        """Raw outputs with every layer active, in row order."""
        if self.dropper:
            self.dropper.activate_all()
        return predict(self.model, data, self.batcher, self.settings.eval_batch_size)

    def validate(self, data: TaskData) -> tuple[float, float]:
        return loss_and_primary_metric(self.predict(data), data.targets, self.targets)

    def fit(self, train: TaskData, valid: TaskData, checkpoint: Path) -> None:
        """Train epoch by epoch from wherever the checkpoint left off."""
        while not self.stopping.stop and self.epoch < self.settings.max_epochs:
            train_loss = self.train_epoch(train)
            self.epoch += 1
            valid_loss, value = self.validate(valid)
            self.history.append((self.epoch, self.step, train_loss, valid_loss, value))
            if self.stopping.update(value, valid_loss):
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

    def save(self, path: Path) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "dropper": self.dropper.state_dict() if self.dropper else None,
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
        if self.dropper:
            self.dropper.load_state_dict(state["dropper"])
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


def save_weights(model: ProteinModel, method: str, out_dir: Path) -> None:
    """The adapter in peft's format (lora, copra) or the whole backbone (full), and the head."""
    from safetensors.torch import save_model

    if method == "full":
        with atomic_path(out_dir / "backbone.safetensors") as tmp:
            save_model(model.backbone, str(tmp))
    else:
        with atomic_directory(out_dir / "adapter") as tmp:
            # No embedding layers are adapted; False also skips peft's hub query about them.
            model.backbone.save_pretrained(str(tmp), save_embedding_layers=False)
    with atomic_path(out_dir / "head.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(tmp))


def training_defaults(settings, lora, layer_drop, head):
    """The settings of a training run, each taking the schema's defaults when not given."""
    head = head or {name: config.default(f"head.{name}") for name in config.HEAD_ARCHITECTURE}
    return (
        settings or FinetuneSettings(),
        lora or LoraSettings(),
        layer_drop or LayerDropSettings(),
        head,
    )


def read_training_task(table_path, sequences_path, kind, multilabel, label_separator):
    """The task table, its sequences, and the targets encoded from its training rows."""
    table = read_task_table(table_path, kind)
    train_labels = table[table.split == "train"]["label"]
    targets = Targets.from_training(kind, train_labels, multilabel, label_separator)
    return table, read_sequences(sequences_path), targets


def run_finetune(
    table_path,
    sequences_path,
    out_dir,
    *,
    kind: str,
    method: str,
    seed: int,
    model_name: str,
    weights: str,
    model_seed: int = 0,
    weights_dir=None,
    download_url: str = config.default("model.download_url"),
    multilabel: bool = False,
    label_separator: str = ";",
    settings: FinetuneSettings | None = None,
    lora: LoraSettings | None = None,
    layer_drop: LayerDropSettings | None = None,
    head: dict | None = None,
    config_snapshot: dict | None = None,
) -> None:
    """Fine-tune one task with one method and seed; write the run folder."""
    started = time.time()
    out_dir = Path(out_dir)
    settings, lora, layer_drop, head = training_defaults(settings, lora, layer_drop, head)
    table, sequences, targets = read_training_task(
        table_path, sequences_path, kind, multilabel, label_separator
    )
    data = {
        s: task_data(table[table.split == s], sequences, kind, targets) for s in ("train", "valid")
    }
    torch.manual_seed(seed)
    backbone = load_backbone(
        model_name, weights, seed=model_seed, weights_dir=weights_dir, download_url=download_url
    )
    model = build_model(method, backbone, targets, kind, lora, head)
    steps = steps_per_epoch(len(data["train"].sequences), settings)
    trainer = Trainer(model, method, targets, settings, seed, steps, layer_drop)
    trainer.fingerprint = json.dumps(
        [
            method,
            seed,
            asdict(settings),
            asdict(lora),
            asdict(layer_drop),
            head,
            backbone.weights_id,
            file_sha256(table_path),
            file_sha256(sequences_path),
        ],
        sort_keys=True,
    )
    checkpoint = out_dir / "checkpoint.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.resume(checkpoint)
    trainer.fit(data["train"], data["valid"], checkpoint)
    evaluated = table[table.split.isin(["valid", "test"])]  # training rows: no forward pass
    scores = targets.scores(trainer.predict(task_data(evaluated, sequences, kind, targets)))
    save_weights(model, method, out_dir)
    write_text(out_dir / "targets.json", targets.to_json())
    columns = ["epoch", "step", "train_loss", "valid_loss", f"valid_{targets.primary_metric}"]
    write_table(out_dir / "training_log.tsv", pd.DataFrame(trainer.history, columns=columns))
    layer_counts = None
    if trainer.dropper:
        history = pd.DataFrame(
            trainer.dropper.history, columns=["step", "p_active", "active_layers"]
        )
        write_table(out_dir / "layer_drop.tsv", history)
        layer_counts = {str(k): v for k, v in trainer.dropper.active_counts.items()}
        log.info("per-layer activation counts over %d steps: %s", trainer.step, layer_counts)
    params = list(model.parameters())
    write_manifest(
        out_dir / "manifest.json",
        inputs=[table_path, sequences_path],
        config=config_snapshot,
        method=method,
        kind=kind,
        seed=seed,
        backbone={"name": backbone.name, "weights": backbone.weights_id},
        head=head,
        device=str(trainer.device),
        precision=precision(trainer.device),
        settings=asdict(settings),
        lora=asdict(lora) if method != "full" else None,
        layer_drop=asdict(layer_drop) if method == "copra" else None,
        wrapped_modules=wrapped_module_names(model) if method != "full" else [],
        trainable_parameters=sum(
            p.numel() for n, p in model.named_parameters() if n in trainer.trainable
        ),
        total_parameters=sum(p.numel() for p in params),
        layer_activation_counts=layer_counts,
        optimizer_steps=trainer.step,
        epochs_run=trainer.epoch,
        wall_time_s=round(time.time() - started, 3),
        peak_memory_mb=round(peak_memory_mb(trainer.device), 1),
    )
    write_predictions(out_dir / "predictions.tsv", evaluated, kind, targets, scores)
    checkpoint.unlink(missing_ok=True)


def load_finetuned(run_dir, backbone) -> tuple[ProteinModel, Targets]:
    """A trained run as a model again: peft adapter (or full weights) and head on `backbone`."""
    from peft import PeftModel
    from safetensors.torch import load_model

    run = TrainedRun.open(run_dir)
    run.check_backbone(backbone)
    network = backbone.model
    if run.manifest["method"] == "full":
        load_model(network, str(run.folder / "backbone.safetensors"))
    else:
        network = PeftModel.from_pretrained(network, str(run.adapter_folder))
    return run.model(network, backbone), run.targets

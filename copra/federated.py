"""Federated LoRA and CopRA: K clients train one shared adapter and head, aggregated every round.

Only the training split is partitioned over the clients (iid, or label skew drawn from a
Dirichlet); the global model is evaluated on valid and test after every round. Aggregations,
weighted by the clients' sizes p_k:

- `fedavg` averages A, B and the head separately: inexact, mean(B) mean(A) != mean(B A);
- `exact` averages the heads and dW = s B A, then truncates dW to the adapter's rank by SVD;
- `ffa` (FFA-LoRA) freezes A before training, so that averaging B and the head is exact.
"""

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from copra import methods
from copra.atomic import write_table
from copra.device import pick_device, precision
from copra.errors import InputError
from copra.finetune import Trainer, Training, read_training_task, steps_per_epoch
from copra.lora import wrapped_module_names
from copra.provenance import write_manifest
from copra.settings import FederatedSettings
from copra.targets import Targets
from copra.task_data import TaskData, task_data

log = logging.getLogger(__name__)
COLUMNS = [
    "task",
    "method",
    "partition",
    "aggregation",
    "clients",
    "round",
    "split",
    "metric",
    "value",
]
PARTITIONS = ("iid", "dirichlet")
AGGREGATIONS = ("fedavg", "exact", "ffa")
SPLITS = ("valid", "test")
MAX_REDRAWS = 100
REGRESSION_BINS = 5
ADAPTER = "default"  # peft's name of the one adapter
CLIENT_SEED_STRIDE = 1000


# --- partitions of the training rows -------------------------------------------------------------


def row_classes(labels: pd.Series, targets: Targets) -> np.ndarray:
    """Class of each row for label skew: its label, its first label, or its quantile bin."""
    if targets.kind == "regression":
        values = labels.astype(float).to_numpy()
        bins = min(REGRESSION_BINS, len(values))
        ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        return ranks * bins // len(values)
    labels = labels.astype(str)
    if targets.kind == "multilabel":
        labels = labels.str.split(targets.separator).str[0]
    return labels.to_numpy()


def iid_partition(rows: int, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of the rows cut into near-equal parts (each part in row order)."""
    return [np.sort(part) for part in np.array_split(rng.permutation(rows), clients)]


def dirichlet_partition(classes: np.ndarray, clients: int, alpha: float, rng) -> list[np.ndarray]:
    """One draw of label skew: each class's rows split by shares ~ Dirichlet(alpha * ones(K))."""
    parts = [[] for _ in range(clients)]
    for label in np.unique(classes):
        rows = rng.permutation(np.flatnonzero(classes == label))
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
            part.extend(chunk.tolist())
    return [np.sort(np.asarray(part, dtype=int)) for part in parts]


def partition_clients(classes: np.ndarray, clients: int, how: str, alpha: float, seed: int):
    """Row indices of each client: `iid` or `dirichlet` (redrawn until no client is empty)."""
    if clients > len(classes):
        raise InputError(
            f"{clients} clients but only {len(classes)} training rows: every client needs at "
            f"least one row; use at most {len(classes)} clients"
        )
    rng = np.random.default_rng(seed)
    if how == "iid":
        return iid_partition(len(classes), clients, rng)
    for _ in range(MAX_REDRAWS):
        parts = dirichlet_partition(classes, clients, alpha, rng)
        if all(len(part) for part in parts):
            return parts
    raise InputError(
        f"dirichlet partition: in {MAX_REDRAWS} draws with dirichlet_alpha {alpha}, some of the "
        f"{clients} clients always got no training row ({len(classes)} rows in "
        f"{len(np.unique(classes))} classes); use a larger dirichlet_alpha or fewer clients"
    )


def subset(data: TaskData, rows: np.ndarray) -> TaskData:
    return TaskData([data.sequences[i] for i in rows], data.targets[torch.as_tensor(rows)])


# --- the federated tensors and their aggregation -------------------------------------------------


def factor_names(module: str) -> tuple[str, str]:
    """Parameter names of a LoRA module's A and B."""
    return f"{module}.lora_A.{ADAPTER}.weight", f"{module}.lora_B.{ADAPTER}.weight"


@dataclass(frozen=True)
class Layout:
    """The federated tensors of a model: LoRA modules with their scaling s, and the head."""

    modules: dict[str, float]
    head: list[str]

    @classmethod
    def of(cls, model) -> "Layout":
        modules = {m: model.get_submodule(m).scaling[ADAPTER] for m in wrapped_module_names(model)}
        head = [n for n, _ in model.named_parameters() if n.startswith("head.")]
        return cls(modules, head)

    @property
    def names(self) -> list[str]:
        return [n for m in self.modules for n in factor_names(m)] + self.head


def read_state(model, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


def weighted_mean(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_k p_k x_k, accumulated in float64 (exactly x for one client of weight 1)."""
    total = sum(w * t.double() for w, t in zip(weights, tensors, strict=True))
    return total.to(tensors[0].dtype)


def delta(state: dict, module: str, scaling: float) -> torch.Tensor:
    """dW = s B A of one module, in float64."""
    a, b = (state[n].double() for n in factor_names(module))
    return scaling * (b @ a)


def mean_delta(states: list[dict], weights: list[float], module: str, scaling: float):
    return sum(w * delta(s, module, scaling) for w, s in zip(weights, states, strict=True))


def truncated_factors(product: torch.Tensor, rank: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A = sqrt(S_r) V_r^T and B = U_r sqrt(S_r): B A is the best rank-r approximation."""
    u, s, vh = torch.linalg.svd(product, full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(dtype), (u[:, :rank] * root).to(dtype)


def aggregate(how: str, states: list[dict], weights: list[float], layout: Layout, previous: dict):
    """The new global state from the clients' states (`previous`: the round's global state)."""
    merged = {n: weighted_mean([s[n] for s in states], weights) for n in layout.names}
    for module in layout.modules:
        a, b = factor_names(module)
        if how == "ffa":  # A was frozen: every client holds the global A
            merged[a] = previous[a]
        elif how == "exact":  # s is shared, so truncating mean_k B_k A_k truncates mean dW / s
            product = mean_delta(states, weights, module, 1.0)
            merged[a], merged[b] = truncated_factors(product, len(previous[a]), previous[a].dtype)
    return merged


def aggregation_error(states: list[dict], weights: list[float], merged: dict, layout: Layout):
    """||mean_k dW_k - dW(global)||_F / ||mean_k dW_k||_F, the norms taken over all modules."""
    gap = norm = 0.0
    for module, scaling in layout.modules.items():
        target = mean_delta(states, weights, module, scaling)
        gap += float((target - delta(merged, module, scaling)).square().sum())
        norm += float(target.square().sum())
    return math.sqrt(gap / norm) if norm > 0 else 0.0


def freeze_lora_a(model) -> None:
    """FFA-LoRA: the A factors keep their initial values; clients train B and the head."""
    for name, param in model.named_parameters():
        if ".lora_A." in name:
            param.requires_grad_(False)


# --- training ------------------------------------------------------------------------------------


@dataclass
class Federation:
    """One federated experiment: clients' data, settings, and how the global model is built."""

    task: str
    training: Training
    federated: FederatedSettings
    partition: str
    targets: Targets
    clients: list[TaskData]
    evaluation: dict[str, TaskData]
    weights_id: str = ""

    def initial_model(self):
        """The round-0 global model, seeded and built afresh in run_finetune's order."""
        torch.manual_seed(self.federated.seed)
        backbone = self.training.model.load()
        self.weights_id = backbone.weights_id
        task = self.training.task
        return self.training.method.build(
            backbone, self.targets.out_dim, task.kind, self.training.head
        )

    @property
    def weights(self) -> list[float]:
        sizes = [len(c.sequences) for c in self.clients]
        return [n / sum(sizes) for n in sizes]

    @property
    def client_seeds(self) -> list[int]:
        """Client k trains with seed + 1000 k (client 0 with the run's seed)."""
        return [self.federated.seed + CLIENT_SEED_STRIDE * k for k in range(len(self.clients))]

    @property
    def steps_per_epoch(self) -> list[int]:
        return [steps_per_epoch(len(c.sequences), self.training.settings) for c in self.clients]

    @property
    def epochs(self) -> int:
        """Each client's epochs over all rounds."""
        return self.federated.local_epochs * self.federated.rounds

    @property
    def total_steps(self) -> list[int]:
        """Each client's optimizer steps over all rounds: its LR and method schedules."""
        return [steps * self.epochs for steps in self.steps_per_epoch]

    def trainers(self, model) -> list[Trainer]:
        """One trainer per client, each with its own optimizer, generator, schedule and method."""
        schedule = replace(self.training.settings, max_epochs=self.epochs)
        method = self.training.method
        return [
            Trainer(model, method, self.targets, schedule, seed, steps)
            for seed, steps in zip(self.client_seeds, self.steps_per_epoch, strict=True)
        ]

    def local_training(self, trainer: Trainer, data: TaskData, state: dict, names) -> dict:
        """The client's state after `local_epochs` epochs from the global `state`."""
        trainer.model.load_state_dict(state, strict=False)
        for _ in range(self.federated.local_epochs):
            trainer.train_epoch(data)
            trainer.epoch += 1
        return read_state(trainer.model, names)

    def rows(self, aggregation: str, round_: int, scores: dict) -> list[tuple]:
        """Table rows of {split: {metric: value}}."""
        method = self.training.method.name
        key = (self.task, method, self.partition, aggregation, len(self.clients), round_)
        return [
            (*key, split, metric, value)
            for split, values in scores.items()
            for metric, value in values.items()
        ]

    def evaluate(self, trainer: Trainer) -> dict[str, dict[str, float]]:
        """Loss and primary metric of the global model (as it is saved) on valid and test."""
        scores = {split: trainer.validate(self.evaluation[split]) for split in SPLITS}
        metric = self.targets.primary_metric
        return {split: {"loss": loss, metric: value} for split, (loss, value) in scores.items()}

    def run(self, aggregation: str) -> list[tuple]:
        """Every round of one aggregation, from the same initial global model as the others."""
        model = self.initial_model()
        if aggregation == "ffa":
            freeze_lora_a(model)
        trainers = self.trainers(model)
        layout = Layout.of(model)
        state = read_state(model, layout.names)
        rows = self.rows(aggregation, 0, self.evaluate(trainers[0]))
        rounds = self.federated.rounds
        desc = f"{self.task} {self.training.method.name} {aggregation}"
        for round_ in tqdm(range(1, rounds + 1), desc=desc, mininterval=10):
            states = [
                self.local_training(t, data, state, layout.names)
                for t, data in zip(trainers, self.clients, strict=True)
            ]
            state = aggregate(aggregation, states, self.weights, layout, state)
            model.load_state_dict(state, strict=False)
            error = aggregation_error(states, self.weights, state, layout)
            scores = self.evaluate(trainers[0])
            rows += self.rows(aggregation, round_, {"aggregate": {"aggregation_error": error}})
            rows += self.rows(aggregation, round_, scores)
            valid = ", ".join(f"{k} {v:.4f}" for k, v in scores["valid"].items())
            log.info(
                "%s round %d/%d: valid %s, aggregation error %.3g",
                aggregation,
                round_,
                rounds,
                valid,
                error,
            )
        return rows


def check_choices(method: str, partition: str, federated: FederatedSettings) -> None:
    """Refuse unknown names and non-positive counts before anything is loaded."""
    methods.require(method, "federated")
    if partition not in PARTITIONS:
        raise InputError(f"partition {partition!r} is not one of {', '.join(PARTITIONS)}")
    aggregations = federated.aggregations
    unknown = [a for a in aggregations if a not in AGGREGATIONS]
    if unknown or not aggregations or len(set(aggregations)) < len(aggregations):
        raise InputError(
            f"aggregations {list(aggregations)} must be distinct names from "
            f"{', '.join(AGGREGATIONS)} (at least one)"
        )
    for name in ("clients", "rounds", "local_epochs", "dirichlet_alpha"):
        value = getattr(federated, name)
        if not value > 0:
            raise InputError(f"{name} is {value}; it must be positive")


def run_federated(
    table_path,
    sequences_path,
    output,
    *,
    task: str,
    training: Training,
    federated: FederatedSettings,
    partition: str,
    config_snapshot: dict | None = None,
) -> pd.DataFrame:
    """Federated training of one task with each aggregation; write the tidy table and manifest.

    `training.settings.max_epochs` and `patience` do not apply: clients train `local_epochs`
    per round. `federated.seed` seeds the partition, the global model and client 0 (client k:
    seed + 1000 k); `training.seed` is not read.
    """
    started = time.time()
    check_choices(training.method.name, partition, federated)
    table, sequences, targets = read_training_task(table_path, sequences_path, training.task)
    kind = training.task.kind
    data = {
        s: task_data(table[table.split == s], sequences, kind, targets) for s in ("train", *SPLITS)
    }
    classes = row_classes(table[table.split == "train"]["label"], targets)
    parts = partition_clients(
        classes, federated.clients, partition, federated.dirichlet_alpha, federated.seed
    )
    federation = Federation(
        task,
        training,
        federated,
        partition,
        targets,
        [subset(data["train"], rows) for rows in parts],
        {s: data[s] for s in SPLITS},
    )
    rows = [row for aggregation in federated.aggregations for row in federation.run(aggregation)]
    result = pd.DataFrame(rows, columns=COLUMNS)
    output = Path(output)
    write_table(output, result)
    device = pick_device(training.settings.device)
    model = training.model
    write_manifest(
        output.with_name(f"{output.stem}.manifest.json"),
        inputs=[table_path, sequences_path],
        config=config_snapshot,
        task=task,
        kind=kind,
        method=training.method.name,
        seed=federated.seed,
        client_seeds=federation.client_seeds,
        client_total_steps=federation.total_steps,
        partition=partition,
        dirichlet_alpha=federated.dirichlet_alpha if partition == "dirichlet" else None,
        aggregations=list(federated.aggregations),
        clients=federated.clients,
        rounds=federated.rounds,
        local_epochs=federated.local_epochs,
        partition_sizes=[len(rows) for rows in parts],
        partition_classes=[class_counts(classes[rows]) for rows in parts],
        backbone={"name": model.name, "weights": federation.weights_id, "seed": model.seed},
        head=asdict(training.head),
        device=str(device),
        precision=precision(device),
        settings=asdict(training.settings),
        **training.method.settings_record(),
        wall_time_s=round(time.time() - started, 3),
    )
    return result


def class_counts(classes: np.ndarray) -> dict[str, int]:
    labels, counts = np.unique(classes, return_counts=True)
    return {str(label): int(count) for label, count in zip(labels, counts, strict=True)}

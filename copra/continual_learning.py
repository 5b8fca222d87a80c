"""LAE (Learning, Accumulation, Ensemble; Gao et al., ICCV 2023) and its baselines over a
continual sequence (copra/continual.py), on the method registry's training loop.

One job learns one sequence in one order with one seed and writes, after every step t, the test
rows of steps 0..t with each method's scores (`predictions.tsv`; the metrics are computed from it:
copra/continual_metrics.py) and each expert's run folder in peft's format (`step<t>/<expert>/`,
usable by `copra predict` and the adapter analyses). Learners:

- `lae`: the online PET carries over; for every step after the first it is frozen for
  `frozen_epochs` while the new head calibrates; from the second step on the offline PET follows
  it after every optimizer step (EMA). Scores: `online`, `offline`, and `lae`, the element-wise
  max of the two experts' class probabilities (regression: their mean, a declared deviation).
- `sequential`: the same PET and heads, no freezing, no EMA. `head`: the backbone frozen, heads
  only. `joint`: one model on every step's rows at once, scored after step t on the classes seen
  by then. `independent`: a fresh PET and head per step; class-incremental scores concatenate the
  logits of every step's own model, domain-incremental rows are scored by their step's model.

Class-incremental: one head per step, logits concatenated; a step's loss is over its new classes.
Domain-incremental: the shared head, and the targets of the first step's training rows (joint:
those of all steps). A job resumes at its last finished step (`progress.pt`).
"""

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from copra import continual_model as cm
from copra.atomic import atomic_directory, atomic_path, write_table, write_text
from copra.continual import (
    HEAD,
    LEARNER_OF,
    SequenceSpec,
    class_steps,
    domain_steps,
    step_seed,
)
from copra.device import precision
from copra.errors import InputError
from copra.finetune import Trainer, read_training_task, steps_per_epoch
from copra.methods import registry
from copra.methods.base import Method
from copra.provenance import file_sha256, write_manifest
from copra.settings import (
    ContinualSettings,
    FinetuneSettings,
    HeadArchitecture,
    ModelSettings,
)
from copra.tables import key_columns
from copra.targets import Targets
from copra.task_data import TaskData, task_data

log = logging.getLogger(__name__)
EXPERT_NAMES = {cm.ONLINE: "online", cm.OFFLINE: "offline"}
PROGRESS = "progress.pt"


@dataclass
class Step:
    """The rows of one step (all splits) and the targets its own training uses."""

    name: str
    task: str
    kind: str
    table: pd.DataFrame
    sequences: dict
    targets: Targets

    def split(self, split: str, targets: Targets | None = None) -> TaskData:
        rows = self.table[self.table.split == split]
        return task_data(rows, self.sequences, self.kind, targets or self.targets)

    def test_rows(self):
        return self.table[self.table.split == "test"], self.sequences, self.kind


@dataclass
class Sequence:
    """A sequence's steps in one order."""

    spec: SequenceSpec
    order: int
    steps: list[Step]
    inputs: list[Path]

    @property
    def classes(self) -> list[str]:
        """Class-incremental: every class, in step order (the heads' output order)."""
        return [c for step in self.steps for c in step.targets.classes]

    def seen(self, t: int) -> Targets:
        """The label space after step t (its scores' columns)."""
        if self.spec.mode == "class":
            return Targets("multiclass", classes=self.classes[: self.width(t)])
        return self.steps[0].targets

    def width(self, t: int) -> int:
        return sum(step.targets.out_dim for step in self.steps[: t + 1])

    def joint_targets(self) -> Targets:
        if self.spec.mode == "class":
            return Targets("multiclass", classes=self.classes)
        tables = [step.table for step in self.steps]
        train = pd.concat(tables)
        train = train[train.split == "train"]["label"]
        task = self.steps[0]
        first = self.steps[0].targets
        return Targets.from_training(task.kind, train, first.kind == "multilabel", first.separator)

    def union(self, split: str, targets: Targets) -> TaskData:
        parts = [step.split(split, targets) for step in self.steps]
        return TaskData(
            [row for part in parts for row in part.sequences],
            torch.cat([part.targets for part in parts]),
        )


def read_sequence(spec: SequenceSpec, order: int, inputs: dict, tasks: dict) -> Sequence:
    """The steps of `spec` in order `order` from the tasks' ingested files
    (`inputs`: {task: (table, sequences)}; `tasks`: {task: TaskSettings})."""
    read = {name: read_training_task(*inputs[name], tasks[name]) for name in spec.task_names}
    paths = [Path(p) for name in spec.task_names for p in inputs[name]]
    if spec.mode == "class":
        table, sequences, targets = read[spec.task]
        steps = []
        for classes in class_steps(spec, targets.classes, order):
            rows = table[table.label.astype(str).isin(classes)]
            check_step_rows(spec, "+".join(classes), rows)
            kind = tasks[spec.task].kind
            step_targets = Targets("multiclass", classes=list(classes))
            steps.append(Step("+".join(classes), spec.task, kind, rows, sequences, step_targets))
        return Sequence(spec, order, steps, paths)
    first = spec.tasks[0]
    for name in spec.tasks[1:]:
        check_label_space(spec, first, read[first][2], name, read[name][2])
    steps = []
    for name in domain_steps(spec, order):
        table, sequences, targets = read[name]
        check_step_rows(spec, name, table)
        steps.append(Step(name, name, tasks[name].kind, table, sequences, targets))
    reference = steps[0].targets
    for step in steps:
        step.targets = reference
    return Sequence(spec, order, steps, paths)


def check_step_rows(spec: SequenceSpec, name: str, rows: pd.DataFrame) -> None:
    for split in ("train", "valid", "test"):
        if not (rows.split == split).any():
            raise InputError(
                f"{spec.where}: step {name} has no {split} rows; every step needs train, valid "
                "and test rows (more rows, or other steps)"
            )


def check_label_space(spec, first: str, a: Targets, name: str, b: Targets) -> None:
    if a.kind != b.kind or a.classes != b.classes:
        raise InputError(
            f"{spec.where}: tasks {first} and {name} differ in label space ({a.kind} "
            f"{a.classes or ''} vs {b.kind} {b.classes or ''}): the tasks of a "
            "domain-incremental sequence share one label space"
        )


# --- the learners --------------------------------------------------------------------------------


class FrozenBackbone(Method):
    """The `head` learner's "PET": nothing of the backbone trains."""

    name = "frozen-backbone"

    def adapt(self, network, backbone_id: str):
        network.requires_grad_(False)
        return network


@dataclass
class ContinualRun:
    """One job: a sequence in one order, a learner, a seed, and how every step trains."""

    sequence: Sequence
    learner: str
    seed: int
    pet: Method
    continual: ContinualSettings
    model: ModelSettings = field(default_factory=ModelSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    head: HeadArchitecture = field(default_factory=HeadArchitecture)
    weights_id: str = ""
    backbone_name: str = ""

    @property
    def settings(self) -> FinetuneSettings:
        return replace(self.finetune, max_epochs=self.continual.epochs)

    @property
    def method(self) -> Method:
        return FrozenBackbone() if self.learner == HEAD else self.pet

    @property
    def kind(self) -> str:
        return self.sequence.steps[0].kind

    def build(self, out_dim: int, seed: int):
        """A fresh task model, seeded and built in run_finetune's order."""
        torch.manual_seed(seed)
        backbone = self.model.load()
        self.weights_id, self.backbone_name = backbone.weights_id, backbone.name
        model = self.method.build(backbone, out_dim, self.kind, self.head)
        if self.sequence.spec.mode == "class" and self.learner != "joint":
            model.head = cm.StepHeads(model.head)
        return model

    def train(self, model, t: int, train, valid, targets, scratch: Path, lae: bool = False):
        """Train `model` on one step (or on the union, for joint) with a new optimizer."""
        steps = steps_per_epoch(len(train.sequences), self.settings)
        later = lae and t > 0  # LAE's freezing and EMA start with the second step
        frozen = self.continual.frozen_epochs * steps if later else 0
        ema = cm.Ema(model, self.continual.decay(steps * self.continual.epochs)) if later else None
        policy = cm.StepPolicy(self.method, frozen, ema)
        trainer = Trainer(model, policy, targets, self.settings, step_seed(self.seed, t), steps)
        if ema is not None:  # the best epoch restores the offline expert of that epoch too
            trainer.trainable += cm.offline_names(model)
        heads = model.head if isinstance(model.head, cm.StepHeads) else None
        if heads is not None:
            heads.only = len(heads.heads) - 1
        rows = len(train.sequences)
        log.info("step %d: %d training rows, %d optimizer steps per epoch", t, rows, steps)
        trainer.fit(train, valid, scratch)
        scratch.unlink(missing_ok=True)
        if heads is not None:
            heads.only = None
        trainer.method.before_evaluation()
        return trainer

    def outputs(self, model, steps: list[Step], experts=(cm.ONLINE,)) -> dict:
        """{expert: raw outputs on the test rows of `steps`}."""
        head = cm.single_head(model)
        tables = [step.test_rows() for step in steps]
        found = {}
        for name in experts:
            with cm.expert(model, name):
                found[name] = cm.raw_outputs(model, head, tables, self.settings)
        return found


def ensemble(online: np.ndarray, offline: np.ndarray, targets: Targets) -> np.ndarray:
    """LAE's inference: the element-wise max of the experts' class probabilities (binary: of
    (1 - p, p), as p' / (p' + q') so that it is 0.5 where the two maxima tie); regression: the
    mean prediction."""
    if targets.kind == "regression":
        return ((online.astype(np.float64) + offline) / 2).astype(np.float32)
    if targets.kind == "binary":
        positive = np.maximum(online, offline).astype(np.float64)
        negative = np.maximum(1 - online, 1 - offline)
        return (positive / (positive + negative)).astype(np.float32)
    return np.maximum(online, offline)


def scores_of(logits: np.ndarray, targets: Targets) -> np.ndarray:
    return targets.scores(torch.from_numpy(logits))


# --- one job -------------------------------------------------------------------------------------


class Job:
    """The steps of one ContinualRun, each step's files written as it finishes."""

    def __init__(self, run: ContinualRun, out_dir: Path, fingerprint: str):
        self.run, self.out_dir, self.fingerprint = run, Path(out_dir), fingerprint
        self.sequence = run.sequence

    def rows(self, t: int, scores: dict[str, np.ndarray]) -> pd.DataFrame:
        """Predictions after step t: every method's scores of the test rows of steps 0..t."""
        seen = self.sequence.seen(t)
        frames = []
        for j, step in enumerate(self.sequence.steps[: t + 1]):
            test = step.table[step.table.split == "test"]
            part = test[key_columns(step.kind) + ["label"]].copy()
            part.insert(0, "on_step", j)
            part.insert(0, "task", step.task)
            frames.append(part)
        rows = pd.concat(frames, ignore_index=True)
        every = self.sequence.seen(len(self.sequence.steps) - 1).score_columns()
        parts = []
        for method, values in scores.items():
            named = pd.DataFrame(values, columns=seen.score_columns()).reindex(columns=every)
            part = pd.concat([rows, named], axis=1)
            part.insert(0, "after_step", t)
            part.insert(0, "method", method)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def methods_scores(self, t: int, outputs: dict) -> dict[str, np.ndarray]:
        """The scores of each method a learner gives, from its experts' raw outputs."""
        seen = self.sequence.seen(t)
        scores = {EXPERT_NAMES[e]: scores_of(o, seen) for e, o in outputs.items()}
        if self.run.learner == "lae":
            scores["lae"] = ensemble(scores["online"], scores["offline"], seen)
            return scores
        return {self.run.learner: scores["online"]}

    # --- files of a finished step ----------------------------------------------------------------

    def step_dir(self, t: int) -> Path:
        return self.out_dir / f"step{t}"

    def write_step(self, t: int, model, trainer, predictions: pd.DataFrame, experts) -> None:
        """The step's predictions and, for PET learners, each expert's run folder."""
        with atomic_directory(self.step_dir(t)) as tmp:
            write_table(tmp / "predictions.tsv", predictions)
            if experts:
                write_table(tmp / "table.tsv", self.learned_table(t))
            for name in experts:
                self.write_expert(tmp, t, model, trainer, name)

    def learned_table(self, t: int) -> pd.DataFrame:
        """The rows the model of step t learned from (its run folders' training table)."""
        steps = self.sequence.steps
        if self.run.learner == "independent":
            steps = [steps[t]]
        elif self.run.learner != "joint":
            steps = steps[: t + 1]
        return pd.concat([step.table for step in steps], ignore_index=True)

    def write_expert(self, tmp: Path, t: int, model, trainer, name: str) -> None:
        folder = tmp / EXPERT_NAMES[name]
        network = model.backbone
        with atomic_directory(folder / "adapter") as adapter:
            network.save_pretrained(
                str(adapter), selected_adapters=[name], save_embedding_layers=False
            )
            if name != cm.ONLINE:  # peft puts a named adapter in a subfolder
                for path in (adapter / name).iterdir():
                    path.rename(adapter / path.name)
                (adapter / name).rmdir()
        head = cm.single_head(model)
        with atomic_path(folder / "head.safetensors") as path:
            save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path))
        targets = trainer.targets if self.run.learner == "independent" else self.sequence.seen(t)
        if self.run.learner == "joint":
            targets = self.sequence.joint_targets()
        write_text(folder / "targets.json", targets.to_json())
        run = self.run
        architecture = replace(run.head, hidden=head.layers[1].out_features)
        table_path = self.step_dir(t) / "table.tsv"
        write_manifest(
            folder / "manifest.json",
            named_inputs={table_path: tmp / "table.tsv"},  # where it lies once the step is in place
            method=run.pet.name,
            kind=run.kind,
            training_table=str(table_path),
            seed=run.seed if run.learner == "joint" else step_seed(run.seed, t),
            backbone={"name": run.backbone_name, "weights": run.weights_id},
            head=asdict(architecture),
            device=str(trainer.device),
            precision=precision(trainer.device),
            settings=asdict(run.settings),
            **run.pet.settings_record(),
            continual=self.record(t, EXPERT_NAMES[name]),
        )

    def record(self, t: int | None = None, expert: str | None = None) -> dict:
        sequence = self.sequence
        record = {
            "sequence": sequence.spec.name,
            "mode": sequence.spec.mode,
            "learner": self.run.learner,
            "order": sequence.order,
            "steps": [step.name for step in sequence.steps],
        }
        if t is not None:
            record.update(step=t, expert=expert)
        return record

    # --- resuming --------------------------------------------------------------------------------

    def save_progress(self, t: int, model, extra: dict) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "done": t + 1,
            "model": trained_state(model),
            "head_sizes": head_sizes(model),
            "offline": bool(cm.offline_names(model)),
            "torch_rng": torch.get_rng_state(),
            **extra,
        }
        with atomic_path(self.out_dir / PROGRESS) as tmp:
            torch.save(state, tmp)

    def load_progress(self) -> dict | None:
        path = self.out_dir / PROGRESS
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != self.fingerprint:
            log.info("ignoring %s: it belongs to other inputs or settings", path)
            return None
        log.info("resuming %s after step %d", self.out_dir, state["done"] - 1)
        return state

    def predictions_of(self, steps: int) -> list[pd.DataFrame]:
        """The predictions of the first `steps` steps, read back as they were made (float32
        scores: the job's table is then written as if it had not stopped)."""
        last = self.sequence.seen(len(self.sequence.steps) - 1)
        dtype = dict.fromkeys(last.score_columns(), np.float32)
        dtype.update(dict.fromkeys(["label", *key_columns(self.run.kind)], str))
        return [
            pd.read_csv(self.step_dir(t) / "predictions.tsv", sep="\t", dtype=dtype)
            for t in range(steps)
        ]

    def remove_other_steps(self) -> None:
        """Step folders of an earlier job with more steps."""
        for folder in self.out_dir.glob("step*"):
            if folder.name[4:].isdigit() and int(folder.name[4:]) >= len(self.sequence.steps):
                shutil.rmtree(folder)


def trained_state(model) -> dict:
    """What training changes: the adapters and the heads."""
    return {
        n: p.detach().cpu().clone()
        for n, p in model.named_parameters()
        if ".lora_" in n or n.startswith("head.")
    }


def head_sizes(model) -> list[int]:
    if isinstance(model.head, cm.StepHeads):
        return [h.layers[4].out_features for h in model.head.heads]
    return []


def restore(model, state: dict) -> None:
    """The model of a finished step from its saved progress (heads added, offline expert)."""
    if isinstance(model.head, cm.StepHeads):
        for size in state["head_sizes"][1:]:
            model.head.add(size)
    if state["offline"]:
        cm.add_offline_expert(model)
    model.load_state_dict(state["model"], strict=False)
    torch.set_rng_state(state["torch_rng"])


def learn_in_turn(job: Job) -> list[pd.DataFrame]:
    """lae, sequential, head: one model through every step."""
    run, sequence = job.run, job.sequence
    lae = run.learner == "lae"
    model = run.build(sequence.steps[0].targets.out_dim, run.seed)
    progress, done = job.load_progress(), 0
    if progress is not None:
        restore(model, progress)
        done = progress["done"]
    predictions = job.predictions_of(done)
    for t in range(done, len(sequence.steps)):
        step = sequence.steps[t]
        if t > 0 and isinstance(model.head, cm.StepHeads):
            model.head.add(step.targets.out_dim)
        if lae and t == 1:
            cm.add_offline_expert(model)
        data = [step.split(s) for s in ("train", "valid")]
        trainer = run.train(model, t, *data, step.targets, job.out_dir / ".epoch.pt", lae=lae)
        experts = [cm.ONLINE, cm.OFFLINE] if lae and t > 0 else [cm.ONLINE]
        outputs = run.outputs(model, sequence.steps[: t + 1], experts)
        if lae and t == 0:  # the offline expert starts as the online one after the first step
            outputs[cm.OFFLINE] = outputs[cm.ONLINE]
        predictions.append(job.rows(t, job.methods_scores(t, outputs)))
        saved = [] if run.learner == HEAD else experts
        job.write_step(t, model, trainer, predictions[-1], saved)
        job.save_progress(t, model, {})
    return predictions


def learn_jointly(job: Job) -> list[pd.DataFrame]:
    """joint: one model on the union of every step; scored after step t on the steps seen."""
    run, sequence = job.run, job.sequence
    targets = sequence.joint_targets()
    model = run.build(targets.out_dim, run.seed)
    data = [sequence.union(s, targets) for s in ("train", "valid")]
    trainer = run.train(model, 0, *data, targets, job.out_dir / ".epoch.pt")
    logits = run.outputs(model, sequence.steps)[cm.ONLINE]
    predictions, start = [], 0
    for t in range(len(sequence.steps)):
        end = start + sum(len(step.test_rows()[0]) for step in sequence.steps[: t + 1])
        width = sequence.width(t) if sequence.spec.mode == "class" else logits.shape[1]
        seen = logits[:end, :width]
        scores = scores_of(seen, sequence.seen(t) if sequence.spec.mode == "class" else targets)
        predictions.append(job.rows(t, {"joint": scores}))
        last = t == len(sequence.steps) - 1  # the one model, in the last step's folder
        job.write_step(t, model, trainer, predictions[-1], [cm.ONLINE] if last else [])
    return predictions


def learn_independently(job: Job) -> list[pd.DataFrame]:
    """independent: a fresh model per step, each scoring every step's test rows."""
    run, sequence = job.run, job.sequence
    progress = job.load_progress()
    done = progress["done"] if progress else 0
    logits = list(progress["logits"]) if progress else []
    predictions = job.predictions_of(done)
    for t in range(done, len(sequence.steps)):
        step = sequence.steps[t]
        model = run.build(step.targets.out_dim, step_seed(run.seed, t))
        data = [step.split(s) for s in ("train", "valid")]
        trainer = run.train(model, t, *data, step.targets, job.out_dir / ".epoch.pt")
        logits.append(torch.from_numpy(run.outputs(model, sequence.steps)[cm.ONLINE]))
        scores = independent_scores(sequence, t, [x.numpy() for x in logits])
        predictions.append(job.rows(t, {"independent": scores}))
        job.write_step(t, model, trainer, predictions[-1], [cm.ONLINE])
        job.save_progress(t, model, {"logits": logits})
    return predictions


def independent_scores(sequence: Sequence, t: int, logits: list[np.ndarray]) -> np.ndarray:
    """Class-incremental: each step's own logits side by side; domain: each step's rows by its
    own model."""
    sizes = [len(step.test_rows()[0]) for step in sequence.steps]
    end = sum(sizes[: t + 1])
    seen = sequence.seen(t)
    if sequence.spec.mode == "class":
        return scores_of(np.concatenate([x[:end] for x in logits[: t + 1]], axis=1), seen)
    bounds = np.cumsum([0, *sizes])
    parts = [logits[j][bounds[j] : bounds[j + 1]] for j in range(t + 1)]
    return scores_of(np.concatenate(parts), seen)


LEARN = {
    "lae": learn_in_turn,
    "sequential": learn_in_turn,
    HEAD: learn_in_turn,
    "joint": learn_jointly,
    "independent": learn_independently,
}


def job_fingerprint(run: ContinualRun) -> str:
    record = [run.learner, run.seed, run.sequence.spec.name, run.sequence.order]
    record += [[step.name for step in run.sequence.steps], asdict(run.continual)]
    record += [asdict(run.finetune), asdict(run.head), run.pet.settings_record()]
    record += [asdict(run.model), *map(file_sha256, run.sequence.inputs)]
    return json.dumps(record, sort_keys=True, default=str)


def pet_method(name: str):
    """The PET module's method class: a fixed-rank adapter method of the registry."""
    cls = registry.get(name)
    if not (cls.adapter and cls.fixed_rank):
        suited = registry.names(adapter=True, fixed_rank=True)
        raise InputError(
            f"continual.pet: method {name} is not a fixed-rank adapter method (the offline "
            f"expert averages the online one's factors); use one of {', '.join(suited)}"
        )
    return cls


@dataclass(frozen=True)
class JobSpec:
    """Which job: a sequence, its tasks' settings ({task: TaskSettings}), the learner, the
    order and the seed."""

    spec: SequenceSpec
    tasks: dict
    learner: str
    order: int = 0
    seed: int = 0


@dataclass(frozen=True)
class StepTraining:
    """How every step trains: the PET method and the continual, backbone, fine-tuning and head
    settings."""

    pet: Method
    continual: ContinualSettings = field(default_factory=ContinualSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    head: HeadArchitecture = field(default_factory=HeadArchitecture)


def run_continual(
    inputs: dict, out_dir, job: JobSpec, training: StepTraining, config_snapshot: dict | None = None
) -> pd.DataFrame:
    """Learn one sequence in one order with one learner and seed; write the job folder
    (`inputs`: {task: (table path, sequence table path)})."""
    started = time.time()
    learner, seed, spec = job.learner, job.seed, job.spec
    if learner not in LEARN:
        raise InputError(f"learner {learner!r} is not one of {', '.join(LEARN)}")
    pet = training.pet
    pet_method(pet.name)
    sequence = read_sequence(spec, job.order, inputs, job.tasks)
    settings = (training.continual, training.model, training.finetune, training.head)
    run = ContinualRun(sequence, learner, seed, pet, *settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = Job(run, out_dir, job_fingerprint(run))
    predictions = pd.concat(LEARN[learner](steps), ignore_index=True)
    steps.remove_other_steps()
    write_table(out_dir / "predictions.tsv", predictions)
    write_manifest(
        out_dir / "manifest.json",
        inputs=sequence.inputs,
        config=config_snapshot,
        **steps.record(),
        methods=[m for m, owner in LEARNER_OF.items() if owner == learner],
        seed=seed,
        step_seeds=[step_seed(seed, t) for t in range(len(sequence.steps))],
        step_classes=[step.targets.classes for step in sequence.steps]
        if spec.mode == "class"
        else None,
        targets=json.loads(sequence.seen(len(sequence.steps) - 1).to_json()),
        pet=pet.name,
        backbone={"name": run.backbone_name, "weights": run.weights_id},
        head=asdict(training.head),
        settings=asdict(run.settings),
        continual_settings=asdict(training.continual),
        **pet.settings_record(),
        wall_time_s=round(time.time() - started, 3),
    )
    (out_dir / PROGRESS).unlink(missing_ok=True)
    return predictions

"""Continual-learning sequences (LAE, copra/continual_learning.py): what a sequence is, its steps
in each order, and the checks a config gets before anything trains. Light: no torch.

A class-incremental sequence cuts one single-label classification task's classes into steps
(`classes_per_step`, or explicit `steps`); a domain-incremental one learns tasks of one kind and
one label space in turn (`tasks`). Order 0 is the given order; order k > 0 is the k-th distinct
seeded permutation (of the classes for `classes_per_step`, of the steps otherwise).
"""

import math
from dataclasses import dataclass

import numpy as np

from copra import config
from copra.errors import InputError

CLASSIFICATION = "sequence_classification"
COMPLEX = "complex_regression"
HEAD = "head"  # the continual baseline of a frozen backbone and heads (not the registry's method)
# The methods a config may list, and the training job ("learner") that produces each.
LEARNER_OF = {
    "lae": "lae",
    "online": "lae",
    "offline": "lae",
    "sequential": "sequential",
    "joint": "joint",
    "independent": "independent",
    HEAD: HEAD,
}
ORDER_SEED = 0
MAX_DRAWS = 10_000
STEP_SEED_STRIDE = 1000  # step l trains with seed + 1000 l


def learners(methods: list[str]) -> list[str]:
    """The training jobs the listed methods need, in order (lae, online, offline: one job)."""
    return list(dict.fromkeys(LEARNER_OF[m] for m in methods))


@dataclass(frozen=True)
class SequenceSpec:
    """One entry of `continual.sequences`."""

    name: str
    task: str | None = None
    tasks: tuple[str, ...] | None = None
    classes_per_step: int | None = None
    steps: tuple[tuple[str, ...], ...] | None = None
    methods: tuple[str, ...] | None = None  # None: continual.methods

    @classmethod
    def from_config(cls, name: str, entry: dict) -> "SequenceSpec":
        steps, tasks, methods = entry.get("steps"), entry.get("tasks"), entry.get("methods")
        return cls(
            name,
            entry.get("task"),
            None if tasks is None else tuple(tasks),
            entry.get("classes_per_step"),
            None if steps is None else tuple(tuple(map(str, s)) for s in steps),
            None if methods is None else tuple(methods),
        )

    def methods_of(self, section: dict) -> list[str]:
        """The methods this sequence reports: its own, or those of the `continual:` section."""
        if self.methods is not None:
            return list(self.methods)
        return list(section.get("methods", config.default("continual.methods")))

    @property
    def where(self) -> str:
        return f"continual.sequences.{self.name}"

    @property
    def mode(self) -> str:
        """`class` (incremental classes of one task) or `domain` (tasks in turn)."""
        return "class" if self.task is not None else "domain"

    @property
    def task_names(self) -> list[str]:
        return [self.task] if self.task is not None else list(self.tasks)

    def order_count(self, orders: int) -> int:
        """How many orders run: `orders`, at most the distinct permutations of the steps (the
        classes of `classes_per_step` are only known from the data: checked there)."""
        if self.classes_per_step is not None:
            return orders
        return min(orders, math.factorial(len(self.steps or self.tasks)))


def check_sequence(spec: SequenceSpec, tasks: dict) -> None:
    """Refuse a sequence whose definition cannot work, naming its key and the fix."""
    where = spec.where
    if (spec.task is None) == (spec.tasks is None):
        raise InputError(
            f"{where}: give either `task` (class-incremental) or `tasks` (domain-incremental)"
        )
    for name in spec.task_names:
        if name not in tasks:
            raise InputError(f"{where}: task {name!r} is not one of tasks: {', '.join(tasks)}")
    if spec.mode == "class":
        check_class_sequence(spec, tasks[spec.task])
    else:
        check_domain_sequence(spec, tasks)


def check_class_sequence(spec: SequenceSpec, entry: dict) -> None:
    where = spec.where
    if entry["kind"] != CLASSIFICATION or entry.get("multilabel"):
        raise InputError(
            f"{where}: class-incremental steps need a single-label {CLASSIFICATION} task; "
            f"task {spec.task} is {describe(entry)} (use `tasks:` for a domain-incremental "
            "sequence)"
        )
    if (spec.classes_per_step is None) == (spec.steps is None):
        raise InputError(f"{where}: give either `classes_per_step` or `steps` (not both)")
    if spec.classes_per_step is not None and spec.classes_per_step < 2:
        raise InputError(single_class_step(where, "classes_per_step is 1"))
    for i, step in enumerate(spec.steps or ()):
        if len(set(step)) < 2:
            raise InputError(single_class_step(where, f"step {i + 1} has only {list(step)}"))
    listed = [c for step in spec.steps or () for c in step]
    twice = sorted({c for c in listed if listed.count(c) > 1})
    if twice:
        raise InputError(f"{where}.steps: classes {twice} are in more than one step")


def single_class_step(where: str, what: str) -> str:
    return (
        f"{where}: {what}: a step needs at least 2 new classes (its loss is over the new classes "
        "only, so a single class learns nothing); put it in a step with another class"
    )


def check_domain_sequence(spec: SequenceSpec, tasks: dict) -> None:
    where = spec.where
    if spec.classes_per_step is not None or spec.steps is not None:
        raise InputError(f"{where}: classes_per_step and steps are for `task:` sequences")
    if len(set(spec.tasks)) < len(spec.tasks):
        raise InputError(f"{where}.tasks names a task twice: {list(spec.tasks)}")
    first = spec.tasks[0]
    for name in spec.tasks:
        entry, reference = tasks[name], tasks[first]
        if entry["kind"] == COMPLEX:
            raise InputError(f"{where}: task {name} is {COMPLEX}; sequences take sequence tasks")
        described = [(t["kind"], bool(t.get("multilabel"))) for t in (reference, entry)]
        if described[0] != described[1]:
            raise InputError(
                f"{where}: tasks {first} ({describe(reference)}) and {name} ({describe(entry)}) "
                "differ in kind: the tasks of a domain-incremental sequence share one kind and "
                "label space"
            )


def describe(entry: dict) -> str:
    return entry["kind"] + (" multilabel" if entry.get("multilabel") else "")


def check_continual(tree: dict) -> None:
    """Every sequence of a config, and LAE's epochs (before the DAG is built)."""
    section = tree.get("continual") or {}
    specs = [SequenceSpec.from_config(n, e) for n, e in (section.get("sequences") or {}).items()]
    for spec in specs:
        check_sequence(spec, tree["tasks"])
    epochs = section.get("epochs", config.default("continual.epochs"))
    frozen = section.get("frozen_epochs", config.default("continual.frozen_epochs"))
    if any("lae" in learners(spec.methods_of(section)) for spec in specs) and frozen >= epochs:
        raise InputError(
            f"continual.frozen_epochs ({frozen}) must be below continual.epochs ({epochs}): "
            "LAE trains the online PET in the epochs after the frozen ones"
        )


# --- steps of one order --------------------------------------------------------------------------


def permutations(items: list, count: int) -> list[list]:
    """`items`, then seeded distinct permutations of them: `count` orders in all (fewer when
    there are fewer distinct ones)."""
    count = min(count, math.factorial(len(items)))
    rng = np.random.default_rng(ORDER_SEED)
    found, seen = [list(items)], {tuple(items)}
    for _ in range(MAX_DRAWS):
        if len(found) >= count:
            break
        candidate = [items[i] for i in rng.permutation(len(items))]
        if tuple(candidate) not in seen:
            seen.add(tuple(candidate))
            found.append(candidate)
    return found


def nth_order(spec: SequenceSpec, items: list, order: int) -> list:
    orders = permutations(items, order + 1)
    if order >= len(orders):
        raise InputError(
            f"{spec.where}: order {order} does not exist: its {len(items)} "
            f"{'classes' if spec.classes_per_step else 'steps'} have only {len(orders)} distinct "
            f"orders; set continual.orders to at most {len(orders)}"
        )
    return orders[order]


def class_steps(spec: SequenceSpec, classes: list[str], order: int) -> list[tuple[str, ...]]:
    """The classes of each step in order `order` (`classes`: the task's training classes)."""
    where = spec.where
    if spec.steps is not None:
        listed = {c for step in spec.steps for c in step}
        unknown, missing = sorted(listed - set(classes)), sorted(set(classes) - listed)
        if unknown:
            raise InputError(
                f"{where}.steps: classes {unknown} are not classes of task {spec.task}'s "
                f"training rows ({', '.join(classes)})"
            )
        if missing:
            raise InputError(
                f"{where}.steps: classes {missing} of task {spec.task} are in no step; add them "
                "to a step (their rows would be left out)"
            )
        return [tuple(step) for step in nth_order(spec, list(spec.steps), order)]
    size = spec.classes_per_step
    ordered = nth_order(spec, sorted(classes), order)
    steps = [tuple(ordered[i : i + size]) for i in range(0, len(ordered), size)]
    if len(steps[-1]) < 2:
        raise InputError(
            single_class_step(
                where,
                f"task {spec.task}'s {len(classes)} classes in steps of {size} leave "
                f"class {steps[-1][0]!r} alone in the last step",
            ).replace("put it in a step with another class", "choose another classes_per_step")
        )
    return steps


def domain_steps(spec: SequenceSpec, order: int) -> list[str]:
    """The tasks of each step in order `order`."""
    return nth_order(spec, list(spec.tasks), order)


def step_seed(seed: int, step: int) -> int:
    return seed + STEP_SEED_STRIDE * step

"""The `design:` section: each design problem's settings, checked against the config's tasks
before any job runs, and the folders of its jobs. Light to import (the workflow reads it)."""

from copra.errors import InputError
from copra.settings import DesignSettings, from_section

REGRESSION = "sequence_regression"


def problems(tree: dict) -> dict[str, DesignSettings]:
    """{name: settings} of every design problem that has methods (methods: [] is off)."""
    entries = {
        name: from_section(DesignSettings, e) for name, e in (tree.get("design") or {}).items()
    }
    return {name: settings for name, settings in entries.items() if settings.methods}


def check_design(tree: dict) -> None:
    """Each problem names a sequence_regression task of the config, and random's match."""
    tasks = tree.get("tasks") or {}
    for name, settings in problems(tree).items():
        where = f"design.{name}"
        if settings.task not in tasks:
            raise InputError(
                f"{where}.task: {settings.task!r} is not a task of this config "
                f"({', '.join(sorted(tasks))})"
            )
        kind = tasks[settings.task].get("kind")
        if kind != REGRESSION:
            raise InputError(
                f"{where}.task: {settings.task} is a {kind} task; design needs measured fitness "
                f"values: name a {REGRESSION} task"
            )
        check_random_match(settings.methods, settings.random_matches, where)


def check_random_match(methods: list[str], matches: str, where: str) -> None:
    """random copies another method's distances: that method must run too."""
    if "random" in methods and matches not in methods:
        raise InputError(
            f"{where}.methods: random mutates at the Hamming distances of {matches}'s designs "
            f"(random_matches), which is not among the methods; add it, or set "
            f"{where}.random_matches to one of them"
        )


def design_folders(tree: dict) -> list[str]:
    """results/design/<name>/<method>/seed<k> of every problem, method and seed."""
    return [
        f"results/design/{name}/{method}/seed{seed}"
        for name, settings in problems(tree).items()
        for seed in settings.seeds
        for method in settings.methods
    ]

"""The registry of training methods, and what each analysis of a trained run needs of a method."""

from copra.errors import InputError

_METHODS: dict[str, type] = {}

# The properties an analysis needs of a run's method (`Method` class attributes).
ANALYSES = {
    "lmc": ("adapter",),  # the factor path: fixed-rank methods only (copra/lmc.py)
    "merging": ("adapter",),  # combinations that need equal ranks refuse others (merging.py)
    "federated": ("adapter", "fixed_rank"),
    "shapley": ("adapter",),
    "pruning": ("adapter",),
}
PURPOSES = {
    "lmc": "linear mode connectivity",
    "merging": "merging",
    "federated": "federated training",
    "shapley": "Shapley values",
    "pruning": "pruning",
}
EXPLAINED = {"adapter": "a peft adapter", "fixed_rank": "one fixed rank for every module"}


def register(cls):
    """Class decorator: make a `Method` subclass known by its `name`."""
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is registered already")
    _METHODS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a method (tests that register their own)."""
    _METHODS.pop(name, None)


def get(name: str):
    """The method class registered as `name`."""
    if name not in _METHODS:
        raise InputError(f"method {name!r} is not one of {', '.join(_METHODS)}")
    return _METHODS[name]


def names(**properties) -> list[str]:
    """Registered names, in order, of the methods with the given properties (all by default)."""
    return [
        name
        for name, cls in _METHODS.items()
        if all(getattr(cls, key) == value for key, value in properties.items())
    ]


def suited(analysis: str) -> list[str]:
    """The methods whose runs `analysis` accepts."""
    return names(**dict.fromkeys(ANALYSES[analysis], True))


def require(name: str, analysis: str, path=None):
    """The class of method `name`, refused unless it has what `analysis` needs."""
    cls = get(name)
    missing = [EXPLAINED[key] for key in ANALYSES[analysis] if not getattr(cls, key)]
    if missing:
        raise InputError(
            f"{PURPOSES[analysis]} needs {' and '.join(missing)}; method {name} has none "
            f"(methods that do: {', '.join(suited(analysis))})",
            path=path,
        )
    return cls


def sections(*chosen: str) -> dict[str, type]:
    """The config sections the `chosen` methods (default: all) read, with their settings classes."""
    found = {}
    for name in chosen or _METHODS:
        found.update(get(name).sections)
    return found


def run_files(name: str, complex_task: bool = False) -> list[str]:
    """The files of a run folder of method `name` that make its trained model (a complex
    task's run: every fold's weights)."""
    if complex_task:
        return ["manifest.json", "targets.json", "folds.safetensors"]
    return ["manifest.json", "targets.json", "head.safetensors", *get(name).weight_files]

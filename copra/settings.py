"""Every step's settings as a frozen dataclass over the config schema, and how they are filled.

A field `f` of a class decorated `@settings("section")` is the config key `section.f`; its default
is the schema's. A command builds its settings from the config the rule passes (one hop:
`from_config`), and a command-line flag that is given overrides the config value (`add_flags`,
`given`). Training methods keep their own settings in `copra/methods/`. Light to import.
"""

import argparse
import copy
import dataclasses
import functools
import inspect
import json
import types
import typing
from pathlib import Path

from copra import config
from copra.errors import InputError


def settings(section: str, **keys: str):
    """Class decorator: a frozen dataclass whose fields are keys of `section` (or the dotted keys
    given in `keys`), each defaulting to the schema's default (None for a required key)."""

    def decorate(cls):
        dotted = {}
        for name in inspect.get_annotations(cls):
            dotted[name] = keys.get(name, f"{section}.{name}")
            if name not in cls.__dict__:
                default = config.schema_node(dotted[name]).get("default")
                if isinstance(default, list | dict):
                    default = dataclasses.field(
                        default_factory=functools.partial(copy.deepcopy, default)
                    )
                setattr(cls, name, default)
        cls = dataclasses.dataclass(frozen=True)(cls)
        cls.config_keys = dotted
        return cls

    return decorate


def _lookup(tree: dict, dotted: str) -> tuple[bool, object]:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def _coerce(value, annotation):
    """Integers where the field is a float (YAML writes 32 for 32.0), also inside lists."""
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(annotation) is list and isinstance(value, list):
        (item,) = typing.get_args(annotation)
        return [_coerce(v, item) for v in value]
    return value


def from_section(cls, values: dict | None = None, **given):
    """`cls` from one section's values (by field name), then the `given` values that are set."""
    values = values or {}
    annotations = inspect.get_annotations(cls)
    chosen = {name: values[name] for name in cls.config_keys if name in values}
    chosen.update({name: value for name, value in given.items() if value is not None})
    return cls(**{name: _coerce(value, annotations[name]) for name, value in chosen.items()})


def from_config(cls, tree: dict | None = None, **given):
    """`cls` with the values a config (whole, or the sections a rule passes) holds for its keys,
    then the `given` values that are set (None: not given, e.g. a flag left out)."""
    values = {}
    for name, dotted in cls.config_keys.items():
        found, value = _lookup(tree or {}, dotted)
        if found:
            values[name] = value
    return from_section(cls, values, **given)


def read_config(text: str | None) -> dict:
    """The config a command runs with: inline JSON (what the rules pass) or a YAML/JSON file.

    A file is checked against the schema section by section; a misspelled key is named either way.
    """
    if not text:
        return {}
    if not text.lstrip().startswith("{"):
        return config.read_config_file(text)
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"--config-json is not valid JSON: {error}") from None
    config.check_keys(tree)
    return tree


# --- command-line flags over the settings ---------------------------------------------------------


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def _scalar(annotation):
    """The non-None member of an optional annotation (`int | None` -> int)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def add_flags(parser, cls, prefix: str = "", skip=()) -> None:
    """`--<prefix>field-name` for every field of `cls` (but `skip`), unset unless given."""
    annotations = inspect.get_annotations(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = _scalar(annotations[field.name])
        flag = "--" + (prefix + field.name).replace("_", "-")
        default = field.default_factory() if callable(field.default_factory) else field.default
        options = {"default": None, "help": f"{cls.config_keys[field.name]} (default: {default})"}
        if typing.get_origin(kind) is list:
            options.update(nargs="+", type=typing.get_args(kind)[0])
        elif kind is bool:  # `--flag`, or `--flag true|false`
            options.update(nargs="?", const=True, type=boolean, metavar="{true,false}")
        elif kind in (int, float, str):
            options.update(type=kind)
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no flag for {kind}; pass it in `skip`")
        parser.add_argument(flag, dest=prefix + field.name, **options)


def given(args: argparse.Namespace, cls, prefix: str = "") -> dict:
    """The fields of `cls` whose flags were given."""
    names = (field.name for field in dataclasses.fields(cls))
    return {name: getattr(args, prefix + name) for name in names if hasattr(args, prefix + name)}


# --- the settings of each step ------------------------------------------------------------------


@settings("model", weights_dir="weights_dir")
class ModelSettings:
    """The ESM-2 backbone: architecture, weights, the seed of random weights, where weights are."""

    name: str
    weights: str
    seed: int
    download_url: str
    weights_dir: str

    def load(self):
        """The backbone (`name` may be a fair-esm .pt file: its stem names the architecture)."""
        from copra.backbone import load_backbone

        name, weights = self.name, self.weights
        if name.endswith(".pt"):
            name, weights = Path(name).stem, name
        return load_backbone(
            name,
            weights,
            seed=self.seed,
            weights_dir=self.weights_dir,
            download_url=self.download_url,
        )


@settings("tasks.<name>")
class TaskSettings:
    """One `tasks:` entry: what the task is and where its files are."""

    kind: str
    labels: str
    sequences: str
    structures: str
    mutations: str
    columns: dict
    header: bool
    multilabel: bool
    label_separator: str


@settings("ingest")
class IngestSettings:
    split_fractions: dict
    split_seed: int


@settings("embedding")
class EmbeddingSettings:
    """How vectors are made (the cache key, but for batch_tokens, device, cache_dir and shards)."""

    layer: int
    pooling: str
    long_sequences: str
    max_residues: int
    window_stride: int
    batch_tokens: int
    device: str
    cache_dir: str | None
    shards: int


@settings("head")
class HeadArchitecture:
    """The task head every fine-tuned model ends in (the head baseline's too)."""

    hidden: int
    dropout: float
    pair_combination: str


@settings("finetune")
class FinetuneSettings:
    learning_rate: float
    full_learning_rate: float
    weight_decay: float
    batch_size: int
    gradient_accumulation: int
    max_grad_norm: float
    warmup_fraction: float
    max_epochs: int
    patience: int
    max_residues: int
    eval_batch_size: int
    device: str
    activation_checkpointing: bool


@settings("complex")
class ComplexSettings:
    """Structure ingest and its folds."""

    cutoff: float
    patch_residues: int
    on_error: str
    folds: int
    fold_seed: int


@settings("complex")
class ComplexTrainingSettings:
    """Cross-validated training of the affinity model."""

    folds: int
    rna_encoder: str
    learning_rate: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    max_residues: int
    device: str


@settings("complex")
class CoFormerSettings:
    """The Co-Former affinity model's architecture."""

    embed_dim: int
    blocks: int
    heads: int
    pair_dim: int
    distance_bins: int
    max_distance: float
    pool_tokens: int
    dropout: float


@settings("lmc")
class LmcSettings:
    alphas: int


# peft's add_weighted_adapter combinations that need every source of one rank per module
SAME_RANK_COMBINATIONS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")


@settings("merging")
class MergeSettings:
    schemes: list[str]
    combinations: list[str]
    multitask_weight: float
    density: float
    majority_sign_method: str
    svd_rank: int | None
    seed: int


def rank_free(merging: dict) -> dict:
    """A `merging:` section for adaptive-rank adapters: without the combinations that need
    equal ranks (every module of theirs has the rank its budget gave it)."""
    chosen = merging.get("combinations", config.default("merging.combinations"))
    return {**merging, "combinations": [c for c in chosen if c not in SAME_RANK_COMBINATIONS]}


@settings("federated")
class FederatedSettings:
    aggregations: list[str]
    clients: int
    rounds: int
    local_epochs: int
    dirichlet_alpha: float
    seed: int


@settings("shapley")
class ShapleySettings:
    players: str
    max_exact_players: int
    tolerance: float
    min_permutations: int
    max_permutations: int
    seed: int


@settings("pruning")
class PruningSettings:
    schemes: list[str]
    sparsities: list[float]
    seed: int


@settings("evaluation", bootstrap_seed="evaluation.seed")
class EvaluationSettings:
    bootstrap: int
    bootstrap_seed: int


@settings("predict")
class PredictSettings:
    """How trained runs score new inputs (a job of `predict:` may set each for itself)."""

    top: int
    min_score: float | None
    all_scores: bool
    block_pairs: int
    histogram_bins: int


@settings("demo")
class DemoSettings:
    sequences: int
    adapter_sequences: int
    complexes: int
    seed: int


@settings("continual")
class ContinualSettings:
    """How each step of a continual sequence trains (LAE and its baselines)."""

    pet: str
    epochs: int
    frozen_epochs: int
    offline_move: float
    ema_decay: float | None

    def decay(self, steps: int) -> float:
        """The EMA decay of a step of `steps` optimizer steps: `ema_decay`, or the one that moves
        the offline PET `offline_move` of the way per step (1 - d^steps = offline_move)."""
        if self.ema_decay is not None:
            return self.ema_decay
        return (1.0 - self.offline_move) ** (1.0 / max(steps, 1))


@settings("design.<name>")
class DesignSettings:
    """One `design:` entry: the task whose variants are the data, what is designed and how."""

    task: str
    positions: list[int] | str
    offline_quantile: float
    max_offline: int | None
    starts: int
    methods: list[str]
    steps: int
    learning_rate: float
    eta: float
    random_matches: str
    reference: str | None
    seeds: list[int]

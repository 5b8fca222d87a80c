"""The config schema as the one source of truth for defaults, and a key check with suggestions.

`workflow/schemas/config.schema.yaml` ships inside the package as `config.schema.yaml`, so the
CLI's defaults and the pipeline's are read from the same file.
"""

import difflib
import functools
from pathlib import Path

import yaml

from copra.errors import InputError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# The `head:` settings that fine-tuned models share with the head baseline (the rest is training).
HEAD_ARCHITECTURE = ("hidden", "dropout", "pair_combination")
# The `complex:` settings that only structure ingest reads (the rest is the model and training).
COMPLEX_INGEST_ONLY = ("cutoff", "patch_residues", "on_error", "fold_seed")


@functools.cache
def schema() -> dict:
    """The parsed config schema."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def default(dotted: str):
    """The schema default of a dotted key such as `embedding.batch_tokens`."""
    node = schema()
    for part in dotted.split("."):
        node = node["properties"][part]
    if "default" not in node:
        raise KeyError(f"the config schema has no default for {dotted}")
    return node["default"]


def check_keys(config: dict, node: dict | None = None, prefix: str = "") -> None:
    """Raise an InputError naming the first unknown key, with the closest known spelling."""
    node = schema() if node is None else node
    if not isinstance(config, dict) or node.get("type") != "object":
        return
    known = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, value in config.items():
        where = f"{prefix}{key}"
        if key in known:
            check_keys(value, known[key], where + ".")
        elif isinstance(extra, dict):
            check_keys(value, extra, where + ".")
        elif extra is False:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise InputError(
                f"config key '{where}' is not known{hint} Known keys here: {', '.join(known)}."
            )

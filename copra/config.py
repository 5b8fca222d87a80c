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


@functools.cache
def schema() -> dict:
    """The parsed config schema."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster start-up
    return yaml.load(SCHEMA_PATH.read_text(), Loader=loader)


def schema_node(dotted: str) -> dict:
    """The schema of a dotted key such as `embedding.batch_tokens` (`<name>`: any task's name)."""
    node = schema()
    for part in dotted.split("."):
        node = node["additionalProperties"] if part == "<name>" else node["properties"][part]
    return node


def default(dotted: str):
    """The schema default of a dotted key such as `embedding.batch_tokens`."""
    node = schema_node(dotted)
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


def validate_sections(tree: dict, path) -> None:
    """Check each section of a (partial) config against its part of the schema."""
    import jsonschema

    for key, value in tree.items():
        node = schema()["properties"].get(key)
        if node is None:
            continue  # check_keys names it
        try:
            jsonschema.validate(value, node)
        except jsonschema.ValidationError as error:
            where = ".".join([key, *map(str, error.absolute_path)])
            raise InputError(f"config key '{where}': {error.message}", path=path) from None

"""The config schema as the one source of truth for defaults, and a key check with suggestions.

`workflow/schemas/config.schema.yaml` ships inside the package as `config.schema.yaml`, so the
CLI's defaults and the pipeline's are read from the same file.
"""

import difflib
import functools
import sys
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


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """YAML as Snakemake reads it, but a key given twice in one mapping is an error (YAML
    loaders keep the last one silently)."""


def _unique_mapping(loader, node, deep=False):
    lines = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in lines:
            raise InputError(
                f"key '{key}' is given twice (lines {lines[key]} and {line}); YAML would keep "
                "the second silently: keep one",
                path=key_node.start_mark.name,
                line=line,
            )
        lines[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config_file(path) -> dict:
    """A YAML (or JSON) config file, refused with its line for a syntax error or a key given
    twice."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path=path)
    try:
        with path.open(encoding="utf-8") as stream:
            tree = yaml.load(stream, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        column = f", column {mark.column + 1}" if mark else ""
        problem = " ".join(filter(None, [error.context, error.problem]))
        raise InputError(f"not valid YAML{column}: {problem}", path=path, line=line) from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(f"not valid YAML: {error}", path=path) from None
    if not isinstance(tree, dict):
        raise InputError("a config is a mapping of sections (key: value)", path=path)
    return tree


def check_config_files(paths) -> None:
    """`load_config_file` on each of `paths`: the pipeline's check of its config files."""
    for path in paths:
        load_config_file(path)


def read_config_file(path) -> dict:
    """A config file checked: its YAML, its keys (none twice, none misspelled) and its values
    against the schema, section by section; each problem named with the file (and line)."""
    tree = load_config_file(path)
    try:
        check_keys(tree)
    except InputError as error:
        raise InputError(str(error), path=path) from None
    validate_sections(tree, path)
    return tree


def check_config(paths) -> None:
    """`copra check-config`: `read_config_file` of each file."""
    for path in paths:
        tree = read_config_file(path)
        print(f"{path}: a valid copra config ({', '.join(tree)})")


def exit_on_input_error(check, *args):
    """`check(*args)`; bad input ends the program with its one message and status 2 (how the
    workflow refuses a config: Snakemake would print a traceback for an exception)."""
    try:
        return check(*args)
    except InputError as error:
        print(f"copra: error: {error}", file=sys.stderr)
        sys.exit(2)


def check_analysis_methods(tree: dict, path=None) -> None:
    """Refuse a registered method an analysis cannot take, saying why (before the schema's
    enum would only list the allowed names)."""
    from copra import methods

    for section in methods.ANALYSES:
        chosen = tree.get(section) if isinstance(tree.get(section), dict) else {}
        for name in chosen.get("methods") or []:
            if name in methods.names():
                try:
                    methods.require(name, section)
                except InputError as error:
                    raise InputError(
                        f"config key '{section}.methods': {error}", path=path
                    ) from None


def check_task_finetune(tree: dict) -> None:
    """Each task's own `finetune:` values: known keys, and valid over the top-level section."""
    import jsonschema

    node = schema_node("finetune")
    for name, entry in (tree.get("tasks") or {}).items():
        own = entry.get("finetune") if isinstance(entry, dict) else None
        if not own:
            continue
        where = f"tasks.{name}.finetune"
        check_keys(own, node, where + ".")
        try:
            jsonschema.validate({**(tree.get("finetune") or {}), **own}, node)
        except jsonschema.ValidationError as error:
            key = ".".join([where, *map(str, error.absolute_path)])
            raise InputError(f"config key '{key}': {error.message}") from None


def validate_sections(tree: dict, path) -> None:
    """Check each section of a (partial) config against its part of the schema."""
    import jsonschema

    check_analysis_methods(tree, path)
    for key, value in tree.items():
        node = schema()["properties"].get(key)
        if node is None:
            continue  # check_keys names it
        try:
            jsonschema.validate(value, node)
        except jsonschema.ValidationError as error:
            where = ".".join([key, *map(str, error.absolute_path)])
            raise InputError(f"config key '{where}': {error.message}", path=path) from None
    if "tasks" in tree:
        from copra.continual import check_continual
        from copra.design_problems import check_design

        for section, check in (
            ("tasks", check_task_finetune),
            ("continual", check_continual),
            ("design", check_design),
        ):
            if section not in tree:
                continue
            try:
                check(tree)
            except InputError as error:
                raise InputError(str(error), path=path) from None

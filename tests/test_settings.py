"""Settings in one hop: the schema's defaults, a config's values over them, flags over both; a
config file checked against the schema; every schema key read by some step."""

import dataclasses
import inspect

import pytest
import yaml

from copra import config, methods
from copra import settings as s
from copra.cli import _settings, build_parser
from copra.errors import InputError

STEP_SETTINGS = [
    cls
    for cls in vars(s).values()
    if inspect.isclass(cls) and hasattr(cls, "config_keys") and cls.__module__ == s.__name__
]
ALL_SETTINGS = STEP_SETTINGS + list(methods.sections().values())
# Keys Snakemake reads to decide what runs (which methods, tasks and seeds, how many threads),
# and the GPU settings the workflow exports to its jobs (copra/job_environment.py).
SNAKEMAKE_ONLY = {"methods", "seeds", "threads", "tasks", "gpu.cpu_fallback", "gpu.lock_dir"}
# which continual jobs run (a job reads its own sequence's entry from the config it is passed)
SNAKEMAKE_ONLY |= {f"continual.{key}" for key in ("sequences", "methods", "orders", "seeds")}
SNAKEMAKE_ONLY |= {"predict.methods", "predict.seeds"} | {
    f"{section}.{key}"
    for section in methods.ANALYSES
    for key in ("methods", "tasks", "seeds", "partitions", "multitask")
}


def test_every_default_is_the_schema_default():
    for cls in ALL_SETTINGS:
        defaults = cls()
        for name, dotted in cls.config_keys.items():
            node = config.schema_node(dotted)
            assert getattr(defaults, name) == node.get("default"), f"{cls.__name__}.{name}"


def test_every_schema_key_is_read_by_a_step():
    read = {key for cls in ALL_SETTINGS for key in cls.config_keys.values()}
    by_name = {key.rsplit(".", 1)[0] for key in read if ".<name>." in key} - {"tasks.<name>"}
    read = {key.removeprefix("tasks.<name>.") for key in read} | {"weights_dir"}
    unread = []
    for section, node in config.schema()["properties"].items():
        keys = node.get("properties", {})
        unread += [f"{section}.{key}" for key in keys if f"{section}.{key}" not in read]
        entries = (node.get("additionalProperties") or {}).get("properties", {})
        if f"{section}.<name>" in by_name:  # entries by name (design): every key of one is read
            unread += [
                f"{section}.<name>.{k}" for k in entries if f"{section}.<name>.{k}" not in read
            ]
        if not keys and not entries and section not in read:
            unread.append(section)
    assert sorted(set(unread) - SNAKEMAKE_ONLY) == []
    entry = config.schema_node("tasks.<name>")["properties"]
    # methods and finetune are the Snakefile's: what the task trains, and its own values of the
    # finetune section (workflow/rules/common.smk: config_tree)
    assert set(s.TaskSettings.config_keys) == set(entry) - {"methods", "finetune"}


def test_a_config_value_overrides_the_default_and_a_flag_overrides_both():
    tree = {"finetune": {"batch_size": 16, "learning_rate": 0.01}, "model": {"seed": 3}}
    settings = s.from_config(s.FinetuneSettings, tree, batch_size=2, patience=None)
    assert (settings.batch_size, settings.learning_rate) == (2, 0.01)
    assert settings.patience == config.default("finetune.patience")
    model = s.from_config(s.ModelSettings, {**tree, "weights_dir": "/shared/weights"})
    assert (model.seed, model.weights_dir) == (3, "/shared/weights")
    assert (
        s.from_config(s.FinetuneSettings, {"finetune": {"max_grad_norm": 1}}).max_grad_norm == 1.0
    )


def test_the_command_line_reads_the_config_then_its_flags(tmp_path):
    common = ["--predictions", "p", "--targets", "t", "--task", "x", "--method", "head"]
    common += ["--seed", "0", "--output", "o"]
    args = build_parser().parse_args(["evaluate", *common, "--bootstrap-seed", "7"])
    args.config = s.read_config('{"evaluation": {"bootstrap": 5, "seed": 2}}')
    assert _settings(args, s.EvaluationSettings) == s.EvaluationSettings(5, 7)
    run = ["--table", "t", "--sequences", "s", "--seed", "0", "--output-dir", "o"]
    flags = ["--lora-rank", "2", "--activation-checkpointing"]
    args = build_parser().parse_args(["finetune", "--method", "copra", *run, *flags])
    args.config = {"lora": {"rank": 4, "alpha": 8}}
    assert _settings(args, s.FinetuneSettings).activation_checkpointing is True
    from copra.cli import _method

    method = _method(args)
    assert (method.lora.rank, method.lora.alpha) == (2, 8.0)


def test_a_config_file_is_checked_against_the_schema(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"lora": {"rank": 4}, "finetune": {"batch_size": 2}}))
    assert s.read_config(str(path))["lora"] == {"rank": 4}
    path.write_text(yaml.safe_dump({"lora": {"rank": "four"}}))
    with pytest.raises(InputError, match=r"my.yaml: config key 'lora.rank': 'four' is not of"):
        s.read_config(str(path))
    path.write_text(yaml.safe_dump({"lora": {"rnak": 4}}))
    with pytest.raises(InputError, match="did you mean 'lora.rank'"):
        s.read_config(str(path))
    with pytest.raises(InputError, match="config file not found"):
        s.read_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(InputError, match="--config-json is not valid JSON"):
        s.read_config("{lora: 4")


def test_settings_are_frozen_and_hold_no_shared_lists():
    first, second = s.PruningSettings(), s.PruningSettings()
    assert first.schemes == second.schemes and first.schemes is not second.schemes
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.seed = 1

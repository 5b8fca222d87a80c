# Config validation, the tasks of this run, and every input function of the rules.
import copy
import json
import os
import re
import shlex
import sys

from snakemake.common.configfile import load_configfile
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from copra.config import check_keys  # noqa: E402
from copra.demo_data import FILES as DEMO_FILES  # noqa: E402
from copra.job_environment import put_copra_on_path  # noqa: E402


def tasks_of_this_run():
    """The last --configfile that defines tasks replaces config.yaml's demo tasks.

    Snakemake merges config files recursively, which would otherwise run the demo beside them;
    tasks given with --config are added on top.
    """
    settings = workflow.config_settings
    defined = [load_configfile(path) for path in settings.configfiles]
    defined = [loaded["tasks"] for loaded in defined if "tasks" in loaded]
    if defined:
        config["tasks"] = copy.deepcopy(defined[-1])
        config["tasks"].update(copy.deepcopy(dict(settings.config).get("tasks", {})))


tasks_of_this_run()
check_keys(config)
validate(config, schema="../schemas/config.schema.yaml", set_default=True)

TASKS = sorted(config["tasks"])
PAIR_KIND = "pair_classification"

put_copra_on_path(workflow.basedir)
DEMO_DIR = "resources/demo"


wildcard_constraints:
    task="|".join(map(re.escape, TASKS)),
    method="[a-z]+",
    seed=r"\d+",


def task(wildcards):
    return config["tasks"][wildcards.task]


def quoted(*words):
    return " ".join(shlex.quote(str(w)) for w in words)


def ingest_inputs(wildcards):
    entry = task(wildcards)
    inputs = {"labels": entry["labels"]}
    if "sequences" in entry:
        inputs["sequences"] = entry["sequences"]
    return inputs


def ingest_args(wildcards):
    entry = task(wildcards)
    words = ["--kind", entry["kind"], "--labels", entry["labels"]]
    if "sequences" in entry:
        words += ["--sequences", entry["sequences"]]
    for canonical, own in entry.get("columns", {}).items():
        words += ["--column", f"{canonical}={own}"]
    if not entry["header"]:
        words.append("--no-header")
    if entry["multilabel"]:
        words.append("--multilabel")
    fractions = config["ingest"]["split_fractions"]
    words += ["--label-separator", entry["label_separator"]]
    words += [
        "--split-fractions",
        f"{fractions['train']},{fractions['valid']},{fractions['test']}",
    ]
    words += ["--split-seed", config["ingest"]["split_seed"]]
    return quoted(*words)


def weights_input(wildcards):
    """The checkpoint a job reads: fetched on the login node for `pretrained`, none for random."""
    weights = config["model"]["weights"]
    if weights == "random":
        return []
    if weights == "pretrained":
        return f"{config['weights_dir']}/hub/checkpoints/{config['model']['name']}.pt"
    return weights


def model_args(seed_flag="--seed"):
    model = config["model"]
    words = [
        "--model",
        model["name"],
        "--weights",
        model["weights"],
        seed_flag,
        model["seed"],
    ]
    words += [
        "--weights-dir",
        config["weights_dir"],
        "--download-url",
        model["download_url"],
    ]
    return quoted(*words)


def settings_args(section, prefix=""):
    """`--<prefix>key value` for every setting of a config section (schema defaults filled in)."""
    words = []
    for key, value in config[section].items():
        if value is None:
            continue
        words.append(f"--{prefix}{key.replace('_', '-')}")
        words += value if isinstance(value, list) else [value]
    return quoted(*words)


def embed_args(wildcards):
    return f"{model_args()} {settings_args('embedding')}"


def run_config(wildcards):
    """The part of the config that a run of one task depends on, recorded in its manifest."""
    method = getattr(wildcards, "method", "head")
    sections = ["model", "head"]
    sections += (
        ["embedding"] if method == "head" else ["finetune", "lora", "layer_drop"]
    )
    snapshot = {section: config[section] for section in sections}
    snapshot.update(
        task={wildcards.task: task(wildcards)}, method=method, seed=int(wildcards.seed)
    )
    return json.dumps(snapshot, sort_keys=True)


def finetune_args(wildcards):
    words = [model_args(seed_flag="--model-seed"), settings_args("finetune")]
    words += [
        settings_args("lora", "lora-"),
        settings_args("layer_drop", "layer-drop-"),
    ]
    return " ".join(words + [settings_args("head", "head-")])


def task_args(wildcards):
    entry = task(wildcards)
    words = ["--kind", entry["kind"], "--label-separator", entry["label_separator"]]
    if entry["multilabel"]:
        words.append("--multilabel")
    return quoted(*words)


def run_files(name):
    """`name` in the folder of every run: each task, method and seed."""
    return expand(
        "results/{task}/{method}/seed{seed}/{name}",
        task=TASKS,
        method=config["methods"],
        seed=config["seeds"],
        name=name,
    )


def all_targets():
    return [
        "results/metrics.tsv",
        "results/figures/metrics.png",
        "results/figures/training_curves.png",
    ]

# Config validation, the tasks of this run, and every input function of the rules.
import copy
import itertools
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.common.configfile import load_configfile
from snakemake.utils import update_config, validate

sys.path.insert(0, workflow.basedir)
from copra import methods  # noqa: E402
from copra.continual import SequenceSpec, check_continual, learners  # noqa: E402
from copra.config import (  # noqa: E402
    check_analysis_methods,
    check_keys,
    check_task_finetune,
    exit_on_input_error,
    schema_node,
)
from copra.demo_data import FILES as DEMO_FILES  # noqa: E402
from copra.design_problems import check_design, design_folders, problems  # noqa: E402
from copra.errors import InputError  # noqa: E402
from copra.job_environment import export_gpu_settings, put_copra_on_path  # noqa: E402
from copra.settings import rank_free  # noqa: E402


def config_of_this_run():
    """A --configfile that defines tasks makes a run of its own: the demo's config.yaml (its
    tasks and demo-sized settings) is left out, and the schema's defaults fill in the rest.

    Snakemake would otherwise merge config.yaml into it, running the demo beside the user's tasks.
    """
    settings = workflow.config_settings
    demo = Path(workflow.basedir, "config.yaml").resolve()
    own = [
        load_configfile(p) for p in settings.configfiles if Path(p).resolve() != demo
    ]
    if not any("tasks" in loaded for loaded in own):
        return
    merged = {}
    for loaded in [*own, dict(settings.config)]:
        update_config(merged, copy.deepcopy(loaded))
    config.clear()
    config.update(merged)


config_of_this_run()
exit_on_input_error(check_keys, config)
exit_on_input_error(check_analysis_methods, config)
exit_on_input_error(check_task_finetune, config)
validate(config, schema="../schemas/config.schema.yaml", set_default=True)

TASKS = sorted(config["tasks"])
COMPLEX_KIND = "complex_regression"
COMPLEX_TASKS = [t for t in TASKS if config["tasks"][t]["kind"] == COMPLEX_KIND]
SEQUENCE_TASKS = [t for t in TASKS if t not in COMPLEX_TASKS]


def names_pattern(names):
    """A wildcard constraint matching exactly `names` (none: a pattern matching nothing)."""
    return "|".join(map(re.escape, names)) or "(?!)"


def check_task_sections():
    """Adapter analyses (lmc, merging, ...) run on sequence tasks; complex tasks need fields."""
    for name in COMPLEX_TASKS:
        if "structures" not in config["tasks"][name]:
            raise InputError(f"task {name}: kind {COMPLEX_KIND} needs `structures:`")
    for section in methods.ANALYSES:
        named = set(config[section]["tasks"] or []) & set(COMPLEX_TASKS)
        if named:
            raise InputError(
                f"{section}.tasks names complex task(s) {', '.join(sorted(named))}; "
                f"{section} runs on sequence and pair tasks only"
            )


exit_on_input_error(check_task_sections)
exit_on_input_error(check_continual, config)
exit_on_input_error(check_design, config)

put_copra_on_path(workflow.basedir)
export_gpu_settings(config["gpu"])
DEMO_DIR = "resources/demo"


wildcard_constraints:
    task="|".join(map(re.escape, TASKS)),
    method=names_pattern(methods.names()),
    seed=r"\d+",
    seed_a=r"\d+",
    seed_b=r"\d+",
    shard=r"\d+",


def task(wildcards):
    return config["tasks"][wildcards.task]


def quoted(*words):
    return " ".join(shlex.quote(str(w)) for w in words)


def config_tree(keys, name=None):
    """The config `keys` (sections or top-level keys), with task `name`'s entry (less the
    methods it trains with: adding one reruns none of the others) and its own `finetune:`
    values in the finetune section."""
    tree = {key: config[key] for key in keys}
    if name is not None:
        entry = config["tasks"][name]
        tree["tasks"] = {name: task_entry(entry)}
        if "finetune" in tree:
            tree["finetune"] = {**tree["finetune"], **entry.get("finetune", {})}
    return tree


def task_entry(entry):
    """A task's entry less what config_tree places elsewhere (methods, finetune)."""
    return {k: v for k, v in entry.items() if k not in ("methods", "finetune")}


def without_methods(entry):
    return {k: v for k, v in entry.items() if k != "methods"}


def snapshot(keys, name=None):
    """`config_tree` as JSON: what a rule passes as `--config-json`."""
    return json.dumps(config_tree(keys, name), sort_keys=True)


def config_json(*keys, with_task=False, with_method=False):
    """A params function: the config keys a rule's command reads (its settings, in one hop) as
    JSON, with the task's entry (`with_task`) and the method's sections (`with_method`).
    A change to any of them reruns the rule."""

    def params(wildcards):
        chosen = [*keys]
        if with_method:
            chosen += list(methods.get(wildcards.method).sections)
        return snapshot(chosen, wildcards.task if with_task else None)

    return params


BACKBONE = ("model", "weights_dir")


def run_config(wildcards):
    """What a training run reads: the backbone, the task, the method's sections and how it
    trains; recorded in the run's manifest."""
    method = methods.get(wildcards.method)
    is_complex = wildcards.task in COMPLEX_TASKS
    keys = [*BACKBONE, "complex" if is_complex else "head"]
    if method.cached_embeddings:
        keys.append("embedding")
    else:
        keys += [*method.sections, *([] if is_complex else ["finetune"])]
    tree = config_tree(keys, wildcards.task)
    if "embedding" in tree:  # how many jobs made the vectors does not change them
        tree["embedding"] = {
            k: v for k, v in tree["embedding"].items() if k != "shards"
        }
    return json.dumps(tree, sort_keys=True)


def task_methods(name):
    """The methods a task trains with: its own `methods:` or the top-level list (complex tasks:
    those of them that train complex tasks)."""
    chosen = config["tasks"][name].get("methods", config["methods"])
    if name in COMPLEX_TASKS:
        return [m for m in chosen if methods.get(m).complex_tasks]
    return chosen


def cached_embeddings(name):
    """Whether task `name` trains a method on cached embeddings (so computes them anyway)."""
    return any(methods.get(m).cached_embeddings for m in task_methods(name))


def complex_ingest_inputs(wildcards):
    entry = task(wildcards)
    inputs = {"labels": entry["labels"], "structures": entry["structures"]}
    if "mutations" in entry:
        inputs["mutations"] = entry["mutations"]
    return inputs


def complex_train_inputs(wildcards):
    data = f"results/{wildcards.task}/data"
    inputs = {
        name: f"{data}/{name}.tsv"
        for name in ("table", "chains", "patches", "mutations")
    }
    if methods.get(wildcards.method).cached_embeddings:
        inputs["embeddings"] = f"{data}/residue_embeddings.npz"
    else:
        inputs["weights"] = weights_input(wildcards)
    return inputs


def ingest_inputs(wildcards):
    entry = task(wildcards)
    inputs = {"labels": entry["labels"]}
    if "sequences" in entry:
        inputs["sequences"] = entry["sequences"]
    return inputs


def weights_input(wildcards):
    """The checkpoint a job reads: fetched on the login node for `pretrained`, none for random."""
    weights = config["model"]["weights"]
    # huggingface: the hub cache, found by the job itself
    if weights in ("random", "huggingface"):
        return []
    if weights == "pretrained":
        return f"{config['weights_dir']}/hub/checkpoints/{config['model']['name']}.pt"
    return weights


def embedding_shards(wildcards):
    """The shard jobs of a task's embedding (none when embedding.shards is 1)."""
    shards = config["embedding"]["shards"]
    if shards == 1:
        return []
    return expand(
        "results/{task}/data/embedding_shards/{shard}.json",
        task=wildcards.task,
        shard=range(shards),
    )


ADAPTIVE_RANK = methods.names(adapter=True, fixed_rank=False, cached_embeddings=False)


def adaptive_rank_files():
    """rank_allocation.tsv of every run of an adaptive-rank method (adalora, lingo)."""
    return [
        f"results/{name}/{method}/seed{seed}/rank_allocation.tsv"
        for name in SEQUENCE_TASKS
        for method in task_methods(name)
        if method in ADAPTIVE_RANK
        for seed in config["seeds"]
    ]


def section_seeds(section):
    """The seeds of the runs an adapter analysis reads (shapley, pruning: null is `seeds`)."""
    return config[section].get("seeds") or config["seeds"]


def trained_runs():
    """(task, method, seed) of every run: each task's methods on `seeds`, and the runs the
    adapter analyses train as needed (more seeds, for their intervals)."""
    runs = {(t, m, s) for t in TASKS for m in task_methods(t) for s in config["seeds"]}
    for section in ("lmc", "merging", "shapley", "pruning"):
        runs |= {
            (t, m, s)
            for t in section_tasks(section)
            for m in config[section]["methods"]
            for s in section_seeds(section)
        }
    return sorted(runs)


def run_files(name):
    """`name` in the folder of every run (trained_runs)."""
    return [
        f"results/{task}/{method}/seed{seed}/{name}"
        for task, method, seed in trained_runs()
    ]


def lmc_tables():
    """One path per task, method and pair of `lmc.seeds` (every pair: an interval across them)."""
    return [
        f"results/lmc/{task}/{method}/seed{seed_a}-seed{seed_b}.tsv"
        for task in section_tasks("lmc")
        for method in config["lmc"]["methods"]
        for seed_a, seed_b in itertools.combinations(config["lmc"]["seeds"], 2)
    ]


def adapter_run_files(task, method, seed, side=""):
    """The files of a trained adapter run that its readers need; Snakemake trains it if missing."""
    run = f"results/{task}/{method}/seed{seed}"
    return {
        f"manifest{side}": f"{run}/manifest.json",
        f"adapter{side}": f"{run}/adapter/adapter_model.safetensors",
        f"head{side}": f"{run}/head.safetensors",
    }


def lmc_inputs(wildcards):
    """Both runs' adapter, head and manifest."""
    inputs = {}
    for side, seed in (("a", wildcards.seed_a), ("b", wildcards.seed_b)):
        inputs.update(
            adapter_run_files(wildcards.task, wildcards.method, seed, f"_{side}")
        )
    return inputs


def section_tasks(section):
    """The tasks a section (lmc, merging, ...) covers: its `tasks`, or every sequence task."""
    chosen = config[section]["tasks"]
    return SEQUENCE_TASKS if chosen is None else chosen


def merging_seeds():
    """The seeds merged: a scheme of n weights merges every n of them."""
    return config["merging"]["seeds"]


def merge_seeds_inputs(wildcards):
    inputs = {
        "table": f"results/{wildcards.task}/data/table.tsv",
        "sequences": f"results/{wildcards.task}/data/sequences.tsv",
    }
    for seed in merging_seeds():
        inputs.update(
            adapter_run_files(wildcards.task, wildcards.method, seed, f"_{seed}")
        )
    return inputs


def merging_config(wildcards):
    """What the merging rules read; adaptive-rank methods (adalora, lingo) leave out the
    combinations that need equal ranks (settings.rank_free)."""
    method = methods.get(wildcards.method)
    tree = config_tree([*BACKBONE, "finetune", "merging", *method.sections])
    if not method.fixed_rank:
        tree["merging"] = rank_free(tree["merging"])
    return json.dumps(tree, sort_keys=True)


def merge_seeds_runs(wildcards):
    runs = [
        f"results/{wildcards.task}/{wildcards.method}/seed{s}" for s in merging_seeds()
    ]
    return quoted(*runs)


def merge_tasks_inputs(wildcards):
    seed = config["merging"]["seeds"][0]
    inputs = {}
    for name in section_tasks("merging"):
        inputs.update(adapter_run_files(name, wildcards.method, seed, f"_{name}"))
        inputs[f"table_{name}"] = f"results/{name}/data/table.tsv"
        inputs[f"sequences_{name}"] = f"results/{name}/data/sequences.tsv"
    return inputs


def merge_tasks_args(wildcards):
    """`--task NAME RUN TABLE SEQUENCES` for every merging task."""
    seed = config["merging"]["seeds"][0]
    words = []
    for name in section_tasks("merging"):
        words += ["--task", name, f"results/{name}/{wildcards.method}/seed{seed}"]
        words += [
            f"results/{name}/data/table.tsv",
            f"results/{name}/data/sequences.tsv",
        ]
    return quoted(*words)


def merging_tables():
    settings = config["merging"]
    tables = expand(
        "results/merging/seeds/{task}/{method}.tsv",
        task=section_tasks("merging"),
        method=settings["methods"],
    )
    if settings["multitask"] and len(section_tasks("merging")) > 1:
        tables += expand(
            "results/merging/tasks/{method}.tsv", method=settings["methods"]
        )
    return tables


def federated_tables():
    settings = config["federated"]
    return expand(
        "results/federated/{task}/{method}/{partition}.tsv",
        task=section_tasks("federated"),
        method=settings["methods"],
        partition=settings["partitions"],
    )


CONTINUAL = config["continual"]
SEQUENCES = {
    name: SequenceSpec.from_config(name, entry)
    for name, entry in CONTINUAL["sequences"].items()
}


# a job's own sequence is passed (without its methods); which jobs run is not read by them
UNREAD_BY_JOBS = ("sequences", "methods", "orders", "seeds")


def continual_folders():
    """The folder of every continual job: sequence, learner, order and seed."""
    return [
        f"results/continual/{name}/{learner}/order{order}/seed{seed}"
        for name, spec in SEQUENCES.items()
        for learner in learners(spec.methods_of(CONTINUAL))
        for order in range(spec.order_count(CONTINUAL["orders"]))
        for seed in CONTINUAL["seeds"]
    ]


def continual_inputs(wildcards):
    """The ingested tables and sequence tables of the sequence's tasks, and the weights."""
    inputs = {"weights": weights_input(wildcards)}
    for name in SEQUENCES[wildcards.sequence].task_names:
        inputs[f"table_{name}"] = f"results/{name}/data/table.tsv"
        inputs[f"sequences_{name}"] = f"results/{name}/data/sequences.tsv"
    return inputs


def continual_tasks(wildcards, input):
    """`--task NAME TABLE SEQUENCES` of each task of the sequence."""
    return " ".join(
        f"--task {quoted(name, input[f'table_{name}'], input[f'sequences_{name}'])}"
        for name in SEQUENCES[wildcards.sequence].task_names
    )


def continual_config(wildcards):
    """What a job reads: the backbone, head, fine-tuning, its sequence, its tasks' entries and
    the PET's sections (not the other sequences, nor the methods, orders and seeds)."""
    spec = SEQUENCES[wildcards.sequence]
    pet = methods.get(CONTINUAL["pet"])
    tree = config_tree([*BACKBONE, "head", "finetune", *pet.sections])
    tree["continual"] = {
        **{k: v for k, v in CONTINUAL.items() if k not in UNREAD_BY_JOBS},
        "sequences": {spec.name: without_methods(CONTINUAL["sequences"][spec.name])},
    }
    tree["tasks"] = {
        name: task_entry(config["tasks"][name]) for name in spec.task_names
    }
    return json.dumps(tree, sort_keys=True)


def run_inputs(wildcards):
    """The run being measured, and its task's data."""
    inputs = adapter_run_files(wildcards.task, wildcards.method, wildcards.seed)
    inputs["table"] = f"results/{wildcards.task}/data/table.tsv"
    inputs["sequences"] = f"results/{wildcards.task}/data/sequences.tsv"
    return inputs


def pruning_inputs(wildcards):
    inputs = run_inputs(wildcards)
    if "lowest_shapley" in config["pruning"]["schemes"]:
        inputs["shapley"] = (
            f"results/shapley/{wildcards.task}/{wildcards.method}/seed{wildcards.seed}.tsv"
        )
    return inputs


def per_run_tables(section):
    """One table per task, method and seed of a section (shapley, pruning)."""
    return expand(
        "results/{section}/{task}/{method}/seed{seed}.tsv",
        section=section,
        task=section_tasks(section),
        method=config[section]["methods"],
        seed=section_seeds(section),
    )


def complex_run_files(name):
    """`name` in the folder of every run of a complex task."""
    return [f for f in run_files(name) if f.split("/")[1] in COMPLEX_TASKS]


def summary_inputs(wildcards):
    """The metrics, every run's manifest, and the merging and pruning tables when they ran."""
    inputs = {"metrics": "results/metrics.tsv", "manifests": run_files("manifest.json")}
    for section in ("merging", "pruning"):
        if config[section]["methods"]:
            inputs[section] = f"results/{section}.tsv"
    return inputs


def embedding_summary_inputs(wildcards):
    """A task's embeddings (complex tasks: per residue, with the chains they belong to)."""
    data = f"results/{wildcards.task}/data"
    if wildcards.task in COMPLEX_TASKS:
        return {
            "embeddings": f"{data}/residue_embeddings.npz",
            "table": f"{data}/table.tsv",
            "chains": f"{data}/chains.tsv",
        }
    return {"embeddings": f"{data}/embeddings.npz", "table": f"{data}/table.tsv"}


# --- predict: trained runs applied to new inputs ---------------------------------------------

PREDICT_SHARED = set(schema_node("predict")["properties"])
PREDICTIONS = {
    name: {
        **{k: v for k, v in config["predict"].items() if k in PREDICT_SHARED},
        "header": True,
        **job,
    }
    for name, job in config["predict"].items()
    if name not in PREDICT_SHARED
}
SCREENS = [name for name, job in PREDICTIONS.items() if job.get("pairs") == "all"]


def prediction_methods(name):
    """A job's own methods, or those of predict.methods its task trains (default: all)."""
    job, trained = PREDICTIONS[name], task_methods(PREDICTIONS[name]["task"])
    if job["methods"] is None:
        return trained
    if "methods" in config["predict"][name]:
        return job["methods"]
    return [m for m in job["methods"] if m in trained]


def prediction_seeds(name):
    return PREDICTIONS[name]["seeds"] or config["seeds"]


def check_predictions():
    """Every predict job names a trained task, inputs of its kind and methods it trains."""
    for name, job in PREDICTIONS.items():
        where = f"predict.{name}"
        if job["task"] not in TASKS:
            raise InputError(
                f"{where}.task: {job['task']!r} is not a task of this run ({', '.join(TASKS)})"
            )
        kind = config["tasks"][job["task"]]["kind"]
        if kind == COMPLEX_KIND:
            if "complexes" not in job or "structures" not in job:
                raise InputError(
                    f"{where}: task {job['task']} is a {kind} task; give `complexes:` (a "
                    "table pdb,protein_chains,rna_chains) and `structures:`"
                )
            continue
        if (kind == "pair_classification") != ("pairs" in job):
            need = (
                "needs `pairs:` (a pair table, or all)"
                if "pairs" not in job
                else ("scores single proteins: leave out `pairs:`")
            )
            raise InputError(f"{where}: task {job['task']} is a {kind} task; it {need}")
        if "sequences" not in job and "table" not in job:
            raise InputError(f"{where}: give `sequences:` (a FASTA) or `table:`")
        unknown = set(prediction_methods(name)) - set(task_methods(job["task"]))
        if unknown:
            raise InputError(
                f"{where}.methods: {', '.join(sorted(unknown))} not trained on task "
                f"{job['task']} (methods: {', '.join(task_methods(job['task']))})"
            )


exit_on_input_error(check_predictions)


def prediction_runs(wildcards):
    task_name = PREDICTIONS[wildcards.name]["task"]
    return [
        f"results/{task_name}/{wildcards.method}/seed{seed}"
        for seed in prediction_seeds(wildcards.name)
    ]


def predict_inputs(wildcards):
    """The runs' files, the task table they trained on, the job's inputs and the weights."""
    job = PREDICTIONS[wildcards.name]
    kind = config["tasks"][job["task"]]["kind"]
    files = methods.run_files(wildcards.method, kind == COMPLEX_KIND)
    data = f"results/{job['task']}/data"
    inputs = {
        "runs": [
            f"{run}/{name}" for run in prediction_runs(wildcards) for name in files
        ],
        "training_table": f"{data}/table.tsv",
        "weights": weights_input(wildcards),
    }
    if kind == COMPLEX_KIND:  # how the run's complexes were cut into patches
        inputs["ingested"] = [f"{data}/manifest.json", f"{data}/chains.tsv"]
    for key in ("sequences", "table", "complexes", "structures"):
        if key in job:
            inputs[key] = job[key]
    if job.get("pairs", "all") != "all":
        inputs["pairs"] = job["pairs"]
    return inputs


def predict_args(wildcards, input):
    """--run per seed, and the job's inputs as options."""
    words = [w for run in prediction_runs(wildcards) for w in ("--run", run)]
    for key in ("sequences", "table", "pairs", "complexes", "structures"):
        if key in input.keys():
            words += [f"--{key}", input[key]]
    if wildcards.name in SCREENS:
        words += ["--pairs", "all"]
    if not PREDICTIONS[wildcards.name]["header"]:
        words.append("--no-header")
    return quoted(*words)


def predict_config(wildcards):
    """The backbone, the embedding (cache, batch size, device) and the job's predict settings."""
    tree = config_tree([*BACKBONE, "embedding"])
    job = PREDICTIONS[wildcards.name]
    tree["predict"] = {k: v for k, v in job.items() if k in PREDICT_SHARED}
    return json.dumps(tree, sort_keys=True)


# --- design: offline sequence design on a regression task's variants ------------------------

DESIGNS = problems(config)


def design_data_inputs(wildcards):
    """The design's task data (ingested) and the weights."""
    data = f"results/{DESIGNS[wildcards.design].task}/data"
    return {
        "table": f"{data}/table.tsv",
        "sequences": f"{data}/sequences.tsv",
        "weights": weights_input(wildcards),
    }


def design_inputs(wildcards):
    """The design's data; random also reads the designs whose distances it copies."""
    data = f"results/design/{wildcards.design}/data"
    inputs = {
        name: f"{data}/{name}.{ext}"
        for name, ext in (("variants", "tsv"), ("offline", "npz"), ("oracle", "json"))
    }
    inputs["landscape"] = f"{data}/landscape.json"
    inputs["weights"] = weights_input(wildcards)
    if wildcards.method == "random":
        matches = DESIGNS[wildcards.design].random_matches
        inputs["matched"] = (
            f"results/design/{wildcards.design}/{matches}/seed{wildcards.seed}/designs.tsv"
        )
    return inputs


def design_config(wildcards):
    """What a design job reads: the backbone, its design entry (but which methods and seeds
    run) and its task's entry."""
    return json.dumps(
        design_tree(wildcards.design, ("methods", "seeds")), sort_keys=True
    )


def design_data_config(wildcards):
    """What the data job reads: the keys that shape the data (not how designs are made)."""
    made_by_jobs = (
        "methods",
        "seeds",
        "steps",
        "learning_rate",
        "eta",
        "random_matches",
    )
    return json.dumps(design_tree(wildcards.design, made_by_jobs), sort_keys=True)


def design_tree(name, left_out):
    entry = config["design"][name]
    tree = config_tree(BACKBONE, DESIGNS[name].task)
    tree["design"] = {name: {k: v for k, v in entry.items() if k not in left_out}}
    return tree


def prediction_files():
    return [
        f"results/predictions/{name}/{method}.tsv"
        for name in PREDICTIONS
        for method in prediction_methods(name)
    ]


def all_targets():
    targets = [
        *expand("results/{task}/data/summary.tsv", task=TASKS),
        # embeddings are summarised where a method on cached embeddings computes them anyway
        *[
            f"results/{name}/data/embedding_summary.tsv"
            for name in TASKS
            if cached_embeddings(name)
        ],
        "results/metrics.tsv",
        "results/summary.tsv",
        "results/figures/metrics.png",
        "results/figures/training_curves.png",
        "results/papers/manifest.json",  # the papers' layouts (papers.smk)
    ]
    if config["lmc"]["methods"]:
        targets += ["results/lmc.tsv", "results/figures/lmc.png"]
    if config["merging"]["methods"]:
        targets += ["results/merging.tsv", "results/figures/merging"]
    for section in ("shapley", "pruning"):
        if config[section]["methods"]:
            targets += [f"results/{section}.tsv", f"results/figures/{section}.png"]
    if complex_run_files("predictions.tsv"):
        targets.append("results/figures/complexes.png")
    if adaptive_rank_files():
        targets += [
            "results/rank_allocation.tsv",
            "results/figures/rank_allocation.png",
        ]
    if config["federated"]["methods"]:
        targets += ["results/federated.tsv", "results/figures/federated.png"]
    if continual_folders():
        targets += ["results/continual.tsv", "results/figures/continual.png"]
    if DESIGNS:
        targets += ["results/design.tsv", "results/figures/design.png"]
    return targets + prediction_files()

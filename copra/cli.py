"""The `copra` command line: one subcommand per pipeline step, each a thin call of a function.

Settings come from `--config-json` (the config sections a rule passes, or a config file), with the
schema's defaults under them and any flag given over them. Bad input exits with status 2 and one
message naming the file and record; nothing partial is left.
"""

import argparse
import logging
import signal
import sys
from pathlib import Path

from copra import config, methods
from copra import settings as s
from copra.errors import InputError, file_system_failure
from copra.methods.head import HeadSettings

log = logging.getLogger("copra")


# --- from arguments to settings ---------------------------------------------------------------


def _settings(args, cls, prefix: str = "", **values):
    """`cls` from the config, overridden by its flags that were given and by `values`."""
    return s.from_config(cls, args.config, **{**s.given(args, cls, prefix), **values})


def _model(args, **values) -> s.ModelSettings:
    flags = {"name": args.model, "weights": args.weights, "seed": args.model_seed}
    flags.update(weights_dir=args.weights_dir, download_url=args.download_url, **values)
    return s.from_config(s.ModelSettings, args.config, **flags)


def _task_name(args) -> str | None:
    """The task the command is about: `--task`, or the only one of the config."""
    tasks = args.config.get("tasks") or {}
    if getattr(args, "task", None):
        return args.task
    if len(tasks) > 1:
        raise InputError(f"the config has tasks {', '.join(tasks)}: name one with --task")
    return next(iter(tasks), None)


def _task(args, **values) -> s.TaskSettings:
    """The task's `tasks:` entry in the config, overridden by the task flags given."""
    name = _task_name(args)
    entry = (args.config.get("tasks") or {}).get(name, {})
    flags = {
        "kind": args.kind,
        "multilabel": args.multilabel,
        "label_separator": args.label_separator,
    }
    task = s.from_section(s.TaskSettings, entry, **flags, **values)
    if task.kind is None:
        raise InputError("no task kind: give --kind, or --config-json with the task's entry")
    return task


def _method(args):
    """The method named by `--method` with its sections' settings (config, then flags)."""
    cls = methods.get(args.method)
    flags = {name: s.given(args, c, f"{name}_") for name, c in cls.sections.items()}
    return cls.from_config(args.config, flags)


def _columns(items: list[str]) -> dict | None:
    pairs = dict(item.split("=", 1) for item in items)
    return {k: int(v) if v.isdigit() else v for k, v in pairs.items()} or None


def _fractions(text: str | None) -> dict | None:
    if text is None:
        return None
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise InputError(f"--split-fractions takes train,valid,test (got {text!r})")
    return dict(zip(("train", "valid", "test"), parts, strict=True))


# --- the subcommands ------------------------------------------------------------------------


def cmd_demo_data(args):
    from copra.demo_data import write_demo_data

    demo = _settings(args, s.DemoSettings)
    for path in write_demo_data(
        args.output_dir, demo.sequences, demo.seed, demo.complexes, demo.adapter_sequences
    ):
        log.info("wrote %s", path)


def cmd_ingest(args):
    from copra.complexes import run_ingest_complexes
    from copra.ingest import run_ingest
    from copra.tables import COMPLEX_KIND

    files = {"labels": args.labels, "sequences": args.sequences, "structures": args.structures}
    columns, header = _columns(args.column), False if args.no_header else None
    task = _task(args, **files, mutations=args.mutations, columns=columns, header=header)
    if task.labels is None:
        raise InputError("no label table: give --labels, or --config-json with the task's entry")
    if task.kind == COMPLEX_KIND:
        if not (task.structures and args.output_dir):
            raise InputError(f"--kind {COMPLEX_KIND} needs --structures and --output-dir")
        run_ingest_complexes(task, args.output_dir, _settings(args, s.ComplexSettings))
        return
    if not (args.table and args.sequence_table):
        raise InputError(f"--kind {task.kind} needs --table and --sequence-table")
    settings = _settings(args, s.IngestSettings, split_fractions=_fractions(args.split_fractions))
    run_ingest(task, args.table, args.sequence_table, settings)


def cmd_fetch_weights(args):
    from copra.weights import fetch_weights

    model = _model(args)
    path = fetch_weights(model.name, model.weights_dir, model.download_url)
    log.info("weights of %s at %s", model.name, path)


def _embedding(args) -> s.EmbeddingSettings:
    """Per-residue matrices cover whole chains (windows); `--no-cache` neither reads nor writes."""
    values = {"pooling": "none", "long_sequences": "windows"} if args.per_residue else {}
    settings = _settings(args, s.EmbeddingSettings, **values)
    return s.dataclasses.replace(settings, cache_dir=None) if args.no_cache else settings


def cmd_embed(args):
    from copra.embed import run_embed, run_embed_shard

    shared = {"model": _model(args), "settings": _embedding(args)}
    if args.command == "embed-shard":
        run_embed_shard(args.output, sequence_table=args.sequence_table, shard=args.shard, **shared)
    else:
        run_embed(args.output, fasta=args.fasta, sequence_table=args.sequence_table, **shared)


def _snapshot(args) -> dict | None:
    """The config a result was made with, recorded in its manifest."""
    return args.config or None


def _training(args, seed: int | None = None):
    from copra.finetune import Training

    head = _settings(args, s.HeadArchitecture, "head_")
    settings = _settings(args, s.FinetuneSettings)
    seed = args.seed if seed is None else seed
    return Training(_task(args), _method(args), seed, _model(args), settings, head)


def _complex_training(args):
    from copra.complex_training import ComplexTraining

    settings = [_settings(args, c) for c in (s.ComplexTrainingSettings, s.CoFormerSettings)]
    return ComplexTraining(_method(args), args.seed, _model(args), *settings)


def cmd_federate(args):
    from copra.federated import run_federated

    federated = _settings(args, s.FederatedSettings)
    training = _training(args, federated.seed)
    run = {"task": _task_name(args), "partition": args.partition, "federated": federated}
    paths = (args.table, args.sequences, args.output)
    run_federated(*paths, training=training, config_snapshot=args.config or None, **run)


def cmd_continual(args):
    from copra.continual import SequenceSpec
    from copra.continual_learning import JobSpec, StepTraining, pet_method, run_continual

    entry = ((args.config.get("continual") or {}).get("sequences") or {}).get(args.sequence)
    if entry is None:
        raise InputError(
            f"sequence {args.sequence!r} is not in the config's continual.sequences "
            "(give --config-json with its entry)"
        )
    entries = args.config.get("tasks") or {}
    inputs, tasks = {}, {}
    for name, table, sequences in args.task:
        if name not in entries:
            raise InputError(f"task {name} has no tasks: entry in the config (--config-json)")
        inputs[name] = (table, sequences)
        tasks[name] = s.from_section(s.TaskSettings, entries[name])
    continual = _settings(args, s.ContinualSettings)
    pet = pet_method(continual.pet)
    flags = {name: s.given(args, c, f"{name}_") for name, c in pet.sections.items()}
    spec = SequenceSpec.from_config(args.sequence, entry)
    training = StepTraining(
        pet.from_config(args.config, flags),
        continual,
        _model(args),
        _settings(args, s.FinetuneSettings),
        _settings(args, s.HeadArchitecture, "head_"),
    )
    job = JobSpec(spec, tasks, args.learner, args.order, args.seed)
    run_continual(inputs, args.output_dir, job, training, config_snapshot=_snapshot(args))


def _design(args) -> tuple[str, s.DesignSettings]:
    """The design problem's name and its `design:` entry (the config must hold it)."""
    entry = (args.config.get("design") or {}).get(args.design)
    if entry is None:
        raise InputError(
            f"design {args.design!r} is not in the config's design: section "
            "(give --config-json with its entry)"
        )
    return args.design, s.from_section(s.DesignSettings, entry)


def cmd_design_data(args):
    from copra.design_data import prepare_design

    name, settings = _design(args)
    kind = ((args.config.get("tasks") or {}).get(settings.task) or {}).get("kind")
    if kind is None:
        raise InputError(f"design.{name}.task {settings.task!r} has no tasks: entry with a kind")
    prepare_design(
        args.table,
        args.sequences,
        args.output_dir,
        name,
        kind,
        settings,
        _model(args),
        config_snapshot=_snapshot(args),
    )


def cmd_design(args):
    from copra.design import run_design

    name, settings = _design(args)
    run_design(
        args.data_dir,
        args.output_dir,
        name,
        settings,
        _model(args),
        args.seed,
        methods=args.method,
        config_snapshot=_snapshot(args),
    )


def cmd_merge(args):
    from copra.merging import merge_seeds, merge_tasks

    shared = {"settings": _settings(args, s.MergeSettings), "model": _model(args)}
    shared["config_snapshot"] = args.config or None
    if args.command == "merge-tasks":
        tasks = {name: (run, table, sequences) for name, run, table, sequences in args.task}
        merge_tasks(tasks, args.output, **shared)
    else:
        merge_seeds(args.runs, args.table, args.sequences, args.output, task=args.task, **shared)


def cmd_predict(args):
    from copra.predict import Backbones, run_predict
    from copra.prediction_inputs import InputFiles

    pairs = "all" if args.command == "screen" else args.pairs
    table = getattr(args, "table", None)
    inputs = InputFiles(args.sequences, table, pairs, not args.no_header)
    if args.command == "predict":
        inputs = s.dataclasses.replace(inputs, complexes=args.complexes, structures=args.structures)
    embedding = _settings(args, s.EmbeddingSettings)
    run_predict(
        args.run,
        args.output,
        inputs,
        backbones=Backbones(_model(args), embedding, args.adapter),
        settings=_settings(args, s.PredictSettings),
        training_table=args.training_table,
        figure=args.figure,
        config_snapshot=_snapshot(args),
    )


def cmd_reproduce(args):
    from copra.reproduce import reproduce

    result = reproduce(args.results, args.workdir, cores=args.cores, tolerance=args.tolerance)
    if result.match:
        print(f"match: all {result.compared} metrics of {args.results} reproduced")
        return 0
    listed = Path(args.workdir) / "reproduce.tsv"
    print(f"MISMATCH: {len(result.differing)} of {result.compared} metrics differ ({listed}):")
    print(result.differing.head(20).to_string(index=False))
    return 1


def cmd_gather(args):
    """gather-merging, -federated, -shapley, -pruning: one table and its figure(s)."""
    from copra import plots
    from copra.tables import gather

    gather(args.inputs, args.output, args.figure, getattr(plots, f"plot_{args.module}"))


def _call(path: str, *positional: str, **keywords):
    """A subcommand that calls `module:function` with `args.<name>` for each positional name;
    a keyword's value is an attribute name of `args`, a settings class (built by `_settings`) or
    a function of `args` (`_task`, `_model` ...)."""

    def command(args):
        import importlib

        def value(given):
            if isinstance(given, str):
                return getattr(args, given)
            return _settings(args, given) if hasattr(given, "config_keys") else given(args)

        module, function = path.split(":")
        call = getattr(importlib.import_module(module), function)
        call(*map(value, positional), **{k: value(v) for k, v in keywords.items()})

    return command


# --- the parser -----------------------------------------------------------------------------


def _required(p, *options: str) -> None:
    for option in options:
        p.add_argument(option, required=True)


def _model_options(p) -> None:
    p.add_argument("--model", help="model.name: ESM-2 name or a fair-esm .pt file")
    p.add_argument(
        "--weights", help="model.weights: pretrained, random, huggingface, a .pt or an HF folder"
    )
    p.add_argument("--model-seed", type=int, help="model.seed: seed of random weights")
    p.add_argument("--weights-dir", help="weights_dir: TORCH_HOME-style weights folder")
    p.add_argument("--download-url", help="model.download_url")


def _task_options(p, name_required: bool = False) -> None:
    p.add_argument("--task", required=name_required, help="the task's name (its tasks: entry)")
    p.add_argument("--kind", choices=config.schema_node("tasks.<name>.kind")["enum"])
    p.add_argument("--multilabel", nargs="?", const=True, type=s.boolean, metavar="{true,false}")
    p.add_argument("--label-separator")


def _method_options(p, choices: list[str]) -> None:
    """`--method`, and the settings of every section the methods read (`--lora-rank` ...)."""
    described = "; ".join(f"{name}: {methods.get(name).description}" for name in choices)
    p.add_argument("--method", required=True, choices=choices, help=described)
    for section, cls in methods.sections(*choices).items():
        s.add_flags(p, cls, f"{section}_")


def _training_options(p, choices: list[str]) -> None:
    """The task, backbone, fine-tuning, method and head options of training."""
    _task_options(p)
    _model_options(p)
    _required(p, "--table", "--sequences")
    s.add_flags(p, s.FinetuneSettings)
    _method_options(p, choices)
    s.add_flags(p, s.HeadArchitecture, "head_")


def _parsers(sub) -> None:
    def add(name, func, help, config=True, **defaults):
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func, **defaults)
        if config:
            help = "config sections as JSON, or a YAML/JSON config file (flags override it)"
            p.add_argument("--config-json", help=help)
        return p

    p = add("demo-data", cmd_demo_data, "write the bundled demo's FASTA and label files")
    _required(p, "--output-dir")
    s.add_flags(p, s.DemoSettings)

    p = add("ingest", cmd_ingest, "check and normalize one task's FASTA and label table")
    _task_options(p)
    p.add_argument("--labels", help="the label table (tasks.<name>.labels)")
    p.add_argument("--sequences", help="FASTA (omit when the table has a sequence column)")
    p.add_argument("--column", action="append", default=[], metavar="CANONICAL=OWN")
    p.add_argument("--no-header", action="store_true")
    p.add_argument("--split-fractions", help="train,valid,test (ingest.split_fractions)")
    s.add_flags(p, s.IngestSettings, skip=("split_fractions",))
    p.add_argument("--table", help="the ingested table (sequence and pair tasks)")
    p.add_argument("--sequence-table", help="the ingested sequence table")
    p.add_argument("--structures", help="complex_regression: folder of structure files")
    p.add_argument("--mutations", help="complex_regression: table pdb,mutation[,ddg]")
    p.add_argument("--output-dir", help="complex_regression: folder of the ingested tables")
    s.add_flags(p, s.ComplexSettings)

    p = add("fetch-weights", cmd_fetch_weights, "download ESM-2 weights into a weights folder")
    _model_options(p)

    for name, help in (
        ("embed", "mean-pooled embeddings of a FASTA or sequence table"),
        ("embed-shard", "one shard of a sequence table into the cache"),
    ):
        p = add(name, cmd_embed, help)
        _model_options(p)
        p.add_argument("--output", required=True, help="embeddings (.npz); shards: a JSON record")
        p.add_argument("--per-residue", action="store_true", help="a matrix per sequence")
        p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
        s.add_flags(p, s.EmbeddingSettings, skip=() if name == "embed-shard" else ("shards",))
        if name == "embed":
            source = p.add_mutually_exclusive_group(required=True)
            source.add_argument("--fasta")
            source.add_argument("--sequence-table")
        else:
            _required(p, "--sequence-table")
            p.add_argument("--shard", type=int, required=True, help="0-based")

    train = _call(
        "copra.head_baseline:run_head_baseline",
        "table",
        "embeddings",
        "output_dir",
        task=_task,
        seed="seed",
        settings=HeadSettings,
        config_snapshot=_snapshot,
    )
    p = add("train-head", train, "train the head baseline on cached embeddings")
    _task_options(p)
    _required(p, "--table", "--embeddings", "--output-dir")
    p.add_argument("--seed", type=int, required=True)
    s.add_flags(p, HeadSettings)

    finetune = _call(
        "copra.finetune:run_finetune",
        "table",
        "sequences",
        "output_dir",
        training=_training,
        config_snapshot=_snapshot,
    )
    p = add("finetune", finetune, "fine-tune the backbone with a method")
    _training_options(p, methods.names(cached_embeddings=False))
    p.add_argument("--seed", type=int, required=True, help="the run's seed")
    _required(p, "--output-dir")

    train = _call(
        "copra.complex_training:run_complex",
        "data_dir",
        "output_dir",
        training=_complex_training,
        residue_embeddings="residue_embeddings",
        config_snapshot=_snapshot,
    )
    p = add("train-complex", train, "cross-validate the protein-RNA affinity model")
    _model_options(p)
    _required(p, "--data-dir", "--output-dir")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--residue-embeddings", help="per-residue embeddings (cached methods)")
    s.add_flags(p, s.ComplexTrainingSettings)
    s.add_flags(p, s.CoFormerSettings)
    _method_options(p, methods.names(complex_tasks=True))

    p = add("federate", cmd_federate, "federated training of an adapter over clients of a task")
    _training_options(p, methods.suited("federated"))
    p.add_argument("--partition", required=True, choices=["iid", "dirichlet"])
    s.add_flags(p, s.FederatedSettings)
    _required(p, "--output")

    p = add("continual", cmd_continual, "learn a continual sequence's steps (LAE, baselines)")
    _model_options(p)
    p.add_argument("--sequence", required=True, help="its name in continual.sequences")
    learners = ["lae", "sequential", "joint", "independent", "head"]
    p.add_argument("--learner", required=True, choices=learners)
    p.add_argument("--order", type=int, default=0, help="0: the given order; k: a permutation")
    p.add_argument("--seed", type=int, required=True)
    names = ("NAME", "TABLE", "SEQUENCES")
    help = "each task of the sequence: its name, ingested table and sequence table"
    p.add_argument("--task", nargs=3, action="append", required=True, metavar=names, help=help)
    _required(p, "--output-dir")
    s.add_flags(p, s.ContinualSettings)
    for section, cls in methods.sections(*methods.names(adapter=True, fixed_rank=True)).items():
        s.add_flags(p, cls, f"{section}_")
    s.add_flags(p, s.FinetuneSettings)
    s.add_flags(p, s.HeadArchitecture, "head_")

    gather = _call(
        "copra.continual_metrics:gather_continual", "inputs", "output", "figure", "config"
    )
    help = "the continual metrics of every job, recomputed from their predictions, and the figure"
    p = add("gather-continual", gather, help)
    _required(p, "--output", "--figure")
    p.add_argument("inputs", nargs="+", help="results/continual/<sequence>/.../predictions.tsv")

    help = "a design problem's data: its offline set's LM features and the oracle"
    p = add("design-data", cmd_design_data, help)
    _model_options(p)
    p.add_argument("--design", required=True, help="its name in the config's design: section")
    _required(p, "--table", "--sequences", "--output-dir")

    p = add("design", cmd_design, "design sequences with every method of a design problem")
    _model_options(p)
    p.add_argument("--design", required=True, help="its name in the config's design: section")
    p.add_argument("--data-dir", required=True, help="what copra design-data wrote")
    p.add_argument("--seed", type=int, required=True)
    help = "run only these of its methods (repeatable; random reads its match's saved designs)"
    p.add_argument("--method", action="append", help=help)
    p.add_argument("--output-dir", required=True, help="<method>/seed<k>/ folders go here")

    gather = _call("copra.design_metrics:gather_design", "inputs", "output", "figure")
    help = "the design scores of every method and seed, and their figure"
    p = add("gather-design", gather, help, config=False)
    _required(p, "--output", "--figure")
    p.add_argument("inputs", nargs="+", help="results/design/<name>/<method>/seed<k>/designs.tsv")

    paths = ("run_a", "run_b", "table", "sequences", "output")
    lmc = _call("copra.lmc:run_lmc", *paths, task="task", settings=s.LmcSettings, model=_model)
    p = add("lmc", lmc, "linear mode connectivity between two runs' adapters")
    _model_options(p)
    _required(p, "--run-a", "--run-b", "--table", "--sequences", "--task", "--output")
    s.add_flags(p, s.LmcSettings)

    p = add("merge", cmd_merge, "merge seeds' adapters of one task with every method")
    _model_options(p)
    p.add_argument("--runs", nargs="+", required=True, help="results/<task>/<method>/seed<k>...")
    _required(p, "--table", "--sequences", "--task", "--output")
    s.add_flags(p, s.MergeSettings)

    p = add("merge-tasks", cmd_merge, "merge one adapter per task into one backbone")
    _model_options(p)
    names = ("NAME", "RUN", "TABLE", "SEQUENCES")
    p.add_argument("--task", nargs=4, action="append", required=True, metavar=names)
    _required(p, "--output")
    s.add_flags(p, s.MergeSettings)

    paths = ("run", "table", "sequences", "output")
    for name, cls, extra, help in (
        ("shapley", s.ShapleySettings, {}, "per-layer Shapley values of a run's adapter"),
        (
            "pruning",
            s.PruningSettings,
            {"shapley_path": "shapley"},
            "a run's metric under every pruning scheme and amount",
        ),
    ):
        run = _call(
            f"copra.{name}:run_{name}", *paths, task="task", settings=cls, model=_model, **extra
        )
        p = add(name, run, help)
        _model_options(p)
        p.add_argument("--run", required=True, help="results/<task>/<method>/seed<k>")
        _required(p, "--table", "--sequences", "--task", "--output")
        s.add_flags(p, cls)
        if name == "pruning":
            p.add_argument("--shapley", help="the run's Shapley table (for lowest_shapley)")

    prune = _call(
        "copra.pruning:prune_adapter",
        "adapter",
        "output",
        scheme="scheme",
        amount="amount",
        seed="seed",
        shapley_path="shapley",
    )
    p = add("prune", prune, "write one pruned adapter in peft's format", config=False)
    p.add_argument("--adapter", required=True, help="an adapter folder (adapter_config.json ...)")
    p.add_argument("--scheme", required=True, help="one of the pruning.schemes")
    help = "sparsity (magnitude schemes) or fraction of layers removed (ranked)"
    p.add_argument("--amount", type=float, default=0.0, help=help)
    p.add_argument("--seed", type=int, default=config.default("pruning.seed"))
    p.add_argument("--shapley", help="the run's Shapley table (for lowest_shapley)")
    _required(p, "--output")

    merge = _call("copra.merging:write_merged_adapter", "adapters", "output", scheme="scheme")
    help = "write the exact weighted merge of adapters in peft's format"
    p = add("merge-adapters", merge, help, config=False)
    p.add_argument("--adapters", nargs="+", required=True, help="adapter folders")
    p.add_argument("--scheme", required=True, help="their weights, e.g. 1:1 (normalised)")
    _required(p, "--output")

    for module in ("merging", "federated", "shapley", "pruning"):
        help = f"one {module} table and its figure"
        p = add(f"gather-{module}", cmd_gather, help, config=False, module=module)
        _required(p, "--output")
        if module == "merging":  # one figure per task, in a folder
            p.add_argument("--figures", dest="figure", required=True, help="folder of <task>.png")
        else:
            _required(p, "--figure")
        p.add_argument("inputs", nargs="+")

    gather_ranks = _call(
        "copra.rank_allocation:gather_rank_allocation", "inputs", "output", "figure"
    )
    help = "one table of adaptive-rank runs' rank allocations and the final-rank figure"
    p = add("gather-rank-allocation", gather_ranks, help, config=False)
    _required(p, "--output", "--figure")
    p.add_argument("inputs", nargs="+", help="results/<task>/<method>/seed<k>/rank_allocation.tsv")

    gather_lmc = _call("copra.lmc:gather_lmc", "inputs", "output", "barriers", "figure")
    p = add("gather-lmc", gather_lmc, "one LMC table, its barriers and the figure", config=False)
    _required(p, "--output", "--barriers", "--figure")
    p.add_argument("inputs", nargs="+")

    evaluate = _call(
        "copra.evaluate:run_evaluate",
        "predictions",
        "targets",
        "output",
        task="task",
        method="method",
        seed="seed",
        settings=s.EvaluationSettings,
    )
    p = add("evaluate", evaluate, "metrics with bootstrap intervals of one run")
    _required(p, "--predictions", "--targets", "--task", "--method", "--output")
    p.add_argument("--seed", type=int, required=True, help="the run's seed")
    s.add_flags(p, s.EvaluationSettings)

    gather = _call("copra.evaluate:gather_metrics", "inputs", "output", "config")
    p = add("gather-metrics", gather, "one metrics table from per-run tables (and the config)")
    _required(p, "--output")
    p.add_argument("inputs", nargs="*")

    plot = _call("copra.plots:plot_metrics", "metrics", "output")
    p = add("plot-metrics", plot, "bar chart of test metrics per task and method", config=False)
    _required(p, "--metrics", "--output")

    plot = _call("copra.plots:plot_training_curves", "logs", "output")
    p = add("plot-training", plot, "training curves per task and method", config=False)
    _required(p, "--output")
    p.add_argument("logs", nargs="+", help="results/<task>/<method>/seed<k>/training_log.tsv")

    paths = ("task", "table", "sequences", "output", "figure")
    summary = _call("copra.data_summary:run_data_summary", *paths, task=_task)
    p = add("data-summary", summary, "split sizes, labels, lengths, duplicates of a task")
    _task_options(p, name_required=True)
    _required(p, "--table", "--sequences", "--output", "--figure")

    paths = ("task", "embeddings", "table", "output", "figure")
    summary = _call(
        "copra.embedding_summary:run_embedding_summary",
        *paths,
        kind=lambda args: _task(args).kind,
        chains_path="chains",
    )
    p = add("embedding-summary", summary, "provenance, size and PCA map of embeddings")
    _task_options(p, name_required=True)
    p.add_argument("--embeddings", required=True, help="embeddings.npz or residue_embeddings.npz")
    _required(p, "--table", "--output", "--figure")
    p.add_argument("--chains", help="complex tasks: their chains.tsv")

    names = ("metrics", "manifests", "output", "efficiency", "comparison", "merging", "pruning")
    summary = _call("copra.summary:run_summary", *names)
    p = add("summary", summary, "best method per task, and each method's cost", config=False)
    _required(p, "--metrics", "--output", "--efficiency")
    p.add_argument("--comparison", required=True, help="each method beside the one it refines")
    p.add_argument("--merging", help="results/merging.tsv, when merging ran")
    p.add_argument("--pruning", help="results/pruning.tsv, when pruning ran")
    p.add_argument("manifests", nargs="+", help="results/<task>/<method>/seed<k>/manifest.json")

    optional = ("merging", "pruning", "lmc", "lmc_barriers")
    sources = ("metrics", "metrics_manifest", "efficiency", *optional)
    papers = _call("copra.papers:run_papers", "output_dir", **{name: name for name in sources})
    help = "the papers' tables and figures (CopRA r3 and LMC, PEFT, CoPRA) from gathered tables"
    p = add("papers", papers, help, config=False)
    _required(p, "--output-dir", "--metrics", "--metrics-manifest", "--efficiency")
    for name in optional:
        p.add_argument(f"--{name.replace('_', '-')}", help=f"results/{name}.tsv, when it ran")

    check = _call("copra.config:check_config", "files")
    help = "check config files: YAML syntax, keys given twice or misspelled, values"
    p = add("check-config", check, help, config=False)
    p.add_argument("files", nargs="+", help="YAML or JSON config files")

    for name, help in (
        ("predict", "apply trained runs (seeds of one method) to new proteins or pairs"),
        ("screen", "score every pair of a FASTA's proteins with a pair task's runs"),
    ):
        p = add(name, cmd_predict, help)
        _model_options(p)
        help = "a trained run folder (results/<task>/<method>/seed<k>); repeat for an ensemble"
        p.add_argument("--run", action="append", required=True, help=help)
        p.add_argument("--sequences", required=name == "screen", help="FASTA of the proteins")
        if name == "predict":
            p.add_argument("--table", help="a table with a sequence column (or FASTA ids)")
            p.add_argument("--pairs", help="pair tasks: a pair table id_a,id_b, or `all`")
            help = "complex tasks: a table pdb,protein_chains,rna_chains"
            p.add_argument("--complexes", help=help)
            p.add_argument("--structures", help="complex tasks: the folder of their structures")
        p.add_argument("--no-header", action="store_true", help="the table has no header line")
        p.add_argument("--adapter", help="score with this adapter folder (pruned, merged)")
        p.add_argument("--training-table", help="the runs' task table (default: the recorded)")
        p.add_argument("--output", required=True, help="the prediction table (.tsv)")
        p.add_argument("--figure", help="a histogram of the scores (.png, with .svg)")
        s.add_flags(p, s.PredictSettings)
        # how vectors are made is the run's (its manifest); where and how fast is configured
        made = ("layer", "pooling", "long_sequences", "max_residues", "window_stride", "shards")
        s.add_flags(p, s.EmbeddingSettings, skip=made)

    export = _call(
        "copra.hf_export:export_run",
        "run",
        "output",
        model=_model,
        include_base="include_base",
        config_snapshot=_snapshot,
    )
    p = add("export-hf", export, "a trained run as a peft adapter and head for transformers")
    _model_options(p)
    help = "a trained run folder (results/<task>/<method>/seed<k>)"
    p.add_argument("--run", required=True, help=help)
    p.add_argument("--output", required=True, help="the export folder (new, or an export)")
    help = "write the backbone too (base/): runs on random or private weights"
    p.add_argument("--include-base", action="store_true", help=help)

    help = "rerun a finished run from its manifest and compare"
    p = add("reproduce", cmd_reproduce, help, config=False)
    p.add_argument("results", help="the run's results/ folder (with metrics.manifest.json)")
    p.add_argument("--workdir", required=True, help="a fresh folder for the rerun")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=0.0, help="largest accepted difference")

    plot = _call("copra.plots:plot_complexes", "predictions", "output")
    p = add("plot-complexes", plot, "predicted against measured dG and ddG", config=False)
    _required(p, "--output")
    p.add_argument("predictions", nargs="+", help="results/<task>/<method>/seed<k>/predictions.tsv")


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI (light: no torch or peft until a subcommand runs)."""
    parser = argparse.ArgumentParser(prog="copra", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "-t", "--threads", type=int, help="CPU threads of torch (a job's share of the cores)"
    )
    _parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # A killed job (SIGTERM from Snakemake or SLURM) unwinds, so temporary files are removed.
    signal.signal(signal.SIGTERM, _terminate)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.config = s.read_config(getattr(args, "config_json", None))
        status = args.func(args)
    except InputError as error:
        print(f"copra: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a folder it cannot write (or read), a full disk
        message = file_system_failure(error)
        if message is None:
            raise
        print(f"copra: error: {message}", file=sys.stderr)
        return 2
    return status or 0

"""The `copra` command line: one subcommand per pipeline step, each a thin call of a function.

Bad input exits with status 2 and one message naming the file and record; nothing partial is left.
"""

import argparse
import dataclasses
import importlib
import json
import logging
import signal
import sys
from pathlib import Path

from copra import config
from copra.errors import InputError

log = logging.getLogger("copra")


def _add_settings(parser: argparse.ArgumentParser, settings_class, prefix: str = "") -> None:
    """One `--<prefix>field-name` option per dataclass field, its default taken from the schema."""
    if isinstance(parser, _Skipped):
        return
    defaults = settings_class()
    for field in dataclasses.fields(settings_class):
        flag = "--" + (prefix + field.name).replace("_", "-")
        default = getattr(defaults, field.name)
        if "list" in str(field.type):
            item = int if field.name.startswith("layers") else type((default or [""])[0])
            parser.add_argument(flag, type=item, nargs="+", default=default)
        elif isinstance(default, bool):  # `--flag true|false`, as the workflow writes config values
            parser.add_argument(flag, type=_boolean, default=default, metavar="{true,false}")
        elif default is None:  # an optional number (e.g. merging's svd_rank)
            parser.add_argument(flag, type=int, default=None)
        else:
            parser.add_argument(flag, type=type(default), default=default)


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def _settings(args: argparse.Namespace, settings_class, prefix: str = ""):
    names = [f.name for f in dataclasses.fields(settings_class)]
    return settings_class(**{name: getattr(args, prefix + name) for name in names})


def _config_snapshot(text: str | None) -> dict | None:
    """The config given as a JSON string, recorded in manifests."""
    return json.loads(text) if text else None


def _fractions(text: str) -> dict:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise InputError(f"--split-fractions takes train,valid,test (got {text!r})")
    return dict(zip(("train", "valid", "test"), parts, strict=True))


def cmd_demo_data(args):
    from copra.demo_data import write_demo_data

    for path in write_demo_data(args.output_dir, args.sequences, args.seed, args.complexes):
        log.info("wrote %s", path)


def cmd_ingest(args):
    from copra.complexes import KIND, ComplexSettings, run_ingest_complexes
    from copra.ingest import run_ingest

    columns = dict(item.split("=", 1) for item in args.column)
    columns = {k: int(v) if v.isdigit() else v for k, v in columns.items()}
    if args.kind == KIND:
        if not (args.structures and args.output_dir):
            raise InputError(f"--kind {KIND} needs --structures and --output-dir")
        task = {
            "labels": args.labels,
            "structures": args.structures,
            "columns": columns,
            "header": not args.no_header,
            "mutations": args.mutations,
        }
        run_ingest_complexes(task, args.output_dir, _settings(args, ComplexSettings))
        return
    if not (args.table and args.sequence_table):
        raise InputError(f"--kind {args.kind} needs --table and --sequence-table")
    task = {
        "kind": args.kind,
        "labels": args.labels,
        "sequences": args.sequences,
        "columns": columns,
        "header": not args.no_header,
        "multilabel": args.multilabel,
        "label_separator": args.label_separator,
    }
    run_ingest(
        task, args.table, args.sequence_table, _fractions(args.split_fractions), args.split_seed
    )


def cmd_fetch_weights(args):
    from copra.weights import fetch_weights

    path = fetch_weights(args.model, args.weights_dir, args.download_url)
    log.info("weights of %s at %s", args.model, path)


def _embedding_settings(args):
    """Per-residue matrices cover whole chains (windows); pooled vectors follow the settings."""
    from copra.embed import EmbeddingSettings

    settings = _settings(args, EmbeddingSettings)
    if args.per_residue:
        return dataclasses.replace(settings, pooling="none", long_sequences="windows")
    return settings


def _embedding_backbone(args) -> tuple[str, str, dict]:
    """Model, weights and the shared keyword arguments of the embedding commands (a `.pt`
    model is a checkpoint file, named by its stem)."""
    model, weights = args.model, args.weights
    if model.endswith(".pt"):
        model, weights = Path(model).stem, model
    shared = {
        "settings": _embedding_settings(args),
        "seed": args.seed,
        "weights_dir": args.weights_dir,
        "download_url": args.download_url,
    }
    return model, weights, shared


def cmd_embed(args):
    from copra.embed import run_embed

    model, weights, shared = _embedding_backbone(args)
    run_embed(
        model,
        weights,
        args.output,
        fasta=args.fasta,
        sequence_table=args.sequence_table,
        cache_dir=None if args.no_cache else args.cache_dir,
        **shared,
    )


def cmd_embed_shard(args):
    from copra.embed import run_embed_shard

    model, weights, shared = _embedding_backbone(args)
    run_embed_shard(
        model,
        weights,
        args.output,
        sequence_table=args.sequence_table,
        cache_dir=args.cache_dir,
        shard=args.shard,
        shards=args.shards,
        **shared,
    )


def cmd_train_head(args):
    from copra.head_baseline import HeadSettings, run_head_baseline

    run_head_baseline(
        args.table,
        args.embeddings,
        args.output_dir,
        kind=args.kind,
        seed=args.seed,
        multilabel=args.multilabel,
        label_separator=args.label_separator,
        settings=_settings(args, HeadSettings),
        config_snapshot=_config_snapshot(args.config_json),
    )


def _adapter_kwargs(args) -> dict:
    """The LoRA and layer-dropping settings (methods lora and copra)."""
    from copra.layer_drop import LayerDropSettings
    from copra.lora import LoraSettings

    return {
        "lora": _settings(args, LoraSettings, "lora_"),
        "layer_drop": _settings(args, LayerDropSettings, "layer_drop_"),
    }


def _adapter_options(parser) -> None:
    if isinstance(parser, _Skipped):
        return
    from copra.layer_drop import LayerDropSettings
    from copra.lora import LoraSettings

    _add_settings(parser, LoraSettings, "lora_")
    _add_settings(parser, LayerDropSettings, "layer_drop_")


def _training_kwargs(args) -> dict:
    """What fine-tuning and federated training share: the task, settings and config."""
    from copra.finetune import FinetuneSettings

    return {
        "kind": args.kind,
        "multilabel": args.multilabel,
        "label_separator": args.label_separator,
        "settings": _settings(args, FinetuneSettings),
        **_adapter_kwargs(args),
        "head": {name: getattr(args, f"head_{name}") for name in config.HEAD_ARCHITECTURE},
        "config_snapshot": _config_snapshot(args.config_json),
        **_model_kwargs(args),
    }


def cmd_finetune(args):
    from copra.finetune import run_finetune

    run_finetune(
        args.table,
        args.sequences,
        args.output_dir,
        method=args.method,
        seed=args.seed,
        download_url=args.download_url,
        **_training_kwargs(args),
    )


def cmd_train_complex(args):
    from copra.coformer import CoFormerSettings
    from copra.complex_training import ComplexTrainingSettings, run_complex

    run_complex(
        args.data_dir,
        args.output_dir,
        method=args.method,
        seed=args.seed,
        folds=args.folds,
        residue_embeddings=args.residue_embeddings,
        download_url=args.download_url,
        settings=_settings(args, ComplexTrainingSettings),
        coformer=_settings(args, CoFormerSettings),
        config_snapshot=_config_snapshot(args.config_json),
        **_adapter_kwargs(args),
        **_model_kwargs(args),
    )


def cmd_federate(args):
    from copra.federated import run_federated

    run_federated(
        args.table,
        args.sequences,
        args.output,
        task=args.task,
        method=args.method,
        partition=args.partition,
        aggregations=args.aggregations,
        clients=args.clients,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        dirichlet_alpha=args.dirichlet_alpha,
        seed=args.seed,
        **_training_kwargs(args),
    )


def cmd_evaluate(args):
    from copra.evaluate import run_evaluate

    run_evaluate(
        args.predictions,
        args.targets,
        args.output,
        task=args.task,
        method=args.method,
        seed=args.seed,
        bootstrap=args.bootstrap,
        bootstrap_seed=args.bootstrap_seed,
    )


def cmd_gather_metrics(args):
    from copra.evaluate import gather_metrics

    gather_metrics(args.inputs, args.output, _config_snapshot(args.config_json))


def cmd_plot_metrics(args):
    from copra.plots import plot_metrics

    plot_metrics(args.metrics, args.output)


def cmd_plot_training(args):
    from copra.plots import plot_training_curves

    plot_training_curves(args.logs, args.output)


def cmd_data_summary(args):
    from copra.data_summary import run_data_summary

    run_data_summary(
        args.task,
        args.table,
        args.sequences,
        args.output,
        args.figure,
        kind=args.kind,
        multilabel=args.multilabel,
        separator=args.label_separator,
    )


def cmd_embedding_summary(args):
    from copra.embedding_summary import run_embedding_summary

    run_embedding_summary(
        args.task,
        args.embeddings,
        args.table,
        args.output,
        args.figure,
        kind=args.kind,
        chains_path=args.chains,
    )


def cmd_summary(args):
    from copra.summary import run_summary

    run_summary(
        args.metrics,
        args.manifests,
        args.output,
        args.efficiency,
        args.comparison,
        args.merging,
        args.pruning,
    )


def cmd_reproduce(args):
    from copra.reproduce import reproduce

    result = reproduce(args.results, args.workdir, cores=args.cores, tolerance=args.tolerance)
    if result.match:
        print(f"match: all {result.compared} metrics of {args.results} reproduced")
        return 0
    print(
        f"MISMATCH: {len(result.differing)} of {result.compared} metrics differ "
        f"(listed in {Path(args.workdir) / 'reproduce.tsv'}):"
    )
    print(result.differing.head(20).to_string(index=False))
    return 1


def cmd_plot_complexes(args):
    from copra.plots import plot_complexes

    plot_complexes(args.predictions, args.output)


def cmd_lmc(args):
    from copra.lmc import run_lmc

    run_lmc(
        args.run_a,
        args.run_b,
        args.table,
        args.sequences,
        args.output,
        task=args.task,
        alphas=args.alphas,
        **_model_kwargs(args),
    )


def cmd_merge(args):
    from copra.merging import MergeSettings, merge_seeds

    merge_seeds(
        args.runs,
        args.table,
        args.sequences,
        args.output,
        task=args.task,
        schemes=args.schemes,
        combinations=args.combinations,
        settings=_settings(args, MergeSettings),
        config_snapshot=_config_snapshot(args.config_json),
        **_model_kwargs(args),
    )


def cmd_merge_tasks(args):
    from copra.merging import MergeSettings, merge_tasks

    merge_tasks(
        {name: (run, table, sequences) for name, run, table, sequences in args.task},
        args.output,
        weight=args.weight,
        combinations=args.combinations,
        settings=_settings(args, MergeSettings),
        config_snapshot=_config_snapshot(args.config_json),
        **_model_kwargs(args),
    )


def cmd_shapley(args):
    from copra.shapley import ShapleySettings, run_shapley

    run_shapley(
        args.run,
        args.table,
        args.sequences,
        args.output,
        task=args.task,
        settings=_settings(args, ShapleySettings),
        **_model_kwargs(args),
    )


def cmd_pruning(args):
    from copra.pruning import PruningSettings, run_pruning

    run_pruning(
        args.run,
        args.table,
        args.sequences,
        args.output,
        task=args.task,
        shapley_path=args.shapley,
        settings=_settings(args, PruningSettings),
        **_model_kwargs(args),
    )


def cmd_prune(args):
    from copra.pruning import prune_adapter

    prune_adapter(
        args.adapter,
        args.output,
        scheme=args.scheme,
        amount=args.amount,
        seed=args.seed,
        shapley_path=args.shapley,
    )


def cmd_gather(args):
    """gather-merging, -federated, -shapley, -pruning: one table and its figure(s)."""
    from copra import plots
    from copra.tables import gather

    gather(args.inputs, args.output, args.figure, getattr(plots, f"plot_{args.module}"))


def cmd_gather_lmc(args):
    from copra.lmc import gather_lmc

    gather_lmc(args.inputs, args.output, args.barriers, args.figure)


def _model_options(parser, seed_flag: str = "--seed"):
    parser.add_argument(
        "--model", default=config.default("model.name"), help="ESM-2 name or a .pt file"
    )
    parser.add_argument("--weights", default=config.default("model.weights"))
    parser.add_argument(
        seed_flag, type=int, default=config.default("model.seed"), help="seed of random weights"
    )
    parser.add_argument("--weights-dir", default=None, help="TORCH_HOME-style weights folder")
    parser.add_argument("--download-url", default=config.default("model.download_url"))


def _model_kwargs(args) -> dict:
    """The backbone of runs trained with `--model-seed`."""
    return {
        "model_name": args.model,
        "weights": args.weights,
        "model_seed": args.model_seed,
        "weights_dir": args.weights_dir,
    }


def _task_options(parser):
    parser.add_argument(
        "--kind",
        required=True,
        choices=[
            "sequence_classification",
            "sequence_regression",
            "pair_classification",
            "complex_regression",
        ],
    )
    parser.add_argument("--multilabel", action="store_true")
    parser.add_argument("--label-separator", default=";")


def _training_options(parser):
    """The task, backbone, fine-tuning, LoRA, layer-dropping and head options of training."""
    if isinstance(parser, _Skipped):
        return
    from copra.finetune import FinetuneSettings

    _task_options(parser)
    _model_options(parser, seed_flag="--model-seed")
    parser.add_argument("--table", required=True)
    parser.add_argument("--sequences", required=True, help="the task's sequence table from ingest")
    parser.add_argument("--config-json", help="config snapshot (JSON) to record in the manifest")
    _add_settings(parser, FinetuneSettings)
    _adapter_options(parser)
    for name in config.HEAD_ARCHITECTURE:
        default = config.default(f"head.{name}")
        flag = f"--head-{name.replace('_', '-')}"
        parser.add_argument(flag, type=type(default), default=default)


def _complex_options(parser):
    """A complex task's ingested data, the method, and the model and training settings."""
    if isinstance(parser, _Skipped):
        return
    from copra.coformer import CoFormerSettings
    from copra.complex_training import METHODS, ComplexTrainingSettings

    _model_options(parser, seed_flag="--model-seed")
    parser.add_argument("--data-dir", required=True, help="results/<task>/data from ingest")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--folds", type=int, default=config.default("complex.folds"))
    parser.add_argument("--residue-embeddings", help="per-residue embeddings (method head)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--config-json", help="config snapshot (JSON) to record in the manifest")
    _add_settings(parser, ComplexTrainingSettings)
    _add_settings(parser, CoFormerSettings)
    _adapter_options(parser)


def _run_options(parser):
    """One trained run and its task's data."""
    _model_options(parser, seed_flag="--model-seed")
    parser.add_argument("--run", required=True, help="results/<task>/<method>/seed<k>")
    parser.add_argument("--table", required=True)
    parser.add_argument("--sequences", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--output", required=True)


def _merge_options(parser):
    if isinstance(parser, _Skipped):
        return
    from copra.merging import COMBINATIONS, MergeSettings

    _model_options(parser, seed_flag="--model-seed")
    _add_settings(parser, MergeSettings)
    parser.add_argument(
        "--combinations",
        nargs="+",
        choices=COMBINATIONS,
        default=config.default("merging.combinations"),
    )
    parser.add_argument("--output", required=True)
    parser.add_argument("--config-json", help="config snapshot (JSON) to record in the manifest")


class _Skipped:
    """Stands in for the parser of a subcommand that is not being run: takes every call and does
    nothing, so its options (and the torch-heavy modules that define them) are never loaded."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


class _OnlyOneSubcommand:
    """`add_parser` that builds the one subcommand being run, and a bare entry (name and help,
    for `copra --help`) for every other: each job starts in well under a second instead of ~5 s
    of importing torch and peft for options it does not have."""

    def __init__(self, subparsers, wanted: str | None):
        self.subparsers, self.wanted = subparsers, wanted

    def add_parser(self, name: str, **kwargs):
        parser = self.subparsers.add_parser(name, **kwargs)
        return parser if self.wanted in (None, name) else _Skipped()


def _resolve(parser, path: str):
    """`module:attribute`, imported only for a parser that is being built."""
    if isinstance(parser, _Skipped):
        return None
    module, attribute = path.split(":")
    return getattr(importlib.import_module(module), attribute)


def _subcommand(argv) -> str | None:
    """The subcommand named in `argv` (None: none yet, e.g. `copra --help`)."""
    words = list(sys.argv[1:] if argv is None else argv)
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in ("-t", "--threads") and words:
            words.pop(0)
    return words[0] if words else None


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The whole CLI; given `argv`, only its subcommand's options are built."""
    parser = argparse.ArgumentParser(prog="copra", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "-t", "--threads", type=int, help="CPU threads of torch (a job's share of the cores)"
    )
    sub = _OnlyOneSubcommand(
        parser.add_subparsers(dest="command", required=True), _subcommand(argv)
    )

    p = sub.add_parser("demo-data", help="write the bundled demo's FASTA and label files")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--sequences", type=int, default=config.default("demo.sequences"))
    p.add_argument("--complexes", type=int, default=config.default("demo.complexes"))
    p.add_argument("--seed", type=int, default=config.default("demo.seed"))
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("ingest", help="check and normalize one task's FASTA and label table")
    _task_options(p)
    p.add_argument("--labels", required=True)
    p.add_argument("--sequences", help="FASTA (omit when the table has a sequence column)")
    p.add_argument("--column", action="append", default=[], metavar="CANONICAL=OWN")
    p.add_argument("--no-header", action="store_true")
    fractions = config.default("ingest.split_fractions")
    p.add_argument(
        "--split-fractions", default=",".join(str(fractions[k]) for k in ("train", "valid", "test"))
    )
    p.add_argument("--split-seed", type=int, default=config.default("ingest.split_seed"))
    p.add_argument("--table")
    p.add_argument("--sequence-table")
    p.add_argument("--structures", help="complex_regression: folder of structure files")
    p.add_argument("--mutations", help="complex_regression: table pdb,mutation[,ddg]")
    p.add_argument("--output-dir", help="complex_regression: folder of the ingested tables")
    _add_settings(p, _resolve(p, "copra.complexes:ComplexSettings"))
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("fetch-weights", help="download ESM-2 weights into a shared weights folder")
    p.add_argument("--model", required=True)
    p.add_argument("--weights-dir", default=config.default("weights_dir"))
    p.add_argument("--download-url", default=config.default("model.download_url"))
    p.set_defaults(func=cmd_fetch_weights)

    p = sub.add_parser("embed", help="mean-pooled embeddings of a FASTA or sequence table")
    _model_options(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--fasta")
    source.add_argument("--sequence-table")
    p.add_argument("--output", required=True)
    p.add_argument("--cache-dir", default=config.default("embedding.cache_dir"))
    p.add_argument(
        "--no-cache", action="store_true", help="compute afresh; neither read nor write the cache"
    )
    p.add_argument(
        "--per-residue", action="store_true", help="a matrix per sequence (complex tasks)"
    )
    _add_settings(p, _resolve(p, "copra.embed:EmbeddingSettings"))
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("embed-shard", help="one shard of a sequence table into the cache")
    _model_options(p)
    p.add_argument("--sequence-table", required=True)
    p.add_argument("--shard", type=int, required=True, help="0-based")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--output", required=True, help="a JSON record of the shard")
    p.add_argument("--cache-dir", default=config.default("embedding.cache_dir"))
    p.add_argument("--per-residue", action="store_true")
    _add_settings(p, _resolve(p, "copra.embed:EmbeddingSettings"))
    p.set_defaults(func=cmd_embed_shard)

    p = sub.add_parser("train-head", help="train the head-only baseline on cached embeddings")
    _task_options(p)
    p.add_argument("--table", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--config-json", help="config snapshot (JSON) to record in the manifest")
    _add_settings(p, _resolve(p, "copra.head_baseline:HeadSettings"))
    p.set_defaults(func=cmd_train_head)

    p = sub.add_parser("finetune", help="fine-tune with LoRA, CopRA (layer dropping) or fully")
    _training_options(p)
    p.add_argument("--method", required=True, choices=["lora", "copra", "full"])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("train-complex", help="cross-validate the protein-RNA affinity model")
    _complex_options(p)
    p.set_defaults(func=cmd_train_complex)

    p = sub.add_parser("federate", help="federated LoRA or CopRA over clients of a task")
    _training_options(p)
    p.add_argument("--method", required=True, choices=["lora", "copra"])
    p.add_argument("--task", required=True)
    p.add_argument("--partition", required=True, choices=["iid", "dirichlet"])
    p.add_argument("--aggregations", nargs="+", default=config.default("federated.aggregations"))
    for name in ("clients", "rounds", "local_epochs", "dirichlet_alpha", "seed"):
        default = config.default(f"federated.{name}")
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_federate)

    p = sub.add_parser("lmc", help="linear mode connectivity between two runs' adapters")
    _model_options(p, seed_flag="--model-seed")
    p.add_argument("--run-a", required=True, help="results/<task>/<method>/seed<a>")
    p.add_argument("--run-b", required=True, help="results/<task>/<method>/seed<b>")
    p.add_argument("--table", required=True)
    p.add_argument("--sequences", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--alphas", type=int, default=config.default("lmc.alphas"))
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_lmc)

    p = sub.add_parser("merge", help="merge seeds' adapters of one task with every method")
    _merge_options(p)
    p.add_argument("--runs", nargs="+", required=True, help="results/<task>/<method>/seed<k>...")
    p.add_argument("--table", required=True)
    p.add_argument("--sequences", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--schemes", nargs="+", default=config.default("merging.schemes"))
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("merge-tasks", help="merge one adapter per task into one backbone")
    _merge_options(p)
    p.add_argument(
        "--task",
        nargs=4,
        action="append",
        required=True,
        metavar=("NAME", "RUN", "TABLE", "SEQUENCES"),
    )
    p.add_argument("--weight", type=float, default=config.default("merging.multitask_weight"))
    p.set_defaults(func=cmd_merge_tasks)

    p = sub.add_parser("shapley", help="per-layer Shapley values of a run's adapter")
    _run_options(p)
    _add_settings(p, _resolve(p, "copra.shapley:ShapleySettings"))
    p.set_defaults(func=cmd_shapley)

    p = sub.add_parser("pruning", help="a run's metric under every pruning scheme and amount")
    _run_options(p)
    _add_settings(p, _resolve(p, "copra.pruning:PruningSettings"))
    p.add_argument("--shapley", help="the run's Shapley table (for lowest_shapley)")
    p.set_defaults(func=cmd_pruning)

    p = sub.add_parser("prune", help="write one pruned adapter in peft's format")
    p.add_argument("--adapter", required=True, help="an adapter folder (adapter_config.json ...)")
    p.add_argument("--scheme", required=True, choices=_resolve(p, "copra.pruning:SCHEMES"))
    help_amount = "sparsity (magnitude schemes) or fraction of layers removed (ranked)"
    p.add_argument("--amount", type=float, default=0.0, help=help_amount)
    p.add_argument("--seed", type=int, default=config.default("pruning.seed"))
    p.add_argument("--shapley", help="the run's Shapley table (for lowest_shapley)")
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_prune)

    for module in ("merging", "federated", "shapley", "pruning"):
        p = sub.add_parser(f"gather-{module}", help=f"one {module} table and its figure")
        p.add_argument("--output", required=True)
        if module == "merging":  # one figure per task, in a folder
            p.add_argument("--figures", dest="figure", required=True, help="folder of <task>.png")
        else:
            p.add_argument("--figure", required=True)
        p.add_argument("inputs", nargs="+")
        p.set_defaults(func=cmd_gather, module=module)

    p = sub.add_parser("gather-lmc", help="one LMC table, its barriers and the figure")
    p.add_argument("--output", required=True)
    p.add_argument("--barriers", required=True)
    p.add_argument("--figure", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_gather_lmc)

    p = sub.add_parser("evaluate", help="metrics with bootstrap intervals of one run")
    p.add_argument("--predictions", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--bootstrap", type=int, default=config.default("evaluation.bootstrap"))
    p.add_argument("--bootstrap-seed", type=int, default=config.default("evaluation.seed"))
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("gather-metrics", help="one metrics table from per-run tables")
    p.add_argument("--output", required=True)
    p.add_argument("--config-json")
    p.add_argument("inputs", nargs="*")
    p.set_defaults(func=cmd_gather_metrics)

    p = sub.add_parser("plot-metrics", help="bar chart of test metrics per task and method")
    p.add_argument("--metrics", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_plot_metrics)

    p = sub.add_parser("plot-training", help="training curves per task and method")
    p.add_argument("--output", required=True)
    p.add_argument("logs", nargs="+", help="results/<task>/<method>/seed<k>/training_log.tsv")
    p.set_defaults(func=cmd_plot_training)

    p = sub.add_parser("data-summary", help="split sizes, labels, lengths, duplicates of a task")
    _task_options(p)
    p.add_argument("--task", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--sequences", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--figure", required=True)
    p.set_defaults(func=cmd_data_summary)

    p = sub.add_parser("embedding-summary", help="provenance, size and PCA map of embeddings")
    _task_options(p)
    p.add_argument("--task", required=True)
    p.add_argument("--embeddings", required=True, help="embeddings.npz or residue_embeddings.npz")
    p.add_argument("--table", required=True)
    p.add_argument("--chains", help="complex tasks: their chains.tsv")
    p.add_argument("--output", required=True)
    p.add_argument("--figure", required=True)
    p.set_defaults(func=cmd_embedding_summary)

    p = sub.add_parser("summary", help="best method per task, and each method's cost")
    p.add_argument("--metrics", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--efficiency", required=True)
    p.add_argument("--comparison", required=True, help="LoRA beside CopRA: alone, merged, pruned")
    p.add_argument("--merging", help="results/merging.tsv, when merging ran")
    p.add_argument("--pruning", help="results/pruning.tsv, when pruning ran")
    p.add_argument("manifests", nargs="+", help="results/<task>/<method>/seed<k>/manifest.json")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("reproduce", help="rerun a finished run from its manifest and compare")
    p.add_argument("results", help="the run's results/ folder (with metrics.manifest.json)")
    p.add_argument("--workdir", required=True, help="a fresh folder for the rerun")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=0.0, help="largest accepted difference")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("plot-complexes", help="predicted against measured dG and ddG")
    p.add_argument("--output", required=True)
    p.add_argument("predictions", nargs="+", help="results/<task>/<method>/seed<k>/predictions.tsv")
    p.set_defaults(func=cmd_plot_complexes)
    return parser


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = build_parser(argv).parse_args(argv)
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
        status = args.func(args)
    except InputError as error:
        print(f"copra: error: {error}", file=sys.stderr)
        return 2
    return status or 0

"""`copra predict`: trained runs (seeds of one method) applied to new proteins, pairs or complexes.

Inputs are read and checked as ingest reads training inputs (copra/prediction_inputs.py). Each
run's model is rebuilt from its folder (or with another adapter: a pruned or merged one), every
unique sequence is encoded once per run (the head: through the embedding cache), and the head
scores each row (copra/inference.py); complex runs in copra/predict_complexes.py. The table gives
the seeds' mean score, its spread and every seed's score, and whether the runs trained on the
row; a manifest beside it names the runs and their checksums.
"""

import copy
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from copra.atomic import write_table
from copra.device import pick_device, precision
from copra.embed import embed_unique, recorded_settings
from copra.errors import InputError
from copra.prediction_inputs import InputFiles, Inputs
from copra.provenance import file_sha256, write_manifest
from copra.settings import EmbeddingSettings, ModelSettings, PredictSettings
from copra.tables import COMPLEX_KIND, PAIR_KIND, read_task_table
from copra.trained_run import TrainedRun, shared_backbone

log = logging.getLogger(__name__)


# --- the runs -------------------------------------------------------------------------------------


def open_ensemble(folders) -> list[TrainedRun]:
    """Runs of one method and task (seeds), with one label space; complete ones only."""
    if not folders:
        raise InputError("give at least one trained run (results/<task>/<method>/seed<k>)")
    runs = [TrainedRun.open(folder) for folder in folders]
    first = runs[0]
    for run in runs[1:]:
        for what in ("method", "kind"):
            if run.manifest.get(what) != first.manifest.get(what):
                raise InputError(
                    f"the runs mix {what}s ({first.manifest.get(what)}, {run.manifest.get(what)})"
                    f": an ensemble is the seeds of one method of one task",
                    path=run.folder,
                )
        if run.targets != first.targets:
            raise InputError(f"its label space differs from {first.folder}'s", path=run.folder)
    return runs


def recorded_table(run: TrainedRun, training_table=None) -> Path:
    """The run's task table: `training_table`, or the one its manifest recorded, unchanged."""
    if training_table is not None:
        return Path(training_table)
    path = run.manifest.get("training_table") or next(
        (p for p in run.manifest.get("inputs", {}) if Path(p).name == "table.tsv"), None
    )
    if path is None or not Path(path).is_file():
        raise InputError(
            f"cannot tell which inputs the run trained on: its task table ({path}) is not "
            "there; give it (--training-table results/<task>/data/table.tsv)",
            path=run.folder,
        )
    if file_sha256(path) != run.manifest["inputs"].get(path):
        raise InputError(
            f"{path} changed since the run trained on it (its checksum differs): retrain, or "
            "give the table it trained on (--training-table)",
            path=run.folder,
        )
    return Path(path)


def training_keys(run: TrainedRun, training_table=None) -> set:
    """Sequence hashes (pairs: unordered hash pairs) of the run's training rows."""
    path = recorded_table(run, training_table)
    table = read_task_table(path, run.manifest["kind"])
    train = table[table.split == "train"]
    if run.manifest["kind"] == PAIR_KIND:
        return {frozenset(p) for p in zip(train.hash_a, train.hash_b, strict=True)}
    return set(train.seq_hash)


def in_training(inputs: Inputs, seen: set) -> np.ndarray:
    if inputs.pair:
        pairs = zip(*inputs.keys, strict=True)
        return np.array([frozenset(p) in seen for p in pairs], dtype=bool)
    return inputs.rows.seq_hash.isin(seen).to_numpy()


@dataclass(frozen=True)
class Backbones:
    """How every run of an ensemble is rebuilt: the backbone, once, and the embedding settings."""

    model: ModelSettings = field(default_factory=ModelSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    adapter: Path | None = None

    def load(self, runs: list[TrainedRun]):
        return shared_backbone(runs, self.model)


def run_model(run: TrainedRun, backbone, backbones: Backbones):
    """(encoder, head scorer) of one run: the function of sequences that it trained to be."""
    from copra.inference import HeadScorer, NetworkEncoder

    method, kind = run.method, run.manifest["kind"]
    combination = run.manifest["head"]["pair_combination"] if kind == PAIR_KIND else None
    if method.cached_embeddings:
        return cached_encoder(run, backbone, backbones.embedding), HeadScorer(
            standardized_head(run), run.targets, combination
        )
    network = copy.deepcopy(backbone.model)
    if backbones.adapter is not None:
        network = adapted(run, network, backbones.adapter)
    else:
        network = method.load(network, run.folder)
    model = run.model(network, backbone)
    device = pick_device(backbones.embedding.device)
    max_residues = run.manifest["settings"]["max_residues"]
    encoder = NetworkEncoder(model, max_residues, device, backbones.embedding.batch_tokens)
    return encoder, HeadScorer(model.head, run.targets, combination)


def adapted(run: TrainedRun, network, adapter_folder):
    """`network` with another adapter (a pruned or merged one) instead of the run's own."""
    from copra.adapter_algebra import load_adapter, with_adapter

    if not run.method.adapter:
        raise InputError(
            f"runs of method {run.method.name} hold no adapter to replace", path=run.folder
        )
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (Path(adapter_folder) / name).is_file():
            raise InputError(f"not an adapter folder: {name} is missing", path=adapter_folder)
    return with_adapter(network, load_adapter(adapter_folder))


def standardized_head(run: TrainedRun):
    """The head of a `head` run: its standardization and task head, as trained."""
    from copra.head_baseline import StandardizedHead
    from copra.task_head import TaskHead

    state, head = run.head_state(), run.manifest["head"]
    layers = TaskHead(head["in_dim"], run.targets.out_dim, head["hidden"], head["dropout"])
    model = StandardizedHead(state["mean"], state["std"], layers)
    model.load_state_dict(state)
    return model


def cached_encoder(run: TrainedRun, backbone, configured: EmbeddingSettings):
    """The frozen backbone's pooled vectors as the run's embedding had them (its layer, pooling,
    truncation or windows), through the cache; batch size, device and cache as configured."""

    recorded = run.manifest["embedding"]
    settings = recorded_settings(recorded, configured)
    here = precision(pick_device(settings.device))
    if recorded.get("precision") not in (None, here):
        log.warning(
            "%s trained on %s embeddings; these are %s", run.folder, recorded["precision"], here
        )

    def encode(sequences: dict[str, str]):
        return embed_unique(backbone, sequences, settings, {k: k for k in sequences})

    return encode


def ensemble_vectors(runs, backbones: Backbones, sequences: dict[str, str]):
    """Per run: (its vectors of `sequences`, its head scorer); one model in memory at a time."""
    backbone = backbones.load(runs)
    out = []
    for run in runs:
        log.info("encoding %d unique sequences with %s", len(sequences), run.folder)
        encoder, scorer = run_model(run, backbone, backbones)
        out.append((encoder(sequences), scorer))
    return out


# --- the table ------------------------------------------------------------------------------------


def ensemble(scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation over seeds (NaN for one seed), float32, per element."""
    stacked = np.stack(scores).astype(np.float64)
    spread = stacked.std(axis=0, ddof=1) if len(scores) > 1 else np.full(stacked.shape[1:], np.nan)
    return stacked.mean(axis=0).astype(np.float32), spread.astype(np.float32)


def score_frame(keys: pd.DataFrame, seen, scores, columns, seeds) -> pd.DataFrame:
    """The ids, `in_training`, then per score column its mean, `_std`, and `@seed<k>` values."""
    out = keys.reset_index(drop=True).copy()
    out["in_training"] = seen
    mean, spread = ensemble(scores)
    for i, column in enumerate(columns):
        out[column], out[f"{column}_std"] = mean[:, i], spread[:, i]
    for seed, values in zip(seeds, scores, strict=True):
        for i, column in enumerate(columns):
            out[f"{column}@seed{seed}"] = values[:, i]
    return out


def write_prediction_manifest(output, runs, inputs, settings, backbones, config, **fields):
    write_manifest(
        Path(output).with_suffix(".manifest.json"),
        inputs=inputs,
        config=config,
        runs=[
            {
                "folder": str(run.folder),
                "method": run.manifest["method"],
                "seed": run.manifest["seed"],
                "files": {str(p): file_sha256(p) for p in run.files()},
            }
            for run in runs
        ],
        adapter=(
            {
                str(p): file_sha256(p)
                for p in sorted(Path(backbones.adapter).glob("adapter_*"))
                if p.is_file()
            }
            if backbones.adapter
            else None
        ),
        settings=asdict(settings),
        **fields,
    )


def run_predict(
    runs,
    output,
    inputs: InputFiles,
    *,
    backbones: Backbones | None = None,
    settings: PredictSettings | None = None,
    training_table=None,
    figure=None,
    config_snapshot: dict | None = None,
) -> pd.DataFrame | None:
    """Predict with the seeds `runs` of one method; `pairs="all"` screens every pair."""
    settings, backbones = settings or PredictSettings(), backbones or Backbones()
    trained = open_ensemble(runs)
    kind = trained[0].manifest["kind"]
    if kind == COMPLEX_KIND:
        inputs.read(kind)  # the error of inputs of another kind
        frame = predict_complexes(trained, inputs, backbones, training_table)
    else:
        seen = set().union(*(training_keys(run, training_table) for run in trained))
        if inputs.pairs == "all":
            from copra.screen import run_screen

            if kind != PAIR_KIND:
                inputs.read(kind)
            screen = (inputs.sequences, output, seen, settings, backbones, figure)
            run_screen(trained, *screen, config_snapshot)
            return None
        frame = predict_rows(trained, inputs.read(kind), backbones, seen)
    columns = trained[0].targets.score_columns()
    if figure is not None:
        from copra.plots import plot_prediction_scores

        plot_prediction_scores(frame, columns, figure, title=Path(output).stem)
    write_prediction_manifest(
        output,
        trained,
        inputs.files(),
        settings,
        backbones,
        config_snapshot,
        rows=len(frame),
        in_training=int(frame.in_training.sum()),
    )
    write_table(output, frame)
    log.info("%d rows predicted (%d seen in training)", len(frame), frame.in_training.sum())
    return frame


def predict_rows(trained, rows: Inputs, backbones: Backbones, seen: set) -> pd.DataFrame:
    """Sequence and pair runs' predictions of the rows."""
    computed = ensemble_vectors(trained, backbones, rows.sequences)
    scores = [scorer.rows(vectors, *rows.keys) for vectors, scorer in computed]
    columns = trained[0].targets.score_columns()
    seeds = [run.manifest["seed"] for run in trained]
    keys = rows.rows[["id_a", "id_b"] if rows.pair else ["id"]]
    return score_frame(keys, in_training(rows, seen), scores, columns, seeds)


def predict_complexes(trained, inputs: InputFiles, backbones: Backbones, training_table):
    """Complex runs' predictions: out of fold for the runs' own complexes (`held_out_fold`),
    the folds' mean for any other."""
    from copra.predict_complexes import score_complexes

    data_dir = recorded_table(trained[0], training_table).parent
    backbone = backbones.load(trained)
    rows, fold, scores = score_complexes(
        trained, data_dir, backbone, backbones.embedding, inputs.complexes, inputs.structures
    )
    seeds = [run.manifest["seed"] for run in trained]
    keys = rows[["id", "protein_chains", "rna_chains"]]
    frame = score_frame(keys, fold >= 0, scores, ["prediction"], seeds)
    held_out = pd.array([k if k >= 0 else None for k in fold.tolist()], dtype="Int64")
    frame.insert(4, "held_out_fold", held_out)
    return frame

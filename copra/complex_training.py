"""Training the protein-RNA affinity model (CoPRA) with K-fold cross-validation.

Protein residues come from ESM-2: cached per-residue embeddings of the frozen backbone (a method
with `cached_embeddings`, `head`), or the backbone as a method adapts it (`lora`, `copra`: see
copra/methods/), whose hooks take part in every step of every fold. Nucleotides come
from an RNA encoder. Each fold trains a fresh model (fold k tests, fold k+1 validates and stops
early); every complex is predicted once, by the model that never saw it. Mutations are scored
as dG(mutant) - dG(wild type) by the same model.
"""

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from copra import methods
from copra.atomic import atomic_path, write_table, write_text
from copra.coformer import CoFormer
from copra.complexes import mutant_sequences
from copra.device import autocast, pick_device, precision
from copra.early_stopping import EarlyStopping, check_converged
from copra.embed import read_embeddings
from copra.errors import InputError
from copra.fast_esm import use_fused_attention
from copra.methods.base import Method
from copra.metrics import compute_metrics
from copra.provenance import write_manifest
from copra.rna_encoders import rna_encoder
from copra.sequences import sequence_hash
from copra.settings import CoFormerSettings, ComplexTrainingSettings, ModelSettings
from copra.tables import COMPLEX_KIND
from copra.targets import Targets

log = logging.getLogger(__name__)
DATA_FILES = ("table", "chains", "patches", "mutations")


@dataclass(frozen=True)
class ComplexInput:
    """One complex as the model sees it: chains with their patch positions, and coordinates."""

    id: str
    protein: tuple[tuple[str, str, np.ndarray], ...]  # (chain id, sequence, token positions)
    rna: tuple[tuple[str, str, np.ndarray], ...]
    coords: np.ndarray  # (tokens, 3): protein tokens first, then nucleotides, in patch order

    def mutated(self, sequences: dict[str, str]) -> "ComplexInput":
        """The same complex with some chains' sequences replaced ({chain id: sequence})."""

        def swap(chains):
            return tuple((c, sequences.get(c, s), p) for c, s, p in chains)

        return replace(self, protein=swap(self.protein), rna=swap(self.rna))


def read_complexes(data_dir) -> tuple[pd.DataFrame, dict[str, ComplexInput], pd.DataFrame]:
    """The ingested table, a ComplexInput per complex, and the mutations table."""
    data_dir = Path(data_dir)
    frames = {
        name: pd.read_csv(data_dir / f"{name}.tsv", sep="\t", dtype={"id": str, "residue_id": str})
        for name in DATA_FILES
    }
    return frames["table"], complex_inputs(frames["chains"], frames["patches"]), frames["mutations"]


def complex_inputs(chains: pd.DataFrame, patches: pd.DataFrame) -> dict[str, ComplexInput]:
    """A ComplexInput per complex of ingested chain and patch tables."""
    sequence = dict(zip(zip(chains.id, chains.chain, strict=True), chains.sequence, strict=True))
    inputs = {}
    for name, tokens in patches.groupby("id", sort=False):
        sides = {}
        for kind in ("protein", "rna"):
            part = tokens[tokens.kind == kind]
            sides[kind] = tuple(
                (chain, sequence[(name, chain)], np.array(rows.position, dtype=np.int64))
                for chain, rows in part.groupby("chain", sort=False)
            )
        ordered = pd.concat([tokens[tokens.kind == "protein"], tokens[tokens.kind == "rna"]])
        coords = np.array(ordered[["x", "y", "z"]], dtype=np.float32)  # writable
        inputs[name] = ComplexInput(name, sides["protein"], sides["rna"], coords)
    return inputs


class CachedResidues:
    """Per-residue embeddings of the frozen backbone, looked up by chain sequence."""

    def __init__(self, path=None, vectors: dict | None = None, metadata: dict | None = None):
        """From an embeddings file, or from `vectors` ({sequence hash: matrix})."""
        if path is not None:
            ids, matrices, metadata = read_embeddings(path)
            vectors = dict(zip(ids, matrices, strict=True))
        self.vectors, self.metadata = vectors, metadata
        self.dim = next(iter(vectors.values())).shape[1]

    def __call__(self, chains) -> list[torch.Tensor]:
        out = []
        for chain, sequence, positions in chains:
            key = sequence_hash(sequence)
            if key not in self.vectors:
                raise InputError(
                    f"chain {chain} ({len(sequence)} residues) has no per-residue embedding; "
                    "re-run the embed_residues step for this task"
                )
            out.append(torch.from_numpy(self.vectors[key][positions]))
        return out


class BackboneResidues(torch.nn.Module):
    """ESM-2 (with LoRA) run on each chain, or on the window of max_residues around its patch."""

    def __init__(self, network, alphabet, num_layers: int, max_residues: int):
        super().__init__()
        use_fused_attention(network)
        self.network, self.num_layers, self.max_residues = network, num_layers, max_residues
        self.converter = alphabet.get_batch_converter()

    def window(self, sequence: str, positions: np.ndarray) -> int:
        """Start of the window of `max_residues` centred on the patch positions."""
        if len(sequence) <= self.max_residues:
            return 0
        centre = int(np.mean(positions))
        return int(np.clip(centre - self.max_residues // 2, 0, len(sequence) - self.max_residues))

    def forward(self, chains) -> list[torch.Tensor]:
        starts = [self.window(s, p) for _, s, p in chains]
        windows = [
            s[a : a + self.max_residues] for (_, s, _), a in zip(chains, starts, strict=True)
        ]
        _, _, tokens = self.converter([("", w) for w in windows])
        device = next(self.network.parameters()).device
        out = self.network(tokens.to(device), repr_layers=[self.num_layers])
        reps = out["representations"][self.num_layers]
        features = []
        for i, ((_, _, positions), start) in enumerate(zip(chains, starts, strict=True)):
            local = torch.as_tensor(positions - start, device=device)
            inside = (local >= 0) & (local < len(windows[i]))
            chosen = torch.zeros(len(positions), reps.shape[-1], device=device, dtype=reps.dtype)
            chosen[inside] = reps[i, 1 + local[inside]]
            features.append(chosen)
        return features


class ComplexRegressor(torch.nn.Module):
    """Residue features + nucleotide features -> Co-Former -> standardized dG."""

    def __init__(self, residues, protein_dim, settings, coformer: CoFormerSettings):
        super().__init__()
        self.residues = residues
        self.rna = rna_encoder(settings.rna_encoder, coformer.embed_dim)
        self.coformer = CoFormer(protein_dim, self.rna.out_dim, coformer)

    def forward(self, complexes: list[ComplexInput]) -> torch.Tensor:
        device = self.coformer.pool.device
        chains = [c for x in complexes for c in x.protein]
        features = iter(self.residues(chains) if chains else [])
        rna_features = iter(self.rna([s for x in complexes for _, s, _ in x.rna]))
        protein, rna, coords = [], [], []
        for x in complexes:
            own = [next(features).to(device) for _ in x.protein]
            protein.append(torch.cat(own) if own else torch.zeros(0, self.coformer_in_dim()))
            nucleotides = [next(rna_features)[torch.as_tensor(p)] for _, _, p in x.rna]
            rna.append(torch.cat(nucleotides))
            coords.append(torch.from_numpy(x.coords).to(device))
        return self.coformer(protein, rna, coords)

    def coformer_in_dim(self) -> int:
        return self.coformer.protein_in[0].normalized_shape[0]


@dataclass
class FoldRun:
    """The parts of one method's model that every fold builds afresh."""

    method: Method
    settings: ComplexTrainingSettings
    coformer: CoFormerSettings
    backbone: object = None  # load_backbone's result (methods that train through it)
    cached: CachedResidues | None = None  # per-residue embeddings (cached_embeddings methods)

    def build(self, seed: int) -> ComplexRegressor:
        torch.manual_seed(seed)
        if self.method.cached_embeddings:
            return ComplexRegressor(self.cached, self.cached.dim, self.settings, self.coformer)
        backbone = self.backbone
        network = self.method.adapt(
            copy.deepcopy(backbone.model), f"{backbone.name}@{backbone.weights_id}"
        )
        residues = BackboneResidues(
            network, backbone.alphabet, backbone.num_layers, self.settings.max_residues
        )
        return ComplexRegressor(residues, backbone.embed_dim, self.settings, self.coformer)


def predict(model, complexes: list[ComplexInput], batch_size: int, device) -> np.ndarray:
    """Standardized outputs in input order, in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(complexes), batch_size):
            with autocast(device):
                out.append(model(complexes[start : start + batch_size]).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_fold(run: FoldRun, train, valid, targets: Targets, seed: int):
    """Train one fold with early stopping on valid Spearman; the best model and its log."""
    settings = run.settings
    device = pick_device(settings.device)
    model = run.build(seed).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    steps = -(-len(train) // settings.batch_size)
    method = run.method.fresh()
    method.start(model, steps * settings.max_epochs, seed)
    y_train = targets.encode(pd.Series([y for _, y in train]))
    stopping, best, history, step = EarlyStopping(settings.patience), None, [], 0
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        total = 0.0
        for rows in torch.randperm(len(train), generator=generator).split(settings.batch_size):
            method.before_step(step)
            with autocast(device):
                outputs = model([train[i][0] for i in rows.tolist()])
            loss = torch.nn.functional.mse_loss(outputs.float(), y_train[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward(step)
            optimizer.step()
            method.after_step(step)
            total += loss.item() * len(rows)
            step += 1
        method.before_evaluation()
        scores = predict(model, [x for x, _ in valid], settings.batch_size, device)
        y_valid = np.array([y for _, y in valid])
        valid_loss = float(np.mean((scores - (y_valid - targets.mean) / targets.std) ** 2))
        spearman = compute_metrics(y_valid, targets.scores(torch.from_numpy(scores)), targets)[
            "spearman"
        ]
        history.append((epoch, step, total / len(train), valid_loss, spearman))
        if stopping.update(spearman, valid_loss):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stopping.stop:
            break
    model.load_state_dict(check_converged(best, "complex.learning_rate"))
    return model, history


def fold_plan(table: pd.DataFrame, folds: int) -> list[dict[str, list[str]]]:
    """Per fold: the ids of train, valid and test (a given split is one fold)."""
    if (table.split != "cv").all():
        return [{s: table.id[table.split == s].tolist() for s in ("train", "valid", "test")}]
    plan = []
    for k in range(folds):
        test, valid = table.fold == k, table.fold == (k + 1) % folds
        plan.append(
            {
                "train": table.id[~test & ~valid].tolist(),
                "valid": table.id[valid].tolist(),
                "test": table.id[test].tolist(),
            }
        )
    return plan


def score_mutations(model, inputs, mutations: pd.DataFrame, chains, device, batch_size):
    """dG of wild type and mutant, and ddG = mutant - wild type, per variant."""
    if mutations.empty:
        return pd.DataFrame()
    sequences = mutant_sequences(mutations, chains)
    variants = mutations.groupby("variant", sort=True).first()
    wild = [inputs[name] for name in variants.id]
    mutant = [
        inputs[name].mutated({c: s for (v, c), s in sequences.items() if v == variant})
        for variant, name in zip(variants.index, variants.id, strict=True)
    ]
    both = predict(model, wild + mutant, batch_size, device)
    return pd.DataFrame(
        {
            "id": variants.id,
            "mutation": variants.mutation,
            "ddg": variants.ddg,
            "wild": both[: len(wild)],
            "mutant": both[len(wild) :],
        }
    ).reset_index()


@dataclass
class CrossValidation:
    """What the folds produced."""

    predictions: list = field(default_factory=list)  # (id, split, fold, label, prediction)
    histories: list = field(default_factory=list)  # (fold, epoch, step, losses, spearman)
    mutations: list = field(default_factory=list)  # scored variants per fold
    fold_metrics: list = field(default_factory=list)
    states: dict = field(default_factory=dict)  # trainable tensors, "fold<k>.<name>"


def cross_validate(run: FoldRun, table, inputs, mutations, chains, seed: int):
    """Train and test every fold; each complex (and its mutations) scored by its test fold."""
    device = pick_device(run.settings.device)
    batch = run.settings.batch_size
    label = dict(zip(table.id, table.label.astype(float), strict=True))
    splits = ("test",) if (table.split == "cv").all() else ("valid", "test")
    results = CrossValidation()
    for k, ids in enumerate(tqdm(fold_plan(table, run.settings.folds), desc="folds")):
        part = {s: [(inputs[i], label[i]) for i in ids[s]] for s in ids}
        train_labels = pd.Series([y for _, y in part["train"]])
        targets = Targets.from_training("sequence_regression", train_labels)
        model, history = train_fold(run, part["train"], part["valid"], targets, seed + 1000 * k)
        results.histories += [(k, *row) for row in history]
        for split in splits:  # one complex at a time: as `copra predict` scores it
            outputs = predict(model, [x for x, _ in part[split]], 1, device)
            values = targets.scores(torch.from_numpy(outputs))[:, 0]
            results.predictions += [
                (i, split, k, label[i], v) for i, v in zip(ids[split], values, strict=True)
            ]
        mine = mutations[mutations.id.isin(ids["test"])] if len(splits) == 1 else mutations
        if len(mine):
            scored = score_mutations(model, inputs, mine, chains, device, batch)
            for column in ("wild", "mutant"):
                scored[column] = scored[column] * targets.std + targets.mean
            results.mutations.append(scored.assign(fold=k))
        test = [(label[i], v) for i, s, f, _, v in results.predictions if f == k and s == "test"]
        y, got = np.array(test).T
        results.fold_metrics.append({"fold": k, **compute_metrics(y, got[:, None], targets)})
        results.states.update(
            {
                f"fold{k}.{n}": p.detach().cpu().contiguous()
                for n, p in model.named_parameters()
                if p.requires_grad
            }
        )
        log.info("fold %d: test %s", k, results.fold_metrics[-1])
    return results


@dataclass(frozen=True)
class ComplexTraining:
    """What one cross-validated run of a complex task is told."""

    method: Method
    seed: int
    model: ModelSettings = field(default_factory=ModelSettings)
    settings: ComplexTrainingSettings = field(default_factory=ComplexTrainingSettings)
    coformer: CoFormerSettings = field(default_factory=CoFormerSettings)


def run_complex(
    data_dir,
    out_dir,
    training: ComplexTraining,
    residue_embeddings=None,
    config_snapshot: dict | None = None,
) -> pd.DataFrame:
    """Cross-validate one method and seed on an ingested complex task; write the run folder."""
    started = time.time()
    method = training.method
    if not method.complex_tasks:
        suited = ", ".join(methods.names(complex_tasks=True))
        raise InputError(f"complex tasks train with {suited}, not {method.name!r}")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    table, inputs, mutations = read_complexes(data_dir)
    chains = pd.read_csv(data_dir / "chains.tsv", sep="\t", dtype={"id": str})
    run = FoldRun(method, training.settings, training.coformer)
    if method.cached_embeddings:
        if residue_embeddings is None:
            raise InputError(f"method {method.name} needs the task's per-residue embeddings")
        run.cached = CachedResidues(residue_embeddings)
    else:
        run.backbone = training.model.load()
    results = cross_validate(run, table, inputs, mutations, chains, training.seed)
    write_outputs(out_dir, results, table)
    device = pick_device(training.settings.device)
    backbone = (
        run.cached.metadata
        if run.cached
        else {"name": run.backbone.name, "weights": run.backbone.weights_id}
    )
    inputs = [data_dir / f"{name}.tsv" for name in DATA_FILES]
    write_manifest(
        out_dir / "manifest.json",
        inputs=inputs + ([residue_embeddings] if residue_embeddings else []),
        config=config_snapshot,
        method=method.name,
        kind=COMPLEX_KIND,
        seed=training.seed,
        folds=len(results.fold_metrics),
        fold_metrics=results.fold_metrics,
        backbone=backbone,
        settings=asdict(training.settings),
        coformer=asdict(training.coformer),
        **({} if method.cached_embeddings else method.settings_record()),
        trainable_parameters_per_fold=sum(
            v.numel() for k, v in results.states.items() if k.startswith("fold0.")
        ),
        device=str(device),
        precision=precision(device),
        wall_time_s=round(time.time() - started, 3),
    )
    return pd.DataFrame(results.fold_metrics)


def write_outputs(out_dir: Path, results: CrossValidation, table) -> None:
    """predictions.tsv (test, and ddg rows), targets.json, the logs, mutations and fold weights."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["id", "split", "fold", "label", "prediction"]
    frame = pd.DataFrame(results.predictions, columns=columns)
    mutations = pd.DataFrame(columns=["variant", "id", "mutation", "ddg", "wild", "mutant", "fold"])
    if results.mutations:
        mutations = pd.concat(results.mutations, ignore_index=True)
    mutations["ddg_predicted"] = mutations["mutant"] - mutations["wild"]
    ddg = pd.DataFrame(
        {
            "id": mutations.id + " " + mutations.mutation,
            "split": "ddg",
            "fold": mutations.fold,
            "label": mutations.ddg,
            "prediction": mutations.ddg_predicted,
        }
    )
    folds = pd.DataFrame(
        results.histories,
        columns=["fold", "epoch", "step", "train_loss", "valid_loss", "valid_spearman"],
    )
    # The fold mean per epoch (folds that stopped early drop out of the later epochs).
    mean = folds.drop(columns=["fold", "step"]).groupby("epoch", as_index=False).mean()
    labels = table.label.astype(float)
    targets = Targets("regression", mean=float(labels.mean()), std=float(labels.std(ddof=0)) or 1.0)
    with atomic_path(out_dir / "folds.safetensors") as tmp:
        save_file(results.states, str(tmp))
    write_table(out_dir / "mutations.tsv", mutations)
    write_table(out_dir / "fold_log.tsv", folds)
    write_table(out_dir / "training_log.tsv", mean)
    write_text(out_dir / "targets.json", targets.to_json())
    write_table(out_dir / "predictions.tsv", pd.concat([frame, ddg], ignore_index=True))

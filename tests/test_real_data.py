"""Real data through the real pipeline via a user's own --configfile: a yeast PPI subset, and
the 70 protein-RNA complexes of PRDBv3."""

import json

import pandas as pd
import pytest
import yaml
from conftest import REPO, check_figure, snakemake

pytestmark = pytest.mark.slow


def yeast_subset(shared_data, folder, positives=40, negatives=120, seed=0):
    """A headerless slice of the D-SCRIPT yeast pairs, in the file's own format."""
    pairs = pd.read_csv(shared_data / "ppi_yeast" / "pairs.tsv", sep="\t", header=None)
    chosen = pd.concat(
        [
            pairs[pairs[2] == 1.0].sample(positives, random_state=seed),
            pairs[pairs[2] == 0.0].sample(negatives, random_state=seed),
        ]
    )
    path = folder / "yeast_pairs.tsv"
    chosen.to_csv(path, sep="\t", header=False, index=False)
    return path


def check_metric_values(metrics: pd.DataFrame) -> None:
    """Every value defined, in its metric's range, inside its bootstrap interval."""
    assert metrics.value.notna().all(), metrics
    bounded = metrics[metrics.metric.isin(["aupr", "auroc", "accuracy", "f1_macro"])]
    assert bounded.value.between(0, 1).all(), bounded
    correlations = metrics[metrics.metric.isin(["mcc", "spearman", "pearson"])]
    assert correlations.value.between(-1, 1).all(), correlations
    assert (metrics.ci_low <= metrics.value + 1e-9).all() and (
        metrics.value <= metrics.ci_high + 1e-9
    ).all()


def gb1_with_splits(shared_data) -> pd.DataFrame:
    """All 8,733 GB1 variants (FLIP's sampled split), a split column from `set` and `validation`."""
    frame = pd.read_csv(shared_data / "gb1" / "sampled.csv")
    validation = frame["validation"].astype(str).str.lower() == "true"
    frame["split"] = frame["set"].where(~validation, "valid")
    return frame


def gb1_subset(shared_data, folder, per_split=(40, 20, 20), seed=0):
    """GB1 variants sampled per split."""
    frame = gb1_with_splits(shared_data)
    chosen = pd.concat(
        frame[frame.split == split].sample(count, random_state=seed)
        for split, count in zip(("train", "valid", "test"), per_split, strict=True)
    )
    path = folder / "gb1.csv"
    chosen.to_csv(path, index=False)
    return path


GB1_WILD_TYPE = {38: "V", 39: "D", 40: "G", 53: "V"}  # V39, D40, G41, V54 (0-based positions)


def gb1_by_mutations(shared_data, folder, per_split=(30, 12, 12), seed=0) -> dict[str, str]:
    """Three GB1 tasks by mutation count (at most 2, 3, 4 of the four sites) with FLIP's splits:
    {task name: label table}."""
    frame = gb1_with_splits(shared_data)
    mutations = sum((frame.sequence.str[i] != wt).astype(int) for i, wt in GB1_WILD_TYPE.items())
    tables = {}
    for name, chosen in (
        ("gb1_m2", mutations <= 2),
        ("gb1_m3", mutations == 3),
        ("gb1_m4", mutations == 4),
    ):
        part = frame[chosen]
        sample = pd.concat(
            part[part.split == split].sample(count, random_state=seed)
            for split, count in zip(("train", "valid", "test"), per_split, strict=True)
        )
        tables[name] = str(folder / f"{name}.csv")
        sample.to_csv(tables[name], index=False)
    return tables


def gb1_landscape(shared_data, folder):
    path = folder / "gb1_landscape.csv"
    gb1_with_splits(shared_data).to_csv(path, index=False)
    return path


def run_user_config(workdir, user_config: dict):
    """The pipeline in `workdir` with a user's --configfile given after the demo's config.yaml
    (its tasks replace the demo's)."""
    config_path = workdir / "user.yaml"
    config_path.write_text(yaml.safe_dump(user_config))
    snakemake(workdir, "--configfile", REPO / "config.yaml", config_path)
    return workdir


def yeast_proteome_slice(shared_data, pairs_path, folder, proteins=300, seed=0):
    """A FASTA of `proteins` yeast proteins: those of the first 20 chosen pairs, then others."""
    from copra.sequences import read_fasta, write_fasta

    records = {r.id: r.sequence for r in read_fasta(shared_data / "ppi_yeast" / "sequences.fasta")}
    chosen = pd.read_csv(pairs_path, sep="\t", header=None).head(20)
    ids = list(dict.fromkeys([*chosen[0], *chosen[1]]))
    rest = pd.Series(sorted(set(records) - set(ids))).sample(proteins - len(ids), random_state=seed)
    path = folder / "yeast_slice.fasta"
    write_fasta(path, [(name, records[name]) for name in [*ids, *rest]])
    return path


@pytest.fixture(scope="module")
def yeast_run(shared_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("yeast")
    pairs = yeast_subset(shared_data, workdir)
    user_config = {
        "tasks": {
            "yeast_ppi": {
                "kind": "pair_classification",
                "sequences": str(shared_data / "ppi_yeast" / "sequences.fasta"),
                "labels": str(pairs),
                "header": False,
            },
            # GB1 fitness trained with Lingo only (the task's own methods)
            "gb1": {
                "kind": "sequence_regression",
                "labels": str(gb1_subset(shared_data, workdir)),
                "columns": {"sequence": "sequence", "label": "target", "split": "split"},
                "methods": ["lingo"],
            },
            # All of GB1, ingested for offline design only
            "gb1_landscape": {
                "kind": "sequence_regression",
                "labels": str(gb1_landscape(shared_data, workdir)),
                "columns": {"sequence": "sequence", "label": "target", "split": "split"},
                "methods": [],
            },
            # GB1 by mutation order, ingested for continual learning only
            **{
                name: {
                    "kind": "sequence_regression",
                    "labels": labels,
                    "columns": {"sequence": "sequence", "label": "target", "split": "split"},
                    "methods": [],
                }
                for name, labels in gb1_by_mutations(shared_data, workdir).items()
            },
        },
        # Offline design on all of GB1 (the oracle's data), from its lower half (128 of them
        # embedded for the proxy); 8 starts, 2 steps, every method.
        "design": {
            "gb1": {
                "task": "gb1_landscape",
                "max_offline": 128,
                "starts": 8,
                "steps": 2,
                "reference": "VDGV",
            }
        },
        # Domain-incremental: GB1 variants with at most 2 mutations, then 3, then 4.
        "continual": {
            "sequences": {"gb1_mutations": {"tasks": ["gb1_m2", "gb1_m3", "gb1_m4"]}},
            "methods": ["lae", "online", "offline", "sequential"],
            "orders": 2,
            "epochs": 2,
            "frozen_epochs": 1,
        },
        # All-vs-all: 300 yeast proteins (44,850 pairs) screened with the head.
        "predict": {
            "slice_screen": {
                "task": "yeast_ppi",
                "sequences": str(yeast_proteome_slice(shared_data, pairs, workdir)),
                "pairs": "all",
                "top": 1000,
            }
        },
        "model": {"name": "esm2_t6_8M_UR50D", "weights": "random"},
        "methods": ["head"],  # more fine-tuning on real data: tests/test_finetune_real_data.py
        "evaluation": {"bootstrap": 100},
        # One federated job: LoRA, 2 clients, 2 rounds, every aggregation, 128-residue crops.
        "federated": {
            "methods": ["lora"],
            "tasks": ["yeast_ppi"],
            "partitions": ["iid"],
            "clients": 2,
            "rounds": 2,
        },
        "finetune": {
            "batch_size": 8,
            "gradient_accumulation": 1,
            "max_residues": 128,
            "max_epochs": 3,
            "patience": 3,
        },
    }
    return run_user_config(workdir, user_config)


def test_user_config_replaces_demo_tasks(yeast_run):
    metrics = pd.read_csv(yeast_run / "results" / "metrics.tsv", sep="\t")
    assert set(metrics.task) == {"yeast_ppi", "gb1"}
    assert not (yeast_run / "resources" / "demo").exists()
    assert not (yeast_run / "results" / "localization").exists()


def test_yeast_ppi_head_baseline(yeast_run):
    table = pd.read_csv(yeast_run / "results/yeast_ppi/data/table.tsv", sep="\t")
    assert len(table) == 160 and set(table.split) == {"train", "valid", "test"}
    assert table.id_a.str.startswith("4932.").all()
    metrics = pd.read_csv(yeast_run / "results" / "metrics.tsv", sep="\t")
    metrics = metrics[metrics.task == "yeast_ppi"]
    assert set(metrics.metric) == {"aupr", "auroc", "mcc", "accuracy", "f1_macro"}
    assert len(metrics) == 2 * 5 and set(metrics.split) == {"valid", "test"}
    check_metric_values(metrics)


def test_gb1_designed_from_its_lower_half(yeast_run):
    """Offline design on GB1's measured landscape through Snakemake: its four sites found, the
    lower half offline, the oracle fitted on all 8,733 variants (held-out Spearman reported),
    every method's designs changing only the four sites, looked up among the measured."""
    data = yeast_run / "results/design/gb1/data"
    landscape = json.loads((data / "landscape.json").read_text())
    assert landscape["positions"] == [38, 39, 40, 53]  # auto: where GB1's variants differ
    assert landscape["variants"] == 8733 and landscape["reference_measured"]
    assert landscape["reference_fitness"] == 1.0  # the wild type VDGV
    assert landscape["oracle_spearman"] > 0.8, landscape  # 0.90 measured
    variants = pd.read_csv(data / "variants.tsv", sep="\t")
    offline = variants[variants.offline]
    assert len(offline) == 128 and offline.label.max() <= variants.label.median()
    table = pd.read_csv(yeast_run / "results" / "design.tsv", sep="\t", dtype={"seed": str})
    runs = table[table.seed == "0"]
    assert set(runs.method) == {"bib", "bdi", "gradient_ascent", "forward", "backward", "random"}
    assert runs.offline_best.iloc[0] == pytest.approx(offline.label.max() / variants.label.max())
    measured = dict(zip(variants.sequence, variants.label, strict=True))
    for method in runs.method:
        designs = pd.read_csv(data.parent / method / "seed0" / "designs.tsv", sep="\t")
        assert len(designs) == 8 and designs.sequence.str.len().eq(265).all()
        for row in designs.itertuples():
            changed = {
                i
                for i, (a, b) in enumerate(zip(row.sequence, offline.sequence.iloc[0], strict=True))
                if a != b
            }
            assert changed <= {38, 39, 40, 53}
            assert row.measured == (row.sequence in measured)
            if row.measured:
                assert row.measured_label == measured[row.sequence]
    check_figure(yeast_run / "results" / "figures" / "design.png")


def test_gb1_lingo_allocates_its_rank_budget(yeast_run):
    """Lingo on 80 GB1 variants through Snakemake: 3 epochs of 5 steps, the budget falling from
    8 to 4 triplets per module, the final pattern after step 12, and defined metrics."""
    run = yeast_run / "results" / "gb1" / "lingo" / "seed0"
    allocation = pd.read_csv(run / "rank_allocation.tsv", sep="\t")
    per_step = allocation.groupby("step").agg(
        kept=("kept", "sum"),
        budget=("budget", "first"),
        reintroduced=("reintroduced", "sum"),
        dropped=("dropped", "sum"),
    )
    assert per_step.index.tolist() == list(range(3, 13))  # tinit 2 of 15 steps, tfinal 3
    assert per_step.budget.is_monotonic_decreasing and per_step.budget.iloc[-1] == 4 * 12
    assert (per_step.kept == per_step.budget + per_step.reintroduced - per_step.dropped).all()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kept_triplets"] == per_step.kept.iloc[-1]
    assert manifest["rank_schedule"] == {"total_step": 15, "tinit": 2, "tfinal": 3, "deltaT": 1}
    gathered = pd.read_csv(yeast_run / "results" / "rank_allocation.tsv", sep="\t")
    assert set(gathered.task) == {"gb1"} and set(gathered.method) == {"lingo"}
    check_figure(yeast_run / "results" / "figures" / "rank_allocation.png")
    metrics = pd.read_csv(yeast_run / "results" / "metrics.tsv", sep="\t")
    gb1 = metrics[metrics.task == "gb1"]
    assert set(gb1.method) == {"lingo"} and set(gb1.split) == {"valid", "test"}
    assert set(gb1.metric) == {"spearman", "pearson", "rmse", "mae"}
    check_metric_values(gb1)


def test_gb1_by_mutation_order_learned_continually(yeast_run):
    """LAE and sequential fine-tuning over three GB1 steps (at most 2, 3, 4 mutations) in two
    orders: Spearman after every step on every step seen, the summaries and their means."""
    table = pd.read_csv(yeast_run / "results" / "continual.tsv", sep="\t")
    assert set(table.sequence) == {"gb1_mutations"} and set(table["mode"]) == {"domain"}
    assert set(table.method) == {"lae", "online", "offline", "sequential"}
    assert set(table.metric) == {"spearman"}
    runs = table[table.statistic == "value"]
    assert set(runs.order.astype(str)) == {"0", "1"}
    cells = runs[runs.quantity == "a"]
    assert len(cells) == 4 * 2 * 6  # methods, orders, a[t, j] for j <= t < 3
    assert cells.value.between(-1, 1).all() and cells.value.notna().all()
    counts = table[(table.statistic == "count") & (table.quantity == "A_last")]
    assert (counts.value == 2).all() and len(counts) == 4
    manifest = json.loads(
        (yeast_run / "results/continual/gb1_mutations/lae/order0/seed0/manifest.json").read_text()
    )
    assert manifest["steps"] == ["gb1_m2", "gb1_m3", "gb1_m4"]
    assert manifest["targets"]["kind"] == "regression"
    check_figure(yeast_run / "results" / "figures" / "continual.png")


def test_yeast_ppi_federated_two_clients_two_rounds(yeast_run):
    table = pd.read_csv(yeast_run / "results" / "federated.tsv", sep="\t")
    assert set(table.task) == {"yeast_ppi"} and set(table.clients) == {2}
    assert set(table.aggregation) == {"fedavg", "exact", "ffa"} and set(table["round"]) == {0, 1, 2}
    scores = table[table.split.isin(["valid", "test"])]
    assert set(scores.metric) == {"loss", "aupr"} and scores.value.notna().all()
    assert scores[scores.metric == "aupr"].value.between(0, 1).all()
    assert (scores[scores.metric == "loss"].value > 0).all()
    errors = table[table.metric == "aggregation_error"].set_index(["aggregation", "round"]).value
    assert errors["ffa"].max() < 1e-5 and errors["fedavg"].max() > errors["ffa"].max()
    manifest = yeast_run / "results/federated/yeast_ppi/lora/iid.manifest.json"
    sizes = json.loads(manifest.read_text())["partition_sizes"]
    train = pd.read_csv(yeast_run / "results/yeast_ppi/data/table.tsv", sep="\t")
    assert sum(sizes) == (train.split == "train").sum() and len(sizes) == 2
    check_figure(yeast_run / "results" / "figures" / "federated.png")


def test_yeast_screen_all_vs_all(yeast_run):
    folder = yeast_run / "results" / "predictions" / "slice_screen"
    top = pd.read_csv(folder / "head.tsv", sep="\t")
    assert len(top) == 1000 and top.score.between(0, 1).all()
    assert top.score.is_monotonic_decreasing and top.id_a.str.startswith("4932.").all()
    histogram = pd.read_csv(folder / "head.histogram.tsv", sep="\t")
    assert histogram.pairs.sum() == 300 * 299 // 2
    manifest = json.loads((folder / "head.manifest.json").read_text())
    assert manifest["proteins"] == 300 and manifest["pairs"] == 44850
    # the pairs it trained on (both proteins in the slice) are marked where they rank high
    table = pd.read_csv(yeast_run / "results/yeast_ppi/data/table.tsv", sep="\t")
    training = {frozenset(p) for p in table[table.split == "train"][["id_a", "id_b"]].values}
    marked = [frozenset(p) in training for p in top[["id_a", "id_b"]].values]
    assert top.in_training.tolist() == marked
    log = (yeast_run / "logs/screen/slice_screen/head.log").read_text()
    assert "300 unique sequences" in log and "cached" in log
    check_figure(folder / "head.png")


@pytest.fixture(scope="module")
def pra_run(shared_data, tmp_path_factory):
    """The 70 real protein-RNA complexes: ingest, per-residue embeddings, a short 5-fold run."""
    workdir = tmp_path_factory.mktemp("pra")
    user_config = {
        "tasks": {
            "pra": {
                "kind": "complex_regression",
                "labels": str(shared_data / "pra" / "affinity.csv"),
                "structures": str(shared_data / "pra" / "pdb"),
                "columns": {"label": "dG_kcal_mol"},
            }
        },
        "model": {"name": "esm2_t6_8M_UR50D", "weights": "random"},
        "methods": ["head"],
        "evaluation": {"bootstrap": 100},
        # A small Co-Former for CI (the paper's, 320 wide and 6 blocks, took 250 s here).
        "complex": {
            "embed_dim": 64,
            "blocks": 2,
            "heads": 4,
            "pair_dim": 16,
            "max_epochs": 5,
            "learning_rate": 0.001,
        },
    }
    return run_user_config(workdir, user_config)


def test_real_complexes_ingest_and_cross_validate(pra_run, shared_data):
    affinity = pd.read_csv(shared_data / "pra" / "affinity.csv")
    table = pd.read_csv(pra_run / "results/pra/data/table.tsv", sep="\t")
    assert len(table) == 70 and set(table.id) == set(affinity.pdb)
    assert table.label.tolist() == affinity.dG_kcal_mol.tolist()
    assert table.fold.value_counts().to_dict() == dict.fromkeys(range(5), 14)
    assert (table.tokens <= 256).all() and (table.interface > 0).all()
    skipped = pd.read_csv(pra_run / "results/pra/data/skipped.tsv", sep="\t")
    assert skipped.empty
    # Every complex predicted once, by the fold that did not train on it.
    predictions = pd.read_csv(pra_run / "results/pra/head/seed0/predictions.tsv", sep="\t")
    test = predictions[predictions.split == "test"].set_index("id")
    assert sorted(test.index) == sorted(table.id)
    assert (test.fold[table.id].to_numpy() == table.fold.to_numpy()).all()
    metrics = pd.read_csv(pra_run / "results" / "metrics.tsv", sep="\t")
    assert set(metrics.metric) == {"spearman", "pearson", "rmse", "mae"}
    assert set(metrics.split) == {"test"}
    check_metric_values(metrics)
    assert (metrics[metrics.metric.isin(["rmse", "mae"])].value > 0).all()
    manifest = json.loads((pra_run / "results/pra/head/seed0/manifest.json").read_text())
    assert manifest["folds"] == 5 and manifest["coformer"]["blocks"] == 2

"""Federated LoRA: one client is ordinary training, aggregations, partitions, and the table."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from copra import methods
from copra.demo_data import write_demo_data
from copra.errors import InputError
from copra.federated import (
    COLUMNS,
    Federation,
    Layout,
    aggregate,
    aggregation_error,
    delta,
    factor_names,
    freeze_lora_a,
    partition_clients,
    read_state,
    row_classes,
    run_federated,
    subset,
)
from copra.finetune import Training, run_finetune
from copra.ingest import run_ingest
from copra.methods.layer_drop import LayerDropLora
from copra.methods.lora import Lora, LoraSettings
from copra.metrics import loss_and_primary_metric
from copra.settings import (
    FederatedSettings,
    FinetuneSettings,
    HeadArchitecture,
    IngestSettings,
    ModelSettings,
    TaskSettings,
)
from copra.tables import read_sequences, read_task_table
from copra.targets import Targets
from copra.task_data import Batcher, predict, task_data
from copra.trained_run import load_finetuned

MODEL = ModelSettings(name="esm2_t6_8M_UR50D", weights="random")
SETTINGS = FinetuneSettings(
    batch_size=8, gradient_accumulation=2, max_epochs=1, patience=1, device="cpu"
)
HEAD = HeadArchitecture(hidden=16, dropout=0.1, pair_combination="mean")
SPLIT = IngestSettings({"train": 0.8, "valid": 0.1, "test": 0.1}, 0)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A classification and a regression demo task, ingested: {name: (kind, table, sequences)}."""
    folder = tmp_path_factory.mktemp("tasks")
    write_demo_data(folder / "demo", 40, 0)
    out = {}
    for name, kind, labels in (
        ("localization", "sequence_classification", "localization.tsv"),
        ("stability", "sequence_regression", "stability.tsv"),
    ):
        task = TaskSettings(kind, folder / "demo" / labels, folder / "demo" / "proteins.fasta")
        table, sequences = folder / name / "table.tsv", folder / name / "sequences.tsv"
        run_ingest(task, table, sequences, SPLIT)
        out[name] = (kind, table, sequences)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: fast on a shared 2-core machine; the thread count restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def training(kind: str, method: str, seed: int = 3, settings: FinetuneSettings = SETTINGS):
    """What run_finetune is told (and run_federated, which reads all but the seed)."""
    chosen = methods.get(method)()
    return Training(TaskSettings(kind), chosen, seed, MODEL, settings, HEAD)


def federated(tasks, name, method, output, partition="iid", settings=SETTINGS, **options):
    kind, table, sequences = tasks[name]
    arguments = {
        "aggregations": ["fedavg"],
        "clients": 1,
        "rounds": 1,
        "local_epochs": 1,
        "dirichlet_alpha": 1.0,
        "seed": 3,
        **options,
    }
    return run_federated(
        table,
        sequences,
        output,
        task=name,
        training=training(kind, method, settings=settings),
        federated=FederatedSettings(**arguments),
        partition=partition,
    )


@pytest.mark.parametrize(("name", "method"), [("stability", "lora"), ("localization", "copra")])
def test_one_client_one_round_is_ordinary_training(tasks, tmp_path, name, method):
    """Same seed: the federated global model after round 1 is run_finetune's model of 1 epoch."""
    kind, table_path, sequences_path = tasks[name]
    run_finetune(table_path, sequences_path, tmp_path / "run", training(kind, method, seed=3))
    table = federated(tasks, name, method, tmp_path / "federated.tsv")

    model, targets = load_finetuned(tmp_path / "run", MODEL.load())
    rows = read_task_table(table_path, kind)
    batcher = Batcher(model.alphabet, "cpu", SETTINGS.max_residues)
    for split in ("valid", "test"):
        data = task_data(rows[rows.split == split], read_sequences(sequences_path), kind, targets)
        outputs = predict(model, data, batcher, SETTINGS.eval_batch_size)
        loss, metric = loss_and_primary_metric(outputs, data.targets, targets)
        scores = table[table.split == split].pivot(index="round", columns="metric", values="value")
        assert scores.loss[1] == pytest.approx(loss, rel=1e-6, abs=1e-7), split
        assert scores[targets.primary_metric][1] == pytest.approx(metric, rel=1e-6), split
        assert abs(scores.loss[0] - loss) > 1e-4, "the round-0 model should be untrained"


def lora_state(rank: int = 4, seed: int = 0):
    """The layout of a small LoRA model and a random state of its federated tensors."""
    torch.manual_seed(seed)
    backbone = MODEL.load()
    targets = Targets("binary", classes=["0", "1"])
    method = Lora(lora=LoraSettings(rank=rank, alpha=8.0, target_modules=["k_proj", "fc1"]))
    model = method.build(backbone, targets.out_dim, "sequence_classification", HEAD)
    layout = Layout.of(model)
    state = read_state(model, layout.names)
    return layout, {n: torch.randn_like(t) for n, t in state.items()}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_layout_finds_every_adapted_module_and_its_scaling():
    layout, state = lora_state()
    assert len(layout.modules) == 12 and set(layout.modules.values()) == {2.0}
    assert all(".fc1" in m or ".k_proj" in m for m in layout.modules)
    assert layout.head and all(n.startswith("head.") for n in layout.head)
    assert state[factor_names(next(iter(layout.modules)))[0]].shape[0] == 4


def test_exact_aggregation_of_identical_clients_changes_nothing():
    layout, state = lora_state()
    states = [dict(state) for _ in range(3)]
    weights = [0.2, 0.3, 0.5]
    merged = aggregate("exact", states, weights, layout, state)
    for module, scaling in layout.modules.items():
        expected = delta(state, module, scaling)
        assert relative(delta(merged, module, scaling), expected) < 1e-5, module
        assert merged[factor_names(module)[0]].dtype == state[factor_names(module)[0]].dtype
    for name in layout.head:
        assert torch.allclose(merged[name], state[name], atol=1e-6)
    assert aggregation_error(states, weights, merged, layout) < 1e-5


def test_fedavg_has_cross_terms_that_exact_and_ffa_avoid():
    layout, first = lora_state(seed=0)
    _, second = lora_state(seed=1)
    weights = [0.25, 0.75]
    errors = {
        how: aggregation_error(
            [first, second],
            weights,
            aggregate(how, [first, second], weights, layout, first),
            layout,
        )
        for how in ("fedavg", "exact")
    }
    # Eckart-Young: the truncated SVD is the best rank-r dW; fedavg's mean(B) mean(A) is rank r.
    assert errors["fedavg"] > 0.1
    assert 0 < errors["exact"] < errors["fedavg"]

    # A shared (FFA-LoRA): averaging B is exact, and so is `exact` (the mean dW has rank r).
    shared = {n: (first[n] if ".lora_A." in n else t) for n, t in second.items()}
    for how in ("ffa", "exact"):
        merged = aggregate(how, [first, shared], weights, layout, first)
        assert aggregation_error([first, shared], weights, merged, layout) < 1e-5, how
    assert (
        aggregation_error(
            [first, shared],
            weights,
            aggregate("fedavg", [first, shared], weights, layout, first),
            layout,
        )
        < 1e-5
    )

    # One client with no update: the mean dW has rank r, exact recovers it, fedavg does not.
    idle = {n: (torch.zeros_like(t) if ".lora_B." in n else t) for n, t in second.items()}
    results = {
        how: aggregation_error(
            [first, idle], weights, aggregate(how, [first, idle], weights, layout, first), layout
        )
        for how in ("fedavg", "exact")
    }
    assert results["exact"] < 1e-5 < 0.1 < results["fedavg"]


@pytest.mark.parametrize("aggregation", ["fedavg", "ffa"])
def test_client_trainers_span_every_round_with_their_own_seeds(tasks, aggregation):
    kind, table_path, sequences_path = tasks["localization"]
    table = read_task_table(table_path, kind)
    targets = Targets.from_training(kind, table.label)
    data = task_data(table, read_sequences(sequences_path), kind, targets)
    clients = [subset(data, np.arange(17)), subset(data, np.arange(17, 25))]
    settings = replace(SETTINGS, gradient_accumulation=1, max_epochs=50)
    method = LayerDropLora()
    federation = Federation(
        "localization",
        Training(TaskSettings(kind), method, 3, MODEL, settings, HEAD),
        FederatedSettings(aggregations=[aggregation], clients=2, rounds=3, local_epochs=2, seed=3),
        "iid",
        targets,
        clients,
        {},
    )
    assert federation.weights == [17 / 25, 8 / 25]
    model = federation.initial_model()
    if aggregation == "ffa":
        freeze_lora_a(model)
    trainers = federation.trainers(model)
    # Steps per epoch 3 and 1 (batches of 8), 2 local epochs, 3 rounds: LR and dropping schedules.
    assert [t.total_steps for t in trainers] == [18, 6] == federation.total_steps
    # Every client's trainer drops layers with its own fresh copy of the method.
    assert all(isinstance(t.method, LayerDropLora) and t.method is not method for t in trainers)
    assert trainers[0].method is not trainers[1].method and method.dropper is None
    assert [t.method.dropper.total_steps for t in trainers] == [18, 6]
    assert [t.generator.initial_seed() for t in trainers] == [3, 1003]
    assert [t.method.dropper.generator.initial_seed() for t in trainers] == [3, 1003]
    assert all(t.model is model for t in trainers)
    trained_a = [n for n in trainers[0].trainable if ".lora_A." in n]
    assert bool(trained_a) == (aggregation != "ffa")
    assert any(".lora_B." in n for n in trainers[0].trainable)


def test_iid_partition_is_balanced_disjoint_and_complete():
    classes = np.arange(103) % 3
    parts = partition_clients(classes, 4, "iid", 1.0, 0)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    again = partition_clients(classes, 4, "iid", 1.0, 0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_clients(classes, 4, "iid", 1.0, 1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))
    assert [len(p) for p in partition_clients(classes, 1, "iid", 1.0, 5)] == [103]


def majority_share(parts, classes) -> float:
    """Mean over clients of the share of a client's rows in its most frequent class."""
    return float(np.mean([np.bincount(classes[p]).max() / len(p) for p in parts]))


def test_dirichlet_partition_is_skewed_and_seeded():
    classes = np.repeat(np.arange(4), 50)
    parts = partition_clients(classes, 4, "dirichlet", 0.1, 0)
    assert all(len(p) for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(200))
    assert majority_share(parts, classes) > 0.55
    assert majority_share(partition_clients(classes, 4, "iid", 0.1, 0), classes) < 0.4
    again = partition_clients(classes, 4, "dirichlet", 0.1, 0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_clients(classes, 4, "dirichlet", 0.1, 1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_classes_for_label_skew():
    values = pd.Series([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 9.0, 8.0, 7.0, 6.0])
    bins = row_classes(values, Targets("regression"))
    assert list(bins) == [2, 0, 1, 1, 2, 0, 4, 4, 3, 3]
    assert list(row_classes(values[:3], Targets("regression"))) == [2, 0, 1]
    multilabel = Targets("multilabel", classes=["a", "b", "c"])
    assert list(row_classes(pd.Series(["b;a", "c", "a;c"]), multilabel)) == ["b", "c", "a"]
    binary = Targets("binary", classes=["0", "1"])
    assert list(row_classes(pd.Series(["1", "0"]), binary)) == ["1", "0"]


@pytest.mark.parametrize(
    ("classes", "clients", "message"),
    [
        (np.arange(3), 5, "5 clients but only 3 training rows: every client needs at least one"),
        (np.repeat([0, 1], 20), 8, "0.001, some of the 8 clients always got no training row"),
    ],
)
def test_impossible_partitions_are_refused(classes, clients, message):
    with pytest.raises(InputError, match=message) as error:
        partition_clients(classes, clients, "dirichlet", 0.001, 0)
    assert "fewer clients" in str(error.value) or "at most 3 clients" in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"method": "full"},
            r"federated training needs a peft adapter and one fixed rank for every module; "
            r"method full has none \(methods that do: lora, copra\)",
        ),
        ({"aggregations": ["fedavg", "median"]}, r"must be distinct names from fedavg, exact, ffa"),
        ({"partition": "shards"}, "partition 'shards' is not one of iid, dirichlet"),
        ({"rounds": 0}, "rounds is 0; it must be positive"),
        ({"clients": 500}, "500 clients but only 32 training rows"),
    ],
)
def test_bad_settings_fail_before_training(tasks, tmp_path, options, message):
    options = {"method": "lora", **options}
    with pytest.raises(InputError, match=message):
        federated(tasks, "localization", output=tmp_path / "out.tsv", **options)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "method", "partition", "metric"),
    [("localization", "lora", "iid", "aupr"), ("stability", "copra", "dirichlet", "spearman")],
)
def test_table_has_every_round_and_is_reproducible(
    tasks, tmp_path, name, method, partition, metric
):
    # Two optimizer steps per local epoch: A moves too (from B = 0, one step moves B only).
    options = {
        "partition": partition,
        "clients": 2,
        "rounds": 2,
        "dirichlet_alpha": 0.5,
        "settings": replace(SETTINGS, gradient_accumulation=1),
    }
    aggregations = ["fedavg", "exact", "ffa"]
    table = federated(tasks, name, method, tmp_path / "a.tsv", aggregations=aggregations, **options)
    assert list(table.columns) == COLUMNS
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.tsv", sep="\t"), table)
    assert set(table.task) == {name} and set(table.clients) == {2}
    for how in aggregations:
        part = table[table.aggregation == how]
        scores = part[part.split != "aggregate"]
        assert len(scores) == 3 * 2 * 2
        assert set(zip(scores["round"], scores.split, scores.metric, strict=True)) == {
            (r, s, m) for r in (0, 1, 2) for s in ("valid", "test") for m in ("loss", metric)
        }
        errors = part[part.split == "aggregate"]
        assert list(errors["round"]) == [1, 2] and set(errors.metric) == {"aggregation_error"}
    error = table[table.split == "aggregate"].pivot(
        index="round", columns="aggregation", values="value"
    )
    assert (error.ffa < 1e-5).all() and (error.fedavg > 1e-4).all() and (error.exact > 0).all()
    # Round 1 starts every aggregation from the same model and seeds: the same client states,
    # so the truncated SVD cannot be further from the mean dW than mean(B) mean(A).
    assert error.exact[1] <= error.fedavg[1]
    loss = table[(table.split == "valid") & (table.metric == "loss")]
    loss = loss.pivot(index="round", columns="aggregation", values="value")
    assert loss.loc[0].nunique() == 1, "every aggregation starts from the same global model"
    assert (loss.loc[2] != loss.loc[0]).all()

    manifest = json.loads((tmp_path / "a.manifest.json").read_text())
    train = (pd.read_csv(tasks[name][1], sep="\t").split == "train").sum()
    assert sum(manifest["partition_sizes"]) == train and min(manifest["partition_sizes"]) >= 1
    assert manifest["client_seeds"] == [3, 1003] and manifest["aggregations"] == aggregations
    # The method's own settings sections only: layer dropping for copra alone.
    assert manifest["lora"]["rank"] == LoraSettings().rank
    assert ("layer_drop" in manifest) == (method == "copra")

    # Same seed, aggregations in the other order: the same rows for every aggregation.
    again = federated(
        tasks, name, method, tmp_path / "b.tsv", aggregations=aggregations[::-1], **options
    )
    for how in aggregations:
        pd.testing.assert_frame_equal(
            table[table.aggregation == how].reset_index(drop=True),
            again[again.aggregation == how].reset_index(drop=True),
            check_exact=True,
        )

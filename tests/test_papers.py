"""The papers' layouts: each number equals the rows of the tables it is built from (one of each
recomputed here), intervals against scipy, the one-seed bootstrap fallback, and absent tables."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
from conftest import check_figure
from scipy import stats

from copra import papers
from copra.cli import main
from copra.intervals import interval_table, mean_interval

# The columns of the real tables, as the demo writes them.
METRICS = ["task", "method", "seed", "split", "metric", "value", "ci_low", "ci_high"]
MERGING = [
    *("task", "method", "merge", "weights", "combination", "exact_in_dw", "split", "metric"),
    *("merged", "sources", "source_values", "source_mean", "source_best"),
    "max_output_diff_vs_sum",
]
PRUNING = ["task", "method", "seed", "scheme", "amount", "split", "metric", "value"]
LMC = ["task", "method", "seed_a", "seed_b", "path", "alpha", "split", "metric", "value"]
BARRIERS = ["task", "method", "seed_a", "seed_b", "path", "split", "metric", "barrier"]
EFFICIENCY = [
    *("task", "method", "seed", "trainable_parameters", "total_parameters", "wall_time_s"),
    *("peak_memory_mb", "epochs_run", "trainable_fraction"),
]
SEEDS = (0, 1, 2)
PAIRS = ((0, 1), (0, 2), (1, 2))
TASKS = {
    "loc": ("sequence_classification", ["aupr", "mcc"]),
    "stab": ("sequence_regression", ["spearman", "rmse"]),
    "rna": ("complex_regression", ["spearman", "pearson", "rmse", "mae"]),
}
ADAPTERS = ("lora", "copra")


def _metrics(rng) -> pd.DataFrame:
    rows = []
    for task, (kind, names) in TASKS.items():
        splits = ("test", "ddg") if kind == "complex_regression" else ("valid", "test")
        for method in ("head", "lora", "copra", "full")[: 3 if task == "rna" else 4]:
            for seed in SEEDS:
                for split in splits:
                    for metric in names:
                        value = rng.uniform(0.3, 0.9)
                        rows.append((task, method, seed, split, metric, value, value - 0.1, value))
    return pd.DataFrame(rows, columns=METRICS)


def _merging(rng) -> pd.DataFrame:
    rows = []
    for task in ("loc", "stab"):
        metric = TASKS[task][1][0]
        for method in ADAPTERS:
            for merge, weights in (("seeds", "1:1"), ("tasks", "1 each")):
                for combination in ("exact", "linear", "ties"):
                    for split in ("valid", "test"):
                        for name in ("loss", metric):
                            value = rng.uniform(0.3, 0.9)
                            exact = combination == "exact"
                            sources = ("seed0,seed1", "0.5,0.6", 0.55, 0.6, 0.0)
                            rows.append(
                                (task, method, merge, weights, combination, exact, split, name)
                                + (value, *sources)
                            )
    return pd.DataFrame(rows, columns=MERGING)


def _pruning(rng) -> pd.DataFrame:
    schemes = [("none", 0.0), ("every_other", 0.5), ("magnitude_dw", 0.5), ("magnitude_dw", 0.9)]
    rows = [
        ("loc", method, seed, scheme, amount, split, metric, rng.uniform(0.3, 0.9))
        for method in ADAPTERS
        for seed in SEEDS
        for scheme, amount in schemes
        for split in ("valid", "test")
        for metric in ("loss", "aupr")
    ]
    return pd.DataFrame(rows, columns=PRUNING)


def _lmc(rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    curve, barriers = [], []
    for method in ADAPTERS:
        for a, b in PAIRS:
            for path in ("product", "factors"):
                for split in ("valid", "test"):
                    for metric in ("loss", "aupr"):
                        for alpha in (0.0, 0.5, 1.0):
                            value = rng.uniform(0.3, 0.9)
                            curve.append(("loc", method, a, b, path, alpha, split, metric, value))
                        barrier = rng.uniform(0, 0.1)
                        barriers.append(("loc", method, a, b, path, split, metric, barrier))
    return pd.DataFrame(curve, columns=LMC), pd.DataFrame(barriers, columns=BARRIERS)


def _efficiency() -> pd.DataFrame:
    trainable = {"head": 20_000, "lora": 60_000, "copra": 60_000, "full": 7_500_000}
    rows = [
        (task, method, seed, count, 7_600_000, 10.0 + seed, 500.0 + seed, 2, count / 7_600_000)
        for task in TASKS
        for method, count in trainable.items()
        if not (task == "rna" and method == "full")
        for seed in SEEDS
    ]
    return pd.DataFrame(rows, columns=EFFICIENCY)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    curve, barriers = _lmc(rng)
    return {
        "metrics": _metrics(rng),
        "merging": _merging(rng),
        "pruning": _pruning(rng),
        "lmc": curve,
        "lmc_barriers": barriers,
        "efficiency": _efficiency(),
    }


@pytest.fixture
def sources(tables, tmp_path) -> dict:
    """The tables as files, with the metrics manifest of a run of these tasks."""
    paths = {}
    for name, table in tables.items():
        paths[name] = tmp_path / f"{name}.tsv"
        table.to_csv(paths[name], sep="\t", index=False)
    paths["metrics_manifest"] = tmp_path / "metrics.manifest.json"
    config = {
        "model": {"name": "esm2_t6_8M_UR50D", "weights": "random"},
        "finetune": {"max_epochs": 2},
        "tasks": {
            task: {"kind": kind, "finetune": {"max_epochs": 8}} for task, (kind, _) in TASKS.items()
        },
    }
    paths["metrics_manifest"].write_text(json.dumps({"config": config, "seeds": list(SEEDS)}))
    return paths


def _one(table, **where) -> pd.Series:
    mask = np.logical_and.reduce([table[k] == v for k, v in where.items()])
    (index,) = np.flatnonzero(mask)
    return table.iloc[index]


def _rows(table, **where) -> pd.DataFrame:
    return table[np.logical_and.reduce([table[k] == v for k, v in where.items()])]


def test_the_t_interval_is_scipys():
    values = [0.61, 0.70, 0.66, 0.74]
    found = mean_interval(values)
    sem = stats.sem(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert (found.low, found.high) == pytest.approx((low, high))
    assert found.value == pytest.approx(np.mean(values)) and found.n == 4 and found.kind == "t"


def test_one_seed_keeps_its_bootstrap_interval():
    found = mean_interval([0.7, np.nan], [0.6, np.nan], [0.8, np.nan])  # one defined value
    assert (found.value, found.low, found.high, found.n, found.kind) == (
        0.7,
        0.6,
        0.8,
        1,
        "bootstrap",
    )
    assert mean_interval([0.7]).kind == "none"  # no bootstrap bounds: no interval
    frame = pd.DataFrame({"m": ["a"], "value": [0.5], "ci_low": [0.4], "ci_high": [0.55]})
    row = interval_table(frame, ["m"]).iloc[0]
    assert (row.low, row.high, row.n, row.interval) == (0.4, 0.55, 1, "bootstrap")


def test_table_r3_numbers_are_the_source_rows(tables):
    r3 = papers.table_r3(tables["metrics"], tables["merging"], tables["pruning"])
    assert list(r3.columns) == papers.R3
    assert set(r3.method) == set(ADAPTERS) and set(r3.task) == {"loc", "stab"}
    alone = _rows(tables["metrics"], task="loc", method="copra", split="test", metric="aupr")
    merges = _rows(tables["merging"], task="loc", method="copra", merge="seeds", split="test")
    merged = _one(merges, combination="exact", metric="aupr").merged
    row = _one(r3, task="loc", method="copra", quantity="merged seeds 1:1 (exact)")
    assert row.value == merged and (row.n, row.interval) == (1, "none")
    assert row.minus_single_task == pytest.approx(merged - alone.value.mean())
    single = _one(r3, task="loc", method="copra", quantity="single task")
    low, high = stats.t.interval(0.95, 2, loc=alone.value.mean(), scale=stats.sem(alone.value))
    assert (single.low, single.high) == pytest.approx((low, high))
    assert (single.n, single.interval, single.minus_single_task) == (3, "t", 0)
    pruned = _rows(tables["pruning"], method="lora", scheme="magnitude_dw", amount=0.5)
    half = _one(r3, task="loc", method="lora", quantity="pruned magnitude_dw 50%")
    assert half.value == pytest.approx(_rows(pruned, split="test", metric="aupr").value.mean())
    assert half.n == 3 and "ties" not in " ".join(r3.quantity)


def test_table_r3_of_one_seed_takes_the_bootstrap_interval(tables):
    one = tables["metrics"][tables["metrics"].seed == 0]
    r3 = papers.table_r3(one, tables["merging"], None)
    single = _one(r3, task="stab", method="lora", quantity="single task")
    source = _one(one, task="stab", method="lora", split="test", metric="spearman")
    assert (single.value, single.low, single.high) == (source.value, source.ci_low, source.ci_high)
    assert (single.n, single.interval) == (1, "bootstrap")
    assert not r3.quantity.str.startswith("pruned").any()


def test_lmc_barrier_and_curve_are_means_over_seed_pairs(tables):
    layout = papers.lmc_layout(tables["lmc"], tables["lmc_barriers"])
    assert list(layout.columns) == papers.LMC
    where = {"method": "lora", "path": "factors", "split": "test", "metric": "loss"}
    barrier = _one(layout, quantity="barrier", **where)
    sources = _rows(tables["lmc_barriers"], **where).barrier
    assert barrier.value == pytest.approx(sources.mean()) and barrier.n == len(PAIRS)
    assert barrier.interval == "t" and barrier.low < barrier.value < barrier.high
    middle = _one(layout, quantity="curve", alpha=0.5, **where)
    assert middle.value == pytest.approx(_rows(tables["lmc"], alpha=0.5, **where).value.mean())


def test_peft_x_is_the_trainable_parameters(tables):
    layout = papers.peft_parameters(tables["metrics"], tables["efficiency"])
    assert list(layout.columns) == papers.PEFT
    lora = _one(layout, task="loc", method="lora")
    runs = _rows(tables["efficiency"], task="loc", method="lora")
    assert lora.trainable_parameters == runs.trainable_parameters.iloc[0]
    assert lora.wall_time_s == pytest.approx(runs.wall_time_s.mean())
    scored = _rows(tables["metrics"], task="loc", method="lora", split="test", metric="aupr")
    assert lora.value == pytest.approx(scored.value.mean()) and lora.n == 3
    assert set(layout.method[layout.task == "rna"]) == {"head", "lora", "copra"}


def test_affinity_is_the_complex_tasks_out_of_fold_metrics(tables):
    layout = papers.affinity(tables["metrics"], ["rna"])
    assert list(layout.columns) == papers.AFFINITY and set(layout.task) == {"rna"}
    assert set(layout.metric) == set(papers.AFFINITY_METRICS) and set(layout.split) == {
        "test",
        "ddg",
    }
    pearson = _one(layout, method="copra", split="test", metric="pearson")
    seeds = _rows(tables["metrics"], task="rna", method="copra", split="test", metric="pearson")
    assert pearson.value == pytest.approx(seeds.value.mean()) and pearson.n == 3


def test_the_command_writes_every_layout_and_its_provenance(sources, tmp_path, caplog):
    out = tmp_path / "papers"
    argv = ["papers", "--output-dir", str(out)]
    for name, path in sources.items():
        argv += [f"--{name.replace('_', '-')}", str(path)]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "overlapping text" not in caplog.text
    for name in papers.LAYOUTS:
        assert len(pd.read_csv(out / f"{name}.tsv", sep="\t")) > 0, name
        check_figure(out / f"{name}.png")
    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["run"]
    assert run["backbone"] == "esm2_t6_8M_UR50D" and run["seeds"] == [0, 1, 2]
    assert run["max_epochs"] == 8  # the tasks' own finetune values above finetune's 2
    assert str(sources["merging"]) in manifest["inputs"]
    assert all(entry["ran"] for entry in manifest["layouts"].values())


def test_an_absent_table_makes_an_empty_layout_and_a_not_run_figure(sources, tmp_path):
    out = tmp_path / "papers"
    keep = ("metrics", "metrics_manifest", "efficiency")
    papers.run_papers(out, **{name: sources[name] for name in keep})
    for name, columns in (("copra_table_r3", papers.R3), ("copra_lmc", papers.LMC)):
        table = pd.read_csv(out / f"{name}.tsv", sep="\t")
        assert table.empty and list(table.columns) == columns
        check_figure(out / f"{name}.png")
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["layouts"]["copra_lmc"]["ran"] and manifest["sources"]["lmc"] is None
    assert manifest["layouts"]["peft_parameters"]["ran"]
    no_complex = papers.affinity(pd.read_csv(sources["metrics"], sep="\t"), [])
    assert no_complex.empty and list(no_complex.columns) == papers.AFFINITY

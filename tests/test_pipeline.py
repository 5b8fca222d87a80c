"""The real pipeline on the bundled demo, through Snakemake: results, a no-op rerun, the report."""

import json
import zipfile

import pandas as pd
import pytest
from conftest import REPO, check_figure, snakemake

pytestmark = pytest.mark.slow


def test_demo_metrics_cover_every_task(demo_run):
    metrics = pd.read_csv(demo_run / "results" / "metrics.tsv", sep="\t")
    assert list(metrics.columns) == [
        "task",
        "method",
        "seed",
        "split",
        "metric",
        "value",
        "ci_low",
        "ci_high",
    ]
    tasks = {"localization", "membrane", "stability", "interaction"}
    assert set(metrics.task) == tasks | {"rna_affinity"}
    assert set(metrics.split) == {"valid", "test", "ddg"}
    assert set(metrics.method) == {"head", "lora", "copra", "adalora", "lingo", "full"}
    # each task's own `methods:` (config.yaml); the complex task: head, lora, copra
    trained = {
        "localization": 3,
        "stability": 3,
        "membrane": 1,
        "interaction": 6,
        "rna_affinity": 3,
    }
    assert metrics.groupby("task").method.nunique().to_dict() == trained
    regression = metrics[metrics.task == "stability"]
    assert set(regression.metric) == {"spearman", "pearson", "rmse", "mae"}
    classification = metrics[metrics.task == "interaction"]
    assert set(classification.metric) == {"aupr", "auroc", "mcc", "accuracy", "f1_macro"}
    assert (metrics.ci_low <= metrics.value + 1e-9).all()
    assert (metrics.value <= metrics.ci_high + 1e-9).all()
    # The planted composition signals are learnt even with random backbone weights.
    test = metrics[(metrics.split == "test") & metrics.metric.isin(["aupr", "spearman"])]
    assert (test[test.task == "interaction"].value > 0.6).all(), test
    assert (test[test.task == "rna_affinity"].value > 0.3).all(), test


def test_demo_adapters_learn_what_the_head_cannot(demo_run):
    """The two order-signal tasks (README, The demo): the head on frozen random-weight features
    stays at most 0.70 (macro AUPR, Spearman) on test, LoRA reaches 0.85, on every seed."""
    metrics = pd.read_csv(demo_run / "results" / "metrics.tsv", sep="\t")
    test = metrics[(metrics.split == "test") & metrics.metric.isin(["aupr", "spearman"])]
    gap = test[test.task.isin(["localization", "stability"])].set_index(["task", "method", "seed"])
    assert (gap.xs("head", level="method").value <= 0.70).all(), gap
    lora = gap.xs("lora", level="method").value
    assert len(lora) == 2 * 3 and (lora >= 0.85).all(), gap


def test_demo_complex_task(demo_run):
    """40 generated complexes: 5-fold CV, each predicted once, mutations scored, a figure."""
    data = demo_run / "results/rna_affinity/data"
    table = pd.read_csv(data / "table.tsv", sep="\t")
    assert len(table) == 40 and set(table.fold) == set(range(5))
    mutations = pd.read_csv(demo_run / "resources/demo/complex_mutations.csv")
    for method in ("head", "lora", "copra"):
        run = demo_run / "results/rna_affinity" / method / "seed0"
        predictions = pd.read_csv(run / "predictions.tsv", sep="\t")
        assert sorted(predictions.id[predictions.split == "test"]) == sorted(table.id)
        assert (predictions.split == "ddg").sum() == len(mutations)
        assert json.loads((run / "manifest.json").read_text())["folds"] == 5
    assert not (demo_run / "results/rna_affinity/full").exists()
    summary = pd.read_csv(data / "summary.tsv", sep="\t")
    assert set(summary.split) == {f"fold {k}" for k in range(5)}
    figure = demo_run / "results/figures/complexes.png"
    check_figure(figure)


def test_demo_summary_and_efficiency(demo_run):
    summary = pd.read_csv(demo_run / "results" / "summary.tsv", sep="\t").set_index("task")
    assert len(summary) == 5 and summary.copra_minus_lora.drop("membrane").notna().all()
    adaptive = summary.loc[["interaction"]]
    assert adaptive[["adalora_minus_lora", "lingo_minus_adalora"]].notna().all().all()
    efficiency = pd.read_csv(demo_run / "results" / "efficiency.tsv", sep="\t")
    # 16 runs on seed 0, and seeds 1 and 2 of lora and copra on the two tasks the adapter
    # analyses read
    assert len(efficiency) == 16 + 2 * 2 * 2 and (efficiency.trainable_parameters > 0).all()
    # budget-matched: LoRA at rank 4 and AdaLoRA after its budget of 4 per module
    runs = efficiency[efficiency.task == "interaction"].set_index("method").trainable_parameters
    assert runs["adalora"] == runs["lora"] + 12 * 4  # the same rows of A and B, and E
    lora = efficiency[(efficiency.method == "lora") & (efficiency.task == "stability")]
    assert (lora.trainable_fraction < 0.05).all()
    comparison = pd.read_csv(demo_run / "results" / "comparison.tsv", sep="\t")
    # pruning runs on localization only: its comparison has every quantity
    localization = comparison[comparison.task == "localization"].set_index("quantity")
    quantities = {
        "single task",
        "merged seeds 1:1 (exact)",
        "merged tasks (exact)",
        "pruned every other layer",
        "pruned magnitude_dw 50%",
    }
    assert quantities <= set(localization.index)
    assert localization[["lora", "copra", "copra_minus_lora"]].notna().all().all()


def test_demo_allocates_adaptive_ranks(demo_run):
    """AdaLoRA and Lingo on the pair task: every allocation in one table, the final ranks'
    figure."""
    table = pd.read_csv(demo_run / "results" / "rank_allocation.tsv", sep="\t")
    assert set(table.method) == {"adalora", "lingo"}
    assert set(table.task) == {"interaction"}
    for (task, method), part in table.groupby(["task", "method"]):
        last = part[part.step == part.step.max()]
        assert len(last) == 12  # k_proj and v_proj of 6 blocks
        budget = last.budget.iloc[0]
        assert budget == 4 * 12 and last.kept.sum() == budget + (
            last.reintroduced.sum() - last.dropped.sum()
        )
        manifest = json.loads(
            (demo_run / f"results/{task}/{method}/seed0/manifest.json").read_text()
        )
        assert manifest["kept_triplets"] == last.kept.sum()
    check_figure(demo_run / "results" / "figures" / "rank_allocation.png")


def test_demo_records_provenance(demo_run):
    manifest = json.loads((demo_run / "results" / "metrics.manifest.json").read_text())
    assert manifest["versions"]["torch"].startswith("2.13.0")
    assert manifest["config"]["model"]["weights"] == "random"
    assert manifest["seeds"] == [0, 1, 2]  # seeds: [0], and the adapter analyses' 1 and 2
    assert all(len(digest) == 64 for digest in manifest["inputs"].values())
    run = json.loads((demo_run / "results/interaction/head/seed0/manifest.json").read_text())
    assert run["seed"] == 0 and run["trainable_parameters"] > 0
    assert run["config"]["tasks"]["interaction"]["kind"] == "pair_classification"
    for figure in ("metrics", "training_curves", "lmc", "complexes", "data/localization"):
        png = demo_run / "results" / "figures" / f"{figure}.png"
        check_figure(png)
    copra_run = json.loads((demo_run / "results/stability/copra/seed0/manifest.json").read_text())
    assert copra_run["wrapped_modules"] and copra_run["layer_activation_counts"]
    assert (demo_run / "results/stability/copra/seed0/adapter/adapter_model.safetensors").is_file()


def test_rerun_does_no_work(demo_run):
    """A real rerun with nothing changed runs no job and touches no result (README)."""
    before = {p: p.stat().st_mtime_ns for p in (demo_run / "results").rglob("*") if p.is_file()}
    result = snakemake(demo_run, "--configfile", REPO / "config.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr
    after = {p: p.stat().st_mtime_ns for p in (demo_run / "results").rglob("*") if p.is_file()}
    assert after == before


def test_report_is_written_as_html_and_zip(demo_run):
    snakemake(demo_run, "--configfile", REPO / "config.yaml", "--report", "report.html")
    html = (demo_run / "report.html").read_text(errors="replace")
    assert "metrics.tsv" in html and "metrics.png" in html and "training_curves.png" in html
    snakemake(demo_run, "--configfile", REPO / "config.yaml", "--report", "report.zip")
    with zipfile.ZipFile(demo_run / "report.zip") as archive:
        names = archive.namelist()
        assert "report/report.html" in names, names[:20]
        figures = [name for name in names if name.endswith(".png")]
        # every figure of the report (36 in the demo, the 4 paper layouts among them) as a file
        assert any(name.endswith("/design.png") for name in figures), figures
        assert len(figures) == 36, figures
        for name in figures:
            assert archive.read(name).startswith(b"\x89PNG"), name


def test_figures_have_no_overlapping_text(demo_run):
    # `_save` logs a warning for each two overlapping pieces of text; the rules' logs keep them.
    logs = [path for path in (demo_run / "logs").rglob("*.log")]
    overlaps = [
        line
        for path in logs
        for line in path.read_text().splitlines()
        if "overlapping text" in line
    ]
    assert len(logs) > 50 and not overlaps, overlaps


def test_demo_measures_linear_mode_connectivity(demo_run):
    curve = pd.read_csv(demo_run / "results" / "lmc.tsv", sep="\t")
    assert set(curve.method) == {"lora", "copra"} and set(curve.task) == {"localization"}
    assert set(curve.path) == {"product", "factors"} and curve.alpha.nunique() == 6
    barriers = pd.read_csv(demo_run / "results" / "lmc_barriers.tsv", sep="\t")
    assert len(barriers) == 2 * 2 * 2 * 2 * 3  # methods, paths, splits, metrics, seed pairs
    pairs = {(0, 1), (0, 2), (1, 2)}
    assert set(zip(barriers.seed_a, barriers.seed_b, strict=True)) == pairs
    assert (barriers.barrier >= 0).all()  # the endpoints lie on their own line


def test_demo_merges_seeds_and_tasks(demo_run):
    table = pd.read_csv(demo_run / "results" / "merging.tsv", sep="\t")
    assert set(table.method) == {"lora", "copra"}
    assert set(table.task) == {"localization", "stability"}
    assert set(table[table["merge"] == "seeds"].weights) == {"1:1"}
    assert set(table[table["merge"] == "seeds"].sources) == {
        "seed0,seed1",
        "seed0,seed2",
        "seed1,seed2",
    }
    assert set(table[table["merge"] == "tasks"].sources) == {"localization", "stability"}
    assert table.combination.nunique() == 12
    exact = table[table.combination.isin(["exact", "cat"])]
    assert exact.max_output_diff_vs_sum.max() < 1e-4
    for task in ("localization", "stability"):
        figure = demo_run / "results" / "figures" / "merging" / f"{task}.png"
        check_figure(figure)


def test_demo_trains_federated(demo_run):
    table = pd.read_csv(demo_run / "results" / "federated.tsv", sep="\t")
    assert set(table.method) == {"lora", "copra"}
    assert set(table.task) == {"localization"}
    assert set(table.partition) == {"dirichlet"}
    assert set(table.aggregation) == {"fedavg", "exact", "ffa"}
    assert set(table["round"]) == {0, 1, 2} and set(table.clients) == {2}
    errors = table[table.metric == "aggregation_error"]
    assert errors[errors.aggregation == "ffa"].value.max() < 1e-5
    check_figure(demo_run / "results" / "figures" / "federated.png")


def test_demo_learns_continual_sequences(demo_run):
    """Both demo sequences with every method: each job's metrics, their means, the figure."""
    table = pd.read_csv(demo_run / "results" / "continual.tsv", sep="\t")
    assert set(table.sequence) == {"compartment_steps", "two_organisms"}
    every = {"lae", "online", "offline", "sequential", "joint", "independent", "head"}
    methods = table.groupby("sequence").method.unique().map(set)
    assert methods["compartment_steps"] == every
    assert methods["two_organisms"] == {"lae", "online", "offline", "sequential"}  # its own
    steps = table[(table.quantity == "seen") & (table.sequence == "compartment_steps")]
    assert sorted(steps.after_step.unique()) == [0, 1, 2]
    means = table[table.statistic == "mean"]
    assert set(means.quantity) == {"A_last", "A_bar", "forgetting"}
    bounded = table[(table.statistic == "value") & (table.quantity.isin(["a", "seen", "A_last"]))]
    assert bounded.value.between(0, 1).all()
    step = demo_run / "results/continual/compartment_steps/lae/order0/seed0/step2"
    assert (step / "offline/adapter/adapter_model.safetensors").is_file()
    assert not (demo_run / "results/compartments/head").exists()  # methods: [] trains nothing
    check_figure(demo_run / "results" / "figures" / "continual.png")


def test_demo_designs_sequences_that_beat_the_offline_set(demo_run, tmp_path):
    """Offline design on the demo's additive landscape (the oracle is nearly exact): every
    method's designs scored, the gradient methods' best above the offline set's best, and the
    designs scored by a trained run through copra predict."""
    from copra.cli import main

    table = pd.read_csv(demo_run / "results" / "design.tsv", sep="\t", dtype={"seed": str})
    runs = table[table.seed == "0"].set_index("method")
    assert set(runs.index) == {"bib", "bdi", "gradient_ascent", "forward", "backward", "random"}
    assert (runs.oracle_spearman > 0.9).all(), runs.oracle_spearman
    for method in ("bib", "bdi", "gradient_ascent"):
        assert runs.oracle_p100[method] > runs.offline_best[method], runs.loc[method]
    assert runs.hamming_to_start["random"] == runs.hamming_to_start["bib"]
    assert len(table[table.seed == "all"]) == 6
    check_figure(demo_run / "results" / "figures" / "design.png")
    designs = demo_run / "results/design/fitness/bib/seed0/designs.fasta"
    run, table = demo_run / "results/stability/head/seed0", "results/stability/data/table.tsv"
    argv = ["predict", "--run", run, "--sequences", designs, "--output", tmp_path / "scored.tsv"]
    argv += ["--training-table", demo_run / table, "--model", "esm2_t6_8M_UR50D"]
    assert main([*map(str, argv), "--weights", "random"]) == 0
    scored = pd.read_csv(tmp_path / "scored.tsv", sep="\t")
    assert scored.id.tolist() == [f"fitness_bib_seed0_{i:03d}" for i in range(16)]
    assert scored.prediction.notna().all() and not scored.in_training.any()


def test_demo_measures_shapley_values_and_pruning(demo_run):
    shapley = pd.read_csv(demo_run / "results" / "shapley.tsv", sep="\t")
    assert set(shapley.method) == {"lora", "copra"}
    assert set(shapley.task) == {"localization"}
    assert set(shapley.estimator) == {"exact"} and set(shapley.layer) == set(range(6))
    seeds = {0, 1, 2}  # shapley.seeds and pruning.seeds of the demo
    assert set(shapley.seed) == seeds
    for _, part in shapley.groupby(["task", "method", "seed", "value"]):
        total = part.v_all.iloc[0] - part.v_none.iloc[0]
        assert abs(part.shapley.sum() - total) < 1e-9
    pruning = pd.read_csv(demo_run / "results" / "pruning.tsv", sep="\t")
    assert set(pruning.method) == {"lora", "copra"} and set(pruning.seed) == seeds
    assert {
        "every_other",
        "keep_low",
        "lowest_shapley",
        "lowest_norm",
        "random",
        "magnitude_dw",
        "magnitude_ab",
    } <= set(pruning.scheme)
    for figure in ("shapley.png", "pruning.png"):
        check_figure(demo_run / "results" / "figures" / figure)


def test_demo_predicts_new_proteins_and_screens_pairs(demo_run):
    """Ensembles of two seeds score new proteins (the one seen in training is marked); every
    pair of the interaction task's partners is screened and the best 50 kept; new complexes
    get the mean of the folds."""
    folder = demo_run / "results" / "predictions"
    columns = ["score:cytoplasm", "score:membrane", "score:secreted"]
    for method in ("head", "lora"):
        table = pd.read_csv(folder / "new_proteins" / f"{method}.tsv", sep="\t")
        assert len(table) == 10 and table.in_training.tolist() == [False] * 9 + [True]
        assert (table[columns].sum(axis=1) - 1).abs().max() < 1e-5
        assert table[[f"{c}_std" for c in columns]].notna().all().all()
        assert {f"{c}@seed{k}" for c in columns for k in range(2)} <= set(table.columns)
        manifest = json.loads((folder / "new_proteins" / f"{method}.manifest.json").read_text())
        assert [run["seed"] for run in manifest["runs"]] == [0, 1]
        screen = pd.read_csv(folder / "partner_screen" / f"{method}.tsv", sep="\t")
        assert len(screen) == 50 and screen.score.is_monotonic_decreasing
        histogram = pd.read_csv(folder / "partner_screen" / f"{method}.histogram.tsv", sep="\t")
        assert histogram.pairs.sum() == 45 * 44 // 2
        complexes = pd.read_csv(folder / "new_complexes" / f"{method}.tsv", sep="\t")
        assert len(complexes) == 4 and not complexes.in_training.any()
        assert complexes.prediction.notna().all() and complexes.held_out_fold.isna().all()
        for job in ("new_proteins", "partner_screen", "new_complexes"):
            check_figure(folder / job / f"{method}.png")


def test_demo_paper_layouts_carry_intervals_across_seeds(demo_run):
    """results/papers/: three seeds of lora and copra give t-intervals (n = 3); one seed keeps
    its bootstrap interval; the numbers are the gathered tables' (one recomputed here)."""
    papers = demo_run / "results" / "papers"
    metrics = pd.read_csv(demo_run / "results" / "metrics.tsv", sep="\t")
    r3 = pd.read_csv(papers / "copra_table_r3.tsv", sep="\t")
    single = r3[r3.quantity == "single task"].set_index(["task", "method"])
    assert set(single.n) == {3} and set(single.interval) == {"t"}
    rows = metrics[(metrics.task == "stability") & (metrics.method == "copra")]
    spearman = rows[(rows.split == "test") & (rows.metric == "spearman")].value
    assert single.loc[("stability", "copra"), "value"] == pytest.approx(spearman.mean())
    merged = r3[r3.quantity == "merged seeds 1:1 (exact)"]
    assert set(merged.n) == {3} and merged.minus_single_task.notna().all()
    lmc = pd.read_csv(papers / "copra_lmc.tsv", sep="\t")
    assert set(lmc[lmc.quantity == "barrier"].n) == {3}
    peft = pd.read_csv(papers / "peft_parameters.tsv", sep="\t").set_index(["task", "method"])
    assert peft.loc[("localization", "lora"), "n"] == 3
    assert peft.loc[("localization", "head"), "interval"] == "bootstrap"
    affinity = pd.read_csv(papers / "copra_affinity.tsv", sep="\t")
    assert set(affinity.task) == {"rna_affinity"} and set(affinity.metric) >= {"pearson", "mae"}
    for layout in ("copra_table_r3", "copra_lmc", "peft_parameters", "copra_affinity"):
        check_figure(papers / f"{layout}.png")


def test_demo_profile_counts_every_job_of_the_run(demo_run):
    """benchmarks/demo_profile.py on the demo's own Snakemake log: every job once, by rule."""
    import re
    import subprocess
    import sys

    log = sorted((demo_run / ".snakemake" / "log").glob("*.snakemake.log"))[0]  # the first run
    steps = int(re.findall(r"(\d+) of \1 steps \(100%\) done", log.read_text())[-1])
    printed = subprocess.run(
        [sys.executable, REPO / "benchmarks" / "demo_profile.py", log],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in printed[2:]}
    assert int(rows.pop("(total)")[0]) == steps == sum(int(jobs) for jobs, *_ in rows.values())
    assert int(rows["finetune_adapter"][0]) > 0 and float(rows["finetune_adapter"][1]) > 0

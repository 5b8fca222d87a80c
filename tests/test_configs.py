"""The papers' reproduction configs (configs/): each a valid config for real weights, and each
run for real with configs/smoke.yaml on small subsets of the shared data (or of the demo
generator's, where the paper's data is not there), filling its paper layout."""

import copy

import jsonschema
import pandas as pd
import pytest
import yaml
from conftest import R3_QUANTITIES, REPO, snakemake
from test_real_data import gb1_subset, yeast_subset

from copra.config import read_config_file, schema

CONFIGS = REPO / "configs"
SMOKE = CONFIGS / "smoke.yaml"
PAPERS = {  # config: the paper layout it fills
    "copra_table_r3": "copra_table_r3",
    "copra_lmc": "copra_lmc",
    "peft_proteins": "peft_parameters",
    "copra_affinity": "copra_affinity",
}


def update(tree: dict, later: dict) -> None:
    """`later` into `tree` key by key, as Snakemake's update_config merges config files."""
    for key, value in later.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            update(tree[key], value)
        else:
            tree[key] = value


def merged(*paths) -> dict:
    """The config files merged as the pipeline merges them: later files key by key."""
    tree = {}
    for path in paths:
        update(tree, copy.deepcopy(read_config_file(path)))
    return tree


@pytest.mark.parametrize("name", PAPERS)
def test_paper_config_is_valid_for_real_weights(name):
    """Known keys and valid values (copra check-config's checks), the paper's backbone with
    pretrained weights and three seeds; with smoke.yaml after it, a valid whole config whose
    tasks are the paper's, on the 8M architecture with random weights."""
    paper = read_config_file(CONFIGS / f"{name}.yaml")
    assert paper["model"] == {"name": "esm2_t33_650M_UR50D", "weights": "pretrained"}
    assert paper["seeds"] == [0, 1, 2]
    assert all(entry["labels"].startswith("data/") for entry in paper["tasks"].values())
    smoked = merged(CONFIGS / f"{name}.yaml", SMOKE)
    jsonschema.validate(smoked, schema())
    assert smoked["tasks"] == paper["tasks"] and smoked["methods"] == paper["methods"]
    assert smoked["model"] == {"name": "esm2_t6_8M_UR50D", "weights": "random"}


def test_smoke_override_keeps_the_paper_run():
    """smoke.yaml sets no tasks and no methods (the paper's stay), only sizes."""
    smoke = read_config_file(SMOKE)
    assert "tasks" not in smoke and "methods" not in smoke
    assert all("methods" not in section for section in smoke.values() if isinstance(section, dict))


# --- small subsets under the names the configs expect -------------------------------------


def yeast_files(shared_data, folder, positives=10, negatives=14, header=False):
    """A slice of the D-SCRIPT yeast pairs (headerless, or with a header and a split column:
    half train, a quarter valid, a quarter test, each with both classes) and a FASTA of the
    proteins it names, as pairs.tsv and sequences.fasta in `folder`."""
    from copra.sequences import read_fasta, write_fasta

    folder.mkdir(parents=True)
    pairs = pd.read_csv(
        yeast_subset(shared_data, folder, positives, negatives), sep="\t", header=None
    )
    (folder / "yeast_pairs.tsv").unlink()
    if header:
        pairs.columns = ["id_a", "id_b", "label"]
        rank = pairs.groupby("label").cumcount() / pairs.groupby("label").label.transform("size")
        pairs["split"] = pd.cut(rank, [-1, 0.49, 0.74, 1], labels=["train", "valid", "test"])
    pairs.to_csv(folder / "pairs.tsv", sep="\t", header=header, index=False)
    named = set(pairs.iloc[:, 0]) | set(pairs.iloc[:, 1])
    records = read_fasta(shared_data / "ppi_yeast" / "sequences.fasta")
    write_fasta(folder / "sequences.fasta", [(r.id, r.sequence) for r in records if r.id in named])


def symmetry_files(folder):
    """A multi-label stand-in for the homooligomer symmetry data, from the demo generator: a
    protein's compartment, and `stable` where its stability is above the median."""
    from copra.demo_data import write_demo_data

    demo = folder / "demo"
    write_demo_data(demo, 40, 0, n_complexes=10)
    table = pd.read_csv(demo / "localization.tsv", sep="\t")
    stability = pd.read_csv(demo / "stability.tsv", sep="\t").label
    stable = stability > stability.median()
    table["label"] = table.label.where(~stable, table.label + ";stable")
    (folder / "symmetry").mkdir()
    table.to_csv(folder / "symmetry" / "labels.tsv", sep="\t", index=False)
    (demo / "proteins.fasta").rename(folder / "symmetry" / "sequences.fasta")


def pra_files(shared_data, folder, complexes=18):
    """The PRDBv3 complexes of the smallest structure files, their rows of affinity.csv."""
    structures = sorted((shared_data / "pra" / "pdb").glob("*.pdb"), key=lambda p: p.stat().st_size)
    chosen = structures[:complexes]
    (folder / "pdb").mkdir(parents=True)
    for path in chosen:
        (folder / "pdb" / path.name).symlink_to(path)
    affinity = pd.read_csv(shared_data / "pra" / "affinity.csv")
    affinity[affinity.pdb.isin([p.stem for p in chosen])].to_csv(
        folder / "affinity.csv", index=False
    )


DATASETS = {  # config: its data (the two CopRA configs read the same files)
    "copra_table_r3": "yeast_gb1",
    "copra_lmc": "yeast_gb1",
    "peft_proteins": "peft",
    "copra_affinity": "pra",
}


def write_data(dataset, shared_data, data):
    """`data/` with the files of `dataset` under the names its configs expect, small."""
    if dataset == "yeast_gb1":
        yeast_files(shared_data, data / "ppi_yeast")
        (data / "gb1").mkdir()
        gb1_subset(shared_data, data / "gb1", per_split=(12, 6, 6))
    elif dataset == "peft":
        yeast_files(shared_data, data / "ppi_gold", header=True)
        symmetry_files(data)
    else:
        pra_files(shared_data, data / "pra")


@pytest.fixture(scope="module")
def workdir(shared_data, tmp_path_factory):
    """A working folder per dataset, with its data/: the two CopRA configs share one, and so
    the runs both read (trained by whichever runs first)."""
    folders = {}

    def folder(name):
        dataset = DATASETS[name]
        if dataset not in folders:
            folders[dataset] = tmp_path_factory.mktemp(dataset)
            write_data(dataset, shared_data, folders[dataset] / "data")
        return folders[dataset]

    return folder


def layout_rows(name, table: pd.DataFrame) -> None:
    """The rows the paper layout needs, every value defined."""
    assert not table.empty and table.value.notna().all(), table
    methods = set(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["methods"])
    assert set(table.method) == methods
    if name == "copra_table_r3":
        quantities = set(R3_QUANTITIES)
        assert set(table.task) == {"ppi_yeast", "gb1"}
        for _, part in table.groupby(["task", "method"]):
            assert set(part.quantity) == quantities
    elif name == "copra_lmc":
        assert set(table.task) == {"ppi_yeast", "gb1"} and set(table.path) == {"product", "factors"}
        assert set(table.quantity) == {"curve", "barrier"}
        curve = table[table.quantity == "curve"]
        assert sorted(curve.alpha.unique()) == [0.0, 0.5, 1.0]
    elif name == "peft_proteins":
        assert set(table.task) == {"ppi_gold", "symmetry"} and len(table) == 2 * len(methods)
        assert set(table.metric) == {"aupr"}
        parameters = table.set_index(["task", "method"]).trainable_parameters
        for task in ("ppi_gold", "symmetry"):
            assert parameters[task, "head"] < parameters[task, "lora"] < parameters[task, "full"]
    else:
        assert set(table.task) == {"pra"} and set(table.split) == {"test"}
        assert len(table) == 4 * len(methods)


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPERS)
def test_paper_config_runs_with_the_smoke_override(name, workdir):
    """The paper config as written builds its whole workflow (a dry run: the weights fetched,
    every analysis planned), and with smoke.yaml after it runs for real on small subsets of
    its data, filling its paper layout (one Snakemake run for the layout's table)."""
    folder, paper = workdir(name), CONFIGS / f"{name}.yaml"
    planned = snakemake(folder, "-n", "--configfile", paper).stdout
    assert "fetch_weights" in planned
    layout = f"results/papers/{PAPERS[name]}.tsv"
    snakemake(folder, "--configfile", paper, SMOKE, "--", layout)
    layout_rows(name, pd.read_csv(folder / layout, sep="\t"))

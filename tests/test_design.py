"""Offline sequence design (BIB and its baselines): the closed-form proxy, the straight-through
soft embedding through the real ESM-2, the methods' relations, the designs and the refusals."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from copra.cli import main
from copra.design import random_mutants
from copra.design_methods import METHODS, Designer, SoftSequences, initial_logits, straight_through
from copra.design_proxy import Proxy, ridge_beta, ridge_head, ridge_head_dual
from copra.errors import InputError
from copra.protein_model import mean_pool
from copra.settings import ModelSettings, from_section

MODEL = {"name": "esm2_t6_8M_UR50D", "weights": "random"}
DESIGN = {"task": "fitness", "starts": 4, "steps": 3}


def config_json(demo, design=None, task=None) -> str:
    task = {
        "kind": "sequence_regression",
        "labels": str(demo / "fitness.tsv"),
        "sequences": str(demo / "variants.fasta"),
        **(task or {}),
    }
    tree = {"tasks": {"fitness": task}, "design": {"fitness": {**DESIGN, **(design or {})}}}
    return json.dumps({**tree, "model": MODEL})


@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
    """The demo's design task (61 variants of a 28-residue parent at 3 positions), ingested,
    and its design data written by the CLI."""
    from copra.demo_data import write_demo_data
    from copra.ingest import run_ingest
    from copra.settings import IngestSettings, TaskSettings

    folder = tmp_path_factory.mktemp("design")
    demo = folder / "demo"
    write_demo_data(demo, 30, 0, n_complexes=10)
    task = TaskSettings("sequence_regression", demo / "fitness.tsv", demo / "variants.fasta")
    split = IngestSettings({"train": 0.7, "valid": 0.15, "test": 0.15}, 0)
    run_ingest(task, folder / "table.tsv", folder / "sequences.tsv", split)
    data = folder / "out" / "data"
    paths = ["--table", folder / "table.tsv", "--sequences", folder / "sequences.tsv"]
    argv = ["design-data", "--design", "fitness", *paths, "--output-dir", data]
    assert main([*map(str, argv), "--config-json", config_json(demo)]) == 0
    return folder


def design_argv(folder, output, *extra) -> list[str]:
    data = folder / "out" / "data"
    argv = [
        "design",
        "--design",
        "fitness",
        "--data-dir",
        data,
        "--seed",
        0,
        "--output-dir",
        output,
    ]
    return [*map(str, argv), *extra]


@pytest.fixture(scope="module")
def designed(landscape):
    """Every method's designs at seed 0 through the CLI."""
    output = landscape / "out"
    assert (
        main(design_argv(landscape, output, "--config-json", config_json(landscape / "demo"))) == 0
    )
    return output


@pytest.fixture(scope="module")
def backbone():
    return from_section(ModelSettings, MODEL).load()


def test_closed_form_proxy_equals_a_direct_least_squares_solve():
    """The primal closed form equals lstsq of the ridge-augmented system, and the dual (the
    reference's kernel solve, conditioned ~1/beta: n > d) agrees within 1e-8."""
    generator = torch.Generator().manual_seed(0)
    phi = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    y = torch.randn(40, generator=generator, dtype=torch.float64)
    primal, dual = ridge_head(phi, y), ridge_head_dual(phi, y)
    augmented = torch.cat([phi, ridge_beta(phi).sqrt() * torch.eye(6, dtype=torch.float64)])
    target = torch.cat([y, torch.zeros(6, dtype=torch.float64)])
    direct = torch.linalg.lstsq(augmented, target[:, None]).solution[:, 0]
    assert torch.allclose(primal, direct, rtol=1e-12, atol=1e-14)
    assert torch.allclose(primal, dual, rtol=0, atol=1e-8)
    assert ridge_beta(phi) == pytest.approx(1e-6 * torch.trace(phi @ phi.T).item() / 40)


def test_the_soft_embedding_at_a_one_hot_is_the_lm_on_the_tokens(backbone):
    """Straight-through one-hots of the starts through the token embedding give fair-esm's own
    mean-pooled last layer for the token sequences (token dropout's rescaling included), and the
    gradient reaches every designed position of every design."""
    starts = ["MKTAYIAKQRQISFVKSHFSRQLEERLG", "MKTAYIAKQRQISWVKSHFSRQLEERLG"]
    positions = [0, 5, 13, 27]
    soft = SoftSequences(backbone, starts, positions, "cpu")
    logits = initial_logits(soft.start_codes(), torch.Generator().manual_seed(0))
    logits.requires_grad_(True)
    features = soft.features(straight_through(logits))
    with torch.no_grad():
        out = backbone.model(soft.tokens, repr_layers=[backbone.num_layers])
        reference = mean_pool(
            out["representations"][backbone.num_layers], soft.tokens, soft.alphabet
        )
    assert backbone.model.token_dropout
    assert torch.allclose(features.float(), reference, atol=1e-5)
    (grad,) = torch.autograd.grad(features.pow(2).sum(), logits)
    assert (grad.abs().sum(-1) > 0).all(), grad.abs().sum(-1)


def designer_for(landscape, backbone, eta: float) -> tuple[Designer, torch.Tensor]:
    from copra.design import DesignData

    data = DesignData.read(landscape / "out" / "data")
    starts = data.starts().sequence.tolist()
    soft = SoftSequences(backbone, starts, data.landscape["positions"], "cpu")
    proxy = Proxy.fit(data.offline["features"], data.offline["labels"])
    return Designer(soft, proxy, steps=3, rate=0.1, eta=eta), soft.start_codes()


@pytest.mark.parametrize(("eta", "alone"), [(1.0, "forward"), (0.0, "backward")])
def test_bdi_at_a_fixed_eta_of_one_is_forward_and_of_zero_backward(landscape, backbone, eta, alone):
    """bdi computes both losses' gradients and weighs them; at eta 1 (0) its logits after every
    step equal those of the forward (backward) loss alone, bit for bit."""
    designer, codes = designer_for(landscape, backbone, eta)
    both = designer.run(METHODS["bdi"], codes, torch.Generator().manual_seed(0))
    one = designer.run(METHODS[alone], codes, torch.Generator().manual_seed(0))
    assert torch.equal(both.logits, one.logits)
    other = "backward" if alone == "forward" else "forward"
    assert not torch.equal(
        designer.run(METHODS[other], codes, torch.Generator().manual_seed(0)).logits, one.logits
    )


def test_bib_learns_eta_and_adapts_its_rate(landscape, backbone):
    designer, codes = designer_for(landscape, backbone, 0.5)
    run = designer.run(METHODS["bib"], codes, torch.Generator().manual_seed(0))
    assert run.eta[0] != 0.5 and ((run.eta >= 0) & (run.eta <= 1)).all()
    assert run.rate[0] == pytest.approx(0.1) and (run.rate[1:] != 0.1).any()
    assert 0 < run.lm_seconds < run.seconds


def test_designs_change_only_the_designed_positions(landscape, designed):
    starts = pd.read_csv(landscape / "out/data/variants.tsv", sep="\t").set_index("id")
    positions = json.loads((landscape / "out/data/landscape.json").read_text())["positions"]
    assert positions == [4, 11, 19]  # auto: where the demo's variants differ
    for method in [*METHODS, "random"]:
        designs = pd.read_csv(designed / method / "seed0" / "designs.tsv", sep="\t")
        assert len(designs) == 4
        for row in designs.itertuples():
            start = starts.loc[row.start, "sequence"]
            assert len(row.sequence) == len(start)
            changed = [
                i for i, (a, b) in enumerate(zip(start, row.sequence, strict=True)) if a != b
            ]
            assert set(changed) <= set(positions) and len(changed) == row.hamming
        fasta = (designed / method / "seed0" / "designs.fasta").read_text().split("\n")[1::2]
        assert fasta[:4] == designs.sequence.tolist()


def test_random_mutants_copy_the_matched_distances():
    starts = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    matched = starts.copy()
    matched[0, :2] = 19
    matched[1, :] = 0
    mutants = random_mutants(starts, matched, seed=0)
    assert (mutants != starts).sum(1).tolist() == [2, 4, 0]
    assert np.array_equal(random_mutants(starts, matched, seed=0), mutants)


def test_same_config_and_seed_give_identical_designs(landscape, designed, tmp_path):
    config = config_json(landscape / "demo")
    argv = design_argv(landscape, tmp_path, "--method", "bib", "--method", "random")
    assert main([*argv, "--config-json", config]) == 0
    for method in ("bib", "random"):
        again = (tmp_path / method / "seed0" / "designs.tsv").read_bytes()
        assert again == (designed / method / "seed0" / "designs.tsv").read_bytes()


@pytest.mark.parametrize(
    ("design", "task", "message"),
    [
        ({"positions": [3, 28]}, None, "[28] lie outside the sequence (28 residues"),
        ({"starts": 40}, None, "fewer than starts (40)"),
        ({"reference": "AAAA"}, None, "reference is 'AAAA'"),
        (None, {"kind": "sequence_classification"}, "design needs measured fitness values"),
    ],
)
def test_bad_design_input_is_refused_and_writes_nothing(
    landscape, tmp_path, capsys, design, task, message
):
    output = tmp_path / "data"
    paths = ["--table", landscape / "table.tsv", "--sequences", landscape / "sequences.tsv"]
    argv = [*map(str, ["design-data", "--design", "fitness", *paths, "--output-dir", output])]
    assert main([*argv, "--config-json", config_json(landscape / "demo", design, task)]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists() and not list(tmp_path.iterdir())


def test_variants_of_different_lengths_are_refused(landscape, tmp_path, capsys):
    """Positions index one aligned sequence: a variant with an insertion is named."""
    table = pd.read_csv(landscape / "sequences.tsv", sep="\t")
    table.loc[3, "sequence"] += "A"
    table.to_csv(tmp_path / "sequences.tsv", sep="\t", index=False)
    output = tmp_path / "data"
    paths = ["--table", landscape / "table.tsv", "--sequences", tmp_path / "sequences.tsv"]
    argv = [*map(str, ["design-data", "--design", "fitness", *paths, "--output-dir", output])]
    config = config_json(landscape / "demo", {"positions": [4, 11]})
    assert main([*argv, "--config-json", config]) == 2
    assert "differ in length (29 residues in record variant_" in capsys.readouterr().err
    assert not output.exists()


def test_the_config_check_refuses_design_problems_before_any_job():
    from copra.design_problems import check_design

    tasks = {"fitness": {"kind": "sequence_regression"}, "kinds": {"kind": "pair_classification"}}
    with pytest.raises(InputError, match="'missing' is not a task of this config"):
        check_design({"tasks": tasks, "design": {"d": {"task": "missing"}}})
    with pytest.raises(InputError, match="kinds is a pair_classification task"):
        check_design({"tasks": tasks, "design": {"d": {"task": "kinds"}}})
    with pytest.raises(InputError, match="random mutates at the Hamming distances of bib"):
        check_design({"tasks": tasks, "design": {"d": {"task": "fitness", "methods": ["random"]}}})
    check_design({"tasks": tasks, "design": {"off": {"task": "missing", "methods": []}}})

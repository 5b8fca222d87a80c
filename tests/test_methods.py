"""The method registry: one home per method, what analyses need of it, and a method added from
outside the package that trains through the command line like the built-in ones."""

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, finetune_argv, small_regression_task

from copra import config, methods
from copra.errors import InputError
from copra.methods.layer_drop import LayerDropLora, LayerDropSettings
from copra.methods.lora import LoraSettings

NAME_TEST = re.compile(r"""== ?['"](lora|copra|full|head)['"]|in \(['"](lora|copra)""")


def test_the_schema_enums_are_the_registry():
    """`methods` lists every registered method; each analysis lists the methods it accepts."""
    schema = config.schema()["properties"]
    assert schema["methods"]["items"]["enum"] == methods.names()
    for analysis in methods.ANALYSES:
        enum = schema[analysis]["properties"]["methods"]["items"]["enum"]
        assert enum == methods.suited(analysis), analysis


def test_no_method_name_is_tested_outside_the_registry():
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "copra").rglob("*.py"))
        if "methods" not in path.relative_to(REPO / "copra").parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if NAME_TEST.search(line)
    ]
    assert found == []


def test_the_registry_imports_neither_torch_nor_peft():
    code = "import sys, copra.methods; print('torch' in sys.modules, 'peft' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


@pytest.mark.parametrize(
    ("name", "analysis", "message"),
    [
        ("full", "lmc", "linear mode connectivity needs a peft adapter; method full"),
        ("lingo", "federated", "federated training needs one fixed rank for every module"),
        ("head", "shapley", "Shapley values needs a peft adapter; method head has none"),
    ],
)
def test_an_analysis_refuses_a_method_without_what_it_needs(name, analysis, message):
    with pytest.raises(InputError, match=message) as error:
        methods.require(name, analysis)
    assert "methods that do: lora, copra" in str(error.value)
    assert methods.require("copra", analysis) is LayerDropLora


def test_a_method_comes_back_from_its_manifest():
    method = LayerDropLora(lora=LoraSettings(rank=4), layer_drop=LayerDropSettings(p0=0.5))
    manifest = {"method": "copra", **method.settings_record()}
    again = methods.get("copra").from_manifest(manifest)
    assert again.settings_record() == method.settings_record()
    assert again.fresh().settings_record() == method.settings_record()


def test_settings_reach_a_method_from_the_config_then_the_flags():
    tree = {"lora": {"rank": 4, "alpha": 16}, "layer_drop": {"p0": 0.5}}
    method = LayerDropLora.from_config(tree, {"lora": {"rank": 2}})
    assert method.lora == LoraSettings(rank=2, alpha=16.0)
    assert method.layer_drop == LayerDropSettings(p0=0.5)


def readme_example() -> str:
    """The method the README's development section adds, as its code block."""
    section = (REPO / "README.md").read_text().split("### Adding a method", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def lora_plus(monkeypatch):
    """The README's LoRA+ registered, with the schema section the README says to add."""
    section = {"type": "number", "exclusiveMinimum": 0, "default": 16}
    schema = {"type": "object", "default": {}, "properties": {"ratio": section}}
    monkeypatch.setitem(config.schema()["properties"], "lora_plus", schema)
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    yield namespace["LoraPlus"]
    methods.unregister("lora_plus")


def test_the_readme_method_trains_through_the_cli(lora_plus, tmp_path):
    from copra.backbone import load_backbone
    from copra.cli import main
    from copra.settings import FinetuneSettings, HeadArchitecture
    from copra.trained_run import load_finetuned

    assert "lora_plus" in methods.names(adapter=True)
    table, sequences = small_regression_task(tmp_path)
    out = tmp_path / "run"
    short = ["--batch-size", 8, "--max-epochs", 1, "--lora-plus-ratio", 4, "--lora-rank", 2]
    argv = finetune_argv("lora_plus", "sequence_regression", table, sequences, out, *short)
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "lora_plus" and manifest["lora_plus"] == {"ratio": 4.0}
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 2
    backbone = load_backbone("esm2_t6_8M_UR50D", "random")
    model, _ = load_finetuned(out, backbone)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0

    method = methods.get("lora_plus").from_manifest(manifest)
    fresh = method.build(load_backbone("esm2_t6_8M_UR50D", "random"), 1, "x", HeadArchitecture())
    groups = method.parameter_groups(fresh, FinetuneSettings(learning_rate=0.01))
    assert [g["lr"] for g in groups] == [0.01, 0.04, 0.01]
    names = {id(p): n for n, p in fresh.named_parameters()}
    assert {".lora_B." in names[id(p)] for p in groups[1]["params"]} == {True}
    assert {".lora_A." in names[id(p)] for p in groups[0]["params"]} == {True}
    assert methods.require("lora_plus", "merging") is lora_plus

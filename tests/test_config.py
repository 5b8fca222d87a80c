"""The config schema: defaults in one place, misspelled keys named, wrong values refused."""

import json
import re
import shlex

import pytest
import yaml
from conftest import ANALYSES, HEAD_ONLY, REPO, snakemake

from copra import config
from copra.errors import InputError


def schema_keys(node=None, prefix=""):
    """Every dotted key the schema defines (task entries as `tasks.<name>.key`)."""
    node = node or config.schema()
    for key, sub in node.get("properties", {}).items():
        yield prefix + key
        yield from schema_keys(sub, f"{prefix}{key}.")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_keys(node["additionalProperties"], f"{prefix}<name>.")


def test_defaults_come_from_the_schema():
    assert config.default("embedding.max_residues") == 1022
    assert config.default("head.pair_combination") == "mean"
    with pytest.raises(KeyError):
        config.default("tasks")


@pytest.mark.parametrize(
    ("bad", "named", "suggested"),
    [
        ({"methds": ["head"]}, "methds", "methods"),
        ({"embedding": {"batch_token": 10}}, "embedding.batch_token", "embedding.batch_tokens"),
        ({"tasks": {"t": {"kind": "x", "labls": "a.tsv"}}}, "tasks.t.labls", "tasks.t.labels"),
    ],
)
def test_misspelled_key_is_named_with_a_suggestion(bad, named, suggested):
    with pytest.raises(InputError, match=re.escape(f"'{named}'")) as error:
        config.check_keys(bad)
    assert f"did you mean '{suggested}'" in str(error.value)


@pytest.mark.parametrize(
    ("own", "message"),
    [
        ({"max_epoch": 8}, "'tasks.t.finetune.max_epoch' is not known; did you mean"),
        ({"max_epochs": 0}, "config key 'tasks.t.finetune.max_epochs': 0 is less than"),
    ],
)
def test_a_tasks_own_finetune_values_are_checked(own, message):
    tree = {"finetune": {"max_epochs": 2}, "tasks": {"t": {"kind": "x", "finetune": own}}}
    with pytest.raises(InputError, match=re.escape(message)):
        config.check_task_finetune(tree)
    config.check_task_finetune({"tasks": {"t": {"finetune": {"max_epochs": 8}}}})


def test_pipeline_refuses_a_misspelled_key(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"model": {"name": "esm2_t6_8M_UR50D", "wieghts": "random"}}))
    result = snakemake(tmp_path, "--configfile", REPO / "config.yaml", user, "-n", check=False)
    assert result.returncode != 0
    message = "config key 'model.wieghts' is not known; did you mean 'model.weights'?"
    assert message in result.stdout + result.stderr


def test_pipeline_refuses_a_wrong_value(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"tasks": {"t": {"kind": "protein_folding", "labels": "x"}}}))
    result = snakemake(tmp_path, "--configfile", REPO / "config.yaml", user, "-n", check=False)
    assert result.returncode != 0
    assert "'protein_folding' is not one of" in result.stdout + result.stderr


def test_user_tasks_replace_the_demo_tasks_in_the_dag(tmp_path):
    (tmp_path / "a.fasta").write_text(">p1\nMKV\n")
    (tmp_path / "a.tsv").write_text("id\tlabel\np1\t1.0\n")
    user = tmp_path / "user.yaml"
    task = {"kind": "sequence_regression", "sequences": "a.fasta", "labels": "a.tsv"}
    user.write_text(yaml.safe_dump({"tasks": {"mine": task}}))
    result = snakemake(tmp_path, "--configfile", REPO / "config.yaml", user, "-n", "-p")
    assert "results/mine/data/table.tsv" in result.stdout
    assert "localization" not in result.stdout and "demo_data" not in result.stdout


def test_readme_documents_every_config_key():
    readme = (REPO / "README.md").read_text()
    top = config.schema()["properties"]
    sections = {"tasks", "tasks.<name>"} | {
        key for key, node in top.items() if "properties" in node
    }
    # Sub-keys of a mapping-valued setting are described in that setting's row.
    described = ("tasks.<name>.columns.", "ingest.split_fractions.")
    missing = [
        key
        for key in schema_keys()
        if f"`{key}`" not in readme and key not in sections and not key.startswith(described)
    ]
    assert missing == []


def test_readme_quick_start_is_the_two_commands():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert section.split("\n") == ["make demo", "make test", ""]


def test_machinery_tests_switch_off_every_analysis():
    """HEAD_ONLY (SLURM and report tests) must name every section that runs its own methods."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    sections = {
        name
        for name, spec in schema["properties"].items()
        if "methods" in spec.get("properties", {})
    }
    assert sections == set(ANALYSES)
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    (design,) = [json.loads(v.split("=", 1)[1]) for v in HEAD_ONLY if v.startswith("design=")]
    assert design == {name: {"methods": []} for name in demo["design"]}


def test_rules_pass_their_config_sections_in_one_hop(tmp_path):
    """Each rule hands its command the config sections it reads as JSON (the schema's defaults
    filled in), not one flag per key: a value set in the config reaches the command as set."""
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"lora": {"rank": 4}}))
    result = snakemake(tmp_path, "--configfile", REPO / "config.yaml", user, "-n", "-p")
    lines = [line.removeprefix("Shell command:").strip() for line in result.stdout.splitlines()]
    commands = [line for line in lines if line.startswith("copra ")]
    finetune = [c for c in commands if " finetune --method copra " in c]
    assert finetune and all('"lora": {"alpha": 32.0' in c and '"rank": 4' in c for c in finetune)
    assert all('"layer_drop": {' in c and '"finetune": {' in c for c in finetune)
    # a task's own finetune values (the demo's localization) in its runs' finetune section
    words = [shlex.split(c) for c in finetune]
    epochs = {w[w.index("--task") + 1]: json.loads(w[w.index("--config-json") + 1]) for w in words}
    assert epochs["localization"]["finetune"]["max_epochs"] == 8
    assert epochs["interaction"]["finetune"]["max_epochs"] == 2
    assert "finetune" not in epochs["localization"]["tasks"]["localization"]
    flags = re.compile(r"--(lora|layer-drop|head)-[a-z-]+|--learning-rate|--alphas|--schemes")
    assert [c for c in commands if flags.search(c)] == []


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text(
        "tasks:\n  t:\n    kind: sequence_regression\n    labels: a.tsv\n"
        "  t:\n    kind: sequence_classification\n    labels: b.tsv\n"
    )
    result = snakemake(tmp_path, "--configfile", REPO / "config.yaml", user, "-n", check=False)
    assert result.returncode == 2
    message = f"copra: error: {user}:5: key 't' is given twice (lines 2 and 5)"
    assert message in result.stderr and "Traceback" not in result.stderr


def test_check_config_names_the_line_of_a_yaml_error(tmp_path, capsys):
    from copra.cli import main

    user = tmp_path / "user.yaml"
    user.write_text("tasks:\n  t:\n    kind: sequence_regression\n   labels: a.tsv\n")
    assert main(["check-config", str(user)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"copra: error: {user}:4: not valid YAML, column 4:"), err
    user.write_text("lora:\n  rank: four\n")
    assert main(["check-config", str(user)]) == 2
    assert "config key 'lora.rank': 'four' is not of type 'integer'" in capsys.readouterr().err
    assert main(["check-config", str(REPO / "config.yaml")]) == 0
    assert "a valid copra config" in capsys.readouterr().out

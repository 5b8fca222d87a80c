"""The prepared GPU check (`benchmarks/gpu_check.sh`) in its CPU mode, end to end: every step
runs (the tests of marker `gpu` on the CPU, each GPU benchmark at tiny sizes), so a GPU machine
lent for a few minutes finds a check that works."""

import ast
import os
import subprocess
import sys

import pandas as pd

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_wheels  # noqa: E402

# What the GPU machine has (transformers' and peft's dependencies among them).
ON_THE_GPU_MACHINE = {"torch", "peft", "transformers", "pandas", "numpy", "sklearn", "scipy"}
ON_THE_GPU_MACHINE |= {"matplotlib", "safetensors", "tqdm", "yaml", "huggingface_hub", "packaging"}
STEPS = ["machine", "install", "gpu_tests", "embed_flops", "embed_vs_fair_esm"]
STEPS += ["finetune_step", "screen"]


def third_party_imports() -> set[str]:
    """Top-level modules imported by copra, the tests and the benchmarks, not theirs or Python's."""
    ours = {"copra", "tests", "_common", "copra_head", "conftest", "finetune_step", "gpu_wheels"}
    ours |= {path.stem for path in (REPO / "tests").glob("*.py")}  # tests importing tests
    found = set()
    for folder in ("copra", "tests", "benchmarks"):
        for path in (REPO / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found - ours - set(sys.stdlib_module_names)


def test_the_wheels_cover_what_the_gpu_machine_lacks():
    lacking = third_party_imports() - ON_THE_GPU_MACHINE
    assert lacking <= set(gpu_wheels.MISSING), lacking - set(gpu_wheels.MISSING)


def test_the_cpu_mode_runs_every_step(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("COPRA_GPU_CHECK_OUT", None)
    script = REPO / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(
        ["bash", str(script), str(tmp_path), "--cpu"], env=env, capture_output=True, text=True
    )
    steps = pd.read_csv(tmp_path / "gpu_check.tsv", sep="\t")
    failed = steps[steps.status != "ok"]
    logs = {row.step: (tmp_path / row.log).read_text()[-3000:] for row in failed.itertuples()}
    assert result.returncode == 0 and failed.empty, logs
    assert list(steps.step) == STEPS
    measured = pd.read_csv(tmp_path / "gpu_tests.tsv", sep="\t")
    assert (measured.device == "cpu").all() and len(measured) >= 10
    assert "1 skipped" in (tmp_path / "gpu_tests.log").read_text()  # out of memory: GPU only
    assert len(pd.read_csv(tmp_path / "finetune_step.tsv", sep="\t")) == 2

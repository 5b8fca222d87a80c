"""The quality gates as tests: snakemake --lint, snakefmt, ruff check and ruff format.

The tools are the ones installed beside the Python that runs the tests (the project's venv).
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FORMATTED = ["copra", "tests", "benchmarks"]


def _run(tool, *args):
    """Runs a tool from the repository root; (return code, its stdout and stderr together)."""
    executable = BIN / tool
    if not executable.is_file():
        pytest.fail(f"{tool} is not installed beside {sys.executable}")
    done = subprocess.run(
        [str(executable), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return done.returncode, done.stdout


def test_snakemake_lint():
    code, output = _run("snakemake", "--lint")
    assert code == 0, f"snakemake --lint exited {code}:\n{output}"
    assert "Congratulations, your workflow is in a good condition" in output, output


def test_snakefmt_check():
    code, output = _run("snakefmt", "--check", "Snakefile", "workflow/")
    assert code == 0, f"snakefmt --check exited {code}:\n{output}"


def test_ruff_check():
    code, output = _run("ruff", "check", ".")
    assert code == 0, f"ruff check exited {code}:\n{output}"


def test_ruff_format_check():
    folders = [folder for folder in FORMATTED if (ROOT / folder).is_dir()]
    assert folders, f"none of {FORMATTED} exists"
    code, output = _run("ruff", "format", "--check", *folders)
    assert code == 0, f"ruff format --check exited {code}:\n{output}"


def test_a_light_subcommand_does_not_import_torch():
    """Only the subcommand being run builds its options: evaluation, summaries and gathering
    start without importing torch and peft (~5 s per job); the full help still lists them all."""
    code = (
        "import sys; from copra.cli import build_parser; "
        "build_parser(['--threads', '1', 'evaluate', '--task', 't']); "
        "print('torch' in sys.modules, 'peft' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr
    from copra.cli import build_parser

    help_text = build_parser([]).format_help()
    assert "finetune" in help_text and "gather-metrics" in help_text
    finetune = build_parser(["finetune"])._subparsers._group_actions[0].choices["finetune"]
    assert "--lora-rank" in finetune.format_help()

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
    """The parser is light (settings and the method registry import neither torch nor peft):
    evaluation, summaries and gathering start without ~5 s of imports; every subcommand's help
    works, and the training commands list every method setting as a flag."""
    code = (
        "import sys; from copra.cli import build_parser; "
        "build_parser().parse_args(['--threads', '1', 'gather-metrics', '--output', 'm.tsv']); "
        "print('torch' in sys.modules, 'peft' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr
    from copra.cli import build_parser

    parser = build_parser()
    assert "finetune" in parser.format_help() and "gather-metrics" in parser.format_help()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        assert command.format_help(), name
    assert "--lora-rank" in commands["finetune"].format_help()
    assert "--layer-drop-p0" in commands["train-complex"].format_help()


def test_no_function_takes_more_than_eight_parameters():
    """Settings travel grouped in settings objects, not as long parameter lists."""
    import ast

    long = []
    for path in sorted((ROOT / "copra").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                given = node.args
                names = [a.arg for a in [*given.posonlyargs, *given.args, *given.kwonlyargs]]
                names += [a.arg for a in (given.vararg, given.kwarg) if a]
                names = [n for n in names if n not in ("self", "cls")]
                if len(names) > 8:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {len(names)}")
    assert long == []

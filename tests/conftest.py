"""Shared fixtures: the repository root, the shared real data, and running Snakemake for real."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def snakemake(workdir, *args, check=True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in `workdir` with the venv's snakemake."""
    command = [
        str(Path(sys.executable).with_name("snakemake")),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *map(str, args),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (it sits beside the repository in CI)")
    return SHARED_DATA

"""Download here what the GPU machine lacks, for `benchmarks/gpu_check.sh` to install offline.

The GPU machine has Python 3.12 with CUDA torch, peft, transformers, pandas, scikit-learn and
matplotlib, but no network. This fetches wheels of the rest for that platform (manylinux x86_64,
CPython 3.12, `--no-deps`, each dependency named) at the versions installed here, into
`.gpu-check/wheels/`, and copies the yeast sequences the benchmarks read to `.gpu-check/`.

    .venv/bin/python benchmarks/gpu_wheels.py        # or: make gpu-wheels
"""

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".gpu-check"
YEAST = ROOT.parent / "shared" / "data" / "ppi_yeast" / "sequences.fasta"
# import name -> the distributions it needs that the GPU machine lacks (dependencies named)
MISSING = {
    "esm": ["fair-esm"],
    "Bio": ["biopython"],
    "jsonschema": ["jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "attrs"],
    "pytest": ["pytest", "iniconfig", "pluggy", "pygments"],
}
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"]


def requirements() -> list[str]:
    """Every distribution of MISSING pinned to the version installed here."""
    names = [name for group in MISSING.values() for name in group]
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def main() -> int:
    wheels = FOLDER / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [word for platform in PLATFORMS for word in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += [*platforms, "--python-version", "3.12", "--implementation", "cp"]
    command += ["--abi", "cp312", "--abi", "abi3", "--abi", "none", "--dest", str(wheels)]
    subprocess.run([*command, *requirements()], check=True)
    if YEAST.is_file():
        shutil.copyfile(YEAST, FOLDER / "yeast.fasta")
    print(f"{len(list(wheels.glob('*.whl')))} wheels in {wheels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

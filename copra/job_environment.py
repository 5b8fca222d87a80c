"""What Snakemake passes to its jobs through the environment: where the `copra` command is, and
the GPU settings that copra/device.py reads (SLURM jobs inherit the environment of sbatch)."""

import os
import sys
from pathlib import Path


def put_copra_on_path(workflow_dir) -> None:
    """Put `workflow/bin` (the `copra` command) and this interpreter's folder first on PATH.

    An activated conda env's python comes before both; otherwise the python running Snakemake.
    """
    workflow_dir = Path(workflow_dir)
    search = [str(workflow_dir / "workflow" / "bin"), os.path.dirname(sys.executable)]
    os.environ["PATH"] = os.pathsep.join([*search, os.environ.get("PATH", "")])
    python_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workflow_dir), python_path]))


def export_gpu_settings(gpu: dict) -> None:
    """The config's `gpu:` section as COPRA_CPU_FALLBACK and COPRA_GPU_LOCK_DIR."""
    os.environ["COPRA_CPU_FALLBACK"] = "1" if gpu["cpu_fallback"] else "0"
    os.environ["COPRA_GPU_LOCK_DIR"] = str(Path(gpu["lock_dir"]).resolve())

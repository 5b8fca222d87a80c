"""How Snakemake jobs find the `copra` command: the repository's package on the job's python."""

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

"""Re-running a finished run from its manifest, and saying whether its metrics come out the same.

`results/metrics.manifest.json` holds the whole config of the run. The rerun happens in a fresh
working folder with a fresh embedding cache; task files (and the weights folder) are taken from
where the original run read them. Same config and seed on the CPU: identical metrics.
"""

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from copra.atomic import write_table, write_text
from copra.errors import InputError

log = logging.getLogger(__name__)
KEYS = ["task", "method", "seed", "split", "metric"]
TASK_FILES = ("sequences", "labels", "structures", "mutations")
SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"


@dataclass
class Reproduction:
    compared: int
    differing: pd.DataFrame  # KEYS, original, reproduced

    @property
    def match(self) -> bool:
        return self.compared > 0 and self.differing.empty


def rerun_config(results_dir: Path) -> dict:
    """The original run's config, with its task files and weights folder as absolute paths."""
    manifest_path = results_dir / "metrics.manifest.json"
    if not manifest_path.is_file():
        raise InputError("no metrics.manifest.json: not a copra results folder", path=results_dir)
    config = json.loads(manifest_path.read_text()).get("config")
    if not config or "tasks" not in config:
        raise InputError("the manifest holds no config to rerun from", path=manifest_path)
    origin = results_dir.resolve().parent
    for task in config["tasks"].values():
        for key in TASK_FILES:
            if key in task and not Path(task[key]).is_absolute():
                task[key] = str(origin / task[key])
    if not Path(config["weights_dir"]).is_absolute():
        config["weights_dir"] = str(origin / config["weights_dir"])
    return config


def compare(original: pd.DataFrame, reproduced: pd.DataFrame, tolerance: float) -> Reproduction:
    """Every metric of the original run beside the rerun's; rows that differ by > tolerance, or
    that only one of the two has (undefined metrics, NaN in both, count as equal)."""
    both = original[[*KEYS, "value"]].merge(
        reproduced[[*KEYS, "value"]],
        on=KEYS,
        how="outer",
        suffixes=("_original", "_rerun"),
        indicator=True,
    )
    first, second = both.value_original, both.value_rerun
    equal = ((first - second).abs() <= tolerance) | (first.isna() & second.isna())
    differing = both[~equal | (both._merge != "both")]
    differing = differing.rename(
        columns={"value_original": "original", "value_rerun": "reproduced"}
    )
    return Reproduction(
        len(both), differing[[*KEYS, "original", "reproduced"]].reset_index(drop=True)
    )


def reproduce(results_dir, workdir, *, cores: int = 2, tolerance: float = 0.0) -> Reproduction:
    """Rerun the run behind `results_dir` in `workdir` and compare results/metrics.tsv."""
    results_dir, workdir = Path(results_dir), Path(workdir)
    config = rerun_config(results_dir)
    if not SNAKEFILE.is_file():
        raise InputError("copra's Snakefile is not beside the package; run from a checkout")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "reproduce.yaml"
    write_text(config_path, yaml.safe_dump(config, sort_keys=True))
    command = [
        str(Path(sys.executable).with_name("snakemake")),
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        "--cores",
        str(cores),
    ]
    log.info("rerunning: %s", " ".join(command))
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise InputError(
            f"the rerun failed (snakemake exit {run.returncode}):\n{run.stderr[-3000:]}"
        )
    original = pd.read_csv(results_dir / "metrics.tsv", sep="\t")
    result = compare(
        original, pd.read_csv(workdir / "results" / "metrics.tsv", sep="\t"), tolerance
    )
    write_table(workdir / "reproduce.tsv", result.differing)
    return result

"""Provenance of every result folder: config, seeds, versions, git commit, hardware and input
checksums."""

import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from copra.atomic import write_text

PACKAGES = (
    "copra",
    "torch",
    "fair-esm",
    "peft",
    "numpy",
    "pandas",
    "scikit-learn",
    "biopython",
    "snakemake",
)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the copra checkout that ran (with `-dirty` for local changes), if any."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "status",
                "--porcelain",
                "--",
                "copra",
                "workflow",
                "Snakefile",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if status.strip() else "")


def hardware() -> dict:
    """Where it ran: CPU count, and the GPU when this process uses torch with one."""
    info = {"machine": platform.machine(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return info


def write_manifest(path, *, inputs=(), config=None, named_inputs=None, **fields) -> dict:
    """Write `manifest.json`: the fields given, versions, and the sha256 of every input file
    (`named_inputs`: {the name to record: the file now}, for a file that is yet to be moved)."""
    manifest = {
        **fields,
        "config": config,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "hardware": hardware(),
        "inputs": {
            **{str(p): file_sha256(p) for p in inputs if Path(p).is_file()},
            **{str(name): file_sha256(p) for name, p in (named_inputs or {}).items()},
        },
    }
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest

"""Provenance of every result folder: config, seeds, package versions and input checksums."""

import hashlib
import json
import platform
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


def write_manifest(path, *, inputs=(), config=None, **fields) -> dict:
    """Write `manifest.json`: the fields given, versions, and the sha256 of every input file."""
    manifest = {
        **fields,
        "config": config,
        "versions": package_versions(),
        "inputs": {str(p): file_sha256(p) for p in inputs if Path(p).is_file()},
    }
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest

"""Fetching ESM-2 weights into fair-esm's torch hub cache layout, for offline HPC nodes.
Owns the known checkpoint names, where checkpoints live, atomic downloads and sha256 sidecars.
"""

import hashlib
import http.client
import urllib.error
from pathlib import Path

import torch

from copra.atomic import atomic_path, write_text
from copra.errors import InputError

FAIR_ESM_URL = "https://dl.fbaipublicfiles.com/fair-esm"

# name -> (num_layers, embed_dim, attention_heads), as fair-esm builds them.
ESM2_ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}

_CHUNK = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError)


def check_name(name: str) -> None:
    """Raise InputError unless `name` is a known ESM-2 checkpoint."""
    if name not in ESM2_ARCHITECTURES:
        known = ", ".join(ESM2_ARCHITECTURES)
        raise InputError(f"unknown ESM-2 model {name!r}; known models: {known}")


def checkpoint_path(name: str, weights_dir=None) -> Path:
    """<weights_dir>/hub/checkpoints/<name>.pt, fair-esm's place (torch hub dir if None)."""
    check_name(name)
    hub = Path(weights_dir) / "hub" if weights_dir is not None else Path(torch.hub.get_dir())
    return hub / "checkpoints" / f"{name}.pt"


def regression_path(path) -> Path:
    """The contact-regression file fair-esm expects beside checkpoint `path`."""
    path = Path(path)
    return path.with_name(f"{path.stem}-contact-regression.pt")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    """The digest recorded beside `path`, if the record is present, well formed and up to date."""
    sidecar = _sidecar(path)
    if not sidecar.is_file() or sidecar.stat().st_mtime < path.stat().st_mtime:
        return None
    fields = sidecar.read_text().split()
    digest = fields[0].lower() if fields else ""
    is_hex = len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    return digest if is_hex else None


def _compute_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(path) -> str:
    """Hex sha256 of `path`: from its up-to-date `.sha256` sidecar, else computed (streamed)."""
    path = Path(path)
    return _read_sidecar(path) or _compute_sha256(path)


def _download(url: str, target: Path) -> None:
    """Download `url` to `target` atomically; an InputError with the fix when the network fails."""
    try:
        with atomic_path(target) as tmp:
            torch.hub.download_url_to_file(url, str(tmp), progress=True)
    except _NETWORK_ERRORS as error:
        raise InputError(
            f"could not download {url} ({error}); run `copra fetch-weights` on a node with "
            f"internet access, or put the file in place by hand at {target}"
        ) from error


def _write_sidecar(path: Path) -> None:
    write_text(_sidecar(path), f"{_compute_sha256(path)}  {path.name}\n")


def fetch_weights(name: str, weights_dir=None, download_url: str = FAIR_ESM_URL) -> Path:
    """Download `name` and its contact regression into the hub cache unless present; its path."""
    path = checkpoint_path(name, weights_dir)
    base = download_url.rstrip("/")
    wanted = {
        path: f"{base}/models/{name}.pt",
        regression_path(path): f"{base}/regression/{name}-contact-regression.pt",
    }
    for target, url in wanted.items():
        if not target.is_file():
            _download(url, target)
    if _read_sidecar(path) is None:
        _write_sidecar(path)
    return path

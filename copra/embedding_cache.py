"""Content-addressed embedding store: vectors keyed by sequence hash, in append-only shards.

Per-residue matrices (pooling "none", for complex tasks) are stored one below the other with
their lengths.

One folder per (model, weights, layer, pooling, long-sequence policy, precision); each shard is an
uncompressed `.npz` of `hashes` and `vectors`, written under a temporary name and renamed, so a
crash or a kill never leaves a partial shard that readers could see.
"""

import hashlib
import json
import logging
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

from copra.atomic import atomic_path, write_text

log = logging.getLogger(__name__)
# What reading a truncated or corrupted shard raises (np.load on a zip, its arrays, their CRCs).
DAMAGED = (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError)


class EmbeddingCache:
    """Vectors of one embedding configuration, looked up and added by sequence hash."""

    def __init__(self, root, key: dict):
        text = json.dumps(key, sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:20]
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.exists():
            write_text(key_file, json.dumps(key, indent=2, sort_keys=True) + "\n")

    def shards(self) -> list[Path]:
        """Complete shards, oldest first (temporary files start with a dot and are skipped)."""
        return sorted(self.folder.glob("shard-*.npz"))

    def lookup(self, hashes) -> dict[str, np.ndarray]:
        """The cached vectors among `hashes`; a damaged shard is moved aside (`set_aside`) and
        what it held is missing, so the caller computes it again."""
        wanted = set(hashes)
        found: dict[str, np.ndarray] = {}
        for shard in self.shards():
            if len(found) == len(wanted):
                break
            try:
                found.update(self._read(shard, wanted - set(found)))
            except PermissionError:
                raise
            except DAMAGED as error:
                self.set_aside(shard, error)
        return found

    @staticmethod
    def _read(shard: Path, wanted: set) -> dict[str, np.ndarray]:
        with np.load(shard) as data:
            keys = data["hashes"]
            hits = [i for i, key in enumerate(keys) if key in wanted]
            if not hits:
                return {}
            vectors = data["vectors"]
            if "lengths" in data:  # per-residue matrices, one below the other
                vectors = np.split(vectors, np.cumsum(data["lengths"])[:-1])
            return {str(keys[i]): vectors[i] for i in hits}

    def set_aside(self, shard: Path, error: Exception) -> None:
        """Rename a damaged shard to `damaged-<name>` (no longer read) and say so in the log."""
        target = shard.with_name(f"damaged-{shard.name}")
        try:
            shard.rename(target)
            where = f"moved to {target}"
        except FileNotFoundError:  # another job moved it first
            return
        except OSError as failure:
            where = f"left in place ({failure.strerror}): delete it when you can"
        log.warning(
            "embedding cache shard %s is damaged (%s: %s), %s; its vectors are computed again",
            shard,
            type(error).__name__,
            error,
            where,
        )

    def add(self, hashes: list[str], vectors) -> Path | None:
        """Store a batch of vectors (or of per-residue matrices) as one new shard."""
        if not hashes:
            return None
        arrays = {"hashes": np.array(hashes, dtype="U32")}
        if any(np.ndim(v) == 2 for v in vectors):
            arrays["lengths"] = np.array([len(v) for v in vectors], dtype=np.int64)
            arrays["vectors"] = np.concatenate(vectors).astype(np.float32)
        else:
            arrays["vectors"] = np.stack(vectors).astype(np.float32)
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        target = self.folder / name
        with atomic_path(target, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return target

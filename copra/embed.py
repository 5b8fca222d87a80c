"""Per-sequence embeddings of a frozen backbone: chunking, token-budget batches, OOM retries.

`embed_sequences` computes; `run_embed` adds the content-addressed cache and the file I/O.
The forward pass is `copra.fast_esm.representation` (fused attention, no LM head).
"""

import json
import logging
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from copra.atomic import atomic_path
from copra.backbone import Backbone
from copra.device import autocast, pick_device, precision
from copra.embedding_cache import EmbeddingCache
from copra.errors import InputError
from copra.fast_esm import representation
from copra.sequences import read_fasta, sequence_hash
from copra.settings import EmbeddingSettings, ModelSettings

log = logging.getLogger(__name__)
# Settings that change how fast vectors are made, or where, but not the vectors.
NOT_IN_CACHE_KEY = ("batch_tokens", "device", "cache_dir", "shards")


@dataclass(frozen=True)
class Chunk:
    """A stretch of one sequence that goes through the model in one piece."""

    sequence: int
    start: int
    residues: str


def chunk_sequence(index: int, sequence: str, settings: EmbeddingSettings) -> list[Chunk]:
    """fair-esm truncation (first max_residues) or overlapping windows covering every residue."""
    size = settings.max_residues
    if settings.long_sequences == "windows" and not 1 <= settings.window_stride <= size:
        raise InputError(
            f"window_stride {settings.window_stride} must be between 1 and max_residues {size} "
            "so that the windows cover every residue"
        )
    if len(sequence) <= size or settings.long_sequences == "truncate":
        return [Chunk(index, 0, sequence[:size])]
    starts = list(range(0, len(sequence) - size, settings.window_stride)) + [len(sequence) - size]
    return [Chunk(index, s, sequence[s : s + size]) for s in starts]


def token_batches(chunks: list[Chunk], batch_tokens: int) -> list[list[Chunk]]:
    """Length-sorted batches whose padded size (BOS and EOS included) stays within the budget."""
    batches, current = [], []
    for chunk in sorted(chunks, key=lambda c: len(c.residues)):
        width = len(chunk.residues) + 2
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(chunk)
    return batches + ([current] if current else [])


def _is_out_of_memory(error: Exception) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error)


class ChunkEncoder:
    """Runs chunks through the backbone; retries smaller batches when memory runs out."""

    def __init__(self, backbone: Backbone, layer: int, device: torch.device, names: list[str]):
        self.backbone = backbone
        self.layer = layer
        self.device = device
        self.names = names
        self.converter = backbone.alphabet.get_batch_converter()

    def forward(self, batch: list[Chunk]) -> list[torch.Tensor]:
        """Per-residue representations of each chunk, float32 on the CPU."""
        _, _, tokens = self.converter([("", chunk.residues) for chunk in batch])
        with torch.inference_mode(), autocast(self.device):
            reps = representation(self.backbone.model, tokens.to(self.device), self.layer)
        reps = reps.float().cpu()
        return [reps[i, 1 : len(chunk.residues) + 1] for i, chunk in enumerate(batch)]

    def encode(self, batch: list[Chunk]) -> list[torch.Tensor]:
        """`forward`, halving the batch on out-of-memory down to one chunk at a time."""
        try:
            return self.forward(batch)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not _is_out_of_memory(error):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            ids = sorted({self.names[chunk.sequence] for chunk in batch})
            if len(batch) == 1:
                raise InputError(
                    f"sequence '{ids[0]}' ({len(batch[0].residues)} residues) does not fit in "
                    "memory even alone; lower embedding.max_residues or use a larger device"
                ) from error
            log.warning(
                "out of memory on %d chunks (%s); retrying in halves", len(batch), ", ".join(ids)
            )
            half = len(batch) // 2
            return self.encode(batch[:half]) + self.encode(batch[half:])


class PooledSequences:
    """Sums window representations per residue, then mean-pools each finished sequence.

    With `pool=False` a finished sequence gives its per-residue matrix instead.
    """

    def __init__(self, chunks: list[Chunk], pool: bool = True):
        self.pool = pool
        self.lengths = {}
        self.pending = {}
        for chunk in chunks:
            end = chunk.start + len(chunk.residues)
            self.lengths[chunk.sequence] = max(self.lengths.get(chunk.sequence, 0), end)
            self.pending[chunk.sequence] = self.pending.get(chunk.sequence, 0) + 1
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, torch.Tensor] = {}

    def add(self, chunk: Chunk, reps: torch.Tensor) -> torch.Tensor | None:
        """Add one chunk; the pooled vector (or matrix) when its sequence is complete, else None."""
        index = chunk.sequence
        if index not in self.sums:
            self.sums[index] = torch.zeros(self.lengths[index], reps.shape[1])
            self.counts[index] = torch.zeros(self.lengths[index], 1)
        span = slice(chunk.start, chunk.start + reps.shape[0])
        self.sums[index][span] += reps
        self.counts[index][span] += 1
        self.pending[index] -= 1
        if self.pending[index]:
            return None
        per_residue = self.sums.pop(index) / self.counts.pop(index)
        return per_residue.mean(dim=0) if self.pool else per_residue


def resolve_layer(backbone: Backbone, layer: int) -> int:
    """-1 is the last layer; anything outside 0..num_layers is an error."""
    resolved = backbone.num_layers if layer == -1 else layer
    if not 0 <= resolved <= backbone.num_layers:
        raise InputError(
            f"embedding layer {layer} is outside 0..{backbone.num_layers} of {backbone.name}"
        )
    return resolved


def embed_sequences(
    backbone: Backbone,
    sequences: list[str],
    settings: EmbeddingSettings,
    names=None,
    on_vector=None,
) -> np.ndarray:
    """Mean-pooled float32 vectors, one per sequence, in input order.

    With `settings.pooling == "none"` a list of per-residue matrices instead. `on_vector(index,
    vector)` is called as each sequence finishes (the cache uses it to save progress as it goes).
    """
    device = pick_device(settings.device)
    names = names or [f"#{i}" for i in range(len(sequences))]
    layer = resolve_layer(backbone, settings.layer)
    chunks = [c for i, s in enumerate(sequences) for c in chunk_sequence(i, s, settings)]
    truncated = sum(len(s) > settings.max_residues for s in sequences)
    if truncated and settings.long_sequences == "truncate":
        log.info(
            "%d sequence(s) longer than %d residues truncated", truncated, settings.max_residues
        )
    backbone.model.to(device)
    encoder = ChunkEncoder(backbone, layer, device, names)
    per_residue = settings.pooling == "none"
    pooled = PooledSequences(chunks, pool=not per_residue)
    out = [None] * len(sequences)
    with tqdm(total=len(sequences), desc="embedding", unit="seq", mininterval=5) as bar:
        for batch in token_batches(chunks, settings.batch_tokens):
            for chunk, reps in zip(batch, encoder.encode(batch), strict=True):
                vector = pooled.add(chunk, reps)
                if vector is not None:
                    out[chunk.sequence] = vector.numpy()
                    bar.update()
                    if on_vector:
                        on_vector(chunk.sequence, out[chunk.sequence])
    if per_residue:
        return out
    return np.stack(out) if out else np.zeros((0, backbone.embed_dim), dtype=np.float32)


def cache_key(backbone: Backbone, settings: EmbeddingSettings) -> dict:
    """What makes two vectors of the same sequence interchangeable."""
    key = {k: v for k, v in asdict(settings).items() if k not in NOT_IN_CACHE_KEY}
    if settings.long_sequences == "truncate":
        key.pop("window_stride")
    key["layer"] = resolve_layer(backbone, settings.layer)
    key.update(
        model=backbone.name,
        weights=backbone.weights_id,
        precision=precision(pick_device(settings.device)),
    )
    return key


def recorded_settings(key: dict, configured: EmbeddingSettings) -> EmbeddingSettings:
    """The settings vectors with cache key `key` were made with (the inverse of `cache_key`);
    batch size, device and cache as `configured`."""
    made = {f.name: key[f.name] for f in fields(EmbeddingSettings) if f.name in key}
    return replace(configured, **made)


class ShardWriter:
    """Collects finished vectors and writes a cache shard every `every` vectors or `seconds`."""

    def __init__(
        self, cache: EmbeddingCache, keys: list[str], every: int = 2048, seconds: float = 120
    ):
        self.cache, self.keys, self.every, self.seconds = cache, keys, every, seconds
        self.hashes: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.last = time.monotonic()

    def __call__(self, index: int, vector: np.ndarray) -> None:
        self.hashes.append(self.keys[index])
        self.vectors.append(vector.copy())
        if len(self.hashes) >= self.every or time.monotonic() - self.last > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.hashes:
            self.cache.add(self.hashes, self.vectors)
        self.hashes, self.vectors, self.last = [], [], time.monotonic()


def embed_unique(
    backbone: Backbone, sequences: dict[str, str], settings: EmbeddingSettings, names
) -> dict[str, np.ndarray]:
    """Vectors by sequence hash, computing only what the cache (if any) lacks."""
    found = {}
    cache = None
    if settings.cache_dir is not None:
        cache = EmbeddingCache(settings.cache_dir, cache_key(backbone, settings))
        found = cache.lookup(sequences)
    missing = [key for key in sequences if key not in found]
    log.info(
        "%d unique sequences: %d cached, %d to compute", len(sequences), len(found), len(missing)
    )
    if missing:
        writer = ShardWriter(cache, missing) if cache else None
        vectors = embed_sequences(
            backbone, [sequences[k] for k in missing], settings, [names[k] for k in missing], writer
        )
        if writer:
            writer.flush()
        found.update(zip(missing, vectors, strict=True))
    return found


def read_inputs(fasta=None, sequence_table=None) -> tuple[list[str], list[str]]:
    """(ids, sequences) from a FASTA or from an ingested sequence table (ids are hashes there)."""
    if (fasta is None) == (sequence_table is None):
        raise InputError("give exactly one of a FASTA file or a sequence table")
    if fasta is not None:
        records = read_fasta(fasta)
        return [r.id for r in records], [r.sequence for r in records]
    table = pd.read_csv(sequence_table, sep="\t", dtype=str)
    return table["seq_hash"].tolist(), table["sequence"].tolist()


def write_embeddings(output, ids: list[str], vectors, metadata: dict) -> None:
    """One float32 vector per id in an `.npz` (`ids`, `embeddings`, `metadata` as JSON).

    Per-residue matrices (a list) are stored one below the other, with their `lengths`.
    """
    arrays = {}
    if isinstance(vectors, list):
        arrays["lengths"] = np.array([len(v) for v in vectors], dtype=np.int64)
        vectors = np.concatenate(vectors) if vectors else np.zeros((0, 0))
    with atomic_path(output, suffix=".npz") as tmp:
        np.savez(
            tmp,
            ids=np.array(ids, dtype=str),
            embeddings=vectors.astype(np.float32),
            metadata=np.array(json.dumps(metadata, sort_keys=True)),
            **arrays,
        )


def read_embeddings(path) -> tuple[list[str], np.ndarray | list[np.ndarray], dict]:
    """The inverse of `write_embeddings`."""
    with np.load(path) as data:
        vectors = data["embeddings"]
        if "lengths" in data:
            vectors = np.split(vectors, np.cumsum(data["lengths"])[:-1])
        return data["ids"].tolist(), vectors, json.loads(str(data["metadata"]))


def shard_assignment(sequences: dict[str, str], shards: int) -> dict[str, int]:
    """Each sequence hash's shard: longest first, onto the shard with the fewest residues.

    It depends on the sequences alone (not on what the cache holds), so shard jobs running at
    the same time, or again after a kill, agree on who computes what.
    """
    if shards < 1:
        raise InputError(f"embedding.shards must be at least 1, not {shards}")
    load = [0] * shards
    assignment = {}
    for key in sorted(sequences, key=lambda k: (-len(sequences[k]), k)):
        shard = min(range(shards), key=lambda i: (load[i], i))
        assignment[key] = shard
        load[shard] += len(sequences[key])
    return assignment


def run_embed_shard(
    output, *, model: ModelSettings, settings: EmbeddingSettings, sequence_table, shard: int
) -> None:
    """Put shard `shard` (of settings.shards) of a sequence table's sequences into the cache;
    `output` records what it found and computed."""
    shards = settings.shards
    if not 0 <= shard < shards:
        raise InputError(f"shard {shard} is not one of 0..{shards - 1}")
    if settings.cache_dir is None:
        raise InputError("an embedding shard fills the cache: give embedding.cache_dir")
    ids, sequences = read_inputs(sequence_table=sequence_table)
    unique = {sequence_hash(s): s for s in sequences}
    assignment = shard_assignment(unique, shards)
    mine = {k: v for k, v in unique.items() if assignment[k] == shard}
    backbone = model.load()
    cache = EmbeddingCache(settings.cache_dir, cache_key(backbone, settings))
    cached = len(cache.lookup(mine))
    embed_unique(backbone, mine, settings, dict(zip(mine, mine, strict=True)))
    record = {
        "shard": shard,
        "shards": shards,
        "sequences": len(mine),
        "cached": cached,
        "computed": len(mine) - cached,
        "residues": sum(map(len, mine.values())),
        "cache": str(cache.folder),
    }
    with atomic_path(output, suffix=".json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def run_embed(
    output,
    *,
    model: ModelSettings,
    settings: EmbeddingSettings,
    fasta=None,
    sequence_table=None,
) -> None:
    """Embed a FASTA or sequence table into `output` through the cache (settings.cache_dir; None:
    none); identical sequences are computed once."""
    ids, sequences = read_inputs(fasta, sequence_table)
    hashes = [sequence_hash(s) for s in sequences]
    unique = dict(zip(hashes, sequences, strict=True))
    names = {}
    for name, key in zip(ids, hashes, strict=True):
        names.setdefault(key, name)
    backbone = model.load()
    vectors = embed_unique(backbone, unique, settings, names)
    metadata = cache_key(backbone, settings)
    ordered = [vectors[k] for k in hashes]
    if settings.pooling != "none":
        ordered = np.stack(ordered) if ordered else np.zeros((0, backbone.embed_dim))
    write_embeddings(Path(output), ids, ordered, metadata)

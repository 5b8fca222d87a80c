"""Tests for copra.embed and copra.embedding_cache on a seeded random ESM-2 (esm2_t6_8M_UR50D).

The real model runs on the CPU; sequences are short and few so the file stays fast. ESM-2 forward
passes are counted with a global module forward hook (on the token embedding), so no code under
test is replaced.
"""

import json
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import kill_when_marked
from torch.nn.modules.module import register_module_forward_hook

import copra.embed as embed
from copra.backbone import load_backbone
from copra.cli import main
from copra.embed import (
    Chunk,
    ChunkEncoder,
    ShardWriter,
    cache_key,
    chunk_sequence,
    embed_sequences,
    read_embeddings,
    run_embed,
    run_embed_shard,
    shard_assignment,
    token_batches,
)
from copra.embedding_cache import EmbeddingCache
from copra.errors import InputError
from copra.sequences import STANDARD, sequence_hash
from copra.settings import EmbeddingSettings, ModelSettings

NAME = "esm2_t6_8M_UR50D"
SEED = 0
REPO = Path(__file__).resolve().parents[1]
MODEL = ModelSettings(NAME, "random", SEED)


def random_sequences(count, low, high, seed):
    rng = random.Random(seed)
    return ["".join(rng.choices(STANDARD, k=rng.randint(low, high))) for _ in range(count)]


def write_fasta(path, records):
    """`records` is a list of (header, sequence); the header is written after '>'."""
    Path(path).write_text("".join(f">{header}\n{sequence}\n" for header, sequence in records))
    return path


def numbered(sequences, prefix="s"):
    return [(f"{prefix}{i}", s) for i, s in enumerate(sequences)]


def embed_file(tmp_path, fasta, output="out.npz", cache="cache", **settings):
    """run_embed on the random backbone; returns (ids, vectors, metadata) of the output."""
    output = tmp_path / output
    cache_dir = None if cache is None else tmp_path / cache
    run_embed(
        output,
        model=MODEL,
        settings=EmbeddingSettings(cache_dir=cache_dir, **settings),
        fasta=fasta,
    )
    return read_embeddings(output)


def reps_alone(backbone, residues, layer=6):
    """Per-residue representations of `residues` run through the model on its own."""
    _, _, tokens = backbone.alphabet.get_batch_converter()([("", residues)])
    with torch.no_grad():
        out = backbone.model(tokens, repr_layers=[layer])
    return out["representations"][layer][0, 1 : len(residues) + 1]


def counts_message(caplog):
    """The last "N unique sequences: ..." log line."""
    lines = [r.getMessage() for r in caplog.records if "unique sequences" in r.getMessage()]
    assert lines, "no 'unique sequences' log line"
    return lines[-1]


class ForwardCounter:
    """Counts ESM-2 forward passes and the sequences in them while the block runs.

    A pass is a call of the token embedding: the fast inference path (`esm2_representation`)
    does not go through `ESM2.forward`, but every pass, fast or not, embeds its tokens once.
    """

    def __enter__(self):
        self.calls = 0
        self.rows = 0
        self.handle = register_module_forward_hook(self._hook)
        return self

    def _hook(self, module, args, output):
        if isinstance(module, torch.nn.Embedding) and args[0].dtype == torch.int64:
            self.calls += 1
            self.rows += args[0].shape[0]

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: two spinning threads crawl when other jobs share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(NAME, "random", seed=SEED)


@pytest.fixture
def cli():
    """copra.cli.main, with the SIGTERM handler it installs put back afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(autouse=True)
def copra_logs(caplog):
    caplog.set_level(logging.INFO, logger="copra")


# Batching, chunking and pooling


def test_batched_equals_one_at_a_time(backbone):
    sequences = random_sequences(12, 5, 80, seed=1)
    many = EmbeddingSettings(batch_tokens=100_000)
    alone = EmbeddingSettings(batch_tokens=1)
    chunks = [chunk_sequence(i, s, many)[0] for i, s in enumerate(sequences)]
    assert len(token_batches(chunks, many.batch_tokens)) == 1
    assert len(token_batches(chunks, alone.batch_tokens)) == len(sequences)

    batched = embed_sequences(backbone, sequences, many)
    single = embed_sequences(backbone, sequences, alone)
    assert batched.shape == (12, 320) and batched.dtype == np.float32
    assert np.abs(batched - single).max() < 1e-5
    # Vectors come back in input order: the mean of the model's own per-residue output.
    for i in (0, 7):
        expected = reps_alone(backbone, sequences[i]).mean(dim=0).numpy()
        assert np.abs(batched[i] - expected).max() < 1e-5


def test_token_batches_respect_budget_and_sort_by_length():
    rng = random.Random(2)
    chunks = [Chunk(i, 0, "A" * rng.randint(1, 60)) for i in range(50)] + [Chunk(50, 0, "A" * 300)]
    budget = 200
    batches = token_batches(chunks, budget)
    flat = [c for batch in batches for c in batch]
    assert sorted(c.sequence for c in flat) == list(range(51))
    lengths = [len(c.residues) for c in flat]
    assert lengths == sorted(lengths)
    for batch in batches:
        widest = max(len(c.residues) + 2 for c in batch)
        assert len(batch) == 1 or widest * len(batch) <= budget
    # Batches are filled: the next chunk would not have fitted into the previous batch.
    for batch, following in zip(batches, batches[1:], strict=False):
        assert (len(following[0].residues) + 2) * (len(batch) + 1) > budget
    # A chunk wider than the budget goes alone rather than being dropped.
    assert batches[-1] == [chunks[-1]]


@pytest.mark.parametrize(
    ("length", "size", "stride"),
    [(130, 50, 25), (101, 50, 50), (1000, 100, 7), (51, 50, 1), (300, 50, 49), (2100, 1022, 511)],
)
def test_windows_cover_every_residue(length, size, stride):
    sequence = "".join(random.Random(length).choices(STANDARD, k=length))
    settings = EmbeddingSettings(long_sequences="windows", max_residues=size, window_stride=stride)
    chunks = chunk_sequence(3, sequence, settings)
    covered = np.zeros(length, dtype=int)
    for chunk in chunks:
        assert chunk.sequence == 3
        assert len(chunk.residues) == size
        assert chunk.residues == sequence[chunk.start : chunk.start + size]
        covered[chunk.start : chunk.start + size] += 1
    assert covered.min() >= 1
    starts = [c.start for c in chunks]
    assert starts[0] == 0 and starts[-1] == length - size
    assert starts == sorted(set(starts))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_short_and_truncated_sequences_are_one_chunk():
    windows = EmbeddingSettings(long_sequences="windows", max_residues=50, window_stride=25)
    truncate = EmbeddingSettings(long_sequences="truncate", max_residues=50, window_stride=25)
    short, long = "M" * 50, "".join(random.Random(0).choices(STANDARD, k=130))
    assert chunk_sequence(0, short, windows) == [Chunk(0, 0, short)]
    assert chunk_sequence(0, short, truncate) == [Chunk(0, 0, short)]
    assert chunk_sequence(1, long, truncate) == [Chunk(1, 0, long[:50])]


@pytest.mark.parametrize("stride", [0, 51, 500])
def test_window_stride_outside_window_is_refused(stride):
    # A stride longer than the window would leave residues out (their mean became NaN).
    settings = EmbeddingSettings(long_sequences="windows", max_residues=50, window_stride=stride)
    with pytest.raises(InputError, match="window_stride"):
        chunk_sequence(0, "A" * 200, settings)


def test_windows_differ_from_truncate_only_for_long_sequences(backbone):
    sequences = random_sequences(3, 20, 50, seed=3) + random_sequences(1, 130, 130, seed=4)
    common = dict(max_residues=50, window_stride=25)
    truncated = embed_sequences(backbone, sequences, EmbeddingSettings(**common))
    windowed = embed_sequences(
        backbone, sequences, EmbeddingSettings(long_sequences="windows", **common)
    )
    assert np.abs(truncated[:3] - windowed[:3]).max() < 1e-5
    assert np.abs(truncated[3] - windowed[3]).max() > 1e-3


def test_windows_equal_hand_computation(backbone):
    sequence = random_sequences(1, 130, 130, seed=5)[0]
    settings = EmbeddingSettings(long_sequences="windows", max_residues=50, window_stride=25)
    sums, counts = torch.zeros(130, 320), torch.zeros(130, 1)
    for start in (0, 25, 50, 75, 80):  # every 25 residues, the last window flush with the end
        sums[start : start + 50] += reps_alone(backbone, sequence[start : start + 50])
        counts[start : start + 50] += 1
    expected = (sums / counts).mean(dim=0).numpy()
    got = embed_sequences(backbone, [sequence, "MKV"], settings)
    assert np.abs(got[0] - expected).max() < 1e-5

    truncated = embed_sequences(backbone, [sequence], EmbeddingSettings(max_residues=50))
    expected = reps_alone(backbone, sequence[:50]).mean(dim=0).numpy()
    assert np.abs(truncated[0] - expected).max() < 1e-5


# The cache


def test_second_run_computes_nothing_and_matches_exactly(tmp_path, caplog):
    records = numbered(random_sequences(10, 10, 40, seed=6))
    fasta = write_fasta(tmp_path / "in.fasta", records)
    with ForwardCounter() as first_count:
        ids, first, metadata = embed_file(tmp_path, fasta, "first.npz")
    assert counts_message(caplog) == "10 unique sequences: 0 cached, 10 to compute"
    assert first_count.calls >= 1 and first_count.rows == 10
    assert ids == [name for name, _ in records]
    assert metadata["model"] == NAME and metadata["weights"] == f"random-seed{SEED}"

    with ForwardCounter() as second_count:
        again_ids, again, _ = embed_file(tmp_path, fasta, "second.npz")
    assert counts_message(caplog) == "10 unique sequences: 10 cached, 0 to compute"
    assert second_count.calls == 0
    assert again_ids == ids
    assert np.array_equal(again, first)

    fresh_ids, fresh, _ = embed_file(tmp_path, fasta, "fresh.npz", cache=None)
    assert fresh_ids == ids
    assert np.abs(fresh - first).max() < 1e-5


def test_shards_balance_residues_and_do_not_depend_on_order():
    sequences = {sequence_hash(s): s for s in random_sequences(40, 10, 200, seed=12)}
    assignment = shard_assignment(sequences, 3)
    assert set(assignment) == set(sequences) and set(assignment.values()) == {0, 1, 2}
    loads = [sum(len(sequences[k]) for k in assignment if assignment[k] == i) for i in range(3)]
    assert max(loads) - min(loads) <= max(map(len, sequences.values()))
    shuffled = dict(reversed(list(sequences.items())))
    assert shard_assignment(shuffled, 3) == assignment
    assert set(shard_assignment(sequences, 1).values()) == {0}
    with pytest.raises(InputError, match="at least 1"):
        shard_assignment(sequences, 0)


def test_sharded_embedding_equals_the_unsharded_run(tmp_path, caplog):
    """Three shard jobs fill the cache; the gathering run computes nothing and gives the vectors
    of one unsharded run. A shard run again (after a kill, say) computes nothing either."""
    sequences = random_sequences(12, 10, 60, seed=13)
    table = tmp_path / "sequences.tsv"
    table.write_text(
        "seq_hash\tlength\tsequence\n"
        + "".join(f"{sequence_hash(s)}\t{len(s)}\t{s}\n" for s in sequences)
    )
    sharded_settings = EmbeddingSettings(cache_dir=tmp_path / "cache", shards=3)
    records = []
    for shard in range(3):
        out = tmp_path / f"shard{shard}.json"
        run_embed_shard(
            out, model=MODEL, settings=sharded_settings, sequence_table=table, shard=shard
        )
        records.append(json.loads(out.read_text()))
    assert sum(r["sequences"] for r in records) == 12 and all(r["cached"] == 0 for r in records)
    assert all(r["shards"] == 3 for r in records)
    with ForwardCounter() as count:
        run_embed(
            tmp_path / "sharded.npz",
            model=MODEL,
            settings=EmbeddingSettings(cache_dir=tmp_path / "cache"),
            sequence_table=table,
        )
    assert count.calls == 0
    assert counts_message(caplog) == "12 unique sequences: 12 cached, 0 to compute"
    run_embed(
        tmp_path / "whole.npz",
        model=MODEL,
        settings=EmbeddingSettings(cache_dir=tmp_path / "other"),
        sequence_table=table,
    )
    sharded, whole = (read_embeddings(tmp_path / f"{n}.npz") for n in ("sharded", "whole"))
    assert sharded[0] == whole[0] and sharded[2] == whole[2]
    np.testing.assert_allclose(sharded[1], whole[1], atol=1e-5)
    run_embed_shard(
        tmp_path / "again.json",
        model=MODEL,
        settings=sharded_settings,
        sequence_table=table,
        shard=1,
    )
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["computed"] == 0 and again["cached"] == records[1]["sequences"]
    with pytest.raises(InputError, match="shard 3 is not one of 0..2"):
        run_embed_shard(
            tmp_path / "bad.json",
            model=MODEL,
            settings=sharded_settings,
            sequence_table=table,
            shard=3,
        )
    # A shard only fills the cache: without one it is refused.
    with pytest.raises(InputError, match="cache_dir"):
        run_embed_shard(
            tmp_path / "bad.json",
            model=MODEL,
            settings=EmbeddingSettings(cache_dir=None, shards=3),
            sequence_table=table,
            shard=0,
        )
    assert not (tmp_path / "bad.json").exists()


def test_changed_fasta_computes_only_new_sequences(tmp_path, caplog):
    old = numbered(random_sequences(8, 10, 40, seed=7))
    _, first, _ = embed_file(tmp_path, write_fasta(tmp_path / "old.fasta", old), "old.npz")
    new = numbered(random_sequences(3, 10, 40, seed=8), prefix="new")
    records = old[:4] + new + old[4:]
    fasta = write_fasta(tmp_path / "new.fasta", records)
    with ForwardCounter() as count:
        ids, vectors, _ = embed_file(tmp_path, fasta, "new.npz")
    assert counts_message(caplog) == "11 unique sequences: 8 cached, 3 to compute"
    assert count.rows == 3
    assert ids == [name for name, _ in records]
    assert np.array_equal(np.concatenate([vectors[:4], vectors[7:]]), first)

    _, fresh, _ = embed_file(tmp_path, fasta, "fresh.npz", cache=None)
    assert np.abs(vectors - fresh).max() < 1e-5


def test_identical_sequences_computed_once_and_odd_ids_kept(tmp_path, caplog):
    same, other = random_sequences(2, 15, 30, seed=9)
    records = [
        ("sp|P12345|A/1-20 first copy, with a description", same),
        ("chr1:100-200", other),
        ("tr|Q9/x:y second copy", same),
        ("plain", same),
    ]
    fasta = write_fasta(tmp_path / "in.fasta", records)
    with ForwardCounter() as count:
        ids, vectors, _ = embed_file(tmp_path, fasta)
    assert count.rows == 2
    assert counts_message(caplog) == "2 unique sequences: 0 cached, 2 to compute"
    assert ids == ["sp|P12345|A/1-20", "chr1:100-200", "tr|Q9/x:y", "plain"]
    assert np.array_equal(vectors[0], vectors[2]) and np.array_equal(vectors[0], vectors[3])
    assert not np.allclose(vectors[0], vectors[1])


def test_sequence_table_input(tmp_path):
    sequences = random_sequences(3, 10, 20, seed=10)
    table = tmp_path / "sequences.tsv"
    hashes = [sequence_hash(s) for s in sequences]
    table.write_text(
        "seq_hash\tsequence\n"
        + "".join(f"{h}\t{s}\n" for h, s in zip(hashes, sequences, strict=True))
    )
    output = tmp_path / "out.npz"
    run_embed(output, model=MODEL, settings=EmbeddingSettings(cache_dir=None), sequence_table=table)
    ids, vectors, _ = read_embeddings(output)
    assert ids == hashes
    fasta = write_fasta(tmp_path / "in.fasta", numbered(sequences))
    _, from_fasta, _ = embed_file(tmp_path, fasta, cache=None)
    assert np.array_equal(vectors, from_fasta)


def test_no_cache_writes_no_cache_folder(tmp_path, cli):
    fasta = write_fasta(tmp_path / "in.fasta", numbered(random_sequences(5, 10, 30, seed=11)))
    common = ["embed", "--model", NAME, "--weights", "random", "--model-seed", str(SEED)]
    common += ["--fasta", str(fasta)]
    cached_dir, uncached_dir = tmp_path / "cache", tmp_path / "never"
    out = ["--output", str(tmp_path / "cached.npz"), "--cache-dir", str(cached_dir)]
    assert cli([*common, *out]) == 0
    out = ["--output", str(tmp_path / "fresh.npz"), "--cache-dir", str(uncached_dir)]
    assert cli([*common, *out, "--no-cache"]) == 0
    assert not uncached_dir.exists()
    assert len(list(cached_dir.glob("*/shard-*.npz"))) == 1
    cached_ids, cached, _ = read_embeddings(tmp_path / "cached.npz")
    fresh_ids, fresh, _ = read_embeddings(tmp_path / "fresh.npz")
    assert cached_ids == fresh_ids
    assert np.array_equal(cached, fresh)


def test_cache_folder_per_embedding_configuration(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", numbered(random_sequences(2, 60, 70, seed=12)))
    cache = tmp_path / "cache"

    def new_folders(seed=SEED, **settings):
        before = set(cache.glob("*"))
        run_embed(
            tmp_path / "out.npz",
            model=ModelSettings(NAME, "random", seed),
            settings=EmbeddingSettings(cache_dir=cache, **settings),
            fasta=fasta,
        )
        return set(cache.glob("*")) - before

    variants = [
        {},
        {"layer": 3},
        {"layer": 0},
        {"long_sequences": "windows", "max_residues": 50, "window_stride": 25},
        {"long_sequences": "windows", "max_residues": 50, "window_stride": 10},
        {"max_residues": 50},
        {"seed": SEED + 1},
    ]
    folders = []
    for variant in variants:
        (folder,) = new_folders(**variant)
        folders.append(folder)
    assert len(set(folders)) == len(variants)
    # The folder's key records the -1 default resolved to the last layer.
    base_key = cache_key(load_backbone(NAME, "random", seed=SEED), EmbeddingSettings())
    assert base_key["layer"] == 6
    assert json.loads((folders[0] / "key.json").read_text()) == base_key
    # What does not change the vectors does not change the folder.
    for variant in ({"batch_tokens": 64}, {"window_stride": 7}, {"layer": 6}, {"shards": 4}):
        assert new_folders(**variant) == set(), variant


# Out of memory


class OutOfMemoryAboveOne(ChunkEncoder):
    """Runs out of memory on any batch of more than one chunk, as a small GPU would."""

    def forward(self, batch):
        if len(batch) > 1:
            raise torch.OutOfMemoryError("Tried to allocate 20.00 GiB")
        return super().forward(batch)


class AlwaysOutOfMemory(ChunkEncoder):
    def forward(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_retries_in_halves(backbone, caplog, monkeypatch):
    sequences = random_sequences(5, 10, 40, seed=13)
    names = [f"seq/{i}" for i in range(5)]
    batch = [Chunk(i, 0, s) for i, s in enumerate(sequences)]
    cpu = torch.device("cpu")
    normal = ChunkEncoder(backbone, 6, cpu, names).encode(batch)
    with caplog.at_level(logging.WARNING, logger="copra"):
        retried = OutOfMemoryAboveOne(backbone, 6, cpu, names).encode(batch)
    assert [r.shape for r in retried] == [(len(s), 320) for s in sequences]
    for got, expected in zip(retried, normal, strict=True):
        assert (got - expected).abs().max() < 1e-5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "out of memory on 5 chunks" in warnings[0]
    assert all(name in warnings[0] for name in names)

    # The same through embed_sequences: the vectors do not depend on the retries.
    expected = embed_sequences(backbone, sequences, EmbeddingSettings())
    monkeypatch.setattr(embed, "ChunkEncoder", OutOfMemoryAboveOne)
    got = embed_sequences(backbone, sequences, EmbeddingSettings(), names)
    assert np.abs(got - expected).max() < 1e-5


def test_out_of_memory_on_one_chunk_names_the_sequence(backbone, monkeypatch):
    cpu = torch.device("cpu")
    encoder = AlwaysOutOfMemory(backbone, 6, cpu, ["first", "huge one"])
    with pytest.raises(InputError, match="'huge one' \\(12 residues\\)"):
        encoder.encode([Chunk(1, 0, "M" * 12)])
    monkeypatch.setattr(embed, "ChunkEncoder", AlwaysOutOfMemory)
    with pytest.raises(InputError, match="'b'"):
        embed_sequences(backbone, ["MKV"], EmbeddingSettings(), ["b"])


def test_other_runtime_errors_are_not_retried(backbone):
    class Broken(ChunkEncoder):
        calls = 0

        def forward(self, batch):
            Broken.calls += 1
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        Broken(backbone, 6, torch.device("cpu"), ["a", "b"]).encode(
            [Chunk(0, 0, "MKV"), Chunk(1, 0, "MKVL")]
        )
    assert Broken.calls == 1


# Crashes and kills never corrupt the cache


def check_shards(folder, allowed_hashes):
    """Every shard loads, has as many hashes as vectors, and only hashes of the input."""
    shards = sorted(Path(folder).glob("shard-*.npz"))
    stored = []
    for shard in shards:
        with np.load(shard) as data:
            hashes, vectors = data["hashes"], data["vectors"]
            assert len(hashes) == len(vectors) > 0, shard
            assert vectors.shape[1:] == (320,) and vectors.dtype == np.float32
            assert np.isfinite(vectors).all()
            stored += [str(h) for h in hashes]
    assert set(stored) <= set(allowed_hashes)
    return shards, stored


def test_exception_mid_run_leaves_complete_shards(tmp_path, backbone, caplog):
    sequences = random_sequences(12, 10, 30, seed=14)
    fasta = write_fasta(tmp_path / "in.fasta", numbered(sequences))
    settings = EmbeddingSettings(batch_tokens=70)
    hashes = [sequence_hash(s) for s in sequences]
    cache = EmbeddingCache(tmp_path / "cache", cache_key(backbone, settings))
    writer = ShardWriter(cache, hashes, every=3)
    seen = []

    def on_vector(index, vector):
        if len(seen) == 8:
            raise KeyboardInterrupt("stopped mid-run")
        seen.append(index)
        writer(index, vector)

    with pytest.raises(KeyboardInterrupt):
        embed_sequences(backbone, sequences, settings, on_vector=on_vector)
    shards, stored = check_shards(cache.folder, hashes)
    assert len(shards) == 2 and sorted(stored) == sorted(hashes[i] for i in seen[:6])

    _, fresh, _ = embed_file(tmp_path, fasta, "fresh.npz", cache=None)
    ids, vectors, _ = embed_file(tmp_path, fasta, batch_tokens=70)
    assert counts_message(caplog) == "12 unique sequences: 6 cached, 6 to compute"
    assert np.abs(vectors - fresh).max() < 1e-5
    _, again, _ = embed_file(tmp_path, fasta, "again.npz")
    assert counts_message(caplog) == "12 unique sequences: 12 cached, 0 to compute"
    assert np.array_equal(again, vectors)


# `python -m copra` with a shard written every 4 vectors (ShardWriter's own `every` argument,
# which the command line does not expose; 120 s would mean no shard before the kill).
KILLED_RUN = "\n".join(
    [
        "import pathlib, runpy, sys, time, copra.embed",
        "marker = pathlib.Path(sys.argv.pop(1))",
        "copra.embed.ShardWriter.__init__.__defaults__ = (4, 120.0)  # a shard every 4 vectors",
        "flush, flushed = copra.embed.ShardWriter.flush, []",
        "def flush_or_wait(self):",
        "    flush(self)",
        "    flushed.append(1)",
        "    if len(flushed) == 3:  # three shards written: wait here to be killed",
        "        marker.write_text('3 shards')",
        "        time.sleep(3600)",
        "copra.embed.ShardWriter.flush = flush_or_wait",
        "runpy.run_module('copra', run_name='__main__')",
    ]
)


def test_kill_mid_run_leaves_complete_shards(tmp_path, caplog):
    sequences = random_sequences(300, 15, 30, seed=15)
    fasta = write_fasta(tmp_path / "in.fasta", numbered(sequences))
    cache = tmp_path / "cache"
    marker = tmp_path / "three-shards"
    command = [sys.executable, "-c", KILLED_RUN, str(marker), "embed", "--model", NAME]
    command += ["--weights", "random"]
    command += ["--model-seed", str(SEED), "--fasta", str(fasta)]
    command += ["--output", str(tmp_path / "k.npz")]
    command += ["--cache-dir", str(cache), "--batch-tokens", "64"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    kill_when_marked(process, marker)  # the job waits after its third shard until killed
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "k.npz").exists()

    (folder,) = cache.iterdir()
    hashes = [sequence_hash(s) for s in sequences]
    shards, stored = check_shards(folder, hashes)
    assert len(shards) == 3 and len(stored) == len(set(stored)) == 12

    ids, vectors, _ = embed_file(tmp_path, fasta)
    done = len(stored)
    expected = f"300 unique sequences: {done} cached, {300 - done} to compute"
    assert counts_message(caplog) == expected
    fresh_ids, fresh, _ = embed_file(tmp_path, fasta, "fresh.npz", cache=None)
    assert ids == fresh_ids
    assert np.abs(vectors - fresh).max() < 1e-5


# Bad input


@pytest.mark.parametrize("layer", [7, -2, 100])
def test_layer_outside_model_is_refused(backbone, layer):
    with pytest.raises(InputError, match=f"layer {layer} is outside 0..6"):
        embed_sequences(backbone, ["MKV"], EmbeddingSettings(layer=layer))


def test_layer_zero_and_last_are_accepted(backbone):
    zero = embed_sequences(backbone, ["MKVL"], EmbeddingSettings(layer=0))
    last = embed_sequences(backbone, ["MKVL"], EmbeddingSettings(layer=6))
    default = embed_sequences(backbone, ["MKVL"], EmbeddingSettings())
    assert np.array_equal(last, default)
    assert not np.allclose(zero, last)


def test_bad_layer_in_run_embed_leaves_no_output(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", [("a", "MKV")])
    with pytest.raises(InputError, match="layer 7"):
        embed_file(tmp_path, fasta, layer=7)
    assert not (tmp_path / "out.npz").exists()


def test_exactly_one_input_is_required(tmp_path):
    fasta = write_fasta(tmp_path / "in.fasta", [("a", "MKV")])
    table = tmp_path / "t.tsv"
    table.write_text(f"seq_hash\tsequence\n{sequence_hash('MKV')}\tMKV\n")
    for inputs in ({}, {"fasta": fasta, "sequence_table": table}):
        with pytest.raises(InputError, match="exactly one"):
            run_embed(
                tmp_path / "out.npz",
                model=MODEL,
                settings=EmbeddingSettings(cache_dir=None),
                **inputs,
            )
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("MKV\n>a\nMKV\n", "before the first '>'"),
        (">a\nMKV\n>b\nMK1V\n", "'1' at residue 3"),
        (">a\n\n", "empty sequence"),
    ],
)
def test_invalid_fasta_exits_2_without_output(tmp_path, cli, capsys, text, message):
    fasta = tmp_path / "bad.fasta"
    fasta.write_text(text)
    output = tmp_path / "out" / "embeddings.npz"
    argv = ["embed", "--model", NAME, "--weights", "random", "--fasta", str(fasta)]
    argv += ["--output", str(output), "--cache-dir", str(tmp_path / "cache")]
    assert cli(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("copra: error: ") and message in error and str(fasta) in error
    assert not output.exists()
    assert not (output.parent.exists() and any(output.parent.iterdir()))

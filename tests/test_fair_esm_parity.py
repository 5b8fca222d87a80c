"""Acceptance check: `copra embed` on a fair-esm checkpoint matches fair-esm's own forward pass.

The reference is the recipe of fair-esm's scripts/extract.py: `load_model_and_alphabet_local`,
`get_batch_converter(truncation_seq_length=1022)`, and the mean of the last layer over the
residue positions 1..len+1 (BOS and EOS left out). The checkpoint is written in fair-esm's own
format from seeded random weights of the real esm2_t6_8M_UR50D architecture.
"""

import argparse
import logging
import random
import signal

import esm
import numpy as np
import pytest
import torch

from copra.cli import main
from copra.embed import read_embeddings
from copra.sequences import STANDARD
from tests.esm_checkpoints import write_fair_esm_checkpoint

NAME = "esm2_t6_8M_UR50D"
LAYER = 6
TRUNCATION = 1022


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: two spinning threads crawl when other jobs share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli(caplog):
    """copra.cli.main, with the SIGTERM handler it installs put back afterwards."""
    caplog.set_level(logging.INFO, logger="copra")
    previous = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, previous)


def protein_records(seed=0):
    """200 random sequences of 30-300 residues, and two longer than fair-esm's 1022 among them."""
    rng = random.Random(seed)
    records = [
        (f"prot{i}", "".join(rng.choices(STANDARD, k=rng.randint(30, 300)))) for i in range(200)
    ]
    records.insert(50, ("long_a", "".join(rng.choices(STANDARD, k=1100))))
    records.insert(150, ("long_b", "".join(rng.choices(STANDARD, k=1400))))
    return records


def fair_esm_embeddings(checkpoint, records) -> np.ndarray:
    """Mean-pooled last-layer vectors, one sequence at a time, as fair-esm's extract.py does."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(checkpoint)
    model.eval()
    converter = alphabet.get_batch_converter(truncation_seq_length=TRUNCATION)
    vectors = []
    with torch.no_grad():
        for name, sequence in records:
            _, _, tokens = converter([(name, sequence)])
            reps = model(tokens, repr_layers=[LAYER])["representations"][LAYER]
            length = min(TRUNCATION, len(sequence))
            vectors.append(reps[0, 1 : length + 1].mean(0).numpy())
    return np.stack(vectors)


def test_copra_embed_matches_fair_esm_extract(tmp_path, cli, caplog):
    checkpoint = tmp_path / f"{NAME}.pt"
    write_fair_esm_checkpoint(checkpoint, name=NAME, seed=7)
    records = protein_records()
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">{name} random protein\n{seq}\n" for name, seq in records))
    output, cache = tmp_path / "embeddings.npz", tmp_path / "cache"
    argv = ["embed", "--model", str(checkpoint), "--fasta", str(fasta), "--cache-dir", str(cache)]

    assert cli([*argv, "--output", str(output)]) == 0
    ids, vectors, metadata = read_embeddings(output)
    assert ids == [name for name, _ in records]
    assert vectors.shape == (202, 320) and vectors.dtype == np.float32
    assert metadata["model"] == NAME and metadata["weights"].startswith("tensors-sha256:")
    assert metadata["layer"] == LAYER and metadata["max_residues"] == TRUNCATION
    assert any("2 sequence(s) longer than 1022" in r.getMessage() for r in caplog.records)

    expected = fair_esm_embeddings(checkpoint, records)
    assert np.abs(vectors - expected).max() < 1e-4

    # The same again from the cache, without computing anything.
    again = tmp_path / "again.npz"
    assert cli([*argv, "--output", str(again)]) == 0
    assert any("202 cached, 0 to compute" in r.getMessage() for r in caplog.records)
    assert np.array_equal(read_embeddings(again)[1], vectors)

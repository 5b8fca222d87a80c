"""Faults a run meets on a real cluster: a damaged cache shard, a folder it cannot write, a full
disk, a shared folder under the group's umask, and a run killed with its Snakemake lock left."""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, skip_or_fail, snakemake

from copra.cli import main
from copra.demo_data import write_demo_data
from copra.embed import read_embeddings, run_embed
from copra.settings import EmbeddingSettings, ModelSettings

MODEL = ModelSettings("esm2_t6_8M_UR50D", "random")


@contextlib.contextmanager
def tmpfs(folder, options: str):
    """A tmpfs mounted at `folder` with `options` (size=64k, ro): a real full or read-only file
    system. Needs root, as in CI."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def ingest_args(tmp_path, out):
    """`copra ingest` of the demo's stability task into `out`."""
    demo = tmp_path / "demo"
    if not demo.exists():
        write_demo_data(demo, 40, 0)
    task = ["--kind", "sequence_regression", "--labels", demo / "stability.tsv"]
    files = ["--sequences", demo / "proteins.fasta", "--table", out / "table.tsv"]
    return [str(word) for word in ["ingest", *task, *files, "--sequence-table", out / "seq.tsv"]]


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flipped(data: bytes) -> bytes:
    """One byte of the stored vectors changed: the zip's CRC check fails on reading them."""
    start = data.index(b"vectors.npy") + 200
    return data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1 :]


@pytest.mark.parametrize("damage", [truncated, flipped])
def test_a_damaged_cache_shard_is_set_aside_and_computed_again(tmp_path, caplog, damage):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">s{i}\nMKTAYIAK{'QRW'[i % 3] * (i + 1)}\n" for i in range(6)))
    settings = EmbeddingSettings(cache_dir=str(tmp_path / "cache"))
    run_embed(tmp_path / "first.npz", model=MODEL, settings=settings, fasta=fasta)
    (shard,) = (tmp_path / "cache").glob("*/shard-*.npz")
    shard.write_bytes(damage(shard.read_bytes()))

    with caplog.at_level(logging.WARNING):
        run_embed(tmp_path / "again.npz", model=MODEL, settings=settings, fasta=fasta)
    assert f"embedding cache shard {shard} is damaged" in caplog.text
    assert "its vectors are computed again" in caplog.text
    assert not shard.exists() and shard.with_name(f"damaged-{shard.name}").is_file()
    first, again = read_embeddings(tmp_path / "first.npz"), read_embeddings(tmp_path / "again.npz")
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    assert len(list((tmp_path / "cache").glob("*/shard-*.npz"))) == 1  # the new one


def test_a_read_only_results_folder_is_one_message(tmp_path, capsys):
    with tmpfs(tmp_path / "results", "ro,size=1m") as folder:
        assert main(ingest_args(tmp_path, folder / "stability")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"copra: error: {folder}/stability") and len(err.splitlines()) == 1
    assert "a read-only file system: use a folder on a writable one" in err


def test_a_full_disk_is_one_message_and_leaves_nothing(tmp_path, capsys):
    with tmpfs(tmp_path / "small", "size=16k") as folder:
        (folder / "filler").write_bytes(b"x" * 12 * 1024)  # one 4 KiB page left
        code = main(ingest_args(tmp_path, folder))
        left = sorted(p.name for p in folder.iterdir())
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no space left on the device: free some, or use a folder on another disk" in err
    assert left == ["filler"]  # no table, no temporary file


def test_an_unwritable_embedding_cache_is_one_message(tmp_path, capsys):
    with tmpfs(tmp_path / "shared-cache", "ro,size=1m") as cache:
        fasta = tmp_path / "in.fasta"
        fasta.write_text(">a\nMKTAYIAK\n")
        args = ["embed", "--model", "esm2_t6_8M_UR50D", "--weights", "random", "--fasta", fasta]
        args += ["--output", tmp_path / "out.npz", "--cache-dir", cache]
        assert main([str(word) for word in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"copra: error: {cache}") and "read-only file system" in err
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)]
)
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    """A group's shared results, cache and weights stay readable: files and folders get the
    modes the umask gives, not mkstemp's 0600 and mkdtemp's 0700."""
    code = "\n".join(
        [
            "import os, sys",
            "os.umask(int(sys.argv[1], 8))",
            "from copra.atomic import atomic_directory",
            "from copra.cli import main",
            "with atomic_directory(sys.argv[2]) as folder:",
            "    (folder / 'adapter_model.safetensors').write_bytes(b'x')",
            "sys.exit(main(sys.argv[3:]))",
        ]
    )
    out = tmp_path / "out"
    args = [oct(umask), str(tmp_path / "adapter"), *ingest_args(tmp_path, out)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*out.iterdir(), tmp_path / "adapter"]}
    assert modes == {"table.tsv": file_mode, "seq.tsv": file_mode, "adapter": folder_mode}
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_mode & 0o777 == file_mode


@pytest.mark.slow
def test_a_run_killed_with_its_lock_is_unlocked_and_completed(tmp_path):
    """kill -9 of Snakemake on the login node leaves its lock: the same command is refused
    until `--unlock`, and then completes the run (README, Running on a SLURM cluster)."""
    write_demo_data(tmp_path / "demo", 40, 0)
    task = {
        "kind": "sequence_regression",
        "sequences": "demo/proteins.fasta",
        "labels": "demo/stability.tsv",
    }
    config = {
        "tasks": {"stability": task},
        "methods": ["head"],
        "evaluation": {"bootstrap": 10},
        "model": {"name": "esm2_t6_8M_UR50D", "weights": "random"},
    }
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable.replace("python", "snakemake"), "--snakefile", REPO / "Snakefile"]
    command = [*map(str, command), "--cores", "2", "--configfile", "my.yaml"]
    run = subprocess.Popen(
        command,
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ingested = tmp_path / "results" / "stability" / "data" / "table.tsv"
    while not ingested.exists():  # the first job's output: the run is under way
        assert run.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)  # the login session dies: Snakemake and its jobs
    run.wait()
    assert not (tmp_path / "results" / "metrics.tsv").exists()

    mine = tmp_path / "my.yaml"
    again = snakemake(tmp_path, "--configfile", mine, check=False)
    assert again.returncode != 0
    assert "Directory cannot be locked" in again.stdout + again.stderr
    snakemake(tmp_path, "--configfile", mine, "--unlock")
    snakemake(tmp_path, "--configfile", mine)
    metrics = pd.read_csv(tmp_path / "results" / "metrics.tsv", sep="\t")
    assert set(metrics.task) == {"stability"} and metrics.value.notna().any()
    manifest = json.loads((tmp_path / "results/stability/head/seed0/manifest.json").read_text())
    assert manifest["method"] == "head"

"""Device choice: a GPU given but unusable fails clearly (or falls back), and GPU locks give
concurrent jobs distinct devices (fake device ids: the locks need no GPU)."""

import subprocess
import sys

import pytest
import torch

from copra import device
from copra.cli import main
from copra.errors import InputError

CLAIM = (
    "import sys; from copra.device import claim_gpu; "
    "print(claim_gpu(sys.argv[1], ['3', '7'], poll_s=0.05), flush=True); "
    "sys.stdin.readline()"  # holds the device until the test closes its stdin
)


def claimer(lock_dir):
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def release(process) -> int:
    process.stdin.close()
    return process.wait(timeout=30)


def test_concurrent_jobs_lock_distinct_gpus(tmp_path):
    """Two jobs hold the two devices; a third gets a device only when one is released, and
    then exactly that one (no clock involved: nothing else is free until then)."""
    first, second = claimer(tmp_path), claimer(tmp_path)
    index_first, index_second = int(first.stdout.readline()), int(second.stdout.readline())
    assert {index_first, index_second} == {0, 1}
    third = claimer(tmp_path)  # both devices held: it waits
    assert release(first) == 0
    assert int(third.stdout.readline()) == index_first
    assert release(second) == 0 and release(third) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-3.lock", "gpu-7.lock"]


def test_a_killed_job_releases_its_gpu(tmp_path):
    holder = claimer(tmp_path)
    assert int(holder.stdout.readline()) == 0
    holder.kill()
    holder.wait()
    follower = claimer(tmp_path)
    assert int(follower.stdout.readline()) == 0
    assert release(follower) == 0


@pytest.fixture
def given_a_gpu(monkeypatch):
    """The environment of a SLURM job that asked for a GPU, on a node where torch sees none
    usable (on a machine with a GPU too: torch is told there is none)."""
    for name in device.SCHEDULER_GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COPRA_CPU_FALLBACK", raising=False)
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_gpu_given_but_cpu_only_torch_fails_at_once(given_a_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)  # this machine's build; made explicit
    with pytest.raises(InputError, match=r"given a GPU \(SLURM_GPUS_ON_NODE=1\).*CPU-only build"):
        device.pick_device()
    assert device.pick_device("cpu").type == "cpu"


def test_gpu_given_but_none_visible_names_the_devices(given_a_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build on a node without a GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(InputError, match=r"sees no GPU \(CUDA_VISIBLE_DEVICES=;"):
        device.pick_device()


def test_cpu_fallback_runs_on_the_cpu_with_a_warning(given_a_gpu, monkeypatch, caplog):
    monkeypatch.setenv("COPRA_CPU_FALLBACK", "1")
    assert device.pick_device().type == "cpu"
    assert "running on the CPU" in caplog.text


def test_without_a_gpu_request_the_device_is_picked_silently(monkeypatch, caplog):
    """No scheduler request: a GPU when torch sees one, else the CPU; either way no warning."""
    for name in device.SCHEDULER_GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.pick_device().type == expected and not caplog.text


def test_a_job_given_an_unusable_gpu_exits_2_without_output(given_a_gpu, tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAKQR\n")
    out = tmp_path / "out.npz"
    args = ["embed", "--model", "esm2_t6_8M_UR50D", "--weights", "random", "--fasta", str(fasta)]
    assert main([*args, "--output", str(out), "--no-cache"]) == 2
    assert "given a GPU" in capsys.readouterr().err and not out.exists()

"""Device choice: a GPU given but unusable fails clearly (or falls back), and GPU locks give
concurrent jobs distinct devices (fake device ids: the locks need no GPU)."""

import subprocess
import sys
import time

import pytest
import torch

from copra import device
from copra.cli import main
from copra.errors import InputError

CLAIM = (
    "import sys, time; from copra.device import claim_gpu; "
    "print(claim_gpu(sys.argv[1], ['3', '7'], poll_s=0.05), flush=True); "
    "time.sleep(float(sys.argv[2]))"
)


def claimer(lock_dir, hold_s):
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(lock_dir), str(hold_s)], stdout=subprocess.PIPE, text=True
    )


def test_concurrent_jobs_lock_distinct_gpus(tmp_path):
    first, second = claimer(tmp_path, 3), claimer(tmp_path, 3)
    taken = {int(first.stdout.readline()), int(second.stdout.readline())}
    assert taken == {0, 1}
    started = time.monotonic()
    third = claimer(tmp_path, 0)  # waits for a device until one of the two ends
    assert int(third.stdout.readline()) in taken
    assert time.monotonic() - started > 1.0
    for process in (first, second, third):
        assert process.wait(timeout=30) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-3.lock", "gpu-7.lock"]


def test_a_killed_job_releases_its_gpu(tmp_path):
    holder = claimer(tmp_path, 60)
    assert int(holder.stdout.readline()) == 0
    holder.kill()
    holder.wait()
    follower = claimer(tmp_path, 0)
    assert int(follower.stdout.readline()) == 0
    assert follower.wait(timeout=30) == 0


@pytest.fixture
def given_a_gpu(monkeypatch):
    """The environment of a SLURM job that asked for a GPU, on this GPU-less machine."""
    for name in device.SCHEDULER_GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COPRA_CPU_FALLBACK", raising=False)
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    assert not torch.cuda.is_available()


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


def test_without_a_gpu_request_the_cpu_is_used_silently(monkeypatch, caplog):
    for name in device.SCHEDULER_GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert device.pick_device().type == "cpu" and not caplog.text


def test_a_job_given_an_unusable_gpu_exits_2_without_output(given_a_gpu, tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nMKTAYIAKQR\n")
    out = tmp_path / "out.npz"
    args = ["embed", "--model", "esm2_t6_8M_UR50D", "--weights", "random", "--fasta", str(fasta)]
    assert main([*args, "--output", str(out), "--no-cache"]) == 2
    assert "given a GPU" in capsys.readouterr().err and not out.exists()

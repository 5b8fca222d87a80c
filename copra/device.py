"""Device choice: the GPU when there is one, else the CPU; bf16 autocast on GPU only.

Two more duties of a job that runs a model:
- A job given a GPU by its scheduler (SLURM's GPU variables are set) that cannot use one (no
  device visible, or a CPU-only torch build in its environment) stops at once with the reason,
  unless `COPRA_CPU_FALLBACK=1` (config `gpu.cpu_fallback`) lets it run on the CPU.
- With several GPUs visible and `COPRA_GPU_LOCK_DIR` set (config `gpu.lock_dir`), the job holds
  an exclusive lock on one device for its lifetime, so concurrent jobs on one workstation use
  distinct GPUs (Snakemake's local `gpu` resource only counts them).
"""

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

import torch

from copra.errors import InputError

log = logging.getLogger(__name__)
SCHEDULER_GPU_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS")
_claimed: dict = {}  # the lock this process holds: {"index": i, "handle": file}


def gpu_requested() -> str | None:
    """The scheduler variable saying that this job was given GPUs, if any."""
    for name in SCHEDULER_GPU_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value and value not in ("0", "none"):
            return f"{name}={value}"
    return None


def check_gpu_available() -> bool:
    """False (CPU) or True (GPU); a job given a GPU that it cannot use fails unless allowed."""
    if torch.cuda.is_available():
        return True
    requested = gpu_requested()
    if requested is None:
        return False
    if torch.version.cuda is None:
        reason = (
            f"its torch {torch.__version__} is a CPU-only build: install the CUDA build in the "
            "job's environment (conda solves on GPU-less login nodes pick CPU builds unless "
            "CONDA_OVERRIDE_CUDA is set)"
        )
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
        reason = f"torch sees no GPU (CUDA_VISIBLE_DEVICES={visible}; check the driver)"
    if os.environ.get("COPRA_CPU_FALLBACK") == "1":
        log.warning("the job was given a GPU (%s) but %s; running on the CPU", requested, reason)
        return False
    raise InputError(
        f"the job was given a GPU ({requested}) but {reason}. Set gpu.cpu_fallback: true to "
        "run such jobs on the CPU instead"
    )


def visible_gpus() -> list[str]:
    """The GPUs this process may use, by the ids CUDA_VISIBLE_DEVICES gives (or 0..n-1)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


def claim_gpu(lock_dir, devices: list[str], poll_s: float = 2.0) -> int:
    """Lock one of `devices` for this process (waiting while all are taken); its index.

    The lock is an flock on `<lock_dir>/gpu-<id>.lock`: the kernel drops it when the process
    ends, however it ends, so a killed job never leaves a device locked.
    """
    if "index" in _claimed:
        return _claimed["index"]
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index, device in enumerate(devices):
            handle = open(Path(lock_dir) / f"gpu-{device}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _claimed.update(index=index, handle=handle)
            log.info("using GPU %s (index %d), locked in %s", device, index, lock_dir)
            return index
        if not waited:
            log.info("all %d GPUs are in use by other jobs; waiting", len(devices))
            waited = True
        time.sleep(poll_s)


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` takes a GPU when one is usable (a locked one of several), else the CPU."""
    if requested != "auto":
        return torch.device(requested)
    if not check_gpu_available():
        return torch.device("cpu")
    devices = visible_gpus()
    lock_dir = os.environ.get("COPRA_GPU_LOCK_DIR")
    if len(devices) > 1 and lock_dir:
        index = claim_gpu(lock_dir, devices)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cuda")


def precision(device: torch.device) -> str:
    """The numeric precision used on `device` (part of cache keys and manifests)."""
    return "bf16-autocast" if device.type == "cuda" else "float32"


def autocast(device: torch.device):
    """bf16 autocast on a GPU; never half precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

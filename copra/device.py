"""Device choice: the GPU when there is one, else the CPU; bf16 autocast on GPU only."""

import contextlib

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` takes the first GPU when one is present, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def precision(device: torch.device) -> str:
    """The numeric precision used on `device` (part of cache keys and manifests)."""
    return "bf16-autocast" if device.type == "cuda" else "float32"


def autocast(device: torch.device):
    """bf16 autocast on a GPU; never half precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

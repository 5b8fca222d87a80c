"""Loading fair-esm ESM-2 backbones: seeded random weights, hub checkpoints or local .pt files.
Owns the Backbone record and safe checkpoint loading (no pickled code runs at load time).
"""

import argparse
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import esm
import torch

from copra.errors import InputError
from copra.hf_checkpoint import esm2_from_hf, hub_snapshot, is_hf_folder, tensor_checksum
from copra.weights import (
    ESM2_ARCHITECTURES,
    FAIR_ESM_URL,
    check_name,
    checkpoint_path,
    fetch_weights,
    regression_path,
)

__all__ = ["ESM2_ARCHITECTURES", "Backbone", "load_backbone"]


@dataclass(frozen=True)
class Backbone:
    """An ESM-2 model in eval mode on the CPU, with what identifies its weights."""

    model: "esm.model.esm2.ESM2"
    alphabet: "esm.data.Alphabet"
    name: str
    weights_id: str
    num_layers: int
    embed_dim: int


def load_backbone(
    name: str,
    weights: str = "pretrained",
    *,
    seed: int = 0,
    weights_dir=None,
    download_url: str = FAIR_ESM_URL,
) -> Backbone:
    """Load ESM-2 `name` with weights "random" (seeded), "pretrained" (fair-esm's, fetched),
    "huggingface" (facebook/<name> from the hub cache, offline), a fair-esm .pt path or a Hugging
    Face checkpoint folder; the weights id is the checksum of the tensors, whatever the source."""
    if weights == "random":
        model, alphabet = _random_model(name, seed)
        weights_id = f"random-seed{seed}"
    else:
        if weights == "pretrained":
            path = checkpoint_path(name, weights_dir)
            if not path.is_file():
                fetch_weights(name, weights_dir, download_url)
        elif weights == "huggingface":
            path = hub_snapshot(name)
        else:
            path = Path(weights)
        if is_hf_folder(path):
            model, alphabet = esm2_from_hf(path, name, ESM2_ARCHITECTURES.get(name))
        else:
            model, alphabet = _checkpoint_model(name, path)
        weights_id = f"tensors-sha256:{tensor_checksum(model)}"
    model.eval()
    return Backbone(model, alphabet, name, weights_id, model.num_layers, model.embed_dim)


def _random_model(name: str, seed: int):
    """A freshly initialised ESM-2 `name`, the same for the same seed; callers' RNG untouched."""
    check_name(name)
    num_layers, embed_dim, heads = ESM2_ARCHITECTURES[name]
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = esm.ESM2(num_layers, embed_dim, heads, alphabet=alphabet, token_dropout=True)
    return model, alphabet


def _checkpoint_model(name: str, path: Path):
    """Build ESM-2 from fair-esm checkpoint `path` (and its contact regression, if beside it)."""
    if path.is_dir():
        raise InputError(
            "is a folder without config.json: neither a Hugging Face checkpoint folder nor a "
            "fair-esm .pt checkpoint (name the file)",
            path=path,
        )
    if not path.is_file():
        raise InputError("checkpoint file not found", path=path)
    model_data = safe_load(path)
    _check_esm2(model_data, path)
    _check_architecture(name, model_data, path)
    regression = regression_path(path)
    regression_data = safe_load(regression) if regression.is_file() else None
    model_name = path.stem if path.stem.startswith("esm2") else f"esm2_{path.stem}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Regression weights not found")
        try:
            return esm.pretrained.load_model_and_alphabet_core(
                model_name, model_data, regression_data
            )
        except (RuntimeError, KeyError, AttributeError, TypeError) as error:
            raise InputError(f"not a usable ESM-2 checkpoint: {error}", path=path) from error


def safe_load(path: Path):
    """torch.load `path` allowing tensors and argparse.Namespace only: no pickled code runs."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for files it cannot read
        raise _load_failure(error, path) from error


def _load_failure(error: Exception, path: Path) -> InputError:
    """Why `path` did not load: it asks for code (a pickle global) or is no checkpoint."""
    refused = isinstance(error, pickle.UnpicklingError)
    found = re.search(r"GLOBAL (\S+)", str(error)) if refused else None
    if found:
        return InputError(
            f"refuses to unpickle code: the file needs {found.group(1)}, but only tensors and "
            "argparse.Namespace are loaded (fair-esm's checkpoint format)",
            path=path,
        )
    detail = "unreadable pickle data" if refused else f"{type(error).__name__}: {error}"
    return InputError(f"not a PyTorch checkpoint ({detail})", path=path)


def _check_esm2(model_data, path: Path) -> None:
    """Raise InputError unless `model_data` is fair-esm's ESM-2 layout (cfg + model state dict)."""
    cfg = model_data.get("cfg") if isinstance(model_data, dict) else None
    state = model_data.get("model") if isinstance(model_data, dict) else None
    is_esm2 = (
        isinstance(cfg, dict)
        and isinstance(cfg.get("model"), argparse.Namespace)
        and isinstance(state, dict)
        and not any("embed_positions" in key for key in state)
    )
    if not is_esm2:
        raise InputError("only fair-esm ESM-2 checkpoints are supported", path=path)


def _check_architecture(name: str, model_data, path: Path) -> None:
    """Raise InputError if `name` is a known architecture that the checkpoint does not match."""
    cfg = model_data["cfg"]["model"]
    found = tuple(
        getattr(cfg, key, None)
        for key in ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads")
    )
    expected = ESM2_ARCHITECTURES.get(name)
    if expected is not None and found != expected:
        raise InputError(
            f"checkpoint has (layers, dim, heads) = {found}, but {name} is {expected}", path=path
        )

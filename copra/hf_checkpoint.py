"""Hugging Face ESM-2 checkpoints (a `save_pretrained` folder, or the hub cache found offline)
mapped exactly into fair-esm's `ESM2`, and the checksum of a model's tensors that identifies
its weights whatever file they came from."""

import hashlib
import json
import re
from pathlib import Path

import esm
import torch

from copra.errors import InputError

HUB_OWNER = "facebook"
# transformers' EsmLayer module paths -> fair-esm's TransformerLayer ones
LAYER_NAMES = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}
TOP_NAMES = {
    "embeddings.word_embeddings": "embed_tokens",
    "encoder.emb_layer_norm_after": "emb_layer_norm_after",
    "contact_head.regression": "contact_head.regression",
    "lm_head.dense": "lm_head.dense",
    "lm_head.layer_norm": "lm_head.layer_norm",
}
LEFT_OUT = re.compile(r"(rotary_embeddings\.inv_freq|^pooler\.|^classifier\.|lm_head\.decoder\.)")
OPTIONAL = ("lm_head.", "contact_head.")  # an EsmModel checkpoint has neither


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def hub_snapshot(name: str) -> Path:
    """The hub cache's snapshot of facebook/<name>, found without the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(f"{HUB_OWNER}/{name}", local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        folder = Path(HF_HUB_CACHE) / f"models--{HUB_OWNER}--{name}"
        raise InputError(
            f"weights: huggingface found no snapshot of {HUB_OWNER}/{name} in the hub cache "
            f"(searched {folder}; HF_HOME or HF_HUB_CACHE move it): download it where there is a "
            f"network (`hf download {HUB_OWNER}/{name}`), or give the folder as model.weights"
        ) from error


def read_hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or pytorch_model.bin loaded with weights_only (no pickled code runs)."""
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise InputError(
        "has config.json but neither model.safetensors nor pytorch_model.bin", path=folder
    )


def fair_esm_name(key: str) -> str | None:
    """transformers' parameter name -> fair-esm's (None: not part of fair-esm's ESM2)."""
    key = key.removeprefix("esm.")
    if LEFT_OUT.search(key):
        return None
    key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))
    if key == "lm_head.bias":
        return key
    found = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
    if found:
        layer, module, kind = found.groups()
        return f"layers.{layer}.{LAYER_NAMES[module]}.{kind}" if module in LAYER_NAMES else key
    module, _, kind = key.rpartition(".")
    return f"{TOP_NAMES[module]}.{kind}" if module in TOP_NAMES else key


def check_hf_config(hf: dict, name: str, expected, path: Path) -> None:
    """The checkpoint's config against the ESM-2 architecture `name` (layers, width, heads,
    vocabulary) and against what fair-esm's ESM2 computes (rotary, eps 1e-5, no pre-norm)."""
    found = (hf.get("num_hidden_layers"), hf.get("hidden_size"), hf.get("num_attention_heads"))
    if expected is not None and found != expected:
        raise InputError(
            f"Hugging Face checkpoint has (layers, dim, heads) = {found}, but {name} is {expected}",
            path=path,
        )
    alphabet = len(esm.data.Alphabet.from_architecture("ESM-1b").all_toks)
    wanted = {
        "model_type": "esm",
        "vocab_size": alphabet,
        "position_embedding_type": "rotary",
        "emb_layer_norm_before": False,
        "intermediate_size": 4 * (hf.get("hidden_size") or 0),
        "layer_norm_eps": 1e-5,
    }
    odd = {k: (hf.get(k), v) for k, v in wanted.items() if hf.get(k) != v}
    if odd:
        detail = ", ".join(f"{k} {got!r} (ESM-2: {want!r})" for k, (got, want) in odd.items())
        raise InputError(f"not an ESM-2 checkpoint fair-esm can compute: {detail}", path=path)


def esm2_from_hf(folder: Path, name: str, expected):
    """fair-esm's ESM2 with the checkpoint's weights, and its alphabet."""
    config_path = folder / "config.json"
    hf = json.loads(config_path.read_text())
    check_hf_config(hf, name, expected, config_path)
    state = {}
    for key, tensor in read_hf_tensors(folder).items():
        mapped = fair_esm_name(key)
        if mapped is not None:
            state[mapped] = tensor
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.random.fork_rng(devices=[]):  # heads the checkpoint lacks: the same every load
        torch.manual_seed(0)
        model = esm.ESM2(
            hf["num_hidden_layers"],
            hf["hidden_size"],
            hf["num_attention_heads"],
            alphabet=alphabet,
            token_dropout=bool(hf.get("token_dropout", True)),
        )
    if "embed_tokens.weight" in state:
        state.setdefault("lm_head.weight", state["embed_tokens.weight"])  # tied, as in both
    expected_keys = set(model.state_dict())
    unknown = sorted(set(state) - expected_keys)
    computed = ("rot_emb.inv_freq",)  # fair-esm computes its rotary frequencies itself
    missing = sorted(
        k
        for k in expected_keys - set(state)
        if not k.startswith(OPTIONAL) and not k.endswith(computed)
    )
    if unknown or missing:
        raise InputError(
            f"weights do not map onto fair-esm's ESM2: unknown {unknown[:3]}, "
            f"missing {missing[:3]}",
            path=folder,
        )
    model.load_state_dict(state, strict=False)
    return model, alphabet


def tensor_checksum(model: torch.nn.Module) -> str:
    """sha256 over the tensors that compute the representations (name, dtype, shape, bytes;
    names sorted; not the LM and contact heads, which a checkpoint may lack): the same for the
    same weights from a fair-esm .pt or a Hugging Face checkpoint."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key.startswith(OPTIONAL):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()

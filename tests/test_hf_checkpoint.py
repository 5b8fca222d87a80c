"""Hugging Face ESM-2 checkpoints into fair-esm's ESM2, against transformers' own EsmModel and
EsmForMaskedLM as the reference: seeded random weights in HF's format (`save_pretrained`)."""

import os
import subprocess
import sys

import pytest
import torch

from copra.backbone import load_backbone
from copra.errors import InputError
from tests.esm_checkpoints import write_fair_esm_checkpoint, write_hf_checkpoint

ARCHITECTURES = {"esm2_t6_8M_UR50D": (6, 320, 20), "esm2_t12_35M_UR50D": (12, 480, 20)}
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGL", "MSEQNNTEMTFQIQRIYTKDISFEAPNAPHVFQ"]


def tokens_of(backbone) -> torch.Tensor:
    return backbone.alphabet.get_batch_converter()([("", s) for s in SEQUENCES])[2]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_loaded_backbone_matches_transformers(tmp_path, name):
    """Last-layer representations (EsmModel) and logits (EsmForMaskedLM) of padded sequences,
    within 1e-5 of transformers' own ESM."""
    from transformers import EsmForMaskedLM

    folder = write_hf_checkpoint(tmp_path / "hf", name)
    backbone = load_backbone(name, str(folder))
    tokens = tokens_of(backbone)
    assert (tokens == backbone.alphabet.padding_idx).any()  # padding is exercised
    with torch.no_grad():
        ours = backbone.model(tokens, repr_layers=[backbone.num_layers])
        reference = EsmForMaskedLM.from_pretrained(folder).eval()
        theirs = reference(
            input_ids=tokens, attention_mask=tokens.ne(1).long(), output_hidden_states=True
        )
    real = tokens.ne(backbone.alphabet.padding_idx)
    representations = ours["representations"][backbone.num_layers]
    assert torch.allclose(representations[real], theirs.hidden_states[-1][real], atol=1e-5)
    assert torch.allclose(ours["logits"][real], theirs.logits[real], atol=1e-5)


def test_an_hf_checkpoint_of_a_fair_esm_model_embeds_like_its_pt(tmp_path):
    """The .pt's weights mapped backwards into transformers' names and saved with
    `save_pretrained`: the same representations, and the same weights id (one cache entry)."""
    name = "esm2_t6_8M_UR50D"
    pt = tmp_path / f"{name}.pt"
    write_fair_esm_checkpoint(pt, name, seed=3)
    from_pt = load_backbone(name, str(pt))
    folder = write_hf_checkpoint(tmp_path / "hf", name, state=from_pt.model.state_dict())
    from_hf = load_backbone(name, str(folder))
    tokens = tokens_of(from_pt)
    with torch.no_grad():
        a = from_pt.model(tokens, repr_layers=[6])["representations"][6]
        b = from_hf.model(tokens, repr_layers=[6])["representations"][6]
    assert torch.equal(a, b)
    assert from_hf.weights_id == from_pt.weights_id and from_pt.weights_id.startswith("tensors-")
    other = load_backbone(name, str(write_hf_checkpoint(tmp_path / "other", name, seed=1)))
    assert other.weights_id != from_pt.weights_id


def test_pytorch_model_bin_loads_without_pickled_code(tmp_path):
    folder = write_hf_checkpoint(tmp_path / "hf", "esm2_t6_8M_UR50D")
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    reference = load_backbone("esm2_t6_8M_UR50D", str(folder))
    (folder / "model.safetensors").unlink()
    assert load_backbone("esm2_t6_8M_UR50D", str(folder)).weights_id == reference.weights_id


def test_another_architecture_is_named(tmp_path):
    folder = write_hf_checkpoint(tmp_path / "hf", "esm2_t12_35M_UR50D")
    with pytest.raises(
        InputError, match=r"\(12, 480, 20\), but esm2_t6_8M_UR50D is \(6, 320, 20\)"
    ):
        load_backbone("esm2_t6_8M_UR50D", str(folder))


HUB_SCRIPT = """
import sys
from copra.backbone import load_backbone
from copra.errors import InputError
print(load_backbone("esm2_t6_8M_UR50D", "huggingface").weights_id)
try:
    load_backbone("esm2_t12_35M_UR50D", "huggingface")
except InputError as error:
    print(error)
"""


def test_the_hub_cache_is_found_offline(tmp_path):
    """`weights: huggingface` finds facebook/<name> in HF_HOME's hub cache with
    HF_HUB_OFFLINE=1 (a fresh process: huggingface_hub reads them at import), and names the
    folder it searched for a model that is not there."""
    repo = tmp_path / "hf_home" / "hub" / "models--facebook--esm2_t6_8M_UR50D"
    write_hf_checkpoint(repo / "snapshots" / "0123abc", "esm2_t6_8M_UR50D")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    found, missing = result.stdout.strip().split("\n")[-2:]
    expected = load_backbone("esm2_t6_8M_UR50D", str(repo / "snapshots" / "0123abc")).weights_id
    assert found == expected
    assert "no snapshot of facebook/esm2_t12_35M_UR50D" in missing
    assert str(tmp_path / "hf_home" / "hub" / "models--facebook--esm2_t12_35M_UR50D") in missing


def test_a_config_fair_esm_cannot_compute_is_refused(tmp_path):
    """transformers' EsmConfig default eps (1e-12) is not ESM-2's: named with both values."""
    import json

    folder = write_hf_checkpoint(tmp_path / "hf", "esm2_t6_8M_UR50D")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-12}))
    with pytest.raises(InputError, match=r"layer_norm_eps 1e-12 \(ESM-2: 1e-05\)"):
        load_backbone("esm2_t6_8M_UR50D", str(folder))

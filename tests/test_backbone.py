"""Tests for copra.backbone and copra.weights: random, local, hub and downloaded ESM-2 weights.
Checkpoints are written in fair-esm's own format and served over real HTTP on localhost.
"""

import argparse
import hashlib
import os
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import esm
import pytest
import torch

from copra.backbone import ESM2_ARCHITECTURES, load_backbone
from copra.errors import InputError
from copra.hf_checkpoint import tensor_checksum
from copra.weights import checkpoint_path, checkpoint_sha256, fetch_weights
from tests.esm_checkpoints import write_fair_esm_checkpoint

NAME = "esm2_t6_8M_UR50D"
SEQUENCES = [("a", "MKTAYIAKQRQISFVKSHFSRQ"), ("b", "GSHMLEDPVAGLKLE")]


def _state(backbone):
    return backbone.model.state_dict()


def _assert_same_weights(state, expected):
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def _forward(model, alphabet):
    _, _, tokens = alphabet.get_batch_converter()(SEQUENCES)
    with torch.no_grad():
        out = model.eval()(tokens, repr_layers=[model.num_layers], return_contacts=True)
    return out["logits"], out["representations"][model.num_layers], out["contacts"]


# Random weights


def test_random_weights_are_deterministic_by_seed():
    first, second = load_backbone(NAME, "random", seed=3), load_backbone(NAME, "random", seed=3)
    _assert_same_weights(_state(first), _state(second))
    assert first.weights_id == "random-seed3"
    assert (first.name, first.num_layers, first.embed_dim) == (NAME, 6, 320)
    assert not first.model.training


def test_random_weights_differ_across_seeds():
    first, second = load_backbone(NAME, "random", seed=0), load_backbone(NAME, "random", seed=1)
    key = "layers.0.self_attn.q_proj.weight"
    assert not torch.equal(_state(first)[key], _state(second)[key])


def test_random_weights_leave_callers_rng_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    load_backbone(NAME, "random", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_random_unknown_name_lists_known_names():
    with pytest.raises(InputError, match="esm2_t33_650M_UR50D"):
        load_backbone("esm3_huge", "random")


# Local checkpoint files


def test_local_checkpoint_matches_fair_esm(tmp_path):
    path = tmp_path / f"{NAME}.pt"
    written = write_fair_esm_checkpoint(path, seed=5)
    backbone = load_backbone(NAME, str(path))
    _assert_same_weights(_state(backbone), written)
    assert backbone.weights_id == f"tensors-sha256:{tensor_checksum(backbone.model)}"
    with torch.serialization.safe_globals([argparse.Namespace]):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
    for ours, theirs in zip(
        _forward(backbone.model, backbone.alphabet), _forward(model, alphabet), strict=True
    ):
        assert torch.equal(ours, theirs)


def test_local_checkpoint_without_regression_loads_quietly(tmp_path):
    path = tmp_path / f"{NAME}.pt"
    written = write_fair_esm_checkpoint(path, seed=5, with_regression=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone = load_backbone(NAME, path)
    state = _state(backbone)
    for key, value in written.items():
        if not key.startswith("contact_head.regression."):
            assert torch.equal(state[key], value), key


def test_local_checkpoint_not_named_esm2_still_builds_esm2(tmp_path):
    path = tmp_path / "finetuned.pt"
    written = write_fair_esm_checkpoint(path, num_layers=2)
    backbone = load_backbone("finetuned", path)
    _assert_same_weights(_state(backbone), written)
    assert isinstance(backbone.model, esm.ESM2) and backbone.num_layers == 2


def test_local_checkpoint_of_another_architecture_errors(tmp_path):
    path = tmp_path / "model.pt"
    write_fair_esm_checkpoint(path, num_layers=2)
    with pytest.raises(InputError, match="model.pt.*esm2_t6_8M_UR50D"):
        load_backbone(NAME, path)


def test_checkpoint_missing_weights_errors(tmp_path):
    path = tmp_path / f"{NAME}.pt"
    write_fair_esm_checkpoint(path)
    data = torch.load(path, weights_only=False)
    del data["model"]["encoder.sentence_encoder.layers.0.fc1.weight"]
    torch.save(data, path)
    with pytest.raises(InputError, match="(?s)not a usable ESM-2 checkpoint.*fc1"):
        load_backbone(NAME, path)


def test_esm1_checkpoint_is_refused(tmp_path):
    path = tmp_path / "esm1b_t33_650M_UR50S.pt"
    state = {"encoder.sentence_encoder.embed_positions.weight": torch.zeros(2, 2)}
    torch.save({"args": argparse.Namespace(arch="roberta_large"), "model": state}, path)
    with pytest.raises(InputError, match="only fair-esm ESM-2"):
        load_backbone("esm1b", path)


class _RunsCode:
    """Unpickling this calls `function(*args)`: stands in for arbitrary code."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


@pytest.mark.parametrize("blocked_module", [True, False], ids=["os.mkdir", "shutil.copyfile"])
def test_checkpoint_with_pickled_code_is_refused_unrun(tmp_path, blocked_module):
    path, marker = tmp_path / f"{NAME}.pt", tmp_path / "marker"
    if blocked_module:  # torch names modules it never loads from in a different message
        payload = _RunsCode(os.mkdir, str(marker))
    else:
        payload = _RunsCode(shutil.copyfile, __file__, str(marker))
    torch.save({"cfg": {"model": argparse.Namespace()}, "model": payload}, path)
    with pytest.raises(InputError, match="refuses to unpickle code") as raised:
        load_backbone(NAME, path)
    assert str(path) in str(raised.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"hello", b"", b"PK\x03\x04junk"])
def test_not_a_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="notes.pt.*not a PyTorch checkpoint"):
        load_backbone(NAME, path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(InputError, match="absent.pt"):
        load_backbone(NAME, tmp_path / "absent.pt")


def test_a_folder_given_as_the_checkpoint_is_named_a_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder without config.json: neither a Hugging"):
        load_backbone(NAME, tmp_path)


# Downloads and the hub cache


@dataclass
class _Server:
    root: Path
    url: str
    requests: list = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on localhost serving tmp_path/server, counting GET requests."""
    served = _Server(tmp_path / "server", "")
    served.root.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served.root), **kwargs)

        def do_GET(self):
            served.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    served.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{served.httpd.server_address[1]}"
    threading.Thread(target=served.httpd.serve_forever, daemon=True).start()
    yield served
    served.stop()


def _publish(root: Path, seed=0):
    """Lay out NAME as fair-esm's download site does: models/ and regression/ folders."""
    written = write_fair_esm_checkpoint(root / "models" / f"{NAME}.pt", seed=seed)
    (root / "regression").mkdir()
    regression = f"{NAME}-contact-regression.pt"
    (root / "models" / regression).rename(root / "regression" / regression)
    return written


def test_fetch_then_load_pretrained_over_http(server, tmp_path):
    written = _publish(server.root, seed=2)
    cache = tmp_path / "cache"

    path = fetch_weights(NAME, weights_dir=cache, download_url=server.url)
    assert path == cache / "hub" / "checkpoints" / f"{NAME}.pt"
    assert len(server.requests) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == [
        f"{NAME}-contact-regression.pt",
        f"{NAME}.pt",
        f"{NAME}.pt.sha256",
    ]
    digest = checkpoint_sha256(server.root / "models" / f"{NAME}.pt")
    assert (path.parent / f"{NAME}.pt.sha256").read_text() == f"{digest}  {NAME}.pt\n"

    assert fetch_weights(NAME, weights_dir=cache, download_url=server.url) == path
    assert len(server.requests) == 2

    server.stop()
    backbone = load_backbone(NAME, "pretrained", weights_dir=cache, download_url=server.url)
    _assert_same_weights(_state(backbone), written)
    assert backbone.weights_id == f"tensors-sha256:{tensor_checksum(backbone.model)}"


def test_load_pretrained_downloads_when_missing(server, tmp_path):
    _publish(server.root)
    backbone = load_backbone(NAME, weights_dir=tmp_path / "cache", download_url=server.url)
    assert len(server.requests) == 2 and backbone.num_layers == 6


def test_failed_download_says_how_to_fix_and_leaves_no_file(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=f"{server.url}/models/{NAME}.pt.*copra fetch-weights"):
        fetch_weights(NAME, weights_dir=cache, download_url=server.url)
    folder = checkpoint_path(NAME, cache).parent
    assert not folder.exists() or not list(folder.iterdir())


def test_fetch_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(InputError, match="esm2_t6_8M_UR50D"):
        fetch_weights("esm2_t99_1T_UR50D", weights_dir=tmp_path)


def test_default_weights_dir_is_torch_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = checkpoint_path(NAME)
    assert path == tmp_path / "hub" / "checkpoints" / f"{NAME}.pt"
    written = write_fair_esm_checkpoint(path)  # put in place by hand: no download needed
    backbone = load_backbone(NAME, "pretrained", download_url="http://127.0.0.1:9")
    _assert_same_weights(_state(backbone), written)


def test_sha256_sidecar_used_only_when_up_to_date(tmp_path):
    path = tmp_path / "file.pt"
    path.write_bytes(b"weights")
    sidecar = tmp_path / "file.pt.sha256"
    sidecar.write_text(f"{'0' * 64}  file.pt\n")
    assert checkpoint_sha256(path) == "0" * 64
    stale = path.stat().st_mtime - 10
    os.utime(sidecar, (stale, stale))
    assert checkpoint_sha256(path) == hashlib.sha256(b"weights").hexdigest()


def test_architectures_table():
    assert ESM2_ARCHITECTURES["esm2_t48_15B_UR50D"] == (48, 5120, 40)
    assert all(name.startswith("esm2_t") for name in ESM2_ARCHITECTURES)

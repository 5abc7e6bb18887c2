"""Checkpoints: bit-exact round trip, manifest checks, tamper detection, and no pickle anywhere.

A manifest that disagrees with the caller is a :class:`CheckpointMismatch` (the cache refuses it);
weights that disagree with the manifest are a :class:`CheckpointCorrupt` (the cache rebuilds them).
"""
from __future__ import annotations

import ast
import json

import pytest
import torch

from minigpt.cache import CacheCorrupt, CacheMismatch
from minigpt.checkpoint import (MANIFEST, WEIGHTS, CheckpointCorrupt, CheckpointMismatch, load_checkpoint,
                                model_fingerprint, read_manifest, save_checkpoint, trunk_hash)
from minigpt.config import REPO_ROOT, GPTConfig
from minigpt.model import GPT

CFG = GPTConfig(vocab_size=37, block_size=16, n_layer=3, n_head=2, n_embd=16)


@pytest.fixture
def trained(tmp_path):
    """A model moved off its initialisation (one optimiser step), saved with a manifest."""
    torch.manual_seed(0)
    model = GPT(CFG)
    idx = torch.randint(0, CFG.vocab_size, (2, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(idx, idx)[1].backward()
    opt.step()
    path = tmp_path / "ckpt"
    save_checkpoint(model, path, {"role": "specialist", "tokenizer_fingerprint": "tok-a", "seed": 3,
                                  "trunk_hash": trunk_hash(model, 1)})
    return model.eval(), path


def test_roundtrip_is_bit_exact(trained):
    model, path = trained
    loaded, manifest = load_checkpoint(path)
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # the head is still tied
    idx = torch.randint(0, CFG.vocab_size, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert loaded.config == CFG and not loaded.training
    assert manifest["seed"] == 3 and manifest["model_fingerprint"] == model_fingerprint(model)
    assert manifest["trunk_hash"] == trunk_hash(loaded, 1)


def test_untied_head_survives_the_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPT(CFG).untie_head()
    with torch.no_grad():
        model.lm_head.weight.add_(0.1)  # the head now differs from the embedding
    save_checkpoint(model, tmp_path / "untied", {"role": "specialist"})
    loaded, manifest = load_checkpoint(tmp_path / "untied")
    assert manifest["tied_head"] is False and not loaded.tied_head
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight)
    assert model_fingerprint(loaded) == model_fingerprint(model)


def test_tied_manifest_says_nothing_about_the_head(trained):
    assert "tied_head" not in read_manifest(trained[1])  # older manifests stay valid: no key = tied


def test_expected_manifest_values_pass(trained):
    _, path = trained
    _, manifest = load_checkpoint(path, expect={"tokenizer_fingerprint": "tok-a", "role": "specialist"})
    assert manifest["role"] == "specialist"


@pytest.mark.parametrize("key, want, have", [("tokenizer_fingerprint", "tok-b", "tok-a"),
                                             ("seed", 4, 3),
                                             ("base_fingerprint", "abc", None)])  # absent key
def test_expect_mismatch_is_refused(trained, key, want, have):
    _, path = trained
    with pytest.raises(CheckpointMismatch) as err:
        load_checkpoint(path, expect={key: want})
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{key}={have!r}" in msg and f"{want!r} was expected" in msg and str(path) in msg
    assert "fix the config that asked for it" in msg and f"delete {path} to retrain it" in msg
    assert isinstance(err.value, CacheMismatch) and not isinstance(err.value, CacheCorrupt)  # refused, not rebuilt


def test_changed_model_config_in_manifest_is_refused(trained):
    _, path = trained
    manifest = read_manifest(path)
    manifest["model_config"]["n_embd"] = 32
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorrupt, match=r"do not fit the model config in its manifest .*delete the folder"):
        load_checkpoint(path)  # safetensors refuses tensors of the wrong shape; we say so in one line


@pytest.mark.parametrize("where", [0.5, 0.9, -1])
def test_tampered_weights_are_refused(trained, where):
    _, path = trained
    data = bytearray((path / WEIGHTS).read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: u64 header size, JSON header, data
    pos = len(data) - 1 if where == -1 else header + int((len(data) - header) * where)
    data[pos] ^= 0x01  # one bit: the file still parses, only the fingerprint can tell
    (path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointCorrupt, match="do not match the fingerprint") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and "delete the folder and rerun" in str(err.value)
    assert isinstance(err.value, CacheCorrupt) and not isinstance(err.value, CacheMismatch)  # rebuilt, not refused


# -- no pickle: torch.load only with weights_only=True ---------------------------------------------

def unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of torch.load calls (also via ``from torch import load``) lacking weights_only=True."""
    tree = ast.parse(source)
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module == "torch" for a in node.names if a.name == "load"}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        is_load = (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                   and f.value.id == "torch") or (isinstance(f, ast.Name) and f.id in aliases)
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in node.keywords)
        if is_load and not safe:
            bad.append(node.lineno)
    return bad


def test_the_checker_catches_unsafe_loads():
    assert unsafe_torch_loads("import torch\ntorch.load('m.pt')") == [2]
    assert unsafe_torch_loads("import torch\ntorch.load('m.pt', weights_only=False)") == [2]
    assert unsafe_torch_loads("from torch import load as L\nL('m.pt')") == [2]
    assert unsafe_torch_loads("import torch\ntorch.load('m.pt', weights_only=True)") == []
    assert unsafe_torch_loads("import numpy as np\nnp.load('a.npy')") == []


def test_no_torch_load_without_weights_only():
    files = [p for folder in ("minigpt", "chapters", "benchmarks") for p in sorted((REPO_ROOT / folder).rglob("*.py"))]
    assert any(p.name == "checkpoint.py" for p in files)
    # the scan reaches into the subpackages too (minigpt/analysis, minigpt/studies)
    scanned = {p.relative_to(REPO_ROOT / "minigpt").parts[0] for p in files if p.is_relative_to(REPO_ROOT / "minigpt")}
    assert {"analysis", "studies"} <= scanned, scanned
    offenders = {str(p.relative_to(REPO_ROOT)): lines for p in files
                 if (lines := unsafe_torch_loads(p.read_text(encoding="utf-8")))}
    assert offenders == {}, f"torch.load without weights_only=True (unpickles arbitrary code): {offenders}"
    # and the text view agrees, in case a call hides from the AST check (e.g. getattr(torch, "load"))
    for p in files:
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                pytest.fail(f"{p.relative_to(REPO_ROOT)}:{n}: {line.strip()}")


def test_no_pickle_loading_in_the_package():
    files = sorted((REPO_ROOT / "minigpt").rglob("*.py"))
    assert any(p.parent.name == "studies" for p in files) and any(p.parent.name == "analysis" for p in files)
    for p in files:
        text = p.read_text(encoding="utf-8")
        for bad in ("pickle.load", "allow_pickle=True"):
            assert bad not in text, f"{p.relative_to(REPO_ROOT)} uses {bad}"



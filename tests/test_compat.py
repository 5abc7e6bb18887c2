"""compat.check: refuses each kind of mismatch with one clear line, passes a healthy set, and
the explicit opt-out warns instead of raising."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

from minigpt import compat
from minigpt.checkpoint import model_fingerprint
from minigpt.config import GPTConfig
from minigpt.model import GPT

CFG = GPTConfig(vocab_size=40, block_size=8, n_layer=3, n_head=1, n_embd=8)
K = 2


def _specialists(cfg: GPTConfig = CFG, k: int = K, seed: int = 0) -> list[GPT]:
    """Three copies of one base whose crowns (blocks k.., ln_f) were nudged differently."""
    torch.manual_seed(seed)
    base = GPT(cfg)
    out = []
    for i, domain in enumerate(("code", "medical", "legal")):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for p in m.crown_parameters(k).values():
                p.add_(0.01 * (i + 1) * torch.randn_like(p))
        m.manifest = {"domain": domain, "tokenizer_fingerprint": "tok-a" * 8,
                      "base_fingerprint": model_fingerprint(base)}
        out.append(m)
    return out


def test_healthy_set_passes_every_check():
    report = compat.check(_specialists(), K)
    assert report["ok"] and report["mismatches"] == []
    assert [c["check"] for c in report["checks"]] == list(compat.CHECKS)
    assert all(c["ok"] for c in report["checks"])


def _refusal(specs, k=K, **kw) -> str:
    with pytest.raises(compat.CompatibilityError) as err:
        compat.check(specs, k, **kw)
    msg = str(err.value)
    assert "\n" not in msg and "allow_mismatch=True" in msg  # one line that says what to do
    assert isinstance(err.value, ValueError)
    return msg


def test_architecture_mismatch():
    specs = _specialists()
    odd = GPT(GPTConfig(vocab_size=40, block_size=8, n_layer=3, n_head=1, n_embd=16))
    odd.manifest = dict(specs[1].manifest)
    msg = _refusal([specs[0], odd, specs[2]])
    assert "architecture" in msg and "n_embd 16 vs 8" in msg and "specialist 1 (medical)" in msg


def test_tokenizer_mismatch():
    specs = _specialists()
    specs[2].manifest = {**specs[2].manifest, "tokenizer_fingerprint": "tok-b" * 8}
    msg = _refusal(specs)
    assert "tokenizer fingerprint" in msg and "specialist 2 (legal)" in msg


def test_explicit_tokenizer_fingerprints_override_manifests():
    specs = _specialists()
    _refusal(specs, tokenizer_fingerprints=["a", "a", "b"])
    assert compat.check(specs, K, tokenizer_fingerprints=["a", "a", "a"])["ok"]


def test_base_mismatch():
    specs = _specialists()
    specs[1].manifest = {**specs[1].manifest, "base_fingerprint": "f" * 64}
    msg = _refusal(specs)
    assert "base fingerprint" in msg and "same base checkpoint" in msg


def test_missing_fingerprint_cannot_be_verified():
    specs = _specialists()
    del specs[0].manifest["tokenizer_fingerprint"]
    assert "cannot be verified" in _refusal(specs)


def test_trunk_tensor_mismatch_depends_on_k():
    specs = _specialists()
    with torch.no_grad():  # a block inside the trunk at K=2 but not at K=1
        specs[2].transformer.h[1].mlp.c_fc.bias.add_(1e-3)
    msg = _refusal(specs, k=2)
    assert "transformer.h.1.mlp.c_fc.bias" in msg and "specialist 2 (legal)" in msg
    assert compat.check(specs, 1)["ok"]  # block 1 belongs to the crown when K=1


def test_trunk_check_sees_embeddings_even_at_k0():
    specs = _specialists()
    with torch.no_grad():
        specs[1].transformer.wpe.weight[0, 0] += 1.0
    assert "transformer.wpe.weight" in _refusal(specs, k=0)


def test_allow_mismatch_warns_and_lists_every_mismatch():
    specs = _specialists()
    specs[1].manifest = {**specs[1].manifest, "base_fingerprint": "f" * 64}
    with torch.no_grad():
        specs[1].transformer.wte.weight.mul_(1.5)
    with pytest.warns(compat.CompatibilityWarning, match="base"):
        report = compat.check(specs, K, allow_mismatch=True)
    assert not report["ok"] and report["mismatches"] == ["base", "trunk"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy set must not warn
        compat.check(_specialists(), K, allow_mismatch=True)


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="freeze depth"):
        compat.check(_specialists(), 7)


@pytest.mark.xdist_group("train")
@pytest.mark.slow
def test_experiment_manifests_pass_and_a_foreign_base_is_refused():
    from minigpt.data import MissingWheelsError
    from minigpt.experiment import Experiment

    exp = Experiment("ci", 0)
    try:
        specs = exp.specialists()
    except MissingWheelsError as err:
        pytest.skip(f"corpus unavailable: {err}")
    assert compat.check(specs, exp.k)["ok"]
    foreign = exp.specialist("medical", base_seed=exp.seed + 1)
    msg = _refusal([specs[0], foreign, specs[2]], k=exp.k)
    assert "base fingerprint" in msg

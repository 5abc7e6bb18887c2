"""The device policy (minigpt.device) and a device-leak test that needs no GPU.

Every compute path runs with ``MINIGPT_DEVICE=meta``: models and batches must move to PyTorch's
``meta`` device, which has shapes and dtypes but no data. Meta alone is not strict enough (its
kernels let some ops take a CPU input, e.g. ``F.linear(cpu_x, meta_w)`` returns a CPU tensor), so
:class:`MetaGuard`, a dispatch mode, sees every aten op and refuses one that mixes a CPU tensor
(other than a 0-dim scalar, which CUDA accepts too) with a meta tensor. It also counts the copies
back to the host (answering them with stand-in values of the right shape, since meta has none) so a
test can check results come back once and not once per step, and answers ``equal``/``allclose``
on meta tensors with True (the models here are copies of one base, so that is the true answer).
A read-back in the middle of a loop (``.item()``, ``float()``) fails on meta by itself.
docs/design.md, "Device policy", describes the method.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from minigpt import device
from minigpt.config import DOMAINS, GPTConfig, RouterConfig, TrainConfig, get_profile
from minigpt.fusion import FusedModel, average_weights
from minigpt.model import GPT
from minigpt.router import CausalRouter, LinearRouter, train_router
from minigpt.router_pool import build_pool, train_router_on_pool
from minigpt.fusion import FEATURES, feature_width
from minigpt.scoring import Routed, ScoreRequest, model_nll, per_window_losses, score
from minigpt.streams import eval_windows, random_windows
from minigpt.studies.break1 import sets as break1_sets
from minigpt.studies import break2, ceiling, document_memory, freeze_sweep, hybrid, router_targets
from minigpt.studies.tokenizer_mismatch import _nats_per_byte
from minigpt.train import train_lm

aten = torch.ops.aten
CFG = GPTConfig(vocab_size=40, block_size=8, n_layer=2, n_head=2, n_embd=8)
K = 1
EOS = 39


class DeviceLeak(AssertionError):
    """An op mixed a CPU tensor into computation that lives on the device."""


class MetaGuard(TorchDispatchMode):
    """Refuses ops that mix CPU and meta tensors; counts (and fakes) copies from meta to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.host_copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_meta = any(t.is_meta for t in tensors)
        cpu = [t for t in tensors if t.device.type == "cpu" and t.dim() > 0]
        if on_meta and cpu:
            raise DeviceLeak(f"{func} mixes a CPU tensor of shape {tuple(cpu[0].shape)} into computation on "
                             "meta; move it with minigpt.device.to_device")
        if func is aten._to_copy.default and on_meta and torch.device(kwargs.get("device", "meta")).type == "cpu":
            self.host_copies += 1
            return _stand_in(tensors[0].shape, kwargs.get("dtype") or tensors[0].dtype)
        if func in (aten.equal.default, aten.allclose.default) and on_meta:
            return True
        return func(*args, **kwargs)


def _stand_in(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """What the host gets for a meta tensor, which has no values: uniform [0, 1) floats (so reports
    downstream, e.g. CKA, see some variance), zeros of other dtypes; the right shape and dtype."""
    if dtype.is_floating_point:
        return torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    return torch.zeros(shape, dtype=dtype)


@pytest.fixture
def meta(monkeypatch):
    """``MINIGPT_DEVICE=meta`` and the guard; yields the guard (its ``host_copies``)."""
    monkeypatch.setenv("MINIGPT_DEVICE", "meta")
    with MetaGuard() as guard:
        yield guard


def _models(n: int = 3) -> tuple[GPT, list[GPT]]:
    torch.manual_seed(0)
    base = GPT(CFG)
    specs = [average_weights([base]) for _ in range(n)]  # copies of the base: one shared trunk
    for m, d in zip(specs, DOMAINS):
        m.manifest = {"domain": d}
    return base, specs


def _stream(seed: int, n: int = 400) -> np.ndarray:
    s = np.random.default_rng(seed).integers(0, CFG.vocab_size - 1, n).astype(np.int32)
    s[::37] = EOS  # some document boundaries
    return s


def _eval_sets(n: int = 4) -> dict:
    return {d: eval_windows(_stream(i), n, CFG.block_size) for i, d in enumerate(DOMAINS)}


def _fake_experiment(specs: list[GPT]) -> SimpleNamespace:
    """What the studies' scoring steps read from an Experiment, on tiny made-up data."""
    streams = SimpleNamespace(get=lambda d, split: _stream(DOMAINS.index(d)))
    profile = replace(get_profile("ci"), model=CFG, eval_batch_size=2, eval_chunks=4, freeze_k=K)
    return SimpleNamespace(k=K, seed=0, profile=profile, eval_sets=_eval_sets(), study_sets=_eval_sets(), streams=streams,
                           tokenizer=SimpleNamespace(token_to_id=lambda s: EOS),
                           specialists=lambda k=None: specs)


def _on(module: torch.nn.Module, kind: str) -> bool:
    return all(p.device.type == kind for p in module.parameters())


def _all_cpu(tree) -> bool:
    return all(t.device.type == "cpu" for t in tree_leaves(tree) if isinstance(t, torch.Tensor))


# -- the guard itself is strict --------------------------------------------------------------------
def test_the_guard_refuses_what_meta_alone_lets_through():
    w = torch.empty(4, 3, device="meta")
    assert F.linear(torch.randn(2, 3), w).device.type == "cpu"  # meta alone: a silent leak
    with MetaGuard():
        with pytest.raises(DeviceLeak, match="CPU tensor of shape"):
            F.linear(torch.randn(2, 3), w)
        with pytest.raises(DeviceLeak):
            F.embedding(torch.tensor([[1, 2]]), w)
        F.linear(torch.randn(2, 3, device="meta"), w)  # all on meta: fine
        (torch.randn(3, device="meta") * torch.tensor(2.0)).sum()  # a 0-dim CPU scalar: fine, as on CUDA


def test_a_read_back_inside_a_loop_fails_on_meta():
    with MetaGuard(), pytest.raises(RuntimeError, match="item"):
        torch.randn(3, device="meta").sum().item()


# -- the resolver ------------------------------------------------------------------------------------
def test_resolve_defaults_and_refuses_unknown_or_unavailable_devices(monkeypatch):
    monkeypatch.delenv("MINIGPT_DEVICE", raising=False)
    assert device.resolve().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("MINIGPT_DEVICE", "tpu9")
    with pytest.raises(ValueError, match="unknown device 'tpu9'; set MINIGPT_DEVICE"):
        device.resolve()
    if not torch.cuda.is_available():
        monkeypatch.setenv("MINIGPT_DEVICE", "cuda")
        with pytest.raises(ValueError, match="'cuda' is not available.*set MINIGPT_DEVICE to cpu"):
            device.resolve()


def test_the_cpu_gets_no_mixed_precision(monkeypatch):
    monkeypatch.setenv("MINIGPT_AMP", "1")
    cpu = torch.device("cpu")
    assert device.amp_dtype(cpu) is None
    assert isinstance(device.autocast(cpu), contextlib.nullcontext)
    assert not device.grad_scaler(cpu).is_enabled()


# -- every compute path on meta ------------------------------------------------------------------------
@pytest.mark.parametrize("freeze_k", [None, K])
def test_lm_training_runs_on_the_device_and_reads_back_once(meta, freeze_k):
    copies = []
    for steps in (1, 3):
        _, (model, *_) = _models(1)
        before = meta.host_copies
        losses = train_lm(model, lambda g: random_windows(_stream(0), 2, CFG.block_size, g),
                          TrainConfig(steps=steps, batch_size=2, warmup=1), seed=0, freeze_k=freeze_k)
        copies.append(meta.host_copies - before)
        assert len(losses) == steps and _on(model, "meta")
    assert copies == [1, 1], f"losses read back {copies} times for 1 and 3 steps; read them back once at the end"


@pytest.mark.parametrize("target", ["domain", "performance", "lm"])
def test_router_training_runs_on_the_device(meta, target):
    _, specs = _models()
    router = CausalRouter(CFG.n_embd, len(specs))

    def batch(g):
        x, y = random_windows(_stream(1), 2, CFG.block_size, g)
        return x, y, torch.tensor([0, 2])

    history = train_router(router, batch, FusedModel(specs, K).expert_logits,
                           RouterConfig(steps=2, batch_size=2, target=target), seed=0, experts=specs)
    assert len(history) == 2 and _on(router, "meta") and meta.host_copies == 1


@pytest.mark.parametrize("target", ["domain", "performance"])
def test_router_pool_is_built_and_trained_on_the_device(meta, target):
    _, specs = _models()
    streams = SimpleNamespace(get=lambda d, split: _stream(DOMAINS.index(d)), domains=lambda split: list(DOMAINS))
    pool = build_pool(streams, FusedModel(specs, K).expert_logits, 4, CFG.block_size, seed=0, batch_size=3,
                      experts=specs)
    assert pool.h.is_meta and pool.losses.is_meta and pool.losses.shape == (4 * len(DOMAINS), len(specs))
    router = CausalRouter(CFG.n_embd, len(specs))
    history = train_router_on_pool(router, pool, RouterConfig(steps=2, batch_size=2, target=target), seed=0)
    assert len(history) == 2 and _on(router, "meta") and meta.host_copies == 1


def test_scoring_runs_on_the_device_and_returns_on_the_cpu(meta):
    base, specs = _models()
    routers = {"per-token": CausalRouter(CFG.n_embd, 3), "last-token": LinearRouter(CFG.n_embd, 3)}
    sc = score(ScoreRequest(windows=_eval_sets(), experts=FusedModel(specs, K), routers=routers, base=base,
                            extra={"weight average": average_weights(specs)}, batch_size=3, hidden_head=base.lm_head,
                            calibration=True))
    assert _all_cpu((sc.nll, sc.weights, sc.stats)) and _on(specs[0], "meta") and _on(routers["per-token"], "meta")
    assert sc.nll["base"]["code"].shape == (4, CFG.block_size) and sc.weights["per-token"]["legal"].shape == (4, 8, 3)


@pytest.mark.parametrize("feature", list(FEATURES))
def test_scoring_unshared_experts_with_every_feature(meta, feature):
    base, specs = _models()
    experts = FusedModel(specs, K, shared=False)
    router = Routed(CausalRouter(feature_width(feature, specs), 3), feature)
    sc = score(ScoreRequest(windows=_eval_sets(), experts=experts, routers={"r": router}, base=base, batch_size=2,
                            hidden_head=base.lm_head))
    assert _all_cpu((sc.nll, sc.weights))
    assert model_nll(base, _eval_sets(), 2)["code"].device.type == "cpu"


def test_fused_generation_runs_on_the_device(meta):
    _, specs = _models()
    ids, w = FusedModel(specs, K, CausalRouter(CFG.n_embd, 3)).generate(torch.zeros(2, 3, dtype=torch.long), 4,
                                                                         return_weights=True)
    assert ids.shape == (2, 7) and w.shape == (2, 4, 3) and _all_cpu((ids, w))


# -- one scoring step of each study ---------------------------------------------------------------------
def test_break1_representations_and_tokenizer_case(meta):
    base, specs = _models()
    exp = _fake_experiment(specs)
    sets = SimpleNamespace(bases={0: base, 1: average_weights([base])}, matched="0",
                           experts={"0": FusedModel(specs, K), "different": FusedModel(specs, K, shared=False)})
    assert set(break1_sets.representations(exp, sets)) >= {"embeddings (bases)", "final hidden (bases)"}
    x, y = exp.eval_sets["legal"]
    tok = SimpleNamespace(decode=lambda ids, skip_special_tokens=False: "ab" * len(ids))
    assert _nats_per_byte(specs[2], x, y, tok=tok, batch_size=3)["bytes_per_token"] == 2.0


def test_break2_and_router_targets_window_losses(meta):
    _, specs = _models()
    exp = _fake_experiment(specs)
    losses = break2.window_losses(exp, specs, per_domain=3)
    assert losses["code"].shape == (3, 3) and _all_cpu(losses)
    x, y = exp.eval_sets["code"]
    assert router_targets.window_losses(exp, x, y).shape == (4, 3)
    assert per_window_losses(FusedModel(specs, K), x, y, 3).device.type == "cpu"


def test_freeze_sweep_final_states(meta):
    base, specs = _models()
    final, base_final = freeze_sweep._finals(specs, base, K, _eval_sets()["code"][0])
    assert _all_cpu((final, base_final)) and base_final.shape == (4, CFG.block_size, CFG.n_embd)


def test_hybrid_scoring(meta):
    _, specs = _models()
    data = hybrid.hybrid_windows({d: _stream(i) for i, d in enumerate(DOMAINS)}, 4, CFG.block_size, seed=0)
    routers = {"last-token": LinearRouter(CFG.n_embd, 3), "per-token": CausalRouter(CFG.n_embd, 3)}
    out = hybrid.score_routers(specs, K, routers, data, batch_size=3)
    assert set(out["routers"]) == set(routers)


@pytest.mark.parametrize("across", [False, True])
def test_document_memory_scoring(meta, across):
    _, specs = _models()
    exp = _fake_experiment(specs)
    cold = CausalRouter(CFG.n_embd, 3)
    carried = document_memory.CarriedStateRouter(cold, document_memory._memory_batches(exp, specs[0], K, across))
    sc = score(ScoreRequest(windows=exp.eval_sets, experts=FusedModel(specs, K), routers={"memory": carried},
                            batch_size=2))
    assert not carried.batches and _all_cpu(sc.weights)


def test_routing_ceiling_fit_and_score(meta):
    _, specs = _models()
    exp = _fake_experiment(specs)
    router = ceiling.fit_to_eval_labels(CausalRouter(CFG.n_embd, 3), ceiling._eval_states(exp, specs, K), steps=2)
    assert _on(router, "meta")
    assert _all_cpu(score(ScoreRequest(windows=exp.eval_sets, experts=FusedModel(specs, K),
                                       routers={"fitted": router}, batch_size=2)).weights)

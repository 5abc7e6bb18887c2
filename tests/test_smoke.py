"""``python -m minigpt smoke``: every phase once at a profile's shapes, and its FLOP-count estimates."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from minigpt import device
from minigpt import smoke as smoke_mod
from minigpt.cli import main
from minigpt.config import get_profile
from minigpt.flops import CHAPTER, estimate_minutes, experts_flops, forward_flops, plan, train_flops
from minigpt.smoke import PHASES, SmokeFailure, smoke


def test_the_smoke_command_runs_every_phase_at_ci_shapes_and_leaves_the_cache_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIGPT_RESULTS_DIR", str(tmp_path / "results"))
    assert main(["smoke", "--profile", "ci", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    for phase in [*PHASES, "chapter (run)", "everything", "T4-class", "A100-class", "checks passed"]:
        assert phase in out
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists(), "the smoke wrote to disk"


def test_a_non_finite_loss_fails_the_smoke(monkeypatch):
    monkeypatch.setattr(smoke_mod, "train_lm", lambda *a, **kw: [math.nan])
    with pytest.raises(SmokeFailure, match="base training loss: 1 values, not all finite"):
        smoke("ci", batch=2)


def test_flop_counts_are_the_textbook_ones():
    cfg = get_profile("gpu").model
    L, C, T, V = cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.vocab_size
    n = L * 12 * C * C + V * C  # weights of the matmuls, the (tied) head included
    assert forward_flops(cfg) == 2 * n + 4 * L * T * C
    assert train_flops(cfg, None) == 6 * n + 12 * L * T * C
    assert experts_flops(cfg, 3, 1) == forward_flops(cfg)  # one expert: a whole model
    assert train_flops(cfg, 0) < train_flops(cfg, None) and train_flops(cfg, L) < 2 * forward_flops(cfg)


def test_the_estimate_follows_the_profile_step_and_window_counts():
    p = get_profile("gpu")
    more = replace(p, base=replace(p.base, steps=2 * p.base.steps), eval_chunks=2 * p.eval_chunks)
    assert plan(more)["base"]["base training"] == 2 * plan(p)["base"]["base training"]
    assert sum(plan(more)["evaluation"].values()) == 2 * sum(plan(p)["evaluation"].values())
    est = estimate_minutes(p)
    assert all(est[ph]["T4-class"] > est[ph]["A100-class"] > 0 for ph in PHASES)
    gpt2 = estimate_minutes(get_profile("gpt2"))
    assert gpt2["base"]["tflop"] == 0 and gpt2["break1"]["tflop"] == 0  # hub base, not trained; break1 refused
    assert set(CHAPTER) <= set(PHASES)


def test_every_phase_runs_under_mixed_precision(monkeypatch):
    """CUDA's autocast cannot run here; the CPU's bf16 autocast goes through the same dtype seams
    (half-precision activations meeting float32 weights, losses and router weights)."""
    monkeypatch.setattr(device, "amp_dtype", lambda dev: torch.bfloat16)
    assert isinstance(device.autocast(torch.device("cpu")), torch.autocast)
    assert len(smoke("ci", batch=2)["checks"]) > 30

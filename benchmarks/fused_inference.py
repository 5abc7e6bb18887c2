"""Fused inference: N full forward passes vs trunk-once vs trunk-once + batched crowns.

    python benchmarks/fused_inference.py            # ~2 min on 2 shared cores
    python benchmarks/fused_inference.py --quick    # a few seconds, smoke test

Random weights (no training): N specialists that share a trunk (embeddings + blocks < K, and so the
tied head) and have different crowns. Every variant returns the fused log-probabilities (B, T, V)
of per-token logit fusion with the same router weights:

  naive    N full forward passes, fuse_logits, log_softmax
  loop     trunk once, then each crown in turn (the original FusedModel), fuse_logits, log_softmax
  stacked  FusedModel without gradients: trunk once, all crowns batched (StackedCrowns), one head matmul
           on the weighted hidden states
  probs    as stacked but probability fusion, which needs all N heads (for reference)

The block-only FLOP bound of trunk-once fusion relative to naive is (K + N (L - K)) / (N L); it
ignores the embeddings, the head and the softmax. ``flops_head`` is the same ratio counting the
head matmuls as well (N of them for naive, one for single-head logit fusion).
Timings are interleaved (every repetition runs every variant once, in rotating order); times are
medians and ratios are medians of per-repetition ratios. The LAST line holds the headline at
K = L/2 on the cpu size.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings

import torch
import torch.nn.functional as F

from timing import Timings, timed  # benchmarks/timing.py (run as a script from the repo root)
from minigpt.config import PROFILES, GPTConfig
from minigpt.device import resolve, to_device, to_host
from minigpt.fusion import FusedModel, fuse_logits, fuse_probs
from minigpt.model import GPT
from minigpt.stacked import StackedCrowns


@torch.inference_mode(False)
def make_specialists(cfg: GPTConfig, k: int, n: int, seed: int = 0) -> list[GPT]:
    torch.manual_seed(seed)
    base = to_device(GPT(cfg).eval(), resolve())  # MINIGPT_DEVICE, like every compute path
    specs = []
    for _ in range(n):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for p in m.crown_parameters(k).values():
                p.add_(0.02 * torch.randn_like(p))
        specs.append(m)
    return specs


def block_bound(k: int, L: int, n: int) -> float:
    return (k + n * (L - k)) / (n * L)


def matmul_flops(cfg: GPTConfig, T: int) -> tuple[float, float]:
    """Per-token forward FLOPs of one block and of the head (2 per multiply-add, causal attention)."""
    C = cfg.n_embd
    block = 2 * 12 * C * C + 2 * 2 * C * (T + 1) / 2  # qkv, proj, 2 MLP matmuls; q.k and att.v
    return block, 2 * C * cfg.vocab_size


def head_bound(cfg: GPTConfig, k: int, n: int, T: int) -> float:
    """Same ratio counting the head too: naive runs N heads, single-head logit fusion one."""
    blk, head = matmul_flops(cfg, T)
    L = cfg.n_layer
    return (k * blk + n * (L - k) * blk + head) / (n * (L * blk + head))


def variants(specs: list[GPT], k: int, idx: torch.Tensor, w: torch.Tensor, probs_too: bool) -> dict:
    logit_fused, prob_fused = FusedModel(specs, k), FusedModel(specs, k, fusion="probs")  # the package's paths

    def naive():
        logits = torch.stack([m(idx)[0] for m in specs])
        return F.log_softmax(fuse_logits(w, logits), dim=-1)

    def loop():
        h = specs[0].trunk(idx, k)
        logits = torch.stack([m.crown(h, k) for m in specs])
        return F.log_softmax(fuse_logits(w, logits), dim=-1)

    def fast():  # no gradients: FusedModel runs the trunk once and the crowns stacked, one head matmul
        return logit_fused(idx, w)

    def probs():
        return prob_fused(idx, w)

    ref = naive()
    for fn in (loop, fast):  # same outputs, or the timing means nothing
        torch.testing.assert_close(fn(), ref, atol=1e-4, rtol=0)
    fns = {"naive": naive, "loop": loop, "stacked": fast}
    if probs_too:
        h = specs[0].trunk(idx, k)
        torch.testing.assert_close(probs(), fuse_probs(w, torch.stack([m.crown(h, k) for m in specs])),
                                   atol=1e-4, rtol=0)
        fns["probs"] = probs
    return fns


def bench_size(name: str, cfg: GPTConfig, batch: int, ks: list[int], n: int, reps: int,
               budget_s: float, probs_too: bool = True) -> dict[int, dict[str, float]]:
    T = cfg.block_size
    gen = torch.Generator().manual_seed(0)
    idx = to_device(torch.randint(0, cfg.vocab_size, (batch, T), generator=gen), resolve())
    w = to_device(torch.softmax(torch.randn(batch, T, n, generator=gen), dim=-1), resolve())  # per-token weights
    print(f"\n## size={name}: d={cfg.n_embd} L={cfg.n_layer} T={T} V={cfg.vocab_size} batch={batch} N={n}; "
          f"median ms of interleaved runs; ratios = median of per-repetition ratios")
    print(f"{'K':>3} {'naive':>8} {'loop':>8} {'stacked':>8} {'probs':>8} | {'loop/nv':>7} "
          f"{'stack/nv':>8} {'bound':>6} {'stack/bd':>8} {'flops_head':>10} {'reps':>4}")
    out = {}
    for k in ks:
        specs = make_specialists(cfg, k, n)
        t = timed(variants(specs, k, idx, w, probs_too), reps, budget_s)
        r = {"loop": t.ratio("loop", "naive"), "stacked": t.ratio("stacked", "naive"),
             "bound": block_bound(k, cfg.n_layer, n), "flops_head": head_bound(cfg, k, n, T)}
        out[k] = r
        ms = {v: (f"{t.median(v)*1e3:>8.1f}" if v in t else f"{'-':>8}") for v in ("naive", "loop", "stacked", "probs")}
        print(f"{k:>3} {ms['naive']} {ms['loop']} {ms['stacked']} {ms['probs']} | {r['loop']:>7.3f} "
              f"{r['stacked']:>8.3f} {r['bound']:>6.3f} {r['stacked']/r['bound']:>8.3f} {r['flops_head']:>10.3f} "
              f"{len(t['naive']):>4}", flush=True)
    return out


def bench_impls(cfg: GPTConfig, k: int, n: int, batch: int, reps: int) -> Timings:
    """Crowns only (shared hidden -> N final hidden states): loop vs batched matmuls vs torch.func.vmap."""
    specs = make_specialists(cfg, k, n)
    h = specs[0].trunk(to_device(torch.randint(0, cfg.vocab_size, (batch, cfg.block_size),
                                               generator=torch.Generator().manual_seed(2)), resolve()), k)
    bmm, vm = StackedCrowns(specs, k, impl="bmm"), StackedCrowns(specs, k, impl="vmap")
    fns = {"loop": lambda: torch.stack([m.crown_hidden(h, k) for m in specs]),
           "bmm": lambda: bmm.hidden(h), "vmap": lambda: vm.hidden(h)}
    ref = fns["loop"]()
    for name in ("bmm", "vmap"):
        torch.testing.assert_close(fns[name](), ref, atol=1e-4, rtol=0)
    t = timed(fns, reps, 10)
    print(f"\n## crowns only (blocks K.. + ln_f, no head), K={k}, batch={batch}: loop {t.median('loop')*1e3:.1f} ms, "
          f"batched matmuls (default) {t.median('bmm')*1e3:.1f} ms (x{t.ratio('bmm', 'loop'):.2f} of loop), "
          f"torch.func.vmap {t.median('vmap')*1e3:.1f} ms (x{t.ratio('vmap', 'loop'):.2f}; no vmap batching "
          f"rule for CPU flash attention, so it loops over the experts there)")
    return t


def bench_generation(cfg: GPTConfig, k: int, n: int, batch: int, prompt: int, new: int,
                     reps: int) -> dict[str, float]:
    """Greedy decoding tokens/s, no KV cache (every step reruns the whole window)."""
    specs = make_specialists(cfg, k, n)
    fused_model = FusedModel(specs, k)  # no router: uniform weights
    start = to_device(torch.randint(0, cfg.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(1)),
                      resolve())
    w = to_device(torch.full((batch, n), 1.0 / n), resolve())

    def naive():
        idx = start
        for _ in range(new):
            logits = torch.stack([m(idx[:, -cfg.block_size:])[0][:, -1:] for m in specs])
            idx = torch.cat((idx, fuse_logits(w, logits)[:, -1].argmax(-1, keepdim=True)), dim=1)
        return idx

    def fused():
        return fused_model.generate(start, new)  # back on the CPU, as the package returns it

    assert torch.equal(to_host(naive()), fused()), "fused greedy decoding diverged from the naive one"
    t = timed({"naive": naive, "fused": fused}, reps, budget_s=20)
    tps = {name: batch * new / t.median(name) for name in t}
    speedup = t.ratio("naive", "fused")
    print(f"\n## greedy generation, d={cfg.n_embd} L={cfg.n_layer} V={cfg.vocab_size}, K={k}, batch={batch}, "
          f"prompt={prompt}, {new} new tokens, uniform weights, no KV cache")
    print(f"naive (N full forwards) {tps['naive']:.0f} tok/s   fused (trunk once + stacked crowns, "
          f"head on the last position) {tps['fused']:.0f} tok/s   speed-up {speedup:.2f}x")
    return {**tps, "speedup": speedup}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every variant (default 1: on a shared 2-core machine two "
                         "OpenMP threads mostly wait for each other; use 2 on an idle machine)")
    ap.add_argument("--n", type=int, default=3, help="number of specialists")
    ap.add_argument("--reps", type=int, default=9, help="timed repetitions per variant (max)")
    ap.add_argument("--quick", action="store_true", help="ci size only, few repetitions")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="There is a performance drop")  # vmap's attention fallback
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, cpus={os.cpu_count()}, "
          f"inference_mode, fp32")
    with torch.inference_mode():
        if args.quick:
            cfg = PROFILES["ci"].model
            res = bench_size("ci", cfg, 8, [0, cfg.n_layer // 2], args.n, 3, 5)
            tps = bench_generation(cfg, cfg.n_layer // 2, args.n, 1, 8, 8, 2)
        else:
            cfg = PROFILES["cpu"].model
            L = cfg.n_layer
            res = bench_size("cpu", cfg, 16, [0, 1, L // 2, L - 1], args.n, args.reps, 20)
            g = PROFILES["gpu"].model
            # ~1 s per call: fewer repetitions, no probability-fusion column
            bench_size("gpu (on CPU)", g, 1, [0, 1, g.n_layer // 2, g.n_layer - 1], args.n, 5, 15, False)
            bench_impls(cfg, L // 2, args.n, 16, args.reps)
            tps = bench_generation(cfg, L // 2, args.n, 1, 16, 32, 3)
    r = res[cfg.n_layer // 2]
    print(f"time_vs_naive={r['stacked']:.3f} time_vs_bound={r['stacked']/r['bound']:.3f} "
          f"loop_vs_naive={r['loop']:.3f} bound={r['bound']:.3f} flops_head={r['flops_head']:.3f} "
          f"gen_speedup={tps['speedup']:.2f} threads={args.threads}")


if __name__ == "__main__":
    sys.exit(main())

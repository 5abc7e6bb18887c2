"""Training-step throughput: minigpt's GPT vs Hugging Face GPT2LMHeadModel, and what speeds a step up.

    python benchmarks/train_throughput.py             # ~2-3 min on 2 shared cores
    python benchmarks/train_throughput.py --quick     # ci size only, a few seconds
    python benchmarks/train_throughput.py --compile   # adds torch.compile (compiling takes > 1 min)

One step = forward, cross-entropy, backward, gradient clipping, AdamW step: train_lm's inner loop,
with train.make_optimizer (the same optimizer settings for both models). The HF model is built from
an identical GPT2Config (random init, dropout 0, tied head, SDPA attention, no download) and is
checked to give minigpt's logits once minigpt's weights are copied in, so both do the same maths.
Variants are interleaved (every repetition runs each once, rotating the order) and medians reported.

Sections:
  1. minigpt vs HF per size: speedup_vs_hf = t_hf / t_minigpt.
  2. speed-ups tried at the cpu size (fp32): for-loop vs foreach vs fused AdamW, foreach clipping,
     optionally torch.compile (compile time reported separately).
  3. the specialist step (freeze_k = profile's K): full backward of every parameter, trunk frozen by
     requires_grad=False only, and train_lm's way (trunk also under no_grad).
The LAST line holds the headline key=value pairs (cpu size).
"""
from __future__ import annotations

import argparse
import atexit
import copy
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace

import torch

from timing import timed  # benchmarks/timing.py (run as a script from the repo root)
from minigpt.config import PROFILES, GPTConfig, TrainConfig
from minigpt.model import GPT, lm_loss
from minigpt.train import make_optimizer, trainable_parameters

TRAIN = PROFILES["cpu"].base
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_twin(model: GPT):
    """GPT2LMHeadModel with the same config and, copied in, the same weights as ``model``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    hcfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                      n_layer=c.n_layer, n_head=c.n_head, activation_function="gelu_new",
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
                      layer_norm_epsilon=c.layer_norm_eps, tie_word_embeddings=True, use_cache=False,
                      bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    hf = GPT2LMHeadModel(hcfg)
    sd = {n: (p.t() if n.endswith(CONV1D) else p) for n, p in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all(m.endswith(("attn.bias", "masked_bias")) for m in missing), (missing, unexpected)
    hf.lm_head.weight = hf.transformer.wte.weight  # keep the tie explicit after loading
    return hf


def optimizer(params: dict, cfg: TrainConfig, opt_kwargs: dict | None) -> torch.optim.AdamW:
    """train.make_optimizer, or the same groups and hyper-parameters with other AdamW kwargs."""
    if opt_kwargs is None:
        return make_optimizer(params, cfg)
    decay = [p for p in params.values() if p.dim() >= 2]
    rest = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                             **opt_kwargs)


def step_fn(model: torch.nn.Module, forward, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
            freeze_k: int | None = None, no_grad_trunk: bool = True, opt_kwargs: dict | None = None,
            clip_foreach: bool | None = True):
    """One train_lm step as a closure. ``opt_kwargs`` replaces train.make_optimizer's AdamW."""
    params = trainable_parameters(model, freeze_k)
    opt = optimizer(params, cfg, opt_kwargs)
    plist = list(params.values())
    model.train()

    def step() -> float:
        if freeze_k is None:
            loss = lm_loss(forward(x), y)
        else:
            with torch.set_grad_enabled(not no_grad_trunk):
                h = model.trunk(x, freeze_k)
            loss = lm_loss(model.crown(h, freeze_k), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, cfg.grad_clip, foreach=clip_foreach)
        opt.step()
        return loss.item()

    return step


def batch(cfg: GPTConfig, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (b, cfg.block_size + 1), generator=gen)
    return x[:, :-1], x[:, 1:]


def minigpt_vs_hf(sizes: dict, reps: int) -> dict[str, float]:
    print("\n## 1. train step, minigpt vs transformers GPT2LMHeadModel (median ms of interleaved runs; "
          "speedup = median of per-repetition t_hf / t_minigpt)")
    print(f"{'size':>5} {'d':>4} {'L':>2} {'T':>4} {'V':>5} {'B':>3} {'minigpt':>9} {'hf':>9} "
          f"{'speedup_vs_hf':>13} {'minigpt tok/s':>13} {'reps':>4}")
    out = {}
    for name, (cfg, b, budget) in sizes.items():
        torch.manual_seed(0)
        ours = GPT(cfg)
        hf = hf_twin(ours)
        x, y = batch(cfg, b)
        with torch.no_grad():  # same architecture and weights -> same logits
            torch.testing.assert_close(hf(input_ids=x).logits, ours(x)[0], atol=1e-4, rtol=0)
        fns = {"minigpt": step_fn(ours, lambda i: ours(i)[0], x, y, TRAIN),
               "hf": step_fn(hf, lambda i: hf(input_ids=i).logits, x, y, TRAIN)}
        t = timed(fns, reps if name != "gpu" else 3, budget, warmup=1 if name == "gpu" else 2)
        out[name] = t.ratio("hf", "minigpt")
        print(f"{name:>5} {cfg.n_embd:>4} {cfg.n_layer:>2} {cfg.block_size:>4} {cfg.vocab_size:>5} {b:>3} "
              f"{t.median('minigpt')*1e3:>9.1f} {t.median('hf')*1e3:>9.1f} {out[name]:>13.2f} "
              f"{b*cfg.block_size/t.median('minigpt'):>13.0f} {len(t['hf']):>4}", flush=True)
    return out


def speedups(cfg: GPTConfig, b: int, reps: int, compile_: bool) -> dict[str, float]:
    print(f"\n## 2. speed-ups tried (d={cfg.n_embd} L={cfg.n_layer} T={cfg.block_size} "
          f"V={cfg.vocab_size} B={b}, fp32; median ms, interleaved)")
    torch.manual_seed(0)
    base = GPT(cfg)
    x, y = batch(cfg, b)
    variants = {  # name: (AdamW kwargs or None for train.make_optimizer, clip foreach)
        "for-loop AdamW, per-tensor clip (before)": ({}, None),
        "foreach AdamW": ({"foreach": True}, None),
        "fused AdamW": ({"fused": True}, None),
        "train_lm now: fused AdamW + foreach clip": (None, True),
    }
    fns = {}
    for name, (okw, clip) in variants.items():
        m = copy.deepcopy(base)
        fns[name] = step_fn(m, lambda i, m=m: m(i)[0], x, y, TRAIN, opt_kwargs=okw, clip_foreach=clip)
    compile_s = None
    if compile_:
        # a fresh Inductor cache, so the compile time is what a first run on a new machine pays
        cache = tempfile.mkdtemp(prefix="inductor-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        m = copy.deepcopy(base)
        cm = torch.compile(m)
        fn = step_fn(m, lambda i: cm(i)[0], x, y, TRAIN, clip_foreach=True)
        t0 = time.perf_counter()
        fn()  # traces and compiles forward and backward
        compile_s = time.perf_counter() - t0
        fns["torch.compile + train_lm now"] = fn
    t = timed(fns, 2 * reps, 60)
    before, now = "for-loop AdamW, per-tensor clip (before)", "train_lm now: fused AdamW + foreach clip"
    for name in t:
        print(f"  {name:<42} {t.median(name)*1e3:>8.1f} ms   x{t.ratio(before, name):.3f} vs before")
    if compile_s is not None:
        gain = t.median(now) * (1 - t.ratio("torch.compile + train_lm now", now))  # s saved per step
        verdict = "pays off" if 800 * gain > compile_s else "does not pay off"
        print(f"  torch.compile: first step {compile_s:.1f} s (tracing + compiling, cold cache), then "
              f"{gain*1e3:+.1f} ms/step saved -> over 800 steps {800*gain:+.1f} s vs {compile_s:.1f} s "
              f"compiling: {verdict}")
    # the optimizer + clipping part alone: small next to the matmuls, so time it by itself too
    opt_only = {}
    for name, (okw, clip) in variants.items():
        m = copy.deepcopy(base)
        for p in m.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opt_only[name] = _opt_step(m, okw, clip)
    to = timed(opt_only, 40, 10)
    print("  optimizer step + clipping only (grads fixed):")
    for name in to:
        print(f"    {name:<42} {to.median(name)*1e3:>8.2f} ms   x{to.ratio(before, name):.2f} vs before")
    probe = torch.ones(2)
    print(f"  lm_loss's .float() on fp32 logits returns the same tensor, no copy: {probe.float() is probe}")
    return {"fused_gain": t.ratio(before, now), "optimizer_gain": to.ratio(before, now)}


def _opt_step(model: GPT, opt_kwargs: dict | None, clip_foreach: bool | None):
    params = dict(model.named_parameters())
    opt = optimizer(params, TRAIN, opt_kwargs)
    plist = list(params.values())

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(plist, TRAIN.grad_clip, foreach=clip_foreach)
        opt.step()

    return step


def frozen_trunk(cfg: GPTConfig, k: int, b: int, reps: int) -> dict[str, float]:
    print(f"\n## 3. specialist step (d={cfg.n_embd} L={cfg.n_layer} B={b}), trunk = embeddings + {k} blocks "
          f"+ tied head (median ms, interleaved; savings = 1 - median per-repetition ratio)")
    torch.manual_seed(0)
    base = GPT(cfg)
    x, y = batch(cfg, b)
    ms = [copy.deepcopy(base) for _ in range(3)]
    fns = {"full backward, every parameter trained": step_fn(ms[0], lambda i: ms[0](i)[0], x, y, TRAIN),
           "trunk requires_grad=False, not under no_grad": step_fn(ms[1], None, x, y, TRAIN, freeze_k=k,
                                                                   no_grad_trunk=False),
           "train_lm: trunk frozen and under no_grad": step_fn(ms[2], None, x, y, TRAIN, freeze_k=k)}
    t = timed(fns, reps, 60)
    for name in t:
        print(f"  {name:<46} {t.median(name)*1e3:>8.1f} ms")
    full, rg, ng = t
    out = {"frozen_trunk_saving": 1 - t.ratio(ng, rg), "frozen_vs_full_saving": 1 - t.ratio(ng, full)}
    print(f"  no_grad on top of requires_grad=False saves {out['frozen_trunk_saving']:+.1%} "
          f"(autograd records nothing whose inputs need no gradient); "
          f"frozen trunk vs full backward saves {out['frozen_vs_full_saving']:+.1%}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every variant (default 1: on a shared 2-core machine two "
                         "OpenMP threads mostly wait for each other; use 2 on an idle machine)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per variant (max)")
    ap.add_argument("--quick", action="store_true", help="ci size only, few repetitions")
    ap.add_argument("--no-gpu-size", action="store_true", help="skip the gpu-size comparison (slowest)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (compiling takes > 1 min)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads={torch.get_num_threads()}, "
          f"cpus={os.cpu_count()}, fp32")
    ci, cpu, gpu = (PROFILES[n].model for n in ("ci", "cpu", "gpu"))
    if args.quick:
        vs = minigpt_vs_hf({"ci": (ci, 16, 5)}, 3)
        su = speedups(ci, 16, 3, args.compile)
        fr = frozen_trunk(ci, PROFILES["ci"].freeze_k, 16, 3)
        head = vs["ci"]
    else:
        mid = replace(cpu, vocab_size=1024, block_size=96, n_embd=96, n_head=3)
        sizes = {"ci": (ci, 16, 10), "mid": (mid, 16, 15), "cpu": (cpu, 16, 25)}
        if not args.no_gpu_size:
            sizes["gpu"] = (gpu, 2, 30)
        vs = minigpt_vs_hf(sizes, args.reps)
        su = speedups(cpu, 16, args.reps, args.compile)
        fr = frozen_trunk(cpu, PROFILES["cpu"].freeze_k, 16, args.reps)
        head = vs["cpu"]
    print(f"speedup_vs_hf={head:.2f} frozen_trunk_saving={fr['frozen_trunk_saving']:.3f} "
          f"frozen_vs_full_saving={fr['frozen_vs_full_saving']:.3f} step_gain={su['fused_gain']:.3f} "
          f"optimizer_gain={su['optimizer_gain']:.2f} "
          f"threads={args.threads}")


if __name__ == "__main__":
    sys.exit(main())

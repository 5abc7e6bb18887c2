"""A smoke run of a profile: every phase of the chapter at its real model shapes, in seconds of work.

``python -m minigpt smoke --profile gpu`` builds randomly initialised models of the profile's real
shape (``gpt2``: GPT-2 small's shape, no hub weights) and runs base training, the specialists, the
monolithic crown, router training, scoring, fused generation, Break 1, Break 2, the freeze sweep,
the hybrid windows, document memory and the routing ceiling, each with 1 step of the profile's
real batch (or ``batch=``) and 2 windows per domain, on the device (:mod:`minigpt.device`).
It checks shapes, dtypes, the vocabulary and that every loss is finite, prints the peak memory and
what the full run would take on a T4- and an A100-class GPU, from FLOPs counted at the profile's
real step and window counts (:func:`minigpt.flops.plan`).

The data are random token ids and the models random weights: speed and memory do not depend on
what was learned. Nothing reads or writes the cache and nothing is downloaded.
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from . import hf
from .config import DOMAINS, SPLITS, Profile, RouterConfig, TrainConfig, get_profile
from .device import amp_dtype, autocast, resolve, to_device
from .flops import CHAPTER, GPUS, estimate_minutes
from .fusion import FusedModel, average_weights
from .model import GPT
from .progress import progress
from .router import ROUTERS, CausalRouter, performance_targets, train_router, with_memory
from .router_pool import build_pool, train_router_on_pool
from .score_cache import not_remembered
from .fusion import FEATURES, SHARED_TRUNK, feature_width
from .scoring import Routed, Scores, ScoreRequest, per_window_losses, score
from .streams import DomainStreams, eval_windows, mixed_windows, random_windows
from .studies.ceiling import fit_to_eval_labels
from .studies.hybrid import hybrid_windows, score_routers
from .train import fine_tune_everything, train_lm

try:
    import resource  # peak resident memory on the CPU; not on Windows
except ImportError:  # pragma: no cover
    resource = None

SMOKE_WINDOWS = 2  # held-out windows per domain in the smoke's scoring passes


class SmokeFailure(RuntimeError):
    """A check of the smoke run failed: a shape, a dtype, the vocabulary or a non-finite loss."""


# -- the smoke run ------------------------------------------------------------------------------------
@dataclass
class _Run:
    """What the phases hand to each other: data, the models so far, and the checks passed."""

    p: Profile
    dev: torch.device
    batch: int | None
    streams: DomainStreams
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]]
    models: dict[str, object] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def cut(self, cfg, steps: int = 1):
        """``cfg`` with ``steps`` steps (and the smoke's batch size, if one was given)."""
        cfg = replace(cfg, steps=steps, batch_size=self.batch or cfg.batch_size)
        return replace(cfg, warmup=min(cfg.warmup, 1)) if isinstance(cfg, TrainConfig) else cfg

    def lm_batch(self, split: str, domain: str | None, cfg: TrainConfig) -> Callable:
        T = self.p.model.block_size
        if domain is None:
            return lambda g: mixed_windows(self.streams, split, cfg.batch_size, T=T, gen=g)[:2]
        return lambda g: random_windows(self.streams.get(domain, split), cfg.batch_size, T, g)

    def router_batch(self, cfg: RouterConfig) -> Callable:
        return lambda g: mixed_windows(self.streams, "router", cfg.batch_size, T=self.p.model.block_size, gen=g,
                                       mix=cfg.domain_mix)


def _random_data(p: Profile, batch: int | None) -> tuple[DomainStreams, dict]:
    """Random token streams for every split and domain, long enough for the largest batch, and
    :data:`SMOKE_WINDOWS` held-out windows per domain."""
    T, V = p.model.block_size, p.model.vocab_size
    n = 4 * (T + 1) * max(batch or 0, p.base.batch_size, p.specialist.batch_size, p.router.batch_size, SMOKE_WINDOWS)
    rng = np.random.default_rng(0)
    streams = DomainStreams({s: {d: rng.integers(0, V, n).astype(np.int32) for d in DOMAINS} for s in SPLITS})
    return streams, {d: eval_windows(streams.get(d, "eval"), SMOKE_WINDOWS, T) for d in DOMAINS}


def _finite(run: _Run, what: str, values) -> None:
    t = torch.as_tensor(values, dtype=torch.float64) if not isinstance(values, torch.Tensor) else values
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise SmokeFailure(f"{what}: {t.numel()} values, not all finite; the {run.p.name} profile diverges or "
                           "overflows at its real shape (try MINIGPT_AMP=0 to rule out mixed precision)")
    run.checks.append(f"{what}: finite")


def _check_model(run: _Run, name: str, model: GPT) -> None:
    """A model's logits on one held-out window: (1, T, V) with the profile's V, on the device, finite."""
    cfg = run.p.model
    x = run.eval_sets[DOMAINS[0]][0][:1].to(run.dev)
    with torch.no_grad(), autocast(run.dev):
        logits = model(x)[0]
    dtypes = {p.dtype for p in model.parameters()}
    if tuple(logits.shape) != (1, cfg.block_size, cfg.vocab_size) or dtypes != {torch.float32}:
        raise SmokeFailure(f"{name}: logits {tuple(logits.shape)} with weights {dtypes}; expected (1, "
                           f"{cfg.block_size}, {cfg.vocab_size}) and float32 weights: the profile's model config is off")
    if logits.device.type != run.dev.type:
        raise SmokeFailure(f"{name}: logits on {logits.device}, not {run.dev}; a device move is missing")
    _finite(run, f"{name} logits", logits.float())


def _check_scores(run: _Run, what: str, sc: Scores, n: int = SMOKE_WINDOWS) -> None:
    """Every row: (n, T) float32 token losses on the CPU, all finite; router weights sum to 1."""
    T = run.p.model.block_size
    for row, per in sc.nll.items():
        for d, v in per.items():
            if tuple(v.shape) != (n, T) or v.dtype != torch.float32 or v.device.type != "cpu":
                raise SmokeFailure(f"{what}: row {row!r} on {d} is {tuple(v.shape)} {v.dtype} on {v.device}, "
                                   f"expected ({n}, {T}) float32 on the CPU")
    _finite(run, f"{what}: {len(sc.nll)} rows",
            torch.cat([v.flatten() for per in sc.nll.values() for v in per.values()]))
    for w in (w for per in sc.weights.values() for w in per.values()):
        # 1e-2: weights that autocast left in bf16 are rounded to 2^-8 near 1
        if not torch.allclose(w.sum(-1).double(), torch.ones(()).double(), atol=1e-2):
            raise SmokeFailure(f"{what}: router weights do not sum to 1; check the router's softmax dtype")


# -- the phases, each with 1 step and the smoke's windows ----------------------------------------------
GPT2_SMALL = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, layer_norm_epsilon=1e-5)


def _train(run: _Run, what: str, model: GPT, batch: Callable, cfg: TrainConfig, k: int | None) -> GPT:
    _finite(run, f"{what} training loss", train_lm(model, batch, cfg, seed=0, freeze_k=k, desc=f"smoke: {what}"))
    return model


def _router(run: _Run, what: str, router: torch.nn.Module, inputs: Callable, experts: list, cfg=None) -> torch.nn.Module:
    """One router step the way the Experiment trains it: on a pool of the smoke's windows (domain and
    performance targets), or with the experts run at the step (lm targets)."""
    cfg = cfg or run.cut(run.p.router)
    if cfg.target == "lm":
        history = train_router(router, run.router_batch(cfg), inputs, cfg, seed=0, desc=f"smoke: {what}",
                               experts=experts)
    else:
        pool = build_pool(run.streams, inputs, SMOKE_WINDOWS, run.p.model.block_size, seed=0,
                          batch_size=run.batch or run.p.eval_batch_size, experts=experts, desc=f"smoke: {what} pool")
        history = train_router_on_pool(router, pool, cfg, seed=0, desc=f"smoke: {what}")
    _finite(run, f"{what} loss", history)
    return router


def _base(run: _Run) -> None:
    """A randomly initialised base of the profile's shape (gpt2: GPT-2 small's, checked against its hub config)."""
    p = run.p
    if p.name == "gpt2" and hf.gpt2_config_to_minigpt(SimpleNamespace(**GPT2_SMALL), p.model.block_size) != p.model:
        raise SmokeFailure("the gpt2 profile's model config is not GPT-2 small's shape; fix config.PROFILES['gpt2']")
    torch.manual_seed(0)
    base = GPT(p.model)
    if p.base.steps:  # gpt2: the base is the hub model, not trained
        _train(run, "base", base, batch=run.lm_batch("pretrain", None, run.cut(p.base)), cfg=run.cut(p.base), k=None)
    run.models["base"] = to_device(base, run.dev)
    _check_model(run, "base", base)


def _specialists(run: _Run) -> None:
    p, base = run.p, run.models["base"]
    cfg = run.cut(p.specialist)
    run.models["specs"] = [_train(run, f"{d} specialist", copy.deepcopy(base), batch=run.lm_batch("specialist", d, cfg),
                                  cfg=cfg, k=p.freeze_k) for d in DOMAINS]
    if not torch.equal(run.models["specs"][0].transformer.wte.weight, base.transformer.wte.weight):
        raise SmokeFailure("a specialist's frozen embedding changed in training; the trunk is not frozen")
    _check_model(run, "code specialist", run.models["specs"][0])


def _monolithic(run: _Run) -> None:
    cfg = run.cut(run.p.monolithic)
    run.models["mono"] = _train(run, "monolithic", copy.deepcopy(run.models["base"]),
                                batch=run.lm_batch("specialist", None, cfg), cfg=cfg, k=run.p.freeze_k)


def _routers(run: _Run) -> None:
    specs, C = run.models["specs"], run.p.model.n_embd
    fused = FusedModel(specs, run.p.freeze_k)
    routers = {}
    for kind, cls in ROUTERS.items():
        torch.manual_seed(0)
        routers[kind] = _router(run, f"{kind} router", cls(C, len(specs)), inputs=fused.expert_logits, experts=specs)
    run.models["routers"] = routers


def _score(run: _Run, experts: FusedModel, routers: dict, **kw) -> Scores:
    """One scoring pass over ``experts`` with the base beside them, at the profile's batch size."""
    return score(ScoreRequest(windows=run.eval_sets, experts=experts, routers=routers, base=run.models["base"],
                              batch_size=run.p.eval_batch_size, **kw))


def _evaluation(run: _Run) -> None:
    """The chapter's scoring pass, and fused greedy generation."""
    p, m = run.p, run.models
    routers = {"per-token": m["routers"]["per_token"], "last-token": m["routers"]["last_token"]}
    sc = _score(run, FusedModel(m["specs"], p.freeze_k), routers,
                extra={"weight average": average_weights(m["specs"]), "monolithic": m["mono"]})
    _check_scores(run, "evaluation", sc)
    prompt = run.eval_sets[DOMAINS[0]][0][:1, :8]
    ids, w = FusedModel(m["specs"], p.freeze_k, routers["per-token"]).generate(prompt, 2, return_weights=True)
    if ids.shape != (1, 10) or int(ids.max()) >= p.model.vocab_size or w.shape != (1, 2, len(DOMAINS)):
        raise SmokeFailure(f"fused generation gave ids {tuple(ids.shape)} and weights {tuple(w.shape)}; "
                           "expected (1, 10) ids inside the vocabulary and (1, 2, 3) weights")
    run.checks.append("fused generation: shapes and vocabulary")


def _break1(run: _Run) -> None:
    """Another base and a specialist from it, three feature routers on unshared trunks, scoring with
    hidden-state fusion and calibration statistics (the tokenizer case repeats this work)."""
    p, m, k = run.p, run.models, run.p.freeze_k
    if not p.base.steps:
        run.checks.append("break1: refused on this profile (one pretrained base for every seed), as studies.break1 does")
        return
    torch.manual_seed(1)
    other = _train(run, "break1 base", GPT(p.model), batch=run.lm_batch("pretrain", None, run.cut(p.base)),
                   cfg=run.cut(p.base), k=None)
    cfg = run.cut(p.specialist)
    spec = _train(run, "break1 specialist", copy.deepcopy(other), batch=run.lm_batch("specialist", "medical", cfg),
                  cfg=cfg, k=k)
    models = [m["specs"][0], spec, copy.deepcopy(spec)]
    different = FusedModel(models, k, shared=False)
    routers = {f: _router(run, f"break1 router [{f}]", CausalRouter(feature_width(f, models), 3),
                          inputs=FusedModel(models, k, shared=False, reads=f).expert_logits, experts=models) for f in FEATURES}
    sc = _score(run, different, {f: Routed(r, f) for f, r in routers.items()},
                extra={"weight average": average_weights(models)}, hidden_head=m["base"].lm_head, calibration=True)
    _check_scores(run, "break1 scoring", sc)


def _break2(run: _Run) -> None:
    """A router on skewed data with cold targets over the specialists, one over the generalist set (the
    monolithic crown in code's slot), both scored, and the per-window losses targets are made of."""
    p, m, k, C = run.p, run.models, run.p.freeze_k, run.p.model.n_embd
    cold = replace(run.cut(p.router), temp=1e-3, domain_mix=(0.9, 0.05, 0.05))
    r3 = _router(run, "break2 cold router", CausalRouter(C, 3), inputs=FusedModel(m["specs"], k).expert_logits,
                 experts=m["specs"], cfg=cold)
    gen = [m["mono"], *m["specs"][1:]]
    rg = _router(run, "break2 router, generalist set", CausalRouter(C, 3), inputs=FusedModel(gen, k).expert_logits,
                 experts=gen, cfg=cold)
    _check_scores(run, "break2 scoring", _score(run, FusedModel(m["specs"], k), {"cold": r3}))
    _check_scores(run, "break2 scoring, generalist set", _score(run, FusedModel(gen, k), {"g": rg},
                                                                names=[f"e{i}" for i in range(3)]))
    x, y = run.eval_sets[DOMAINS[0]]
    losses = per_window_losses(FusedModel(m["specs"], k), x, y, p.eval_batch_size)
    _finite(run, "break2 target sharpness", performance_targets(losses, 1e-3).max(-1).values)


def _sweep(run: _Run) -> None:
    """The shallowest and deepest freeze depth, and the nothing-frozen point (unshared, head untied)."""
    p, m, C, L = run.p, run.models, run.p.model.n_embd, run.p.model.n_layer
    cfg = run.cut(p.specialist)
    for K in sorted({0, L - 1}):
        spec = _train(run, f"sweep K={K} specialist", copy.deepcopy(m["base"]),
                      batch=run.lm_batch("specialist", "code", cfg), cfg=cfg, k=K)
        trio = [spec, copy.deepcopy(spec), copy.deepcopy(spec)]
        r = _router(run, f"sweep K={K} router", CausalRouter(C, 3), inputs=FusedModel(trio, K).expert_logits,
                    experts=trio)
        _check_scores(run, f"sweep K={K} scoring", _score(run, FusedModel(trio, K), {"per-token": r},
                                                          extra={"weight average": average_weights(trio)},
                                                          hidden_head=m["base"].lm_head))
    none, losses = fine_tune_everything(m["base"], run.lm_batch("specialist", "code", cfg), cfg, seed=0,
                                        desc="smoke: nothing frozen")
    _finite(run, "sweep nothing-frozen training loss", losses)
    models = [none, copy.deepcopy(none), copy.deepcopy(none)]
    experts = FusedModel(models, 0, shared=False, reads=SHARED_TRUNK)
    r = _router(run, "sweep nothing-frozen router", CausalRouter(C, 3), inputs=experts.expert_logits, experts=models)
    _check_scores(run, "sweep nothing-frozen scoring", _score(run, experts, {"per-token": r}, hidden_head=none.lm_head))


def _hybrid(run: _Run) -> None:
    p, m = run.p, run.models
    data = hybrid_windows({d: run.streams.get(d, "eval") for d in DOMAINS}, SMOKE_WINDOWS, p.model.block_size, seed=0)
    out = score_routers(m["specs"], p.freeze_k, {"last-token": m["routers"]["last_token"],
                                                  "per-token": m["routers"]["per_token"]}, data=data, batch_size=p.eval_batch_size)
    _finite(run, "hybrid fused losses", [r["fused_loss"] for r in out["routers"].values()])


@torch.no_grad()
def _document_memory(run: _Run) -> None:
    """The per-token router with its state carried in from a prefix's trunk states."""
    p, m, dev = run.p, run.models, run.dev
    (x, _), (prefix, _) = run.eval_sets[DOMAINS[0]], run.eval_sets[DOMAINS[1]]
    with autocast(dev):
        h, prefix_h = (m["specs"][0].trunk(t.to(dev), p.freeze_k) for t in (x, prefix))
        w = with_memory(m["routers"]["per_token"], prefix_h, h)
    if w.shape != (x.shape[0], p.model.block_size, len(DOMAINS)):
        raise SmokeFailure(f"document memory gave weights {tuple(w.shape)}; expected (n, T, 3)")
    _finite(run, "document-memory weights", w.float())


def _ceiling(run: _Run) -> None:
    p, m, dev = run.p, run.models, run.dev
    with torch.no_grad(), autocast(dev):
        states = {d: m["specs"][0].trunk(x.to(dev), p.freeze_k).float() for d, (x, _) in run.eval_sets.items()}
    r = fit_to_eval_labels(CausalRouter(p.model.n_embd, 3), states, steps=2)
    _check_scores(run, "ceiling scoring", _score(run, FusedModel(m["specs"], p.freeze_k), {"eval-fitted": r}))


PHASES: dict[str, Callable[[_Run], None]] = {
    "base": _base, "specialists": _specialists, "monolithic": _monolithic, "routers": _routers,
    "evaluation": _evaluation, "break1": _break1, "break2": _break2, "freeze sweep": _sweep, "hybrid": _hybrid,
    "document memory": _document_memory, "routing ceiling": _ceiling,
}


# -- running it and reporting -----------------------------------------------------------------------
def peak_bytes(dev: torch.device) -> int | None:
    """Peak memory so far: allocated by PyTorch on CUDA, resident set of the process on the CPU."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev)
    if resource is None:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def smoke(profile: str | Profile | None = None, batch: int | None = None) -> dict:
    """Run every phase of :data:`PHASES` once at ``profile``'s model shapes on the device; raise
    :class:`SmokeFailure` on a failed check. ``batch`` replaces every training batch size (default:
    the profile's). Returns per phase the seconds and the peak memory so far, the estimate of the
    full run (:func:`estimate_minutes`) and the checks passed."""
    p, dev, t0 = get_profile(profile), resolve(), time.perf_counter()
    run = _Run(p, dev, batch, *_random_data(p, batch))
    measured = {}
    with not_remembered():  # random models, timed phases: nothing to keep, nothing to read back
        for name, fn in progress(PHASES.items(), "smoke"):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            start = time.perf_counter()
            fn(run)
            measured[name] = {"seconds": time.perf_counter() - start, "peak_bytes": peak_bytes(dev)}
    return {"profile": p.name, "device": str(dev), "amp": str(amp_dtype(dev)), "batch": batch, "model": p.model,
            "params": sum(t.numel() for t in run.models["base"].parameters()), "phases": measured,
            "estimate": estimate_minutes(p), "checks": run.checks, "wall_seconds": time.perf_counter() - t0}


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2 ** 20:,.0f}"


def summarize(rep: dict) -> str:
    """The smoke report as text (what ``python -m minigpt smoke`` prints)."""
    cfg, est = rep["model"], rep["estimate"]
    gpus = list(GPUS)
    peak = "peak MB (CUDA allocated)" if rep["device"].startswith("cuda") else "peak MB (RSS so far)"
    lines = [f"smoke — profile {rep['profile']}: {cfg.n_layer} blocks, d {cfg.n_embd}, context {cfg.block_size}, vocab "
             f"{cfg.vocab_size}, {rep['params'] / 1e6:.1f}M parameters; device {rep['device']}, autocast {rep['amp']}; "
             f"batch {rep['batch'] or 'the profile’s'}, 1 step per phase, {SMOKE_WINDOWS} windows per domain",
             f"{len(rep['checks'])} checks passed (shapes, dtypes, vocabulary, finite losses)", "",
             f"{'phase':<17}{'smoke s':>9}{peak:>26}{'full run TFLOP':>16}" + "".join(f"{g + ' min':>16}" for g in gpus)]
    for name, m in rep["phases"].items():
        e = est[name]
        lines.append(f"{name:<17}{m['seconds']:>9.1f}{_mb(m['peak_bytes']):>26}{e['tflop']:>16,.1f}"
                     + "".join(f"{e[g]:>16.1f}" for g in gpus))
    for label, names in (("chapter (run)", CHAPTER), ("everything", list(est))):
        lines.append(f"{label:<17}{'':>9}{'':>26}{sum(est[n]['tflop'] for n in names):>16,.1f}"
                     + "".join(f"{sum(est[n][g] for n in names):>16.1f}" for g in gpus))
    lines += ["", "Estimates: FLOPs counted at the profile's real step and window counts (6·params·tokens to train, "
              "2·params·tokens forward, plus attention; every crown of a router's experts; a frozen trunk forward "
              "only), each study as if run after the chapter, divided by an assumed effective throughput:"]
    lines += [f"  {g}: {note}" for g, (_, note) in GPUS.items()]
    lines.append(f"smoke wall time {rep['wall_seconds']:.1f} s; peak memory {_mb(max((m['peak_bytes'] or 0) for m in rep['phases'].values()))} MB")
    return "\n".join(lines)

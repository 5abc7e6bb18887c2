"""The reader's exercises and their checks: a few lines of the chapter, written in the notebooks.

Notebooks 2-7 each hold a stub the reader fills in (a cell tagged ``exercise``) and, right after it,
a cell tagged ``check`` that calls one ``check_<name>(reader_fn, exp)`` below. A check runs the
reader's function and the package's own implementation on real data of the experiment (its cached
models, its windows), compares them with the tolerance it states, prints exactly one line and
returns True only on a match:

* ``✓ <name>: matches the package (...)``
* ``✗ <name>: <what differs>``
* ``… <name>: not written yet — hint: ...`` while the stub still raises ``NotImplementedError``.

A check never raises because of the reader's code (an exception is reported on the line), so a
notebook with its stubs in place still runs top to bottom; the rest of the notebook uses the
package's functions, never the reader's. The solutions are in the answer key
(chapters/answers/answers_01_05.py, cells tagged ``solution``); ``tools/solved.py`` puts them in the
notebooks that ``make test`` and the book execute.
"""
from __future__ import annotations

import copy
import traceback
import weakref
from dataclasses import replace
from typing import Any, Callable

import torch
import torch.nn as nn

from . import compat
from .analysis.routing import collapse_signs
from .chapter import chapter_scores
from .config import DOMAINS, derive_seed
from .device import resolve, to_device, to_host
from .evaluate import loss_table
from .experiment import Experiment
from .fusion import FusedModel, average_weights, fuse_logits
from .router import LinearRouter, performance_targets, router_loss, window_targets
from .router_pool import RouterPool, build_pool, train_router_on_pool
from .scoring import HEADLINE, ORACLE, ScoreRequest, score
from .studies.add_specialist.growth import with_row

PASS, FAIL, TODO = "✓", "✗", "…"
# Tolerances: float32 sums in another order differ in the last bits, never by more than these
EXACT = 1e-6  # parameters, targets (probabilities) and token losses
LOGITS = 1e-4  # fused logits: sums of N terms of size ~10
# A reader's router-training loop that draws other batches than the package's cannot match it step by
# step; it passes when its router's loss on the whole pool ends within this much of the package's
# router's after the same number of steps. At ci the package's own router, trained on six other batch
# seeds, ends within 0.021 nats of itself; ignoring the temperature costs about 0.09, a flipped sign 0.4
ROUTER_LOSS_SLACK = 0.03
POOL_PER_DOMAIN = 32  # router-split windows per domain behind the notebook-3 checks: a second at cpu
WINDOWS_PER_DOMAIN = 2  # held-out windows per domain behind the fuse_logits check


# -- reporting and calling the reader's code ---------------------------------------------------
class _Failed(Exception):
    """Raised inside a check with the one line to print: (mark, text)."""

    def __init__(self, mark: str, text: str) -> None:
        super().__init__(text)
        self.mark, self.text = mark, text


def _report(name: str, mark: str, text: str) -> bool:
    print(f"{mark} {name}: {text}")
    return mark == PASS


def _run_check(name: str, compare: Callable[[], str]) -> bool:
    """Print ``compare()``'s ✓ line, or the ✗/… line a :class:`_Failed` carries. The global random
    state is restored afterwards, so a check changes nothing the rest of the notebook draws."""
    try:
        with torch.random.fork_rng():
            return _report(name, PASS, f"matches the package ({compare()})")
    except _Failed as failed:
        return _report(name, failed.mark, failed.text)


def _call(fn: Callable, *args: Any) -> Any:
    """The reader's ``fn(*args)``; its exceptions become a :class:`_Failed` that names where it raised."""
    try:
        return fn(*args)
    except NotImplementedError as err:
        hint = str(err).strip() or "hint: replace the `raise NotImplementedError` with your code"
        raise _Failed(TODO, f"not written yet — {hint}") from None
    except Exception as err:  # noqa: BLE001 - any mistake in the reader's code is reported, never raised
        first = (str(err).splitlines() or [""])[0][:160]
        raise _Failed(FAIL, f"your function raised {type(err).__name__}: {first} ({_where_raised(err)}); "
                            "fix it and rerun this cell") from None


def _where_raised(err: Exception) -> str:
    """The reader's own line that raised: the last frame outside installed packages and this module."""
    frames = traceback.extract_tb(err.__traceback__)[1:]  # [0] is _call itself
    own = [f for f in frames if "site-packages" not in f.filename and f.filename != __file__]
    frame = (own or frames or traceback.extract_tb(err.__traceback__))[-1]
    return f"in {frame.name}, line {frame.lineno}"


def _tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` as a float CPU tensor, or a :class:`_Failed` saying what was returned instead."""
    try:
        return torch.as_tensor(to_host(value.detach() if isinstance(value, torch.Tensor) else value)).float()
    except (TypeError, ValueError, RuntimeError):
        raise _Failed(FAIL, f"{what} should be a tensor, got {type(value).__name__}") from None


def _floats(values: Any, what: str) -> torch.Tensor:
    """A sequence of numbers (floats or one-element tensors) as a 1-d tensor, or a :class:`_Failed`."""
    try:
        return torch.tensor([float(v.detach() if isinstance(v, torch.Tensor) else v) for v in values])
    except (TypeError, ValueError, RuntimeError):
        raise _Failed(FAIL, f"{what} should be a list of numbers, got {type(values).__name__}") from None


def _same_shape(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    if got.shape != want.shape:
        raise _Failed(FAIL, f"{what} has shape {tuple(got.shape)}, the package's {tuple(want.shape)}")


def _max_diff(got: torch.Tensor, want: torch.Tensor, what: str, tol: float, *, where: Callable[[tuple], str]) -> float:
    """max |got - want| (after a shape check); a :class:`_Failed` naming the worst place if over ``tol``."""
    _same_shape(got, want, what)
    diff = (got - want.float()).abs().nan_to_num(float("inf"))
    worst = float(diff.max()) if diff.numel() else 0.0
    if worst > tol:
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise _Failed(FAIL, f"{what}: max |Δ| {worst:.3g} (tolerance {tol:g}) at {where(idx)}: "
                            f"yours {float(got[idx]):.6g}, the package's {float(want[idx]):.6g}")
    return worst


# -- notebook 2: weight averaging of the crowns ----------------------------------------------------
def check_average_crowns(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(specialists, k)`` -> {name: tensor}, the mean of each crown parameter, against the
    crown of :func:`minigpt.fusion.average_weights` (the table's ``weight average`` row)."""
    def compare() -> str:
        specs, k = exp.specialists(), exp.k
        want = {n: p.detach() for n, p in average_weights(specs).crown_parameters(k).items()}
        got = _call(reader_fn, copy.deepcopy(specs), k)  # a copy: the rest of the notebook keeps its models
        if not isinstance(got, dict):
            raise _Failed(FAIL, f"return a dict {{parameter name: averaged tensor}}, got {type(got).__name__}")
        missing, extra = [n for n in want if n not in got], [n for n in got if n not in want]
        if missing or extra:
            raise _Failed(FAIL, _names_text(missing, extra, k))
        worst = max(_max_diff(_tensor(got[n], n), want[n].cpu(), n, EXACT, where=_index)
                    for n in want)
        return f"all {len(want)} crown tensors of average_weights at K = {k}, max |Δ| {worst:.1e}, tolerance {EXACT:g}"

    return _run_check("average_crowns", compare)


def _index(i: tuple) -> str:
    return f"index {i[0] if len(i) == 1 else list(i)}"


def _names_text(missing: list[str], extra: list[str], k: int) -> str:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} crown parameters (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} names that are not crown parameters at K = {k} (e.g. {extra[0]})")
    return "; ".join(parts) + "; return exactly the names of m.crown_parameters(k)"


# -- notebook 3: performance targets and the router's training loop --------------------------------
_POOLS: "weakref.WeakKeyDictionary[Experiment, RouterPool]" = weakref.WeakKeyDictionary()


def exercise_pool(exp: Experiment) -> RouterPool:
    """A small pool of the specialists' router inputs and mean losses on real router-split windows
    (:data:`POOL_PER_DOMAIN` per domain), built once per experiment for the notebook-3 checks."""
    if exp not in _POOLS:
        k, specs = exp.k, exp.specialists()
        p = exp.profile
        _POOLS[exp] = build_pool(exp.streams, FusedModel(specs, k).expert_logits, POOL_PER_DOMAIN, T=p.model.block_size,
                                 seed=derive_seed(exp.seed, "exercise-pool"), batch_size=p.eval_batch_size,
                                 experts=specs, desc="exercise pool")
    return _POOLS[exp]


def check_performance_targets(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(losses (B, N), temp)`` -> (B, N) targets, against :func:`minigpt.router.performance_targets`
    on the specialists' mean losses on real router windows, at three temperatures around the profile's."""
    def compare() -> str:
        losses = exercise_pool(exp).losses.cpu()
        temps = sorted({0.01, exp.profile.router.temp, 1.0})
        worst = 0.0
        for t in temps:
            got = _tensor(_call(reader_fn, losses.clone(), t), f"the targets at temp {t:g}")
            worst = max(worst, _max_diff(got, performance_targets(losses, t), f"at temp {t:g}", EXACT,
                                         where=lambda i: f"window {i[0]}, specialist {i[1]}"))
        return (f"{losses.shape[0]} router windows × {losses.shape[1]} specialists at temperatures "
                f"{', '.join(f'{t:g}' for t in temps)}, max |Δ| {worst:.1e}, tolerance {EXACT:g}")

    return _run_check("performance_targets", compare)


def pool_loss(router: nn.Module, pool: RouterPool, cfg) -> float:
    """The router's loss towards its targets on every window of ``pool``: how well training went,
    whatever batches it was drawn."""
    labels = torch.arange(len(DOMAINS), device=pool.h.device).repeat_interleave(pool.per_domain)
    with torch.no_grad():
        w = router(pool.h)
        return float(router_loss(w, window_targets(cfg, labels, pool.losses, pool.losses.shape[1])))


def _trained_pair(reader_fn: Callable, exp: Experiment) -> tuple:
    """The package's and the reader's last-token router, trained from the same initialisation on the
    same pool with the same seed: (pool, cfg, untrained, ours, theirs, our history, their history)."""
    pool, cfg = exercise_pool(exp), exp.profile.router
    seed = derive_seed(exp.seed, "exercise-router")
    torch.manual_seed(seed)
    untrained = to_device(LinearRouter(exp.profile.model.n_embd, pool.losses.shape[1], cfg.normalize), resolve())
    ours, theirs = copy.deepcopy(untrained), copy.deepcopy(untrained)
    # the reader's loop runs first, so a stub stops here, on a copy of the pool, which it might write into
    their_pool = RouterPool(pool.h.clone(), pool.losses.clone(), pool.per_domain)
    their_history = _call(reader_fn, theirs, their_pool, cfg, torch.Generator().manual_seed(seed))
    our_history = train_router_on_pool(ours, pool, cfg, seed, desc="exercise: the package's router")
    return pool, cfg, untrained, ours, theirs, our_history, their_history


def check_train_router(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(router, pool, cfg, gen)`` trains ``router`` in place for ``cfg.steps`` steps on batches of
    ``pool`` and returns the per-step losses. Passes when its losses equal
    :func:`minigpt.router_pool.train_router_on_pool`'s step by step (same init, same seed), or, with
    other batches, when its router's loss on the whole pool is within :data:`ROUTER_LOSS_SLACK` of the
    package's router's."""
    def compare() -> str:
        pool, cfg, untrained, ours, theirs, our_history, their_history = _trained_pair(reader_fn, exp)
        history = _floats(their_history, "the per-step losses")
        if history.shape != (cfg.steps,):
            raise _Failed(FAIL, f"return one loss per step: {cfg.steps} numbers, got shape {tuple(history.shape)}")
        start, want, got = (pool_loss(r, pool, cfg) for r in (untrained, ours, theirs))
        step_diff = float((history - torch.tensor(our_history)).abs().max())
        if step_diff <= EXACT:
            return (f"the same per-step losses over {cfg.steps} steps, max |Δ| {step_diff:.1e}; loss on the pool "
                    f"{start:.4f} untrained → {got:.4f}")
        if not got <= want + ROUTER_LOSS_SLACK:  # `not <=`: a NaN loss fails too
            raise _Failed(FAIL, f"after {cfg.steps} steps your router's loss on the pool is {got:.4f}, the package's "
                                f"{want:.4f} (untrained {start:.4f}; tolerance +{ROUTER_LOSS_SLACK:g} nats): check "
                                f"the targets (temperature, sign) and that every step calls backward and opt.step")
        return (f"your batches differ from the package's, so do the per-step losses, by up to {step_diff:.3g}; "
                f"after {cfg.steps} steps your router's loss on the pool is {got:.4f} against the package's "
                f"{want:.4f}, within {ROUTER_LOSS_SLACK:g} nats; untrained {start:.4f}")

    return _run_check("train_router", compare)


# -- notebook 4: logit fusion ------------------------------------------------------------------
def _fusion_inputs(exp: Experiment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Real specialist logits (N, B, T, V) on a few held-out windows per domain, and both routers'
    weights on them: per-token (B, T, N) and last-token (B, N)."""
    dev = resolve()
    x = torch.cat([exp.eval_sets[d][0][:WINDOWS_PER_DOMAIN] for d in DOMAINS]).to(dev)
    with torch.no_grad():
        h, logits = FusedModel(exp.specialists(), exp.k).expert_logits(x)
        weights = {"per-token": exp.router("per_token")(h), "last-token": exp.router("last_token")(h)}
    return logits.float(), weights


def check_fuse_logits(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(weights, logits)`` -> fused logits (B, T, V), against :func:`minigpt.fusion.fuse_logits`
    on real logits with the per-token router's (B, T, N) and the last-token router's (B, N) weights."""
    def compare() -> str:
        logits, weights = _fusion_inputs(exp)
        worst = 0.0
        for name, w in weights.items():
            got = _tensor(_call(reader_fn, w.clone(), logits.clone()), f"the fused logits ({name} weights)")
            what = f"with the {name} router's weights {tuple(w.shape)}"
            worst = max(worst, _max_diff(got, to_host(fuse_logits(w, logits)), what, LOGITS,
                                         where=lambda i: f"window {i[0]}, position {i[1]}, token {i[2]}"))
        n, b, t, v = logits.shape
        return (f"{n} specialists' logits on {b} held-out windows × {t} tokens × {v} entries, with per-token and "
                f"last-token weights, max |Δ| {worst:.1e}, tolerance {LOGITS:g}")

    return _run_check("fuse_logits", compare)


# -- notebook 5: the per-window oracle and its gap ----------------------------------------------
def _check_domain(reader_fn: Callable, scores, d: str) -> float:
    """Compare the reader's oracle on domain ``d``'s windows with the scored ORACLE row; their gap."""
    spec, fused, want = scores.spec_nll(d), scores.nll[HEADLINE][d], scores.nll[ORACLE][d]
    out = _call(reader_fn, spec.clone(), fused.clone())
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        raise _Failed(FAIL, "return three things: (choice (n,), oracle token losses (n, T), gap in nats)")
    choice = _tensor(out[0], f"the choice on {d}").long()
    best = spec.mean(-1).argmin(0)
    _same_shape(choice, best, f"the choice on {d}")
    if not torch.equal(choice, best):
        i = int((choice != best).nonzero()[0])
        raise _Failed(FAIL, f"on {d}, your choice differs from the oracle's on {int((choice != best).sum())} of "
                            f"{best.numel()} windows (first: window {i}, yours {int(choice[i])}, the oracle's "
                            f"{int(best[i])}, the specialist with the lowest mean loss on it)")
    _max_diff(_tensor(out[1], f"the oracle's token losses on {d}"), want, f"the oracle's token losses on {d}",
              EXACT, where=lambda i: f"window {i[0]}, position {i[1]}")
    try:
        return float(out[2])
    except (TypeError, ValueError, RuntimeError):
        raise _Failed(FAIL, f"the gap on {d} should be one number, got {type(out[2]).__name__}") from None


def check_oracle_gap(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(spec_nll (N, n, T), fused_nll (n, T))`` -> (choice, oracle token losses, gap) on one
    domain, against :func:`minigpt.scoring.add_oracles`' ORACLE row and, averaged over the domains,
    the table's oracle gap (headline minus oracle, mixed)."""
    def compare() -> str:
        scores = chapter_scores(exp)  # remembered: notebook 5's chapter_table has scored these windows
        gaps = {d: _check_domain(reader_fn, scores, d) for d in DOMAINS}
        mixed = loss_table(scores.nll)["mixed"]
        want, got = float(mixed[HEADLINE] - mixed[ORACLE]), sum(gaps.values()) / len(gaps)
        if not abs(got - want) <= EXACT:  # `not <=`: a NaN gap fails too
            raise _Failed(FAIL, f"choices and token losses match, but your gap averages {got:+.4f} nats over the "
                                f"domains against the table's {want:+.4f} (the fused model's mean loss minus the "
                                f"oracle's: positive when the oracle is better)")
        n = sum(scores.nll[ORACLE][d].shape[0] for d in DOMAINS)
        return (f"the choice on all {n} held-out windows, the ORACLE row's token losses to {EXACT:g}, and the table's "
                f"oracle gap {want:+.4f} nats")

    return _run_check("oracle_gap", compare)


# -- notebook 6: the compatibility check ---------------------------------------------------------
def compatibility_cases(exp: Experiment) -> dict[str, tuple[list, bool]]:
    """Specialist sets and whether :func:`minigpt.compat.check` accepts them: the chapter's set, a set from
    different bases, one crown whose trunk was changed after training, one with another tokenizer."""
    specs, k = exp.specialists(), exp.k
    other = Experiment(exp.profile, seed=exp.seed + 1).specialist("medical")
    trained_trunk = copy.deepcopy(specs[2])
    with torch.no_grad():
        next(iter(trained_trunk.trunk_parameters(k).values())).add_(1e-3)
    retokenized = copy.deepcopy(specs[1])
    retokenized.manifest = {**specs[1].manifest, "tokenizer_fingerprint": "0" * 64}
    cases = {"one shared base": specs, "different bases": [specs[0], other, specs[2]],
             "a trunk changed after training": [specs[0], specs[1], trained_trunk],
             "another tokenizer": [specs[0], retokenized, specs[2]]}
    return {name: (models, _accepted(models, k)) for name, models in cases.items()}


def _accepted(models: list, k: int) -> bool:
    try:
        compat.check(models, k)
        return True
    except compat.CompatibilityError:
        return False


def check_compatible(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(specialists, k)`` -> True when they can be fused (same tokenizer fingerprint, same base
    fingerprint, identical trunk tensors), against :func:`minigpt.compat.check` on four sets."""
    def compare() -> str:
        cases = compatibility_cases(exp)
        for name, (models, want) in cases.items():
            got = _call(reader_fn, [copy.deepcopy(m) for m in models], exp.k)  # copies keep their manifests
            if bool(got) != want:
                raise _Failed(FAIL, f"for {name} you say {'compatible' if got else 'incompatible'}, the check says "
                                    f"{'compatible' if want else 'refuse'}: compare the manifests' tokenizer and base "
                                    "fingerprints, then every trunk tensor")
        return f"the same verdict on all {len(cases)} sets ({', '.join(cases)})"

    return _run_check("compatible", compare)


# -- notebook 7: the collapse diagnostic ---------------------------------------------------------
def collapse_weights(exp: Experiment) -> dict[str, dict[str, torch.Tensor]]:
    """The healthy router's and a collapsed one's (98 % code, one-hot targets) weights on the studies'
    held-out windows: the two routers notebook 7 builds by hand, scored once and remembered."""
    healthy = exp.router("per_token")
    collapsed = exp.router("per_token", replace(exp.profile.router, domain_mix=(0.98, 0.01, 0.01), temp=0.001))
    scores = score(ScoreRequest(windows=exp.study_sets, experts=FusedModel(exp.specialists(), exp.k),
                                routers={"healthy": healthy, "collapsed": collapsed}, base=exp.base(),
                                batch_size=exp.profile.eval_batch_size))
    return {n: scores.weights[n] for n in ("healthy", "collapsed")}


def check_collapse_signs(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(weights {domain: (n, T, N)})`` -> (routing accuracy per domain, the dominant expert's
    index, its mean weight on the other domains' text), against :func:`minigpt.analysis.routing.collapse_signs`
    on a healthy and a collapsed router's real weights."""
    def compare() -> str:
        for name, w in collapse_weights(exp).items():
            out = _call(reader_fn, {d: v.clone() for d, v in w.items()})
            want = collapse_signs(w)
            if not (isinstance(out, (tuple, list)) and len(out) == 3 and isinstance(out[0], dict)):
                raise _Failed(FAIL, "return (accuracy {domain: share}, dominant expert index, its weight elsewhere)")
            acc, dom, elsewhere = out
            for d in DOMAINS:
                if not abs(float(acc.get(d, float("nan"))) - want["routing_accuracy"][d]) <= EXACT:
                    raise _Failed(FAIL, f"{name} router, {d}: your routing accuracy {acc.get(d)} against "
                                        f"{want['routing_accuracy'][d]:.6f} (argmax over experts == the text's domain)")
            if int(dom) != want["dominant_expert"]:
                raise _Failed(FAIL, f"{name} router: dominant expert {int(dom)}, the package's {want['dominant_expert']}"
                                    "(the expert with the largest mean weight over all tokens)")
            if not abs(float(elsewhere) - want["dominant_weight_elsewhere"]) <= EXACT:
                raise _Failed(FAIL, f"{name} router: weight elsewhere {float(elsewhere):.6f}, the package's "
                                    f"{want['dominant_weight_elsewhere']:.6f} (its mean weight on the other domains)")
        return "routing accuracy, the dominant expert and its weight elsewhere, for a healthy and a collapsed router"

    return _run_check("collapse_signs", compare)


# -- notebook 9: growing a router by one output ----------------------------------------------------
def check_grow_router(reader_fn: Callable, exp: Experiment) -> bool:
    """``reader_fn(old_router, new_row (C,), new_bias, shared_h (B, T, C))`` -> weights (B, T, N + 1): the old
    router's rows unchanged, one more row, one softmax over all of them; against
    :class:`minigpt.studies.add_specialist.growth.GrownRouter` with that row, on real trunk states."""
    def compare() -> str:
        old, dev = exp.router("per_token"), resolve()
        x = torch.cat([exp.eval_sets[d][0][:WINDOWS_PER_DOMAIN] for d in DOMAINS]).to(dev)
        gen = torch.Generator().manual_seed(derive_seed(exp.seed, "exercise-grow"))
        row = (torch.randn(old.proj.in_features, generator=gen) * float(old.proj.weight.detach().std())).to(dev)
        with torch.no_grad():
            h = exp.specialists()[0].trunk(x, exp.k)
            want = to_host(with_row(old, row, 0.5)(h))
            got = _tensor(_call(reader_fn, copy.deepcopy(old), row.clone(), 0.5, h.clone()),
                          "the grown router's weights")
        worst = _max_diff(got, want, "the grown router's weights", EXACT,
                          where=lambda i: f"window {i[0]}, position {i[1]}, expert {i[2]}")
        return f"{tuple(want.shape)} weights on real trunk states, max |Δ| {worst:.1e}, tolerance {EXACT:g}"

    return _run_check("grow_router", compare)


CHECKS_MORE = {"compatible": check_compatible, "collapse_signs": check_collapse_signs, "grow_router": check_grow_router}


CHECKS: dict[str, Callable[[Callable, Experiment], bool]] = {
    "average_crowns": check_average_crowns, "performance_targets": check_performance_targets,
    "train_router": check_train_router, "fuse_logits": check_fuse_logits, "oracle_gap": check_oracle_gap,
    **CHECKS_MORE}

"""Break 1 (Chapter 32): specialists fine-tuned from bases pretrained with different seeds.

The same pipeline is run twice and measured side by side: once with one shared base under all
three specialists, once with a differently seeded base under each. Base X (the first base) feeds
the routers that read one model and decodes hidden-state fusion. Three routers read three
features (:data:`minigpt.scoring.FEATURES`) with the same config, initialisation and batches.
Each specialist of seed s is the one the chapter's run with seed s trained (base s, data seed s:
:func:`seed_run`), so Break 1 reuses the seed runs. Controls are those runs themselves, the
shared-base pipeline on every base seed, so a difference in base *quality* is not mistaken for the
missing shared geometry; the different-base set counts as worse than the
controls only if it is worse than every one of them, each judged by a paired 95% interval over the
same held-out windows (``different_vs_controls``). Conclusions (``what_fails_first``,
``what_fails_first_within_set``) are computed from the measurements. A specialist trained under
another tokenizer (:mod:`.tokenizer_mismatch`) completes the break.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import compat
from ..analysis.calibration import calibration_from_stats, merge_stats
from ..analysis.routing import confusion_matrix, mean_weights, misrouting, oracle_agreement, routing_accuracy
from ..analysis.similarity import cka_block
from ..checkpoint import model_fingerprint
from ..config import DOMAINS
from ..device import autocast, resolve, to_device, to_host
from ..evaluate import loss_table, table_json
from ..experiment import Experiment
from ..fusion import average_weights
from ..intervals import domain_window_means
from ..model import GPT
from ..scoring import (FEATURES, ORACLE, ORACLE_PER_TOKEN, SHARED_TRUNK, SPECIALIST_ROWS, Experts, Scores, fused_row,
                       model_nll, score)
from .common import (INTERVAL_Z, VERDICT_Z, paired, paired_interval, refuse_then_force, token_sample, verdict,
                     write_report)
from .tokenizer_mismatch import summary_lines as tokenizer_summary_lines
from .tokenizer_mismatch import tokenizer_mismatch

# the fusion rules reported per set: JSON key -> rule in the row name (minigpt.scoring.fused_row)
KINDS = {"logits": "soft", "probs": "probs", "hidden": "hidden", "hard": "hard"}
SETS = ("shared", "different")

CONTRASTS = {
    # within one specialist set, so a weaker or stronger base under some specialists cancels out
    "hidden-state fusion minus logit fusion": (fused_row("hidden", "{r}"), fused_row("soft", "{r}")),
    "probability fusion minus logit fusion": (fused_row("probs", "{r}"), fused_row("soft", "{r}")),
    "weight averaging minus output averaging (uniform mix)": ("weight average", "uniform mix"),
    "learned router minus uniform mix": (fused_row("soft", "{r}"), "uniform mix"),
    "fused logits minus best specialist": (fused_row("soft", "{r}"), "{best}"),
    "fused logits minus oracle (oracle gap)": (fused_row("soft", "{r}"), ORACLE),
}


@dataclass
class _Run:
    """What Break 1 measured, handed from step to step."""

    base_seeds: list[int]
    bases: dict[int, GPT]
    base_losses: dict[int, dict[str, float]]
    sets: dict[str, Experts]
    scores: dict[str, Scores]
    reports: dict[str, dict]
    controls: dict[str, dict]
    control_scores: dict[str, Scores] = field(default_factory=dict)  # base seed (str) -> that control's Scores
    teams: dict[int, object] = field(default_factory=dict)  # base seed -> its seed run (built once, see seed_run)


# -- one specialist set ---------------------------------------------------------------------------
def _score_set(exp, experts: Experts, base: GPT, features: Sequence[str], tag: str) -> Scores:
    """Train (or load) one router per feature, then score every row; ``base``'s head decodes
    hidden-state fusion and the weight average averages all of the set's parameters."""
    routers = {f: exp.feature_router(experts, f, exp.profile.router, tag) for f in features}
    return score(exp.eval_sets, experts, routers, base=base, extra={"weight average": average_weights(experts.models)},
                 batch_size=exp.profile.eval_batch_size, features={f: f for f in routers},
                 hidden_head=base.lm_head, calibration=True)


def _spec_nll(sc: Scores) -> dict[str, torch.Tensor]:
    return {d: sc.spec_nll(d) for d in sc.domains()}


def _routing_report(sc: Scores, routers: Sequence[str]) -> dict:
    spec = _spec_nll(sc)
    acc = {r: routing_accuracy(sc.weights[r]) for r in routers}
    agree = {r: oracle_agreement(sc.weights[r], spec) for r in routers}
    return {
        "routing_accuracy": acc,
        "mean_routing_accuracy": {r: float(np.mean(list(a.values()))) for r, a in acc.items()},
        "oracle_agreement": agree,
        "mean_oracle_agreement": {r: float(np.mean(list(a.values()))) for r, a in agree.items()},
        "confusion": {r: table_json(confusion_matrix(sc.weights[r])) for r in routers},
        "mean_weights": {r: table_json(mean_weights(sc.weights[r])) for r in routers},
        "misrouting": {r: misrouting(sc.weights[r], spec) for r in routers},
    }


def _calibration_report(stats: Mapping[str, Mapping[str, dict]], specs: Sequence[str]) -> dict:
    """Calibration of every row with statistics, per domain and over all domains ("all")."""
    calib = {}
    for row, per in stats.items():
        calib[row] = {d: calibration_from_stats(s) for d, s in per.items()}
        calib[row]["all"] = calibration_from_stats(merge_stats(per))
    scale = {s: calib[s]["all"]["logit_scale"] for s in specs}
    return {"calibration": calib, "mean_ece": float(np.mean([calib[s]["all"]["ece"] for s in specs])),
            "logit_scale": scale, "logit_scale_ratio": float(max(scale.values()) / min(scale.values()))}


def _setting_report(sc: Scores, routers: Sequence[str], headline: str, own_base_loss: Mapping[str, float]) -> dict:
    """Everything reported for one specialist set; ``own_base_loss[d]`` is the loss on domain d of
    the base the d specialist was fine-tuned from; ``headline`` the router whose fused rows count."""
    table = loss_table(sc.nll)
    mixed = table["mixed"]
    specs = [r for r in SPECIALIST_ROWS if r in table.index]
    best = float(mixed[specs].min())
    fused = {kind: fused_row(rule, headline) for kind, rule in KINDS.items()}
    own = {d: float(table.loc[f"{d} specialist", d]) for d in DOMAINS}
    return {
        "table": table_json(table),
        "mixed": {row: float(v) for row, v in mixed.items()},
        "best_specialist": mixed[specs].idxmin(), "best_specialist_mixed": best,
        "own_domain_loss": own,
        "own_domain_gain_over_own_base_%": {d: (own_base_loss[d] - own[d]) / own_base_loss[d] * 100 for d in DOMAINS},
        "each_specialist_wins_own_domain": all(table.loc[specs, d].idxmin() == f"{d} specialist" for d in DOMAINS),
        **_routing_report(sc, routers),
        "oracle_gap": {r: float(mixed[fused_row("soft", r)] - mixed[ORACLE]) for r in routers},
        "fusion_gain_vs_best_specialist_%": {kind: (best - float(mixed[row])) / best * 100 for kind, row in fused.items()},
        "fused_beats_best_specialist": {kind: bool(mixed[row] < best) for kind, row in fused.items()},
        **_calibration_report(sc.stats, specs),
    }


# -- different bases vs shared base ---------------------------------------------------------------
def _z(p: Mapping[str, float] | None) -> float | None:
    return (p["delta"] / p["se"] if p["se"] > 0 else None) if p is not None else None


def _metric(name: str, ref: float, new: float, unit: str, rel: float | None, p: Mapping[str, float] | None,
            **extra) -> dict:
    z = _z(p)
    return {"metric": name, "shared": ref, "different": new, "unit": unit, "relative_%": rel, "z": z, **extra,
            "verdict": "n/a (no per-window estimate)" if z is None else verdict(z)}


def _diff_windows(sc: Scores, a: str, b: str) -> dict[str, torch.Tensor]:
    """Per window, mean loss of row ``a`` minus that of row ``b`` (n,), per domain."""
    wa, wb = domain_window_means(sc.nll[a]), domain_window_means(sc.nll[b])
    return {d: wa[d] - wb[d] for d in DOMAINS}


def _hits(sc: Scores, router: str, target: str) -> dict[str, torch.Tensor]:
    """Share of each window's tokens routed to the own domain (``target="own"``) or to the window's
    best specialist (``"best"``), (n,) per domain."""
    w = sc.weights[router]
    out = {}
    for d in DOMAINS:
        want = (torch.full((w[d].shape[0],), DOMAINS.index(d)) if target == "own"
                else sc.spec_nll(d).double().mean(-1).argmin(0))
        out[d] = (w[d].argmax(-1) == want.unsqueeze(-1)).double().mean(-1)
    return out


def _loss_metric(name: str, row: str, reps: Mapping[str, dict], scores: Mapping[str, Scores]) -> dict:
    p = paired(domain_window_means(scores["shared"].nll[row]), domain_window_means(scores["different"].nll[row]))
    ref = reps["shared"]["mixed"][row]
    return _metric(name, ref, reps["different"]["mixed"][row], "nats/token", p["delta"] / ref * 100, p)


def _routing_metrics(reps: Mapping[str, dict], scores: Mapping[str, Scores], router: str) -> list[dict]:
    out = []
    for name, key, target in (("routing accuracy", "mean_routing_accuracy", "own"),
                              ("oracle agreement", "mean_oracle_agreement", "best")):
        # different before shared: the change is positive when the share drops
        p = paired(_hits(scores["different"], router, target), _hits(scores["shared"], router, target))
        ref = reps["shared"][key][router]
        out.append(_metric(f"{name} ({router})", ref, reps["different"][key][router], "share of tokens",
                           p["delta"] / ref * 100 if ref > 0 else None, p))
    return out


def _gap_metrics(reps: Mapping[str, dict], scores: Mapping[str, Scores], router: str) -> list[dict]:
    """The fusion gain over each set's best specialist (the chapter's bar) and the oracle gap."""
    soft, (s, d) = fused_row("soft", router), (reps["shared"], reps["different"])
    p = paired(_diff_windows(scores["shared"], soft, s["best_specialist"]),
               _diff_windows(scores["different"], soft, d["best_specialist"]))
    gs, gd = s["fusion_gain_vs_best_specialist_%"]["logits"], d["fusion_gain_vs_best_specialist_%"]["logits"]
    gain = _metric("fusion gain over best specialist (logits)", gs, gd, "% of loss", gs - gd, p,
                   note="relative_% is the drop in percentage points")
    p = paired(_diff_windows(scores["shared"], soft, ORACLE), _diff_windows(scores["different"], soft, ORACLE))
    gap = _metric("oracle gap", s["oracle_gap"][router], d["oracle_gap"][router], "nats/token",
                  p["delta"] / s["mixed"][ORACLE] * 100, p, note="relative_% is the extra gap as a share of the oracle loss")
    return [gain, gap]


def _specialist_metrics(reps: Mapping[str, dict], scores: Mapping[str, Scores]) -> list[dict]:
    s, d = reps["shared"], reps["different"]
    ece = _metric("calibration (mean ECE of the specialists)", s["mean_ece"], d["mean_ece"], "ECE",
                  (d["mean_ece"] - s["mean_ece"]) / s["mean_ece"] * 100, None)
    own = {name: {dom: domain_window_means(sc.nll[f"{dom} specialist"])[dom] for dom in DOMAINS} for name, sc in scores.items()}
    p = paired(own["shared"], own["different"])
    ref = float(np.mean(list(s["own_domain_loss"].values())))
    return [ece, _metric("specialists on their own domain", ref, float(np.mean(list(d["own_domain_loss"].values()))),
                         "nats/token", p["delta"] / ref * 100, p)]


def _degradations(reps: Mapping[str, dict], scores: Mapping[str, Scores], router: str) -> list[dict]:
    """Each metric's change from the shared-base run to the different-bases run, worse = positive,
    ranked by ``relative_%``: the change as a share of the shared-base value (for losses and the
    fusion gain a share of the loss, so those rows are on one scale). ``z`` is the change over its
    paired standard error across the same held-out windows (None without a per-window value)."""
    gain, gap = _gap_metrics(reps, scores, router)
    ece, own = _specialist_metrics(reps, scores)
    out = [*_routing_metrics(reps, scores, router),
           *(_loss_metric(f"fused loss, {kind} fusion", fused_row(KINDS[kind], router), reps, scores)
             for kind in ("logits", "probs", "hidden")),
           gain, _loss_metric("weight averaging", "weight average", reps, scores), gap, ece, own]
    return sorted(out, key=lambda m: -(m["relative_%"] if m["relative_%"] is not None else -np.inf))


def _contrasts(reps: Mapping[str, dict], scores: Mapping[str, Scores], router: str) -> list[dict]:
    """Difference-in-differences, in nats: (a - b) with different bases minus (a - b) with a shared base."""
    out = []
    for name, rows in CONTRASTS.items():
        ws, wd = (_diff_windows(scores[s], *(x.format(r=router, best=reps[s]["best_specialist"]) for x in rows))
                  for s in SETS)
        p = paired(ws, wd)
        z = _z(p)
        out.append({"contrast": name, "shared": float(np.mean([v.mean() for v in ws.values()])),
                    "different": float(np.mean([v.mean() for v in wd.values()])), "change_nats": p["delta"],
                    "se": p["se"], "z": z, "verdict": verdict(z)})
    return sorted(out, key=lambda c: -c["change_nats"])


# -- the steps of break1 ----------------------------------------------------------------------------
def seed_run(exp, seed: int):
    """The chapter's run with ``seed``: base ``seed`` and specialists trained with data seed ``seed``,
    the models ``make seeds`` already trained. Each team of the break is one such run, so Break 1
    reuses the seed runs instead of training six more specialists."""
    return exp if seed == exp.seed else Experiment(exp.profile, seed=seed)


def _bases(exp, base_seeds: Sequence[int] | None) -> tuple[list[int], dict[int, GPT]]:
    base_seeds = list(base_seeds) if base_seeds is not None else [exp.seed + i for i in range(len(DOMAINS))]
    if len(base_seeds) != len(DOMAINS):
        raise ValueError(f"give one base seed per domain ({len(DOMAINS)}), got {len(base_seeds)}")
    bases = {s: exp.base(s) for s in dict.fromkeys(base_seeds)}
    if len(bases) > 1 and len({model_fingerprint(b) for b in bases.values()}) == 1:
        raise ValueError(f"profile {exp.profile.name!r} gives the same pretrained base for every seed, so there are "
                         "no different bases to break with; run Break 1 with a profile that trains its base (ci, cpu, gpu)")
    return base_seeds, bases


def _measure(exp, base_seeds: list[int], bases: dict[int, GPT]) -> _Run:
    """Both specialist sets scored with the same three routers, and the controls."""
    k, x_seed = exp.k, base_seeds[0]
    teams = {s: seed_run(exp, s) for s in dict.fromkeys(base_seeds)}  # one Experiment per seed, shared below
    sets = {"shared": Experts(teams[x_seed].specialists(), k, shared=True),
            "different": Experts([teams[s].specialist(d) for d, s in zip(DOMAINS, base_seeds)], k, shared=False)}
    losses = {s: {d: float(v.mean()) for d, v in model_nll(b, exp.eval_sets, exp.profile.eval_batch_size).items()}
              for s, b in bases.items()}
    own_base = {"shared": {d: losses[x_seed][d] for d in DOMAINS},
                "different": {d: losses[s][d] for d, s in zip(DOMAINS, base_seeds)}}
    scores = {name: _score_set(exp, sets[name], bases[x_seed], list(FEATURES), name) for name in SETS}
    reports = {name: _setting_report(scores[name], list(FEATURES), SHARED_TRUNK, own_base[name]) for name in SETS}
    run = _Run(base_seeds, bases, losses, sets, scores, reports, {}, teams=teams)
    run.controls, run.control_scores = _controls(exp, run)
    return run


def _control(rep: dict, base_loss: Mapping[str, float]) -> dict:
    f = SHARED_TRUNK
    return {"base_mixed": float(np.mean(list(base_loss.values()))), "best_specialist_mixed": rep["best_specialist_mixed"],
            "fused_logits_mixed": rep["mixed"][fused_row("soft", f)],
            "fusion_gain_vs_best_specialist_%": rep["fusion_gain_vs_best_specialist_%"]["logits"],
            "weight_average_mixed": rep["mixed"]["weight average"], "oracle_gap": rep["oracle_gap"][f],
            "mean_routing_accuracy": rep["mean_routing_accuracy"][f],
            "mean_oracle_agreement": rep["mean_oracle_agreement"][f],
            "own_domain_gain_over_own_base_%": rep["own_domain_gain_over_own_base_%"],
            "each_specialist_wins_own_domain": rep["each_specialist_wins_own_domain"]}


def _controls(exp, run: _Run) -> tuple[dict[str, dict], dict[str, Scores]]:
    """The shared-base pipeline on every base seed (base X's is the shared set itself): each
    control's summary and its Scores (the per-window losses the paired comparison needs)."""
    controls, scores = {}, {}
    for s, b in run.bases.items():
        if s == run.base_seeds[0]:
            sc, rep = run.scores["shared"], run.reports["shared"]
        else:
            experts = Experts(run.teams[s].specialists(), exp.k, shared=True)
            sc = _score_set(exp, experts, b, [SHARED_TRUNK], f"shared base {s}")
            rep = _setting_report(sc, [SHARED_TRUNK], SHARED_TRUNK, run.base_losses[s])
        controls[str(s)], scores[str(s)] = _control(rep, run.base_losses[s]), sc
    return controls, scores


@torch.no_grad()
def _representations(exp, run: _Run) -> dict:
    """How alike are the representations? CKA and paired cosine on the first held-out windows."""
    k, bases, dev = exp.k, run.bases, resolve()
    to_device([*bases.values(), *run.sets["shared"].models, *run.sets["different"].models], dev)
    xs = to_device(token_sample(exp.eval_sets, min(8, exp.profile.eval_chunks)), dev)
    final = lambda ex: {m.manifest["domain"]: h for m, h in zip(ex.models, ex.forward(xs)[1])}  # noqa: E731
    with autocast(dev):
        states = {
            "embeddings (bases)": {f"base seed {s}": b.trunk(xs, 0) for s, b in bases.items()},
            f"trunk output at K={k} (bases)": {f"base seed {s}": b.trunk(xs, k) for s, b in bases.items()},
            "final hidden (bases)": {f"base seed {s}": b.crown_hidden(b.trunk(xs, k), k) for s, b in bases.items()},
            "final hidden (shared-base specialists)": final(run.sets["shared"]),
            "final hidden (different-base specialists)": final(run.sets["different"]),
        }
    return {name: cka_block(h) for name, h in to_host(states).items()}


def _confounds(run: _Run) -> dict:
    """Do the bases differ in quality more than fusion helps? Then the raw degradations mix both."""
    mixed = [c["base_mixed"] for c in run.controls.values()]
    spread = max(mixed) - min(mixed)
    rep = run.reports["shared"]
    effect = rep["best_specialist_mixed"] - rep["mixed"][fused_row("soft", SHARED_TRUNK)]
    return {"base_quality_spread": spread, "shared_fusion_effect": effect,
            "confounded_by_base_quality": bool(spread > abs(effect)), "controls": run.controls,
            "different_vs_controls": _vs_controls(run)}


def _vs_control(diff: Mapping[str, torch.Tensor] | None, ctrl: Mapping[str, torch.Tensor] | None,
                fused: float, ctrl_fused: float) -> dict:
    """The different-base set's fused loss minus one control's (+ = the different-base set is worse):
    on the same held-out windows a paired 95% interval decides the verdict (worse / better /
    inconclusive); without per-window losses only the point estimate is compared."""
    if diff is None or ctrl is None:
        delta = fused - ctrl_fused
        return {"control_fused_logits_mixed": ctrl_fused, "delta": delta, "se": None, "ci_low": None,
                "ci_high": None, "paired": False, "verdict": "worse" if delta > 0 else "better" if delta < 0
                else "inconclusive"}
    p = paired_interval(ctrl, diff)
    return {"control_fused_logits_mixed": ctrl_fused, "delta": p["delta"], "se": p["se"], "ci_low": p["ci_low"],
            "ci_high": p["ci_high"], "paired": True, "verdict": p["verdict"]}


def vs_controls_summary(fused: float, per_control: Mapping[str, dict], n_windows: int | None = None) -> dict:
    """One-sided: the different-base fused loss is worse than the controls only if it is worse than
    every one of them (each judged by its paired interval); better than a control never counts
    against it. The note says how many controls there are and why, from these fields."""
    ctrl = [c["control_fused_logits_mixed"] for c in per_control.values()]
    verdicts = [c["verdict"] for c in per_control.values()]
    n, worse, better = len(verdicts), verdicts.count("worse"), verdicts.count("better")
    windows = f" over the same {n_windows} held-out windows per domain" if n_windows else ""
    return {
        "different_fused_logits_mixed": fused, "controls_min": min(ctrl), "controls_max": max(ctrl),
        "n_controls": n, "control_base_seeds": [int(s) for s in per_control], "interval_z": INTERVAL_Z,
        "per_control": dict(per_control), "n_worse": worse, "n_better": better, "n_inconclusive": n - worse - better,
        "worse_than_every_control": bool(n and worse == n), "better_than_every_control": bool(n and better == n),
        "controls_note": (f"{n} control{'s' if n != 1 else ''}: the shared-base pipeline rerun on each base seed the "
                          f"break uses ({', '.join(per_control)}), one per seed, so the controls stand on the same bases "
                          "as the different-base specialists and base quality is matched; the different-base fused "
                          "loss counts as worse than the controls only if it is worse than every control, each judged "
                          f"by a paired interval (delta ± {INTERVAL_Z}·se{windows})"),
        "verdict_note": (f"worse than {worse} of {n} controls, better than {better}, inconclusive against "
                         f"{n - worse - better}: " + ("worse than every control" if n and worse == n else
                                                      "not worse than the controls (that needs worse than every one)")),
    }


def _vs_controls(run: _Run) -> dict:
    row = fused_row("soft", SHARED_TRUNK)
    fused = run.reports["different"]["mixed"][row]
    diff = domain_window_means(run.scores["different"].nll[row]) if run.scores else None
    per = {s: _vs_control(diff, domain_window_means(run.control_scores[s].nll[row]) if s in run.control_scores else None,
                          fused, c["fused_logits_mixed"]) for s, c in run.controls.items()}
    n_windows = len(next(iter(diff.values()))) if diff else None
    return vs_controls_summary(fused, per, n_windows)


def _hidden_fusion(run: _Run) -> dict:
    """With one shared base the head is shared and linear, so hidden-state fusion is logit fusion."""
    nll = run.scores["shared"].nll
    hidden, soft = fused_row("hidden", SHARED_TRUNK), fused_row("soft", SHARED_TRUNK)
    diff = max(float((nll[hidden][d] - nll[soft][d]).abs().max()) for d in DOMAINS)
    return {"hidden_vs_logit_fusion_max_diff": diff,
            "hidden_fusion_note": ("hidden-state fusion mixes the crowns' final hidden states and decodes with base "
                                   "X's head; with a shared base the head is shared and linear, so it equals logit "
                                   f"fusion (max token difference here {diff:.2e} nats)")}


def _conclusions(run: _Run, confounds: dict) -> dict:
    degr = _degradations(run.reports, run.scores, SHARED_TRUNK)
    contrasts = _contrasts(run.reports, run.scores, SHARED_TRUNK)
    significant = [m for m in degr if m["verdict"] == "worse"]
    worse_within = [c for c in contrasts if c["verdict"] == "worse"]
    headline = next(m for m in degr if m["metric"] == "fused loss, logits fusion")
    spread, effect = confounds["base_quality_spread"], confounds["shared_fusion_effect"]
    return {
        "degradations": degr,
        "what_fails_first": significant[0]["metric"] if significant else None,
        "within_set_contrasts": contrasts,
        "what_fails_first_within_set": worse_within[0]["contrast"] if worse_within else None,
        "confound_note": (f"the bases differ in quality by {spread:.3f} nats, more than the shared-base fusion "
                          f"effect ({effect:+.3f}): the raw degradations mix weaker bases with the missing shared "
                          "geometry; the within-set contrasts (in nats) are less sensitive to it"
                          if confounds["confounded_by_base_quality"] else None),
        "verdict_z_threshold": VERDICT_Z,
        "ranking_note": ("metrics ranked by their change relative to the shared-base value (units differ between "
                         f"accuracy and loss rows, so read the raw numbers too); verdict 'worse' = more than {VERDICT_Z} "
                         "paired standard errors over the held-out windows"),
        "headline_catches_it": headline["verdict"] == "worse",
        "missed_by_headline": [m["metric"] for m in significant if m["metric"] != headline["metric"]]
        if headline["verdict"] != "worse" else [],
    }


def _report(exp, run: _Run, compat_part: dict) -> dict:
    confounds = _confounds(run)
    return {
        "profile": exp.profile.name, **exp.provenance(), "seed": exp.seed, "freeze_k": exp.k,
        "base_seeds": run.base_seeds, "base_x_seed": run.base_seeds[0], "router_config": exp.profile.router,
        "seeds_note": "specialist training seeds derive from the experiment seed; each base from its own seed; "
                      "every router of the comparison uses the same init and data seed",
        "compat": compat_part, "base_losses": {str(s): v for s, v in run.base_losses.items()},
        **confounds, "shared": run.reports["shared"], "different": run.reports["different"],
        **_hidden_fusion(run), "representations": _representations(exp, run), **_conclusions(run, confounds),
    }


def break1(exp, base_seeds: Sequence[int] | None = None, tokenizer_case: bool = True, out: Path | None = None) -> dict:
    """Specialists from differently seeded bases vs the shared-base pipeline, measured side by side.

    ``base_seeds`` (default seed, seed+1, seed+2) gives one base per specialist, in DOMAINS order;
    the first is "base X". ``tokenizer_case`` adds :func:`.tokenizer_mismatch.tokenizer_mismatch`.
    Writes ``break1.json`` under ``out`` (default the run's results folder); the raw scores of both
    sets stay in ``report["_raw"]`` (not written).
    """
    t0 = time.time()
    base_seeds, bases = _bases(exp, base_seeds)
    run = _measure(exp, base_seeds, bases)
    refusal, forced = refuse_then_force(run.sets["different"].models, exp.k)  # the check refuses; we opt out
    healthy = compat.check(run.sets["shared"].models, exp.k)
    report = _report(exp, run, {"refusal": refusal, "forced_report": forced, "healthy_report": healthy})
    if tokenizer_case:
        report["tokenizer_mismatch"] = tokenizer_mismatch(exp)
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = dict(run.scores)
    return write_report(exp, report, "break1", out)


# -- readable summary (CLI and notebooks) -----------------------------------------------------------
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}%"


def _header_lines(rep: dict) -> list[str]:
    c = rep["compat"]
    bases = ", ".join(f"seed {s} {ctl['base_mixed']:.4f}" for s, ctl in rep["controls"].items())
    return [f"Break 1 — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']}, "
            f"base seeds {rep['base_seeds']} (code, medical, legal); base X = seed {rep['base_x_seed']}",
            "", "compat.check on the different-base specialists:", f"  refused: {c['refusal']}",
            f"  forced (allow_mismatch=True): mismatches = {c['forced_report']['mismatches']}",
            "", f"bases alone (mixed loss): {bases}  -> spread {rep['base_quality_spread']:.4f} nats vs the shared-base "
            f"fusion effect {rep['shared_fusion_effect']:+.4f}"
            + ("  (CONFOUNDED: bases differ in quality more than fusion helps)" if rep["confounded_by_base_quality"] else "")]


def _table_lines(rep: dict) -> list[str]:
    s, d = rep["shared"]["mixed"], rep["different"]["mixed"]
    rows = ["base", *SPECIALIST_ROWS, "weight average", "uniform mix",
            *(fused_row(rule, f) for f in FEATURES for rule in KINDS.values()), ORACLE, ORACLE_PER_TOKEN]
    w = max(map(len, rows)) + 2
    lines = ["", f"{'mixed loss (nats/token)':<{w + 2}}{'shared base':>12}{'different':>12}"]
    return lines + [f"  {row:<{w}}{s[row]:>12.4f}{d[row]:>12.4f}" for row in rows]


def _routing_lines(rep: dict) -> list[str]:
    s, d = rep["shared"], rep["different"]
    gains = lambda r: " ".join(f"{k} {v:+.2f}%" for k, v in r["own_domain_gain_over_own_base_%"].items())  # noqa: E731
    lines = ["", f"own-domain gain of each specialist over its own base: shared {gains(s)} | different {gains(d)}",
             f"each specialist wins its own domain: shared {s['each_specialist_wins_own_domain']}, "
             f"different {d['each_specialist_wins_own_domain']}", "",
             "routing (per-token router): accuracy = argmax is the own domain; agreement = argmax is the window's best specialist"]
    for f in FEATURES:
        for name, r in (("shared", s), ("different", d)):
            acc = "  ".join(f"{k} {v:.0%}" for k, v in r["routing_accuracy"][f].items())
            lines.append(f"  {f:<22} {name:<9} {acc}   agreement {r['mean_oracle_agreement'][f]:.0%}")
    return lines


def _gain_lines(rep: dict) -> list[str]:
    s, d, r = rep["shared"], rep["different"], SHARED_TRUNK
    gains = lambda x: "/".join(f"{v:+.2f}%" for k, v in x["fusion_gain_vs_best_specialist_%"].items() if k != "hard")  # noqa: E731
    return ["", f"oracle gap [{r}]: shared {s['oracle_gap'][r]:+.4f}  different {d['oracle_gap'][r]:+.4f} nats",
            f"fusion gain over best specialist (logits/probs/hidden): shared {gains(s)}  different {gains(d)}",
            f"mean ECE of specialists: shared {s['mean_ece']:.4f}  different {d['mean_ece']:.4f}; "
            f"logit-scale max/min: shared {s['logit_scale_ratio']:.3f}  different {d['logit_scale_ratio']:.3f}"]


def _control_lines(rep: dict) -> list[str]:
    lines = ["", "controls — the shared-base pipeline on each base seed:"]
    for seed, c in rep["controls"].items():
        lines.append(f"  base seed {seed}: base {c['base_mixed']:.4f}  best specialist {c['best_specialist_mixed']:.4f}  "
                     f"fused {c['fused_logits_mixed']:.4f} ({c['fusion_gain_vs_best_specialist_%']:+.2f}% vs best)  "
                     f"weight avg {c['weight_average_mixed']:.4f}  routing acc {c['mean_routing_accuracy']:.0%}")
    dv = rep["different_vs_controls"]
    lines.append(f"  different bases: fused {dv['different_fused_logits_mixed']:.4f}; controls span "
                 f"{dv['controls_min']:.4f}..{dv['controls_max']:.4f}")
    for seed, c in dv["per_control"].items():
        ci = f"  95% [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]" if c["paired"] else "  (no per-window losses)"
        lines.append(f"    minus control seed {seed}: {c['delta']:+.4f} nats{ci}  [{c['verdict']}]")
    lines += [f"  {dv['controls_note']}", f"  -> {dv['verdict_note']}"]
    lines += ["", "representations (mean over pairs): linear CKA / cosine of raw coordinates, token by token"]
    for name, blk in rep["representations"].items():
        lines.append(f"  {name:<44} CKA {blk['mean_cka']:.3f}   cosine {blk['mean_paired_cosine']:+.3f}")
    return lines


def _degradation_lines(rep: dict) -> list[str]:
    z = lambda m: "" if m["z"] is None else f"  z={m['z']:+.1f}"  # noqa: E731
    lines = ["", "degradation, different bases vs shared base (ranked by relative change; + = worse):"]
    lines += [f"  {m['metric']:<46} {m['shared']:.4f} -> {m['different']:.4f}  {_pct(m['relative_%'])}{z(m)}  "
              f"[{m['verdict']}]" for m in rep["degradations"]]
    lines += [f"what fails first (ranked above): {rep['what_fails_first'] or 'nothing degrades significantly'}", "",
              "within-set contrasts, nats (different minus shared; each compares two ways of combining the same "
              "specialists, so base quality matters less):"]
    lines += [f"  {c['contrast']:<54} {c['shared']:+.4f} -> {c['different']:+.4f}  change {c['change_nats']:+.4f}"
              f"{z(c)}  [{c['verdict']}]" for c in rep["within_set_contrasts"]]
    lines.append(f"what fails first (within-set, nats): {rep['what_fails_first_within_set'] or 'nothing degrades significantly'}")
    if rep.get("confound_note"):
        lines.append(f"caution: {rep['confound_note']}")
    missed = f"; missed by the headline: {', '.join(rep['missed_by_headline'])}" if rep["missed_by_headline"] else ""
    return lines + [f"headline (fused soft, mixed) catches it: {rep['headline_catches_it']}{missed}",
                    rep["hidden_fusion_note"]]


def summarize(rep: dict) -> str:
    """Break 1's report as text (what ``python -m minigpt break1`` prints)."""
    lines = [*_header_lines(rep), *_table_lines(rep), *_routing_lines(rep), *_gain_lines(rep), *_control_lines(rep),
             *_degradation_lines(rep)]
    if rep.get("tokenizer_mismatch"):
        lines += ["", *tokenizer_summary_lines(rep["tokenizer_mismatch"])]
    return "\n".join(lines)


def fusion_verdict(rep: dict) -> dict:
    """Does logit fusion survive different bases? Read off a :func:`break1` report.

    ``beats_best``: with different bases, logit fusion still beats its own best specialist.
    ``worse_than_controls``: its mixed loss is worse (higher) than every shared-base control on the
    same bases, each judged by a paired 95% interval (one-sided: being better than a control never
    counts against it). ``verdict`` is ``"survives"`` (beats its best specialist and is not worse
    than the controls), ``"not worse than the controls"`` (only the second) or ``"degrades"``.
    ``per_control``: the verdict against each control (base seed -> worse / better / inconclusive).
    ``bites``: within-set contrasts that get significantly worse, largest change first.
    """
    c = {x["contrast"]: x for x in rep["within_set_contrasts"]}
    dv = rep["different_vs_controls"]
    behind = c["fused logits minus best specialist"]["different"]  # < 0: fusion beats its best specialist
    beats, worse = behind < 0, dv["worse_than_every_control"]
    return {"beats_best": bool(beats), "behind_best_nats": float(behind), "worse_than_controls": bool(worse),
            "better_than_controls": bool(dv["better_than_every_control"]), "n_controls": dv["n_controls"],
            "per_control": {s: x["verdict"] for s, x in dv["per_control"].items()},
            "fused": dv["different_fused_logits_mixed"], "controls": (dv["controls_min"], dv["controls_max"]),
            "verdict": "survives" if beats and not worse else "not worse than the controls" if not worse else "degrades",
            "bites": [(x["contrast"], x["change_nats"]) for x in rep["within_set_contrasts"] if x["verdict"] == "worse"]}

"""Break 2 of Chapter 32: a router that collapses onto one expert, and when the headline hides it.

The router's training data is skewed step by step toward code (balanced ... 98/1/1) at two target
temperatures, the profile's and a near-zero one, and every router is scored on the same held-out
windows. Two expert sets go through the same curve:

* ``specialists``: the three specialists, as the chapter trains them;
* ``generalist``: the same set with the code slot held by a strong generalist (the monolithic
  crown: same base and trunk, mixed data, three times the steps), the kind of dominant expert the
  chapter's silent-collapse story needs: one that is good on every domain, not only its own.

What counts as "the headline stayed calm" is measured, not fixed: the healthy router is retrained
with :data:`BAND_REPLICATES` seeds of its own, and its headline's mean ± 2 sd is the *band*, what
retraining the router alone moves. A point of the curve shows a *collapse sign* when some domain's
routing accuracy drops by :data:`ROUTING_DROP_PP` points or more from the healthy router, or the
dominant expert takes :data:`DOMINANT_SHARE` or more of the weight on the other domains' windows.
Its status (:func:`status`): ``silent`` (a sign, and the headline not above the band), ``loud`` (a
sign, the headline above the band), ``healthy`` (no sign, not above) or ``worse`` (no sign, above).
Only a headline above the band raises an alarm; one that improves hides a collapse too. The
*precondition* of a silent collapse is read off each set: how far the dominant expert alone is from
the healthy fused model, next to the band's width.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..analysis.routing import collapse_signs
from ..config import DOMAINS, RouterConfig, derive_seed
from ..evaluate import SPECIALIST_ROWS, loss_table, routing_accuracy, table_json
from ..fusion import FusedModel
from ..intervals import versus
from ..router import mean_max_target
from ..scoring import ScoreRequest, fused_row, per_window_losses, score
from ..streams import random_windows
from .common import write_report

# the router's training mix, code share first, from balanced to nearly all code
COLLAPSE_MIXES = ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (0.9, 0.05, 0.05),
                  (0.95, 0.025, 0.025), (0.98, 0.01, 0.01))
COLD_TEMP = 1e-3  # beside the profile's temperature: targets that are one-hot in practice
BAND_REPLICATES = 5  # seeds of the healthy router whose headline spread is the band
BAND_SD = 2.0  # the band is mean ± BAND_SD standard deviations of those seeds' headline
ROUTING_DROP_PP = 20.0  # a domain's routing accuracy this many points below the healthy router's: a collapse sign
DOMINANT_SHARE = 0.5  # the dominant expert's mean weight on other domains' windows at or above this: a sign
TARGET_WINDOWS = 64  # router-split windows per domain on which the targets' sharpness is measured
GENERALIST = "generalist (monolithic crown)"
SETS = ("specialists", "generalist")
STATUSES = ("healthy", "silent", "loud", "worse")


def setting_name(cfg: RouterConfig) -> str:
    """A router config's name in the curve and in the scored rows: ``mix=0.90/0.05/0.05 temp=0.001``."""
    return f"mix={'/'.join(f'{m:.2f}' for m in cfg.domain_mix)} temp={cfg.temp:g}"


def band_name(replicate: int) -> str:
    return f"healthy #{replicate}"


def expert_sets(exp) -> dict[str, tuple[list, list[str]]]:
    """The two expert sets as (models, names): the specialists, and the generalist in code's slot."""
    specs = exp.specialists()
    return {"specialists": (specs, list(SPECIALIST_ROWS)),
            "generalist": ([exp.monolithic(), *specs[1:]], [GENERALIST, *SPECIALIST_ROWS[1:]])}


def curve_configs(healthy: RouterConfig, mixes: Sequence[Sequence[float]] = COLLAPSE_MIXES,
                  temps: Sequence[float] | None = None) -> dict[str, RouterConfig]:
    """Every point of the collapse curve as {name: RouterConfig}: ``mixes`` x (the profile's temperature,
    :data:`COLD_TEMP`), in that order."""
    temps = temps or (healthy.temp, COLD_TEMP)
    return {setting_name(c): c for t in temps for m in mixes for c in [replace(healthy, domain_mix=tuple(m), temp=t)]}


def status(drop_pp: float, dominant_elsewhere: float, above_band: bool) -> str:
    """``silent`` / ``loud`` / ``healthy`` / ``worse`` from a point's largest routing drop (points), the
    dominant expert's weight on the other domains' windows, and whether the headline rose above the band.
    Only a headline *worse* than the band raises an alarm: one that improves, as it can when the expert a
    router collapses onto is a strong generalist, hides the collapse as well as one that does not move."""
    sign = drop_pp >= ROUTING_DROP_PP or dominant_elsewhere >= DOMINANT_SHARE
    if sign:
        return "loud" if above_band else "silent"
    return "worse" if above_band else "healthy"


# -- measuring one expert set ------------------------------------------------------------------------
def _routers(exp, models: list, curve: Mapping[str, RouterConfig], replicates: int) -> dict:
    """The band's routers (the healthy config, ``replicates`` seeds) and every curve point's router."""
    healthy = exp.profile.router
    routers = {band_name(r): exp.router("per_token", healthy, experts=models, replicate=r) for r in range(replicates)}
    routers.update({name: exp.router("per_token", cfg, experts=models) for name, cfg in curve.items()})
    return routers


def _band(mixed: Mapping[str, float], replicates: int) -> dict:
    """The healthy router's headline over its seeds: mean, sd and the band mean ± BAND_SD·sd."""
    values = [mixed[fused_row("soft", band_name(r))] for r in range(replicates)]
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"replicates": replicates, "mixed": values, "mean": mean, "sd": sd, "sd_multiple": BAND_SD,
            "low": mean - BAND_SD * sd, "high": mean + BAND_SD * sd}


def _point(w: Mapping[str, torch.Tensor], mixed: float, iv: Mapping, cfg: RouterConfig, healthy_acc: Mapping,
           band: Mapping) -> dict:
    """One curve point: the collapse diagnostics, the headline and its interval, the point's status."""
    signs = collapse_signs(w, healthy_acc)
    above = bool(mixed > band["high"])
    return {"domain_mix": list(cfg.domain_mix), "temp": cfg.temp, "mixed_loss": mixed, "vs_healthy_nats": iv,
            "inside_band": bool(band["low"] <= mixed <= band["high"]), "above_band": above, **signs,
            "status": status(signs["largest_routing_drop_pp"], signs["dominant_weight_elsewhere"], above)}


def _precondition(table, names: Sequence[str], healthy_row: str, band: Mapping, iv: Mapping) -> dict:
    """How far the dominant (code-slot) expert alone is from the healthy fused model, against the band's
    half-width: the margin a full collapse onto it would cost."""
    alone = float(table.loc[names[0], "mixed"])
    healthy = float(table.loc[healthy_row, "mixed"])
    own = {d: float(table.loc[n, d]) for d, n in zip(DOMAINS, names)}
    off = {n: float(np.mean([table.loc[n, d] - own[d] for d in DOMAINS if d != DOMAINS[i]])) for i, n in enumerate(names)}
    half = band["high"] - band["mean"]
    return {"dominant_expert": names[0], "dominant_alone_mixed": alone, "healthy_mixed": healthy,
            "dominant_alone_minus_healthy_nats": iv, "band_half_width_nats": half,
            "margin_over_band": (alone - healthy) / half if half > 0 else None,
            "collapse_can_be_silent": bool(alone <= band["high"]),
            "off_domain_penalty_nats": off}


def measure_set(exp, models: list, names: Sequence[str], curve: Mapping[str, RouterConfig],
                replicates: int = BAND_REPLICATES) -> tuple[dict, dict]:
    """Band, curve and precondition of one expert set; also returns the routers' weights for plots."""
    routers = _routers(exp, models, curve, replicates)
    scores = score(ScoreRequest(windows=exp.study_sets, experts=FusedModel(models, exp.k), routers=routers,
                                base=exp.base(), batch_size=exp.profile.eval_batch_size, names=list(names)))
    table = loss_table(scores.nll)
    mixed = table["mixed"]
    band = _band(mixed, replicates)
    healthy_row = fused_row("soft", band_name(0))
    rows = [fused_row("soft", n) for n in curve] + [names[0]]
    ivs = versus(scores.nll, rows, healthy_row, unit="nats")
    healthy_acc = routing_accuracy(scores.weights[band_name(0)])
    points = {n: _point(scores.weights[n], float(mixed[fused_row("soft", n)]), ivs[fused_row("soft", n)], cfg=cfg,
                        healthy_acc=healthy_acc, band=band) for n, cfg in curve.items()}
    rep = {"experts": list(names), "band": band, "healthy_mixed": float(mixed[healthy_row]),
           "healthy_routing_accuracy": healthy_acc, "points": points,
           "precondition": _precondition(table, names, healthy_row, band=band, iv=ivs[names[0]]),
           "table": table_json(table)}
    for s in STATUSES:
        rep[s] = [n for n, p in points.items() if p["status"] == s]
    return rep, {n: scores.weights[n] for n in curve}


# -- what the temperatures mean here ---------------------------------------------------------------
@torch.no_grad()
def window_losses(exp, models: Sequence, per_domain: int = TARGET_WINDOWS) -> dict[str, torch.Tensor]:
    """Each expert's mean loss on ``per_domain`` random windows of each domain's router split (the
    same windows for any ``models``): ``{domain: (n, N)}``, what performance targets are made from."""
    gen = torch.Generator().manual_seed(derive_seed(exp.seed, "break2-targets"))
    fused, T, bs = FusedModel(models, exp.k), exp.profile.model.block_size, exp.profile.eval_batch_size
    out = {}
    for d in DOMAINS:
        x, y = random_windows(exp.streams.get(d, "router"), per_domain, T, gen)
        out[d] = per_window_losses(fused, x, y, bs)
    return out


def target_sharpness(losses: Mapping[str, torch.Tensor], temps: Sequence[float]) -> dict[str, dict]:
    """Per temperature (keyed ``f"{temp:g}"``): the mean target weight on each window's best expert,
    ``softmax(-loss / temp).max()``, per domain and as the equal-weight mean over domains."""
    out = {}
    for t in temps:
        per = {d: mean_max_target(v, t) for d, v in losses.items()}
        out[f"{t:g}"] = {"mean_max_target": float(np.mean(list(per.values()))), "per_domain": per}
    return out


def own_margin(losses: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per domain, in nats over the router windows: how much worse the other specialists are than
    the window's own one (their mean, and the best of them)."""
    out = {}
    for i, d in enumerate(DOMAINS):
        v = losses[d][:, :len(DOMAINS)].double()
        others = v[:, [j for j in range(len(DOMAINS)) if j != i]]
        out[d] = {"mean_other_minus_own": float((others.mean(-1) - v[:, i]).mean()),
                  "best_other_minus_own": float((others.min(-1).values - v[:, i]).mean())}
    return out


def break2(exp, mixes: Sequence[Sequence[float]] = COLLAPSE_MIXES, temps: Sequence[float] | None = None,
           replicates: int = BAND_REPLICATES, out: Path | None = None) -> dict:
    """The collapse curve (``mixes`` x ``temps``, default the profile's temperature and
    :data:`COLD_TEMP`) on both expert sets, each with its band and precondition. Writes
    ``break2.json``; ``_raw`` keeps the routers' weights for plots."""
    t0 = time.time()
    curve = curve_configs(exp.profile.router, mixes, temps)
    sets, weights = {}, {}
    for name, (models, names) in expert_sets(exp).items():
        sets[name], weights[name] = measure_set(exp, models, names, curve=curve, replicates=replicates)
    losses = window_losses(exp, exp.specialists())
    temps_used = sorted({c.temp for c in curve.values()}, reverse=True)
    report = {"profile": exp.profile.name, **exp.provenance(), "seed": exp.seed, "freeze_k": exp.k,
              "router_kind": "per_token", "healthy_config": exp.profile.router, "healthy_temp": exp.profile.router.temp,
              "healthy_setting": setting_name(exp.profile.router), "rules": rules(), "sets": sets,
              "target_sharpness": target_sharpness(losses, temps_used), "target_windows_per_domain": TARGET_WINDOWS,
              "own_specialist_margin_nats": own_margin(losses), "wall_seconds": round(time.time() - t0, 1)}
    report["_raw"] = {"weights": weights}
    return write_report(exp, report, "break2", out)


def rules() -> dict:
    """The thresholds every status was decided with, as the report records them."""
    return {"band": f"healthy router's headline over {BAND_REPLICATES} router seeds, mean ± {BAND_SD:g} sd",
            "routing_drop_pp": ROUTING_DROP_PP, "dominant_share": DOMINANT_SHARE,
            "silent": "a collapse sign, and the headline not above the band (inside it, or better)",
            "loud": "a collapse sign, and the headline above the band",
            "worse": "no collapse sign, but the headline above the band",
            "healthy": "no collapse sign, and the headline not above the band"}


def summarize(rep: dict) -> str:
    """A :func:`break2` report as text (the CLI's output)."""
    lines = [f"Break 2 — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']}, per-token router; "
             f"band = {rep['rules']['band']}"]
    for name, s in rep["sets"].items():
        b, pre = s["band"], s["precondition"]
        lines += ["", f"[{name}] experts: {', '.join(s['experts'])}",
                  f"  healthy {s['healthy_mixed']:.4f}; band {b['low']:.4f}..{b['high']:.4f} (sd {b['sd']:.4f})",
                  f"  {pre['dominant_expert']} alone {pre['dominant_alone_mixed']:.4f} "
                  f"({pre['dominant_alone_minus_healthy_nats']['estimate']:+.4f} nats from healthy): a full collapse "
                  f"onto it {'could' if pre['collapse_can_be_silent'] else 'could not'} stay inside the band",
                  f"  {'point':<34}{'mixed':>8}{'vs healthy [95%]':>28}{'worst drop':>12}{'dominant elsewhere':>20}  status"]
        for n, p in s["points"].items():
            iv = p["vs_healthy_nats"]
            lines.append(f"  {n:<34}{p['mixed_loss']:>8.4f}   {iv['estimate']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}]"
                         f"{p['largest_routing_drop_pp']:>10.1f}pp{p['dominant_weight_elsewhere']:>20.2f}  {p['status']}")
        lines.append(f"  silent: {', '.join(s['silent']) or 'none'}; loud: {', '.join(s['loud']) or 'none'}")
    sh = rep["target_sharpness"]
    lines += ["", "target temperature -> mean target weight on a window's best specialist: "
              + ", ".join(f"{t}: {v['mean_max_target']:.2f}" for t, v in sh.items())]
    return "\n".join(lines)

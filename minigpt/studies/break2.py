"""Break 2 of Chapter 32: routers that collapse without the mixed loss noticing.

Per-token routers are trained on skewed data (one domain dominates the router split's batches)
and/or with a near-zero target temperature (performance targets close to one-hot), on a grid of
``mixes`` x ``temps`` that includes four named settings: healthy, imbalanced, cold and both. Every
router is scored on the same held-out windows by :func:`minigpt.scoring.score`. A setting is a
*silent collapse* when its mixed loss stays within ``tolerance_pct`` % of the healthy router's
while some domain's routing accuracy drops below 50%: the headline number would not show it.
Settings are fixed up front; the conclusions are computed from the measurements.

Beside the cold temperatures the grid has soft ones (targets far from one-hot), and the report says
what each temperature means here: ``target_sharpness``, the mean target weight on a window's best
specialist, from the specialists' losses on random windows of the router split.

The silent-collapse mechanism needs an expert that is a strong generalist. :func:`generalist`
adds one, the monolithic crown (same base, same K, mixed data), as a fourth expert beside the three
specialists and trains 4-output per-token routers under the healthy, imbalanced, cold and soft
settings; its report is ``break2.json``'s ``generalist`` field.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..analysis.routing import (confusion_matrix, dominant_weight, gate_histograms, mean_weights, misrouting,
                                weight_on)
from ..checkpoint import model_fingerprint
from ..config import DOMAINS, RouterConfig, derive_seed
from ..evaluate import SPECIALIST_ROWS, loss_table, routing_accuracy, table_json
from ..fusion import FusedModel
from ..router import make_router, mean_max_target, performance_targets
from ..scoring import Experts, Scores, fused_row, per_window_losses, score
from ..streams import random_windows
from .common import write_report

DEFAULT_MIXES = ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.9, 0.05, 0.05), (0.98, 0.01, 0.01))
# None = the profile's temperature; then two cold ones (near one-hot targets) and three soft ones
DEFAULT_TEMPS = (None, 0.01, 1e-3, 0.3, 1.0, 3.0)
GENERALIST_ROW = "generalist (monolithic crown)"
TARGET_WINDOWS = 64  # router-split windows per domain on which the targets' sharpness is measured


def setting_name(cfg: RouterConfig) -> str:
    """A router config's name in the grid and in the scored rows: ``mix=0.90/0.05/0.05 temp=0.001``."""
    return f"mix={'/'.join(f'{m:.2f}' for m in cfg.domain_mix)} temp={cfg.temp:g}"


@dataclass
class _Reference:
    """What every setting is measured against: the healthy router and the tolerance on the mixed loss."""

    mixed: float
    accuracy: dict[str, float]
    tolerance_pct: float
    spec_nll: dict[str, torch.Tensor]  # {domain: (N, n, T)}, for the misrouting diagnostics
    sharpness: dict[str, dict]  # target_sharpness at every temperature of the grid


def _grid_configs(healthy: RouterConfig, mixes: Sequence[Sequence[float]], temps: Sequence[float | None],
                  imbalance: Sequence[float], cold_temp: float) -> tuple[dict, dict]:
    """The four named settings and the whole grid (``mixes`` x ``temps`` plus any named setting
    not already in it), both as {name: RouterConfig}."""
    named = {"healthy": healthy, "imbalanced": replace(healthy, domain_mix=tuple(imbalance)),
             "cold": replace(healthy, temp=cold_temp),
             "imbalanced + cold": replace(healthy, domain_mix=tuple(imbalance), temp=cold_temp)}
    grid = {}
    for mix in mixes:
        for temp in temps:
            cfg = replace(healthy, domain_mix=tuple(mix), temp=healthy.temp if temp is None else temp)
            grid[setting_name(cfg)] = cfg
    for cfg in named.values():
        grid.setdefault(setting_name(cfg), cfg)
    return named, grid


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


def _describe(w: Mapping[str, torch.Tensor], table: pd.DataFrame, name: str, cfg: RouterConfig,
              ref: _Reference, full: bool) -> dict:
    """One setting's numbers from its weights ``w`` ({domain: (n, T, N)}) and the loss table;
    ``full`` adds the confusion matrix, mean weights, gate histograms and misrouting."""
    mw = mean_weights(w)
    overall = int(np.argmax(mw.values.mean(0)))  # the specialist with the most weight overall
    row = fused_row("soft", name)
    mixed = float(table.loc[row, "mixed"])
    acc = routing_accuracy(w)
    on_dominant = weight_on(w, overall)
    d = {"domain_mix": list(cfg.domain_mix), "temp": cfg.temp, "mixed_loss": mixed,
         "per_domain_loss": {dm: float(table.loc[row, dm]) for dm in DOMAINS},
         "mixed_vs_healthy_%": (mixed - ref.mixed) / ref.mixed * 100,
         "routing_accuracy": acc, "min_routing_accuracy": min(acc.values()),
         "dominant_specialist": SPECIALIST_ROWS[overall],
         "weight_on_dominant": on_dominant,
         "weight_on_dominant_other_domains": float(np.mean([v for dm, v in on_dominant.items()
                                                            if dm != DOMAINS[overall]])),
         "mean_max_weight": float(torch.cat([x.max(-1).values.flatten() for x in w.values()]).double().mean()),
         "mean_max_target": ref.sharpness[f"{cfg.temp:g}"]["mean_max_target"]}
    d["silent_collapse"] = bool(abs(d["mixed_vs_healthy_%"]) <= ref.tolerance_pct and d["min_routing_accuracy"] < 0.5)
    d["newly_below_50"] = [dm for dm in DOMAINS if acc[dm] < 0.5 <= ref.accuracy[dm]]
    if full:
        d.update(confusion=table_json(confusion_matrix(w)), mean_weights=table_json(mw),
                 dominant_per_domain=dominant_weight(w), gate_histograms=gate_histograms(w),
                 misrouting=misrouting(w, ref.spec_nll))
    return d


def _report(exp, table: pd.DataFrame, ref: _Reference, healthy_name: str, settings: dict, grid: dict) -> dict:
    """The JSON-ready Break 2 report from the described settings and the grid."""
    best_spec = float(table.loc[list(SPECIALIST_ROWS), "mixed"].min())
    gain = (best_spec - ref.mixed) / best_spec * 100
    ratio = ref.tolerance_pct / max(abs(gain), 1e-9)
    return {
        "profile": exp.profile.name, **exp.provenance(), "seed": exp.seed, "freeze_k": exp.k,
        "router_kind": "per_token",
        "router_seed_note": "router data/init seeds derive from the experiment seed (same for every setting)",
        "healthy_config": exp.profile.router, "healthy_setting": healthy_name, "tolerance_pct": ref.tolerance_pct,
        "healthy_mixed": ref.mixed, "healthy_routing_accuracy": ref.accuracy,
        "best_specialist_mixed": best_spec, "base_mixed": float(table.loc["base", "mixed"]),
        "fusion_gain_over_best_specialist_%": gain,
        "tolerance_vs_gain_ratio": ratio,
        "tolerance_note": (f"a {ref.tolerance_pct}% window on the mixed loss is {ratio:.1f}x the healthy "
                           "router's whole gain over the best specialist"),
        "settings": settings, "grid": grid,
        "silent_collapse": [n for n, g in grid.items() if g["silent_collapse"] and n != healthy_name],
        "silent_collapse_newly_below_50": [n for n, g in grid.items() if g["silent_collapse"] and g["newly_below_50"]],
        "healthy_already_below_50": [d for d in DOMAINS if ref.accuracy[d] < 0.5],
        "table": table_json(table),
    }


def break2(exp, mixes: Sequence[Sequence[float]] = DEFAULT_MIXES, temps: Sequence[float | None] = DEFAULT_TEMPS,
           imbalance: Sequence[float] = (0.9, 0.05, 0.05), cold_temp: float = 1e-3, soft_temp: float = 1.0,
           tolerance_pct: float = 2.0, out: Path | None = None) -> dict:
    """Per-token routers trained on skewed data and/or with a near-zero target temperature.

    The four named settings (healthy, imbalanced, cold, both) are part of the grid ``mixes`` x
    ``temps`` (a temperature of None is the profile's). ``silent_collapse`` lists grid settings whose
    mixed loss stays within ``tolerance_pct`` % of the healthy router's while some domain's routing
    accuracy is < 50%. ``target_sharpness`` says how close to one-hot each temperature's targets
    are; ``generalist`` is :func:`generalist`'s report (``soft_temp`` is its soft setting). Writes
    ``break2.json``; ``_raw`` keeps the weights and token losses for plots.
    """
    t0 = time.time()
    p = exp.profile
    named, grid = _grid_configs(p.router, mixes, temps, imbalance, cold_temp)
    routers = {name: exp.router("per_token", cfg) for name, cfg in grid.items()}
    scores: Scores = score(exp.eval_sets, Experts(exp.specialists(), exp.k), routers, base=exp.base(),
                           batch_size=p.eval_batch_size)
    table = loss_table(scores.nll)
    h_name = setting_name(p.router)
    losses = window_losses(exp, exp.specialists())
    ref = _Reference(mixed=float(table.loc[fused_row("soft", h_name), "mixed"]),
                     accuracy=routing_accuracy(scores.weights[h_name]), tolerance_pct=tolerance_pct,
                     spec_nll={d: scores.spec_nll(d) for d in DOMAINS},
                     sharpness=target_sharpness(losses, sorted({c.temp for c in grid.values()}, reverse=True)))
    settings = {name: _describe(scores.weights[setting_name(cfg)], table, setting_name(cfg), cfg, ref, True)
                for name, cfg in named.items()}
    grid_rep = {name: _describe(scores.weights[name], table, name, cfg, ref, False) for name, cfg in grid.items()}
    report = _report(exp, table, ref, h_name, settings, grid_rep)
    report.update(target_sharpness=ref.sharpness, target_windows_per_domain=TARGET_WINDOWS,
                  own_specialist_margin_nats=own_margin(losses))
    report["generalist"], gen_weights = generalist(exp, imbalance, cold_temp, soft_temp, tolerance_pct)
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = {"weights": scores.weights, "nll": scores.nll, "generalist_weights": gen_weights,
                      "names": {n: setting_name(c) for n, c in named.items()}}
    return write_report(exp, report, "break2", out)


# -- the silent-collapse precondition: a strong generalist among the experts ----------------------
def _generalist_router(exp, models: Sequence, cfg: RouterConfig):
    """A per-token router with one output per model of ``models`` (specialists + generalist), cached
    by their fingerprints and ``cfg``; it draws the same training batches as Break 2's routers."""
    return exp.train_or_load_router(
        lambda: make_router("per_token", exp.profile.model.n_embd, len(models), cfg),
        ["generalist", "seeded-init", cfg, [model_fingerprint(m) for m in models], exp.k],
        ("generalist-router-init", exp.k), ("router", "per_token"), FusedModel(models, exp.k).expert_logits, cfg,
        f"router [{len(models)} experts]", list(models), ["trunk", exp.k])


def _describe_generalist(w: Mapping[str, torch.Tensor], table: pd.DataFrame, name: str, cfg: RouterConfig,
                         healthy: dict, tolerance_pct: float, names: Sequence[str]) -> dict:
    """One 4-expert setting: losses, own-specialist routing accuracy, where the weight goes."""
    row, g = fused_row("soft", name), len(DOMAINS)  # the generalist is the expert after the specialists
    mixed = float(table.loc[row, "mixed"])
    acc = routing_accuracy(w)  # argmax = the window's own specialist; the generalist counts as a miss
    d = {"domain_mix": list(cfg.domain_mix), "temp": cfg.temp, "mixed_loss": mixed,
         "per_domain_loss": {dm: float(table.loc[row, dm]) for dm in DOMAINS},
         "mixed_vs_healthy_%": (mixed - healthy["mixed"]) / healthy["mixed"] * 100,
         "routing_accuracy": acc, "min_routing_accuracy": min(acc.values()),
         "weight_on_generalist": weight_on(w, g),
         "argmax_on_generalist": {dm: float((x.argmax(-1) == g).double().mean()) for dm, x in w.items()},
         "mean_weights": table_json(mean_weights(w, names))}
    d["silent_collapse"] = bool(abs(d["mixed_vs_healthy_%"]) <= tolerance_pct and d["min_routing_accuracy"] < 0.5)
    d["newly_below_50"] = [dm for dm in DOMAINS if acc[dm] < 0.5 <= healthy["accuracy"][dm]]
    return d


def _precondition(table: pd.DataFrame, healthy_mixed: float, tolerance_pct: float) -> dict:
    """Is the generalist alone within the tolerance of the healthy router, and how far off their own
    domains are the specialists (what a collapse onto one of them would cost)?"""
    alone = float(table.loc[GENERALIST_ROW, "mixed"])
    own = {d: float(table.loc[f"{d} specialist", d]) for d in DOMAINS}
    off = {r: float(np.mean([table.loc[r, d] - own[d] for d in DOMAINS if d != r.split()[0]])) for r in SPECIALIST_ROWS}
    vs = (alone - healthy_mixed) / healthy_mixed * 100
    return {"generalist_alone_mixed": alone, "generalist_alone_vs_healthy_%": vs,
            "precondition_holds": bool(abs(vs) <= tolerance_pct),
            "generalist_minus_own_specialist_nats": {d: float(table.loc[GENERALIST_ROW, d]) - own[d] for d in DOMAINS},
            "specialist_off_domain_penalty_nats": off}


def generalist(exp, imbalance: Sequence[float] = (0.9, 0.05, 0.05), cold_temp: float = 1e-3, soft_temp: float = 1.0,
               tolerance_pct: float = 2.0) -> tuple[dict, dict]:
    """The three specialists plus a generalist (the monolithic crown) as a fourth expert, with per-token
    routers trained healthy, on imbalanced data, with cold targets and with soft targets (which give the
    generalist, second-best on every domain, a share of every target). Returns the report (silent
    collapse by Break 2's rule, against this healthy 4-expert router) and the routers' weights."""
    p = exp.profile
    models, names = exp.specialists() + [exp.monolithic()], (*SPECIALIST_ROWS, GENERALIST_ROW)
    cfgs = {"healthy": p.router, "imbalanced": replace(p.router, domain_mix=tuple(imbalance)),
            "cold": replace(p.router, temp=cold_temp), "soft": replace(p.router, temp=soft_temp)}
    routers = {f"4 experts, {n}": _generalist_router(exp, models, c) for n, c in cfgs.items()}
    scores = score(exp.eval_sets, Experts(models, exp.k), routers, base=exp.base(), batch_size=p.eval_batch_size,
                   names=names)
    table = loss_table(scores.nll)
    w = {n: scores.weights[f"4 experts, {n}"] for n in cfgs}
    healthy = {"mixed": float(table.loc[fused_row("soft", "4 experts, healthy"), "mixed"]),
               "accuracy": routing_accuracy(w["healthy"])}
    settings = {n: _describe_generalist(w[n], table, f"4 experts, {n}", c, healthy, tolerance_pct, names)
                for n, c in cfgs.items()}
    losses = window_losses(exp, models)
    g = len(DOMAINS)
    targets = {n: {d: float(performance_targets(v, c.temp)[:, g].double().mean()) for d, v in losses.items()}
               for n, c in cfgs.items()}
    rep = {"experts": list(names), "router_names": list(routers), "tolerance_pct": tolerance_pct,
           "healthy_mixed": healthy["mixed"], "healthy_routing_accuracy": healthy["accuracy"],
           **_precondition(table, healthy["mixed"], tolerance_pct),
           "generalist_best_window_share": {d: float((v.argmin(-1) == g).double().mean()) for d, v in losses.items()},
           "target_weight_on_generalist": targets, "settings": settings,
           "silent_collapse": [n for n, st in settings.items() if st["silent_collapse"] and n != "healthy"],
           "silent_collapse_newly_below_50": [n for n, st in settings.items()
                                              if st["silent_collapse"] and st["newly_below_50"]],
           "healthy_already_below_50": [d for d in DOMAINS if healthy["accuracy"][d] < 0.5],
           "table": table_json(table)}
    return rep, w


def summarize(rep: dict) -> str:
    """A :func:`break2` report as text (the CLI's output)."""
    lines = [f"Break 2 — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']}, per-token router",
             f"healthy router: mixed {rep['healthy_mixed']:.4f}; best specialist {rep['best_specialist_mixed']:.4f}; "
             f"base {rep['base_mixed']:.4f}", ""]
    lines.append(f"  {'setting':<18}{'mix':<16}{'temp':>7}{'mixed':>9}{'vs healthy':>11}  routing accuracy "
                 "(code/medical/legal)   mean max weight   dominant: weight on it, other domains")
    for name, st in rep["settings"].items():
        acc = "/".join(f"{v:.0%}" for v in st["routing_accuracy"].values())
        lines.append(f"  {name:<18}{'/'.join(f'{m:.2f}' for m in st['domain_mix']):<16}{st['temp']:>7g}"
                     f"{st['mixed_loss']:>9.4f}{st['mixed_vs_healthy_%']:>+10.2f}%  {acc:<34}"
                     f"{st['mean_max_weight']:>8.2f}          "
                     f"{st['dominant_specialist']}: {st['weight_on_dominant_other_domains']:.2f}")
    lines += ["", f"grid ({len(rep['grid'])} routers): mixed loss within {rep['tolerance_pct']}% of healthy while "
                  "some domain's routing accuracy < 50%:"]
    for name, g in rep["grid"].items():
        flag = "(healthy)" if name == rep["healthy_setting"] else "SILENT" if g["silent_collapse"] else ""
        lines.append(f"  {name:<34} mixed {g['mixed_loss']:.4f} ({g['mixed_vs_healthy_%']:+.2f}%)  "
                     f"min acc {g['min_routing_accuracy']:.0%}  weight on {g['dominant_specialist']} elsewhere "
                     f"{g['weight_on_dominant_other_domains']:.2f}  {flag}")
    lines.append(f"settings that qualify: {rep['silent_collapse'] or 'none'}")
    if rep["healthy_already_below_50"]:
        lines.append(f"note: the healthy router is already below 50% on {rep['healthy_already_below_50']}; "
                     f"settings that push a domain the healthy router gets right below 50% while the loss stays "
                     f"within tolerance: {rep['silent_collapse_newly_below_50'] or 'none'}")
    lines.append(rep["tolerance_note"])
    lines += ["", "target temperature -> mean target weight on a window's best specialist (router-split windows): "
              + ", ".join(f"{t}: {v['mean_max_target']:.2f}" for t, v in rep["target_sharpness"].items())]
    return "\n".join(lines + _summarize_generalist(rep["generalist"]))


def _summarize_generalist(gen: dict) -> list[str]:
    """The generalist part of the CLI's output."""
    lines = ["", f"a generalist as a 4th expert ({gen['experts'][-1]}): alone {gen['generalist_alone_mixed']:.4f} "
                 f"({gen['generalist_alone_vs_healthy_%']:+.2f}% vs the healthy 4-expert router "
                 f"{gen['healthy_mixed']:.4f}); precondition (alone within {gen['tolerance_pct']:g}%): "
                 f"{'holds' if gen['precondition_holds'] else 'does not hold'}",
             f"  {'setting':<12}{'mix':<16}{'temp':>7}{'mixed':>9}{'vs healthy':>11}  own-specialist accuracy "
             "(code/medical/legal)   weight on the generalist"]
    for name, st in gen["settings"].items():
        acc = "/".join(f"{v:.0%}" for v in st["routing_accuracy"].values())
        on_g = "/".join(f"{v:.2f}" for v in st["weight_on_generalist"].values())
        lines.append(f"  {name:<12}{'/'.join(f'{m:.2f}' for m in st['domain_mix']):<16}{st['temp']:>7g}"
                     f"{st['mixed_loss']:>9.4f}{st['mixed_vs_healthy_%']:>+10.2f}%  {acc:<38}{on_g}"
                     f"{'  (healthy)' if name == 'healthy' else '  SILENT' if st['silent_collapse'] else ''}")
    lines.append(f"silent collapse with a generalist: {gen['silent_collapse'] or 'none'}")
    return lines


def grid_frame(rep: dict, key: str) -> pd.DataFrame:
    """Break 2's grid as a mix (rows) x temperature (columns) table of one per-setting value."""
    rows: dict[str, dict[str, float]] = {}
    for g in rep["grid"].values():
        mix = "/".join(f"{m:.2f}" for m in g["domain_mix"])
        rows.setdefault(mix, {})[f"{g['temp']:g}"] = g[key]
    df = pd.DataFrame(rows).T
    return df[sorted(df.columns, key=float, reverse=True)].rename_axis("domain mix (code/medical/legal)")

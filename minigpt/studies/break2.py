"""Break 2 of Chapter 32: routers that collapse without the mixed loss noticing.

Per-token routers are trained on skewed data (one domain dominates the router split's batches)
and/or with a near-zero target temperature (performance targets close to one-hot), on a grid of
``mixes`` x ``temps`` that includes four named settings: healthy, imbalanced, cold and both. Every
router is scored on the same held-out windows by :func:`minigpt.scoring.score`. A setting is a
*silent collapse* when its mixed loss stays within ``tolerance_pct`` % of the healthy router's
while some domain's routing accuracy drops below 50%: the headline number would not show it.
Settings are fixed up front; the conclusions are computed from the measurements.
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
from ..config import DOMAINS, RouterConfig
from ..evaluate import SPECIALIST_ROWS, loss_table, routing_accuracy, table_json
from ..scoring import Experts, Scores, fused_row, score
from .common import write_report

DEFAULT_MIXES = ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.9, 0.05, 0.05), (0.98, 0.01, 0.01))
DEFAULT_TEMPS = (None, 0.01, 1e-3)  # None = the profile's temperature


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
         "mean_max_weight": float(torch.cat([x.max(-1).values.flatten() for x in w.values()]).double().mean())}
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
           imbalance: Sequence[float] = (0.9, 0.05, 0.05), cold_temp: float = 1e-3, tolerance_pct: float = 2.0,
           out: Path | None = None) -> dict:
    """Per-token routers trained on skewed data and/or with a near-zero target temperature.

    The four named settings (healthy, imbalanced, cold, both) are part of the grid ``mixes`` x
    ``temps`` (a temperature of None is the profile's). ``silent_collapse`` lists grid settings whose
    mixed loss stays within ``tolerance_pct`` % of the healthy router's while some domain's routing
    accuracy is < 50%. Writes ``break2.json``; ``_raw`` keeps the weights and token losses for plots.
    """
    t0 = time.time()
    p = exp.profile
    named, grid = _grid_configs(p.router, mixes, temps, imbalance, cold_temp)
    routers = {name: exp.router("per_token", cfg) for name, cfg in grid.items()}
    scores: Scores = score(exp.eval_sets, Experts(exp.specialists(), exp.k), routers, base=exp.base(),
                           batch_size=p.eval_batch_size)
    table = loss_table(scores.nll)
    h_name = setting_name(p.router)
    ref = _Reference(mixed=float(table.loc[fused_row("soft", h_name), "mixed"]),
                     accuracy=routing_accuracy(scores.weights[h_name]), tolerance_pct=tolerance_pct,
                     spec_nll={d: scores.spec_nll(d) for d in DOMAINS})
    settings = {name: _describe(scores.weights[setting_name(cfg)], table, setting_name(cfg), cfg, ref, True)
                for name, cfg in named.items()}
    grid_rep = {name: _describe(scores.weights[name], table, name, cfg, ref, False) for name, cfg in grid.items()}
    report = _report(exp, table, ref, h_name, settings, grid_rep)
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = {"weights": scores.weights, "nll": scores.nll,
                      "names": {n: setting_name(c) for n, c in named.items()}}
    return write_report(exp, report, "break2", out)


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
    return "\n".join(lines)


def grid_frame(rep: dict, key: str) -> pd.DataFrame:
    """Break 2's grid as a mix (rows) x temperature (columns) table of one per-setting value."""
    rows: dict[str, dict[str, float]] = {}
    for g in rep["grid"].values():
        mix = "/".join(f"{m:.2f}" for m in g["domain_mix"])
        rows.setdefault(mix, {})[f"{g['temp']:g}"] = g[key]
    df = pd.DataFrame(rows).T
    return df[sorted(df.columns, key=float, reverse=True)].rename_axis("domain mix (code/medical/legal)")

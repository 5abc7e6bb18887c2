"""The freeze-depth sweep: K = 0..L-1 and the divergence -> fusion-gain relation.

At every freeze depth K the specialists and a per-token router are trained (or loaded), every row
is scored by :func:`minigpt.scoring.score`, and the crowns' final hidden states are compared (CKA,
paired cosine). Each K gives one (divergence, gain) point; :func:`points_from_other_runs` adds the
points other seeds' sweeps and Break 1's controls left on disk with the same data fingerprints,
and the line through all of them is set next to KALAVAI's.
"""
from __future__ import annotations

import glob
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..analysis.divergence import divergence, fit_gain_vs_divergence, fusion_gain, own_domain_gains
from ..analysis.similarity import cka_block, linear_cka
from ..chapter import out_dir
from ..evaluate import (HEADLINE, ORACLE, SPECIALIST_ROWS, gap_by_position, litmus, loss_table, routing_accuracy,
                        table_json)
from ..fusion import average_weights
from ..model import GPT
from ..scoring import Experts, score
from .common import token_sample, write_report

ROUTER = "per-token"  # the one router trained at every K (others would multiply the cost)


def _depth(exp, K: int, base: GPT, xs: torch.Tensor) -> dict:
    """Everything measured at freeze depth ``K``: the table, divergence and gains, routing, oracle gap,
    and how alike the crowns' final hidden states are on the token sample ``xs``."""
    specs = exp.specialists(k=K)
    scores = score(exp.eval_sets, Experts(specs, K), {ROUTER: exp.router("per_token", k=K)}, base=base,
                   extra={"weight average": average_weights(specs)}, batch_size=exp.profile.eval_batch_size)
    table = loss_table(scores.nll)
    with torch.no_grad():
        final = {m.manifest["domain"]: m.crown_hidden(m.trunk(xs, K), K) for m in specs}
        base_final = base.crown_hidden(base.trunk(xs, K), K)
    return {
        "own_domain_gain_%": own_domain_gains(table), "divergence_%": divergence(table),
        "fused_gain_vs_best_specialist_%": fusion_gain(table),
        "fused_gain_vs_base_%": float(table.loc[HEADLINE, "Δ% vs base"]),
        "oracle_gap": float(table.loc[HEADLINE, "mixed"] - table.loc[ORACLE, "mixed"]),
        "oracle_gap_by_position": gap_by_position(scores.nll),
        "routing_accuracy": routing_accuracy(scores.weights[ROUTER]),
        "mixed": {row: float(v) for row, v in table["mixed"].items()},
        "crowns_final_hidden": cka_block(final),
        "cka_crown_vs_base_final_hidden": {d: linear_cka(h, base_final) for d, h in final.items()},
        "litmus": litmus(table), "table": table_json(table),
        "trainable_params": sum(v.numel() for v in specs[0].crown_parameters(K).values()),
    }


def freeze_sweep(exp, ks: Sequence[int] | None = None, out: Path | None = None) -> dict:
    """K = 0..L-1 (or ``ks``): specialists, a per-token router and the full table at each depth, plus
    CKA between crowns. The divergence -> gain fit pools every K of this seed with the points of
    other runs already on disk for the same profile (:func:`points_from_other_runs`).
    Writes ``freeze_sweep.json``.
    """
    t0 = time.time()
    p = exp.profile
    ks = list(range(p.model.n_layer)) if ks is None else list(ks)
    xs = token_sample(exp.eval_sets, min(8, p.eval_chunks))
    base = exp.base()
    per_k = {str(K): _depth(exp, K, base, xs) for K in ks}
    points = [{"seed": exp.seed, "base_seed": exp.seed, "k": K, "divergence": per_k[str(K)]["divergence_%"],
               "gain": per_k[str(K)]["fused_gain_vs_best_specialist_%"]} for K in ks]
    here = Path(out or out_dir(exp))
    others = points_from_other_runs(here.parent, exp.seed, exp.provenance())
    report = {
        "profile": p.name, **exp.provenance(), "seed": exp.seed, "ks": ks, "router_config": p.router,
        "per_k": per_k, "points": points, "points_from_other_runs": others,
        "fit": fit_gain_vs_divergence(points + others),
        "fit_note": "gain = fused (per-token router) improvement over the best specialist on mixed data, %; "
                    "KALAVAI's line: gain = 0.82 * divergence - 2.72",
        "best_k_by_fused_gain": max(per_k, key=lambda q: per_k[q]["fused_gain_vs_best_specialist_%"]),
        "best_k_by_fused_mixed": min(per_k, key=lambda q: per_k[q]["mixed"][HEADLINE]),
    }
    report["wall_seconds"] = round(time.time() - t0, 1)
    return write_report(exp, report, "freeze_sweep", here)


def _read_matching(path: str, provenance: Mapping[str, str]) -> dict | None:
    """A results JSON, or None when it is unreadable (e.g. half-written) or records other data
    fingerprints than ``provenance`` (another corpus or tokenizer, or none recorded)."""
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rep if all(rep.get(key) == v for key, v in provenance.items()) else None


def points_from_other_runs(profile_dir: Path, seed: int, provenance: Mapping[str, str]) -> list[dict]:
    """(divergence, gain) points already on disk under ``profile_dir/seed-*``: other seeds' freeze
    sweeps, and Break 1's controls (the shared-base pipeline on other base seeds at the profile's K,
    same definitions). Files with other fingerprints than ``provenance``, or unreadable, are skipped."""
    others = []
    for f in sorted(glob.glob(str(Path(profile_dir) / "seed-*" / "freeze_sweep.json"))):
        rep = _read_matching(f, provenance)
        if rep and rep.get("seed") != seed:
            others += [{**q, "source": "freeze sweep"} for q in rep.get("points", []) if q["seed"] != seed]
    for f in sorted(glob.glob(str(Path(profile_dir) / "seed-*" / "break1.json"))):
        b1 = _read_matching(f, provenance)
        for bseed, c in (b1 or {}).get("controls", {}).items():
            if int(bseed) == b1["seed"]:
                continue  # the run's own base: already a sweep point at its K
            others.append({"seed": b1["seed"], "base_seed": int(bseed), "k": b1["freeze_k"],
                           "divergence": float(np.mean(list(c["own_domain_gain_over_own_base_%"].values()))),
                           "gain": c["fusion_gain_vs_best_specialist_%"], "source": "break1 control"})
    return others


def summarize(rep: dict) -> str:
    """A :func:`freeze_sweep` report as text (the CLI's output)."""
    lines = [f"Freeze-depth sweep — profile {rep['profile']}, seed {rep['seed']}", "",
             f"  {'K':>2} {'trainable':>10} {'divergence':>11} {'own-domain gains (code/med/legal)':>36} "
             f"{'fused vs best spec':>19} {'oracle gap':>11} {'crown CKA':>10} {'cosine':>8}"]
    for K, r in rep["per_k"].items():
        g = "/".join(f"{v:+.2f}" for v in r["own_domain_gain_%"].values())
        crowns = r["crowns_final_hidden"]
        lines.append(f"  {K:>2} {r['trainable_params']:>10,} {r['divergence_%']:>+10.2f}% {g:>36} "
                     f"{r['fused_gain_vs_best_specialist_%']:>+18.2f}% {r['oracle_gap']:>+11.4f} "
                     f"{crowns['mean_cka']:>10.3f} {crowns['mean_paired_cosine']:>+8.3f}")
    fit = rep["fit"]
    lines.append("")
    if fit["slope"] is not None:
        r2 = "n/a" if fit["r2"] is None else f"{fit['r2']:.2f}"
        lines.append(f"fit over {fit['n']} points ({len(rep['points'])} from this sweep, "
                     f"{len(rep['points_from_other_runs'])} from other seeds' sweeps and Break 1's controls): "
                     f"gain = {fit['slope']:.3f} * divergence {fit['intercept']:+.3f} (R² {r2})")
    else:
        lines.append(f"fit: not enough distinct divergences among {fit['n']} points")
    residual = fit["kalavai"].get("mean_residual", float("nan"))
    lines.append("KALAVAI's line gain = 0.82 * divergence - 2.72 predicts "
                 + ", ".join(f"{pg:+.2f}%" for pg in fit["kalavai"]["predicted_gain"])
                 + f" at our divergences (mean residual {residual:+.2f} points)")
    lines.append(f"best K by fused gain over best specialist: {rep['best_k_by_fused_gain']}; "
                 f"by fused mixed loss: {rep['best_k_by_fused_mixed']}")
    return "\n".join(lines)


def sweep_frame(rep: dict) -> pd.DataFrame:
    """The sweep as one row per K: sizes, divergence, gains, oracle gap, routing, similarity."""
    rows = {}
    for K, r in rep["per_k"].items():
        mixed = r["mixed"]
        rows[int(K)] = {"trainable params": r["trainable_params"], "divergence %": r["divergence_%"],
                        "fused vs best specialist %": r["fused_gain_vs_best_specialist_%"],
                        "fused vs base %": r["fused_gain_vs_base_%"],
                        "fused mixed": mixed[HEADLINE], "best specialist mixed": min(mixed[s] for s in SPECIALIST_ROWS),
                        "oracle mixed": mixed[ORACLE], "oracle gap": r["oracle_gap"],
                        "routing accuracy": sum(r["routing_accuracy"].values()) / len(r["routing_accuracy"]),
                        "crown CKA": r["crowns_final_hidden"]["mean_cka"],
                        "crown cosine": r["crowns_final_hidden"]["mean_paired_cosine"]}
    return pd.DataFrame(rows).T.rename_axis("K")

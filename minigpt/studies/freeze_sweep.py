"""The freeze-depth sweep: the fused loss and the divergence -> fusion-gain relation across depths K.

By default the sweep measures the profile's K and its two neighbours (:func:`default_points`);
``ks=range(L)`` and ``nothing_frozen=True`` give every depth. At every freeze depth K the specialists and a per-token router are trained (or loaded), every row
is scored by :func:`minigpt.scoring.score`, and the crowns' final hidden states are compared (CKA,
paired cosine). A ``none`` point adds specialists with nothing frozen (embeddings trained, head
untied), scored as unshared experts: "freeze too little". Each K gives one (divergence, gain) point; :func:`points_from_other_runs` adds the
points other seeds' sweeps and Break 1's controls left on disk with the same data fingerprints,
and the line through all of them is set next to KALAVAI's.
"""
from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..analysis.divergence import divergence, fit_gain_vs_divergence, fusion_gain, own_domain_gains
from ..analysis.similarity import cka_block, linear_cka
from ..chapter import out_dir
from ..checkpoint import model_fingerprint
from ..config import DOMAINS, REPO_ROOT, derive_seed
from ..device import autocast, resolve, to_device, to_host
from ..evaluate import (HEADLINE, ORACLE, SPECIALIST_ROWS, gap_by_position, litmus, loss_table, routing_accuracy,
                        table_json)
from ..fusion import average_weights
from ..intervals import domain_window_means, interval_verdict, mean_stat, paired_difference
from ..model import GPT
from ..fusion import FusedModel
from ..scoring import SHARED_TRUNK, Routed, ScoreRequest, fused_row, score
from ..streams import random_windows
from ..train import fine_tune_everything
from .common import read_matching, refuse_then_force, saved_report_path, token_sample, write_report

ROUTER = "per-token"  # the one router trained at every K (others would multiply the cost)
NONE = "none"  # the "nothing frozen" point's key in ``per_k``
# Without a shared trunk the router reads the first (code) specialist's own embedding output: it is
# part of the fused set, so it costs nothing extra. The base's embeddings would be a fourth, frozen
# component kept only for routing, i.e. a shared trunk again, which this point has given up.
NONE_FEATURE = SHARED_TRUNK
SHARED_INTERFACE = {"shared_trunk": True, "head": "tied to the frozen embedding, shared by every crown",
                    "router_input": "the shared trunk (embeddings + blocks 0..K-1)",
                    "hidden_fusion_head": "the shared tied head (the base's embedding)"}
NONE_INTERFACE = {"shared_trunk": False, "head": "untied: each specialist's own copy of the base embedding, trained",
                  "router_input": f"the {DOMAINS[0]} specialist's own embedding output (wte + wpe), fine-tuned with it",
                  "hidden_fusion_head": f"the {DOMAINS[0]} specialist's own untied head"}
NONE_NOTE = ("'none' = nothing frozen: each specialist fine-tunes every parameter (embeddings included) with an "
             "untied head initialised from the base's embedding, same schedule, seed and data as the K "
             "specialists; scored as unshared experts (each runs its own embeddings). frozen_blocks is null there. "
             "It is left out of 'points' and the fit: it changes the divergence and removes the shared output "
             "space at once, so it is not a point on the same divergence -> gain relation.")


def none_specialist(exp, domain: str) -> GPT:
    """The ``domain`` specialist with nothing frozen (:func:`minigpt.train.fine_tune_everything`), cached
    under key parts that say so, so it never collides with a specialist at some K."""
    p, base = exp.profile, exp.base()
    batch = lambda g: random_windows(exp.streams.get(domain, "specialist"), p.specialist.batch_size,  # noqa: E731
                                     p.model.block_size, g)
    seed = derive_seed(exp.seed, "specialist", domain)
    return exp.checkpoint(
        "specialist", [p.model, p.base, exp.seed, p.specialist, domain, "freeze:none", "head:untied", exp.seed],
        lambda: fine_tune_everything(base, batch, p.specialist, seed=seed, desc=f"{domain} specialist (nothing frozen)"),
        {"role": "specialist", "domain": domain, "seed": exp.seed, "freeze_k": None, "frozen": "nothing",
         "base_seed": exp.seed, "base_fingerprint": model_fingerprint(base), "profile": p.name})


def _measures(scores, final: dict, base_final: torch.Tensor, trainable: int) -> dict:
    """The fields every point of the sweep reports, from its scores and final hidden states."""
    table = loss_table(scores.nll)
    return {
        "own_domain_gain_%": own_domain_gains(table), "divergence_%": divergence(table),
        "fused_gain_vs_best_specialist_%": fusion_gain(table),
        "fused_gain_vs_base_%": float(table.loc[HEADLINE, "Δ% vs base"]),
        "fused_hidden_gain_vs_best_specialist_%": fusion_gain(table, fused_row("hidden", ROUTER)),
        "weight_average_gain_vs_best_specialist_%": fusion_gain(table, "weight average"),
        "oracle_gap": float(table.loc[HEADLINE, "mixed"] - table.loc[ORACLE, "mixed"]),
        "oracle_gap_by_position": gap_by_position(scores.nll),
        "routing_accuracy": routing_accuracy(scores.weights[ROUTER]),
        "mixed": {row: float(v) for row, v in table["mixed"].items()},
        "crowns_final_hidden": cka_block(final),
        "cka_crown_vs_base_final_hidden": {d: linear_cka(h, base_final) for d, h in final.items()},
        "litmus": litmus(table), "table": table_json(table), "trainable_params": trainable,
    }


def _finals(models: Sequence[GPT], base: GPT, K: int, xs: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Each model's final hidden state (after its own trunk and crown) and the base's, on ``xs``."""
    dev = resolve()
    to_device([*models, base], dev)
    xs = to_device(xs, dev)
    with torch.no_grad(), autocast(dev):
        final = {m.manifest["domain"]: m.crown_hidden(m.trunk(xs, K), K) for m in models}
        return to_host((final, base.crown_hidden(base.trunk(xs, K), K)))


def _depth(exp, K: int, base: GPT, xs: torch.Tensor) -> dict:
    """Everything measured at freeze depth ``K``: the table, divergence and gains, routing, oracle gap,
    and how alike the crowns' final hidden states are on the token sample ``xs``. Hidden-state fusion
    decodes with the shared tied head, so it equals logit fusion up to rounding."""
    specs = exp.specialists(k=K)
    refusal, _ = refuse_then_force(specs, K)
    scores = score(ScoreRequest(windows=exp.eval_sets, experts=FusedModel(specs, K),
                                routers={ROUTER: exp.router("per_token", k=K)}, base=base,
                                extra={"weight average": average_weights(specs)}, hidden_head=base.lm_head,
                                batch_size=exp.profile.eval_batch_size))
    trainable = sum(v.numel() for v in specs[0].crown_parameters(K).values())
    return {"frozen_blocks": K, **SHARED_INTERFACE, "compat_refusal": refusal,
            **_measures(scores, *_finals(specs, base, K, xs), trainable)}, domain_window_means(scores.nll[HEADLINE])


def _none_point(exp, base: GPT, xs: torch.Tensor) -> dict:
    """The ``none`` point: specialists with nothing frozen, scored as unshared experts. compat.check
    refuses them (their embeddings differ); the refusal is recorded and the check forced."""
    specs = [none_specialist(exp, d) for d in DOMAINS]
    refusal, forced = refuse_then_force(specs, 0)
    experts = FusedModel(specs, 0, shared=False)
    router = exp.feature_router(experts, NONE_FEATURE, exp.profile.router, tag="nothing frozen")
    scores = score(ScoreRequest(windows=exp.eval_sets, experts=experts, routers={ROUTER: Routed(router, NONE_FEATURE)},
                                base=base, extra={"weight average": average_weights(specs)},
                                hidden_head=specs[0].lm_head, batch_size=exp.profile.eval_batch_size))
    trainable = sum(v.numel() for v in specs[0].parameters() if v.requires_grad)
    return {"frozen_blocks": None, **NONE_INTERFACE, "compat_refusal": refusal,
            "compat_forced_mismatches": forced["mismatches"],
            **_measures(scores, *_finals(specs, base, 0, xs), trainable)}, domain_window_means(scores.nll[HEADLINE])


GAIN_NOTE = ("gain over the best specialist flatters small K: the fewer layers are frozen, the more each specialist "
             "forgets the other domains, so the best single specialist gets worse on mixed text and any mix of them "
             "looks better against it; the boundary is read off the fused loss itself")


def boundary(windows: Mapping[str, Mapping[str, torch.Tensor]], ks: Sequence[int]) -> dict:
    """The freeze depth with the lowest fused mixed loss and paired intervals between neighbouring
    depths (``windows[str(K)]``: the headline's per-window losses at K, on the same windows):
    ``change`` is fused(K+1) − fused(K) in nats, positive when freezing one more block costs loss."""
    mixed = {K: float(mean_stat(windows[str(K)], None)) for K in ks}
    best = min(ks, key=mixed.get)
    steps = [{"from_k": a, "to_k": b, "change_nats": paired_difference(windows[str(a)], windows[str(b)])}
             for a, b in zip(ks, ks[1:])]
    for st in steps:
        st["verdict"] = interval_verdict(st["change_nats"]["low"], st["change_nats"]["high"])
    beside = [st for st in steps if best in (st["from_k"], st["to_k"])]
    # best is decisively best when each neighbour's interval says that neighbour is worse
    decisive = all((st["verdict"] == "holds") if st["from_k"] == best else (st["verdict"] == "fails") for st in beside)
    return {"best_k": best, "fused_mixed": {str(K): v for K, v in mixed.items()}, "steps": steps,
            "best_beats_neighbours": bool(decisive), "gain_note": GAIN_NOTE}


def _none_vs_k(per_k: dict, ks: Sequence[int]) -> dict:
    """How the ``none`` point compares with the K points (every number from ``per_k``)."""
    none, k0 = per_k[NONE], per_k[str(min(ks))]
    best = min((str(K) for K in ks), key=lambda q: per_k[q]["mixed"][HEADLINE])
    return {"none_fused_beats_best_specialist": none["fused_gain_vs_best_specialist_%"] > 0,
            "none_minus_smallest_k": {key: none[key] - k0[key] for key in
                                      ("divergence_%", "fused_gain_vs_best_specialist_%", "oracle_gap",
                                       "weight_average_gain_vs_best_specialist_%")},
            "none_minus_best_k_fused_mixed": none["mixed"][HEADLINE] - per_k[best]["mixed"][HEADLINE],
            "none_fused_mixed_beats_every_k": all(none["mixed"][HEADLINE] < per_k[str(K)]["mixed"][HEADLINE] for K in ks),
            "none_minus_smallest_k_crown_cka": (none["crowns_final_hidden"]["mean_cka"]
                                                - k0["crowns_final_hidden"]["mean_cka"]),
            "none_minus_smallest_k_routing_accuracy": float(np.mean(list(none["routing_accuracy"].values()))
                                                            - np.mean(list(k0["routing_accuracy"].values())))}


def default_points(p) -> tuple[list[int], bool]:
    """The depths the sweep measures by default, and whether it adds the nothing-frozen point: the
    profile's K and its two neighbours, enough to say whether K is where the fused loss bottoms out
    (Question 4's boundary); every K and the nothing-frozen point are one argument away."""
    return [K for K in (p.freeze_k - 1, p.freeze_k, p.freeze_k + 1) if 0 <= K < p.model.n_layer], False


def freeze_sweep(exp, ks: Sequence[int] | None = None, out: Path | None = None,
                 nothing_frozen: bool | None = None) -> dict:
    """The default depths (or ``ks``): specialists, a per-token router and the full table at each depth, plus
    CKA between crowns; with ``nothing_frozen`` also the ``none`` point (:data:`NONE_NOTE`). The
    divergence -> gain fit pools every K of this seed with the points of other runs already on disk
    for the same profile (:func:`points_from_other_runs`). Writes ``freeze_sweep.json`` (another name for
    other depths: :func:`report_name`).
    """
    t0 = time.time()
    p = exp.profile
    default_ks, default_none = default_points(p)
    ks = default_ks if ks is None else list(ks)
    nothing_frozen = default_none if nothing_frozen is None else nothing_frozen
    xs = token_sample(exp.eval_sets, min(8, p.eval_chunks))
    base = exp.base()
    measured = {str(K): _depth(exp, K, base, xs) for K in ks}
    if nothing_frozen:
        measured = {NONE: _none_point(exp, base, xs), **measured}
    per_k = {K: m[0] for K, m in measured.items()}
    windows = {K: m[1] for K, m in measured.items()}
    points = [{"seed": exp.seed, "base_seed": exp.seed, "k": K, "divergence": per_k[str(K)]["divergence_%"],
               "gain": per_k[str(K)]["fused_gain_vs_best_specialist_%"]} for K in ks]
    here = Path(out or out_dir(exp))
    others = points_from_other_runs(here.parent, exp.seed, exp.provenance())
    report = {
        "profile": p.name, **exp.provenance(), "seed": exp.seed, "ks": ks, "router_config": p.router,
        "per_k": per_k, "points": points, "points_from_other_runs": others,
        "none_measured": nothing_frozen, "none_in_points": False, "none_note": NONE_NOTE,
        **(_none_vs_k(per_k, ks) if nothing_frozen else {}),
        "fit": fit_gain_vs_divergence(points + others),
        "fit_note": "gain = fused (per-token router) improvement over the best specialist on mixed data, %; "
                    "KALAVAI's line: gain = 0.82 * divergence - 2.72",
        "best_k_by_fused_gain": max(map(str, ks), key=lambda q: per_k[q]["fused_gain_vs_best_specialist_%"]),
        "best_k_by_fused_mixed": min(map(str, ks), key=lambda q: per_k[q]["mixed"][HEADLINE]),
        "boundary": boundary(windows, ks),
    }
    if nothing_frozen:  # nothing frozen against the best K, on the same windows
        report["none_minus_best_k"] = paired_difference(windows[str(report["boundary"]["best_k"])], windows[NONE])
    report["wall_seconds"] = round(time.time() - t0, 1)
    return write_report(exp, report, report_name(p, ks, nothing_frozen), here)


def saved_or_run(exp) -> dict:
    """The default sweep as saved for this profile and seed (this run's results, else the committed
    reference) when it records this corpus, tokenizer and router code; else run here. Its crowns at
    the depths beside K are the book's largest training bill (six at ``cpu``), so the book reads the
    committed sweep and a reader who wants it trained calls :func:`freeze_sweep`. Prints which."""
    path = saved_report_path(exp, "freeze_sweep")
    rep = None if path is None else read_matching(str(path), exp.provenance())
    if rep is not None:
        print(f"freeze sweep read from {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} "
              f"(freeze_sweep(exp) trains it here instead)")
        return rep
    print(f"no freeze sweep saved for profile {exp.profile.name!r}, seed {exp.seed}, on this corpus: training it here")
    return freeze_sweep(exp)


def report_name(p, ks: Sequence[int], nothing_frozen: bool) -> str:
    """``freeze_sweep`` for the default depths; another name for any other choice, so a sweep over every
    depth does not replace the default one that the notebooks and the fit read."""
    if (list(ks), nothing_frozen) == default_points(p):
        return "freeze_sweep"
    if sorted(ks) == list(range(p.model.n_layer)) and nothing_frozen:
        return "freeze_sweep_every_depth"
    return "freeze_sweep_k" + "-".join(map(str, ks)) + ("_none" if nothing_frozen else "")


def points_from_other_runs(profile_dir: Path, seed: int, provenance: Mapping[str, str]) -> list[dict]:
    """(divergence, gain) points already on disk under ``profile_dir/seed-*``: other seeds' freeze
    sweeps, and Break 1's controls (the shared-base pipeline on other base seeds at the profile's K,
    same definitions). Files with other fingerprints than ``provenance``, or unreadable, are skipped."""
    others = []
    for f in sorted(glob.glob(str(Path(profile_dir) / "seed-*" / "freeze_sweep.json"))):
        rep = read_matching(f, provenance)
        if rep and rep.get("seed") != seed:
            others += [{**q, "source": "freeze sweep"} for q in rep.get("points", []) if q["seed"] != seed]
    for f in sorted(glob.glob(str(Path(profile_dir) / "seed-*" / "break1.json"))):
        b1 = read_matching(f, provenance)
        for bseed, c in (b1 or {}).get("controls", {}).items():
            if int(bseed) == b1["seed"]:
                continue  # the run's own base: already a sweep point at its K
            others.append({"seed": b1["seed"], "base_seed": int(bseed), "k": b1["freeze_k"],
                           "divergence": float(np.mean(list(c["own_domain_gain_over_own_base_%"].values()))),
                           "gain": c["fusion_gain_vs_best_specialist_%"], "source": "break1 control"})
    return others


def _none_lines(rep: dict) -> list[str]:
    """The ``none`` point's own lines: what it shares, what compat.check says, the fusion rules."""
    r = rep["per_k"].get(NONE)
    if r is None:
        return []
    return ["", f"none = nothing frozen (embeddings trained, head untied; not in the fit): router reads "
                f"{r['router_input']}; hidden fusion decodes with {r['hidden_fusion_head']}",
            f"  compat.check refuses: {r['compat_refusal']}",
            f"  fused vs best specialist: logits {r['fused_gain_vs_best_specialist_%']:+.2f}%, hidden "
            f"{r['fused_hidden_gain_vs_best_specialist_%']:+.2f}%, weight average (all parameters, heads included) "
            f"{r['weight_average_gain_vs_best_specialist_%']:+.2f}%; fused mixed minus the best K's "
            f"{rep['none_minus_best_k_fused_mixed']:+.4f} nats"]


def summarize(rep: dict) -> str:
    """A :func:`freeze_sweep` report as text (the CLI's output)."""
    lines = [f"Freeze-depth sweep — profile {rep['profile']}, seed {rep['seed']}", "",
             f"  {'K':>4} {'trainable':>10} {'divergence':>11} {'own-domain gains (code/med/legal)':>36} "
             f"{'fused vs best spec':>19} {'oracle gap':>11} {'weight avg':>10} {'crown CKA':>10} {'cosine':>8}"]
    for K, r in rep["per_k"].items():
        g = "/".join(f"{v:+.2f}" for v in r["own_domain_gain_%"].values())
        crowns = r["crowns_final_hidden"]
        lines.append(f"  {K:>4} {r['trainable_params']:>10,} {r['divergence_%']:>+10.2f}% {g:>36} "
                     f"{r['fused_gain_vs_best_specialist_%']:>+18.2f}% {r['oracle_gap']:>+11.4f} "
                     f"{r['mixed']['weight average']:>10.4f} {crowns['mean_cka']:>10.3f} {crowns['mean_paired_cosine']:>+8.3f}")
    lines += _none_lines(rep)
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
    b = rep["boundary"]
    lines.append(f"boundary: lowest fused mixed loss at K = {b['best_k']}"
                 f"{' (beats both neighbours)' if b['best_beats_neighbours'] else ' (not decisively)'}; "
                 + "; ".join(f"K={st['from_k']}->{st['to_k']}: {st['change_nats']['estimate']:+.4f} "
                             f"[{st['change_nats']['low']:+.4f}, {st['change_nats']['high']:+.4f}] nats" for st in b["steps"]))
    lines.append(f"best K by fused gain over the best specialist: {rep['best_k_by_fused_gain']} ({b['gain_note']})")
    return "\n".join(lines)


def sweep_frame(rep: dict, with_none: bool = False) -> pd.DataFrame:
    """The sweep as one row per K (index: int K): sizes, divergence, gains, oracle gap, routing,
    similarity. ``with_none`` puts the ``none`` point (nothing frozen) first, under the label "none"."""
    rows = {}
    for K, r in rep["per_k"].items():
        if K == NONE and not with_none:
            continue
        mixed = r["mixed"]
        rows[K if K == NONE else int(K)] = {
            "trainable params": r["trainable_params"], "divergence %": r["divergence_%"],
            "fused vs best specialist %": r["fused_gain_vs_best_specialist_%"],
            "fused vs base %": r["fused_gain_vs_base_%"],
            "fused mixed": mixed[HEADLINE], "best specialist mixed": min(mixed[s] for s in SPECIALIST_ROWS),
            "oracle mixed": mixed[ORACLE], "oracle gap": r["oracle_gap"],
            "weight average mixed": mixed["weight average"],
            "fused hidden mixed": mixed.get(fused_row("hidden", ROUTER), float("nan")),
            "routing accuracy": sum(r["routing_accuracy"].values()) / len(r["routing_accuracy"]),
            "crown CKA": r["crowns_final_hidden"]["mean_cka"],
            "crown cosine": r["crowns_final_hidden"]["mean_paired_cosine"]}
    return pd.DataFrame(rows).T.rename_axis("K")

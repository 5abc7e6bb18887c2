"""Break 1's specialist sets: the different-base set, the shared-base controls, and what each one scores.

Each team of the break is the chapter's run with one seed (base s, specialists trained with data
seed s: :func:`seed_run`), so the different-base set takes its code specialist from seed X's run and
(by default) its medical and legal ones from the next seed's, and every control is one of those
runs whole. The same per-token router is trained on every input of
:data:`minigpt.scoring.FEATURES` for the different set (with the same config, initialisation and
batches: only what it reads differs) and on the shared trunk for each control.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from ...analysis.calibration import calibration_from_stats, merge_stats
from ...analysis.routing import confusion_matrix, mean_weights, oracle_agreement, routing_accuracy
from ...analysis.similarity import cka_block
from ...checkpoint import model_fingerprint
from ...config import DOMAINS
from ...device import autocast, resolve, to_device, to_host
from ...evaluate import loss_table, table_json
from ...experiment import Experiment
from ...fusion import average_weights
from ...model import GPT
from ...fusion import FEATURES, FusedModel
from ...scoring import ORACLE, SHARED_TRUNK, SPECIALIST_ROWS, Routed, Scores, ScoreRequest, fused_row, model_nll, score
from ..common import token_sample


@dataclass
class Sets:
    """What Break 1 scored, handed from step to step: ``scores['different']`` and one entry per control
    (keyed by its base seed as a string; base X's control is the matched one)."""

    base_seeds: list[int]
    bases: dict[int, GPT]
    base_losses: dict[int, dict[str, float]]
    experts: dict[str, FusedModel]  # the specialist sets, each without a router of its own
    scores: dict[str, Scores] = field(default_factory=dict)

    @property
    def matched(self) -> str:
        return str(self.base_seeds[0])

    @property
    def controls(self) -> list[str]:
        return [str(s) for s in self.bases]


def seed_run(exp, seed: int):
    """The chapter's run with ``seed``: base ``seed`` and specialists trained with data seed ``seed``,
    the models ``make seeds`` already trained."""
    return exp if seed == exp.seed else Experiment(exp.profile, seed=seed)


def base_seeds_for(exp, base_seeds: Sequence[int] | None) -> list[int]:
    """One base seed per domain; by default code from the run's own base X, medical and legal from base
    X + 1: two bases make the break (and two controls), and a third would only add training time."""
    seeds = list(base_seeds) if base_seeds is not None else [exp.seed, exp.seed + 1, exp.seed + 1]
    if len(seeds) != len(DOMAINS):
        raise ValueError(f"give one base seed per domain ({len(DOMAINS)}), got {len(seeds)}")
    return seeds


def build_sets(exp, base_seeds: Sequence[int] | None = None) -> Sets:
    """The bases, their losses on the eval windows, the different-base set and one control per base."""
    seeds = base_seeds_for(exp, base_seeds)
    bases = {s: exp.base(s) for s in dict.fromkeys(seeds)}
    if len(bases) > 1 and len({model_fingerprint(b) for b in bases.values()}) == 1:
        raise ValueError(f"profile {exp.profile.name!r} gives the same pretrained base for every seed, so there are "
                         "no different bases to break with; run Break 1 with a profile that trains its base (ci, cpu, gpu)")
    teams = {s: seed_run(exp, s) for s in bases}
    experts = {"different": FusedModel([teams[s].specialist(d) for d, s in zip(DOMAINS, seeds)], exp.k, shared=False),
               **{str(s): FusedModel(teams[s].specialists(), exp.k) for s in bases}}
    losses = {s: {d: float(v.mean()) for d, v in model_nll(b, exp.study_sets, exp.profile.eval_batch_size).items()}
              for s, b in bases.items()}
    return Sets(seeds, bases, losses, experts)


def score_set(exp, experts: FusedModel, base: GPT, features: Sequence[str], tag: str) -> Scores:
    """Train (or load) one router per feature, then score every row with calibration statistics;
    ``base`` is the router's base (its row, and its head decodes hidden-state fusion)."""
    routers = {f: exp.feature_router(experts, f, exp.profile.router, tag) for f in features}
    return score(ScoreRequest(windows=exp.study_sets, experts=experts,
                              routers={f: Routed(r, f) for f, r in routers.items()},
                              base=base, extra={"weight average": average_weights(list(experts.specialists))},
                              hidden_head=base.lm_head, calibration=True, batch_size=exp.profile.eval_batch_size))


def score_all(exp, sets: Sets) -> None:
    """Scores of the different set (every router input) and of every control (the shared trunk)."""
    x = sets.bases[sets.base_seeds[0]]
    sets.scores["different"] = score_set(exp, sets.experts["different"], x, features=list(FEATURES), tag="different")
    for s, b in sets.bases.items():
        sets.scores[str(s)] = score_set(exp, sets.experts[str(s)], b, features=[SHARED_TRUNK], tag=f"shared base {s}")


# -- what each set reports on its own --------------------------------------------------------------
def best_specialist(sc: Scores) -> str:
    table = loss_table(sc.nll)
    return str(table.loc[[r for r in SPECIALIST_ROWS if r in table.index], "mixed"].idxmin())


def set_report(sc: Scores, routers: Sequence[str], own_base_loss: Mapping[str, float]) -> dict:
    """One set on its own: table, mixed losses, routing per router input, calibration, the specialists'
    own-domain gains over their own bases."""
    table = loss_table(sc.nll)
    own = {d: float(table.loc[f"{d} specialist", d]) for d in DOMAINS}
    spec = {d: sc.spec_nll(d) for d in sc.domains()}
    acc = {r: routing_accuracy(sc.weights[r]) for r in routers}
    return {
        "table": table_json(table), "mixed": {row: float(v) for row, v in table["mixed"].items()},
        "best_specialist": best_specialist(sc), "own_domain_loss": own,
        "own_domain_gain_over_own_base_%": {d: (own_base_loss[d] - own[d]) / own_base_loss[d] * 100 for d in DOMAINS},
        "routing_accuracy": acc, "mean_routing_accuracy": {r: float(np.mean(list(a.values()))) for r, a in acc.items()},
        "mean_oracle_agreement": {r: float(np.mean(list(oracle_agreement(sc.weights[r], spec).values()))) for r in routers},
        "confusion": {r: table_json(confusion_matrix(sc.weights[r])) for r in routers},
        "mean_weights": {r: table_json(mean_weights(sc.weights[r])) for r in routers},
        "oracle_gap": {r: float(table.loc[fused_row("soft", r), "mixed"] - table.loc[ORACLE, "mixed"]) for r in routers},
        **calibration_report(sc.stats),
    }


def calibration_report(stats: Mapping[str, Mapping[str, dict]]) -> dict:
    """Calibration of every row with statistics, per domain and over all domains ("all")."""
    calib = {}
    for row, per in stats.items():
        calib[row] = {d: calibration_from_stats(s) for d, s in per.items()}
        calib[row]["all"] = calibration_from_stats(merge_stats(per))
    scale = {s: calib[s]["all"]["logit_scale"] for s in SPECIALIST_ROWS if s in calib}
    return {"calibration": calib, "logit_scale": scale, "logit_scale_ratio": float(max(scale.values()) / min(scale.values()))}


def router_inputs(rep: Mapping) -> dict[str, dict]:
    """The different-base set's four router inputs side by side: routing, fused loss, oracle gap."""
    return {f: {"routing accuracy": rep["mean_routing_accuracy"][f], "oracle agreement": rep["mean_oracle_agreement"][f],
                "fused mixed loss": rep["mixed"][fused_row("soft", f)], "oracle gap": rep["oracle_gap"][f]}
            for f in rep["routing_accuracy"]}


# -- geometry --------------------------------------------------------------------------------------
@torch.no_grad()
def representations(exp, sets: Sets) -> dict:
    """How alike are the representations? CKA and paired cosine on the first held-out windows."""
    k, bases, dev = exp.k, sets.bases, resolve()
    shared, different = sets.experts[sets.matched], sets.experts["different"]
    to_device([*bases.values(), *shared.specialists, *different.specialists], dev)
    xs = to_device(token_sample(exp.study_sets, min(8, exp.profile.study_windows)), dev)
    final = lambda ex: {m.manifest["domain"]: h for m, h in zip(ex.specialists, ex.crowns(ex.trunks(xs))[0])}  # noqa: E731
    with autocast(dev):
        states = {
            "embeddings (bases)": {f"base seed {s}": b.trunk(xs, 0) for s, b in bases.items()},
            f"trunk output at K={k} (bases)": {f"base seed {s}": b.trunk(xs, k) for s, b in bases.items()},
            "final hidden (bases)": {f"base seed {s}": b.crown_hidden(b.trunk(xs, k), k) for s, b in bases.items()},
            "final hidden (shared-base specialists)": final(shared),
            "final hidden (different-base specialists)": final(different),
        }
    return {name: cka_block(h) for name, h in to_host(states).items()}


def hidden_fusion_check(sc: Scores) -> float:
    """With one shared base the head is shared and linear, so hidden-state fusion equals logit fusion:
    the largest token difference between the two rows (nats)."""
    hidden, soft = fused_row("hidden", SHARED_TRUNK), fused_row("soft", SHARED_TRUNK)
    return max(float((sc.nll[hidden][d] - sc.nll[soft][d]).abs().max()) for d in DOMAINS)

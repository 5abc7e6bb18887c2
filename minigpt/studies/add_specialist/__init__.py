"""A fourth specialist joins later: Chapter 32's claim that a specialist can be added without
retraining the system, measured (``python -m minigpt add-specialist``).

Steps, one module each:

1. :mod:`.joining`: the fourth domain (Shakespeare's plays, :mod:`minigpt.late_domain`) encoded by the
   pinned tokenizer, its crown trained on the frozen trunk like the others, and three ways to let the
   router know about it: (a) a four-way router from scratch, (b) the chapter's router grown by one
   output, only that output trained on a little data, (c) the same grown by a prototype row, no
   gradient step. The alternatives: a crown from another base (refused by the compatibility check,
   then forced in), a monolithic crown retrained on all four domains.
2. :mod:`.growth`: growing a router by one output, and taking one away.
3. :mod:`.measure`: before and after on the same held-out windows of all four domains, with paired
   intervals: what the old domains lose, what the new one gains, routing, oracle gaps, removal.
"""
from __future__ import annotations

import time
from pathlib import Path

from ... import compat
from ...fusion import FusedModel
from ...scoring import SPECIALIST_ROWS, ScoreRequest, score
from ...streams import split_windows
from ..common import refuse_then_force, write_report
from . import measure
from .growth import Without
from .joining import (FOUR, LATE, fingerprints, four_domain_streams, grown_router, monolithic_four, new_crown,
                      other_base_router, prototype_router, scratch_router)
from .summary import summarize

__all__ = ["add_specialist", "summarize"]
NAMES = [*SPECIALIST_ROWS, f"{LATE} specialist"]


def _score(exp, eval4, models, routers, shared=True, extra=None):
    return score(ScoreRequest(windows=eval4, experts=FusedModel(models, exp.k, shared=shared), routers=routers,
                              base=exp.base(), extra=extra or {}, names=NAMES[:len(models)],
                              batch_size=exp.profile.eval_batch_size))


def _train_all(exp, streams, late_fp):
    """Everything joining trains (or loads): the crowns, the monolithic alternative, the routers."""
    specs = exp.specialists()
    crown = new_crown(exp, streams, late_fp)
    models = [*specs, crown]
    other = new_crown(exp, streams, late_fp, base_seed=exp.seed + 1)
    routers = {"scratch": scratch_router(exp, models, streams), "grown": grown_router(exp, models, streams),
               "prototype": prototype_router(exp, models, streams)}
    return {"specs": specs, "crown": crown, "models": models, "other": other, "routers": routers,
            "other_router": other_base_router(exp, [*specs, other], streams),
            "mono4": monolithic_four(exp, streams, late_fp), "mono3": exp.monolithic()}


def _joining_cost(t: dict) -> dict:
    """Steps and seconds each way of joining trained, against retraining one crown on all four domains."""
    crown = lambda m: {"steps": len(m.manifest["train_losses"]), "seconds": m.manifest["train_seconds"]}  # noqa: E731
    out = {w: {"crown": crown(t["crown"]), "router_steps": len(getattr(r, "train_history", None) or []),
               "router_seconds": getattr(r, "train_seconds", None) or 0.0} for w, r in t["routers"].items()}
    out["monolithic (four domains)"] = {"crown": crown(t["mono4"]), "router_steps": 0, "router_seconds": 0.0}
    return out


def add_specialist(exp, out: Path | None = None) -> dict:
    """The fourth domain joins: its crown, three ways to grow the router, what it costs and buys, the
    negative case and removal. Writes ``add_specialist.json``; ``_raw`` keeps the Scores."""
    t0 = time.time()
    before_fp = fingerprints(exp)
    streams, late = four_domain_streams(exp)
    t = _train_all(exp, streams, late["late_corpus_fingerprint"])
    eval4 = split_windows(streams, "eval", exp.profile.study_windows, exp.profile.model.block_size)
    before = _score(exp, eval4, t["specs"], {measure.BEFORE: exp.router("per_token")},
                    extra={"monolithic (three domains)": t["mono3"]})
    removals = {f"without {n}": Without(t["routers"]["scratch"], i) for i, n in enumerate(FOUR)}
    after = _score(exp, eval4, t["models"], {**t["routers"], **removals},
                   extra={"monolithic (four domains)": t["mono4"]})
    negative = _score(exp, eval4, [*t["specs"], t["other"]], {"other base": t["other_router"]}, shared=False)
    refusal, forced = refuse_then_force([*t["specs"], t["other"]], exp.k)
    report = {"profile": exp.profile.name, **exp.provenance(), "seed": exp.seed, "freeze_k": exp.k,
              "domains": list(FOUR), "late_domain": LATE, **late, "windows_per_domain": exp.profile.study_windows,
              "fingerprints_before": before_fp, "fingerprints_after": fingerprints(exp),
              "compat": {"joined": compat.check(t["models"], exp.k)["ok"], "other_base_refusal": refusal,
                         "other_base_mismatches": forced["mismatches"]},
              "loss_margin_nats": measure.LOSS_MARGIN, "tables": measure.tables(before, after, negative),
              "old_domains": measure.old_domains(before, after),
              "new_domain": {w: measure.new_domain(before, after, w) for w in measure.WAYS},
              "routing_accuracy": measure.routing(after, measure.WAYS),
              "oracle_gap": measure.oracle_gaps(before, after), "removal": measure.removal(after, FOUR),
              "other_base": {"old_domains": measure.old_domains(before, negative, ["other base"])["other base"],
                             "new_domain": measure.new_domain(before, negative, "other base")},
              "cost": _joining_cost(t), "new_crown_train_losses": t["crown"].manifest["train_losses"]}
    report["fingerprints_unchanged"] = report["fingerprints_before"] == report["fingerprints_after"]
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = {"before": before, "after": after, "negative": negative}
    return write_report(exp, report, "add_specialist", out)

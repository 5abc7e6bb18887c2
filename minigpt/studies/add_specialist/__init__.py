"""A fourth specialist joins later: Chapter 32's claim that a specialist can be added without
retraining the system, measured (``python -m minigpt add-specialist``).

Steps, one module each:

1. :mod:`.joining`: the fourth domain (Shakespeare's plays, :mod:`minigpt.late_domain`) encoded by the
   pinned tokenizer, its crown trained on the frozen trunk like the others, and three ways to let the
   router know about it: (a) a four-way router from scratch, (b) the chapter's router grown by one
   output, only that output trained on a little data, (c) the same grown by a prototype row, no
   gradient step. The alternatives: a crown from another base (refused by the compatibility check,
   then forced in), a monolithic crown retrained on all four domains. They train five crowns' steps
   more, so the book runs without them and reads them from the committed reference
   (:func:`with_alternatives`).
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
from ..common import committed_with, refuse_then_force, write_report
from . import measure
from .growth import Without
from .joining import (FOUR, LATE, fingerprints, four_domain_streams, grown_router, monolithic_four, new_crown,
                      other_base_router, prototype_router, scratch_router)
from .summary import summarize

__all__ = ["add_specialist", "with_alternatives", "summarize"]
NAMES = [*SPECIALIST_ROWS, f"{LATE} specialist"]


def _score(exp, eval4, models, routers, shared=True, extra=None):
    return score(ScoreRequest(windows=eval4, experts=FusedModel(models, exp.k, shared=shared), routers=routers,
                              base=exp.base(), extra=extra or {}, names=NAMES[:len(models)],
                              batch_size=exp.profile.eval_batch_size))


def _train_all(exp, streams, late_fp):
    """What joining trains (or loads): the new crown and the routers."""
    specs = exp.specialists()
    crown = new_crown(exp, streams, late_fp)
    models = [*specs, crown]
    routers = {"scratch": scratch_router(exp, models, streams), "grown": grown_router(exp, models, streams),
               "prototype": prototype_router(exp, models, streams)}
    return {"specs": specs, "crown": crown, "models": models, "routers": routers, "mono3": exp.monolithic()}


def _train_alternatives(exp, streams, late_fp, t: dict) -> dict:
    """The alternatives: the new crown from another base with its router, and a monolithic crown on four domains."""
    other = new_crown(exp, streams, late_fp, base_seed=exp.seed + 1)
    return {"other": other, "other_router": other_base_router(exp, [*t["specs"], other], streams),
            "mono4": monolithic_four(exp, streams, late_fp)}


def _alternatives(exp, eval4, t: dict, before) -> dict:
    """The report's part on the alternatives (``t`` holds their models), against the ``before`` scores."""
    negative = _score(exp, eval4, [*t["specs"], t["other"]], {"other base": t["other_router"]}, shared=False)
    refusal, forced = refuse_then_force([*t["specs"], t["other"]], exp.k)
    return {"negative": negative, "compat": {"other_base_refusal": refusal, "other_base_mismatches": forced["mismatches"]},
            "other_base": {"old_domains": measure.old_domains(before, negative, ["other base"])["other base"],
                           "new_domain": measure.new_domain(before, negative, "other base")}}


def _joining_cost(t: dict) -> dict:
    """Steps and seconds each way of joining trained, against retraining one crown on all four domains."""
    crown = lambda m: {"steps": len(m.manifest["train_losses"]), "seconds": m.manifest["train_seconds"]}  # noqa: E731
    out = {w: {"crown": crown(t["crown"]), "router_steps": len(getattr(r, "train_history", None) or []),
               "router_seconds": getattr(r, "train_seconds", None) or 0.0} for w, r in t["routers"].items()}
    if "mono4" in t:
        out["monolithic (four domains)"] = {"crown": crown(t["mono4"]), "router_steps": 0, "router_seconds": 0.0}
    return out


def add_specialist(exp, out: Path | None = None, alternatives: bool = True) -> dict:
    """The fourth domain joins: its crown, three ways to grow the router, what it costs and buys, removal,
    and (``alternatives``) the negative case and a monolithic crown on four domains. Writes
    ``add_specialist.json``; ``_raw`` keeps the Scores."""
    t0 = time.time()
    before_fp = fingerprints(exp)
    streams, late = four_domain_streams(exp)
    t = _train_all(exp, streams, late["late_corpus_fingerprint"])
    if alternatives:
        t |= _train_alternatives(exp, streams, late["late_corpus_fingerprint"], t)
    eval4 = split_windows(streams, "eval", exp.profile.study_windows, exp.profile.model.block_size)
    before = _score(exp, eval4, t["specs"], {measure.BEFORE: exp.router("per_token")},
                    extra={"monolithic (three domains)": t["mono3"]})
    removals = {f"without {n}": Without(t["routers"]["scratch"], i) for i, n in enumerate(FOUR)}
    after = _score(exp, eval4, t["models"], {**t["routers"], **removals},
                   extra={"monolithic (four domains)": t["mono4"]} if alternatives else {})
    alt = _alternatives(exp, eval4, t, before) if alternatives else {"negative": None, "compat": {}}
    report = {"profile": exp.profile.name, **exp.provenance(), "seed": exp.seed, "freeze_k": exp.k,
              "domains": list(FOUR), "late_domain": LATE, **late, "windows_per_domain": exp.profile.study_windows,
              "fingerprints_before": before_fp, "fingerprints_after": fingerprints(exp),
              "compat": {"joined": compat.check(t["models"], exp.k)["ok"], **alt["compat"]},
              "loss_margin_nats": measure.LOSS_MARGIN, "tables": measure.tables(before, after, alt["negative"]),
              "old_domains": measure.old_domains(before, after),
              "new_domain": {w: measure.new_domain(before, after, w) for w in measure.WAYS},
              "routing_accuracy": measure.routing(after, measure.WAYS),
              "oracle_gap": measure.oracle_gaps(before, after), "removal": measure.removal(after, FOUR),
              **({"other_base": alt["other_base"]} if alternatives else {}),
              "cost": _joining_cost(t), "new_crown_train_losses": t["crown"].manifest["train_losses"]}
    report["fingerprints_unchanged"] = report["fingerprints_before"] == report["fingerprints_after"]
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = {"before": before, "after": after, "negative": alt["negative"]}
    return write_report(exp, report, "add_specialist", out)


def with_alternatives(exp, rep: dict) -> dict:
    """``rep`` when it measured the alternatives, else the committed reference run's report (the book
    joins without them: a crown from another base and a four-domain monolithic crown are five crowns'
    steps), else the whole study run here."""
    if "other_base" in rep:
        return rep
    committed = committed_with(exp, "add_specialist", "other_base")
    if committed is not None:
        print("the alternatives as the committed reference run measured them (results/reference/)")
        return committed
    return add_specialist(exp)

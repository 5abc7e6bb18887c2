"""Break 1 (Chapter 32): specialists fine-tuned from bases pretrained with different seeds.

Steps, one module each:

1. :mod:`.sets` builds the different-base set (code from base X's run, medical and legal from the
   next seed's run) and one shared-base control per base seed, and scores them: the different set
   with a router on each of four inputs (base X's trunk, the concatenated trunks, base X's
   embeddings, a token classifier that reads no model), each control on its shared trunk.
2. :mod:`.matched` judges the break on what it changes: every metric measured within a set first
   (against its own base, specialists and oracle), then the different set against its matched
   control (base X's) and against the mean of the controls, with paired intervals; each metric is
   one of the chapter's predictions, which the interval decides (held, reversed, inconclusive).
3. The compatibility check refuses the different-base set; the geometry (CKA, paired cosine) and a
   tokenizer mismatch (:mod:`..tokenizer_mismatch`) complete the break.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ... import compat
from ...config import DOMAINS
from ...scoring import SHARED_TRUNK, fused_row
from ..common import committed_with, refuse_then_force, write_report
from ..tokenizer_mismatch import tokenizer_mismatch
from .matched import PREDICTIONS, confound_check, headline_change, matched_comparison, what_fails_first
from .sets import (build_sets, hidden_fusion_check, representations, router_inputs, score_all, seed_run,
                   set_report)
from .summary import summarize

__all__ = ["break1", "with_tokenizer_case", "seed_run", "summarize", "PREDICTIONS"]


def _controls(sets, reports: dict) -> dict[str, dict]:
    """Each control's headline numbers, keyed by its base seed."""
    out = {}
    for c in sets.controls:
        r = reports[c]
        best, fused = r["mixed"][r["best_specialist"]], r["mixed"][fused_row("soft", SHARED_TRUNK)]
        out[c] = {"base_mixed": r["mixed"]["base"], "best_specialist_mixed": best, "fused_logits_mixed": fused,
                  "fusion_gain_vs_best_specialist_%": (best - fused) / best * 100,
                  "weight_average_mixed": r["mixed"]["weight average"], "oracle_gap": r["oracle_gap"][SHARED_TRUNK],
                  "mean_routing_accuracy": r["mean_routing_accuracy"][SHARED_TRUNK],
                  "own_domain_gain_over_own_base_%": r["own_domain_gain_over_own_base_%"]}
    return out


def _judge(sets, reports: dict) -> dict:
    """The matched comparison, the headline a reader would look at, the confound check, and their reading."""
    best = {name: reports[name]["best_specialist"] for name in reports}
    rows = matched_comparison(sets.scores["different"], {c: sets.scores[c] for c in sets.controls}, best, sets.matched)
    headline = headline_change(sets.scores["different"], sets.scores[sets.matched])
    failed = what_fails_first(rows)
    return {"matched": rows, "headline": headline,
            "confound": confound_check({c: reports[c]["mixed"]["base"] for c in sets.controls}, headline),
            "predictions": {o: [r["metric"] for r in rows if r["outcome"] == o]
                            for o in ("held", "reversed", "inconclusive", "mixed")},
            "what_fails_first": failed, "missed_by_headline": [] if headline["catches_it"] else failed}


def break1(exp, base_seeds: Sequence[int] | None = None, tokenizer_case: bool = True, out: Path | None = None) -> dict:
    """Specialists from differently seeded bases against shared-base controls on the same bases.

    ``base_seeds`` (default seed, seed+1, seed+1) gives one base per specialist, in DOMAINS order; the
    first is "base X", whose trunk the headline router reads and whose control is the matched one.
    Writes ``break1.json`` (default under the run's results folder); ``_raw`` keeps the Scores."""
    t0 = time.time()
    sets = build_sets(exp, base_seeds)
    score_all(exp, sets)
    own_bases = {d: sets.base_losses[s][d] for d, s in zip(DOMAINS, sets.base_seeds)}  # each specialist's own base
    reports = {"different": set_report(sets.scores["different"], list(sets.scores["different"].weights), own_bases),
               **{c: set_report(sets.scores[c], [SHARED_TRUNK], sets.base_losses[int(c)]) for c in sets.controls}}
    refusal, forced = refuse_then_force(list(sets.experts["different"].specialists), exp.k)
    report = {"profile": exp.profile.name, **exp.provenance(), "seed": exp.seed, "freeze_k": exp.k,
              "base_seeds": sets.base_seeds, "base_x_seed": sets.base_seeds[0], "matched_control": sets.matched,
              "router_config": exp.profile.router,
              "compat": {"refusal": refusal, "forced_report": forced,
                         "healthy_report": compat.check(list(sets.experts[sets.matched].specialists), exp.k)},
              "base_losses": {str(s): v for s, v in sets.base_losses.items()},
              "different": reports["different"], "shared": reports[sets.matched], "controls": _controls(sets, reports),
              "router_inputs": router_inputs(reports["different"]), **_judge(sets, reports),
              "hidden_vs_logit_fusion_max_diff": hidden_fusion_check(sets.scores[sets.matched]),
              "representations": representations(exp, sets)}
    if tokenizer_case:
        report["tokenizer_mismatch"] = tokenizer_mismatch(exp)
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = dict(sets.scores)
    return write_report(exp, report, "break1", out)


def with_tokenizer_case(exp, rep: dict) -> dict:
    """``rep`` with Break 1's tokenizer case: its own when it ran, else the committed reference run's (the
    book skips it: its crown trains under a second tokenizer), else measured here."""
    if "tokenizer_mismatch" in rep:
        return rep
    committed = committed_with(exp, "break1", "tokenizer_mismatch")
    if committed is not None:
        print("the tokenizer case as the committed reference run measured it (results/reference/)")
        return {**rep, "tokenizer_mismatch": committed["tokenizer_mismatch"]}
    return {**rep, "tokenizer_mismatch": tokenizer_mismatch(exp)}

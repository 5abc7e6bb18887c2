"""The chapter's experiment end to end: train or load every model, score every row, write the report.

``python -m minigpt run`` (``make run``) calls :func:`run`; notebooks 4, 5 and 8 call :func:`chapter_table`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .cache import write_json
from .checkpoint import model_fingerprint
from .config import RouterConfig, results_dir
from .analysis.costs import row_costs
from .analysis.routing import confusion_matrix, misrouting, misrouting_margins
from .evaluate import (HEADLINE, ORACLE, cross_domain_matrix, gap_by_position, litmus, loss_table, routing_accuracy,
                       table_json, whole_window_rows)
from .experiment import Experiment
from .fusion import average_weights
from .intervals import comparison_intervals
from .plots import plot_cross_domain
from .fusion import FusedModel
from .scoring import Scores, ScoreRequest, score


def out_dir(exp: Experiment) -> Path:
    """Where a run's reports go: ``<results>/<profile>/seed-<seed>``."""
    return results_dir() / exp.profile.name / f"seed-{exp.seed}"


def rounded(obj: Any, nd: int = 6) -> Any:
    """Floats rounded to ``nd`` places, inside any nesting of dicts."""
    if isinstance(obj, dict):
        return {k: rounded(v, nd) for k, v in obj.items()}
    return round(obj, nd) if isinstance(obj, float) else obj


def chapter_scores(exp: Experiment, k: int | None = None, router_cfg: RouterConfig | None = None) -> Scores:
    """Token losses and router weights of every row of the chapter's table on the held-out windows.
    The same call every time, so after the first one it reads the remembered scores back
    (:mod:`minigpt.score_cache`): :func:`chapter_table` and the notebooks' exercise checks share it."""
    k = exp.k if k is None else k
    specs = exp.specialists(k=k)
    routers = {"per-token": exp.router("per_token", router_cfg, k),
               "last-token": exp.router("last_token", router_cfg, k)}
    extra = {"weight average": average_weights(specs), "monolithic": exp.monolithic(k)}
    return score(ScoreRequest(windows=exp.eval_sets, experts=FusedModel(specs, k), routers=routers, base=exp.base(),
                              extra=extra, batch_size=exp.profile.eval_batch_size))


def chapter_table(exp: Experiment, k: int | None = None, router_cfg: RouterConfig | None = None) -> dict:
    """Score every row of the chapter's table on the held-out windows (models come from the cache)."""
    k = exp.k if k is None else k
    specs = exp.specialists(k=k)
    scores = chapter_scores(exp, k, router_cfg)
    table = loss_table(scores.nll)
    intervals = comparison_intervals(scores.nll, seed=exp.seed)
    router_params = sum(p.numel() for p in exp.router("per_token", router_cfg, k).parameters())  # a row's cost
    return {"table": table, "nll": scores.nll, "weights": scores.weights, "scores": scores,
            "intervals": intervals, "costs": row_costs([scores.rows[r] for r in table.index], specs[0], k, router_params),
            "rows": scores.rows,
            "routing_accuracy": {r: routing_accuracy(w) for r, w in scores.weights.items()},
            "cross_domain": cross_domain_matrix(scores.nll),
            "oracle_gap": float(table.loc[HEADLINE, "mixed"] - table.loc[ORACLE, "mixed"]),
            "oracle_gap_by_position": gap_by_position(scores.nll),
            "litmus": litmus(table, intervals),
            "misrouting": misrouting_summary(scores, table, "per-token")}


def misrouting_summary(scores: Scores, table, router: str) -> dict[str, dict]:
    """Per domain, what the router's mistakes look like (Chapter 32, question 5): how many tokens are
    misrouted, where most go, whether that specialist still beats the base on this text, how close the
    call was (median weight margin, how often the own specialist is second) and what it costs."""
    weights = scores.weights[router]
    wrong = misrouting(weights, {d: scores.spec_nll(d) for d in scores.domains()})
    margins = misrouting_margins(weights)
    cm = confusion_matrix(weights)
    out = {}
    for d in weights:
        dest = str(cm.loc[d].drop(f"{d} specialist").idxmax())
        out[d] = {**wrong[d], "most_frequent_wrong_choice": dest,
                  "it_beats_the_base_here": bool(table.loc[dest, d] < table.loc["base", d]),
                  "median_margin": margins[d]["median_margin"], "own_is_second": margins[d]["own_is_second"]}
    return out


def report(exp: Experiment, res: dict, wall_seconds: float) -> dict:
    """The JSON-ready ``table.json`` of one run: every number of the table with its provenance."""
    table = res["table"]
    return {
        "profile": exp.profile.name, "seed": exp.seed, "freeze_k": exp.k,
        "table": table_json(table), "rows": list(table.index), "columns": list(table.columns),
        "intervals": res["intervals"],
        "sees_whole_window": whole_window_rows(res["rows"]),
        "row_info": {name: r.to_json() for name, r in res["rows"].items()},
        "costs": json.loads(res["costs"].to_json(orient="index")),
        "routing_accuracy": rounded(res["routing_accuracy"]),
        "oracle_gap_nats": round(res["oracle_gap"], 6),
        "oracle_gap_by_position": rounded(res["oracle_gap_by_position"]),
        "headline": HEADLINE, "litmus": res["litmus"], "misrouting": rounded(res["misrouting"]),
        "cross_domain": table_json(res["cross_domain"]),
        **exp.provenance(), "base_fingerprint": model_fingerprint(exp.base()),
        "tokens": exp.streams.tokens(), "config": asdict(exp.profile),
        # models trained with another thread count differ in their last bits (README, "Reproducibility")
        "torch_threads": torch.get_num_threads(), "wall_seconds": round(wall_seconds, 1),
    }


def run(exp: Experiment, out: Path | None = None) -> dict:
    """Train (or load) everything, score it, and write ``table.json`` and ``cross_domain.png``."""
    t0 = time.time()
    res = chapter_table(exp)
    out = Path(out or out_dir(exp))
    out.mkdir(parents=True, exist_ok=True)
    res["report"], res["out_dir"] = report(exp, res, time.time() - t0), out
    write_json(out / "table.json", res["report"])
    plot_cross_domain(res["cross_domain"], out / "cross_domain.png")
    return res


def score_specialists(exp: Experiment, k: int | None = None, routers: dict | None = None,
                      windows: dict | None = None) -> Scores:
    """Held-out token losses of the base, each specialist, uniform mix and oracles (+ ``routers``) on
    ``windows`` (default: the headline's eval windows).

    Lighter than :func:`chapter_table`: it trains nothing beyond the base and the specialists (and
    whatever routers are passed in).
    """
    k = exp.k if k is None else k
    return score(ScoreRequest(windows=exp.eval_sets if windows is None else windows,
                              experts=FusedModel(exp.specialists(k=k), k), routers=routers or {},
                              base=exp.base(), batch_size=exp.profile.eval_batch_size))

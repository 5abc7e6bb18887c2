"""The headline numbers of several seeds side by side, with their mean and spread."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ..cache import write_json
from ..config import DOMAINS, results_dir
from ..scoring import HEADLINE
from .divergence import fusion_gain


def seed_summary(reports: Sequence[Mapping], router: str = "per-token") -> pd.DataFrame:
    """The headline numbers of several ``table.json`` reports, one row per seed plus mean and std.

    Columns: the headline fusion's gain over the best specialist on mixed data (%), its oracle gap
    (nats), the ``router``'s routing accuracy per domain (%) and the lowest of those. Reports that
    carry a ``routing_ceiling`` (``Experiment.routing_ceiling``) add that router's oracle gap and
    lowest routing accuracy: an optimistic reference for a router of this form on these features.
    The std row is the sample standard deviation (ddof=1), so it needs at least two seeds; with
    one it is NaN.
    """
    if not reports:
        raise ValueError("no results to summarise; run `python -m minigpt run --seed N` for some seeds first")
    seeds = [r["seed"] for r in reports]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat; give each seed once")
    rows = {}
    for rep in reports:
        table = pd.DataFrame.from_dict(rep["table"], orient="index")
        acc = {d: 100 * rep["routing_accuracy"][router][d] for d in DOMAINS}
        headline = rep.get("headline", HEADLINE)
        rows[f"seed {rep['seed']}"] = {"gain vs best specialist %": fusion_gain(table, headline),
                                       **{f"gain vs {r} %": float(table.loc[headline, f"Δ% vs {r}"])
                                          for r in ("monolithic", "uniform mix") if f"Δ% vs {r}" in table.columns},
                                       "oracle gap nats": rep["oracle_gap_nats"],
                                       **{f"routing {d} %": a for d, a in acc.items()},
                                       "routing min %": min(acc.values())}
        if "routing_ceiling" in rep:
            ceiling = rep["routing_ceiling"]
            rows[f"seed {rep['seed']}"].update({
                "ceiling gap nats": ceiling["oracle_gap_nats"],
                "ceiling routing min %": 100 * min(ceiling["routing_accuracy"][d] for d in DOMAINS)})
    out = pd.DataFrame.from_dict(rows, orient="index")
    stats = pd.DataFrame({"mean": out.mean(), "std": out.std(ddof=1)}).T
    return pd.concat([out, stats])


def write_seed_summary(reports: Sequence[Mapping], summary: pd.DataFrame) -> Path:
    """Write ``<results>/<profile>/seeds.json``: the summary and each seed's provenance; returns the path."""
    name = reports[0]["profile"]
    out = results_dir() / name / "seeds.json"
    write_json(out, {"profile": name, "seeds": [r["seed"] for r in reports], "headline": reports[0]["headline"],
                     "summary": summary.round(6).astype(object).where(summary.notna(), None).to_dict(orient="index"),
                     # each seed's paired 95 % intervals over its eval windows (minigpt.intervals)
                     "intervals": {f"seed-{r['seed']}": r.get("intervals", []) for r in reports},
                     "provenance": {f"seed-{r['seed']}": {k: r[k] for k in ("corpus_fingerprint", "tokenizer_fingerprint",
                                                                           "router_code", "base_fingerprint")}
                                    for r in reports}})
    return out

"""Every setting the book chose, re-made on the ``dev`` split (the eval split only reports).

``python -m minigpt decisions --profile cpu``. For each choice below, every candidate is trained
with everything else at the profile's values and scored on the same dev windows by the mixed loss
of the headline model (logit fusion with the per-token router). The current value stays unless a
candidate beats it beyond noise (a paired 95 % interval that excludes zero): chasing differences of
a few thousandths of a nat would pick noise. docs/design.md, "Decision log", records the outcome.

* ``specialist lr``: the specialists' learning rate at the profile's step budget (each candidate
  trains three new specialists and a router);
* ``freeze depth K``: the profile's K and its neighbours (three specialists and a router each; the
  freeze sweep of notebook 8 reports every K on eval, this is where K is chosen);
* ``router decay``, ``router normalisation``, ``target temperature``: the per-token router's
  settings, on the profile's specialists.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from ..config import RouterConfig
from ..evaluate import HEADLINE, loss_table
from ..experiment import Experiment
from ..intervals import bootstrap_interval
from ..fusion import FusedModel
from ..scoring import ScoreRequest, score
from .common import write_report

ROUTER_CHOICES: dict[str, tuple[str, tuple]] = {
    # choice -> (RouterConfig field, candidates)
    "router decay": ("decay", (0.8, 0.9, 0.95, 0.98)),
    "router normalisation": ("normalize", (True, False)),
    "target temperature": ("temp", (0.03, 0.1, 0.3, 1.0)),
}
LR_FACTORS = (0.5, 1.0, 2.0)  # specialist learning rates tried, relative to the profile's


def dev_score(exp: Experiment, router_cfg: RouterConfig | None = None) -> dict:
    """The headline model's mixed dev loss, its gain over the best specialist on dev, and (under
    ``_nll``) its token losses on the dev windows, for paired comparisons between candidates."""
    router = exp.router("per_token", router_cfg)
    scores = score(ScoreRequest(windows=exp.dev_sets, experts=FusedModel(exp.specialists(), exp.k),
                                routers={"per-token": router}, batch_size=exp.profile.eval_batch_size))
    table = loss_table(scores.nll)
    return {"dev_mixed": round(float(table.loc[HEADLINE, "mixed"]), 6),
            "dev_gain_vs_best_specialist_%": round(float(table.loc[HEADLINE, "Δ% vs best specialist"]), 4),
            "_nll": scores.nll[HEADLINE]}


def decide(name: str, current: Any, candidates: tuple, evaluate: Callable[[Any], dict]) -> dict:
    """Score every candidate with ``evaluate(value)`` on the same dev windows. The current value stays
    unless another candidate beats it beyond noise: its paired 95 % interval of dev loss minus the
    current's lies below zero; among such candidates the lowest dev loss wins."""
    if current not in candidates:
        raise ValueError(f"{name}: the current value {current!r} is not among the candidates {candidates}")
    rows = [{"value": v, **evaluate(v)} for v in candidates]
    now = next(r for r in rows if r["value"] == current)
    for r in rows:
        iv = bootstrap_interval({"candidate": r["_nll"], "current": now["_nll"]}, "candidate", ["current"], "nats")
        r["vs_current_nats"] = iv  # candidate − current: negative is better
    better = [r for r in rows if r["vs_current_nats"]["high"] < 0]
    chosen = min(better, key=lambda r: r["dev_mixed"])["value"] if better else current
    return {"choice": name, "split": "dev", "candidates": [{k: v for k, v in r.items() if k != "_nll"} for r in rows],
            "criterion": f"lowest mixed dev loss of {HEADLINE} among candidates whose paired 95 % interval "
                         "against the current value lies below zero; else the current value",
            "current": current, "chosen": chosen, "changed": chosen != current}


def decisions(exp: Experiment, out=None) -> dict:
    """Re-make the book's choices on dev; write ``decisions.json`` next to ``table.json``."""
    p = exp.profile
    lr = p.specialist.lr
    lrs = tuple(round(lr * f, 10) for f in LR_FACTORS)
    with_lr = lambda v: Experiment(replace(p, specialist=replace(p.specialist, lr=v)), exp.seed)  # noqa: E731
    choices = [decide("specialist lr", lr, lrs, lambda v: dev_score(with_lr(v)))]
    ks = tuple(sorted({max(0, p.freeze_k - 1), p.freeze_k, min(p.model.n_layer - 1, p.freeze_k + 1)}))
    choices.append(decide("freeze depth K", p.freeze_k, ks,
                          lambda v: dev_score(Experiment(replace(p, freeze_k=v), exp.seed))))
    for name, (field, candidates) in ROUTER_CHOICES.items():
        choices.append(decide(name, getattr(p.router, field), candidates,
                              lambda v, f=field: dev_score(exp, replace(p.router, **{f: v}))))
    report = {"profile": p.name, "seed": exp.seed, "dev_windows_per_domain": p.dev_chunks,
              "specialist_steps": p.specialist.steps, "choices": choices, **exp.provenance()}
    return write_report(exp, report, "decisions", out)


def summarize(rep: dict) -> str:
    lines = [f"Choices re-made on the dev split ({rep['dev_windows_per_domain']} windows per domain), "
             f"profile {rep['profile']}, seed {rep['seed']}:"]
    for c in rep["choices"]:
        lines.append(f"\n{c['choice']}: current {c['current']}, chosen {c['chosen']}"
                     f" ({'CHANGED' if c['changed'] else 'unchanged'})")
        for r in c["candidates"]:
            iv = r["vs_current_nats"]
            lines.append(f"  {str(r['value']):>8}  dev mixed {r['dev_mixed']:.4f}  "
                         f"gain vs best specialist {r['dev_gain_vs_best_specialist_%']:+.2f}%  "
                         f"vs current {iv['estimate']:+.4f} nats [{iv['low']:+.4f}, {iv['high']:+.4f}]")
    return "\n".join(lines)

"""The two breaks of Chapter 32 and the freeze-depth sweep, measured rather than staged.

* :func:`break1` -- specialists fine-tuned from bases pretrained with different seeds, next to the
  same pipeline with one shared base; plus a specialist trained with a different tokenizer.
* :func:`break2` -- routers trained on imbalanced data and/or with a near-zero target temperature.
* :func:`freeze_sweep` -- K = 0..L-1 and the divergence -> fusion-gain relation.

Every function takes an :class:`~minigpt.experiment.Experiment` (models and routers come from its
cache), returns a JSON-ready report with every number it computed and the seeds it used, and
writes it to ``results_root()/<profile>/seed-<s>/<name>.json``. Settings are fixed up front and
never chosen after looking at the outcome; conclusions (``what_fails_first``, ``silent_collapse``)
are computed from the measurements, so they change when the measurements do.
"""
from __future__ import annotations

import copy
import glob
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_model, save_model

from . import compat
from . import data as data_mod
from .analysis import (cka_matrix, divergence, fit_gain_vs_divergence, fusion_gain, linear_cka, mean_off_diagonal,
                       own_domain_gains, paired_cosine)
from .cache import cache_root, cached, config_key, write_json
from .checkpoint import load_checkpoint, model_fingerprint, read_manifest, save_checkpoint, trunk_hash
from .config import RouterConfig
from .data import DOMAINS
from .diagnostics import (calibration_from_stats, calibration_stats, confusion_matrix, dominant_weight,
                          gate_histograms, mean_weights, merge_stats, misrouting, oracle_agreement, routing_accuracy,
                          weight_on)
from .evaluate import HEADLINE, ORACLE, SPECIALIST_ROWS, collect, gap_by_position, litmus, loss_table
from .fusion import average_weights, broadcast_weights, fuse_logits, fuse_probs, hard_weights, uniform_weights
from .model import GPT, token_nll_from_logprobs
from .router import CausalRouter, router_code_fingerprint, train_router
from .streams import encode_stream, eval_windows, mixed_windows, random_windows
from .tokenizer import eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer
from .train import train_lm

# -- helpers ------------------------------------------------------------------------------------


def _out_dir(exp, out_dir: Path | None) -> Path:
    from .experiment import results_root

    return Path(out_dir or results_root() / exp.profile.name / f"seed-{exp.seed}")


def _write(report: dict, path: Path) -> None:
    """Write the report without the raw tensors kept for plotting (keys starting with '_')."""
    write_json(path, {k: v for k, v in report.items() if not k.startswith("_")})


def _table_json(table) -> dict:
    return json.loads(table.round(6).to_json(orient="index"))


def _window_means(nll: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {d: v.double().mean(-1) for d, v in nll.items()}  # (n,) mean loss per window


def _paired(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mixed (equal-weight over domains) b - a on the same windows, with its standard error."""
    deltas, var = [], 0.0
    for d in a:
        diff = b[d] - a[d]
        deltas.append(float(diff.mean()))
        var += float(diff.var(unbiased=True)) / diff.numel() if diff.numel() > 1 else 0.0
    return {"delta": float(np.mean(deltas)), "se": float(np.sqrt(var) / len(deltas))}


def _window_accuracy(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {d: (w.argmax(-1) == DOMAINS.index(d)).double().mean(-1) for d, w in weights.items()}


def _token_sample(eval_sets: Mapping[str, tuple], per_domain: int) -> torch.Tensor:
    """The first ``per_domain`` held-out windows of every domain: the inputs CKA is computed on."""
    return torch.cat([x[:per_domain] for x, _ in eval_sets.values()])


def _flat(h: torch.Tensor) -> torch.Tensor:
    return h.reshape(-1, h.shape[-1])


# -- specialists with or without a shared trunk -------------------------------------------------
FEATURES: dict[str, Callable] = {
    # what a router can read when there is no shared trunk (Chapter 32, Break 1); X = the first model
    "trunk of base X": lambda x, trunks, models: trunks[0],
    "concatenated trunks": lambda x, trunks, models: torch.cat(trunks, dim=-1),
    "embeddings of base X": lambda x, trunks, models: models[0].trunk(x, 0),
}


class SpecialistSet:
    """N specialists at freeze depth K. With ``shared`` the trunk runs once; otherwise each model
    runs its own trunk (the only honest option when the bases differ)."""

    def __init__(self, models: Sequence[GPT], k: int, shared: bool) -> None:
        self.models, self.k, self.shared = list(models), k, shared

    def trunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.shared:
            return [self.models[0].trunk(x, self.k)] * len(self.models)
        return [m.trunk(x, self.k) for m in self.models]

    def forward_all(self, x: torch.Tensor):
        """-> trunks (list of (B, T, C)), final hidden (N, B, T, C), logits (N, B, T, V)."""
        trunks = self.trunks(x)
        hidden = torch.stack([m.crown_hidden(h, self.k) for m, h in zip(self.models, trunks)])
        logits = torch.stack([m.lm_head(hd) for m, hd in zip(self.models, hidden)])
        return trunks, hidden, logits

    def expert_fn(self, feature: str):
        def fn(x):
            trunks = self.trunks(x)
            logits = torch.stack([m.crown(h, self.k) for m, h in zip(self.models, trunks)])
            return FEATURES[feature](x, trunks, self.models), logits
        return fn

    def feature_dim(self, feature: str) -> int:
        c = self.models[0].config.n_embd
        return c * len(self.models) if feature == "concatenated trunks" else c


def _router(exp, sset: SpecialistSet, feature: str, cfg: RouterConfig, tag: str) -> nn.Module:
    """A causal per-token router on ``feature``, trained on the router split and cached.

    Every router of a comparison gets the same config, the same initialisation seed and the same
    training batches (same data seed), so the only difference is what it reads and whom it routes.
    """
    from .experiment import derive_seed

    n, dim = len(sset.models), sset.feature_dim(feature)
    key = config_key("break-router", feature, router_code_fingerprint(), cfg,
                     [model_fingerprint(m) for m in sset.models], sset.k, sset.shared, exp.seed,
                     exp.corpus_fingerprint)
    path = cache_root() / "routers" / f"break-{key}.safetensors"

    def build():
        torch.manual_seed(derive_seed(exp.seed, "break-router-init", feature))
        router = CausalRouter(dim, n)
        T = exp.profile.model.block_size
        batch = lambda g: mixed_windows(exp.streams, "router", cfg.batch_size, T, g, cfg.domain_mix)  # noqa: E731
        train_router(router, batch, sset.expert_fn(feature), cfg, derive_seed(exp.seed, "router", "per_token"),
                     desc=f"router [{tag}: {feature}]")
        return router

    def load(p):
        router = CausalRouter(dim, n)
        load_model(router, str(p))
        return router.eval()

    return cached(path, build, lambda r, tmp: save_model(r, str(tmp)), load)


@torch.no_grad()
def score_set(sset: SpecialistSet, routers: Mapping[str, tuple[nn.Module, str]], eval_sets: Mapping[str, tuple],
              base: GPT, head: nn.Module, extra: Mapping[str, GPT] | None = None, batch_size: int = 16) -> dict:
    """Every row for one specialist set on the held-out windows.

    Rows: base, specialists, ``extra`` models, uniform mix, per router fused logits / probs /
    hidden states (crowns' final hidden states mixed, then ``head``) / hard, and the oracles.
    Returns ``nll[row][domain]`` (n, T), ``weights[router][domain]`` (n, T, N), per-specialist
    calibration statistics, and ``spec_nll[domain]`` (N, n, T).
    """
    nll: dict[str, dict[str, list]] = {}
    weights: dict[str, dict[str, list]] = {r: {} for r in routers}
    stats: dict[str, dict[str, list]] = {}
    n = len(sset.models)

    def add(row, domain, value):
        nll.setdefault(row, {}).setdefault(domain, []).append(value)

    def nll_of(logits, y):
        return token_nll_from_logprobs(F.log_softmax(logits.float(), -1), y)

    for domain, (x_all, y_all) in eval_sets.items():
        for i in range(0, x_all.shape[0], batch_size):
            x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
            add("base", domain, nll_of(base(x)[0], y))
            for name, model in (extra or {}).items():
                add(name, domain, nll_of(model(x)[0], y))
            trunks, hidden, logits = sset.forward_all(x)
            spec = torch.stack([nll_of(l, y) for l in logits])  # (N, B, T)
            for j in range(n):
                add(SPECIALIST_ROWS[j], domain, spec[j])
                stats.setdefault(SPECIALIST_ROWS[j], {}).setdefault(domain, []).append(calibration_stats(logits[j], y))
            add("uniform mix", domain, nll_of(fuse_logits(uniform_weights(x.shape[0], n), logits), y))
            for rname, (router, feature) in routers.items():
                w = router(FEATURES[feature](x, trunks, sset.models))  # (B, T, N)
                fused = fuse_logits(w, logits)
                add(f"fused logits [{rname}]", domain, nll_of(fused, y))
                add(f"fused probs [{rname}]", domain, token_nll_from_logprobs(fuse_probs(w, logits), y))
                add(f"fused hidden [{rname}]", domain, nll_of(head((broadcast_weights(w, n) * hidden).sum(0)), y))
                add(f"fused hard [{rname}]", domain, nll_of(fuse_logits(hard_weights(w), logits), y))
                stats.setdefault(f"fused logits [{rname}]", {}).setdefault(domain, []).append(calibration_stats(fused, y))
                weights[rname].setdefault(domain, []).append(w)
            best = spec.mean(-1).argmin(0)
            add(ORACLE, domain, spec.gather(0, best.view(1, -1, 1).expand(1, *spec.shape[1:]))[0])
            add("oracle (per token)", domain, spec.min(0).values)
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
    nll_t = {r: cat(d) for r, d in nll.items()}
    return {"nll": nll_t, "weights": {r: cat(d) for r, d in weights.items()},
            "stats": {m: {d: merge_stats(v) for d, v in per.items()} for m, per in stats.items()},
            "spec_nll": {d: torch.stack([nll_t[SPECIALIST_ROWS[j]][d] for j in range(n)]) for d in eval_sets}}


def _calibration_report(stats: Mapping[str, Mapping[str, dict]]) -> dict:
    out = {}
    for model, per in stats.items():
        out[model] = {d: calibration_from_stats(s) for d, s in per.items()}
        out[model]["all"] = calibration_from_stats(merge_stats(list(per.values())))
    return out


def _cka_block(acts: Mapping[str, torch.Tensor]) -> dict:
    m = cka_matrix({k: _flat(v) for k, v in acts.items()})
    names = list(acts)
    cos = {f"{a} | {b}": paired_cosine(_flat(acts[a]), _flat(acts[b]))
           for i, a in enumerate(names) for b in names[i + 1:]}
    return {"cka": _table_json(m), "mean_cka": mean_off_diagonal(m), "paired_cosine": cos,
            "mean_paired_cosine": float(np.mean(list(cos.values()))) if cos else float("nan")}


# -- Break 1 ------------------------------------------------------------------------------------
def _setting_report(res: dict, routers: Sequence[str], headline: str, own_base_loss: Mapping[str, float]) -> dict:
    """Everything reported for one specialist set; ``own_base_loss[d]`` is the loss on domain d of
    the base the d specialist was fine-tuned from."""
    table = loss_table(res["nll"])
    specs = [r for r in SPECIALIST_ROWS if r in table.index]
    best = float(table.loc[specs, "mixed"].min())
    calib = _calibration_report(res["stats"])
    acc = {r: routing_accuracy(res["weights"][r]) for r in routers}
    agree = {r: oracle_agreement(res["weights"][r], res["spec_nll"]) for r in routers}
    fused_rows = {kind: f"fused {kind} [{headline}]" for kind in ("logits", "probs", "hidden", "hard")}
    own = {d: float(table.loc[f"{d} specialist", d]) for d in DOMAINS}
    return {
        "table": _table_json(table),
        "mixed": {row: float(v) for row, v in table["mixed"].items()},
        "best_specialist": table.loc[specs, "mixed"].idxmin(), "best_specialist_mixed": best,
        "own_domain_loss": own,
        "own_domain_gain_over_own_base_%": {d: (own_base_loss[d] - own[d]) / own_base_loss[d] * 100 for d in DOMAINS},
        "each_specialist_wins_own_domain": all(table.loc[specs, d].idxmin() == f"{d} specialist" for d in DOMAINS),
        "routing_accuracy": acc,
        "mean_routing_accuracy": {r: float(np.mean(list(a.values()))) for r, a in acc.items()},
        "oracle_agreement": agree,
        "mean_oracle_agreement": {r: float(np.mean(list(a.values()))) for r, a in agree.items()},
        "confusion": {r: _table_json(confusion_matrix(res["weights"][r])) for r in routers},
        "mean_weights": {r: _table_json(mean_weights(res["weights"][r])) for r in routers},
        "misrouting": {r: misrouting(res["weights"][r], res["spec_nll"]) for r in routers},
        "oracle_gap": {r: float(table.loc[f"fused logits [{r}]", "mixed"] - table.loc[ORACLE, "mixed"]) for r in routers},
        "fusion_gain_vs_best_specialist_%": {kind: (best - float(table.loc[row, "mixed"])) / best * 100
                                              for kind, row in fused_rows.items()},
        "fused_beats_best_specialist": {kind: bool(table.loc[row, "mixed"] < best) for kind, row in fused_rows.items()},
        "calibration": calib,
        "mean_ece": float(np.mean([calib[s]["all"]["ece"] for s in specs])),
        "logit_scale": {s: calib[s]["all"]["logit_scale"] for s in specs},
        "logit_scale_ratio": float(max(calib[s]["all"]["logit_scale"] for s in specs)
                                   / min(calib[s]["all"]["logit_scale"] for s in specs)),
    }


def _degradations(shared: dict, diff: dict, rs: dict, rd: dict, router: str) -> list[dict]:
    """Each metric's change from the shared-base run to the different-bases run, worse = positive.

    ``relative_%`` is the change as a share of the shared-base value (for losses and the fusion
    gain that is a share of the loss, so those rows are on one scale); ``z`` is the change over its
    paired standard error across the same held-out windows (None where there is no per-window value).
    """
    out = []

    def add(name, ref, new, unit, rel, p, **extra):
        out.append({"metric": name, "shared": ref, "different": new, "unit": unit, "relative_%": rel,
                    "z": (p["delta"] / p["se"] if p["se"] > 0 else None) if p is not None else None, **extra})

    def loss_metric(name, row):
        p = _paired(_window_means(rs["nll"][row]), _window_means(rd["nll"][row]))
        ref = shared["mixed"][row]
        add(name, ref, diff["mixed"][row], "nats/token", p["delta"] / ref * 100, p)

    def per_window_hits(res, target):  # share of each window's tokens routed to ``target`` (n,) per domain
        w = res["weights"][router]
        return {d: (w[d].argmax(-1) == target(res, d).unsqueeze(-1)).double().mean(-1) for d in DOMAINS}

    own = lambda res, d: torch.full((res["weights"][router][d].shape[0],), DOMAINS.index(d))  # noqa: E731
    best = lambda res, d: res["spec_nll"][d].double().mean(-1).argmin(0)  # noqa: E731
    for name, key, target in (("routing accuracy", "mean_routing_accuracy", own),
                              ("oracle agreement", "mean_oracle_agreement", best)):
        p = _paired(per_window_hits(rd, target), per_window_hits(rs, target))  # positive when it drops
        ref = shared[key][router]
        add(f"{name} ({router})", ref, diff[key][router], "share of tokens", p["delta"] / ref * 100 if ref > 0 else None, p)
    for kind in ("logits", "probs", "hidden"):
        loss_metric(f"fused loss, {kind} fusion", f"fused {kind} [{router}]")
    # fusion gain over the best specialist of the same set (the chapter's bar), per window
    vs_best = lambda rep, res: {d: res["nll"][f"fused logits [{router}]"][d].double().mean(-1)  # noqa: E731
                                - res["nll"][rep["best_specialist"]][d].double().mean(-1) for d in DOMAINS}
    p = _paired(vs_best(shared, rs), vs_best(diff, rd))
    add("fusion gain over best specialist (logits)", shared["fusion_gain_vs_best_specialist_%"]["logits"],
        diff["fusion_gain_vs_best_specialist_%"]["logits"], "% of loss",
        shared["fusion_gain_vs_best_specialist_%"]["logits"] - diff["fusion_gain_vs_best_specialist_%"]["logits"], p,
        note="relative_% is the drop in percentage points")
    loss_metric("weight averaging", "weight average")
    gap = lambda res: {d: res["nll"][f"fused logits [{router}]"][d].double().mean(-1)  # noqa: E731
                       - res["nll"][ORACLE][d].double().mean(-1) for d in DOMAINS}
    p = _paired(gap(rs), gap(rd))
    add("oracle gap", shared["oracle_gap"][router], diff["oracle_gap"][router], "nats/token",
        p["delta"] / shared["mixed"][ORACLE] * 100, p, note="relative_% is the extra gap as a share of the oracle loss")
    add("calibration (mean ECE of the specialists)", shared["mean_ece"], diff["mean_ece"], "ECE",
        (diff["mean_ece"] - shared["mean_ece"]) / shared["mean_ece"] * 100, None)
    p = _paired({d: rs["nll"][f"{d} specialist"][d].double().mean(-1) for d in DOMAINS},
                {d: rd["nll"][f"{d} specialist"][d].double().mean(-1) for d in DOMAINS})
    ref = float(np.mean(list(shared["own_domain_loss"].values())))
    add("specialists on their own domain", ref, float(np.mean(list(diff["own_domain_loss"].values()))),
        "nats/token", p["delta"] / ref * 100, p)
    for m in out:
        z = m["z"]
        m["verdict"] = ("n/a (no per-window estimate)" if z is None else
                        "worse" if z > 2 else "better" if z < -2 else "no significant change")
    return sorted(out, key=lambda m: -(m["relative_%"] if m["relative_%"] is not None else -np.inf))


CONTRASTS = {
    # within one specialist set, so a weaker or stronger base under some specialists cancels out
    "hidden-state fusion minus logit fusion": ("fused hidden [{r}]", "fused logits [{r}]"),
    "probability fusion minus logit fusion": ("fused probs [{r}]", "fused logits [{r}]"),
    "weight averaging minus output averaging (uniform mix)": ("weight average", "uniform mix"),
    "learned router minus uniform mix": ("fused logits [{r}]", "uniform mix"),
    "fused logits minus best specialist": ("fused logits [{r}]", "{best}"),
    "fused logits minus oracle (oracle gap)": ("fused logits [{r}]", ORACLE),
}


def _contrasts(shared: dict, diff: dict, rs: dict, rd: dict, router: str) -> list[dict]:
    """Difference-in-differences, in nats: (a - b) with different bases minus (a - b) with a shared base."""
    out = []
    for name, (a, b) in CONTRASTS.items():
        def per_window(rep, res):
            ra, rb = (x.format(r=router, best=rep["best_specialist"]) for x in (a, b))
            return {d: res["nll"][ra][d].double().mean(-1) - res["nll"][rb][d].double().mean(-1) for d in DOMAINS}
        ws, wd = per_window(shared, rs), per_window(diff, rd)
        p = _paired(ws, wd)
        z = p["delta"] / p["se"] if p["se"] > 0 else None
        out.append({"contrast": name, "shared": float(np.mean([v.mean() for v in ws.values()])),
                    "different": float(np.mean([v.mean() for v in wd.values()])), "change_nats": p["delta"],
                    "se": p["se"], "z": z,
                    "verdict": "n/a" if z is None else "worse" if z > 2 else "better" if z < -2 else "no significant change"})
    return sorted(out, key=lambda c: -c["change_nats"])


def _domain_losses(model: GPT, eval_sets: Mapping[str, tuple], batch_size: int) -> dict[str, float]:
    with torch.no_grad():
        return {d: float(torch.cat([token_nll_from_logprobs(F.log_softmax(model(x[i:i + batch_size])[0].float(), -1),
                                                            y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).mean())
                for d, (x, y) in eval_sets.items()}


def _refuse_then_force(specs: Sequence[GPT], k: int) -> tuple[str | None, dict]:
    """What :func:`compat.check` says about ``specs`` (its refusal, or None), and its full report
    when told to let the mismatch through, as a deliberate break does."""
    try:
        compat.check(specs, k)
        refusal = None
    except compat.CompatibilityError as err:
        refusal = str(err)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", compat.CompatibilityWarning)
        return refusal, compat.check(specs, k, allow_mismatch=True)


def break1(exp, base_seeds: Sequence[int] | None = None, tokenizer_case: bool = True,
           out_dir: Path | None = None) -> dict:
    """Specialists from differently seeded bases vs the shared-base pipeline, measured side by side.

    ``base_seeds`` (default seed, seed+1, seed+2) gives one base per specialist, in DOMAINS order;
    the first is "base X": its trunk/embeddings feed the routers that read one model, and its head
    decodes hidden-state fusion (the heads differ when the bases do). Controls: the whole shared-base
    pipeline on each of the other bases too, so a difference in base *quality* between seeds is not
    mistaken for the missing shared geometry.
    """
    t0 = time.time()
    p, k = exp.profile, exp.k
    base_seeds = list(base_seeds) if base_seeds is not None else [exp.seed + i for i in range(len(DOMAINS))]
    if len(base_seeds) != len(DOMAINS):
        raise ValueError(f"give one base seed per domain ({len(DOMAINS)}), got {len(base_seeds)}")
    cfg = p.router
    bases = {s: exp.base(s) for s in dict.fromkeys(base_seeds)}
    if len(bases) > 1 and len({model_fingerprint(b) for b in bases.values()}) == 1:
        raise ValueError(f"profile {p.name!r} gives the same pretrained base for every seed, so there are no "
                         "different bases to break with; run Break 1 with a profile that trains its base (ci, cpu, gpu)")
    base_x = bases[base_seeds[0]]
    shared_specs = exp.specialists(base_seed=base_seeds[0])
    diff_specs = [exp.specialist(d, base_seed=s) for d, s in zip(DOMAINS, base_seeds)]
    base_losses = {s: _domain_losses(b, exp.eval_sets, p.eval_batch_size) for s, b in bases.items()}

    # 1. the check refuses, then we opt out explicitly
    refusal, forced = _refuse_then_force(diff_specs, k)
    healthy = compat.check(shared_specs, k)

    # 2. routers: the same three inputs, same config and batches, for both sets
    sets = {"shared": SpecialistSet(shared_specs, k, shared=True), "different": SpecialistSet(diff_specs, k, shared=False)}
    extra = {"shared": {"weight average": average_weights(shared_specs)},
             "different": {"weight average": average_weights(diff_specs)}}  # all parameters: nothing is shared
    own_base = {"shared": {d: base_losses[base_seeds[0]][d] for d in DOMAINS},
                "different": {d: base_losses[s][d] for d, s in zip(DOMAINS, base_seeds)}}
    results, reports = {}, {}
    for name, sset in sets.items():
        routers = {f: (_router(exp, sset, f, cfg, name), f) for f in FEATURES}
        results[name] = score_set(sset, routers, exp.eval_sets, base_x, base_x.lm_head, extra[name], p.eval_batch_size)
        reports[name] = _setting_report(results[name], list(FEATURES), "trunk of base X", own_base[name])
    rs, rd = results["shared"], results["different"]
    hidden_vs_logits_shared = max(float((rs["nll"]["fused hidden [trunk of base X]"][d]
                                         - rs["nll"]["fused logits [trunk of base X]"][d]).abs().max()) for d in DOMAINS)

    # 3. controls: the shared-base pipeline on every base seed
    feature = "trunk of base X"
    controls = {}
    for s, b in bases.items():
        if s == base_seeds[0]:
            rep, res = reports["shared"], rs
        else:
            specs = exp.specialists(base_seed=s)
            sset = SpecialistSet(specs, k, shared=True)
            res = score_set(sset, {feature: (_router(exp, sset, feature, cfg, f"shared base {s}"), feature)}, exp.eval_sets,
                            b, b.lm_head, {"weight average": average_weights(specs)}, p.eval_batch_size)
            rep = _setting_report(res, [feature], feature, base_losses[s])
        controls[str(s)] = {
            "base_mixed": float(np.mean(list(base_losses[s].values()))), "best_specialist_mixed": rep["best_specialist_mixed"],
            "fused_logits_mixed": rep["mixed"][f"fused logits [{feature}]"],
            "fusion_gain_vs_best_specialist_%": rep["fusion_gain_vs_best_specialist_%"]["logits"],
            "weight_average_mixed": rep["mixed"]["weight average"], "oracle_gap": rep["oracle_gap"][feature],
            "mean_routing_accuracy": rep["mean_routing_accuracy"][feature],
            "mean_oracle_agreement": rep["mean_oracle_agreement"][feature],
            "own_domain_gain_over_own_base_%": rep["own_domain_gain_over_own_base_%"],
            "each_specialist_wins_own_domain": rep["each_specialist_wins_own_domain"]}
    base_spread = max(c["base_mixed"] for c in controls.values()) - min(c["base_mixed"] for c in controls.values())
    fusion_effect = reports["shared"]["best_specialist_mixed"] - reports["shared"]["mixed"][f"fused logits [{feature}]"]

    # 4. how alike are the representations?
    xs = _token_sample(exp.eval_sets, min(8, p.eval_chunks))
    with torch.no_grad():
        reps = {
            "embeddings (bases)": _cka_block({f"base seed {s}": b.trunk(xs, 0) for s, b in bases.items()}),
            f"trunk output at K={k} (bases)": _cka_block({f"base seed {s}": b.trunk(xs, k) for s, b in bases.items()}),
            "final hidden (bases)": _cka_block({f"base seed {s}": b.crown_hidden(b.trunk(xs, k), k) for s, b in bases.items()}),
            "final hidden (shared-base specialists)": _cka_block(
                {m.manifest["domain"]: h for m, h in zip(shared_specs, sets["shared"].forward_all(xs)[1])}),
            "final hidden (different-base specialists)": _cka_block(
                {m.manifest["domain"]: h for m, h in zip(diff_specs, sets["different"].forward_all(xs)[1])}),
        }

    degr = _degradations(reports["shared"], reports["different"], rs, rd, feature)
    contrasts = _contrasts(reports["shared"], reports["different"], rs, rd, feature)
    significant = [m for m in degr if m["verdict"] == "worse"]
    worse_within = [c for c in contrasts if c["verdict"] == "worse"]
    headline = next(m for m in degr if m["metric"] == "fused loss, logits fusion")
    diff_fused = reports["different"]["mixed"][f"fused logits [{feature}]"]
    ctrl_fused = [c["fused_logits_mixed"] for c in controls.values()]
    report = {
        "profile": p.name, **exp.provenance(), "seed": exp.seed, "freeze_k": k, "base_seeds": base_seeds,
        "base_x_seed": base_seeds[0], "router_config": cfg,
        "seeds_note": "specialist training seeds derive from the experiment seed; each base from its own seed; "
                      "every router of the comparison uses the same init and data seed",
        "compat": {"refusal": refusal, "forced_report": forced, "healthy_report": healthy},
        "base_losses": {str(s): v for s, v in base_losses.items()},
        "base_quality_spread": base_spread, "shared_fusion_effect": fusion_effect,
        "confounded_by_base_quality": bool(base_spread > abs(fusion_effect)),
        "controls": controls,
        "different_vs_controls": {"different_fused_logits_mixed": diff_fused, "controls_min": min(ctrl_fused),
                                  "controls_max": max(ctrl_fused),
                                  "outside_control_range": bool(not min(ctrl_fused) <= diff_fused <= max(ctrl_fused))},
        "shared": reports["shared"], "different": reports["different"],
        "hidden_fusion_note": ("hidden-state fusion mixes the crowns' final hidden states and decodes with base X's "
                               "head; with a shared base the head is shared and linear, so it equals logit fusion "
                               f"(max token difference here {hidden_vs_logits_shared:.2e} nats)"),
        "representations": reps,
        "degradations": degr,
        "what_fails_first": significant[0]["metric"] if significant else None,
        "within_set_contrasts": contrasts,
        "what_fails_first_within_set": worse_within[0]["contrast"] if worse_within else None,
        "confound_note": (f"the bases differ in quality by {base_spread:.3f} nats, more than the shared-base fusion "
                          f"effect ({fusion_effect:+.3f}): the raw degradations mix weaker bases with the missing shared "
                          "geometry; the within-set contrasts (in nats) are less sensitive to it"
                          if base_spread > abs(fusion_effect) else None),
        "ranking_note": ("metrics ranked by their change relative to the shared-base value (units differ between "
                         "accuracy and loss rows, so read the raw numbers too); verdict 'worse' = more than 2 "
                         "paired standard errors over the held-out windows"),
        "headline_catches_it": headline["verdict"] == "worse",
        "missed_by_headline": [m["metric"] for m in significant if m["metric"] != headline["metric"]]
        if headline["verdict"] != "worse" else [],
    }
    if tokenizer_case:
        report["tokenizer_mismatch"] = tokenizer_mismatch(exp)
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = {"shared": rs, "different": rd}
    out = _out_dir(exp, out_dir) / "break1.json"
    _write(report, out)
    report["out_path"] = str(out)
    return report


# -- Break 1b: a specialist trained with another tokenizer ---------------------------------------
def alt_tokenizer(exp):
    """A BPE tokenizer of the same size learned on different text (the specialist split instead of
    the pretrain split, same character budget): same shapes, different merges and ids."""
    p = exp.profile
    key = config_key("alt-tokenizer", p.model.vocab_size, p.tokenizer_chars, exp.corpus_fingerprint)
    path = cache_root() / "tokenizers" / f"alt-{key}.json"

    def build():  # same recipe as the shared tokenizer, but learned on the specialist split
        return train_tokenizer(data_mod.balanced_texts(exp.corpus, "specialist", p.tokenizer_chars),
                               p.model.vocab_size)

    return cached(path, build, save_tokenizer, load_tokenizer)


def _alt_stream(exp, tok, domain: str, split: str) -> np.ndarray:
    path = cache_root() / "streams" / f"alt-{fingerprint(tok)[:16]}-{exp.corpus_fingerprint[:16]}-{domain}-{split}.npy"
    return cached(path, lambda: encode_stream(tok, data_mod.domain_texts(exp.corpus, domain, split), eos_id(tok)),
                  lambda a, tmp: np.save(tmp, a), lambda q: np.load(q, allow_pickle=False))


def alt_tokenizer_specialist(exp, domain: str = "legal") -> tuple[GPT, object]:
    """The ``domain`` specialist again -- same base, same steps, same seed -- but its training text
    was encoded with :func:`alt_tokenizer`. Its trunk is the base's, bit for bit."""
    from .experiment import derive_seed

    p, k = exp.profile, exp.k
    tok = alt_tokenizer(exp)
    base = exp.base()
    alt_fp = fingerprint(tok)
    key = config_key("alt-tok-specialist", exp.tokenizer_fingerprint, exp.corpus_fingerprint, alt_fp, p.model, p.base,
                     p.specialist, domain, k, exp.seed)
    path = cache_root() / "checkpoints" / f"alt-tok-specialist-{key}"

    def make():
        t0 = time.time()
        model = copy.deepcopy(base)
        stream = _alt_stream(exp, tok, domain, "specialist")
        batch = lambda g: random_windows(stream, p.specialist.batch_size, p.model.block_size, g)  # noqa: E731
        losses = train_lm(model, batch, p.specialist, derive_seed(exp.seed, "specialist", domain), freeze_k=k,
                          desc=f"{domain} specialist (other tokenizer)")
        return model, {"role": "specialist", "domain": domain, "seed": exp.seed, "freeze_k": k,
                       "base_seed": exp.seed, "base_fingerprint": model_fingerprint(base),
                       "trunk_hash": trunk_hash(base, k), "tokenizer_fingerprint": alt_fp, "profile": p.name,
                       "note": "trained on text encoded with a different tokenizer", "train_losses": losses,
                       "train_seconds": time.time() - t0}

    model, _ = cached(path, make, lambda obj, tmp: save_checkpoint(obj[0], tmp, obj[1]),
                      lambda q: load_checkpoint(q, {"tokenizer_fingerprint": alt_fp}))
    model.manifest = read_manifest(path)
    return model, tok


@torch.no_grad()
def _nats_per_byte(model: GPT, x: torch.Tensor, y: torch.Tensor, tok, batch_size: int) -> dict:
    """Mean loss per token and per byte of decoded text: per-byte is comparable across tokenizers."""
    total = sum(float(token_nll_from_logprobs(F.log_softmax(model(x[i:i + batch_size])[0].float(), -1),
                                              y[i:i + batch_size]).sum()) for i in range(0, x.shape[0], batch_size))
    n_bytes = sum(len(tok.decode(row.tolist(), skip_special_tokens=False).encode()) for row in y)
    return {"per_token": total / y.numel(), "per_byte": total / n_bytes, "bytes_per_token": n_bytes / y.numel()}


def tokenizer_mismatch(exp, domain: str = "legal") -> dict:
    """Swap the ``domain`` specialist for one trained under another tokenizer: does the check catch
    it, and what does forcing it cost?"""
    p, k = exp.profile, exp.k
    bad, tok = alt_tokenizer_specialist(exp, domain)
    j = DOMAINS.index(domain)
    healthy = exp.specialists()
    specs = [bad if i == j else m for i, m in enumerate(healthy)]
    shared_vocab = sum(tok.id_to_token(i) == exp.tokenizer.id_to_token(i) for i in range(p.model.vocab_size))
    refusal, forced = _refuse_then_force(specs, k)

    T, n = p.model.block_size, p.eval_chunks
    own_x, own_y = eval_windows(_alt_stream(exp, tok, domain, "eval"), n, T)
    x, y = exp.eval_sets[domain]
    losses = {
        "mismatched specialist, its own tokenizer's text": _nats_per_byte(bad, own_x, own_y, tok, p.eval_batch_size),
        "mismatched specialist, shared tokenizer's text (what fusion feeds it)":
            _nats_per_byte(bad, x, y, exp.tokenizer, p.eval_batch_size),
        "healthy specialist, shared tokenizer's text": _nats_per_byte(healthy[j], x, y, exp.tokenizer, p.eval_batch_size),
        "base, shared tokenizer's text": _nats_per_byte(exp.base(), x, y, exp.tokenizer, p.eval_batch_size),
    }
    # fusion: the healthy router reused as a drop-in, and a router retrained for the new set
    sset_bad, sset_ok = SpecialistSet(specs, k, True), SpecialistSet(healthy, k, True)
    feature = "trunk of base X"
    router_ok = _router(exp, sset_ok, feature, p.router, "shared")
    router_new = _router(exp, sset_bad, feature, p.router, "tokenizer mismatch")
    base = exp.base()
    ok = score_set(sset_ok, {"router": (router_ok, feature)}, exp.eval_sets, base, base.lm_head, None, p.eval_batch_size)
    res = score_set(sset_bad, {"reused healthy router": (router_ok, feature), "retrained router": (router_new, feature)},
                    exp.eval_sets, base, base.lm_head, None, p.eval_batch_size)
    t_ok, t_bad = loss_table(ok["nll"]), loss_table(res["nll"])
    return {
        "domain": domain, "alt_tokenizer_fingerprint": fingerprint(tok),
        "alt_tokenizer_text": "specialist split (same character budget and vocabulary size as the shared one)",
        "note": ("the frozen embeddings (and tied head) were learned for the shared tokenizer's ids, so this "
                 "specialist can only adapt its crown to the other ids; per-byte losses compare across tokenizers"),
        "ids_with_same_string": shared_vocab / p.model.vocab_size,
        "compat": {"refusal": refusal, "forced_report": forced},
        "losses": losses,
        "healthy_fused_mixed": float(t_ok.loc["fused logits [router]", "mixed"]),
        "healthy_table": _table_json(t_ok),
        "table": _table_json(t_bad),
        "fused_mixed": {r: float(t_bad.loc[f"fused logits [{r}]", "mixed"]) for r in ("reused healthy router", "retrained router")},
        "routing_accuracy": {r: routing_accuracy(res["weights"][r]) for r in res["weights"]},
        "weight_on_mismatched": {r: weight_on(res["weights"][r], j) for r in res["weights"]},
    }


# -- Break 2 ------------------------------------------------------------------------------------
DEFAULT_MIXES = ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.9, 0.05, 0.05), (0.98, 0.01, 0.01))
DEFAULT_TEMPS = (None, 0.01, 1e-3)  # None = the profile's temperature


def _setting_name(cfg: RouterConfig) -> str:
    return f"mix={'/'.join(f'{m:.2f}' for m in cfg.domain_mix)} temp={cfg.temp:g}"


def break2(exp, mixes: Sequence[Sequence[float]] = DEFAULT_MIXES, temps: Sequence[float | None] = DEFAULT_TEMPS,
           imbalance: Sequence[float] = (0.9, 0.05, 0.05), cold_temp: float = 1e-3, tolerance_pct: float = 2.0,
           out_dir: Path | None = None) -> dict:
    """Per-token routers trained on skewed data and/or with a near-zero target temperature.

    The four named settings (healthy, imbalanced, cold, both) are part of the grid ``mixes`` x
    ``temps``. ``silent_collapse`` lists grid settings whose mixed loss stays within
    ``tolerance_pct`` % of the healthy router's while some domain's routing accuracy is < 50%.
    """
    t0 = time.time()
    p, k = exp.profile, exp.k
    healthy = p.router
    named = {"healthy": healthy, "imbalanced": replace(healthy, domain_mix=tuple(imbalance)),
             "cold": replace(healthy, temp=cold_temp),
             "imbalanced + cold": replace(healthy, domain_mix=tuple(imbalance), temp=cold_temp)}
    grid = {}
    for mix in mixes:
        for temp in temps:
            cfg = replace(healthy, domain_mix=tuple(mix), temp=healthy.temp if temp is None else temp)
            grid[_setting_name(cfg)] = cfg
    for cfg in named.values():
        grid.setdefault(_setting_name(cfg), cfg)
    routers = {name: exp.router("per_token", cfg) for name, cfg in grid.items()}
    specs = exp.specialists()
    nll, weights = collect(exp.eval_sets, exp.base(), specs, k, routers, None, p.eval_batch_size)
    table = loss_table(nll)
    spec_nll = {d: torch.stack([nll[r][d] for r in SPECIALIST_ROWS]) for d in DOMAINS}
    h_name = _setting_name(healthy)
    h_mixed = float(table.loc[f"fused soft ({h_name} router)", "mixed"])
    h_acc = routing_accuracy(weights[h_name])
    best_spec = float(table.loc[list(SPECIALIST_ROWS), "mixed"].min())

    def describe(name: str, cfg: RouterConfig, full: bool) -> dict:
        w = weights[name]
        mw = mean_weights(w)
        overall = int(np.argmax(mw.values.mean(0)))  # the specialist with the most weight overall
        mixed = float(table.loc[f"fused soft ({name} router)", "mixed"])
        acc = routing_accuracy(w)
        d = {"domain_mix": list(cfg.domain_mix), "temp": cfg.temp, "mixed_loss": mixed,
             "per_domain_loss": {dm: float(table.loc[f"fused soft ({name} router)", dm]) for dm in DOMAINS},
             "mixed_vs_healthy_%": (mixed - h_mixed) / h_mixed * 100,
             "routing_accuracy": acc, "min_routing_accuracy": min(acc.values()),
             "dominant_specialist": SPECIALIST_ROWS[overall],
             "weight_on_dominant": weight_on(w, overall),
             "weight_on_dominant_other_domains": float(np.mean([v for dm, v in weight_on(w, overall).items()
                                                                if dm != DOMAINS[overall]])),
             "mean_max_weight": float(torch.cat([x.max(-1).values.flatten() for x in w.values()]).double().mean())}
        d["silent_collapse"] = bool(abs(d["mixed_vs_healthy_%"]) <= tolerance_pct and d["min_routing_accuracy"] < 0.5)
        d["newly_below_50"] = [dm for dm in DOMAINS if acc[dm] < 0.5 <= h_acc[dm]]
        if full:
            d.update(confusion=_table_json(confusion_matrix(w)), mean_weights=_table_json(mw),
                     dominant_per_domain=dominant_weight(w), gate_histograms=gate_histograms(w),
                     misrouting=misrouting(w, spec_nll))
        return d

    settings = {name: describe(_setting_name(cfg), cfg, True) for name, cfg in named.items()}
    grid_rep = {name: describe(name, cfg, False) for name, cfg in grid.items()}
    silent = [n for n, g in grid_rep.items() if g["silent_collapse"] and n != h_name]
    strict = [n for n, g in grid_rep.items() if g["silent_collapse"] and g["newly_below_50"]]
    report = {
        "profile": p.name, **exp.provenance(), "seed": exp.seed, "freeze_k": k, "router_kind": "per_token",
        "router_seed_note": "router data/init seeds derive from the experiment seed (same for every setting)",
        "healthy_config": healthy, "healthy_setting": h_name, "tolerance_pct": tolerance_pct,
        "healthy_mixed": h_mixed, "healthy_routing_accuracy": h_acc,
        "best_specialist_mixed": best_spec, "base_mixed": float(table.loc["base", "mixed"]),
        "fusion_gain_over_best_specialist_%": (best_spec - h_mixed) / best_spec * 100,
        "tolerance_note": (f"a {tolerance_pct}% window on the mixed loss is "
                           f"{tolerance_pct / max(abs((best_spec - h_mixed) / best_spec * 100), 1e-9):.1f}x the healthy "
                           "router's whole gain over the best specialist"),
        "settings": settings, "grid": grid_rep,
        "silent_collapse": silent, "silent_collapse_newly_below_50": strict,
        "healthy_already_below_50": [d for d in DOMAINS if h_acc[d] < 0.5],
        "table": _table_json(table),
    }
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["_raw"] = {"weights": weights, "nll": nll, "names": {n: _setting_name(c) for n, c in named.items()}}
    out = _out_dir(exp, out_dir) / "break2.json"
    _write(report, out)
    report["out_path"] = str(out)
    return report


# -- freeze-depth sweep ----------------------------------------------------------------------------
def freeze_sweep(exp, ks: Sequence[int] | None = None, out_dir: Path | None = None) -> dict:
    """K = 0..L-1: specialists, routers and the full table at each depth, plus CKA between crowns.

    The divergence -> gain fit uses every K of this seed and the points of other seeds' sweeps
    already on disk for the same profile (recorded by seed and K).
    """
    t0 = time.time()
    p = exp.profile
    ks = list(range(p.model.n_layer)) if ks is None else list(ks)
    xs = _token_sample(exp.eval_sets, min(8, p.eval_chunks))
    base = exp.base()
    per_k, points = {}, []
    for K in ks:
        # per-token router only (no monolithic / last-token retraining per K: they would triple the cost)
        specs = exp.specialists(k=K)
        nll, weights = collect(exp.eval_sets, base, specs, K, {"per-token": exp.router("per_token", k=K)},
                               {"weight average": average_weights(specs)}, p.eval_batch_size)
        table = loss_table(nll)
        res = {"oracle_gap": float(table.loc[HEADLINE, "mixed"] - table.loc[ORACLE, "mixed"]),
               "routing_accuracy": routing_accuracy(weights["per-token"]), "litmus": litmus(table),
               "oracle_gap_by_position": gap_by_position(nll)}
        with torch.no_grad():
            final = {m.manifest["domain"]: m.crown_hidden(m.trunk(xs, K), K) for m in specs}
            base_final = base.crown_hidden(base.trunk(xs, K), K)
        vs_base = {d: linear_cka(_flat(h), _flat(base_final)) for d, h in final.items()}
        div, gain = divergence(table), fusion_gain(table)
        per_k[str(K)] = {
            "own_domain_gain_%": own_domain_gains(table), "divergence_%": div,
            "fused_gain_vs_best_specialist_%": gain,
            "fused_gain_vs_base_%": float(table.loc[HEADLINE, "Δ% vs base"]),
            "oracle_gap": res["oracle_gap"], "oracle_gap_by_position": res["oracle_gap_by_position"],
            "routing_accuracy": res["routing_accuracy"],
            "mixed": {row: float(v) for row, v in table["mixed"].items()},
            "crowns_final_hidden": _cka_block(final), "cka_crown_vs_base_final_hidden": vs_base,
            "litmus": res["litmus"], "table": _table_json(table),
            "trainable_params": sum(v.numel() for v in specs[0].crown_parameters(K).values()),
        }
        points.append({"seed": exp.seed, "base_seed": exp.seed, "k": K, "divergence": div, "gain": gain})
    here = _out_dir(exp, out_dir)
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
    out = here / "freeze_sweep.json"
    _write(report, out)
    report["out_path"] = str(out)
    return report


def points_from_other_runs(profile_dir: Path, seed: int, provenance: Mapping[str, str]) -> list[dict]:
    """(divergence, gain) points already on disk under ``profile_dir/seed-*``: other seeds' freeze
    sweeps, and Break 1's controls (shared-base runs on other base seeds at the profile's K, same
    definitions). Files recording other data fingerprints than ``provenance`` (another corpus or
    tokenizer, or written before fingerprints were recorded) are skipped, as are unreadable ones."""
    def read(f: str) -> dict | None:
        try:
            rep = json.loads(Path(f).read_text())
        except (OSError, ValueError):
            return None  # a half-written file is skipped, not trusted
        return rep if all(rep.get(key) == v for key, v in provenance.items()) else None

    others = []
    for f in sorted(glob.glob(str(Path(profile_dir) / "seed-*" / "freeze_sweep.json"))):
        rep = read(f)
        if rep and rep.get("seed") != seed:
            others += [{**q, "source": "freeze sweep"} for q in rep.get("points", []) if q["seed"] != seed]
    for f in sorted(glob.glob(str(Path(profile_dir) / "seed-*" / "break1.json"))):
        b1 = read(f)
        for bseed, c in (b1 or {}).get("controls", {}).items():
            if int(bseed) == b1["seed"]:
                continue  # the run's own base: already a sweep point at its K
            others.append({"seed": b1["seed"], "base_seed": int(bseed), "k": b1["freeze_k"],
                           "divergence": float(np.mean(list(c["own_domain_gain_over_own_base_%"].values()))),
                           "gain": c["fusion_gain_vs_best_specialist_%"], "source": "break1 control"})
    return others


# -- readable summaries (CLI and notebooks) --------------------------------------------------------
def _pct(v) -> str:
    return "n/a" if v is None else f"{v:+.2f}%"


def summarize_break1(rep: dict) -> str:
    s, d = rep["shared"], rep["different"]
    r = "trunk of base X"
    lines = [f"Break 1 — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']}, "
             f"base seeds {rep['base_seeds']} (code, medical, legal); base X = seed {rep['base_x_seed']}",
             "", "compat.check on the different-base specialists:",
             f"  refused: {rep['compat']['refusal']}",
             f"  forced (allow_mismatch=True): mismatches = {rep['compat']['forced_report']['mismatches']}",
             "", "bases alone (mixed loss): " + ", ".join(f"seed {k} {float(np.mean(list(v.values()))):.4f}"
                                                          for k, v in rep["base_losses"].items())
             + f"  -> spread {rep['base_quality_spread']:.4f} nats vs the shared-base fusion effect "
               f"{rep['shared_fusion_effect']:+.4f}" + ("  (CONFOUNDED: bases differ in quality more than fusion helps)"
                                                        if rep["confounded_by_base_quality"] else ""),
             "", f"{'mixed loss (nats/token)':<44}{'shared base':>12}{'different':>12}"]
    rows = ["base", *SPECIALIST_ROWS, "weight average", "uniform mix"]
    rows += [f"fused {kind} [{f}]" for f in FEATURES for kind in ("logits", "probs", "hidden", "hard")]
    rows += [ORACLE, "oracle (per token)"]
    for row in rows:
        lines.append(f"  {row:<42}{s['mixed'][row]:>12.4f}{d['mixed'][row]:>12.4f}")
    lines += ["", "own-domain gain of each specialist over its own base: shared "
              + " ".join(f"{k} {v:+.2f}%" for k, v in s["own_domain_gain_over_own_base_%"].items())
              + " | different " + " ".join(f"{k} {v:+.2f}%" for k, v in d["own_domain_gain_over_own_base_%"].items()),
              f"each specialist wins its own domain: shared {s['each_specialist_wins_own_domain']}, "
              f"different {d['each_specialist_wins_own_domain']}",
              "", "routing (per-token router): accuracy = argmax is the own domain; agreement = argmax is the window's best specialist"]
    for f in FEATURES:
        for name, rep_ in (("shared", s), ("different", d)):
            acc = rep_["routing_accuracy"][f]
            lines.append(f"  {f:<22} {name:<9} " + "  ".join(f"{k} {v:.0%}" for k, v in acc.items())
                         + f"   agreement {rep_['mean_oracle_agreement'][f]:.0%}")
    lines += ["", f"oracle gap [{r}]: shared {s['oracle_gap'][r]:+.4f}  different {d['oracle_gap'][r]:+.4f} nats",
              "fusion gain over best specialist (logits/probs/hidden): shared "
              + "/".join(f"{v:+.2f}%" for k, v in s["fusion_gain_vs_best_specialist_%"].items() if k != "hard")
              + "  different " + "/".join(f"{v:+.2f}%" for k, v in d["fusion_gain_vs_best_specialist_%"].items() if k != "hard"),
              f"mean ECE of specialists: shared {s['mean_ece']:.4f}  different {d['mean_ece']:.4f}; "
              f"logit-scale max/min: shared {s['logit_scale_ratio']:.3f}  different {d['logit_scale_ratio']:.3f}",
              "", "controls — the shared-base pipeline on each base seed:"]
    for seed, c in rep["controls"].items():
        lines.append(f"  base seed {seed}: base {c['base_mixed']:.4f}  best specialist {c['best_specialist_mixed']:.4f}  "
                     f"fused {c['fused_logits_mixed']:.4f} ({c['fusion_gain_vs_best_specialist_%']:+.2f}% vs best)  "
                     f"weight avg {c['weight_average_mixed']:.4f}  routing acc {c['mean_routing_accuracy']:.0%}")
    dv = rep["different_vs_controls"]
    lines.append(f"  different bases: fused {dv['different_fused_logits_mixed']:.4f}; controls span "
                 f"{dv['controls_min']:.4f}..{dv['controls_max']:.4f} -> outside the range: {dv['outside_control_range']}")
    lines += ["", "representations (mean over pairs): linear CKA / cosine of raw coordinates, token by token"]
    for name, blk in rep["representations"].items():
        lines.append(f"  {name:<44} CKA {blk['mean_cka']:.3f}   cosine {blk['mean_paired_cosine']:+.3f}")
    lines += ["", "degradation, different bases vs shared base (ranked by relative change; + = worse):"]
    for m in rep["degradations"]:
        z = "" if m["z"] is None else f"  z={m['z']:+.1f}"
        lines.append(f"  {m['metric']:<46} {m['shared']:.4f} -> {m['different']:.4f}  {_pct(m['relative_%'])}{z}  [{m['verdict']}]")
    lines += [f"what fails first (ranked above): {rep['what_fails_first'] or 'nothing degrades significantly'}",
              "", "within-set contrasts, nats (different minus shared; each compares two ways of combining the same specialists, so base quality matters less):"]
    for c in rep["within_set_contrasts"]:
        z = "" if c["z"] is None else f"  z={c['z']:+.1f}"
        lines.append(f"  {c['contrast']:<54} {c['shared']:+.4f} -> {c['different']:+.4f}  change {c['change_nats']:+.4f}{z}  [{c['verdict']}]")
    lines += [f"what fails first (within-set, nats): {rep['what_fails_first_within_set'] or 'nothing degrades significantly'}"]
    if rep.get("confound_note"):
        lines.append(f"caution: {rep['confound_note']}")
    lines += [
              f"headline (fused logits, mixed) catches it: {rep['headline_catches_it']}"
              + (f"; missed by the headline: {', '.join(rep['missed_by_headline'])}" if rep["missed_by_headline"] else ""),
              rep["hidden_fusion_note"]]
    tm = rep.get("tokenizer_mismatch")
    if tm:
        lines += ["", f"tokenizer mismatch ({tm['domain']} specialist: same base and steps, but trained on text encoded by "
                      f"another tokenizer; {tm['ids_with_same_string']:.1%} of ids mean the same string in both):",
                  f"  checks that pass: {[c['check'] for c in tm['compat']['forced_report']['checks'] if c['ok']]}",
                  f"  refused: {tm['compat']['refusal']}"]
        for name, v in tm["losses"].items():
            lines.append(f"  {name:<70} {v['per_token']:.4f} nats/token  {v['per_byte']:.4f} nats/byte")
        lines.append(f"  fused mixed: healthy set {tm['healthy_fused_mixed']:.4f}; with the mismatched specialist "
                     + ", ".join(f"{r} {v:.4f}" for r, v in tm["fused_mixed"].items()))
        for r, w in tm["weight_on_mismatched"].items():
            lines.append(f"  weight on the mismatched specialist ({r}): " + "  ".join(f"{k} {v:.2f}" for k, v in w.items()))
    return "\n".join(lines)


def summarize_break2(rep: dict) -> str:
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
    healthy_name = rep["healthy_setting"]
    for name, g in rep["grid"].items():
        flag = "(healthy)" if name == healthy_name else "SILENT" if g["silent_collapse"] else ""
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


def summarize_freeze_sweep(rep: dict) -> str:
    lines = [f"Freeze-depth sweep — profile {rep['profile']}, seed {rep['seed']}", "",
             f"  {'K':>2} {'trainable':>10} {'divergence':>11} {'own-domain gains (code/med/legal)':>36} "
             f"{'fused vs best spec':>19} {'oracle gap':>11} {'crown CKA':>10} {'cosine':>8}"]
    for K, r in rep["per_k"].items():
        g = "/".join(f"{v:+.2f}" for v in r["own_domain_gain_%"].values())
        lines.append(f"  {K:>2} {r['trainable_params']:>10,} {r['divergence_%']:>+10.2f}% {g:>36} "
                     f"{r['fused_gain_vs_best_specialist_%']:>+18.2f}% {r['oracle_gap']:>+11.4f} "
                     f"{r['crowns_final_hidden']['mean_cka']:>10.3f} {r['crowns_final_hidden']['mean_paired_cosine']:>+8.3f}")
    fit = rep["fit"]
    lines.append("")
    if fit["slope"] is not None:
        r2 = "n/a" if fit["r2"] is None else f"{fit['r2']:.2f}"
        lines.append(f"fit over {fit['n']} points ({len(rep['points'])} from this sweep, "
                     f"{len(rep['points_from_other_runs'])} from other seeds' sweeps and Break 1's controls): "
                     f"gain = {fit['slope']:.3f} * divergence {fit['intercept']:+.3f} (R² {r2})")
    else:
        lines.append(f"fit: not enough distinct divergences among {fit['n']} points")
    lines.append("KALAVAI's line gain = 0.82 * divergence - 2.72 predicts "
                 + ", ".join(f"{pg:+.2f}%" for pg in fit["kalavai"]["predicted_gain"])
                 + f" at our divergences (mean residual {fit['kalavai'].get('mean_residual', float('nan')):+.2f} points)")
    lines.append(f"best K by fused gain over best specialist: {rep['best_k_by_fused_gain']}; "
                 f"by fused mixed loss: {rep['best_k_by_fused_mixed']}")
    return "\n".join(lines)

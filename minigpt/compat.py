"""Can these specialists be fused? The checks Chapter 32, Step 1 asks for, done before any fusion.

Fusing crowns is only meaningful if every specialist reads the same token ids (same tokenizer),
has the same shapes (same architecture), started from the same base checkpoint, and still holds
that base's frozen trunk bit for bit. :func:`check` tests all four in that order and refuses the
first mismatch with one line that names it and says what to do; ``allow_mismatch=True`` is the
explicit opt-out used by Break 1 (it warns instead and returns the same report).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Sequence

import torch

from .config import check_freeze_k
from .model import GPT

CHECKS = ("architecture", "tokenizer", "base", "trunk")


class CompatibilityError(ValueError):
    """The specialists cannot be fused as they are; the message names the first mismatch."""


class CompatibilityWarning(UserWarning):
    """Raised as a warning instead of :class:`CompatibilityError` when the caller opted out."""


def _name(model: GPT, i: int) -> str:
    domain = (getattr(model, "manifest", None) or {}).get("domain")
    return f"specialist {i} ({domain})" if domain else f"specialist {i}"


def _short(value: Any) -> str:
    return str(value)[:12] if value is not None else "missing"


def _field(models: Sequence[GPT], override: Sequence[str] | None, key: str) -> list[str | None]:
    if override is not None:
        if len(override) != len(models):
            raise ValueError(f"got {len(override)} {key}s for {len(models)} specialists; pass one per specialist")
        return list(override)
    return [(getattr(m, "manifest", None) or {}).get(key) for m in models]


def _compare_values(models: Sequence[GPT], values: list, what: str, fix: str) -> dict:
    """One check over a per-model value: every value present and equal to specialist 0's."""
    ref = values[0]
    for i, v in enumerate(values):
        if v is None:
            return {"check": what, "ok": False, "values": [_short(x) for x in values],
                    "detail": f"{_name(models[i], i)} has no recorded {what} fingerprint, so compatibility "
                              f"cannot be verified; {fix}"}
        if v != ref:
            return {"check": what, "ok": False, "values": [_short(x) for x in values],
                    "detail": f"{_name(models[i], i)} has {what} fingerprint {_short(v)} but "
                              f"{_name(models[0], 0)} has {_short(ref)}; {fix}"}
    return {"check": what, "ok": True, "values": [_short(x) for x in values], "detail": "all equal"}


def _architecture(models: Sequence[GPT]) -> dict:
    cfgs = [dataclasses.asdict(m.config) for m in models]
    for i, cfg in enumerate(cfgs[1:], start=1):
        diff = {key: (cfgs[0][key], cfg[key]) for key in cfgs[0] if cfg.get(key) != cfgs[0][key]}
        if diff:
            said = ", ".join(f"{key} {b} vs {a}" for key, (a, b) in diff.items())
            return {"check": "architecture", "ok": False, "differs": list(diff),
                    "detail": f"{_name(models[i], i)} has a different architecture than {_name(models[0], 0)} "
                              f"({said}); fuse only models built from the same GPTConfig"}
    return {"check": "architecture", "ok": True, "detail": f"all {dataclasses.asdict(models[0].config)}"}


def _trunk(models: Sequence[GPT], k: int) -> dict:
    ref = models[0].trunk_parameters(k)
    for i, m in enumerate(models[1:], start=1):
        params = m.trunk_parameters(k)
        for name, p in ref.items():
            q = params.get(name)
            if q is None or q.shape != p.shape or not torch.equal(q.detach(), p.detach()):
                return {"check": "trunk", "ok": False, "tensor": name,
                        "detail": f"{_name(m, i)} has a different frozen trunk tensor {name} than "
                                  f"{_name(models[0], 0)} at K={k}; retrain it with the base's first {k} "
                                  "blocks and embeddings frozen (freeze_k >= K), or fuse at a smaller K"}
    return {"check": "trunk", "ok": True, "detail": f"{len(ref)} trunk tensors identical at K={k}"}


def check(specialists: Sequence[GPT], k: int, *, tokenizer_fingerprints: Sequence[str] | None = None,
          base_fingerprints: Sequence[str] | None = None, allow_mismatch: bool = False) -> dict:
    """Check that ``specialists`` can share a trunk of depth ``k`` and be fused.

    Fingerprints come from each model's ``.manifest`` (models from :class:`Experiment` carry one)
    unless given explicitly. Order of checks: architecture, tokenizer, base, trunk tensors.
    Raises :class:`CompatibilityError` on the first mismatch (or on a fingerprint that is
    missing, since then nothing can be verified) unless ``allow_mismatch`` is true, in which case
    it warns and returns the report with every mismatch listed.
    """
    models = list(specialists)
    if not models:
        raise ValueError("no specialists to check; pass at least one model")
    check_freeze_k(k, models[0].config.n_layer)
    checks = [_architecture(models)]
    checks.append(_compare_values(models, _field(models, tokenizer_fingerprints, "tokenizer_fingerprint"),
                                  "tokenizer", "retrain that specialist with the shared tokenizer "
                                  "(token ids must mean the same strings in every model)"))
    checks.append(_compare_values(models, _field(models, base_fingerprints, "base_fingerprint"),
                                  "base", "fine-tune every specialist from the same base checkpoint"))
    # tensors can only be compared when the shapes agree
    checks.append(_trunk(models, k) if checks[0]["ok"] else
                  {"check": "trunk", "ok": False, "detail": "not compared: architectures differ"})
    mismatches = [c for c in checks if not c["ok"]]
    report = {"ok": not mismatches, "k": k, "n_specialists": len(models), "checks": checks,
              "mismatches": [c["check"] for c in mismatches]}
    if mismatches:
        first = mismatches[0]["detail"]
        if not allow_mismatch:
            raise CompatibilityError(f"cannot fuse: {first} (or pass allow_mismatch=True to fuse anyway)")
        warnings.warn(f"fusing incompatible specialists ({', '.join(report['mismatches'])} mismatch): {first}",
                      CompatibilityWarning, stacklevel=2)
    return report

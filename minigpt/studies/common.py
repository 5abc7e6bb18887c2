"""What the studies share: where reports go, paired statistics over the same windows, and the
compatibility check run both ways."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import compat
from ..cache import write_json
from ..chapter import out_dir
from ..config import REPO_ROOT
from ..model import GPT


def write_report(exp, report: dict, name: str, out: Path | None = None) -> dict:
    """Write ``report`` as ``<out or the run's folder>/<name>.json`` without the keys starting with
    '_' (raw tensors kept for plotting); returns the report with ``out_path`` set."""
    path = Path(out or out_dir(exp)) / f"{name}.json"
    write_json(path, {k: v for k, v in report.items() if not k.startswith("_")})
    report["out_path"] = str(path)
    return report


def reference_dir(exp) -> Path:
    """The committed reference results of this run's profile and seed (``make reference`` writes them)."""
    return REPO_ROOT / "results" / "reference" / exp.profile.name / f"seed-{exp.seed}"


def read_matching(path: Path | str, provenance: Mapping[str, str]) -> dict | None:
    """A results JSON, or None when it is missing, unreadable (e.g. half-written) or records other data
    fingerprints than ``provenance`` (another corpus or tokenizer, or none recorded)."""
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rep if all(rep.get(key) == v for key, v in provenance.items()) else None


def committed_with(exp, name: str, part: str) -> dict | None:
    """The committed reference's ``<name>.json`` when it holds ``part`` and was measured on this run's corpus,
    tokenizer and router code; else None. The book reads the parts of a study that need models it
    does not train (Break 1's tokenizer case, joining's alternatives) from there."""
    rep = read_matching(reference_dir(exp) / f"{name}.json", exp.provenance())
    return None if rep is None or part not in rep else rep


def saved_report_path(exp, name: str) -> Path | None:
    """Where ``<name>.json`` of this run is: as a study wrote it (results/), else as committed for this
    profile and seed (results/reference/), else None."""
    for folder in (Path(out_dir(exp)), reference_dir(exp)):
        if (folder / f"{name}.json").exists():
            return folder / f"{name}.json"
    return None


def saved_report(exp, name: str) -> dict | None:
    """:func:`saved_report_path`'s report, read, or None: for the extensions a notebook shows without
    recomputing them."""
    path = saved_report_path(exp, name)
    return None if path is None else json.loads(path.read_text())


def paired(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mixed (equal weight per domain) mean of b - a over the same windows, with its standard error.

    ``a[d]`` and ``b[d]`` are per-window values (n,) on the same windows of domain d; the
    standard error treats windows as independent and domains as separate strata. A domain with a
    single window has no variance estimate and adds none, so the standard error is understated
    there: give every domain at least two windows (every profile gives dozens).
    """
    deltas, var = [], 0.0
    for d in a:
        diff = b[d] - a[d]
        deltas.append(float(diff.mean()))
        var += float(diff.var(unbiased=True)) / diff.numel() if diff.numel() > 1 else 0.0
    return {"delta": float(np.mean(deltas)), "se": float(np.sqrt(var) / len(deltas))}


INTERVAL_Z = 1.96  # half-width of a two-sided 95% normal interval, in standard errors


def paired_interval(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], z: float = INTERVAL_Z) -> dict:
    """:func:`paired` ``b - a`` with its interval delta ± z·se and a verdict on it: 'worse' when the
    whole interval is above zero (b has the higher loss), 'better' when it is below, else
    'inconclusive'."""
    p = paired(a, b)
    lo, hi = p["delta"] - z * p["se"], p["delta"] + z * p["se"]
    return {**p, "ci_low": lo, "ci_high": hi, "interval_z": z,
            "verdict": "worse" if lo > 0 else "better" if hi < 0 else "inconclusive"}


def token_sample(eval_sets: Mapping[str, tuple], per_domain: int) -> torch.Tensor:
    """The first ``per_domain`` held-out windows of every domain: the inputs CKA is computed on."""
    return torch.cat([x[:per_domain] for x, _ in eval_sets.values()])


def refuse_then_force(specs: Sequence[GPT], k: int) -> tuple[str | None, dict]:
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

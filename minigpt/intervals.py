"""How sure is a difference in the table? Paired bootstrap intervals over the eval windows.

Every row of the table is scored on the same windows, so two rows can be compared window by
window: resample the windows (with replacement, separately within each domain, so every resample
keeps the three domains in balance), recompute both rows' mixed loss on that resample, and take the
comparison. The 2.5th and 97.5th percentiles of 2000 resamples give a 95 % interval. Pairing
matters: most of the spread between windows (some text is simply harder) is shared by both rows and
cancels in the difference, so a paired interval is far narrower than two separate ones.

A comparison's *estimate* is computed on all windows; only its interval comes from the resamples.
"Δ% vs X" is (X − fused) / X · 100, positive when the fused model is better; "vs best specialist"
takes the best specialist afresh in every resample, as the table does on all windows.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from .scoring import HEADLINE, ORACLE, SPECIALIST_ROWS

N_RESAMPLES = 2000
LEVEL = 0.95
METHOD = (f"paired bootstrap over eval windows, stratified by domain, {N_RESAMPLES} resamples, "
          f"percentile {LEVEL:.0%} interval")

# comparison name -> the reference rows (the best of several when more than one) and the unit
COMPARISONS: dict[str, tuple[tuple[str, ...], str]] = {
    "vs best specialist": (SPECIALIST_ROWS, "%"),
    "vs monolithic": (("monolithic",), "%"),
    "vs uniform mix": (("uniform mix",), "%"),
    "vs weight average": (("weight average",), "%"),
    "vs base": (("base",), "%"),
    "oracle gap": ((ORACLE,), "nats"),
}


def domain_window_means(per_domain: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{domain: (n, T)}`` token losses -> ``{domain: (n,)}`` mean loss per window (float64)."""
    return {d: v.double().mean(-1) for d, v in per_domain.items()}


def window_means(nll: Mapping[str, Mapping[str, torch.Tensor]], rows: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Each row's mean loss per window, ``{row: {domain: (n,) float64}}``: the unit that is resampled."""
    return {r: domain_window_means(nll[r]) for r in rows}


def resampled_mixed(per_window: Mapping[str, Mapping[str, torch.Tensor]], n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Every row's mixed loss on ``n_resamples`` stratified resamples -> ``{row: (n_resamples,)}``.

    All rows share each resample's windows (the pairing); the mixed loss is the equal-weight mean of
    the domain means, as in the table.
    """
    gen = torch.Generator().manual_seed(seed)
    first = next(iter(per_window.values()))
    domains = list(first)
    per_domain = {r: [] for r in per_window}
    for d in domains:
        n = first[d].numel()
        idx = torch.randint(0, n, (n_resamples, n), generator=gen)  # (R, n): one resample per row
        for r, wm in per_window.items():
            per_domain[r].append(wm[d].cpu()[idx].mean(-1))
    return {r: torch.stack(parts).mean(0) for r, parts in per_domain.items()}


def _compare(method: torch.Tensor, reference: torch.Tensor, unit: str) -> torch.Tensor:
    """The comparison of ``method`` to ``reference`` mixed losses (any matching shape)."""
    if unit == "nats":
        return method - reference  # a gap: how far the method trails the reference
    return (reference - method) / reference * 100  # Δ%: positive when the method is better


def _resampled(nll: Mapping[str, Mapping[str, torch.Tensor]], rows: Sequence[str], n_resamples: int,
               seed: int) -> tuple[dict, dict]:
    """Each row's mixed loss on all windows and on every resample (the same resamples for all rows)."""
    per_window = window_means(nll, rows)
    full = {r: torch.stack([v.mean() for v in per_window[r].values()]).mean() for r in rows}
    return full, resampled_mixed(per_window, n_resamples, seed)


def _interval(full: dict, boot: dict, method: str, references: Sequence[str], unit: str) -> dict:
    best_full = torch.stack([full[r] for r in references]).min()
    best_boot = torch.stack([boot[r] for r in references]).min(0).values  # the best reference per resample
    stats = _compare(boot[method], best_boot, unit)
    lo_q, hi_q = (1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2
    return {"estimate": round(float(_compare(full[method], best_full, unit)), 6),
            "low": round(float(torch.quantile(stats, lo_q)), 6), "high": round(float(torch.quantile(stats, hi_q)), 6)}


def bootstrap_interval(nll: Mapping[str, Mapping[str, torch.Tensor]], method: str, references: Sequence[str],
                       unit: str = "%", n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """``method`` against the best of ``references`` (all rows of ``nll``, scored on the same
    windows): ``{"estimate", "low", "high"}``, the comparison of :func:`_compare` in ``unit``."""
    full, boot = _resampled(nll, sorted({method, *references}), n_resamples, seed)
    return _interval(full, boot, method, references=references, unit=unit)


def comparison_intervals(nll: Mapping[str, Mapping[str, torch.Tensor]], method: str = HEADLINE,
                         comparisons: Sequence[str] | None = None, n_resamples: int = N_RESAMPLES,
                         seed: int = 0) -> list[dict]:
    """``method`` against each reference of :data:`COMPARISONS` present in ``nll``: estimate and 95 %
    interval, one dict per comparison (the ``intervals`` field of ``table.json``). The windows are
    resampled once, and every comparison reads the same resamples."""
    names = [c for c in (comparisons or COMPARISONS) if all(r in nll for r in COMPARISONS[c][0])]
    full, boot = _resampled(nll, sorted({method, *(r for c in names for r in COMPARISONS[c][0])}), n_resamples, seed)
    return [{"comparison": name, "method_row": method, "reference_rows": list(COMPARISONS[name][0]),
             "unit": COMPARISONS[name][1], **_interval(full, boot, method, *COMPARISONS[name]), "method": METHOD}
            for name in names]


def by_name(intervals: Sequence[Mapping]) -> dict[str, Mapping]:
    """``comparison name -> interval`` for a list from :func:`comparison_intervals`."""
    return {iv["comparison"]: iv for iv in intervals}


def interval_verdict(low: float, high: float, threshold: float = 0.0) -> str:
    """``holds`` when the whole interval lies above ``threshold``, ``fails`` when it lies below,
    ``inconclusive`` when it straddles it: a claim is read off the interval, not the point."""
    if low > threshold:
        return "holds"
    if high < threshold:
        return "fails"
    return "inconclusive"


def format_interval(iv: Mapping, digits: int | None = None) -> str:
    """``+3.21 % [+2.80, +3.62]`` or ``0.0200 nats [0.0170, 0.0230]``."""
    if iv["unit"] == "nats":
        d = 4 if digits is None else digits
        return f"{iv['estimate']:.{d}f} nats [{iv['low']:.{d}f}, {iv['high']:.{d}f}]"
    d = 2 if digits is None else digits
    return f"{iv['estimate']:+.{d}f} % [{iv['low']:+.{d}f}, {iv['high']:+.{d}f}]"


def versus(nll: Mapping[str, Mapping[str, torch.Tensor]], methods: Sequence[str], reference: str, unit: str = "nats",
           n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, dict]:
    """Each row of ``methods`` against one ``reference`` row scored on the same windows:
    ``{method: {"estimate", "low", "high", "unit"}}``. In nats the comparison is method − reference
    (positive: the method's loss is higher); in % it is the Δ% of :func:`_compare`. The windows are
    resampled once and every comparison reads the same resamples."""
    full, boot = _resampled(nll, sorted({reference, *methods}), n_resamples, seed)
    return {m: {**_interval(full, boot, m, references=[reference], unit=unit), "unit": unit} for m in methods}


def _resample_index(sizes: Mapping[str, int], n_resamples: int, seed: int) -> dict[str, torch.Tensor]:
    """Per domain, ``n_resamples`` rows of window indices drawn with replacement (stratified resamples)."""
    gen = torch.Generator().manual_seed(seed)
    return {d: torch.randint(0, n, (n_resamples, n), generator=gen) for d, n in sizes.items()}


def mean_stat(v: Mapping[str, torch.Tensor], idx: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """Equal-weight mean over domains of the mean over windows: of all windows (``idx`` None, a scalar)
    or of each resample of ``idx`` (R,)."""
    parts = [v[d].mean() if idx is None else v[d][idx[d]].mean(-1) for d in v]
    return torch.stack(parts).mean(0)


def paired_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], stat: Callable = mean_stat,
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, float]:
    """``stat(b) - stat(a)`` for two per-window quantities on the same windows (``{domain: (n, ...)}``):
    the estimate on all windows and a percentile interval over stratified resamples, both sets read
    through the same resamples (the pairing). ``stat(values, idx)`` reduces them (default: the mixed mean)."""
    idx = _resample_index({d: v.shape[0] for d, v in a.items()}, n_resamples, seed)
    boot = stat(b, idx) - stat(a, idx)
    lo, hi = (1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2
    return {"estimate": float(stat(b, None) - stat(a, None)), "low": float(torch.quantile(boot.double(), lo)),
            "high": float(torch.quantile(boot.double(), hi))}

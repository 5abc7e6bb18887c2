"""What the crowns are: parameter counts at a freeze depth, how far each crown moved from the base,
and the shape of a training curve."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..model import GPT


def param_counts(model: GPT, k: int) -> dict[str, int]:
    """Frozen (trunk) and trainable (crown) parameter counts at freeze depth ``k``."""
    trunk = sum(p.numel() for p in model.trunk_parameters(k).values())
    crown = sum(p.numel() for p in model.crown_parameters(k).values())
    return {"trunk (frozen)": trunk, "crown (trained)": crown, "total": trunk + crown}


def loss_trend(losses: Sequence[float], frac: float = 0.1) -> tuple[float, float]:
    """Mean of the first and of the last ``frac`` of a loss curve (robust to step-to-step noise)."""
    n = max(1, int(len(losses) * frac))
    return float(sum(losses[:n]) / n), float(sum(losses[-n:]) / n)


def crown_drift(base: GPT, specialists: Sequence[GPT]) -> pd.DataFrame:
    """‖θ_specialist − θ_base‖ / ‖θ_base‖ per part of the model (rows) and specialist (columns)."""
    def part(name: str) -> str:
        if name.startswith("transformer.h."):
            return f"block {name.split('.')[2]}"
        return "ln_f" if ".ln_f." in name else "embeddings"

    ref = {n: p.detach() for n, p in base.named_parameters()}
    out = {}
    for m in specialists:
        num: dict[str, float] = {}
        den: dict[str, float] = {}
        for n, p in m.named_parameters():
            b = part(n)
            num[b] = num.get(b, 0.0) + float((p.detach() - ref[n]).pow(2).sum())
            den[b] = den.get(b, 0.0) + float(ref[n].pow(2).sum())
        name = getattr(m, "manifest", {}).get("domain", f"model {len(out)}")
        out[name] = {b: (num[b] / den[b]) ** 0.5 for b in num}
    order = ["embeddings"] + [f"block {i}" for i in range(base.config.n_layer)] + ["ln_f"]
    return pd.DataFrame(out).loc[order]

"""Views of the chapter's table (:func:`minigpt.evaluate.loss_table`) that the notebooks and the
answer keys read: fusion rule x router kind, each baseline's margin, and the oracle's headroom."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..scoring import HEADLINE, ORACLE, SPECIALIST_ROWS


FUSION_RULES = {
    # rule -> row of the evaluation table for each router kind (None: that combination is not scored)
    "logit fusion (soft)": {"per-token": "fused soft (per-token router)", "last-token": "fused soft (last-token router)"},
    "probability mixture": {"per-token": "fused probs (per-token router)", "last-token": None},
    "hard (argmax only)": {"per-token": "fused hard (per-token router)", "last-token": "single dispatch (last-token router)"},
}


def fusion_comparison(table: pd.DataFrame, column: str = "mixed") -> pd.DataFrame:
    """One column of the evaluation table rearranged: fusion rule (rows) x router kind (columns)."""
    return pd.DataFrame({rule: {router: (float(table.loc[row, column]) if row in table.index else float("nan"))
                                if row else float("nan") for router, row in rows.items()}
                         for rule, rows in FUSION_RULES.items()}).T.rename_axis("fusion rule")


def baseline_comparison(table: pd.DataFrame, method: str | None = None,
                        baselines: Sequence[str] | None = None) -> pd.DataFrame:
    """Mixed loss of each baseline next to ``method`` (default: the headline row).

    ``margin`` = baseline − method in nats: positive where the method beats that baseline.
    """
    method = method or HEADLINE
    baselines = list(baselines or ["base", *SPECIALIST_ROWS, "weight average", "uniform mix", "monolithic"])
    baselines = [b for b in baselines if b in table.index]
    m = float(table.loc[method, "mixed"])
    rows = {b: {"mixed": float(table.loc[b, "mixed"]), "margin": float(table.loc[b, "mixed"]) - m}
            for b in baselines}
    out = pd.DataFrame(rows).T.rename_axis("baseline")
    out["fusion better"] = out["margin"] > 0
    return out


def oracle_headroom(table: pd.DataFrame, method: str | None = None) -> dict[str, float]:
    """Oracle gap of ``method`` and how much of the oracle's headroom over the best specialist it captures.

    ``headroom`` = best specialist − oracle (nats, mixed); ``captured`` = (best specialist − method) /
    headroom, NaN when there is no headroom.
    """
    method = method or HEADLINE
    mixed = table["mixed"]
    best_row = mixed[list(SPECIALIST_ROWS)].idxmin()
    best, oracle, m = float(mixed[best_row]), float(mixed[ORACLE]), float(mixed[method])
    headroom = best - oracle
    return {"method": m, "oracle": oracle, "gap": m - oracle, "best_specialist": best_row,
            "best_specialist_mixed": best, "headroom": headroom,
            "captured": (best - m) / headroom if headroom > 0 else float("nan")}

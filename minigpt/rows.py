"""The rows of the book's tables as values: what produced each row, and the name it is shown under.

A table's index holds display names; code that needs to know what a row is (does it see the whole
window? is it fused, and by which rule and router? one model or several?) reads its :class:`Row`,
never the name. :func:`minigpt.scoring.score` returns a ``Row`` for every row it scored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

KINDS = ("model", "specialist", "uniform", "fused", "dispatch", "oracle")
RULES = ("soft", "hard", "probs", "hidden")


@dataclass(frozen=True)
class Row:
    name: str  # what tables show
    kind: str  # one of KINDS: a whole model (base, weight average, monolithic), a specialist, ...
    rule: str | None = None  # a fused row's fusion rule: soft (logits), hard (argmax), probs, hidden
    router: str | None = None  # the router of a fused or dispatch row
    whole_window: bool = False  # a token's weight depends on later tokens or the targets: a reference only
    per_token: bool = False  # an oracle that picks per token rather than per window

    def to_json(self) -> dict:
        return asdict(self)


def fused(rule: str, router: str, whole_window: bool = False) -> Row:
    """``fused <rule> (<router> router)``: a router's weights applied by one fusion rule."""
    if rule not in RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; choose one of {', '.join(RULES)}")
    return Row(f"fused {rule} ({router} router)", "fused", rule, router=router, whole_window=whole_window)


def dispatch(router: str) -> Row:
    """``single dispatch (<router> router)``: one specialist per sequence, chosen after reading all of it."""
    return Row(f"single dispatch ({router} router)", "dispatch", None, router, whole_window=True)


def model(name: str) -> Row:
    return Row(name, "model")


def specialist(name: str) -> Row:
    return Row(name, "specialist")


UNIFORM = Row("uniform mix", "uniform")
ORACLE = Row("oracle (per sequence)", "oracle", whole_window=True)
ORACLE_PER_TOKEN = Row("oracle (per token)", "oracle", whole_window=True, per_token=True)


def from_json(rows: Mapping[str, Mapping]) -> dict[str, Row]:
    """``{name: Row}`` from what a results JSON keeps (``row_info``)."""
    return {name: Row(**r) for name, r in rows.items()}

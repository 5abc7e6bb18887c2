"""Every conclusion the book draws from a study (minigpt.claims), checked against the reference results:
each claim renders from the committed JSON, the fields it says it read hold the values it read, and
flipping the decisive field gives another outcome and another sentence."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from minigpt.claims import REGISTRY, get, with_field

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "cpu" / "seed-0"


def _report(source: str) -> dict:
    path = REFERENCE / source
    if not path.exists():
        pytest.fail(f"{path} is missing: the reference results must hold every study the book draws claims from")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_claim_reads_the_reference_and_flips_with_its_field(name):
    entry = REGISTRY[name]
    rep = _report(entry.source)
    claim = entry.render(rep)
    assert claim.text and claim.reads, f"{name} read no field"
    for path, value in claim.reads.items():
        assert get(rep, path) == value, f"{name}: {path} read {value!r} but the file holds {get(rep, path)!r}"
    flipped = entry.render(entry.flip(rep))
    assert flipped.outcome != claim.outcome, f"{name}: flipping its field left the outcome at {claim.outcome!r}"
    assert flipped.text != claim.text


def test_with_field_copies_and_get_reads_lists():
    rep = {"a": {"b": [1, {"c": 2}]}}
    out = with_field(rep, "a.b.1.c", 3)
    assert get(out, "a.b.1.c") == 3 and get(rep, "a.b.1.c") == 2

"""The machinery of :mod:`minigpt.claims`: a claim, the fields it read, and the registry.

Sentences that follow the numbers: every conclusion the notebooks, the answer keys and the README
draw from a study's JSON, one function per conclusion, one branch per outcome.

Each function takes a report (as written to disk, or as a study returns it) and returns a
:class:`Claim`: the sentence, the branch it took, and the fields it read with their values. A test
renders every registered claim from the reference results, checks that each value it read is the
one in the file, and flips the decisive field with :attr:`Registered.flip` to check that the sentence
changes with it (``tests/test_claims.py``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Claim:
    text: str
    outcome: str  # which branch the numbers chose
    reads: dict[Any, Any] = field(default_factory=dict)  # field path ("a.b.c" or a tuple of keys) -> the value read

    def __str__(self) -> str:
        return self.text


Path = "str | tuple"  # "a.b.0.c", or a tuple of keys when a key holds a dot (a Break 2 point's name)


def _parts(path) -> list:
    return list(path) if isinstance(path, tuple) else path.split(".")


def get(report: Mapping, path) -> Any:
    """The field at ``path`` ("sets.generalist.silent", list items by index, or a tuple of keys) of a report."""
    node: Any = report
    for part in _parts(path):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def reading(report: Mapping, *paths) -> dict[Any, Any]:
    """``{path: value}`` for the fields a claim decides on (what :attr:`Claim.reads` records)."""
    return {p: get(report, p) for p in paths}


def with_field(report: Mapping, path, value: Any) -> dict:
    """A deep copy of ``report`` with the field at ``path`` replaced: how a test flips a claim."""
    out = copy.deepcopy(dict(report))
    *head, last = _parts(path)
    node: Any = get(out, tuple(head)) if head else out
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


@dataclass(frozen=True)
class Registered:
    """A claim as the test sees it: which results file it reads, and how to flip its outcome."""

    render: Callable[[Mapping], Claim]
    source: str  # the results JSON it reads, e.g. "break2.json"
    flip: Callable[[Mapping], Mapping]  # a copy of the report whose numbers must give another outcome


REGISTRY: dict[str, Registered] = {}


def register(name: str, source: str, flip: Callable[[Mapping], Mapping]):
    """Decorator: add a claim function to :data:`REGISTRY` under ``name``."""
    def wrap(fn: Callable[[Mapping], Claim]) -> Callable[[Mapping], Claim]:
        REGISTRY[name] = Registered(fn, source, flip)
        return fn
    return wrap

"""Progress bars for the long loops: tqdm's, switched off by ``TQDM_DISABLE`` everywhere.

tqdm reads that variable for its console bars but not for its notebook widgets, which then end up
in executed notebooks and in the book's pages; this helper passes it on explicitly.
"""
from __future__ import annotations

from typing import Iterable

from tqdm.auto import tqdm

from .config import env


def progress(iterable: Iterable, desc: str) -> tqdm:
    """A transient bar over ``iterable`` (it disappears when done), redrawn at most once a second."""
    return tqdm(iterable, desc=desc, leave=False, mininterval=1.0, disable=env("TQDM_DISABLE") is not None)

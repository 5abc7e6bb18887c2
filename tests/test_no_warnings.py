"""`make run` shows its reader no warning: the training loop with its progress bar on, and the whole
command at ci (its printed output). Executed notebooks are scanned by tools/scan_outputs.py
(tests/test_scan_outputs.py), run by `make test` and by the book build."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from minigpt.config import TrainConfig
from minigpt.model import GPT
from minigpt.train import train_lm


def test_the_training_loop_warns_nothing_with_its_progress_bar_on(tiny_config, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # the bar is what once warned (a tensor in its postfix)
    model = GPT(tiny_config)
    batch = lambda g: (torch.randint(0, tiny_config.vocab_size, (2, tiny_config.block_size), generator=g),) * 2  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in (None, 1):
            train_lm(model, batch, TrainConfig(steps=3, batch_size=2, warmup=1), seed=0, freeze_k=k)
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_make_run_prints_no_warning(ci_experiment, tmp_path):
    out = subprocess.run([sys.executable, "-m", "minigpt", "run", "--profile", "ci"], capture_output=True, text=True,
                         env={**os.environ, "MINIGPT_RESULTS_DIR": str(tmp_path)}, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "warning" not in (out.stdout + out.stderr).lower(), out.stderr[-2000:]

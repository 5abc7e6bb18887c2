"""Hybrid windows: labels, segments and determinism; router scoring on a tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from minigpt.config import GPTConfig
from minigpt.data import DOMAINS
from minigpt.studies.hybrid import hybrid_windows, score_routers, since_switch, single_domain_set
from minigpt.model import GPT

# each domain's tokens live in their own id range, so a token's id reveals its domain
RANGES = {"code": (0, 100), "medical": (100, 200), "legal": (200, 300)}


@pytest.fixture
def streams():
    rng = np.random.default_rng(0)
    return {d: rng.integers(lo, hi, size=5000).astype(np.int32) for d, (lo, hi) in RANGES.items()}


def _domain_of(ids: torch.Tensor) -> torch.Tensor:
    return ids // 100


def test_labels_are_the_domain_of_each_target(streams):
    data = hybrid_windows(streams, n=60, T=32, seed=3)
    assert data.x.shape == data.y.shape == data.labels.shape == (60, 32)
    assert torch.equal(data.labels, _domain_of(data.y))
    assert torch.equal(data.x[:, 1:], data.y[:, :-1])  # next-token targets


def test_segments_come_from_the_right_domains(streams):
    T = 32
    data = hybrid_windows(streams, n=60, T=T, seed=3)
    window = torch.cat([data.x, data.y[:, -1:]], dim=1)  # the T + 1 tokens
    counts = set()
    for i, segs in enumerate(data.segments):
        counts.add(len(segs))
        assert 2 <= len(segs) <= 3
        assert len({s["domain"] for s in segs}) == len(segs)  # all different domains
        assert sum(s["length"] for s in segs) == T + 1 and segs[0]["window_start"] == 0
        for s in segs:
            assert s["length"] >= (T + 1) // 8
            got = window[i, s["window_start"]:s["window_start"] + s["length"]].numpy()
            want = streams[s["domain"]][s["stream_start"]:s["stream_start"] + s["length"]]
            assert np.array_equal(got, want)  # a contiguous piece of that domain's stream
    assert counts == {2, 3}


def test_deterministic_in_seed(streams):
    a, b = hybrid_windows(streams, 20, 16, seed=7), hybrid_windows(streams, 20, 16, seed=7)
    c = hybrid_windows(streams, 20, 16, seed=8)
    assert torch.equal(a.x, b.x) and a.segments == b.segments
    assert not torch.equal(a.x, c.x)


def test_rejects_impossible_requests(streams):
    with pytest.raises(ValueError, match="do not fit"):
        hybrid_windows(streams, 2, 8, seed=0, min_len=5)
    with pytest.raises(ValueError, match="at least that many"):
        hybrid_windows({"code": streams["code"], "legal": streams["legal"]}, 2, 16, seed=0, n_segments=(3,))


def test_since_switch():
    labels = torch.tensor([[0, 0, 2, 2, 2, 1]])
    seg, since = since_switch(labels)
    assert seg.tolist() == [[0, 0, 1, 1, 1, 2]]
    assert since.tolist() == [[0, 1, 0, 1, 2, 0]]


def test_single_domain_set_labels():
    sets = {d: (torch.full((2, 4), i), torch.full((2, 4), i)) for i, d in enumerate(DOMAINS)}
    s = single_domain_set(sets)
    assert s.x.shape == (6, 4) and s.labels[:, 0].tolist() == [0, 0, 1, 1, 2, 2]


class _Replay(nn.Module):
    """A 'router' that replays given per-token weights batch by batch (reads h only for its shape)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights, self.i = weights, 0

    def forward(self, h):
        w = self.weights[self.i:self.i + h.shape[0]]
        self.i += h.shape[0]
        return w


def test_score_routers_accuracy_and_loss(streams):
    cfg = GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=1, n_embd=8)
    torch.manual_seed(0)
    specs = [GPT(cfg) for _ in range(3)]
    for m in specs[1:]:  # one shared trunk (k=1), different crowns
        m.transformer.wte.weight.data.copy_(specs[0].transformer.wte.weight)
        m.transformer.wpe.weight.data.copy_(specs[0].transformer.wpe.weight)
        m.transformer.h[0].load_state_dict(specs[0].transformer.h[0].state_dict())
    data = hybrid_windows(streams, n=10, T=16, seed=1)
    perfect = torch.nn.functional.one_hot(data.labels, 3).float()
    code_only = torch.tensor([1.0, 0.0, 0.0]).expand(10, 3)  # a per-window router: always code
    out = score_routers(specs, 1, {"perfect": _Replay(perfect), "code": _Replay(code_only)}, data, batch_size=4)
    assert out["routers"]["perfect"]["routing_accuracy"] == pytest.approx(1.0)
    assert out["routers"]["code"]["routing_accuracy"] == pytest.approx(float((data.labels == 0).float().mean()))
    assert all(v == pytest.approx(1.0) for v in out["routers"]["perfect"]["accuracy_by_segment"].values())
    # hard routing on code only = the code specialist's own loss
    assert out["routers"]["code"]["fused_loss"] == pytest.approx(out["specialists"]["code specialist"], rel=1e-5)
    # the losses, from each specialist's full forward in float64
    with torch.no_grad():
        spec = torch.stack([torch.nn.functional.cross_entropy(m.double()(data.x)[0].transpose(1, 2), data.y,
                                                              reduction="none") for m in specs])  # (N, n, T)
    want = {f"{d} specialist": float(spec[i].mean()) for i, d in enumerate(DOMAINS)}
    assert out["specialists"] == pytest.approx(want, abs=1e-5)
    assert out["oracle (per token)"] == pytest.approx(float(spec.min(0).values.mean()), abs=1e-5)
    # routing on the labels picks each token's own-domain specialist
    assert out["routers"]["perfect"]["fused_loss"] == pytest.approx(
        float(spec.gather(0, data.labels.unsqueeze(0)).mean()), abs=1e-5)
    # segments counted from the segment records, not from label changes
    assert out["switches_per_window"] == pytest.approx(sum(len(s) - 1 for s in data.segments) / len(data.segments))
    assert out["n_windows"] == 10 and out["n_tokens"] == 160

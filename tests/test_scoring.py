"""Every row of :func:`minigpt.scoring.score` and every column of :func:`minigpt.evaluate.loss_table`,
checked against an independent calculation on hand-made inputs.

The inputs: tiny GPTs with fixed seeded weights (one trunk, three crowns that differ), routers
whose weights are known (a fixed position-dependent table, and two that read the trunk through a
fixed projection), 2-3 windows per domain. The expected values never go through the package's
trunk/crown split or its fusion functions: each specialist runs its full forward in float64
(``model(x)[0]``), softmax and log are written out, experts are mixed by an explicit loop,
hard routing and the oracles are a Python ``max``/``min`` over experts, the weight average is our
own parameter average, and hidden fusion mixes final hidden states obtained by walking the
model's modules by hand.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from minigpt.config import DOMAINS, GPTConfig
from minigpt.evaluate import gap_by_position, gap_per_position, loss_table, routing_accuracy
from minigpt.fusion import average_weights
from minigpt.model import GPT
from minigpt.fusion import FusedModel
from minigpt.scoring import (ORACLE, ORACLE_PER_TOKEN, SPECIALIST_ROWS, ScoreRequest, dispatch_row, fused_row, score,
                             token_nll)

CFG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=1, n_embd=8)
K, N, T, V, C = 1, 3, 6, 11, 8
N_WINDOWS = {"code": 3, "medical": 2, "legal": 3}  # unequal, so a pooled token mean != the mean of domains
BATCH = 2  # smaller than a domain's windows: rows are concatenated over batches
ATOL = 1e-5

# The fixed per-token router: the same weights for every window, one row per position.
# argmax per position: 0, 0, 1, 2, 0, 1 -> code 3/6, medical 2/6, legal 1/6 of the tokens.
FIXED_W = torch.tensor([[0.60, 0.30, 0.10],
                        [0.50, 0.20, 0.30],
                        [0.10, 0.70, 0.20],
                        [0.30, 0.10, 0.60],
                        [0.40, 0.35, 0.25],
                        [0.20, 0.50, 0.30]])
FIXED_ACCURACY = {"code": 3 / 6, "medical": 2 / 6, "legal": 1 / 6}


# -- models and routers -------------------------------------------------------------------------
def _randomise(m: GPT, gen: torch.Generator, names=None, scale: float = 0.5) -> None:
    """Large random weights (the default init gives near-uniform predictions that hide mix-ups)."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if names is None or name in names:
                if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                    p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(scale * torch.randn(p.shape, generator=gen))


def shared_trunk_specialists(seed: int = 0) -> list[GPT]:
    """Three specialists: one random trunk (embeddings, tied head, block 0), three random crowns."""
    gen = torch.Generator().manual_seed(seed)
    trunk = GPT(CFG)
    _randomise(trunk, gen)
    specs = []
    for _ in range(N):
        m = copy.deepcopy(trunk)
        _randomise(m, gen, names=set(m.crown_parameters(K)))
        specs.append(m.eval())
    return specs


def independent_models(seed: int, n: int = N) -> list[GPT]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        m = GPT(CFG)
        _randomise(m, gen)
        out.append(m.eval())
    return out


class FixedRouter(nn.Module):
    """Per-token weights that ignore the input: FIXED_W at every window."""

    def forward(self, h):
        return FIXED_W.unsqueeze(0).expand(h.shape[0], -1, -1)  # float32 whatever the model's dtype


def _probe(h: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """softmax(layer-normalised h @ proj), written out (used by the test routers and by the reference)."""
    mu = h.mean(-1, keepdim=True)
    var = ((h - mu) ** 2).mean(-1, keepdim=True)
    z = ((h - mu) / torch.sqrt(var + 1e-5)) @ proj.to(h.dtype)
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


PROBE = 1.5 * torch.randn(C, N, generator=torch.Generator().manual_seed(7))
SEQ_PROBE = 1.5 * torch.randn(C, N, generator=torch.Generator().manual_seed(12))  # picks all three experts


class ProbeRouter(nn.Module):
    """Per-token weights that depend on the trunk state at that position (so on the window)."""

    def forward(self, h):
        return _probe(h, PROBE)


class SeqRouter(nn.Module):
    """One weight vector per window from the last position's trunk state, like LinearRouter."""

    def forward(self, h):
        return _probe(h[:, -1], SEQ_PROBE)


ROUTERS = {"fixed": FixedRouter, "probe": ProbeRouter, "seq": SeqRouter}


def eval_sets(seed: int = 3) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {d: (torch.randint(0, V, (n, T), generator=gen), torch.randint(0, V, (n, T), generator=gen))
            for d, n in N_WINDOWS.items()}


# -- the reference, in float64 ------------------------------------------------------------------
def f64(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m).double()


def log_softmax64(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    shifted = z - z.max(-1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(-1, keepdim=True))


def nll_of_logprobs(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log p[target] by explicit indexing over (B, T)."""
    out = torch.empty(y.shape, dtype=torch.float64)
    for b in range(y.shape[0]):
        for t in range(y.shape[1]):
            out[b, t] = -logp[b, t, int(y[b, t])]
    return out


def walk_hidden(m64: GPT, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
    """Embeddings, blocks [0, upto) and (when upto is None) ln_f, by hand through the modules."""
    tr = m64.transformer
    h = tr.wte.weight[x] + tr.wpe.weight[torch.arange(x.shape[1])]
    blocks = list(tr.h) if upto is None else list(tr.h)[:upto]
    for blk in blocks:
        h = blk(h)
    return tr.ln_f(h) if upto is None else h


def mix(weights: torch.Tensor, per_expert: list[torch.Tensor]) -> torch.Tensor:
    """sum_n w[..., n] * x_n with (B, T, N) weights, an explicit loop over experts."""
    out = torch.zeros_like(per_expert[0])
    for n, x in enumerate(per_expert):
        out = out + weights[..., n:n + 1].double() * x
    return out


def argmax_by_hand(weights: torch.Tensor) -> torch.Tensor:
    """(B, T, N) -> (B, T) index of the largest weight, by a Python max over experts."""
    B, T_, n = weights.shape
    return torch.tensor([[max(range(n), key=lambda j: float(weights[b, t, j])) for t in range(T_)]
                         for b in range(B)])


def expected_weights(name: str, trunk_h64: torch.Tensor) -> torch.Tensor:
    """The router's (B, T, N) weights from our own float64 trunk state."""
    B = trunk_h64.shape[0]
    if name == "fixed":
        return FIXED_W.double().unsqueeze(0).expand(B, -1, -1)
    if name == "probe":
        return _probe(trunk_h64, PROBE.double())
    return _probe(trunk_h64[:, -1], SEQ_PROBE.double()).unsqueeze(1).expand(-1, T, -1)


def reference(models, x, y, *, base=None, avg=None, hidden_head=None, routers=("fixed", "probe", "seq")):
    """Every row's (B, T) token losses on one domain's windows, computed without the package's
    scoring, fusion or trunk/crown code."""
    m64 = [f64(m) for m in models]
    with torch.no_grad():
        logits = [m(x)[0] for m in m64]  # full forward, float64
        hidden = [walk_hidden(m, x) for m in m64]
        for m, hd, lg in zip(m64, hidden, logits):  # the walk is the model (tied head)
            torch.testing.assert_close(hd @ m.transformer.wte.weight.T, lg, atol=1e-10, rtol=0)
        trunk_h = walk_hidden(m64[0], x, upto=K)
        logp = [log_softmax64(lg) for lg in logits]
        spec = [nll_of_logprobs(lp, y) for lp in logp]
        rows = {SPECIALIST_ROWS[n]: spec[n] for n in range(len(models))}
        if base is not None:
            rows["base"] = nll_of_logprobs(log_softmax64(f64(base)(x)[0]), y)
        if avg is not None:
            rows["weight average"] = nll_of_logprobs(log_softmax64(f64(avg)(x)[0]), y)
        third = torch.full((x.shape[0], T, len(models)), 1.0 / len(models), dtype=torch.float64)
        rows["uniform mix"] = nll_of_logprobs(log_softmax64(mix(third, logits)), y)
        weights = {}
        for r in routers:
            w = expected_weights(r, trunk_h)
            weights[r] = w
            rows[fused_row("soft", r)] = nll_of_logprobs(log_softmax64(mix(w, logits)), y)
            choice = argmax_by_hand(w)
            hard = torch.stack([torch.stack([logits[int(choice[b, t])][b, t] for t in range(T)])
                                for b in range(x.shape[0])])
            if r == "seq":
                rows[dispatch_row(r)] = nll_of_logprobs(log_softmax64(hard), y)
                continue
            rows[fused_row("hard", r)] = nll_of_logprobs(log_softmax64(hard), y)
            probs = mix(w, [torch.exp(lp) for lp in logp])  # sum_n w_n softmax_n
            rows[fused_row("probs", r)] = nll_of_logprobs(torch.log(probs), y)
            if hidden_head is not None:
                head = hidden_head.weight.double()
                rows[fused_row("hidden", r)] = nll_of_logprobs(log_softmax64(mix(w, hidden) @ head.T), y)
        # oracles: brute force over experts
        B = x.shape[0]
        per_seq = torch.empty(B, T, dtype=torch.float64)
        per_tok = torch.empty(B, T, dtype=torch.float64)
        for b in range(B):
            means = [float(s[b].mean()) for s in spec]
            best = min(range(len(spec)), key=means.__getitem__)
            per_seq[b] = spec[best][b]
            for t in range(T):
                per_tok[b, t] = min(float(s[b, t]) for s in spec)
        rows[ORACLE], rows[ORACLE_PER_TOKEN] = per_seq, per_tok
    return rows, weights, logits


def our_average(models: list[GPT]) -> GPT:
    """Parameter averaging done here: every state_dict entry is the mean over the models."""
    states = [m.state_dict() for m in models]
    avg = GPT(CFG)
    avg.load_state_dict({k: sum(s[k] for s in states) / len(states) for k in states[0]})
    return avg.eval()


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup():
    specs = shared_trunk_specialists()
    base = independent_models(seed=11, n=1)[0]
    head = nn.Linear(C, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(0.7 * torch.randn(V, C, generator=torch.Generator().manual_seed(12)))
    sets = eval_sets()
    sc = score(ScoreRequest(windows=sets, experts=FusedModel(specs, K),
                            routers={r: cls() for r, cls in ROUTERS.items()}, base=base,
                            extra={"weight average": average_weights(specs)}, batch_size=BATCH, hidden_head=head,
                            calibration=True))
    ref = {d: reference(specs, x, y, base=base, avg=our_average(specs), hidden_head=head) for d, (x, y) in sets.items()}
    return specs, sets, sc, ref


# -- the inputs are what the test needs ---------------------------------------------------------
def test_the_hand_made_inputs_can_tell_rows_apart(setup):
    specs, sets, sc, ref = setup
    for d in DOMAINS:
        rows, weights, logits = ref[d]
        # the crowns differ and so do the rows a mix-up would confuse
        assert min(float((logits[i] - logits[j]).abs().max()) for i in range(N) for j in range(i)) > 0.5
        for a, b in [(SPECIALIST_ROWS[0], SPECIALIST_ROWS[1]),
                     (fused_row("soft", "probe"), fused_row("probs", "probe")),
                     (fused_row("soft", "probe"), fused_row("hidden", "probe")), (ORACLE, ORACLE_PER_TOKEN),
                     (fused_row("soft", "fixed"), fused_row("soft", "probe")),
                     ("uniform mix", fused_row("soft", "fixed"))]:
            assert (rows[a] - rows[b]).abs().max() > 1e-2, (d, a, b)
        # no near-ties: float32 and float64 pick the same argmax / the same best specialist
        for w in weights.values():
            top2 = w.topk(2, dim=-1).values
            assert (top2[..., 0] - top2[..., 1]).min() > 1e-3
        spec = torch.stack([rows[r] for r in SPECIALIST_ROWS])
        means = spec.mean(-1).sort(0).values
        assert (means[1] - means[0]).min() > 1e-3
    # the per-sequence router dispatches to every specialist somewhere
    assert {int(j) for d in DOMAINS for j in ref[d][1]["seq"][:, 0].argmax(-1)} == {0, 1, 2}
    # the per-window oracle does not always pick the same specialist, nor always the own one
    picks = {d: [min(range(N), key=lambda n: float(ref[d][0][SPECIALIST_ROWS[n]][b].mean()))
                 for b in range(N_WINDOWS[d])] for d in DOMAINS}
    assert len({p for ps in picks.values() for p in ps}) >= 2, picks


# -- every row ------------------------------------------------------------------------------------
EXPECTED_ROWS = {"base", *SPECIALIST_ROWS, "weight average", "uniform mix", ORACLE, ORACLE_PER_TOKEN,
                 *(fused_row(rule, r) for r in ("fixed", "probe") for rule in ("soft", "hard", "probs", "hidden")),
                 fused_row("soft", "seq"), dispatch_row("seq")}


def test_score_has_exactly_the_documented_rows(setup):
    _, _, sc, _ = setup
    assert set(sc.nll) == EXPECTED_ROWS
    assert all(list(per) == list(N_WINDOWS) for per in sc.nll.values())
    assert sc.domains() == list(N_WINDOWS) and sc.specialist_rows == list(SPECIALIST_ROWS)


@pytest.mark.parametrize("row", sorted(EXPECTED_ROWS))
def test_every_row_equals_the_independent_calculation(setup, row):
    _, sets, sc, ref = setup
    for d in sets:
        got = sc.nll[row][d]
        assert got.shape == (N_WINDOWS[d], T)
        torch.testing.assert_close(got.double(), ref[d][0][row], atol=ATOL, rtol=0, msg=f"{row} on {d}")


def test_spec_nll_stacks_the_specialists_in_order(setup):
    _, _, sc, ref = setup
    for d in DOMAINS:
        want = torch.stack([ref[d][0][r] for r in SPECIALIST_ROWS])
        torch.testing.assert_close(sc.spec_nll(d).double(), want, atol=ATOL, rtol=0)


def test_router_weights_are_kept_per_token(setup):
    _, _, sc, ref = setup
    assert set(sc.weights) == set(ROUTERS)
    for r in ROUTERS:
        for d in DOMAINS:
            got = sc.weights[r][d]
            assert got.shape == (N_WINDOWS[d], T, N)
            torch.testing.assert_close(got.double(), ref[d][1][r], atol=1e-6, rtol=0)


def test_routing_accuracy_by_hand_count(setup):
    _, _, sc, ref = setup
    # the fixed router: counted once by hand from FIXED_W (see its comment)
    assert routing_accuracy(sc.weights["fixed"]) == pytest.approx(FIXED_ACCURACY, abs=1e-7)  # a float32 mean
    # the window-dependent routers: count tokens one by one
    for r in ("probe", "seq"):
        want = {}
        for i, d in enumerate(DOMAINS):
            w = ref[d][1][r]
            hits = total = 0
            for b in range(w.shape[0]):
                for t in range(T):
                    own, others = float(w[b, t, i]), [float(w[b, t, j]) for j in range(N) if j != i]
                    hits += own > max(others)
                    total += 1
            want[d] = hits / total
        assert routing_accuracy(sc.weights[r]) == pytest.approx(want, abs=1e-7), r


def test_calibration_statistics(setup):
    _, sets, sc, ref = setup
    assert set(sc.stats) == {*SPECIALIST_ROWS, *(fused_row("soft", r) for r in ROUTERS)}
    for d, (x, y) in sets.items():
        rows, weights, logits = ref[d]
        cases = {SPECIALIST_ROWS[n]: logits[n] for n in range(N)}
        cases.update({fused_row("soft", r): mix(w, logits) for r, w in weights.items()})
        for row, lg in cases.items():
            p = torch.exp(log_softmax64(lg))
            s = sc.stats[row][d]
            torch.testing.assert_close(s["confidence"].double(), p.max(-1).values.flatten(), atol=1e-6, rtol=0)
            assert s["correct"].tolist() == [float(v) for v in (argmax_by_hand(p) == y).flatten().tolist()]
            mean = lg.mean(-1, keepdim=True)
            std = torch.sqrt(((lg - mean) ** 2).mean(-1))  # population std over the vocabulary
            torch.testing.assert_close(s["logit_std"].double(), std.flatten(), atol=1e-5, rtol=0)


# -- the table --------------------------------------------------------------------------------------
def test_loss_table_columns_by_hand(setup):
    _, _, sc, ref = setup
    table = loss_table(sc.nll)
    refs = [r for r in ("monolithic", "uniform mix", "base") if r in EXPECTED_ROWS]
    assert list(table.columns) == [*DOMAINS, "mixed", "Δ% vs best specialist", *(f"Δ% vs {r}" for r in refs)]
    dom_mean = {row: {d: float(ref[d][0][row].sum()) / ref[d][0][row].numel() for d in DOMAINS}
                for row in EXPECTED_ROWS}
    mixed = {row: (m["code"] + m["medical"] + m["legal"]) / 3 for row, m in dom_mean.items()}
    best = min(mixed[r] for r in SPECIALIST_ROWS)
    for row in EXPECTED_ROWS:
        for d in DOMAINS:
            assert table.loc[row, d] == pytest.approx(dom_mean[row][d], abs=ATOL), (row, d)
        assert table.loc[row, "mixed"] == pytest.approx(mixed[row], abs=ATOL), row
        # percentages of a ~2.5-nat loss: 1e-5 nats of float32 rounding is ~4e-4 points at most
        assert table.loc[row, "Δ% vs best specialist"] == pytest.approx(100 * (best - mixed[row]) / best, abs=1e-3)
        base = mixed["base"]
        assert table.loc[row, "Δ% vs base"] == pytest.approx(100 * (base - mixed[row]) / base, abs=1e-3)
    # the equal-weight mean of domains is not the pooled token mean on these windows
    pooled = {row: float(torch.cat([ref[d][0][row].flatten() for d in DOMAINS]).mean()) for row in EXPECTED_ROWS}
    assert max(abs(pooled[r] - mixed[r]) for r in EXPECTED_ROWS) > 1e-3


# -- specialists from different bases (Break 1) --------------------------------------------------
def test_unshared_experts_run_each_models_own_trunk():
    models = independent_models(seed=21)
    head = models[0].lm_head
    sets = eval_sets(seed=4)
    sc = score(ScoreRequest(windows=sets, experts=FusedModel(models, K, shared=False),
                            routers={"probe": ProbeRouter(), "seq": SeqRouter()}, batch_size=BATCH, hidden_head=head))
    for d, (x, y) in sets.items():
        rows, _, _ = reference(models, x, y, hidden_head=head, routers=("probe", "seq"))
        for row in (*SPECIALIST_ROWS, "uniform mix", fused_row("soft", "probe"), fused_row("probs", "probe"),
                    fused_row("hidden", "probe"), fused_row("hard", "probe"), dispatch_row("seq"), ORACLE,
                    ORACLE_PER_TOKEN):
            torch.testing.assert_close(sc.nll[row][d].double(), rows[row], atol=ATOL, rtol=0, msg=f"{row} on {d}")
        # with different heads, hidden-state fusion is not logit fusion
        assert (rows[fused_row("hidden", "probe")] - rows[fused_row("soft", "probe")]).abs().max() > 1e-2


# -- low precision: the losses are computed in float32 ---------------------------------------------
def test_token_nll_upcasts_half_precision_logits():
    gen = torch.Generator().manual_seed(5)
    logits = (20 * torch.randn(4, 6, 50, generator=gen)).to(torch.bfloat16)
    y = torch.randint(0, 50, (4, 6), generator=gen)
    got = token_nll(logits, y)
    assert got.dtype == torch.float32
    want = nll_of_logprobs(log_softmax64(logits), y)  # the same bf16 numbers, exact arithmetic
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=0)


def test_score_on_bfloat16_models_is_computed_in_float32():
    specs = [m.to(torch.bfloat16) for m in shared_trunk_specialists(seed=1)]
    sets = eval_sets(seed=6)
    sc = score(ScoreRequest(windows=sets, experts=FusedModel(specs, K), routers={"fixed": FixedRouter()},
                            batch_size=BATCH))
    for d, (x, y) in sets.items():
        with torch.no_grad():
            logits = [m(x)[0] for m in specs]  # bf16 logits, as the package sees them
        for n in range(N):
            want = nll_of_logprobs(log_softmax64(logits[n]), y)
            torch.testing.assert_close(sc.nll[SPECIALIST_ROWS[n]][d].double(), want, atol=1e-4, rtol=0)
        lp = [log_softmax64(lg) for lg in logits]
        w = FIXED_W.double().expand(x.shape[0], -1, -1)
        want = nll_of_logprobs(torch.log(mix(w, [torch.exp(v) for v in lp])), y)
        torch.testing.assert_close(sc.nll[fused_row("probs", "fixed")][d].double(), want, atol=1e-4, rtol=0)


# -- gap by position ---------------------------------------------------------------------------------
def test_gap_by_position_on_a_known_gap():
    # T = 10, edges (0, 3, 7): buckets 0-2, 3-6, 7-9. method = reference + gap[domain][bucket] + a
    # per-window wobble that averages to zero within each domain; reference is arbitrary noise.
    gen = torch.Generator().manual_seed(0)
    T_ = 10
    gap = {"code": (0.5, 0.1, -0.2), "medical": (0.2, 0.0, 0.1), "legal": (-0.1, 0.3, 0.4)}
    n = {"code": 4, "medical": 2, "legal": 3}
    bucket_of = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    nll = {"ref": {}, "method": {}}
    for d in gap:
        ref = 2 + torch.rand(n[d], T_, generator=gen, dtype=torch.float64)
        wobble = torch.linspace(-0.3, 0.3, n[d], dtype=torch.float64).view(-1, 1)  # mean zero over windows
        shift = torch.tensor([gap[d][bucket_of[t]] for t in range(T_)], dtype=torch.float64)
        nll["ref"][d], nll["method"][d] = ref, ref + shift + wobble
    out = gap_by_position(nll, method="method", reference="ref", edges=(0, 3, 7))
    # by hand: the mean over domains of each bucket's gap
    assert list(out) == ["0-2", "3-6", "7-9"]
    assert out["0-2"] == pytest.approx((0.5 + 0.2 - 0.1) / 3, abs=1e-12)
    assert out["3-6"] == pytest.approx((0.1 + 0.0 + 0.3) / 3, abs=1e-12)
    assert out["7-9"] == pytest.approx((-0.2 + 0.1 + 0.4) / 3, abs=1e-12)
    # the last bucket runs to T: edges (0, 8) give 0-7 and 8-9
    short = gap_by_position(nll, method="method", reference="ref", edges=(0, 8))
    assert list(short) == ["0-7", "8-9"]
    first = sum((sum(gap[d][bucket_of[t]] for t in range(8)) / 8) for d in gap) / 3
    assert short["0-7"] == pytest.approx(first, abs=1e-12)
    assert short["8-9"] == pytest.approx((-0.2 + 0.1 + 0.4) / 3, abs=1e-12)
    # position by position: the bucket means of gap_per_position are gap_by_position's buckets
    per = gap_per_position(nll, method="method", reference="ref")
    assert len(per) == T_ and per[0] == pytest.approx((0.5 + 0.2 - 0.1) / 3, abs=1e-12)
    assert per[9] == pytest.approx((-0.2 + 0.1 + 0.4) / 3, abs=1e-12)
    for lo, hi in ((0, 3), (3, 7), (7, 10)):
        assert sum(per[lo:hi]) / (hi - lo) == pytest.approx(out[f"{lo}-{hi - 1}"], abs=1e-12)

"""Property tests for prediction fusion: properties that must hold for *any* weights and logits.

* a mixture of distributions stays inside their convex hull and sums to 1;
* the specialists have no order: permuting them together with their weights changes nothing;
* a one-hot weight vector hands back that specialist's prediction;
* the scoring shortcuts (hard and probs rows from the specialists' token losses) give exactly the
  losses of fusing the whole distributions.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

hypothesis = __import__("conftest").require_extra("hypothesis")  # a test extra: missing fails, never skips
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from minigpt.fusion import fuse_logits, fuse_probs, hard_token_nll, hard_weights, mixture_token_nll  # noqa: E402
from minigpt.model import token_nll_from_logprobs  # noqa: E402

# Logits within +-10: wide enough for near-one-hot distributions (probabilities ~1e-9), narrow
# enough that float32 log-probabilities keep ~1e-6 absolute precision.
LOGIT = st.floats(-10.0, 10.0, width=32, allow_nan=False, allow_infinity=False)
SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def cases(draw):
    """(weights (B, N) or (B, T, N) on the simplex, logits (N, B, T, V)) of random small shapes."""
    n, b, t, v = (draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 8)))
    wshape = (b, t, n) if draw(st.booleans()) else (b, n)
    # exact zeros are likely (a specialist switched off) and so are rows that normalise to a vertex
    raw = draw(arrays(np.float64, wshape, elements=st.one_of(st.just(0.0), st.floats(0.0, 1.0))))
    raw[raw.sum(-1) == 0, 0] = 1.0
    weights = torch.from_numpy(raw / raw.sum(-1, keepdims=True)).float()
    logits = torch.from_numpy(draw(arrays(np.float32, (n, b, t, v), elements=LOGIT)))
    return weights, logits


@SETTINGS
@given(cases())
def test_fuse_probs_stays_in_the_convex_hull(case):
    weights, logits = case
    p = fuse_probs(weights, logits).exp()  # (B, T, V)
    probs = F.softmax(logits, dim=-1)  # (N, B, T, V)
    lo, hi = probs.min(0).values, probs.max(0).values
    tol = 1e-6 + 1e-5 * hi  # float32 rounding of weights and probabilities, nothing more
    assert torch.all(p >= lo - tol), (p - lo).min()
    assert torch.all(p <= hi + tol), (p - hi).max()
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-5, rtol=0)


@SETTINGS
@given(cases())
def test_fuse_logits_stays_between_the_specialists(case):
    weights, logits = case
    fused = fuse_logits(weights, logits)
    tol = 1e-5 * (1 + logits.abs().max(0).values)
    assert torch.all(fused >= logits.min(0).values - tol)
    assert torch.all(fused <= logits.max(0).values + tol)


@SETTINGS
@given(cases(), st.data())
def test_permuting_specialists_and_weights_changes_nothing(case, data):
    weights, logits = case
    perm = data.draw(st.permutations(range(logits.shape[0])))
    w_perm, l_perm = weights[..., perm], logits[perm]
    torch.testing.assert_close(fuse_logits(w_perm, l_perm), fuse_logits(weights, logits), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fuse_probs(w_perm, l_perm), fuse_probs(weights, logits), atol=1e-5, rtol=1e-5)
    # the list form used by callers agrees with the stacked form
    torch.testing.assert_close(fuse_probs(w_perm, list(l_perm)), fuse_probs(weights, logits), atol=1e-5, rtol=1e-5)


@SETTINGS
@given(cases(), st.data())
def test_one_hot_weights_give_that_specialist(case, data):
    weights, logits = case
    n = logits.shape[0]
    j = data.draw(st.integers(0, n - 1))
    one_hot = torch.zeros_like(weights)
    one_hot[..., j] = 1.0
    assert torch.equal(fuse_logits(one_hot, logits), logits[j])  # 1*x + 0*y is exact
    torch.testing.assert_close(fuse_probs(one_hot, logits), F.log_softmax(logits[j], dim=-1), atol=1e-6, rtol=0)


@SETTINGS
@given(cases(), st.data())
def test_target_only_rows_equal_fusing_the_distributions(case, data):
    weights, logits = case
    n, b, t, v = logits.shape
    targets = torch.tensor(data.draw(arrays(np.int64, (b, t), elements=st.integers(0, v - 1))))
    spec = torch.stack([token_nll_from_logprobs(F.log_softmax(l, dim=-1), targets) for l in logits])  # (N, B, T)
    hard = token_nll_from_logprobs(F.log_softmax(fuse_logits(hard_weights(weights), logits), dim=-1), targets)
    assert torch.equal(hard_token_nll(weights, spec), hard)
    probs = token_nll_from_logprobs(fuse_probs(weights, logits), targets)
    torch.testing.assert_close(mixture_token_nll(weights, spec), probs, atol=1e-6, rtol=0)

# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · Soft fusion: mixing logits, mixing probabilities, or picking one
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/04_soft_fusion.ipynb)
#
# Companion to Chapter 32, Step 4. The router of notebook 3 hands out one weight per specialist;
# this notebook is about what to *do* with those weights. Three rules are compared on the same
# held-out windows: a weighted sum of the specialists' logits (the chapter's choice), a mixture of
# their probabilities, and hard routing to the top specialist. Then where the weights come from:
# the chapter's router reads the window's last token, which peeks at the future when the fused
# model predicts every token, so we compare it with a causal router, also on windows that switch
# domain half-way.

# %%
# Colab only: install the companion package. Locally (`pip install -e .`) this cell does nothing.
# The book trains the `cpu` profile, whose numbers are the README's, on the runtime's GPU when it has
# one (minutes). For the larger `gpu` profile remove the `#` below; the next cell prints its time.
import os
import subprocess
import sys

REPO = "ORG/chapter32-fusion"  # written by `make colab REPO=owner/name`, like the badge above
# os.environ["MINIGPT_PROFILE"] = "gpu"
if "google.colab" in sys.modules:  # same test as minigpt.notebook.in_colab(), before minigpt exists
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+https://github.com/{REPO}@main"], check=True)
    import torch  # preinstalled on Colab, with CUDA

    where = (f"the GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available()
             else "the CPU (Runtime > Change runtime type adds a GPU)")
    print(f"installed minigpt from github.com/{REPO}; profile {os.environ.get('MINIGPT_PROFILE', 'cpu')!r} on {where}")

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F

from minigpt.analysis.conclusions import routers_on_hybrid, rule_spread
from minigpt.analysis.routing import future_leak, router_weights
from minigpt.analysis.table import fusion_comparison
from minigpt.chapter import chapter_table
from minigpt.config import DOMAINS
from minigpt.device import resolve
from minigpt.exercises import check_fuse_logits
from minigpt.fusion import FusedModel, fuse_logits, fuse_probs, hard_weights
from minigpt.model import token_nll_from_logprobs
from minigpt.notebook import setup, show_markdown, show_source, slider
from minigpt.plots import plot_hybrid_routing, plot_mixed_losses, plot_routed_text, plot_token_losses
from minigpt.router import CausalRouter
from minigpt.scoring import ORACLE, SPECIALIST_ROWS
from minigpt.studies.hybrid import (accuracy_since_switch, generation_prompts, hybrid_set, hybrid_table, hybrid_windows,
                                    routed_generations, run_hybrid, segment_snippets, switch_lag,
                                    true_weight_by_distance)

exp = setup()
specialists, k = exp.specialists(), exp.k
routers = {"last-token": exp.router("last_token"), "per-token": exp.router("per_token")}
res = chapter_table(exp)  # the full table of notebook 5, from cached models
table = res["table"]

# %% [markdown]
# ## 1. Three rules for combining predictions (Chapter 32, Step 4)
#
# Each specialist gives logits $z_i$ over the same vocabulary; the router gives weights $w_i \ge 0$
# that sum to one.
#
# * **Logit fusion** (`fuse_logits`): $z = \sum_i w_i z_i$. After the softmax this is proportional
#   to $\prod_i p_i^{w_i}$, a *weighted geometric mean*: a token stays likely only if every
#   specialist with real weight finds it plausible, so one specialist can veto it.
# * **Probability mixture** (`fuse_probs`): $p = \sum_i w_i p_i$, an *arithmetic* mean. A token is
#   likely if any weighted specialist likes it; nobody can veto.
# * **Hard routing** (`hard_weights`): all weight on the top specialist.

# %% [markdown]
# **Exercise** (Chapter 32, Step 4). Write logit fusion before reading the package's version. The
# cell after yours compares it with `minigpt.fusion.fuse_logits` on the specialists' real logits and
# both routers' weights; until you write it, it says so.

# %% exercise="fuse_logits" tags=["exercise"]
def my_fuse_logits(weights, logits):
    """Logit fusion, z = sum_i w_i z_i. `logits` (N, B, T, V): the N specialists' logits, stacked.
    `weights`: the router's, (B, T, N) from a per-token router or (B, N) from the chapter's
    last-token router (one vector for the whole window). Returns the fused logits (B, T, V)."""
    raise NotImplementedError("hint: weights.movedim(-1, 0) puts the specialists first; add trailing axes "
                              "until it broadcasts against logits, multiply, and sum over the first axis")


# %% tags=["check"]
passed = check_fuse_logits(my_fuse_logits, exp)

# %%
show_source(fuse_logits)
show_source(fuse_probs)
show_source(hard_weights)

# %% [markdown]
# A toy vocabulary of five tokens. Specialist A is sure the next token is `a`, specialist B that it
# is `b`, and the router cannot decide (0.5 / 0.5):

# %% tags=["hide-input"]
vocab = ["a", "b", "c", "d", "e"]
toy = torch.tensor([[[[4.0, 0.0, 1.0, 0.0, 0.0]]], [[[0.0, 4.0, 1.0, 0.0, 0.0]]]])  # (N=2, B=1, T=1, V=5)
w_toy = torch.tensor([[0.5, 0.5]])
dists = {"specialist A": F.softmax(toy[0, 0, 0], -1), "specialist B": F.softmax(toy[1, 0, 0], -1),
         "logit fusion": F.softmax(fuse_logits(w_toy, toy)[0, 0], -1),
         "probability mixture": fuse_probs(w_toy, toy)[0, 0].exp(),
         "hard (A wins the tie)": F.softmax(fuse_logits(hard_weights(w_toy), toy)[0, 0], -1)}
toy_df = pd.DataFrame({name: p.numpy() for name, p in dists.items()}, index=vocab)
fig, axes = plt.subplots(1, len(dists), figsize=(12, 2.2), sharey=True)
for ax, (name, col) in zip(axes, toy_df.items()):
    ax.bar(vocab, col, color="tab:purple" if "fusion" in name or "mixture" in name else "0.55")
    ax.set_title(name, fontsize=9)
axes[0].set_ylabel("probability")
fig.suptitle("Two confident specialists that disagree, weighted 0.5 / 0.5", fontsize=10)
fig.tight_layout()
plt.show()
toy_df.round(3).T

# %% [markdown]
# The geometric mean spreads its mass over `a`, `b` *and* the compromise `c`; the mixture keeps two
# peaks. Two facts hold whatever the specialists are, checked below on held-out text with the
# trained per-token router: logit fusion *is* the normalised weighted geometric mean, and both soft
# rules lose, per token, at most the router-weighted average of the specialists' own losses
# (Jensen's inequality for the mixture, Hölder's for the geometric mean).

# %%
x = torch.cat([exp.eval_sets[d][0][:4] for d in DOMAINS]).to(resolve())  # 4 held-out windows per domain
y = torch.cat([exp.eval_sets[d][1][:4] for d in DOMAINS]).to(resolve())
with torch.no_grad():
    h, logits = FusedModel(specialists, k).expert_logits(x)  # (B, T, C), (N, B, T, V)
    w = routers["per-token"](h)  # (B, T, N)
logp = F.log_softmax(logits.float(), -1)
geo = F.log_softmax((w.movedim(-1, 0).unsqueeze(-1) * logp).sum(0), -1)  # normalised Σ w_i log p_i
fused_logits_lp = F.log_softmax(fuse_logits(w, logits).float(), -1)
nll_logits = token_nll_from_logprobs(fused_logits_lp, y)
nll_probs = token_nll_from_logprobs(fuse_probs(w, logits), y)
nll_each = torch.stack([token_nll_from_logprobs(lp, y) for lp in logp])  # (N, B, T)
weighted_avg = (w.movedim(-1, 0) * nll_each).sum(0)
identity_err = float((geo - fused_logits_lp).abs().max())
print(f"{y.numel()} tokens: max |log-prob difference| between logit fusion and the normalised geometric mean "
      f"{identity_err:.2e}")
print(f"mean loss: logit fusion {nll_logits.mean():.4f}, probability mixture {nll_probs.mean():.4f}, "
      f"router-weighted average of the specialists {weighted_avg.mean():.4f}")
print(f"the mixture beats logit fusion on {(nll_probs < nll_logits).float().mean():.0%} of tokens")
assert identity_err < 1e-3
assert bool((nll_probs <= weighted_avg + 1e-4).all()) and bool((nll_logits <= weighted_avg + 1e-4).all())

# %% [markdown]
# ## 2. The three rules on the held-out table
#
# The same rules scored on every held-out window by notebook 5's harness. Rows are the rule, columns
# the router that supplied the weights. With the last-token router, hard routing means *single
# dispatch*: one specialist for the whole window.

# %%
comparison = fusion_comparison(table)
comparison.style.format("{:.4f}", na_rep="—").highlight_min(axis=None, props="font-weight: bold")

# %%
rows = ["base", *SPECIALIST_ROWS, "uniform mix", "fused soft (per-token router)", "fused probs (per-token router)",
        "fused hard (per-token router)", "fused soft (last-token router)", "single dispatch (last-token router)", ORACLE]
plot_mixed_losses(table.loc[rows], highlight=("fused soft (per-token router)", "fused probs (per-token router)",
                                              "fused hard (per-token router)", ORACLE))
plt.title(f"Fusion rules on mixed held-out data ({exp.profile.name} profile)", fontsize=10)
plt.show()

# %%
show_markdown(rule_spread(comparison["per-token"].dropna().to_dict(), res["oracle_gap"]))
table.loc[[r for r in rows if "per-token" in r], list(DOMAINS)].style.format("{:.4f}").set_caption(
    "per domain, per-token router")

# %% [markdown]
# ## 3. Where the weights come from: the last token, or only the past
#
# The chapter's router (Step 3) reads the trunk output at the *last* position and gives one weight
# vector for the whole window. For language modelling that leaks: the prediction of token $t+1$
# uses weights computed from a summary that has already read tokens $t+1, \dots, T$. The package's
# `CausalRouter` instead weights each position from a decaying average of the trunk states seen so
# far (recent tokens count most), still one linear map and a softmax:

# %%
show_source(CausalRouter)

# %% [markdown]
# The leak can be measured. Keep the first half of some code windows and replace the second half
# with legal text. A causal computation gives the same numbers on the first half (up to rounding);
# anything that moves there has seen the future.

# %%
t_cut = exp.profile.model.block_size // 2
x_code = exp.eval_sets["code"][0][:8].to(resolve())
x_swap = x_code.clone()
x_swap[:, t_cut:] = exp.eval_sets["legal"][0][:8, t_cut:].to(resolve())
leak = future_leak(specialists[0], k, routers, x=x_code, x_alt=x_swap, t=t_cut)
pd.Series(leak, name=f"max |change| at positions < {t_cut}").to_frame().style.format("{:.2e}")

# %%
assert leak["trunk output"] < 1e-5, "the trunk's attention is causal: later tokens cannot change earlier states"
assert leak["per-token"] < 1e-5, "the causal router must not see later tokens"
assert leak["last-token"] > 1e-3, "the last-token router's weights depend on the last token"
print(f"last-token router: weights at early positions moved by up to {leak['last-token']:.3f} "
      "when only later tokens changed; causal router and trunk: unchanged")

# %% [markdown]
# ## 4. Hybrid windows: text that switches domain
#
# On single-domain windows the two routers tell the same story. They part when the domain changes
# inside a window, say code pasted into a legal document. `run_hybrid` builds such windows from the
# held-out streams (two or three segments of random length), labels every target token with its true
# domain and scores both routers on them and on ordinary windows. Routing accuracy is per token here.

# %%
show_source(hybrid_windows, start="for i in range(n):", stop="segments.append(segs)")

# %%
hyb = run_hybrid(exp)
ht = hybrid_table(hyb)
ht.style.format("{:.4f}").format("{:.1%}", subset=["routing accuracy"])

# %% tags=["hide-input"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.0))
ht["routing accuracy"].unstack().plot.bar(ax=ax1, rot=0, color=["0.55", "tab:purple"])
ax1.axhline(1 / len(DOMAINS), color="black", ls=":", lw=1, label="chance")
ax1.set_ylabel("per-token routing accuracy")
ax1.legend(fontsize=8)
gain = ht["gain vs best specialist"].unstack()
gain.plot.bar(ax=ax2, rot=0, color=["0.55", "tab:purple"], legend=False)
ax2.axhline(0, color="black", lw=0.8)
ax2.set_ylabel("best specialist − fused loss (nats)")
fig.tight_layout()
plt.show()

# %%
show_markdown(routers_on_hybrid({kind: {r: ht.loc[(kind, r)].to_dict() for r in routers}
                                 for kind in ("single-domain", "hybrid")}))

# %% [markdown]
# How quickly does each router catch up after a switch? Accuracy by tokens since the last change of
# domain (0 = the first token of a new segment):

# %%
since = accuracy_since_switch(hyb)
since.plot(marker="o", figsize=(6, 2.8), color=["0.55", "tab:purple"])
plt.axhline(1 / len(DOMAINS), color="black", ls=":", lw=1)
plt.ylabel("routing accuracy")
plt.title("Hybrid windows: accuracy after a domain switch", fontsize=10)
plt.show()
since.style.format("{:.1%}")

# %% [markdown]
# ## Going further
#
# ### Hybrid windows, token by token
#
# The average weight each router puts on the *true* domain's specialist, by distance from the last
# switch, over all hybrid windows:

# %%
hs = hybrid_set(exp, hyb)  # the same windows run_hybrid scored
# {router: (n, T, N)}, in the batches run_hybrid scored, so the weights are the report's bit for bit
w_hyb = router_weights(specialists[0], k, routers, hs.x, batch_size=exp.profile.eval_batch_size)
by_dist = pd.DataFrame({name: true_weight_by_distance(w_, hs.labels) for name, w_ in w_hyb.items()})
by_dist.plot(figsize=(6.4, 2.8), color=["0.55", "tab:purple"])
plt.axhline(1 / len(DOMAINS), color="black", ls=":", lw=1, label="uniform")
plt.xlabel("tokens since the last domain switch")
plt.ylabel("mean weight on the true domain")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# One window at a time: the weights every router gives every specialist along the window (brighter
# = more weight; white dots mark each target token's true domain, red dashed lines the switches),
# then the specialists' own token losses along the same window. Where their lines are close, any
# weighting predicts about the same. In Jupyter or Colab the slider picks the window; run headless,
# it shows window 0.

# %%
def show_window(i):
    print("\n".join(segment_snippets(exp.tokenizer, hs, i)))
    ws = {name: w_[i] for name, w_ in w_hyb.items()}
    for name, w_ in ws.items():
        print(f"{name:10s} tokens until the top weight reaches the new domain, after each switch: "
              f"{switch_lag(w_, hs.labels[i])}")
    plot_hybrid_routing(ws, hs.labels[i], title=f"hybrid window {i}")
    with torch.no_grad():
        _, lg = FusedModel(specialists, k).expert_logits(hs.x[i:i + 1].to(resolve()))
    tok_nll = torch.stack([token_nll_from_logprobs(F.log_softmax(l.float(), -1), hs.y[i:i + 1].to(l.device))[0]
                           for l in lg]).cpu()
    plot_token_losses(tok_nll, hs.labels[i], DOMAINS, title=f"the specialists' own losses on hybrid window {i}")


slider(show_window, value=0, min=0, max=hs.x.shape[0] - 1, step=1, description="hybrid window")

# %%
for name, w_ in w_hyb.items():  # the windows must be the ones the report scored
    acc = float((w_.argmax(-1) == hs.labels).double().mean())
    assert abs(acc - hyb["hybrid"]["routers"][name]["routing_accuracy"]) < 1e-12, name  # same batches: exact
    assert torch.allclose(w_.sum(-1), torch.ones(w_.shape[:2]), atol=1e-5)
print(f"{hs.x.shape[0]} hybrid windows regenerated; routing accuracy matches the report for both routers")

# %% [markdown]
# ### The fused model writes
#
# The fused model is also a language model that continues a prompt. `FusedModel.generate` decodes
# greedily; with `return_weights=True` it also returns the router weights that chose each token,
# which the causal router can give because it only reads what has been written. Four prompts: the
# start of one held-out window per domain, and one that switches from code to legal text halfway.

# %%
show_source(FusedModel.generate, start="for _ in range(max_new_tokens)", stop="if not return_weights")

# %%
fused = exp.fused("per_token")  # the specialists and the per-token router above, logit fusion
prompts = generation_prompts(exp.eval_sets, n_tokens=exp.profile.model.block_size // 3)
generations = routed_generations(fused, exp.tokenizer, prompts, new_tokens=40)
plot_routed_text(generations, DOMAINS)
plt.show()

# %% [markdown]
# Each generated token's background mixes the domain colours by the router's weights when it was
# chosen: blue code, red medical, green legal, a muddy colour a split decision; grey text is the
# prompt. The mean weights per continuation:

# %%
gen_weights = pd.DataFrame({name: w.mean(0).numpy() for name, _, _, w in generations},
                           index=[f"{d} specialist" for d in DOMAINS]).T
for name, _, _, w in generations:
    assert w.shape == (40, len(DOMAINS)) and torch.allclose(w.sum(-1), torch.ones(40), atol=1e-5), name
gen_weights.style.format("{:.2f}").background_gradient(cmap="Purples", axis=None)

# %% [markdown]
# ## Questions to answer
#
# 1. With the per-token router, which rule gives the lowest mixed loss: logits, probabilities or
#    hard routing? Compare the spread between the rules with the oracle gap. Is the choice of rule
#    a first-order decision at this scale?
# 2. Logit fusion is a geometric mean, the mixture an arithmetic one. On which tokens would you
#    expect the mixture to win, and on which logit fusion? Use the toy example and the share of
#    tokens each rule wins on real text.
# 3. On single-domain windows, does the chapter's last-token router beat the causal router? Given
#    the leak measured in §3, how much of that advantage would you trust, and what experiment would
#    separate a genuine advantage from the leak?
# 4. On hybrid windows, which router has the higher per-token routing accuracy, and how does each
#    router's accuracy change with the distance from a switch? Is either router better than chance
#    right after a switch?
# 5. The causal router reads a decaying average of the earlier trunk states (`RouterConfig.decay`;
#    the slider under Going further prints how many tokens it takes to follow a switch). Use the
#    heatmaps to explain what a longer memory (decay closer to 1) would do in the third segment of a
#    window, and what a shorter one would cost on single-domain windows. Which would you pick, and on
#    which split would you measure it?

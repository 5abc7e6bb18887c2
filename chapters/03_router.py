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
# # 3 · A linear router on the shared hidden state
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/03_router.ipynb)
#
# Companion to Chapter 32, Steps 3 and 5. The three crowns of notebook 2 share one trunk, so the
# trunk's output means the same thing to all of them. The router reads that state and returns one
# weight per specialist. Step 3 builds it; Step 5 says what to train it towards (domain labels, or
# which specialist did best) and how sharp that second kind of target should be.

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
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from minigpt.analysis.conclusions import best_target
from minigpt.analysis.routing import best_specialist_share, confusion_matrix
from minigpt.config import DOMAINS
from minigpt.device import resolve
from minigpt.exercises import check_performance_targets, check_train_router
from minigpt.live import LIVE_WINDOWS, live_router, score_routers
from minigpt.notebook import setup, show_markdown, show_source, slider
from minigpt.plots import plot_retrained, plot_router_histories, plot_targets
from minigpt.router import (LinearRouter, _router_step_loss, normalized, performance_targets, router_loss,
                            window_targets)
from minigpt.studies.router_targets import compare_router_targets, router_windows, target_sharpness

exp = setup()
specialists = exp.specialists()  # loaded (or trained) as in notebook 2
k = exp.k

# %% [markdown]
# ## 1. The router (Chapter 32, Step 3)
#
# One linear map from the hidden size to the number of specialists, then a softmax. It reads the
# trunk output at the *last* position, a summary that has seen the whole window, and gives one
# weight vector per window. The state is first normalised (a LayerNorm without learned scale or
# shift), so the router sees its direction, not its size:

# %%
show_source(normalized)
show_source(LinearRouter)

# %% [markdown]
# Small on purpose: if one matrix multiply can tell the specialists apart, the shared interface is
# doing the work. Notebook 4 compares it with `CausalRouter`, a per-token variant that only looks
# backwards. Shapes on a few held-out windows, with an untrained router:

# %%
x = torch.cat([exp.eval_sets[d][0][:2] for d in DOMAINS]).to(resolve())  # 2 windows per domain, on the models' device
with torch.no_grad():
    h = specialists[0].trunk(x, k)  # any specialist: the trunk is shared (notebook 2)
    w = LinearRouter(exp.profile.model.n_embd, len(specialists)).to(h.device)(h).cpu()
print(f"token ids {tuple(x.shape)} -> trunk output h {tuple(h.shape)} -> router weights {tuple(w.shape)}")
print("each row sums to", w.sum(-1).round(decimals=5).tolist())
assert w.shape == (x.shape[0], len(specialists)) and torch.allclose(w.sum(-1), torch.ones(x.shape[0]))

# %% [markdown]
# ## 2. What the router is trained to predict (Chapter 32, Step 5)
#
# * **Domain targets**: the window's domain label, one-hot. The router learns to classify text.
# * **Performance targets**: run all three specialists on the window and turn *lower loss* into
#   *more weight*, a softmax of the negated losses over a temperature. The router learns which
#   specialist predicts this window best.

# %% [markdown]
# **Exercise** (Chapter 32, Step 5). Write the performance targets before reading the package's
# version. The cell after yours compares them with `minigpt.router.performance_targets` on real
# router windows at three temperatures; until you write it, it says so.

# %% exercise="performance_targets" tags=["exercise"]
def my_performance_targets(losses, temp):
    """Performance targets from `losses` (B, N), each specialist's mean loss on each window: a target
    distribution (B, N) over the specialists, softmax(-loss / temp). Lower loss gets more weight; a small
    `temp` sharpens the targets toward the best specialist, a large one flattens them."""
    raise NotImplementedError("hint: negate the losses, divide by temp, then torch.softmax(..., dim=-1)")


# %% tags=["check"]
passed = check_performance_targets(my_performance_targets, exp)

# %% [markdown]
# Either way a cross-entropy pulls the router's weights toward the targets:

# %%
show_source(performance_targets)
show_source(router_loss)
show_source(window_targets)

# %% [markdown]
# Both targets need, per window, only the trunk state and each specialist's mean loss, never the
# logits. So the specialists run once over a fixed pool of router-split windows, and every router
# trains on that pool (`minigpt/router_pool.py`): a training step is then one linear map.

# %% [markdown]
# **Exercise** (Chapter 32, Step 5: training the router). Write the training loop on a pool: a
# batch, the weights, the targets, the loss, one optimiser step. The check trains the package's
# `train_router_on_pool` and yours from the same start on the same pool and compares their losses.

# %% exercise="train_router" tags=["exercise"]
def my_train_router(router, pool, cfg, gen):
    """Train `router` in place on `pool` (a `RouterPool`) for `cfg.steps` steps; return the per-step
    losses as a list of floats.

    Make one optimiser, `torch.optim.Adam(router.parameters(), lr=cfg.lr)`. At each step draw a batch,
    `h, losses, labels = pool.batch(cfg.batch_size, gen, cfg.domain_mix)` (trunk states, each
    specialist's mean loss on each window, domain labels), take the router's weights on `h`, the
    performance targets of `losses` at `cfg.temp`, `router_loss(weights, targets)`, and one optimiser step.
    """
    raise NotImplementedError("hint: per step: opt.zero_grad(), loss.backward(), opt.step(); keep float(loss)")


# %% tags=["check"]
passed = check_train_router(my_train_router, exp)

# %% [markdown]
# ## 3. Domain labels against performance targets
#
# Two last-token routers, identical except for the target, trained on the `router` split and scored
# on the held-out windows the studies use (a quarter of the headline's, the same for every router
# compared here). *Routing accuracy* is the share of windows whose highest weight goes to
# their own domain's specialist. The losses are soft fusion (Step 4) and dispatch to the top choice,
# beside the oracle that picks each window's best specialist with hindsight.

# %%
summary, scores_r = compare_router_targets(exp, ("domain", "performance"), kind="last_token")
summary.style.format("{:.3f}").format("{:.1%}", subset=[c for c in summary.columns if c.startswith("accuracy")])

# %% tags=["hide-input"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
acc = summary[[f"accuracy {d}" for d in DOMAINS]].T
acc.index = list(DOMAINS)
acc.plot.bar(ax=ax1, rot=0, color=["0.55", "tab:purple"])
ax1.axhline(1 / len(DOMAINS), color="black", ls=":", lw=1, label="chance")
ax1.set_ylim(0, 1.05)
ax1.set_ylabel("routing accuracy")
ax1.legend(fontsize=8)
losses = summary[[c for c in summary.columns if c.endswith("mixed")]]
losses.T.plot.bar(ax=ax2, rot=0, color=["0.55", "tab:purple"])
lo, hi = losses.values.min(), losses.values.max()
ax2.set_ylim(lo - (hi - lo) * 0.5 - 1e-3, hi + (hi - lo) * 0.3 + 1e-3)  # differences are small: zoom in
ax2.set_ylabel("mixed held-out loss (axis zoomed)")
fig.tight_layout()
plt.show()

# %%
show_markdown(best_target(summary["accuracy (mean)"].to_dict(), summary["fused soft, mixed"].to_dict()))

# %% [markdown]
# The two targets can only disagree where a domain's own specialist is *not* the best one. How
# often is it the best, on the held-out windows?

# %%
share = pd.Series(best_specialist_share(scores_r.nll), name="own specialist is best")
share.to_frame().style.format("{:.1%}")

# %% [markdown]
# Where do misrouted windows go? Rows are the true domain, columns the specialist with the largest
# weight. Confusion between two domains that both partly fit looks different from a collapse onto
# one specialist.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.0))
for ax, target in zip(axes, ("domain", "performance")):
    sns.heatmap(confusion_matrix(scores_r.weights[target]), annot=True, fmt=".0%", vmin=0, vmax=1, cmap="Blues",
                cbar=False, ax=ax)
    ax.set(title=f"{target} targets", xlabel="top-weighted specialist", ylabel="domain of the window")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Temperature: how sharp are performance targets? (Chapter 32, Step 5)
#
# Six windows from the `router` split, two per domain, with each specialist's mean loss. A small
# temperature gives nearly all the target weight to the best specialist even when it is only
# slightly better; a large one flattens the targets toward a third each.

# %%
_, _, labels, win_losses = router_windows(exp, per_domain=2, seed=0)  # losses: (6 windows, 3 specialists)
pd.DataFrame(win_losses.numpy(), index=labels, columns=[f"{d} specialist" for d in DOMAINS]).round(3)

# %% [markdown]
# Three temperatures; the middle one is the profile's:

# %%
temps = (0.01, exp.profile.router.temp, 1.0)
fig, axes = plt.subplots(1, len(temps), figsize=(15, 3.0), sharey=True)
for ax, t in zip(axes, temps):
    plot_targets(win_losses, performance_targets(win_losses, t), labels, DOMAINS, temp=t, ax=ax)
fig.tight_layout()
plt.show()

# %% [markdown]
# "Small" and "large" are relative to the loss gaps between specialists. Over more router windows:
# the mean target weight on the best specialist against the temperature, with the median gap
# between the best and second-best specialist marked.

# %%
many_losses = router_windows(exp, per_domain=16, seed=1)[3]  # (48, 3)
grid = np.logspace(-3, 1, 41)
top = target_sharpness(many_losses, grid)
sorted_l = many_losses.sort(-1).values
gap = float((sorted_l[:, 1] - sorted_l[:, 0]).median())

plt.figure(figsize=(6.4, 3.0))
plt.semilogx(grid, top, lw=2, color="tab:purple")
plt.axvline(gap, color="black", ls="--", lw=1, label=f"median best-vs-second gap = {gap:.3f} nats")
plt.axvline(exp.profile.router.temp, color="tab:orange", ls=":", lw=1.5, label=f"profile temp = {exp.profile.router.temp:g}")
plt.axhline(1 / len(DOMAINS), color="0.5", lw=0.8)
plt.xlabel("target temperature")
plt.ylabel("mean target weight on the best specialist")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# ### Retrain the router at your temperature
#
# The slider trains a new per-token router (the causal router of notebooks 4 and 5) at the
# temperature you pick, on the profile's pool with the profile's seeds, and scores it on a subset
# of held-out windows per domain (`minigpt/live.py`). Grey is the profile's own temperature on the
# same windows. The next cell runs the specialists over the pool once; each move then takes seconds.

# %%
profile_live = live_router(exp, exp.profile.router)  # builds the pool once; the profile's temperature, as reference
profile_label = f"profile's temperature {exp.profile.router.temp:g}"
print(f"router pool ready and the profile's router retrained in {profile_live.seconds['train']:.1f} s; scored on "
      f"{LIVE_WINDOWS} held-out windows per domain (all, if fewer) in {profile_live.seconds['score']:.1f} s")


# %%
def retrain_at(temp):
    live = live_router(exp, replace(exp.profile.router, temp=temp))
    plot_retrained({profile_label: profile_live.row, f"temperature {temp:.3g}": live.row},
                   title=f"per-token router trained at temperature {temp:.3g}\nmean target weight on the best "
                         f"specialist: {live.target_sharpness:.2f} (at the profile's: {profile_live.target_sharpness:.2f})")
    print(f"trained in {live.seconds['train']:.1f} s, scored in {live.seconds['score']:.1f} s")


slider(retrain_at, value=1.0, min=0.001, max=3.0, log=True, description="target temperature")

# %% [markdown]
# ## Going further
#
# ### The per-token router, and a third target
#
# The same comparison with the causal `CausalRouter`, which gives one weight vector per position from
# the tokens seen so far (notebook 4). It adds a third target, `lm`: train the router directly on the
# fused model's next-token loss. That target needs the fused logits of every batch, so it runs the
# specialists at every step instead of reading the pool:

# %%
show_source(_router_step_loss, start='if cfg.target == "lm"', stop="router_loss(")

# %% [markdown]
# Per-token routing accuracy counts tokens, and hard routing is per token (`fused hard`):

# %%
pt_targets = ("domain", "performance", "lm")
summary_pt, scores_pt = compare_router_targets(exp, pt_targets, kind="per_token")
summary_pt.style.format("{:.3f}").format("{:.1%}", subset=[c for c in summary_pt.columns if c.startswith("accuracy")])

# %%
side = pd.concat({"last-token": summary, "per-token (causal)": summary_pt}, names=["router", "target"])
side[["accuracy (mean)", "fused soft, mixed", "oracle, mixed"]].style.format("{:.4f}").format(
    "{:.1%}", subset=["accuracy (mean)"])

# %%
show_markdown(best_target(summary_pt["accuracy (mean)"].to_dict(), summary_pt["fused soft, mixed"].to_dict()))

# %% [markdown]
# How each per-token router learned: its loss at every step (faint) and a moving average. The three
# losses measure different things, so each has its own panel; compare shapes, not heights.

# %%
histories = {f"{t} targets": exp.router("per_token", replace(exp.profile.router, target=t)).train_history
             for t in pt_targets}
plot_router_histories(histories, title="per-token router: training loss by target type")
plt.show()
pd.DataFrame({name: {"steps": len(h), "first loss": h[0], "last loss": h[-1]} for name, h in histories.items() if h}
             ).T.style.format({"steps": "{:.0f}", "first loss": "{:.3f}", "last loss": "{:.3f}"})

# %% [markdown]
# ## Checks that hold whatever the run

# %%
assert summary.loc["domain", "accuracy (mean)"] > 1 / len(DOMAINS), "a router trained on domain labels should beat chance"
assert np.all(np.diff(top) <= 1e-6), "raising the temperature can only flatten the targets"
sharp = performance_targets(many_losses, 1e-4)
assert torch.equal(sharp.argmax(-1), many_losses.argmin(-1)), "at a tiny temperature the target is the best specialist"
# the slider's router at the profile's settings is the profile's router (same pool, same seeds), up to float rounding
cached_w = score_routers(exp, {"profile": exp.router("per_token")}).weights["profile"]
assert all(torch.allclose(profile_live.weights[d], cached_w[d], atol=1e-3) for d in DOMAINS)

# %% [markdown]
# ## Questions to answer
#
# 1. Which target type gives the higher routing accuracy, and which the lower fused loss? If the
#    answers differ, what does that say about "recognising the domain" versus "picking the
#    specialist that predicts best"?
# 2. On what share of held-out windows is a domain's own specialist *not* the best one? What
#    should an ideal router do on those windows, and which target type can teach it that?
# 3. Chapter 32, question 5: when the router errs, does it pick a wrong domain outright, or is it
#    split between two specialists that both partly fit? Use the confusion matrices.
# 4. At what temperature do the performance targets become practically one-hot for these
#    windows? Relate it to the size of the loss gaps between specialists, and say what a
#    temperature far below that gap would do to router training (notebook 7 comes back to this).
#    Check your answer with the slider.
# 5. The router reads the last token's hidden state. Name one advantage and one problem of that
#    summary when the fused model is used to predict every token of the window.

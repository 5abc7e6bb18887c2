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
# Companion to Chapter 32, Steps 3 and 5. The three crowns from notebook 2 share one trunk, so
# the trunk's output is a single hidden state that means the same thing to all of them. The
# router reads that state and returns one weight per specialist. This notebook looks at the
# router itself, at the two ways of telling it what the right answer was (domain labels, or
# which specialist actually did best), and at the temperature that decides how sharp the
# second kind of answer is.

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

from minigpt.analysis.routing import best_specialist_share, confusion_matrix
from minigpt.config import DOMAINS
from minigpt.device import resolve
from minigpt.exercises import check_performance_targets, check_train_router
from minigpt.notebook import setup, show_source, slider
from minigpt.plots import plot_router_histories, plot_targets
from minigpt.router import (LinearRouter, _router_step_loss, normalized, performance_targets, router_loss,
                            window_targets)
from minigpt.studies.router_targets import compare_router_targets, router_windows, target_sharpness

exp = setup()
specialists = exp.specialists()  # loaded (or trained) as in notebook 2
k = exp.k

# %% [markdown]
# ## 1. The router (Chapter 32, Step 3)
#
# One linear map from the hidden size to the number of specialists, then a softmax. It reads
# the trunk output at the *last* position of the window, a summary that has seen every token,
# and gives one weight vector per window. The hidden state is first normalised (`normalized`: a
# LayerNorm like the one before the model's head, without its learned scale and shift), so the
# router sees the state's direction and not its size, which differs from position to position:

# %%
show_source(normalized)
show_source(LinearRouter)

# %% [markdown]
# Deliberately small: if a single matrix multiply can tell the specialists apart from the shared
# hidden state, the interface is doing the work. (For language modelling the last-token summary
# lets later tokens choose the weights used for earlier ones; the package's `CausalRouter` is a
# per-token variant that only looks backwards, compared in notebook 4.)
#
# Shapes on real data — a few held-out windows, one trunk pass, an untrained router:

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
# * **Performance targets**: run all three specialists on the window, take their losses, and turn
#   *lower loss* into *more weight* with a softmax of the negated losses divided by a
#   temperature. The router learns which specialist actually predicts this window best.

# %% [markdown]
# **Exercise** (Chapter 32, Step 5). Write the performance targets before reading the package's
# version below. The cell after yours compares it with `minigpt.router.performance_targets` on the
# specialists' real losses on router windows, at three temperatures; until you write it, it says so,
# and nothing else in the notebook uses your function.

# %% exercise="performance_targets" tags=["exercise"]
def my_performance_targets(losses, temp):
    """Performance targets from `losses` (B, N), each specialist's mean loss on each window: a target
    distribution (B, N) over the specialists, softmax(-loss / temp). Lower loss gets more weight; a small
    `temp` sharpens the targets toward the best specialist, a large one flattens them."""
    raise NotImplementedError("hint: negate the losses, divide by temp, then torch.softmax(..., dim=-1)")


# %% tags=["check"]
passed = check_performance_targets(my_performance_targets, exp)

# %% [markdown]
# Either way the router's weights are pulled toward the targets by a cross-entropy:

# %%
show_source(performance_targets)
show_source(router_loss)
show_source(window_targets)
show_source(_router_step_loss, start='if cfg.target == "lm"', stop="router_loss(")

# %% [markdown]
# Domain and performance targets need, per window, only the trunk state and each specialist's mean
# loss, never the specialists' logits. So the package runs the specialists once over a fixed pool
# of router-split windows and trains every such router on that pool (`minigpt/router_pool.py`):
# each training step is then one linear map, and the routers below, Break 2's grid and the seeds
# share one pass of the specialists. The LM-loss target needs the fused logits of each batch and
# runs the specialists at every step.

# %% [markdown]
# **Exercise** (Chapter 32, Step 5: training the router). Write the training loop on a pool: a batch,
# the router's weights, the targets, the loss, one optimiser step. The check trains the package's
# router (`minigpt.router_pool.train_router_on_pool`) and yours from the same start on the same small
# pool of real router windows, and compares the per-step losses, or, if your batches differ, the loss
# each router ends with on the whole pool.

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
# Two chapter routers (last-token `LinearRouter`), identical except for the target, trained on
# the `router` split with the profile's step budget and scored on the held-out windows.
# *Routing accuracy* is the share of windows whose highest weight goes to their own domain's
# specialist; the fused losses are the Step 4 soft fusion with each router and hard dispatch to
# its top choice, next to the oracle that picks the best specialist per window with hindsight.

# %%
summary, scores_r = compare_router_targets(exp, ("domain", "performance"), kind="last_token")
summary.style.format("{:.3f}").format("{:.1%}", subset=[c for c in summary.columns if c.startswith("accuracy")])

# %%
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

# %% [markdown]
# The two kinds of target can only disagree on windows where a domain's own specialist is *not*
# the one with the lowest loss. How often does that happen on the held-out windows?

# %%
share = pd.Series(best_specialist_share(scores_r.nll), name="own specialist is best")
share.to_frame().style.format("{:.1%}")

# %% [markdown]
# Where do the misrouted windows go? Rows are the true domain, columns the specialist that got
# the largest weight. A router that confuses two domains that both partly fit looks different
# here from one that has collapsed onto a single specialist.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.0))
for ax, target in zip(axes, ("domain", "performance")):
    sns.heatmap(confusion_matrix(scores_r.weights[target]), annot=True, fmt=".0%", vmin=0, vmax=1, cmap="Blues",
                cbar=False, ax=ax)
    ax.set(title=f"{target} targets", xlabel="top-weighted specialist", ylabel="domain of the window")
fig.tight_layout()
plt.show()

# %%
chance = 1 / len(DOMAINS)
for target, row in summary.iterrows():
    print(f"{target:12s} mean routing accuracy {row['accuracy (mean)']:.1%} (chance {chance:.1%}); "
          f"fused soft {row['fused soft, mixed']:.4f} vs oracle {row['oracle, mixed']:.4f}")
assert summary.loc["domain", "accuracy (mean)"] > chance, "a router trained on domain labels should beat chance"

# %% [markdown]
# ### The same comparison with the causal per-token router
#
# The last-token router above weighs every position of a window with a summary that has already
# read the whole window, including the tokens being predicted (notebook 4 measures that leak). The
# package's `CausalRouter` gives one weight vector per position from the tokens seen so far, so it
# could run while generating. Here it is trained with each target type: the two above and a third,
# `lm`, which trains the router directly on the fused model's next-token loss (the first branch of
# the router's step loss shown in §2). Per-token routing accuracy counts tokens instead of windows, and
# hard routing is now per token (`fused hard`) instead of one specialist per window.

# %%
pt_targets = ("domain", "performance", "lm")
summary_pt, scores_pt = compare_router_targets(exp, pt_targets, kind="per_token")
summary_pt.style.format("{:.3f}").format("{:.1%}", subset=[c for c in summary_pt.columns if c.startswith("accuracy")])

# %%
side = pd.concat({"last-token": summary, "per-token (causal)": summary_pt}, names=["router", "target"])
side[["accuracy (mean)", "fused soft, mixed", "oracle, mixed"]].style.format("{:.4f}").format(
    "{:.1%}", subset=["accuracy (mean)"])

# %%
for target in ("domain", "performance"):
    a, b = summary.loc[target], summary_pt.loc[target]
    print(f"{target:12s} fused soft: last-token {a['fused soft, mixed']:.4f}, per-token {b['fused soft, mixed']:.4f}; "
          f"mean routing accuracy {a['accuracy (mean)']:.1%} vs {b['accuracy (mean)']:.1%}")
print(f"lowest fused soft loss among the per-token routers: {summary_pt['fused soft, mixed'].idxmin()} targets")

# %% [markdown]
# How each per-token router learned: its training loss at every step (faint) with a moving
# average. The three losses are different quantities (cross-entropy to one-hot labels, to the
# soft performance targets, and the fused next-token loss), so each has its own panel and scale;
# compare their shapes, not their heights. A router trained before the cache kept training
# histories shows a note instead of a curve.

# %%
histories = {f"{t} targets": exp.router("per_token", replace(exp.profile.router, target=t)).train_history
             for t in pt_targets}
plot_router_histories(histories, title="per-token router: training loss by target type")
plt.show()
for name, h in histories.items():
    print(f"{name:20s} " + (f"{len(h)} steps, first {h[0]:.3f}, last {h[-1]:.3f}" if h else "no history kept (cached earlier)"))

# %% [markdown]
# ## 4. Temperature: how sharp are performance targets?
#
# Six real windows from the `router` split (two per domain). For each, the three specialists'
# mean losses, and the performance targets they produce at one temperature. With a small
# temperature the best specialist takes nearly all the weight even when it is only slightly
# better; with a large one the targets flatten toward one third each.

# %%
_, _, labels, win_losses = router_windows(exp, per_domain=2, seed=0)  # losses: (6 windows, 3 specialists)
pd.DataFrame(win_losses.numpy(), index=labels, columns=[f"{d} specialist" for d in DOMAINS]).round(3)

# %% [markdown]
# Three temperatures side by side; the middle one is the temperature this profile trains its
# routers with:

# %%
temps = (0.01, exp.profile.router.temp, 1.0)
fig, axes = plt.subplots(1, len(temps), figsize=(15, 3.0), sharey=True)
for ax, t in zip(axes, temps):
    plot_targets(win_losses, performance_targets(win_losses, t), labels, DOMAINS, temp=t, ax=ax)
fig.tight_layout()
plt.show()


# %% [markdown]
# Or pick the temperature yourself (log scale) in Jupyter or Colab:

# %%
def draw_targets(temp):
    plot_targets(win_losses, performance_targets(win_losses, temp), labels, DOMAINS, temp=temp)
    plt.show()


slider(draw_targets, value=exp.profile.router.temp, min=0.003, max=3.0, log=True, description="temperature")

# %% [markdown]
# What decides "small" and "large" is the size of the loss differences between specialists, not
# the temperature alone. Over many router windows: the average weight the target puts on the
# best specialist, against the temperature, with the typical gap between the best and the
# second-best specialist marked.

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
print(f"target weight on the best specialist: {top[0]:.2f} at temp {grid[0]:g}, "
      f"{np.interp(np.log10(exp.profile.router.temp), np.log10(grid), top):.2f} at {exp.profile.router.temp:g}, "
      f"{top[-1]:.2f} at {grid[-1]:g}")

# %%
assert np.all(np.diff(top) <= 1e-6), "raising the temperature can only flatten the targets"
sharp = performance_targets(many_losses, 1e-4)
assert torch.equal(sharp.argmax(-1), many_losses.argmin(-1)), "at a tiny temperature the target is the best specialist"

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
# 5. The router reads the last token's hidden state. Name one advantage and one problem of that
#    summary when the fused model is used to predict every token of the window.

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
# # 7 · Break 2: a router that leans on one expert
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/07_break2_router_collapse.ipynb)
#
# Companion to Chapter 32, Break 2. The specialists and their shared trunk are those of notebooks
# 2–5; only the router's training changes. The chapter names two ways to make a router lean on one
# expert for almost everything: **imbalanced router data** (most training windows from one domain)
# and **a target temperature so low** that `softmax(-loss / temp)` turns into a one-hot label on
# whichever expert was marginally better. Its warning is that the headline mixed loss can stay calm
# while this happens, *if* the expert the router leans on is a strong generalist.
#
# This notebook makes the router collapse step by step and asks, at every step, whether the headline
# notices. First, what happened in this run:

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
import pandas as pd

from minigpt.analysis.routing import collapse_signs
from minigpt.claims.break2 import precondition, what_happened
from minigpt.config import DOMAINS
from minigpt.evaluate import loss_table
from minigpt.exercises import check_collapse_signs
from minigpt.notebook import announce, setup, show_markdown
from minigpt.plots import plot_collapse_curve, plot_collapse_routing, plot_mean_weight_heatmaps
from minigpt.fusion import FusedModel
from minigpt.scoring import ScoreRequest, fused_row, score
from minigpt.studies.break2 import break2, status

exp = setup(extra=("break2",))  # announces the extra training time too
announce(exp, "break2")
# the band's routers and every point of the collapse curve, for both expert sets, trained once and cached
rep = break2(exp)
sets = rep["sets"]
print(f"report written to {rep['out_path']}")

# %%
show_markdown(what_happened(rep).text)
for name in sets:
    show_markdown(precondition(rep, name).text)

# %% [markdown]
# The rest of the notebook builds that answer up: one collapsed router by hand (§1), the chapter's
# two diagnostics (§2), the collapse as a curve (§3), what "the headline stays calm" means in numbers
# (§4) and the precondition (§5).
#
# ## 1. One collapsed router, by hand
#
# Both causes at once: 98 % of the router's training windows are code, and the targets are one-hot
# (temperature 0.001). It is one point of the study's curve, so it loads from the cache. Scored
# beside the healthy router on the same held-out windows:

# %%
healthy_router = exp.router("per_token")
collapsed_router = exp.router("per_token", replace(exp.profile.router, domain_mix=(0.98, 0.01, 0.01), temp=0.001))
by_hand = score(ScoreRequest(windows=exp.study_sets, experts=FusedModel(exp.specialists(), exp.k),
                             routers={"healthy": healthy_router, "collapsed": collapsed_router}, base=exp.base(),
                             batch_size=exp.profile.eval_batch_size))
hand = loss_table(by_hand.nll).loc[[fused_row("soft", n) for n in ("healthy", "collapsed")], [*DOMAINS, "mixed"]]
hand.index = ["healthy", "collapsed"]
hand.style.format("{:.4f}")

# %% [markdown]
# Where does each domain's weight go? Rows are the text's domain, columns the expert:

# %%
plot_mean_weight_heatmaps({n: by_hand.weights[n] for n in ("healthy", "collapsed")})
plt.show()

# %% [markdown]
# ## 2. The chapter's diagnostics
#
# The chapter's two checks: **per-domain routing accuracy** (is each domain's text sent to its own
# specialist?) and **the weight the dominant expert takes on the other domains' text** (its 0.92 on
# legal text is the chapter's example). Write them: the weights come per domain as (windows, tokens,
# experts), and expert i is domain i's specialist.

# %% exercise="collapse_signs" tags=["exercise"]
def my_collapse_signs(weights):
    """(routing accuracy {domain: share of tokens whose top-weighted expert is the domain's own}, the index of
    the expert with the largest mean weight over all tokens, its mean weight on the other domains' text)."""
    raise NotImplementedError("hint: DOMAINS.index(d) is the own expert; w.argmax(-1) the top one; average "
                              "w[..., j] per domain, then over the domains that are not DOMAINS[j]")


# %% tags=["check"]
passed = check_collapse_signs(my_collapse_signs, exp)

# %% [markdown]
# The package's `collapse_signs` is what the rest of the notebook uses:

# %%
healthy_signs = collapse_signs(by_hand.weights["healthy"])
signs = collapse_signs(by_hand.weights["collapsed"], healthy_signs["routing_accuracy"])
pd.DataFrame({"healthy": {**{f"{d} routing": v for d, v in healthy_signs["routing_accuracy"].items()},
                          "dominant expert's weight elsewhere": healthy_signs["dominant_weight_elsewhere"]},
              "collapsed": {**{f"{d} routing": v for d, v in signs["routing_accuracy"].items()},
                            "dominant expert's weight elsewhere": signs["dominant_weight_elsewhere"]}}).style.format("{:.2f}")

# %% [markdown]
# The study calls a point's router *collapsed* when a domain's routing accuracy drops by 20 points or
# more below the healthy router's, or when the dominant expert takes half the weight or more on the
# other domains' text.
#
# ## 3. The collapse curve
#
# The router's training data tilts toward code in six steps, from balanced to 98/1/1, at the
# profile's target temperature and at 0.001. For the three specialists:

# %%
def curve_table(s: dict) -> pd.DataFrame:
    rows = {}
    for name, p in s["points"].items():
        iv = p["vs_healthy_nats"]
        rows[name] = {"code share": p["domain_mix"][0], "temperature": p["temp"],
                      **{f"{d} routing": p["routing_accuracy"][d] for d in DOMAINS},
                      "dominant elsewhere": p["dominant_weight_elsewhere"],
                      "headline − healthy": iv["estimate"], "95% low": iv["low"], "95% high": iv["high"],
                      "status": p["status"]}
    return pd.DataFrame(rows).T


curve_table(sets["specialists"]).style.format("{:.3f}", subset=[c for c in curve_table(sets["specialists"]).columns
                                                                  if c != "status"])

# %%
plot_collapse_routing(sets["specialists"], exp.profile.router.temp)
plt.title("three specialists, the profile's temperature")
plt.show()

# %% [markdown]
# Now the figure the chapter asks for: the headline against routing as the router collapses, for both
# expert sets. Each point is one router; the horizontal axis is how much of the other domains' text its
# dominant expert takes, the vertical axis how much worse its mixed loss is than the healthy router's,
# with a paired 95 % interval. Labels give the code share of its training data.

# %%
plot_collapse_curve(rep)
plt.show()

# %% [markdown]
# ## 4. How calm is calm? The band
#
# A change in the headline only means something against how much the headline moves anyway. So the
# healthy router is retrained with five seeds of its own (same data, same specialists); the band is
# the mean of their mixed losses ± 2 standard deviations. A collapsed router whose headline stays
# *at or below the band's top* is **silent**: the headline gives no alarm. One above it is **loud**.

# %%
pd.DataFrame({name: {"healthy router": s["healthy_mixed"], "band low": s["band"]["low"],
                     "band high": s["band"]["high"], "sd over router seeds": s["band"]["sd"],
                     "silent points": len(s["silent"]), "loud points": len(s["loud"])}
              for name, s in sets.items()}).T.style.format("{:.4f}", subset=["healthy router", "band low", "band high",
                                                                              "sd over router seeds"])

# %% [markdown]
# ## 5. The precondition: a strong generalist
#
# A collapsed router is, at the limit, the dominant expert alone. So the headline can only stay calm if
# that expert alone is nearly as good as the healthy mix on *every* domain. A specialist is not: off its
# own domain it is much worse. The second expert set puts a generalist in the code slot (the
# monolithic crown: same base and trunk, trained on all three domains for three times the steps), the
# situation the chapter's story describes.

# %%
pd.DataFrame({name: {"dominant expert": s["precondition"]["dominant_expert"],
                     "alone": s["precondition"]["dominant_alone_mixed"],
                     "alone − healthy": s["precondition"]["dominant_alone_minus_healthy_nats"]["estimate"],
                     "band half-width": s["precondition"]["band_half_width_nats"],
                     "a full collapse can be silent": s["precondition"]["collapse_can_be_silent"]}
              for name, s in sets.items()}).T

# %%
pd.DataFrame({name: s["precondition"]["off_domain_penalty_nats"] for name, s in sets.items()}).style.format(
    "{:+.3f}").set_caption("each expert off its own domain: nats worse than that domain's own expert")

# %% [markdown]
# ## Going further: what a temperature means here
#
# A temperature is cold or soft only relative to how far apart the experts' losses are. On random
# router-split windows: how much worse the other specialists are than a window's own one (nats), and
# per temperature the mean target weight on each window's best specialist (1 = one-hot).

# %%
pd.DataFrame(rep["own_specialist_margin_nats"]).T.style.format("{:.3f}")

# %%
pd.Series({t: v["mean_max_target"] for t, v in rep["target_sharpness"].items()},
          name="mean target weight on the best specialist").to_frame().style.format("{:.3f}")

# %% [markdown]
# ## Try it: your own collapse
#
# Choose the share of code in the router's training data and the target temperature. A per-token
# router over the three specialists is retrained with them, on the same pool and with the same seeds
# as the study's routers, and scored on a subset of the held-out windows per domain beside the healthy
# router on the same windows (`minigpt/live.py`). The next cell runs the specialists over the pool
# once; each change then takes seconds. The dashed line is the study's collapse sign for the
# dominant expert's weight elsewhere.

# %%
from minigpt.live import LIVE_WINDOWS, code_mix, live_router
from minigpt.notebook import Dropdown, Slider, controls, dropdown
from minigpt.plots import plot_retrained
from minigpt.studies.break2 import COLD_TEMP, DOMINANT_SHARE, ROUTING_DROP_PP

healthy_live = live_router(exp, exp.profile.router)  # the healthy router on the subset; builds the pool once
print(f"healthy router: pool ready and retrained in {healthy_live.seconds['train']:.1f} s, scored on "
      f"{LIVE_WINDOWS} windows per domain (all, if fewer) in {healthy_live.seconds['score']:.1f} s")


# %%
def retrain_collapse(code_share, temp):
    live = live_router(exp, replace(exp.profile.router, domain_mix=code_mix(code_share), temp=temp),
                       healthy_accuracy=healthy_live.routing_accuracy)
    plot_retrained({"healthy router": healthy_live.row, f"{code_share:.0%} code, temperature {temp:g}": live.row},
                   panels=("routing", "elsewhere", "mixed"), title="router retrained on skewed data, held-out subset")
    print(f"largest routing drop {live.largest_routing_drop_pp:+.1f} points (a collapse sign at {ROUTING_DROP_PP:g}); "
          f"dominant expert's weight elsewhere {live.dominant_weight_elsewhere:.2f} (a sign at {DOMINANT_SHARE:g}); "
          f"headline − healthy on these windows {live.fused_mixed - healthy_live.fused_mixed:+.4f} nats")
    print(f"trained in {live.seconds['train']:.1f} s, scored in {live.seconds['score']:.1f} s")


temps = {f"{exp.profile.router.temp:g} (the profile's)": exp.profile.router.temp, f"{COLD_TEMP:g} (one-hot)": COLD_TEMP,
         "0.01": 0.01, "1 (soft)": 1.0}
controls(retrain_collapse, code_share=Slider(0.9, min=0.34, max=0.98, step=0.02, description="code share of router data"),
         temp=Dropdown(temps, value=COLD_TEMP, description="target temperature"))

# %% [markdown]
# The study's own routers, one curve point at a time: where each domain's weight goes, for the three
# specialists and for the set with a generalist in code's slot.

# %%
curve_points = {f"{p['domain_mix'][0]:.0%} code, temperature {p['temp']:g}": name
                for name, p in sets["specialists"]["points"].items()}


def show_point(name):
    plot_mean_weight_heatmaps({"three specialists": rep["_raw"]["weights"]["specialists"][name],
                               "generalist in code's slot": rep["_raw"]["weights"]["generalist"][name]})


dropdown(show_point, curve_points, value="mix=0.98/0.01/0.01 temp=0.001", description="curve point")

# %% [markdown]
# ## Checks that hold whatever the run

# %%
for name, s in sets.items():
    for p in s["points"].values():  # every status follows the stated rule
        assert p["status"] == status(p["largest_routing_drop_pp"], p["dominant_weight_elsewhere"],
                                     p["mixed_loss"] > s["band"]["high"])
    curve = sorted((p for p in s["points"].values() if p["temp"] == exp.profile.router.temp),
                   key=lambda p: p["domain_mix"][0])
    print(f"{name}: dominant expert's weight elsewhere {curve[0]['dominant_weight_elsewhere']:.2f} (balanced) -> "
          f"{curve[-1]['dominant_weight_elsewhere']:.2f} (98 % code)")
    assert curve[-1]["dominant_weight_elsewhere"] > curve[0]["dominant_weight_elsewhere"], \
        "skewing the router's data toward code must move weight to one expert"
point = sets["specialists"]["points"]["mix=0.98/0.01/0.01 temp=0.001"]  # the router built by hand in §1
assert abs(hand.loc["collapsed", "mixed"] - point["mixed_loss"]) < 1e-4
assert abs(hand.loc["healthy", "mixed"] - sets["specialists"]["healthy_mixed"]) < 1e-4

# %% [markdown]
# ## Questions to answer
#
# 1. Along the curve, which happens first as the code share rises: routing accuracy falls, or the
#    dominant expert takes over the other domains' text? At which code share does each set's router
#    first count as collapsed?
# 2. Does a one-hot target (temperature 0.001) collapse a router trained on balanced data, or only
#    sharpen it? Compare the first rows of the two temperatures.
# 3. Which points are silent, which loud, in each set? Use the band and the precondition to explain
#    why the same skew can be loud with three specialists and quiet with a generalist.
# 4. The chapter's example is 0.92 of the weight on the wrong specialist. What is the largest weight
#    a dominant expert takes on other domains' text here, and what does its headline do?
# 5. You are adding a check to a training pipeline to catch this before deployment. Which
#    measurement would you use, with what threshold, and why is the mixed loss not enough?

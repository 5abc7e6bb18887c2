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
# # 6 · Break 1: specialists from different bases
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/06_break1_different_bases.ipynb)
#
# Companion to Chapter 32, Break 1. Everything stays the same as in notebooks 1–5 (architecture,
# tokenizer, data, training recipe) except one thing: each specialist is fine-tuned from its *own*
# base, pretrained from a different random seed. Code from base X, medical from base Y, legal from
# base Z. The chapter predicts silent degradation. Here we measure it, metric by metric, next to
# the same pipeline with one shared base, and we try to be honest about *which* parts actually
# break at this scale and which survive.
#
# Two things make the comparison fair:
#
# * **Controls.** Bases pretrained from different seeds are not equally good. The shared-base
#   pipeline is rerun on *each* of the three bases, so a weaker base is not mistaken for a missing
#   shared geometry.
# * **One router recipe.** With no shared trunk the router has to read *something*: base X's trunk,
#   the three trunks concatenated, or base X's token embeddings. Every router, for both the shared
#   and the different-base set, gets the same configuration, initialisation and training batches.

# %%
# Colab only: install the companion package, and use the `gpu` profile when the runtime has a GPU.
# Locally (`pip install -e .` in the repository) this cell does nothing.
import os
import subprocess
import sys

REPO = "ORG/chapter32-fusion"  # written by `make colab REPO=owner/name`, like the badge above
if "google.colab" in sys.modules:  # same test as minigpt.notebook.in_colab(), before minigpt exists
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+https://github.com/{REPO}@main"], check=True)
    import torch  # preinstalled on Colab, with CUDA

    if os.environ.get("MINIGPT_PROFILE"):
        why = "MINIGPT_PROFILE was set before this cell"
    elif torch.cuda.is_available():
        os.environ["MINIGPT_PROFILE"] = "gpu"  # read when the next cell builds the experiment
        why = f"a GPU was found ({torch.cuda.get_device_name(0)})"
    else:
        why = "no GPU in this runtime (Runtime > Change runtime type adds one)"
    print(f"installed minigpt from github.com/{REPO}; profile {os.environ.get('MINIGPT_PROFILE', 'cpu')!r}: {why}")

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd

from minigpt import compat
from minigpt.analysis.calibration import reliability_bins
from minigpt.config import DOMAINS
from minigpt.notebook import announce, setup, show_markdown, show_source
from minigpt.plots import (plot_cka_blocks, plot_confusion, plot_contrasts, plot_controls, plot_degradations,
                           plot_per_byte, plot_reliability, plot_two_sets)
from minigpt.scoring import FEATURES, ORACLE, ORACLE_PER_TOKEN, SHARED_TRUNK, SPECIALIST_ROWS, fused_row
from minigpt.studies.break1 import break1, fusion_verdict, seed_run

exp = setup(extra=("break1",))  # announces the extra training time too
k = exp.k
announce(exp, "break1")
# trains (or loads) three bases, their specialists, the controls and every router, then measures
rep = break1(exp)
S, D = rep["shared"], rep["different"]
X = SHARED_TRUNK  # "trunk of base X": the router input used for the headline comparison
print(f"base seeds (code, medical, legal): {rep['base_seeds']}; base X = seed {rep['base_x_seed']}; "
      f"{rep['wall_seconds']:.0f} s; report written to {rep['out_path']}")

# %% [markdown]
# ## 1. The compatibility check refuses (Chapter 32, Step 1)
#
# Before fusing anything, `compat.check` compares what the specialists must share: the
# architecture, the tokenizer fingerprint, the base checkpoint's fingerprint and the frozen trunk
# tensors, in that order, and stops at the first mismatch:

# %%
show_source(compat.check)

# %%
different = [seed_run(exp, s).specialist(d) for d, s in zip(DOMAINS, rep["base_seeds"])]
try:
    compat.check(different, k)
    refusal = None
except compat.CompatibilityError as err:
    refusal = err
    print(f"{type(err).__name__}: {err}")
assert refusal is not None, "specialists fine-tuned from different bases must be refused"
assert str(refusal) == rep["compat"]["refusal"]

# %% [markdown]
# Nothing about these three models looks wrong on its own: same shapes, same tokenizer, each one
# trained normally. The check refuses because their *ancestry* differs. To run the break we opt out
# explicitly; the check then warns instead and lists every mismatch:

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    forced = compat.check(different, k, allow_mismatch=True)
for w in caught:
    print(f"{w.category.__name__}: {w.message}")
pd.DataFrame(forced["checks"])[["check", "ok", "detail"]].style.hide(axis="index")

# %%
healthy = compat.check(exp.specialists(), k)
print(f"shared-base specialists: ok = {healthy['ok']} ({healthy['checks'][-1]['detail']})")
assert healthy["ok"] and {"base", "trunk"} <= set(forced["mismatches"]) and "tokenizer" not in forced["mismatches"]

# %% [markdown]
# ## 2. The chapter's table, with and without a shared base
#
# Mixed held-out loss (nats/token) for every row, routers reading base X's trunk. "base" is base X
# in both columns. *fused hidden* mixes the crowns' final hidden states and decodes them with base
# X's output head: with a shared base that is the same as logit fusion, with different bases it
# assumes the crowns' hidden coordinates line up.

# %%
rows = ["base", *SPECIALIST_ROWS, "weight average", "uniform mix",
        *[fused_row(rule, X) for rule in ("soft", "probs", "hidden", "hard")], ORACLE, ORACLE_PER_TOKEN]
side = pd.DataFrame({"shared base": [S["mixed"][r] for r in rows], "different bases": [D["mixed"][r] for r in rows]},
                    index=rows)
side["change"] = side["different bases"] - side["shared base"]
side.style.format("{:.4f}").format("{:+.4f}", subset=["change"]).background_gradient(cmap="Reds", subset=["change"])

# %%
plot_two_sets(side[["shared base", "different bases"]])
plt.show()

# %% [markdown]
# ## 3. What fails first, as data
#
# Each metric measured on both sets, ranked by how much it got worse relative to its shared-base
# value. *z* is the change divided by its paired standard error over the same held-out windows;
# "worse" means more than two standard errors. (Units differ between rows — a share of tokens for
# routing accuracy, nats for losses — so read the raw numbers as well as the ranking.)

# %%
degr = pd.DataFrame(rep["degradations"]).set_index("metric")[["shared", "different", "unit", "relative_%", "z", "verdict"]]
degr.style.format({"shared": "{:.4f}", "different": "{:.4f}", "relative_%": "{:+.2f}", "z": "{:+.1f}"}, na_rep="—")

# %%
plot_degradations(rep["degradations"])
plt.show()

# %%
first = rep["what_fails_first"]
missed = rep["missed_by_headline"]
show_markdown(
    (f"**Ranked first: {first}.** " if first else "**No metric gets significantly worse at this profile.** ")
    + ("The headline number (mixed loss of logit fusion) does register the break here"
       if rep["headline_catches_it"] else
       "The headline number (mixed loss of logit fusion) does *not* register the break here")
    + (f"; looking only at it would miss: {', '.join(missed)}." if missed else ".")
    + f" {len([m for m in rep['degradations'] if m['verdict'] == 'worse'])} of {len(rep['degradations'])} metrics "
      "are significantly worse; the next section asks how many of them a weaker base alone would explain.")

# %% [markdown]
# ## 4. Weaker bases, or a missing shared geometry?
#
# Three bases trained from three seeds for the same number of steps can end up noticeably
# different in quality, especially in a small, short run. A specialist built on a weaker base is
# weaker everywhere, and that alone makes the fused system worse without any mismatch of internal
# coordinates. First the bases on their own:

# %%
bases = pd.DataFrame(rep["base_losses"]).T.rename(index=lambda s: f"base seed {s}")[list(DOMAINS)]
bases["mixed"] = bases.mean(axis=1)
bases.style.format("{:.4f}")

# %%
msg = (f"The bases' mixed losses span {rep['base_quality_spread']:.4f} nats; fusion with a shared base improves "
       f"on its best specialist by {rep['shared_fusion_effect']:+.4f} nats.")
if rep["confounded_by_base_quality"]:
    msg += (" **Base quality is a confound here:** the bases differ by more than the whole effect fusion has, so "
            "raw before/after numbers mix a weaker base with a missing shared geometry. Trust the controls and "
            "the within-set contrasts below more than the ranking above.")
else:
    msg += " The bases are close enough in quality that the raw comparison above is not dominated by it."
show_markdown(msg)

# %% [markdown]
# **Controls**: the complete shared-base pipeline (three specialists, router, fusion) on each base
# the break uses, one control per base seed: the chapter's run with that seed, the one `make seeds`
# trains. Each different-base specialist is taken from one of those runs (`seed_run`), so the
# controls match their base quality and their training data seed. The test is one-sided: the different-base
# system is *worse than the controls* only if its fused loss is higher than every control's, each
# judged by a paired 95% interval over the same held-out windows (the difference per window, its
# mean ± 1.96 standard errors). Being better than a control never counts against it.

# %%
controls = pd.DataFrame(rep["controls"]).T.rename(index=lambda s: f"shared base = seed {s}")
cols = ["base_mixed", "best_specialist_mixed", "fused_logits_mixed", "fusion_gain_vs_best_specialist_%",
        "weight_average_mixed", "mean_routing_accuracy", "mean_oracle_agreement"]
controls[cols].astype(float).style.format("{:.4f}").format(
    "{:.1%}", subset=["mean_routing_accuracy", "mean_oracle_agreement"]).format(
    "{:+.2f}%", subset=["fusion_gain_vs_best_specialist_%"])

# %%
dv = rep["different_vs_controls"]
print(dv["controls_note"])
per_control = pd.DataFrame(dv["per_control"]).T.rename(index=lambda s: f"different minus control seed {s}")
per_control[["control_fused_logits_mixed", "delta", "se", "ci_low", "ci_high", "verdict"]].style.format(
    {"control_fused_logits_mixed": "{:.4f}", "delta": "{:+.4f}", "se": "{:.4f}", "ci_low": "{:+.4f}",
     "ci_high": "{:+.4f}"}, na_rep="—")

# %%
plot_controls(rep["controls"], dv)
plt.show()
print(f"different-base fused loss {dv['different_fused_logits_mixed']:.4f}: {dv['verdict_note']}")

# %% [markdown]
# **Within-set contrasts** compare two ways of combining the *same* specialists, so a weaker base
# under one of them largely cancels out. Each bar is how much worse (in nats) the first method is
# than the second with different bases, minus the same difference with a shared base; error bars
# are two paired standard errors.

# %%
contrasts = pd.DataFrame(rep["within_set_contrasts"]).set_index("contrast")
contrasts[["shared", "different", "change_nats", "z", "verdict"]].style.format(
    {"shared": "{:+.4f}", "different": "{:+.4f}", "change_nats": "{:+.4f}", "z": "{:+.1f}"}, na_rep="—")

# %%
plot_contrasts(contrasts)
plt.show()

# %% [markdown]
# So does fusion of *predictions* survive different bases? The answer below is computed from the
# numbers above, not written in advance:

# %%
pf = fusion_verdict(rep)
lo, hi = pf["controls"]
against = (f"its mixed loss ({pf['fused']:.4f}; controls {lo:.4f}–{hi:.4f}) is worse than {dv['n_worse']} of the "
           f"{pf['n_controls']} shared-base controls on the same bases, better than {dv['n_better']} and inconclusive "
           f"against {dv['n_inconclusive']} (paired 95% intervals), so it is not worse than the controls")
if pf["verdict"] == "survives":
    verdict = (f"**Prediction-level fusion survives different bases at this scale.** With different bases, logit "
               f"fusion still beats its own best specialist by {-pf['behind_best_nats']:.4f} nats, and {against}.")
elif pf["verdict"] == "not worse than the controls":
    verdict = (f"**Logit fusion no longer beats its own best specialist** (it is {pf['behind_best_nats']:+.4f} nats "
               f"behind it), **but {against}.** What it loses is within what the bases themselves cost; these "
               "numbers do not show prediction-level fusion breaking because the hidden spaces differ.")
else:
    verdict = (f"**Logit fusion degrades beyond what base quality explains:** its mixed loss ({pf['fused']:.4f}) "
               f"is worse than every one of the {pf['n_controls']} shared-base controls ({lo:.4f}–{hi:.4f}), each "
               f"by its paired 95% interval, and it is {pf['behind_best_nats']:+.4f} nats from its own best specialist.")
if pf["bites"]:
    verdict += " Within-set contrasts that get significantly worse: " + "; ".join(
        f"{name} ({change:+.4f} nats)" for name, change in pf["bites"]) + "."
    if rep["confounded_by_base_quality"] and any(name.startswith("fused logits minus best") for name, _ in pf["bites"]):
        verdict += (" (The contrast against the best specialist still carries base quality: a specialist on a much "
                    "better base is hard to beat, whatever the geometry.)")
else:
    verdict += " No within-set contrast gets significantly worse."
show_markdown(verdict)

# %% [markdown]
# Why prediction-level fusion *can* survive: the specialists' outputs live in a space they share
# by construction. With the same tokenizer, logit 300 means "token 300" in every model, however
# differently each model computes it; a weighted sum or mixture of next-token predictions needs
# nothing more. (This is the idea behind routing in the models' input–output space rather than in
# any one model's hidden space, as in Pari et al.) What does need the internal coordinates to
# agree is everything that reaches *inside*: averaging weights (one tensor entry means different
# things in two independently trained models), mixing hidden states before a shared head, and a
# router whose input is one particular model's hidden state. Those are the rows to look at above
# — and §7 shows the coordinates themselves.

# %% [markdown]
# ## 5. What the router reads when there is no shared trunk
#
# The same per-token router trained on three different inputs. *Routing accuracy* counts tokens
# whose top-weighted specialist is their own domain's; *oracle agreement* counts tokens whose
# top-weighted specialist is the one with the lowest loss on that window. The second needs no
# label, so it stays fair when one specialist is simply better everywhere.

# %%
feat = {}
for f in FEATURES:
    for name, R in (("shared", S), ("different", D)):
        feat[(f, name)] = {"routing accuracy": R["mean_routing_accuracy"][f],
                           "oracle agreement": R["mean_oracle_agreement"][f],
                           "fused soft, mixed": R["mixed"][fused_row("soft", f)], "oracle gap": R["oracle_gap"][f]}
feat = pd.DataFrame(feat).T.rename_axis(["router input", "bases"])
feat.style.format("{:.4f}").format("{:.1%}", subset=["routing accuracy", "oracle agreement"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
for ax, (name, R) in zip(axes, (("shared base", S), ("different bases", D))):
    plot_confusion(pd.DataFrame(R["confusion"][X]).T.loc[list(DOMAINS)], ax=ax, title=f"{name}: router on {X}")
fig.tight_layout()
plt.show()

# %%
acc_s, acc_d = S["mean_routing_accuracy"][X], D["mean_routing_accuracy"][X]
agr_s, agr_d = S["mean_oracle_agreement"][X], D["mean_oracle_agreement"][X]
dominant = pd.DataFrame(D["confusion"][X]).T.mean().idxmax()
print(f"router on {X}: routing accuracy {acc_s:.1%} -> {acc_d:.1%}, oracle agreement {agr_s:.1%} -> {agr_d:.1%}")
print(f"with different bases the router sends most tokens to the {dominant} "
      f"({pd.DataFrame(D['confusion'][X]).T.mean().max():.0%} of all tokens)")
if acc_d < acc_s and agr_d >= agr_s:
    print("accuracy fell while agreement with the oracle did not: the router is following the specialist that is "
          "actually best on most windows, which a domain-label metric counts as an error")

# %% [markdown]
# ## 6. Calibration and logit scale
#
# A weighted sum of logits assumes the specialists speak with comparable confidence. Expected
# calibration error (ECE, top-1) and the logit scale (standard deviation of the logits over the
# vocabulary) per specialist, on all held-out tokens:

# %%
cal = {}
for name, R in (("shared", S), ("different", D)):
    for s in SPECIALIST_ROWS:
        a = R["calibration"][s]["all"]
        cal[(s, name)] = {"ECE": a["ece"], "mean max prob": a["mean_max_prob"], "top-1 accuracy": a["accuracy"],
                          "logit scale": a["logit_scale"]}
cal = pd.DataFrame(cal).T.rename_axis(["specialist", "bases"])
cal.style.format("{:.4f}")

# %%
print(f"mean ECE of the specialists: shared {S['mean_ece']:.4f}, different {D['mean_ece']:.4f}; "
      f"largest/smallest logit scale: shared {S['logit_scale_ratio']:.3f}, different {D['logit_scale_ratio']:.3f}")

# %% [markdown]
# The same statistics as reliability diagrams. Every held-out token's top-1 prediction is put in a
# confidence bin (15 equal bins, as for the ECE); each point is a bin's mean confidence against
# the share of its predictions that were right. On the dashed diagonal a model is as sure as it is
# right; below it, overconfident. The grey bars behind are how many tokens fall in each bin (the
# ECE weights each bin's distance from the diagonal by that count).

# %%
bins = {name: {s: reliability_bins(rep["_raw"][key].stats[s]) for s in SPECIALIST_ROWS}
        for name, key in (("shared base", "shared"), ("different bases", "different"))}
plot_reliability(bins)
plt.show()
for name, R in (("shared base", S), ("different bases", D)):
    for s, b in bins[name].items():  # the bins give back the reported ECE
        ece = float(((b["accuracy"] - b["confidence"]).abs() * b["count"]).sum() / b["count"].sum())
        assert abs(ece - R["calibration"][s]["all"]["ece"]) < 1e-9, (name, s)
print("ECE recomputed from the bins equals the reported ECE for every specialist of both sets")

# %% [markdown]
# ## 7. Do the representations line up? CKA between trunks
#
# Two numbers per pair of models, on the same held-out tokens:
#
# * **linear CKA** — do the two sets of hidden states carry the same information, *up to a rotation
#   and a scale*? 1 means identical up to rotation, near 0 unrelated.
# * **paired cosine** — do the raw coordinates agree, token by token? A rotation sends it to ~0.
#
# Fusing predictions needs neither. Averaging weights or mixing hidden states needs the second.

# %%
plot_cka_blocks(rep["representations"])
plt.show()
reps = pd.DataFrame({name: {"mean CKA": b["mean_cka"], "mean paired cosine": b["mean_paired_cosine"]}
                     for name, b in rep["representations"].items()}).T
reps.style.format("{:+.3f}")

# %%
shared_final = rep["representations"]["final hidden (shared-base specialists)"]
diff_final = rep["representations"]["final hidden (different-base specialists)"]
print(f"final hidden states of the specialists: CKA {shared_final['mean_cka']:.3f} (shared) vs "
      f"{diff_final['mean_cka']:.3f} (different); paired cosine {shared_final['mean_paired_cosine']:+.3f} vs "
      f"{diff_final['mean_paired_cosine']:+.3f}")
assert shared_final["mean_paired_cosine"] > diff_final["mean_paired_cosine"], \
    "crowns on one shared trunk should keep more aligned coordinates than crowns on unrelated bases"

# %% [markdown]
# ## 8. A tokenizer mismatch
#
# The case from Chapter 32, Step 1: everything matches except the tokenizer. The legal specialist
# is trained from the *same* base, with the same steps, but on text encoded by another BPE
# tokenizer of the same size (learned on different text). Shapes, base fingerprint and trunk
# tensors all agree; only the meaning of the token ids differs.

# %%
tm = rep["tokenizer_mismatch"]
print(f"{tm['ids_with_same_string']:.1%} of the {exp.profile.model.vocab_size} ids decode to the same string "
      "in both tokenizers")
print(f"compat.check: {tm['compat']['refusal']}")
pd.DataFrame(tm["compat"]["forced_report"]["checks"])[["check", "ok", "detail"]].style.hide(axis="index")

# %% [markdown]
# Losses per token cannot be compared across tokenizers (a token is a different amount of text), so
# the table also gives nats per byte of decoded text. The second row is what fusion does to this
# specialist: it is fed ids from the shared tokenizer, which it reads as other strings.

# %%
tl = pd.DataFrame(tm["losses"]).T[["per_token", "per_byte", "bytes_per_token"]]
tl.style.format("{:.4f}")

# %%
plot_per_byte(tl, xlabel=f"nats per byte on {tm['domain']} text (axis zoomed)")
plt.show()
fm = tm["fused_mixed"]
print(f"fused mixed loss: healthy set {tm['healthy_fused_mixed']:.4f}; with the mismatched legal specialist "
      + ", ".join(f"{r} {v:.4f}" for r, v in fm.items()))
pd.DataFrame(tm["weight_on_mismatched"]).T.style.format("{:.2f}").set_caption(
    "mean weight on the mismatched specialist, per eval domain")

# %%
checks_tm = {c["check"]: c["ok"] for c in tm["compat"]["forced_report"]["checks"]}
assert tm["compat"]["refusal"] is not None and not checks_tm["tokenizer"]
assert checks_tm["architecture"] and checks_tm["base"] and checks_tm["trunk"], \
    "the tokenizer case changes nothing but the tokenizer"

# %% [markdown]
# ## 9. Sanity checks that hold whatever the run
#
# With a shared base the output head is shared and linear, so mixing final hidden states and
# mixing logits must give the same loss; the oracle can never lose to a specialist of its own set;
# and averaging *all* parameters of independently pretrained models must hurt more than averaging
# the crowns of one base.

# %%
shared_nll = rep["_raw"]["shared"].nll  # token losses of every row, shared-base set
hidden_vs_logits = max(float((shared_nll[fused_row("hidden", X)][d] - shared_nll[fused_row("soft", X)][d]).abs().max())
                       for d in DOMAINS)
print(f"shared base: max token difference hidden-state vs logit fusion {hidden_vs_logits:.2e} nats")
assert hidden_vs_logits < 1e-3
for R in (S, D):
    assert all(R["mixed"][ORACLE] <= R["mixed"][s] + 1e-9 for s in SPECIALIST_ROWS)
print(f"weight averaging: shared {S['mixed']['weight average']:.4f}, different {D['mixed']['weight average']:.4f}")
assert D["mixed"]["weight average"] > S["mixed"]["weight average"]

# %% [markdown]
# ## Questions to answer
#
# 1. Which of `compat.check`'s four checks fails for the different-base specialists, and which for
#    the tokenizer case? Why does it make sense to check the tokenizer before the base, and the base
#    fingerprint before comparing trunk tensors?
# 2. Chapter 32, question 3: rank what degrades when the bases differ. Which of those changes would
#    you have seen from the headline mixed loss alone?
# 3. Do the base-quality controls change your reading of §3? Use the per-control intervals and the
#    within-set contrasts to say whether *prediction-level* fusion survives different bases at this
#    scale, and which ways of combining the specialists do not.
# 4. CKA between the trunks of different bases is far from zero, yet their paired cosine is near
#    zero. What does that pair of numbers tell you, and which of the fusion methods in §2 does it
#    predict will fail?
# 5. In the tokenizer case every check except one passes. Compare the mismatched specialist's
#    loss per byte on its own text and on the shared tokenizer's text: what happens to it inside the
#    fused system, and does the retrained router protect the fused model?

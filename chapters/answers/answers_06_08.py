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
# # Instructor answers · notebooks 4, 6, 7 and 8
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/answers/answers_06_08.ipynb)
#
# Answers to the "Questions to answer" of notebooks 4 (soft fusion), 6 (Break 1), 7 (Break 2) and
# 8 (the chapter's five questions). Nothing here is written in advance: every number is measured
# in this run, with the profile and seed the reader used, and the wording is chosen from the
# numbers — including when a claim of Chapter 32 does *not* hold at this scale. References like
# *nb 6 §4* point to the section of the reader's notebook whose cells show the evidence.

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
import numpy as np
import pandas as pd
import torch

from minigpt.analysis.conclusions import collapse_cost, coordinates_conclusion, fusion_rule_scale, leak_by_position
from minigpt.analysis.routing import (confusion_matrix, future_leak, misrouting, misrouting_margins, router_weights,
                                      weight_on)
from minigpt.analysis.table import baseline_comparison, fusion_comparison, oracle_headroom
from minigpt.chapter import evaluate
from minigpt.config import DOMAINS
from minigpt.notebook import setup, show_markdown
from minigpt.scoring import HEADLINE, SPECIALIST_ROWS
from minigpt.studies.break1 import break1, fusion_verdict
from minigpt.studies.break2 import break2
from minigpt.studies.freeze_sweep import freeze_sweep, sweep_frame
from minigpt.studies.hybrid import hybrid_set, run_hybrid, switch_lag

exp = setup()
k = exp.k
specialists = exp.specialists()
routers = {"last-token": exp.router("last_token"), "per-token": exp.router("per_token")}
# each call below reads back the scores its notebook stored (minigpt/score_cache.py), so this runs in seconds
res = evaluate(exp)  # notebook 5's table; notebooks 4 and 8 read it too
table, mixed, nll = res["table"], res["table"]["mixed"], res["nll"]
spec_tok = {d: res["scores"].spec_nll(d) for d in DOMAINS}  # (specialists, windows, T) token losses per domain
hyb = run_hybrid(exp)  # notebook 4 §4-5
b1 = break1(exp)  # notebook 6 and 8 (question 3)
b2 = break2(exp)  # notebook 7
sw = freeze_sweep(exp)  # notebook 8 (question 4)
print(f"answers computed for profile {exp.profile.name!r}, seed {exp.seed}, K = {k}")


def pct(v):
    return f"{v:.0%}"


# %% [markdown]
# ## Notebook 4 · Soft fusion

# %%
comp = fusion_comparison(table)["per-token"]
best_rule, worst_rule = comp.idxmin(), comp.idxmax()
spread = comp.max() - comp.min()
gap = res["oracle_gap"]
top_w = float(torch.cat([w.max(-1).values.flatten() for w in res["weights"]["per-token"].values()]).mean())
order = " < ".join(f"{r} {comp[r]:.4f}" for r in comp.sort_values().index)
scale, rule_conclusion = fusion_rule_scale(spread, gap)
hard_note = (f" Hard routing coming out ahead says the router's *top choice* is better than its soft weights: its "
             f"weights are flat (the top specialist gets {top_w:.2f} on average, against {1 / len(DOMAINS):.2f} for "
             "uniform), so soft fusion dilutes a good choice with two weaker voices."
             if best_rule.startswith("hard") else
             f" Soft weights beat the hard choice here, so the router's hedging (top weight {top_w:.2f} on average) "
             "is worth more than committing to one specialist.")
show_markdown(f"""**4.1** With the per-token router (nb 4 §2): {order}. The three rules span {spread:.4f} nats, which
is {scale} the oracle gap ({gap:+.4f} nats).{hard_note} {rule_conclusion}""")

# %%
lg, pr = nll["fused soft (per-token router)"], nll["fused probs (per-token router)"]
win, win_hi, win_lo = [], [], []
for d in DOMAINS:
    disagree = spec_tok[d].max(0).values - spec_tok[d].min(0).values  # (n, T): how far apart the specialists are
    cut_hi, cut_lo = disagree.quantile(0.9), disagree.quantile(0.1)
    better = pr[d] < lg[d]
    win.append(better.double().mean())
    win_hi.append(better[disagree >= cut_hi].double().mean())
    win_lo.append(better[disagree <= cut_lo].double().mean())
w_all, w_hi, w_lo = (float(torch.stack(v).mean()) for v in (win, win_hi, win_lo))
d_mix = mixed["fused probs (per-token router)"] - mixed["fused soft (per-token router)"]
mix_note = (f"On the mean loss the two differ by only {abs(d_mix):.1e} nats: the wins and losses cancel, and at this scale "
            "the choice between them hardly matters." if abs(d_mix) < 0.005 else
            f"On the mean loss the {'logit fusion' if d_mix > 0 else 'mixture'} is ahead by {abs(d_mix):.4f} nats.")
show_markdown(f"""**4.2** The mixture can only add probability, so it protects a token that one weighted specialist
rules out; the geometric mean lets that specialist veto it, but concentrates mass on what all weighted specialists
agree on (the toy's compromise token `c`, nb 4 §1). Expect the mixture to win where the specialists disagree sharply
about the actual next token and logit fusion where they agree. On all held-out tokens the mixture wins
{pct(w_all)} of the time; on the 10% of tokens where the specialists' losses are furthest apart it wins {pct(w_hi)},
on the 10% where they are closest {pct(w_lo)}
({'consistent with that expectation' if w_hi > w_lo else 'which does not follow the expectation at this scale'}).
{mix_note}""")

# %%
sd = {r: hyb["single_domain"]["routers"][r] for r in routers}
adv = sd["per-token"]["fused_loss"] - sd["last-token"]["fused_loss"]  # > 0: last-token is better
t_cut = exp.profile.model.block_size // 2
xc = exp.eval_sets["code"][0][:8]
xs = xc.clone()
xs[:, t_cut:] = exp.eval_sets["legal"][0][:8, t_cut:]
leak = future_leak(specialists[0], k, routers, xc, xs, t_cut)
T = exp.profile.model.block_size
edges = [0, 8, T - 8, T]
by_pos = {}
for a, b in zip(edges[:-1], edges[1:]):
    by_pos[f"{a}-{b - 1}"] = float(np.mean([(nll["fused soft (per-token router)"][d][:, a:b]
                                             - nll["fused soft (last-token router)"][d][:, a:b]).mean() for d in DOMAINS]))
first, last = by_pos["0-7"], by_pos[f"{T - 8}-{T - 1}"]
pos_note = leak_by_position(first, last)
show_markdown(f"""**4.3** On single-domain windows the last-token router's fused loss is {sd['last-token']['fused_loss']:.4f}
against {sd['per-token']['fused_loss']:.4f} for the causal router (nb 4 §4):
{f'the last-token router is ahead by {adv:.4f} nats' if adv > 0 else f'the causal router is ahead by {-adv:.4f} nats, despite the leak'}.
The leak is real (nb 4 §3): changing only tokens from position {t_cut} on moved its weights at earlier positions by up to
{leak['last-token']:.3f}, while the causal router did not move at all. Per-token minus last-token loss is {first:+.4f}
nats on the first 8 positions, where the last-token router has seen most of the future, and {last:+.4f} on the last 8,
where it has seen at most 7 tokens more than the causal router. {pos_note} A fair comparison removes the future from the
last-token router without removing its summary: route each window with weights computed from the *preceding*
window of the same document, or score both routers only on the final positions of each window; whatever advantage
remains is genuine.""")

# %%
hy = {r: hyb["hybrid"]["routers"][r] for r in routers}
hs = hybrid_set(exp, hyb)
w_hyb = router_weights(specialists[0], k, routers, hs.x)  # {router: (n, T, N)}
final = hs.labels == hs.labels[:, -1:]  # tokens of each window's final segment (its domain differs from the others)
hit = w_hyb["last-token"].argmax(-1) == hs.labels
last_seg, earlier_seg = float(hit[final].double().mean()), float(hit[~final].double().mean())
since = {r: hy[r]["accuracy_by_tokens_since_switch"] for r in routers}
first_bucket = next(iter(since["per-token"]))
chance = 1 / len(DOMAINS)
lines = "; ".join(f"{r}: " + ", ".join(f"{b} tokens {a:.0%}" for b, a in since[r].items()) for r in routers)
better_r = max(routers, key=lambda r: hy[r]["routing_accuracy"])
trend = {r: list(since[r].values())[-1] - list(since[r].values())[0] for r in routers}
up = [r for r in routers if trend[r] > 0]
rising = "both routers" if len(up) == len(routers) else f"the {up[0]} router only" if up else "neither router"
show_markdown(f"""**4.4** On hybrid windows the per-token routing accuracy is {hy['last-token']['routing_accuracy']:.1%} for the
last-token router and {hy['per-token']['routing_accuracy']:.1%} for the causal one, so the {better_r} router is ahead
(nb 4 §4). By tokens since the last switch — {lines}. Accuracy rises with distance from the switch for {rising}
({', '.join(f'{r} {v:+.0%}' for r, v in trend.items())} from the first to the last bucket).
Right after a switch ({first_bucket} tokens) they stand at {since['last-token'][first_bucket]:.0%} and
{since['per-token'][first_bucket]:.0%} against a chance level of {chance:.0%}:
{'neither is meaningfully better than chance there' if max(since[r][first_bucket] for r in routers) < chance + 0.1 else 'at least one is already above chance'}.
The last-token router has one weight vector per window, read off the window's *last* segment: its accuracy is
{last_seg:.0%} on tokens of the final segment and {earlier_seg:.0%} on earlier segments.
{'So its rise with distance says more about where long final segments are than about reacting to a switch.' if last_seg > earlier_seg + 0.1 else 'The two are close, so at this scale it is not simply reading off the final segment domain: its weights are too flat for that.'}""")

# %%
w_h = w_hyb["per-token"]
lags = [lag for i in range(hs.x.shape[0]) for lag in switch_lag(w_h[i], hs.labels[i])]
reached = [lag for lag in lags if lag is not None]
seg_acc = hy["per-token"]["accuracy_by_segment"]
decay = exp.router("per_token").decay
show_markdown(f"""**4.5** The causal router's input at position t is a decaying average of the trunk states so far:
a state j tokens old weighs {decay:g}^j, so about {1 / (1 - decay):.0f} tokens of memory, and a new segment's states
outweigh the old ones within a few tokens. Its accuracy by segment is
{', '.join(f'segment {s} {a:.0%}' for s, a in seg_acc.items())} (nb 4 §4). Over
{len(lags)} switches in the hybrid set, its argmax reached the new domain within the segment after
{len(reached)} of them ({len(reached) / max(len(lags), 1):.0%}){f', after a median of {int(np.median(reached))} tokens (0 = its argmax already pointed there)' if reached else ''}.
What still slows it down is upstream of the router: the trunk's attention mixes the earlier segment into every later
state, and the router was trained on single-domain windows only, so it never saw a switch. Ways to react faster:
a shorter memory (a smaller decay, at the price of noisier weights on single-domain text), training the router on
hybrid windows, or a small gated recurrence that learns when to reset. Each still reads only the past. A longer
memory (decay nearer 1) steadies the weights on single-domain text but drags the old segment further into the new one.
Which matters more is an empirical question for the dev split, where the book chose its decay among several candidates
(`python -m minigpt decisions`; docs/design.md, "Decision log"), never the eval windows it reports.""")

# %% [markdown]
# ## Notebook 6 · Break 1: different bases

# %%
forced = b1["compat"]["forced_report"]["mismatches"]
tm = b1["tokenizer_mismatch"]
forced_tm = tm["compat"]["forced_report"]["mismatches"]
show_markdown(f"""**6.1** For the different-base specialists the checks that fail are {', '.join(forced)}
(nb 6 §1); the refusal names the first, the base fingerprint. In the tokenizer case only {', '.join(forced_tm)} fails
(nb 6 §8). The order goes from what makes later checks meaningless to what is merely expensive: architecture first,
because with different shapes nothing else can even be compared; the tokenizer next, because if the ids mean different
strings no amount of shared weights helps and the fingerprint comparison is cheap; the base fingerprint before the
trunk tensors because it is a one-line comparison of recorded provenance, and if the bases differ the trunks differ
too. The tensor comparison comes last: it is the slowest, and it catches what the fingerprints cannot — a specialist
from the right base whose trunk was nonetheless trained (not frozen).""")

# %%
worse = [m for m in b1["degradations"] if m["verdict"] == "worse"]
ranked = "; ".join(f"{m['metric']} {m['shared']:.4f} → {m['different']:.4f} ({m['relative_%']:+.1f}%)" for m in worse)
better = [m["metric"] for m in b1["degradations"] if m["verdict"] == "better"]
cal = next(m for m in b1["degradations"] if m["metric"].startswith("calibration"))
show_markdown(f"""**6.2** Ranked by relative change (nb 6 §3), {len(worse)} metrics get significantly worse: {ranked or 'none'}.
Calibration of the specialists moves {cal['shared']:.4f} → {cal['different']:.4f} (ECE;
{'worse' if cal['different'] > cal['shared'] else 'not worse'}), with no per-window error estimate.
{('Improved: ' + ', '.join(better) + '. ') if better else ''}The headline mixed loss of logit fusion
{'does' if b1['headline_catches_it'] else 'does not'} register the break
({next(m for m in b1['degradations'] if m['metric'] == 'fused loss, logits fusion')['relative_%']:+.2f}%);
{('looking only at it would miss ' + ', '.join(b1['missed_by_headline']) + ', and, more importantly, *why* it moved.') if b1['missed_by_headline'] else 'but it says nothing about which part failed.'}""")

# %%
pf = fusion_verdict(b1)
lo, hi = pf["controls"]
conf = b1["confounded_by_base_quality"]
bites = "; ".join(f"{n} ({c:+.4f} nats)" for n, c in pf["bites"])
best_note = (" The contrast against the best specialist still carries base quality: when one specialist sits on a much "
             "better base, it is hard to beat and there is little for the others to add."
             if conf and any(n.startswith("fused logits minus best") for n, _ in pf["bites"]) else "")
dv = b1["different_vs_controls"]
vs_ctrl = (f"against the {dv['n_controls']} shared-base controls on the same bases ({lo:.4f}–{hi:.4f}) it is worse than "
           f"{dv['n_worse']}, better than {dv['n_better']} and inconclusive against {dv['n_inconclusive']} "
           "(paired 95% intervals over the same windows)")
if pf["verdict"] == "survives":
    claim = (f"Prediction-level fusion survives: with different bases, logit fusion still beats its own best specialist "
             f"by {-pf['behind_best_nats']:.4f} nats, and at {pf['fused']:.4f} {vs_ctrl}, so it is not worse than the "
             "controls. The chapter's prediction that fusion from different bases falls below its best specialist "
             "does not hold at this scale.")
elif pf["verdict"] == "not worse than the controls":
    claim = (f"Logit fusion falls {pf['behind_best_nats']:.4f} nats behind its own best specialist, but at "
             f"{pf['fused']:.4f} {vs_ctrl}: not worse than what the shared-base pipeline reaches on the same bases. "
             "The drop is no larger than what the bases themselves cost, so these numbers do not show the "
             "prediction-level interface breaking; the chapter's degradation is not separable from base quality here.")
else:
    claim = (f"Logit fusion degrades beyond base quality: at {pf['fused']:.4f} {vs_ctrl}, i.e. worse than every "
             f"control, and {pf['behind_best_nats']:+.4f} nats from its best specialist. Here the chapter's prediction "
             "holds even for prediction-level fusion.")
show_markdown(f"""**6.3** {'Yes, substantially.' if conf else 'Only a little.'} The bases' own mixed losses span
{b1['base_quality_spread']:.4f} nats against a shared-base fusion effect of {b1['shared_fusion_effect']:+.4f} nats
(nb 6 §4){', so raw before/after comparisons mostly measure which base each specialist got' if conf else ''}. {claim}
What does break, measured within each specialist set so base quality largely cancels: {bites or 'no contrast gets significantly worse'}.{best_note}
{coordinates_conclusion(b1["within_set_contrasts"], pf["verdict"])}""")

# %%
rp = b1["representations"]
trunk_key = next(key for key in rp if key.startswith("trunk output"))
c_wa = next(c for c in b1["within_set_contrasts"] if c["contrast"].startswith("weight averaging"))
c_hid = next(c for c in b1["within_set_contrasts"] if c["contrast"].startswith("hidden-state"))
acc_feat = {f: b1["different"]["mean_routing_accuracy"][f] for f in b1["different"]["mean_routing_accuracy"]}
agr_s, agr_d = (b1[x]["mean_oracle_agreement"]["trunk of base X"] for x in ("shared", "different"))
router_note = ("Agreement with the oracle did not drop, so the router still finds the best specialist: its low label "
               "accuracy reflects that the best specialist is no longer the own-domain one, not a broken input."
               if agr_d >= agr_s else
               "Agreement with the oracle drops too, so the router's input does limit it once the trunk is not shared.")
show_markdown(f"""**6.4** Between the bases, the trunk outputs have linear CKA {rp[trunk_key]['mean_cka']:.2f} but a paired
cosine of {rp[trunk_key]['mean_paired_cosine']:+.2f}; the specialists' final hidden states, {rp['final hidden (different-base specialists)']['mean_cka']:.2f}
and {rp['final hidden (different-base specialists)']['mean_paired_cosine']:+.2f}, against {rp['final hidden (shared-base specialists)']['mean_cka']:.2f} and
{rp['final hidden (shared-base specialists)']['mean_paired_cosine']:+.2f} with a shared base (nb 6 §7). A CKA
{'well above' if rp[trunk_key]['mean_cka'] > 0.3 else 'only a little above'} zero says the independently trained models
carry related information; a cosine {'near zero' if abs(rp[trunk_key]['mean_paired_cosine']) < 0.2 else f"of {rp[trunk_key]['mean_paired_cosine']:+.2f}"}
says that information does not sit in the same coordinates: the same feature points along different directions, so
dimension i of one model is not dimension i of another. Anything that adds coordinates across models should fail — weight averaging (change {c_wa['change_nats']:+.4f} nats, {c_wa['verdict']}) and hidden-state fusion
({c_hid['change_nats']:+.4f}, {c_hid['verdict']}) — while logit fusion works in vocabulary coordinates that do line up.
A router reads only one model's space (or all of them), and a linear map can absorb a rotation, so its input is not
unreadable; with different bases its routing accuracy is {', '.join(f'{f} {a:.0%}' for f, a in acc_feat.items())} and
its agreement with the oracle {agr_s:.0%} → {agr_d:.0%} (router on base X's trunk). {router_note}""")

# %%
L = tm["losses"]
own_text = L["mismatched specialist, its own tokenizer's text"]["per_byte"]
fed = L["mismatched specialist, shared tokenizer's text (what fusion feeds it)"]["per_byte"]
healthy_pb = L["healthy specialist, shared tokenizer's text"]["per_byte"]
fm = tm["fused_mixed"]
w_re = tm["weight_on_mismatched"]["retrained router"]
w_old = tm["weight_on_mismatched"]["reused healthy router"]
protects = fm["retrained router"] < fm["reused healthy router"]
show_markdown(f"""**6.5** Architecture, base and trunk all pass; only the tokenizer fingerprint differs, and
{tm['ids_with_same_string']:.0%} of the ids still decode to the same string (nb 6 §8). Per byte of legal text, the
mismatched specialist scores {own_text:.4f} nats on its own tokenizer's text and {fed:.4f} on the shared tokenizer's
text that fusion feeds it, against {healthy_pb:.4f} for the healthy legal specialist.
{'It is worse even on its own text: its frozen embeddings (and tied head) were learned for the other tokenizer, so only the crown could adapt.' if own_text > healthy_pb else ''}
Inside the fused system it is simply a weaker, confused legal expert. Fused mixed loss: healthy set
{tm['healthy_fused_mixed']:.4f}; reusing the healthy router {fm['reused healthy router']:.4f}; retraining the router
{fm['retrained router']:.4f}. The retrained router {'does' if protects else 'does not'} limit the damage: its weight on
the mismatched specialist on legal text is {w_re['legal']:.2f}, against {w_old['legal']:.2f} for the reused router
— {'it learns to route around the broken expert, which means the set has effectively lost its legal specialist' if w_re['legal'] < w_old['legal'] else 'it does not learn to avoid it'}.
{'Even so it stays behind the healthy set, so the check is the only real protection.' if fm['retrained router'] > tm['healthy_fused_mixed'] else ''}""")

# %% [markdown]
# ## Notebook 7 · Break 2: router collapse

# %%
silent, strict, already = b2["silent_collapse"], b2["silent_collapse_newly_below_50"], b2["healthy_already_below_50"]
g2 = b2["fusion_gain_over_best_specialist_%"]
ratio = b2["tolerance_pct"] / max(abs(g2), 1e-9)
show_markdown(f"""**7.1** {len(silent)} of {len(b2['grid']) - 1} non-healthy settings keep the mixed loss within
{b2['tolerance_pct']:g}% of the healthy router's while some domain falls below 50% routing accuracy (nb 7 §4):
{', '.join(silent) or 'none'}.{f" The healthy router is itself below 50% on {', '.join(already)}, so the stricter count — settings that push a domain the healthy router gets right below 50% — is {len(strict)}." if already else ''}
The healthy router {'beats' if g2 > 0 else 'trails'} the best single specialist by {abs(g2):.2f}%, so the
{b2['tolerance_pct']:g}% window is {ratio:.1f}× the entire effect of routing:
{'a tolerance that wide cannot tell a working router from a collapsed one.' if ratio > 1 else 'tight enough to notice a router that throws its gain away.'}""")

# %%
raw_w, names = b2["_raw"]["weights"], b2["_raw"]["names"]
maj = int(np.argmax(b2["settings"]["imbalanced"]["domain_mix"]))
others = [d for d in DOMAINS if d != DOMAINS[maj]]
lean = {n: float(np.mean([weight_on(raw_w[names[n]], maj)[d] for d in others])) for n in ("healthy", "imbalanced")}
imb = b2["settings"]["imbalanced"]
show_markdown(f"""**7.2** The imbalanced router's dominant specialist is the {imb['dominant_specialist']}; on
{' and '.join(others)} text it receives {lean['imbalanced']:.2f} of the weight on average, against {lean['healthy']:.2f}
from the healthy router ({lean['imbalanced'] / max(lean['healthy'], 1e-9):.1f}×; nb 7 §3). In the histograms (nb 7 §2)
the {DOMAINS[maj]} specialist's curve sits to the right on *every* domain's text, not only its own. Its routing
accuracy is {', '.join(f'{d} {a:.0%}' for d, a in imb['routing_accuracy'].items())}.""")

# %%
s = b2["settings"]
cold, healthy = s["cold"], s["healthy"]
cold_collapses = bool(cold["newly_below_50"])
both = s["imbalanced + cold"]
imb_stronger = (imb["weight_on_dominant_other_domains"] > cold["weight_on_dominant_other_domains"]
                and imb["min_routing_accuracy"] <= cold["min_routing_accuracy"])
cause = ("Imbalance is the stronger cause here: it shifts every decision toward the majority specialist, whereas a cold "
         "temperature makes each decision more extreme without choosing a side." if imb_stronger else
         "Here the cold temperature does as much damage as the imbalance.")
most = max(s, key=lambda n: s[n]["weight_on_dominant_other_domains"])
cause += (f" Combined ({both['weight_on_dominant_other_domains']:.2f} on other domains) they are "
          + ("the most lopsided of the four." if most == "imbalanced + cold" else f"not worse than {most} alone."))
show_markdown(f"""**7.3** Cold alone: mean top weight {cold['mean_max_weight']:.2f} against {healthy['mean_max_weight']:.2f}
for the healthy router, worst-domain accuracy {cold['min_routing_accuracy']:.0%} (healthy {healthy['min_routing_accuracy']:.0%}),
dominant specialist's weight elsewhere {cold['weight_on_dominant_other_domains']:.2f} (imbalanced:
{imb['weight_on_dominant_other_domains']:.2f}). {'The cold router pushes a domain the healthy router handles below 50% — ' + ', '.join(cold['newly_below_50']) + ' — so temperature alone can collapse it here.' if cold_collapses else 'It does not push any domain the healthy router handles below 50%: with balanced data a cold target mostly *sharpens* the router (more confident weights) rather than collapsing it onto one specialist.'}
{'Its mixed loss is even slightly better than healthy' if cold['mixed_vs_healthy_%'] < 0 else 'Its mixed loss is slightly worse than healthy'} ({cold['mixed_vs_healthy_%']:+.2f}%).
{cause}""")

# %%
tb = pd.DataFrame(b2["table"]).T
spec_mixed = tb.loc[list(SPECIALIST_ROWS), "mixed"]
spread_s = spec_mixed.max() - spec_mixed.min()
dom_row = imb["dominant_specialist"]
alone_pct = (spec_mixed[dom_row] - b2["healthy_mixed"]) / b2["healthy_mixed"] * 100
tol2 = b2["tolerance_pct"]
off = b2["generalist"]["specialist_off_domain_penalty_nats"]
if abs(imb["mixed_vs_healthy_%"]) > tol2:
    why = (f"Here it does move: the imbalanced router is {imb['mixed_vs_healthy_%']:+.2f}% off the healthy one, beyond the "
           f"{tol2:g}% window. Leaning on a specialist is loud because a specialist is much worse off its own domain "
           f"({', '.join(f'{r.split()[0]} {v:+.2f}' for r, v in off.items())} nats against each domain's own specialist), "
           "so a silent collapse needs an expert that is good everywhere — a generalist (answer 7.7).")
elif abs(alone_pct) <= tol2:
    why = (f"Because the specialists are close to each other as generalists: their mixed losses span only {spread_s:.4f} nats, "
           f"and the {dom_row} alone is {alone_pct:+.2f}% from the healthy fused model, inside the {tol2:g}% window. A router "
           "that leans on one of them replaces a good mix with a slightly worse single model, and the mixed loss can only "
           "move by about that much.")
else:
    why = (f"Not because the specialists are interchangeable: the {dom_row} alone is {alone_pct:+.2f}% from the healthy "
           f"fused model, beyond the {tol2:g}% window. The imbalanced router stays inside it because it leans only part of "
           f"the way — its dominant specialist takes {imb['weight_on_dominant_other_domains']:.2f} of the weight on the other "
           "domains, and soft fusion keeps the rest on the own specialists, which carry most of the loss.")
alone_vs_fused = {r: (v - b2["healthy_mixed"]) / b2["healthy_mixed"] * 100 for r, v in spec_mixed.items()}
show_markdown(f"""**7.4** {why} {collapse_cost(alone_vs_fused, tol2)}""")

# %%
h_acc = b2["healthy_routing_accuracy"]
by_acc = [n for n, r in b2["grid"].items() if any(h_acc[d] - r["routing_accuracy"][d] > 0.2 for d in DOMAINS)]
by_dom = [n for n, r in b2["grid"].items() if r["weight_on_dominant_other_domains"] > 0.5]
by_loss = [n for n, r in b2["grid"].items() if r["mixed_vs_healthy_%"] > b2["tolerance_pct"]]
show_markdown(f"""**7.5** Check per-domain routing on a balanced held-out set, not the mixed loss. Two simple rules and
what they flag in this grid of {len(b2['grid'])} routers (nb 7 §4):
- any domain's accuracy more than 20 points below a reference router's: {len(by_acc)} settings;
- the most-weighted specialist taking more than half the weight on other domains' text: {len(by_dom)} settings;
- for comparison, a mixed loss more than {b2['tolerance_pct']:g}% worse than the reference: {len(by_loss)} settings.
{'The loss rule catches fewer: leaning on one specialist costs less than the window (answer 7.4).' if len(by_loss) < max(len(by_acc), len(by_dom)) else 'Here the loss rule catches at least as many: leaning on a specialist is costly enough to show (answer 7.4), but with a strong generalist among the experts it would not be (answer 7.7).'} Where the domains' own specialists are not always best, use oracle agreement (the share of tokens routed
to the specialist that is actually best on the window) instead of label accuracy, so a router is not punished for
following the better expert.""")

# %%
sh = b2["target_sharpness"]
h_t = f"{exp.profile.router.temp:g}"  # the healthy setting's temperature
cold_t, soft_t = min(sh, key=float), max(sh, key=float)
gbal = {f"{r['temp']:g}": r for r in b2["grid"].values() if max(r["domain_mix"]) - min(r["domain_mix"]) < 1e-9}
margin = b2["own_specialist_margin_nats"]
soft_ts = [t for t in sh if float(t) > float(h_t)]
soft_drop = [t for t in soft_ts if gbal[t]["min_routing_accuracy"] < gbal[h_t]["min_routing_accuracy"]]
near_one_hot = sh[h_t]["mean_max_target"] >= 0.9
show_markdown(f"""**7.6** On the router split the other specialists are
{', '.join(f"{d} {m['mean_other_minus_own']:.2f}" for d, m in margin.items())} nats worse than a window's own one, so at
the profile's temperature ({h_t}) the targets already put {sh[h_t]['mean_max_target']:.0%} on the best specialist; at
{cold_t}, {sh[cold_t]['mean_max_target']:.0%}; at the softest ({soft_t}), {sh[soft_t]['mean_max_target']:.0%} (nb 7 §6).
{f'So *cold* barely differs from *healthy* in what it teaches: both are nearly one-hot (the balanced cold router moves the mixed loss {gbal[cold_t]["mixed_vs_healthy_%"]:+.2f}%).' if near_one_hot else 'So the cold settings do teach something the healthy one does not: certainty where the healthy targets still hedge.'}
With balanced data, the router's mean top weight goes from {gbal[h_t]['mean_max_weight']:.2f} (healthy) to
{gbal[soft_t]['mean_max_weight']:.2f} at {soft_t}: {'it hedges as its targets do' if gbal[soft_t]['mean_max_weight'] < gbal[h_t]['mean_max_weight'] else 'it does not hedge as its targets do'}.
{f"Soft targets lower the worst domain's routing accuracy at {', '.join(soft_drop)}" if soft_drop else "No soft temperature lowers the worst domain's routing accuracy"}
(healthy {gbal[h_t]['min_routing_accuracy']:.0%}; at {soft_t} {gbal[soft_t]['min_routing_accuracy']:.0%}), and its mixed loss
moves {gbal[soft_t]['mixed_vs_healthy_%']:+.2f}%.""")

# %%
gen = b2["generalist"]
gset = gen["settings"]
onto = {n: [d for d in DOMAINS if st["argmax_on_generalist"][d] > 0.5] for n, st in gset.items()}
lead = (f"The precondition {'holds' if gen['precondition_holds'] else 'does not hold'}: the generalist alone is "
        f"{gen['generalist_alone_vs_healthy_%']:+.2f}% from the healthy four-expert router (window ±{gen['tolerance_pct']:g}%), "
        f"and it is {', '.join(f'{d} {v:+.3f}' for d, v in gen['generalist_minus_own_specialist_nats'].items())} nats from each "
        "domain's own specialist on its own domain (nb 7 §7).")
where = ("Settings whose router sends most of a domain's tokens to the generalist: "
         + "; ".join(f"{n} ({', '.join(ds)})" for n, ds in onto.items() if ds) + "."
         if any(onto.values()) else "No setting sends most of any domain's tokens to the generalist.")
if gen["silent_collapse"]:
    verdict = (f"Silent collapse by Break 2's rule: {', '.join(gen['silent_collapse'])} — the headline stays within the window "
               "while a domain's own-specialist routing accuracy is below 50%"
               + (f"; but the healthy router is already below 50% on {', '.join(gen['healthy_already_below_50'])}, so "
                  "counting only domains it handles, the settings that qualify are: "
                  f"{', '.join(gen['silent_collapse_newly_below_50']) or 'none'}." if gen["healthy_already_below_50"] else "."))
else:
    verdict = "No setting is a silent collapse: every router that leaves its specialists also moves the headline, or none leaves them."
why = ("With three specialists a collapse onto one of them costs what that specialist loses off its own domain; with a "
       "generalist this close to the healthy mix, leaning on it costs only the gap between the two, so the headline can stay "
       "inside its window while per-domain routing falls." if gen["precondition_holds"] else
       "Even the generalist alone falls outside the window here, so at this profile no expert is strong enough for a "
       "collapse onto it to stay silent.")
show_markdown(f"""**7.7** {lead} {where} {verdict} {why}""")

# %% [markdown]
# ## Notebook 8 · The chapter's five questions

# %%
vs = baseline_comparison(table)
beaten, ahead = list(vs.index[vs["fusion better"]]), list(vs.index[~vs["fusion better"]])
router_add = mixed["uniform mix"] - mixed[HEADLINE]
wa_ahead = "weight average" in ahead
if wa_ahead:
    wa = (f"Weight averaging is ahead ({mixed['weight average']:.4f}). The specialists are the same in both rows, so "
          f"this is about the router: its weights add {router_add:+.4f} nats over equal weights, less than simply "
          "merging the crowns — a sign that the crowns are still close to their base (merging is nearly free) and "
          "the router is not exploiting their differences.")
else:
    wa = (f"Weight averaging is behind ({mixed['weight average']:.4f}), as the chapter expects; the router's weights add "
          f"{router_add:+.4f} nats over equal weights on the same specialists.")
mono = ""
if "monolithic" in ahead:
    mono = (f" The monolithic crown ({mixed['monolithic']:.4f}), trained on all domains with the same total steps, "
            "is still ahead: at this budget one shared crown uses the compute better, and fusion's case rests on "
            "modularity (adding a domain without retraining), not on loss.")
show_markdown(f"""**8.1** The headline ({HEADLINE}, {mixed[HEADLINE]:.4f}) beats {', '.join(beaten) or 'no baseline'};
{'still ahead of it: ' + ', '.join(f'{b} ({mixed[b]:.4f})' for b in ahead) if ahead else 'nothing is ahead of it'} (nb 8 Q1). {wa}{mono}""")

# %%
oh = oracle_headroom(table)
gp = res["oracle_gap_by_position"]
first_b, last_b = next(iter(gp)), list(gp)[-1]
cap = oh["captured"]
if oh["headroom"] <= 0:
    diag = ("The oracle has no headroom over the best specialist, so the bottleneck is the specialists: make them more "
            "different (more crown steps, a lower K, more distinct data) before touching the router.")
elif cap >= 0.7:
    diag = (f"The router captures {cap:.0%} of the headroom, so the bottleneck is the specialists: only better or more "
            "distinct crowns can raise the ceiling.")
elif cap >= 0.3:
    diag = (f"The router captures {cap:.0%} of the headroom: both matter. The router is cheaper to improve (more steps, "
            "LM-loss targets, a faster-reacting causal summary); then the specialists.")
else:
    diag = (f"The router captures only {cap:.0%} of the headroom, so the bottleneck is the router: train it longer, on "
            "balanced data, with performance or LM-loss targets, or let it react faster within a window.")
pos_note = (f" The gap is {gp[first_b]:+.4f} nats on positions {first_b} and {gp[last_b]:+.4f} on {last_b}: "
            + ("it shrinks along the window, so part of it is the price of routing causally — the router has seen little "
               "at the start, while the per-window oracle has seen everything." if gp[first_b] > gp[last_b] else
               "it does not shrink along the window, so it is not just the causal router's slow start."))
show_markdown(f"""**8.2** Oracle gap {oh['gap']:+.4f} nats ({oh['method']:.4f} vs {oh['oracle']:.4f}); the oracle's headroom
over the best specialist ({oh['best_specialist']}, {oh['best_specialist_mixed']:.4f}) is {oh['headroom']:.4f} nats (nb 8 Q2).
{diag}{pos_note}""")

# %%
fails = b1["what_fails_first"]
within = b1["what_fails_first_within_set"]
worse_c = [c for c in b1["within_set_contrasts"] if c["verdict"] == "worse" and c["z"] is not None]
clearest = (lambda c: f"{c['contrast']} (z = {c['z']:+.1f})")(max(worse_c, key=lambda c: c["z"])) if worse_c else "none"

show_markdown(f"""**8.3** Ranked by relative change, the first thing to degrade is {fails or 'nothing (no significant change)'};
ranked by the within-set contrasts, which largely cancel base quality, it is {within or 'nothing'} (nb 8 Q3, nb 6 §3–4).
{'The bases differ in quality by more than the whole fusion effect, so the first ranking is partly a ranking of weaker bases. ' if b1['confounded_by_base_quality'] else ''}Logit fusion's verdict against the controls: **{pf['verdict']}** ({pf['fused']:.4f} vs controls {lo:.4f}–{hi:.4f}; {b1['different_vs_controls']['verdict_note']}).
The headline mixed loss {'registers' if b1['headline_catches_it'] else 'does not register'} the break;
{('alone it would have missed ' + ', '.join(b1['missed_by_headline'])) if b1['missed_by_headline'] else 'but it cannot say which component failed'}.
Routing accuracy {'collapses' if b1['different']['mean_routing_accuracy']['trunk of base X'] < 0.5 * b1['shared']['mean_routing_accuracy']['trunk of base X'] else 'changes'}
({b1['shared']['mean_routing_accuracy']['trunk of base X']:.0%} → {b1['different']['mean_routing_accuracy']['trunk of base X']:.0%})
while agreement with the oracle goes {b1['shared']['mean_oracle_agreement']['trunk of base X']:.0%} →
{b1['different']['mean_oracle_agreement']['trunk of base X']:.0%}: {'the router follows the specialist that is actually best on most windows — right for the loss, wrong for the label' if b1['different']['mean_oracle_agreement']['trunk of base X'] >= b1['shared']['mean_oracle_agreement']['trunk of base X'] else 'it loses track of the best specialist too'}.
The clearest single signal (largest z among the within-set contrasts that got worse) is {clearest}.""")

# %%
fr = sweep_frame(sw)
ks = fr.index.values.astype(float)
gains = fr["fused vs best specialist %"]
slope = float(np.polyfit(ks, gains.values, 1)[0]) if len(ks) > 1 else float("nan")
div_trend = float(np.polyfit(ks, fr["divergence %"].values, 1)[0]) if len(ks) > 1 else float("nan")
best_k = int(sw["best_k_by_fused_gain"])
pos = [int(q) for q in gains.index[gains > 0]]
fit = sw["fit"]
resid = fit["kalavai"].get("mean_residual", float("nan"))
pred = np.array(fit["kalavai"]["predicted_gain"][:len(gains)])  # this sweep's points come first
if (pred < 0).all():
    kal_note = ("at these small divergences the line predicts that fusion loses to the best specialist, "
                + ("which we do not see." if gains.min() > 0 else "and at some depths it does."))
else:
    kal_note = "the line predicts a gain at some of these divergences; compare it with the measured gains above."

nz = sw["per_k"].get("none")
none_note = "" if nz is None else (
    f"Freezing nothing (the `none` point: embeddings trained, heads untied) gives divergence {nz['divergence_%']:.2f}% and a "
    f"fused gain of {nz['fused_gain_vs_best_specialist_%']:+.2f}% over its own best specialist; its fused mixed loss is "
    f"{abs(sw['none_minus_best_k_fused_mixed']):.4f} nats {'below' if sw['none_minus_best_k_fused_mixed'] < 0 else 'above'} "
    f"the best K's. " + ("So on this run freezing too little costs nothing in loss: the extra room to adapt outweighs the "
                         "lost shared interface, but the set no longer passes the compatibility check, runs three embedding "
                         "tables and heads instead of one, and its oracle gap is "
                         f"{'wider' if sw['none_minus_smallest_k']['oracle_gap'] > 0 else 'narrower'} than at K = {min(sw['ks'])}."
                         if sw["none_fused_mixed_beats_every_k"] else
                         "So freezing too little does cost here: without a shared trunk and head the fused model falls "
                         "behind the best frozen depth."))
direction = ("harder: the fused gain falls as K grows" if slope < 0 else "easier: the fused gain grows with K")
boundary = (f"fusion beats the best specialist at every K tried ({', '.join(map(str, pos))})" if len(pos) == len(gains)
            else f"fusion beats the best specialist only at K = {', '.join(map(str, pos))}" if pos
            else "fusion never beats the best specialist")
show_markdown(f"""**8.4** Across K = {', '.join(str(int(q)) for q in ks)} (nb 8 Q4) the fused gain over the best specialist is
{', '.join(f'{g:+.2f}%' for g in gains)}: on balance freezing more makes fusion {direction}
(slope {slope:+.2f} points per block). The specialists' divergence {'shrinks' if div_trend < 0 else 'grows'} with K
({', '.join(f'{v:.2f}%' for v in fr['divergence %'])}) as they get fewer parameters to adapt
({', '.join(f'{int(v):,}' for v in fr['trainable params'])}), while their final hidden states become more alike
(CKA {fr['crown CKA'].iloc[0]:.2f} → {fr['crown CKA'].iloc[-1]:.2f}). The best depth is K = {best_k}; {boundary}.
{'Here the adaptation effect dominates: a shared interface is guaranteed by the frozen trunk at any K, so what limits fusion is how different the specialists are allowed to become.' if slope < 0 else 'Here the stronger shared interface dominates.'}
Against KALAVAI's line our points sit {abs(resid):.2f} points {'above' if resid > 0 else 'below'} it on average
{f"(our fit: gain = {fit['slope']:.2f} × divergence {fit['intercept']:+.2f}, R² {fit['r2']:.2f})" if fit['slope'] is not None and fit['r2'] is not None else ''}:
{kal_note}
{none_note}""")

# %%
w_pt = res["weights"]["per-token"]
mis = misrouting(w_pt, spec_tok)
mg = misrouting_margins(w_pt)
cm, cd = confusion_matrix(w_pt), res["cross_domain"]
parts, torn, partial = [], 0, 0
for d in DOMAINS:
    dest = cm.loc[d].drop(f"{d} specialist").idxmax()
    fits = cd.loc[dest, d] < cd.loc["base", d]
    # a near-tie: median margin below 0.1 with the own specialist usually second
    close = mg[d]["median_margin"] < 0.1 and mg[d]["own_is_second"] > 0.5
    torn += close
    partial += fits
    parts.append(f"{d}: {mis[d]['misrouted']:.0%} misrouted, mostly to the {dest.split()[0]} specialist "
                 f"({'which beats' if fits else 'which is worse than'} the base on {d} text); median margin "
                 f"{mg[d]['median_margin']:.2f}, own specialist second on {mg[d]['own_is_second']:.0%}; the chosen "
                 f"specialist was the window's best on {mis[d]['chosen_is_window_best']:.0%} and costs "
                 f"{mis[d]['excess_nats']:+.3f} nats there")
fit_note = (f"In {partial} of {len(DOMAINS)} domains the usual wrong choice still beats the base on that text, so there "
            "the confusion is between specialists that both partly fit." if partial else
            "In no domain does the usual wrong choice beat the base on that text: the specialists the router confuses "
            "are not good partial fits for each other's domain.")
if torn == len(DOMAINS):
    kind = ("Mostly hesitation between two specialists: the misrouted tokens are near-ties, with the own specialist a "
            "close second. The fix is better evidence, not a different target: a longer or per-window context for the "
            "router, more router steps, or a deeper trunk cut; and soft fusion already blunts the cost of a near-tie.")
elif torn == 0:
    kind = ("Mostly confident mistakes: the router commits to the wrong specialist by a clear margin. That calls for "
            "changing what it learns — balanced router data, a softer target temperature, targets that follow the "
            "losses — rather than more of the same evidence.")
else:
    kind = (f"Mixed: {torn} of {len(DOMAINS)} domains err by near-ties (more evidence helps there), the others by clear "
            "margins (fix the training signal there).")
show_markdown(f"""**8.5** {'; '.join(parts)} (nb 8 Q5). {kind} {fit_note} The excess loss says how much each mistake actually costs.""")

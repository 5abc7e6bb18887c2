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
# # Instructor answers · notebooks 4 and 6–9
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/answers/answers_06_08.ipynb)
#
# Answers to the "Questions to answer" of notebooks 4 (soft fusion), 6 (Break 1), 7 (Break 2) and
# 8 (the chapter's five questions). Nothing here is written in advance: every number is measured
# in this run, with the profile and seed the reader used, and the wording is chosen from the
# numbers — including when a claim of Chapter 32 does *not* hold at this scale. References like
# *nb 6 §4* point to the section of the reader's notebook whose cells show the evidence.

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
import numpy as np
import torch

from minigpt.analysis.conclusions import fusion_rule_scale, leak_by_position
from minigpt.analysis.routing import future_leak, router_weights
from minigpt.analysis.table import fusion_comparison
from minigpt.chapter import chapter_table, report
from minigpt.claims.break1 import confound, geometry, headline, prediction, predictions, tokenizer_case, why
from minigpt.claims.break2 import cold_balanced, first_collapse, largest_lean, precondition, what_happened
from minigpt.claims.join import new_domain, old_domains, other_base, tokenizer, vs_monolithic, which_way
from minigpt.claims.sweep import boundary, gain_column, nothing_frozen
from minigpt.claims.table import baselines, mistakes, oracle
from minigpt.config import DOMAINS
from minigpt.notebook import setup, show_markdown
from minigpt.studies.break1 import break1, with_tokenizer_case
from minigpt.studies.add_specialist import add_specialist, with_alternatives
from minigpt.studies.break2 import break2
from minigpt.studies.common import saved_report
from minigpt.studies.freeze_sweep import saved_or_run, sweep_frame
from minigpt.studies.hybrid import hybrid_set, run_hybrid, switch_lag

exp = setup()
k = exp.k
specialists = exp.specialists()
routers = {"last-token": exp.router("last_token"), "per-token": exp.router("per_token")}
# each call below reads back the scores its notebook stored (minigpt/score_cache.py), so this runs in seconds
res = chapter_table(exp)  # notebook 5's table; notebooks 4 and 8 read it too
run_report = report(exp, res, 0.0)  # what table.json holds: the claims of 8.1, 8.2 and 8.5 read it
table, mixed, nll = res["table"], res["table"]["mixed"], res["nll"]
spec_tok = {d: res["scores"].spec_nll(d) for d in DOMAINS}  # (specialists, windows, T) token losses per domain
hyb = run_hybrid(exp)  # notebook 4 §4-5
b1 = with_tokenizer_case(exp, break1(exp, tokenizer_case=False))  # notebooks 6 and 8 (question 3)
b2 = break2(exp)  # notebook 7
sw = saved_or_run(exp)  # notebook 8 (question 4): committed, or run here
join = with_alternatives(exp, add_specialist(exp, alternatives=False))  # notebook 9
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
leak = future_leak(specialists[0], k, routers, x=xc, x_alt=xs, t=t_cut)
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
show_markdown(f"""**6.2** {predictions(b1).text} What fails first, most decisive first: {', '.join(b1['what_fails_first']) or 'nothing'}.
{headline(b1).text} (nb 6 §3.)""")

# %%
show_markdown("**6.3** " + (" ".join(f"{prediction(b1, m).text} {why(b1, m).text}" for m in b1["predictions"]["reversed"])
                              or "No prediction reversed at this scale."))

# %%
ri = b1["router_inputs"]
closest = max(ri, key=lambda f: ri[f]["routing accuracy"])
show_markdown(f"""**6.4** {geometry(b1).text} Of the four router inputs (nb 6 §4) the {closest} routes best
({ri[closest]['routing accuracy']:.0%} against {b1['shared']['mean_routing_accuracy']['trunk of base X']:.0%} for the matched
control). {confound(b1).text}""")

# %%
tm = b1["tokenizer_mismatch"]
L = tm["losses"]
show_markdown(f"""**6.5** Architecture, base and trunk all pass; only the tokenizer fingerprint differs, and
{tm['ids_with_same_string']:.0%} of the ids still decode to the same string (nb 6, Going further). Per byte of legal text
the mismatched specialist scores {L["mismatched specialist, its own tokenizer's text"]['per_byte']:.4f} nats on its own
tokenizer's text and {L["mismatched specialist, shared tokenizer's text (what fusion feeds it)"]['per_byte']:.4f} on the text
fusion feeds it. {tokenizer_case(b1).text}""")

# %% [markdown]
# ## Notebook 7 · Break 2: router collapse

# %%
show_markdown("**7.1** " + " ".join(first_collapse(b2, name).text for name in b2["sets"]))

# %%
show_markdown(f"**7.2** {cold_balanced(b2).text}")

# %%
show_markdown(f"**7.3** {what_happened(b2).text} " + " ".join(precondition(b2, name).text for name in b2["sets"]))

# %%
show_markdown(f"**7.4** {largest_lean(b2).text}")

# %%
show_markdown("""**7.5** Check per-domain routing against a healthy reference, not the mixed loss: flag any domain whose
routing accuracy falls 20 points or more, and any expert that takes half the weight or more on the other domains'
text (the two signs the study uses). The mixed loss is not enough because it averages over domains and moves only by
what the dominant expert loses off its own domain: when that expert is a strong generalist the loss can stay inside
its ordinary seed-to-seed noise, or even improve, while the system stops composing anything (nb 7 §4–5).""")

# %% [markdown]
# ## Notebook 8 · The chapter's five questions

# %%
show_markdown(f"**8.1** {baselines(run_report).text} (nb 8 Q1)")

# %%
show_markdown(f"**8.2** {oracle(run_report).text} (nb 8 Q2)")

# %%
show_markdown(f"""**8.3** {predictions(b1).text} {headline(b1).text} (nb 8 Q3, nb 6 §3.)""")

# %%
fr = sweep_frame(sw)
show_markdown(f"""**8.4** Across K = {', '.join(str(int(q)) for q in fr.index)} (nb 8 Q4) the fused mixed loss is
{', '.join(f'{v:.4f}' for v in fr['fused mixed'])}, the specialists' divergence {', '.join(f'{v:.2f}%' for v in fr['divergence %'])}
and the crowns' CKA {', '.join(f'{v:.2f}' for v in fr['crown CKA'])}. {boundary(sw).text} {gain_column(sw).text}""")

# %%
every = saved_report(exp, "freeze_sweep_every_depth")  # run by `sweep-freeze --every-depth`, or committed
show_markdown(f"**8.4, going further.** {nothing_frozen(every).text}" if every else
              "**8.4, going further.** No sweep over every depth exists for this profile and seed; "
              "`python -m minigpt sweep-freeze --every-depth` adds freezing nothing to the comparison.")

# %%
show_markdown(f"**8.5** {mistakes(run_report).text} (nb 8 Q5)")


# %% [markdown]
# ## Notebook 9 · Adding a specialist

# %%
show_markdown(f"**9.1** {tokenizer(join).text}")

# %%
show_markdown(f"**9.2** {which_way(join).text}")

# %%
show_markdown(f"""**9.3** Nothing of the old system was retrained: the tokenizer, the base and the three crowns keep their
fingerprints (unchanged: {join['fingerprints_unchanged']}); only a new crown and the router's new output were trained.
{old_domains(join, 'grown').text} {new_domain(join).text}""")

# %%
show_markdown(f"**9.4** {vs_monolithic(join).text} Joining is the choice when the data cannot be pooled (another team, "
              "another licence, another site) or when the system must keep serving while a domain is added.")

# %%
show_markdown(f"**9.5** {other_base(join).text}")


# %% [markdown]
# ## Solutions to the exercises of notebooks 6, 7 and 9
#
# One cell per exercise, tagged `solution`; `tools/solved.py` puts each right after its stub in the
# copies of the notebooks that `make test` and the book execute.

# %% exercise="compatible" tags=["solution"]
import torch


def my_compatible(specialists, k):
    """The same tokenizer and base fingerprints everywhere, then every trunk tensor identical."""
    first = specialists[0]
    for m in specialists[1:]:
        for key in ("tokenizer_fingerprint", "base_fingerprint"):
            if m.manifest.get(key) != first.manifest.get(key):
                return False
        ours, theirs = first.trunk_parameters(k), m.trunk_parameters(k)
        if ours.keys() != theirs.keys() or not all(torch.equal(ours[n], theirs[n]) for n in ours):
            return False
    return True


# %% exercise="collapse_signs" tags=["solution"]
import torch

from minigpt.config import DOMAINS


def my_collapse_signs(weights):
    """Per-domain routing accuracy, the expert with the most weight overall, its weight elsewhere."""
    accuracy = {d: float((w.argmax(-1) == DOMAINS.index(d)).double().mean()) for d, w in weights.items()}
    n = next(iter(weights.values())).shape[-1]
    per_domain = {d: w.reshape(-1, n).double().mean(0) for d, w in weights.items()}
    dominant = int(torch.stack(list(per_domain.values())).mean(0).argmax())
    elsewhere = [float(v[dominant]) for d, v in per_domain.items() if d != DOMAINS[dominant]]
    return accuracy, dominant, sum(elsewhere) / len(elsewhere)


# %% exercise="grow_router" tags=["solution"]
import torch

from minigpt.studies.add_specialist.growth import summaries


def my_grow_router(old, new_row, new_bias, shared_h):
    """The old rows and one new row read the same summary; one softmax over all of them."""
    s = summaries(old, shared_h)  # (B, T, C)
    logits = torch.cat([old.proj(s), (s @ new_row + new_bias).unsqueeze(-1)], dim=-1)
    return torch.softmax(logits, dim=-1)


# %%
from minigpt.exercises import check_collapse_signs, check_compatible, check_grow_router

assert check_compatible(my_compatible, exp)
assert check_collapse_signs(my_collapse_signs, exp)
assert check_grow_router(my_grow_router, exp)

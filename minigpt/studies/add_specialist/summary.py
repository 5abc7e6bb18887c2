"""The add-specialist report as text: what ``python -m minigpt add-specialist`` prints."""
from __future__ import annotations

from ...scoring import fused_row


def _iv(iv: dict) -> str:
    return f"{iv['estimate']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}]"


def summarize(rep: dict) -> str:
    late, four = rep["late_domain"], rep["domains"]
    sizes = ", ".join(f"{s} {v['documents']} docs / {v['tokens']:,} tokens ({v['chars_per_token']:.2f} chars/token)"
                      for s, v in rep["late_splits"].items())
    lines = [f"A fourth specialist joins — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']}; "
             f"new domain: {late} ({sizes})",
             "characters per token on eval text (the pinned tokenizer never saw the new domain): "
             + ", ".join(f"{d} {v:.2f}" for d, v in rep["chars_per_token_eval"].items()),
             f"tokenizer, base and the three crowns unchanged: {rep['fingerprints_unchanged']}; "
             f"compat.check accepts the joined set: {rep['compat']['joined']}", ""]
    after = rep["tables"]["after"]
    lines.append(f"  {'row':<36}" + "".join(f"{d:>10}" for d in four) + f"{'mixed':>10}")
    rows = ["base", *(f"{d} specialist" for d in four), *(fused_row("soft", w) for w in ("scratch", "grown", "prototype")),
            "monolithic (four domains)"]
    for r in rows:
        lines.append(f"  {r:<36}" + "".join(f"{after[r][d]:>10.4f}" for d in four) + f"{after[r]['mixed']:>10.4f}")
    lines += ["", f"old domains, fused after minus before (nats, 95% paired; 'nothing lost' needs the interval below "
                  f"{rep['loss_margin_nats']}):"]
    for way, per in rep["old_domains"].items():
        lines.append(f"  {way:<10} " + "; ".join(f"{d} {_iv(v)} {v['verdict']}" for d, v in per.items()))
    lines += ["", f"{late} text, grown system minus each reference (nats; negative = better):"]
    for way, per in rep["new_domain"].items():
        lines.append(f"  {way:<10} " + "; ".join(f"{k} {_iv(v)}" for k, v in per.items()))
    lines += ["", "routing accuracy: " + "; ".join(f"{w}: " + "/".join(f"{a:.0%}" for a in acc.values())
                                                  for w, acc in rep["routing_accuracy"].items())]
    lines += ["", f"a {late} crown from another base: {rep['compat']['other_base_refusal']}",
              "  forced in, old domains: " + "; ".join(f"{d} {_iv(v)}" for d, v in rep["other_base"]["old_domains"].items())]
    lines += ["", "taking one crown away (fused without it minus with it, per domain):"]
    for name, per in rep["removal"].items():
        lines.append(f"  without {name:<8} " + "; ".join(f"{d} {_iv(v)}" for d, v in per.items()))
    c = rep["cost"]
    lines += ["", "cost: " + "; ".join(f"{w}: crown {v['crown']['steps']} steps, router {v['router_steps']} steps"
                                      for w, v in c.items())]
    return "\n".join(lines)

"""Break 1's report as text: what ``python -m minigpt break1`` prints."""
from __future__ import annotations

from ...scoring import ORACLE, ORACLE_PER_TOKEN, SHARED_TRUNK, SPECIALIST_ROWS, fused_row
from ..tokenizer_mismatch import summary_lines as tokenizer_summary_lines


def _iv(iv: dict, digits: int = 4) -> str:
    return f"{iv['estimate']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}]"


def _header_lines(rep: dict) -> list[str]:
    c, conf = rep["compat"], rep["confound"]
    bases = ", ".join(f"seed {s} {ctl['base_mixed']:.4f}" for s, ctl in rep["controls"].items())
    return [f"Break 1 — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']}, "
            f"base seeds {rep['base_seeds']} (code, medical, legal); base X = seed {rep['base_x_seed']}",
            "", "compat.check on the different-base specialists:", f"  refused: {c['refusal']}",
            f"  forced (allow_mismatch=True): mismatches = {c['forced_report']['mismatches']}", "",
            f"bases alone (mixed loss): {bases}; spread {conf['base_quality_spread_nats']:.4f} nats against the "
            f"headline's change {conf['effect_nats']:+.4f} nats"
            + ("  (base quality is as large as the effect: read the matched metrics)"
               if conf["confounded_by_base_quality"] else "")]


def _table_lines(rep: dict) -> list[str]:
    s, d = rep["shared"]["mixed"], rep["different"]["mixed"]
    rows = ["base", *SPECIALIST_ROWS, "weight average", "uniform mix",
            *(fused_row(rule, SHARED_TRUNK) for rule in ("soft", "probs", "hidden", "hard")), ORACLE, ORACLE_PER_TOKEN]
    w = max(map(len, rows)) + 2
    lines = ["", f"{'mixed loss (nats/token)':<{w + 2}}{'matched control':>16}{'different':>12}"]
    return lines + [f"  {row:<{w}}{s[row]:>16.4f}{d[row]:>12.4f}" for row in rows]


def _matched_lines(rep: dict) -> list[str]:
    lines = ["", "the chapter's predictions, each set measured against itself, then the different set minus its "
                 "matched control and minus the mean of the controls (95% paired intervals):"]
    for r in rep["matched"]:
        lines.append(f"  {r['metric']:<42} different {r['different']:+.4f}  matched {r['matched_control']:+.4f}  "
                     f"Δ {_iv(r['vs_matched'])}  Δ vs mean {_iv(r['vs_mean_of_controls'])}  -> {r['outcome']}")
    h = rep["headline"]
    lines += [f"headline (fused mixed loss, different minus matched control): {_iv(h)} nats; "
              f"catches the break: {h['catches_it']}",
              f"what fails first: {', '.join(rep['what_fails_first']) or 'no prediction held'}"]
    if rep["missed_by_headline"]:
        lines.append(f"missed by the headline: {', '.join(rep['missed_by_headline'])}")
    return lines


def _input_lines(rep: dict) -> list[str]:
    lines = ["", "router inputs without a shared trunk (different-base set):"]
    for f, v in rep["router_inputs"].items():
        lines.append(f"  {f:<30} routing {v['routing accuracy']:.1%}  fused {v['fused mixed loss']:.4f}  "
                     f"oracle gap {v['oracle gap']:+.4f}")
    lines += ["", "representations (mean over pairs): linear CKA / cosine of raw coordinates, token by token"]
    for name, blk in rep["representations"].items():
        lines.append(f"  {name:<44} CKA {blk['mean_cka']:.3f}   cosine {blk['mean_paired_cosine']:+.3f}")
    return lines


def summarize(rep: dict) -> str:
    """Break 1's report as text."""
    lines = [*_header_lines(rep), *_table_lines(rep), *_matched_lines(rep), *_input_lines(rep)]
    if rep.get("tokenizer_mismatch"):
        lines += ["", *tokenizer_summary_lines(rep["tokenizer_mismatch"])]
    return "\n".join(lines)

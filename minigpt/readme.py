"""The README's measured numbers, generated from the committed reference results.

    python -m minigpt.readme             # rewrite the marked blocks of README.md and docs/design.md
    python -m minigpt.readme --check     # exit 1 naming every block that disagrees (tests/test_readme_sync.py)
    python -m minigpt.readme --collect   # copy results/<profile>/ into results/reference/ first (make reference)

A block is the text between ``<!-- reference:NAME -->`` and ``<!-- /reference:NAME -->``; only
blocks are rewritten, prose around them is left alone. Every number in a block is read from a file
under ``results/reference/`` (the ``cpu`` results of seeds 0-2 and the machine they came from).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Callable

import torch

from .analysis.conclusions import headline_conclusion
from .claims import break1 as claims_break1
from .claims import break2 as claims_break2
from .claims import join as claims_join
from .claims import sweep as claims_sweep
from .config import DOMAINS, REPO_ROOT, results_dir
from .evaluate import WHOLE_WINDOW_MARK
from .rows import from_json as rows_from_json
from .intervals import format_interval
from .scoring import HEADLINE
from .studies.document_memory import COLD, MEMORY

REFERENCE = REPO_ROOT / "results" / "reference"
TARGETS = (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "design.md")
BLOCK = re.compile(r"(<!-- reference:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /reference:(?P=name) -->)", re.S)
SEED_FILES = ("table.json", "cross_domain.png", "add_specialist.json")  # every seed's; the other studies: seed 0
STUDY_FILES = ("base_schedule.json", "decisions.json", "break1.json", "break2.json", "freeze_sweep.json", "hybrid.json",
               "freeze_sweep_every_depth.json", "document_memory.json", "add_specialist.json")


def load(ref: Path, *parts: str) -> dict:
    path = ref.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"reference file {path} is missing; run the experiments and `make reference`")
    return json.loads(path.read_text())


def seed_dirs(ref: Path, profile: str = "cpu") -> list[Path]:
    return sorted((ref / profile).glob("seed-*"), key=lambda p: int(p.name.split("-")[1]))


# -- the blocks ------------------------------------------------------------------------------------
def render_machine(ref: Path) -> str:
    m = load(ref, "machine.json")
    return (f"Reference machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
            f"Python {m['python']}, torch {m['torch']}, commit `{m['commit']}`, {m['date']}.\n")


def render_table(ref: Path) -> str:
    rep = load(ref, "cpu", "seed-0", "table.json")
    cols = [*DOMAINS, "mixed", *(c for c in rep["columns"] if c.startswith("Δ%"))]
    cfg = rep["config"]
    caption = (f"`{rep['profile']}` profile, seed {rep['seed']}, K = {rep['freeze_k']}, {cfg['eval_chunks']} eval "
               f"windows per domain of {cfg['model']['block_size']} tokens:\n\n")
    head = "| row | " + " | ".join(cols) + " | params served | inference × one model |\n"
    lines = [caption, head, "|---" * (len(cols) + 3) + "|\n"]
    for row in rep["rows"]:
        vals = [f"{rep['table'][row][c]:+.2f}" if c.startswith("Δ%") else f"{rep['table'][row][c]:.3f}" for c in cols]
        cost = rep["costs"][row]
        name = row + WHOLE_WINDOW_MARK if row in rep["sees_whole_window"] else row
        name = f"**{name}**" if row == HEADLINE else name
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {cost['total params']:,} | {cost['inference vs one model']:.2f} |\n")
    return "".join(lines)


def render_headline(ref: Path) -> str:
    seeds = load(ref, "cpu", "seeds.json")
    s, n = seeds["summary"], len(seeds["seeds"])
    mean, std = s["mean"], s["std"]
    one = lambda k, unit: f"{mean[k]:+.2f} ± {std[k]:.2f}{unit}"  # noqa: E731
    ivs = seeds["intervals"]["seed-0"]
    return (f"Over {n} seeds ({', '.join(map(str, seeds['seeds']))}; mean ± sd), the fused model's mixed loss is "
            f"{one('gain vs best specialist %', ' %')} better than the best single specialist, "
            f"{one('gain vs monolithic %', ' %')} against the monolithic model and "
            f"{one('gain vs uniform mix %', ' %')} against the uniform mix; it stays "
            f"{mean['oracle gap nats']:.4f} ± {std['oracle gap nats']:.4f} nats behind the per-window oracle. "
            f"On seed 0, read off paired 95 % intervals: {headline_conclusion(ivs)}\n")


def render_seeds(ref: Path) -> str:
    seeds = load(ref, "cpu", "seeds.json")
    names = ("vs best specialist", "vs monolithic", "vs uniform mix", "oracle gap")
    lines = ["| seed | " + " | ".join(names) + " | routing code / medical / legal |\n", "|---" * 6 + "|\n"]
    for seed in seeds["seeds"]:
        ivs = {iv["comparison"]: iv for iv in seeds["intervals"][f"seed-{seed}"]}
        row = seeds["summary"][f"seed {seed}"]
        acc = " / ".join(f"{row[f'routing {d} %']:.1f}" for d in DOMAINS)
        lines.append(f"| {seed} | " + " | ".join(format_interval(ivs[c]) for c in names) + f" | {acc} % |\n")
    mean, std = seeds["summary"]["mean"], seeds["summary"]["std"]
    keys = ("gain vs best specialist %", "gain vs monolithic %", "gain vs uniform mix %")
    cells = [f"{mean[k]:+.2f} ± {std[k]:.2f} %" for k in keys] + [f"{mean['oracle gap nats']:.4f} ± {std['oracle gap nats']:.4f} nats"]
    acc = " / ".join(f"{mean[f'routing {d} %']:.1f}" for d in DOMAINS)
    lines.append("| mean ± sd | " + " | ".join(cells) + f" | {acc} % |\n")
    return "".join(lines)


def _plain(text: str) -> str:
    return text.replace("**", "").replace("*", "")


def _base_line(bs: dict) -> str:
    by = {c["warmup"]: c for c in bs["candidates"]}
    was, now = by[min(by)], by.get(bs["chosen_warmup"])
    if now is None:
        return (f"- **The base** (`python -m minigpt base-schedule`, dev): no warmup tried made the "
                f"{len(bs['seeds'])} seeds agree within the criterion; the profile keeps {bs['chosen_warmup']} steps.")
    return (f"- **The base** (`python -m minigpt base-schedule`, dev): with a {was['warmup']}-step warmup the "
            f"{len(bs['seeds'])} seeds' base eval loss spreads by {was['eval_sd']:.3f} nats (sd; dev {was['dev_sd']:.3f}); "
            f"with {now['warmup']} steps, chosen on dev, by {now['eval_sd']:.3f} (dev {now['dev_sd']:.3f}), at "
            f"{now['eval_mean']:.3f} nats against {was['eval_mean']:.3f}, for the same {now['steps']} steps.")


def _break1_line(b1: dict) -> str:
    return (f"- **Break 1** (`python -m minigpt break1`), against the shared-base control on the same base: "
            f"{_plain(claims_break1.predictions(b1).text)} {_plain(claims_break1.headline(b1).text)}")


def _break2_line(b2: dict) -> str:
    why = " ".join(_plain(claims_break2.precondition(b2, name).text) for name in b2["sets"])
    return f"- **Break 2** (`python -m minigpt break2`): {_plain(claims_break2.what_happened(b2).text)} {why}"


def _sweep_line(sw: dict) -> str:
    return (f"- **Freeze sweep** (`python -m minigpt sweep-freeze`, eval, reported only): "
            f"{_plain(claims_sweep.boundary(sw).text)} {_plain(claims_sweep.gain_column(sw).text)}")


def _memory_line(mem: dict) -> str:
    cold, warm = mem["rows"][COLD], mem["rows"][MEMORY]
    return (f"- **Document memory** (`python -m minigpt document-memory`): oracle gap {cold['oracle_gap_nats']:.4f} "
            f"nats cold, {warm['oracle_gap_nats']:.4f} with the router's state carried from the text before each window.")


def _join_line(add: dict) -> str:
    return (f"- **Adding a specialist** (`python -m minigpt add-specialist`): a fourth domain ({add['late_domain']}) "
            f"joins with its own crown on the frozen trunk. {_plain(claims_join.old_domains(add, 'grown').text)} "
            f"{_plain(claims_join.new_domain(add).text)} {_plain(claims_join.vs_monolithic(add).text)}")


STUDY_LINES = {"base_schedule.json": _base_line, "break1.json": _break1_line, "break2.json": _break2_line,
               "freeze_sweep.json": _sweep_line, "document_memory.json": _memory_line,
               "add_specialist.json": _join_line}


def render_studies(ref: Path) -> str:
    """One line per study in the reference files; the studies not (yet) among them are named."""
    folder = ref / "cpu" / "seed-0"
    lines = [fn(load(ref, "cpu", "seed-0", name)) for name, fn in STUDY_LINES.items() if (folder / name).exists()]
    missing = [name.removesuffix(".json") for name in STUDY_LINES if not (folder / name).exists()]
    if missing:
        lines.append(f"- Not in the reference results of this version yet: {', '.join(missing)} "
                     "(run them with the commands above; the notebooks show them).")
    return "\n".join(lines) + "\n"


def render_decisions(ref: Path) -> str:
    dec = load(ref, "cpu", "seed-0", "decisions.json")
    lines = [f"Made by `python -m minigpt decisions --profile cpu` (seed {dec['seed']}, "
             f"{dec['dev_windows_per_domain']} dev windows per domain; criterion: {dec['choices'][0]['criterion']}).\n\n",
             "| choice | candidates: dev mixed loss (Δ vs current, 95 % interval) | was | chosen |\n", "|---|---|---|---|\n"]
    for c in dec["choices"]:
        cands = "; ".join(f"{r['value']}: {r['dev_mixed']:.4f} ({r['vs_current_nats']['estimate']:+.4f} "
                          f"[{r['vs_current_nats']['low']:+.4f}, {r['vs_current_nats']['high']:+.4f}])" for r in c["candidates"])
        lines.append(f"| {c['choice']} | {cands} | {c['current']} | {c['chosen']}{' (changed)' if c['changed'] else ''} |\n")
    values = lambda c: [r["value"] for r in c["candidates"]]  # noqa: E731
    edge = [c["choice"] for c in dec["choices"]
            if c["changed"] and not isinstance(c["chosen"], bool) and c["chosen"] in (min(values(c)), max(values(c)))]
    changed = [c["choice"] for c in dec["choices"] if c["changed"]]
    notes = []
    if edge:
        notes.append(f"At the edge of its grid: {', '.join(edge)}; a wider grid may move it further.")
    if len(changed) > 1:
        notes.append(f"The changed settings ({', '.join(changed)}) were each chosen against the other settings' "
                     "old values, not jointly; the eval results are the first run of them together.")
    return "".join(lines) + ("\n" + " ".join(notes) + "\n" if notes else "")


def render_reproducibility(ref: Path) -> str:
    r = load(ref, "reproducibility.json")
    return (f"Measured at `{r['profile']}`, {r['threads'][0]} torch thread(s) against {r['threads'][1]}: rows that "
            f"average differ by at most "
            f"{r['soft_rows_max_abs_nats']:.1e} nats, rows that take an argmax by up to "
            f"{r['hard_rows_max_abs_nats']:.1e} nats.\n")


def render_runtimes(ref: Path) -> str:
    """Measured wall times at ``cpu``, before and after (runtimes.json: one row per step)."""
    rt = load(ref, "runtimes.json")
    minutes = lambda v: f"{v / 60:.1f}" if v is not None else "not measured"  # noqa: E731
    lines = [f"{rt['how']}\n\n", f"| step | before (`{rt['before']}`), min | after (`{rt['after']}`), min | how |\n",
             "|---|---|---|---|\n"]
    for r in rt["rows"]:
        lines.append(f"| {r['step']} | {minutes(r.get('before_s'))} | {minutes(r.get('after_s'))} | {r['note']} |\n")
    return "".join(lines)


def render_pool(ref: Path) -> str:
    """Routers trained on the pool against the same routers trained on fresh windows (router_pool.json)."""
    c = load(ref, "router_pool.json")
    t, g = c["table"], c["break2_grid"]
    same = "are identical" if t["rows_without_router_identical"] else "DIFFER (they should not: check the run)"
    return (f"Measured when the pool was introduced (commit `0ca7e7f`, on the base schedule of that time). "
            f"Seed {c['seed']} at `{c['profile']}`, same specialists (the rows without a router {same}): the "
            f"chapter's fused rows moved by at most "
            f"{t['max_abs_change_nats']:.4f} nats ({t['worst_row']}), routing accuracy by at most "
            f"{t['max_abs_routing_change_pp']:.1f} points; Break 2's {g['routers']} grid routers by at most "
            f"{g['max_abs_change_nats']:.4f} nats in mixed loss (median {g['median_abs_change_nats']:.4f}), and "
            f"{g['same_silent_collapse_flags']} of {g['routers']} settings got the same silent-collapse flag. For "
            f"scale: the oracle gap varies by {c['noise_nats']:.4f} nats (sd) across seeds 0-2.\n")


# the files a reader opens for the chapter, in reading order, and what each holds
READING = (("model.py", "the GPT, cut into a trunk and a crown"),
           ("fusion.py", "the fusion rules and `FusedModel`: trunk once, every crown, router weights, fusion, loss"),
           ("router.py", "the last-token and the causal per-token router, targets, router training"),
           ("scoring.py", "one scoring pass: every row of a table on the same held-out windows"),
           ("chapter.py", "the chapter's table from cached models (`chapter_table`, `run`)"))


def render_reading(ref: Path) -> str:
    """The chapter's reading path with each file's length, counted now (the block follows the code)."""
    rows = [f"| `minigpt/{name}` | {len((REPO_ROOT / 'minigpt' / name).read_text().splitlines())} | {what} |\n"
            for name, what in READING]
    total = sum(len((REPO_ROOT / "minigpt" / n).read_text().splitlines()) for n, _ in READING)
    return ("| file | lines | what |\n|---|---|---|\n" + "".join(rows)
            + f"\n{total} lines in all; `FusedModel.forward` is the chapter's Steps 3 and 4 in five lines.\n")


RENDER: dict[str, Callable[[Path], str]] = {
    "machine": render_machine, "table": render_table, "headline": render_headline, "seeds": render_seeds,
    "studies": render_studies, "decisions": render_decisions,
    "reproducibility": render_reproducibility, "runtimes": render_runtimes, "pool": render_pool,
    "reading": render_reading,
}


# -- sync ------------------------------------------------------------------------------------------
def rewrite(text: str, ref: Path = REFERENCE) -> tuple[str, list[str]]:
    """``text`` with every block re-rendered, and the names of the blocks that changed."""
    changed = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDER:
            raise ValueError(f"unknown reference block {name!r}; known: {', '.join(RENDER)}")
        body = RENDER[name](ref)
        if body != m.group("body"):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(sub, text), changed


def collect(src: Path, ref: Path = REFERENCE, profile: str = "cpu") -> None:
    """Copy the reference files of ``src/<profile>`` (every seed's table, seed 0's studies, seeds.json)."""
    for seed_dir in sorted((src / profile).glob("seed-*")):
        names = SEED_FILES + (STUDY_FILES if seed_dir.name == "seed-0" else ())
        for name in names:
            if (seed_dir / name).exists():
                (ref / profile / seed_dir.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(seed_dir / name, ref / profile / seed_dir.name / name)
    shutil.copy2(src / profile / "seeds.json", ref / profile / "seeds.json")
    threads = json.loads((src / profile / "seed-0" / "table.json").read_text())["torch_threads"]
    (ref / "machine.json").write_text(json.dumps(machine(threads), indent=2) + "\n")


def machine(torch_threads: int) -> dict:
    """The machine and software the reference results come from (collected on that machine; the
    thread count is the one the runs recorded)."""
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else platform.processor()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch_threads,
            "python": platform.python_version(), "torch": torch.__version__,
            "commit": commit.stdout.strip() or "unknown", "date": date.today().isoformat()}


def thread_spread(one: Path, two: Path) -> dict:
    """Largest difference between two ``table.json`` of the same run trained with different thread
    counts: over the rows that average (soft) and the rows that take an argmax (hard, dispatch)."""
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    info = rows_from_json(a["row_info"])
    argmax = lambda row: info[row].kind == "dispatch" or info[row].rule == "hard"  # noqa: E731
    diffs = {row: max(abs(a["table"][row][c] - b["table"][row][c]) for c in (*DOMAINS, "mixed")) for row in a["rows"]}
    return {"profile": a["profile"], "threads": [a["torch_threads"], b["torch_threads"]],
            "soft_rows_max_abs_nats": max(v for r, v in diffs.items() if not argmax(r)),
            "hard_rows_max_abs_nats": max(v for r, v in diffs.items() if argmax(r))}


BOOK_LOG = {"notebook": re.compile(r"^book: executed (?P<name>\S+)\.ipynb in (?P<s>\d+) s"),
            "prefetch": re.compile(r"^book: prefetch \(\d+ at a time\) in (?P<s>\d+) s"),
            "figures": re.compile(r"^freeze-depth figures for profile \w+ in .* \((?P<s>[\d.]+) s\)"),
            "total": re.compile(r"^book: profile (?P<profile>\w+), (?P<pages>\d+) pages, (?P<s>\d+) s")}


def book_runtimes(log: Path) -> dict:
    """A ``make book`` log (jupyter_book/build.sh), finished or not -> the wall times it printed, in
    seconds: the freeze-depth figures (the sweep), each notebook executed, and the whole build
    (None when the build did not finish)."""
    out = {"profile": None, "prefetch_s": None, "freeze_figures_s": None, "total_s": None, "notebooks": {}}
    for line in log.read_text().splitlines():
        if m := BOOK_LOG["notebook"].match(line):
            out["notebooks"][m["name"]] = int(m["s"])
        elif m := BOOK_LOG["prefetch"].match(line):
            out["prefetch_s"] = int(m["s"])
        elif m := BOOK_LOG["figures"].match(line):
            out["freeze_figures_s"] = float(m["s"])
        elif m := BOOK_LOG["total"].match(line):
            out.update(profile=m["profile"], pages=int(m["pages"]), total_s=int(m["s"]))
    return out


def add_runtime(rt: dict, step: str, when: str, seconds: float | None, note: str) -> dict:
    """``rt`` (runtimes.json) with ``step``'s ``when`` ("before" or "after") time set, in seconds."""
    row = next((r for r in rt["rows"] if r["step"] == step), None)
    if row is None:
        row = {"step": step, "before_s": None, "after_s": None, "note": note}
        rt["rows"].append(row)
    row[f"{when}_s"], row["note"] = seconds, note or row["note"]
    return rt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a block disagrees with the reference files")
    parser.add_argument("--collect", action="store_true", help="copy results/ into results/reference/ first")
    parser.add_argument("--thread-spread", nargs=2, type=Path, metavar=("ONE", "TWO"),
                        help="two table.json of one run at different thread counts -> reproducibility.json")
    parser.add_argument("--book-log", nargs=2, metavar=("WHEN", "LOG"),
                        help="a `make book` log -> its steps' times in runtimes.json as WHEN (before / after)")
    parser.add_argument("--runtime", nargs=4, metavar=("STEP", "WHEN", "SECONDS", "NOTE"),
                        help="one measured wall time (whole process) -> runtimes.json")
    parser.add_argument("--render", metavar="BLOCK", choices=sorted(RENDER),
                        help="print one block's text (the book's intro page includes the runtimes this way)")
    args = parser.parse_args(argv)
    if args.render:
        print(RENDER[args.render](REFERENCE), end="")
        return 0
    if args.book_log or args.runtime:
        path = REFERENCE / "runtimes.json"
        rt = json.loads(path.read_text())
        if args.book_log:
            when, log = args.book_log
            run = book_runtimes(Path(log))
            add_runtime(rt, "freeze sweep (the book's freeze-depth figures), empty cache", when,
                        seconds=run["freeze_figures_s"], note="book build log")
            for name, sec in run["notebooks"].items():
                add_runtime(rt, f"notebook {name}", when, seconds=sec, note="book build log")
        if args.runtime:
            step, when, sec, note = args.runtime
            add_runtime(rt, step, when, seconds=None if sec == "-" else float(sec), note=note)
        path.write_text(json.dumps(rt, indent=2) + "\n")
    if args.collect:
        collect(results_dir())
    if args.thread_spread:
        (REFERENCE / "reproducibility.json").write_text(json.dumps(thread_spread(*args.thread_spread), indent=2) + "\n")
    stale = []
    for path in TARGETS:
        new, changed = rewrite(path.read_text())
        stale += [f"{path.name}: {name}" for name in changed]
        if changed and not args.check:
            path.write_text(new)
    if args.check and stale:
        print(f"out of date with results/reference/: {', '.join(stale)}; run `make readme`", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale else "README.md and docs/design.md match results/reference/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

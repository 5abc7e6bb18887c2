"""README.md and docs/design.md quote measured numbers only through blocks generated from the
committed reference results (minigpt.readme); these tests catch a number edited by hand or left
behind when the results change."""
import re

import pytest

from minigpt.readme import (BLOCK, REFERENCE, RENDER, TARGETS, add_runtime, book_runtimes, rewrite)


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_every_block_matches_the_reference_files(path):
    text = path.read_text()
    _, changed = rewrite(text)
    assert not changed, f"{path.name}: blocks {changed} disagree with {REFERENCE}; run `make readme`"


def test_every_block_is_used_and_filled():
    names = [m.group("name") for p in TARGETS for m in BLOCK.finditer(p.read_text())]
    assert sorted(names) == sorted(RENDER), "each generated block appears exactly once"
    for p in TARGETS:
        for m in BLOCK.finditer(p.read_text()):
            assert re.search(r"\d", m.group("body")), f"{p.name}: block {m.group('name')} holds no numbers"


def _edit_one_digit(text: str, block: str) -> str:
    m = next(m for m in BLOCK.finditer(text) if m.group("name") == block)
    body = m.group("body")
    i = re.search(r"\d", body).start()
    edited = body[:i] + str((int(body[i]) + 1) % 10) + body[i + 1:]
    return text[:m.start("body")] + edited + text[m.end("body"):]


@pytest.mark.parametrize("block", ["table", "seeds", "headline", "studies"])
def test_a_one_digit_edit_is_caught(block):
    readme = TARGETS[0].read_text()
    _, changed = rewrite(_edit_one_digit(readme, block))
    assert changed == [block]


# measured-looking numbers: decimals, percentages, durations (versions and configs live in code spans)
MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%|(?<![\w.])\d+\.\d+(?![\w.])|\b\d+\s?(?:min|s|ms)\b")


def _prose(text: str) -> str:
    text = BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    text = re.sub(r"`[^`]*`", "", text)  # inline code
    return re.sub(r"\]\([^)]*\)", "]", text)  # link targets


PROTOCOL = {"95 %"}  # the interval's level: a choice of method, not a measurement


def test_no_measured_number_outside_the_generated_blocks():
    found = [n for n in MEASURED.findall(_prose(TARGETS[0].read_text())) if n not in PROTOCOL]
    assert not found, f"README prose types measured-looking numbers {found}; move them into a reference block"


def test_book_log_is_read_finished_or_not_and_rows_are_merged(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("freeze-depth figures for profile cpu in /x/_generated (123.4 s)\n"
                   "book: executed 01_shared_trunk.ipynb in 61 s\n[IPKernelApp] WARNING | chatter\n"
                   "book: executed 07_break2_router_collapse.ipynb in 42 s\n")
    run = book_runtimes(log)
    assert run["total_s"] is None and run["freeze_figures_s"] == 123.4  # killed before the end: what it printed
    log.write_text(log.read_text() + "book: profile cpu, 13 pages, 900 s, log /x/build-cpu.log\n")
    run = book_runtimes(log)
    assert run["notebooks"] == {"01_shared_trunk": 61, "07_break2_router_collapse": 42}
    assert (run["total_s"], run["pages"], run["profile"]) == (900, 13, "cpu")
    rt = {"rows": []}
    add_runtime(rt, "Break 2", "before", seconds=600.0, note="one run")
    add_runtime(rt, "Break 2", "after", seconds=60.0, note="")
    assert rt["rows"] == [{"step": "Break 2", "before_s": 600.0, "after_s": 60.0, "note": "one run"}]

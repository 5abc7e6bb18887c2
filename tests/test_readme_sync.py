"""README.md and docs/design.md quote measured numbers only through blocks generated from the
committed reference results (minigpt.readme); these tests catch a number edited by hand or left
behind when the results change."""
import re

import pytest

from minigpt.readme import BLOCK, REFERENCE, RENDER, TARGETS, rewrite


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

"""Each chapter's .ipynb holds exactly the cells of its py:percent source, without outputs.

The ``.py`` file is the source of truth; after editing it, regenerate the notebook with
``jupytext --to ipynb chapters/NN_name.py`` (pairing is configured in ``jupytext.toml``).
"""
from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
SKIP_DIRS = {".ipynb_checkpoints", "__pycache__", "_build"}


def _files(ext: str) -> list[Path]:
    return sorted(p for p in CHAPTERS.rglob(f"*{ext}") if not SKIP_DIRS & set(p.relative_to(CHAPTERS).parts))


SOURCES = _files(".py")
NOTEBOOKS = _files(".ipynb")


def cell_differences(py_text: str, ipynb_text: str) -> list[str]:
    """Human-readable differences in (cell type, source) between a py:percent text and an .ipynb text."""
    a = [(c.cell_type, c.source) for c in jupytext.reads(py_text, fmt="py:percent").cells]
    b = [(c.cell_type, c.source) for c in jupytext.reads(ipynb_text, fmt="ipynb").cells]
    out = [f"cell {i}: {x[0]} in .py, {y[0]} in .ipynb; source starts {x[1][:60]!r} vs {y[1][:60]!r}"
           for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(a) != len(b):
        out.append(f"{len(a)} cells in .py, {len(b)} in .ipynb")
    return out


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_chapters_exist():
    assert SOURCES, f"no py:percent chapter sources under {_rel(CHAPTERS)}"


@pytest.mark.parametrize("src", SOURCES, ids=_rel)
def test_ipynb_matches_py(src: Path):
    nb = src.with_suffix(".ipynb")
    assert nb.exists(), f"{_rel(nb)} is missing; create it with: jupytext --to ipynb {_rel(src)}"
    diffs = cell_differences(src.read_text(encoding="utf-8"), nb.read_text(encoding="utf-8"))
    assert not diffs, (f"{_rel(nb)} is out of sync with {_rel(src)}; regenerate it with "
                       f"`jupytext --to ipynb {_rel(src)}`:\n  " + "\n  ".join(diffs[:10]))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=_rel)
def test_ipynb_has_source_and_no_outputs(nb: Path):
    assert nb.with_suffix(".py").exists(), f"{_rel(nb)} has no py:percent source next to it"
    notebook = nbformat.read(nb, as_version=4)
    dirty = [i for i, c in enumerate(notebook.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{_rel(nb)} was committed with outputs in cells {dirty}; regenerate it from the .py"


def test_cell_differences_detects_edits():
    """The comparison itself must catch a changed cell, a changed cell type and a missing cell."""
    py = "# %% [markdown]\n# # Title\n\n# %%\nx = 1\n\n# %%\nprint(x)\n"
    nb = jupytext.reads(py, fmt="py:percent")
    same = jupytext.writes(nb, fmt="ipynb")
    assert cell_differences(py, same) == []

    edited = jupytext.reads(py, fmt="py:percent")
    edited.cells[1].source = "x = 2"
    assert cell_differences(py, jupytext.writes(edited, fmt="ipynb"))

    retyped = jupytext.reads(py, fmt="py:percent")
    retyped.cells[2] = nbformat.v4.new_markdown_cell(retyped.cells[2].source)
    assert cell_differences(py, jupytext.writes(retyped, fmt="ipynb"))

    shorter = jupytext.reads(py, fmt="py:percent")
    shorter.cells.pop()
    assert cell_differences(py, jupytext.writes(shorter, fmt="ipynb"))

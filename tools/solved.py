"""Copies of the chapter notebooks with the answer key's solutions in place: each exercise's stub
is followed by its solution, so the check after it passes.

    python tools/solved.py build/solved/chapters          # what `make test` executes with nbmake
    python tools/solved.py --book jupyter_book/chapters   # the book's pages: each solution collapsed

An exercise is a code cell tagged ``exercise`` whose metadata names it (``exercise="fuse_logits"``),
followed by a cell tagged ``check`` that runs ``passed = check_<name>(my_<name>, exp)``. Its solution
is the one cell of an answer key (chapters/answers/*) tagged ``solution`` with the same name. In each
copy the solution goes right after the stub (tagged ``hide-input`` with ``--book``: Jupyter Book 1
shows it collapsed), and after the check a cell tagged ``remove-cell`` asserts ``passed``, so a
solution that fails its check fails the run. Every other notebook, the answer keys included, is
copied unchanged. A maintenance tool for this checkout: it needs nbformat only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
ANSWERS = CHAPTERS / "answers"
EXERCISE, CHECK, SOLUTION = "exercise", "check", "solution"


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_name(cell) -> str | None:
    """The exercise a cell belongs to (its ``exercise`` metadata), for cells tagged exercise or solution."""
    return cell.get("metadata", {}).get("exercise") if {EXERCISE, SOLUTION} & set(tags(cell)) else None


def check_source(name: str) -> str:
    """What the check cell right after exercise ``name`` runs (tests/test_exercises.py holds every notebook to it)."""
    return f"passed = check_{name}(my_{name}, exp)"


def solutions(answer_keys: list[Path]) -> dict[str, str]:
    """{exercise name: solution source} from the cells tagged ``solution`` of ``answer_keys``."""
    found: dict[str, str] = {}
    for path in answer_keys:
        for cell in nbformat.read(path, as_version=4).cells:
            name = exercise_name(cell) if SOLUTION in tags(cell) else None
            if name is None:
                continue
            if name in found:
                raise ValueError(f"two solutions of exercise {name!r} (one in {path.name}); keep one")
            found[name] = cell.source
    return found


def solve(nb, sols: dict[str, str], *, book: bool = False):
    """``nb`` with each exercise's solution after its stub and an assertion after its check (in place)."""
    cells, i = nb.cells, 0
    while i < len(cells):
        name = exercise_name(cells[i]) if EXERCISE in tags(cells[i]) else None
        if name is None:
            i += 1
            continue
        if name not in sols:
            raise ValueError(f"exercise {name!r} has no cell tagged solution with exercise={name!r} in the answer keys")
        if i + 1 >= len(cells) or CHECK not in tags(cells[i + 1]):
            raise ValueError(f"exercise {name!r} must be followed by its check cell: {check_source(name)}")
        solution = nbformat.v4.new_code_cell(sols[name], metadata={
            "tags": [SOLUTION, "hide-input"] if book else [SOLUTION], "exercise": name})
        verdict = nbformat.v4.new_code_cell(
            f'assert passed, "the answer key\'s solution of {name} fails its check (the line above says why)"',
            metadata={"tags": ["remove-cell"]})
        cells[i + 1:i + 2] = [solution, cells[i + 1], verdict]
        i += 4
    return nb


def write_solved(out: Path, *, book: bool = False) -> list[Path]:
    """Every notebook of chapters/ (answers/ included) into ``out``, solved; returns the written paths.
    Notebooks already in ``out`` are removed first, so a renamed chapter leaves no stale copy."""
    sols = solutions(sorted(ANSWERS.glob("*.ipynb")))
    for old in [*out.glob("*.ipynb"), *(out / ANSWERS.name).glob("*.ipynb")]:
        old.unlink()
    written = []
    for src in sorted(CHAPTERS.glob("*.ipynb")) + sorted(ANSWERS.glob("*.ipynb")):
        dst = out / src.relative_to(CHAPTERS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(solve(nbformat.read(src, as_version=4), sols, book=book), dst)
        written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the copies (answers/ goes inside it)")
    parser.add_argument("--book", action="store_true", help="tag each solution hide-input (shown collapsed)")
    args = parser.parse_args(argv)
    try:
        written = write_solved(args.out.resolve(), book=args.book)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"solved: {len(written)} notebooks in {args.out}{' (solutions collapsed)' if args.book else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

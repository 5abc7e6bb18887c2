"""Fail when an executed notebook shows its reader a warning or an error.

    python tools/scan_outputs.py build/solved/chapters/*.ipynb        # what `make test` executed
    python tools/scan_outputs.py jupyter_book/_build/jupyter_execute  # what the book shows (a folder: every .ipynb in it)

A warning is a line a cell printed the way Python or a logger prints one (``...: UserWarning: ...``,
``WARNING ...``) or anything on stderr with the word; an error is an error output. A notebook with no
outputs at all was not executed, which is an error too (a scan of nothing must not pass). Exit 1
with one line per finding, 0 with a count. Standard library only.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

# a warning as Python (``path:12: UserWarning: ...``) or a logger (``WARNING ...``) prints it, at a line's start;
# a class named in displayed source code (``class CompatibilityWarning(UserWarning):``) is not one
WARNING = re.compile(r"^(\S*\w+Warning: |WARNING\b)", re.M)


def _texts(output: dict) -> list[tuple[str, str]]:
    """(channel, text) pairs of one output: a stream, an error, or the plain text of a result."""
    kind = output.get("output_type")
    if kind == "stream":
        return [(output.get("name", "stdout"), "".join(output.get("text", "")))]
    if kind == "error":
        return [("error", f"{output.get('ename')}: {output.get('evalue')}")]
    plain = output.get("data", {}).get("text/plain", "")
    return [("result", "".join(plain))] if plain else []


def findings(path: Path) -> list[str]:
    """One line per warning or error a code cell of ``path`` shows; a never-executed notebook is one too."""
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    if cells and not any(c.get("outputs") for c in cells):
        return [f"{path}: no cell has an output (was it executed?)"]
    found = []
    for i, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            for channel, text in _texts(output):
                flagged = channel == "error" or WARNING.search(text) or (channel == "stderr" and "warn" in text.lower())
                if flagged:
                    first = next((ln for ln in text.splitlines() if ln.strip()), "")
                    found.append(f"{path}: code cell {i + 1} ({channel}): {first.strip()[:200]}")
    return found


def notebooks(args: list[str]) -> list[Path]:
    paths = []
    for a in map(Path, args):
        if a.is_dir():
            paths += sorted(p for p in a.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif a.is_file():
            paths.append(a)
    return paths


def main(argv: list[str] | None = None) -> int:
    paths = notebooks(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("error: no executed notebooks found; give .ipynb files or a folder holding them", file=sys.stderr)
        return 1
    found = [line for p in paths for line in findings(p)]
    print("\n".join(found) or f"{len(paths)} executed notebooks: no cell shows a warning or an error")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

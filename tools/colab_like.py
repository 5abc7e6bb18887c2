"""Run a notebook the way Colab would: in a clean virtualenv holding what Colab ships (a torch other
than the pinned one, ipywidgets 7.x, a Jupyter kernel), starting from the notebook's own install cell.

    python -m venv /tmp/colab && /tmp/colab/bin/pip install "torch!=2.13.0" "ipywidgets==7.7.*" ipykernel nbclient
    python tools/colab_like.py --python /tmp/colab/bin/python --notebook chapters/03_router.ipynb

What makes it Colab-like, without a network to GitHub:
- a ``google.colab`` module exists in the kernel (a ``sitecustomize`` on the path), so the install cell
  runs its Colab branch unchanged;
- git rewrites ``https://github.com/<repository>`` to this checkout (``url.<base>.insteadOf`` in a
  throw-away git config), so the cell's ``pip install git+https://...@main`` installs this
  repository's ``main`` branch, as a reader's Colab would install the published one;
- live widgets (``MINIGPT_HEADLESS=0``), a fresh model cache, the ``ci`` profile (minutes on 2 cores).

It prints the kernel's versions, whether the install cell installed the package, every warning or
error a cell printed, and how many widgets the notebook displayed; exit 1 when a cell failed or
printed a warning. A maintenance tool for this checkout: standard library only (nbclient runs inside
the virtualenv).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from colab import GITHUB, read_repository  # noqa: E402  (this folder's other tool)

FAKE_COLAB = "import sys, types\nsys.modules.setdefault('google.colab', types.ModuleType('google.colab'))\n"
# runs inside the virtualenv: execute the notebook, then report every cell's text outputs
RUNNER = r'''
import json, sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
error = None
try:
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3").execute()
except Exception as err:  # report what ran before the failure too
    error = f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}"
cells = []
for c in nb.cells:
    if c.cell_type != "code":
        continue
    texts, widgets = [], 0
    for o in c.get("outputs", []):
        if o.get("output_type") == "stream":
            texts.append((o["name"], o["text"]))
        elif o.get("output_type") == "error":
            texts.append(("error", o["ename"] + ": " + o["evalue"]))
        widgets += "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    cells.append({"source": c.source[:80], "texts": texts, "widgets": widgets})
print(json.dumps({"error": error, "cells": cells}))
'''
VERSIONS = ("import sys, torch, ipywidgets; "
            "print(f'python {sys.version.split()[0]}, torch {torch.__version__}, ipywidgets {ipywidgets.__version__}')")


def environment(tmp: Path, repo: str) -> dict[str, str]:
    """The kernel's environment: fake Colab module, GitHub rewritten to this checkout, fresh cache."""
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(FAKE_COLAB)
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text(f'[url "file://{ROOT}"]\n\tinsteadOf = {GITHUB}{repo}\n'
                         '[safe]\n\tdirectory = *\n')
    return {**os.environ, "PYTHONPATH": str(tmp / "site"), "GIT_CONFIG_GLOBAL": str(gitconfig),
            "MINIGPT_PROFILE": "ci", "MINIGPT_HEADLESS": "0", "MINIGPT_CACHE_DIR": str(tmp / "cache"),
            "MINIGPT_RESULTS_DIR": str(tmp / "results"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


# pip's notes about this machine's own package mirror (a local index without every package), which a
# real Colab does not have; anything else pip or a cell says is reported
MIRROR_NOTE = re.compile(r"^(\x1b\[[0-9;]*m)*WARNING: Location 'file://[^']*' is ignored.*$", re.M)


def problems(report: dict) -> list[str]:
    """Failed cells and any warning a cell printed (stderr text that says Warning, or an error)."""
    found = [f"the notebook stopped: {report['error']}"] if report["error"] else []
    for c in report["cells"]:
        for name, text in c["texts"]:
            text = re.sub(r"\x1b\[[0-9;]*m", "", MIRROR_NOTE.sub("", text))
            if name == "error" or (name == "stderr" and "warning" in text.lower()):
                found.append(f"{c['source'].splitlines()[0]!r}: {text.strip()[:300]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the Colab-like virtualenv's python")
    parser.add_argument("--notebook", default="chapters/03_router.ipynb")
    args = parser.parse_args(argv)
    repo = read_repository()
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(Path(tmp), repo)
        print(subprocess.run([args.python, "-c", VERSIONS], env=env, capture_output=True, text=True).stdout.strip())
        out = subprocess.run([args.python, "-c", RUNNER, str(ROOT / args.notebook)], env=env,
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"error: the runner failed: {out.stderr.strip()[-500:]}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
        shown = subprocess.run([args.python, "-m", "pip", "show", "minigpt"], env=env, capture_output=True, text=True)
    install = next((t for c in report["cells"] for _, t in c["texts"] if "installed minigpt" in t), "")
    print(f"install cell: {install.strip() or 'printed nothing'}")
    print("pip show minigpt: " + " | ".join(ln for ln in shown.stdout.splitlines() if ln.startswith(("Version", "Location"))))
    print(f"{len(report['cells'])} code cells, {sum(c['widgets'] for c in report['cells'])} live widgets displayed")
    found = problems(report)
    print("\n".join(found) or "no cell failed or printed a warning")
    return 1 if found or not install else 0


if __name__ == "__main__":
    sys.exit(main())

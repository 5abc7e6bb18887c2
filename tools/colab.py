"""Point every notebook's Colab badge and install cell, and the README's badges, at the repository
named once in pyproject.toml (``[project.urls] Repository``), then re-sync the .ipynb files.

    python tools/colab.py                          # regenerate from the setting
    python tools/colab.py --repository you/repo    # write the setting first (make colab REPO=you/repo)
    python tools/colab.py --check                  # list what disagrees with the setting, exit 1 if anything

A maintenance tool for this checkout, not part of the installed package: it imports only the
standard library (and runs jupytext in a subprocess).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "main"  # the branch the badges open and the install cell installs
NOTEBOOK_GLOBS = ("chapters/*.py", "chapters/answers/*.py")
GITHUB = "https://github.com/"
# GitHub's rules: an owner is 1-39 letters, digits or single inner hyphens; a name is letters, digits, . _ -
OWNER_NAME = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}/[A-Za-z0-9._-]{1,100}")
URL_LINE = re.compile(r'^Repository = "[^"\n]*"$', re.M)
BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
                   r"\(https://colab\.research\.google\.com/github/"
                   r"(?P<repo>[^/)]+/[^/)]+)/blob/[^/)]+/(?P<path>[^)]+)\)")
INSTALL_MARK = '"google.colab" in sys.modules'  # what makes a cell the install cell
# The same cell in every notebook. Everything runs only on Colab: locally it defines REPO and nothing else.
INSTALL_CELL = Template('''\
# Colab only: install the companion package. Locally (`pip install -e .`) this cell does nothing.
# The book trains the `cpu` profile, whose numbers are the README's, on the runtime's GPU when it has
# one (minutes). For the larger `gpu` profile remove the `#` below; the next cell prints its time.
import os
import subprocess
import sys

REPO = "$repo"  # written by `make colab REPO=owner/name`, like the badge above
# os.environ["MINIGPT_PROFILE"] = "gpu"
if "google.colab" in sys.modules:  # same test as minigpt.notebook.in_colab(), before minigpt exists
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+https://github.com/{REPO}@$branch"], check=True)
    import torch  # preinstalled on Colab, with CUDA

    where = (f"the GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available()
             else "the CPU (Runtime > Change runtime type adds a GPU)")
    print(f"installed minigpt from github.com/{REPO}; profile {os.environ.get('MINIGPT_PROFILE', 'cpu')!r} on {where}")
''')


# -- the setting ---------------------------------------------------------------------------------
def check_repository(repo: str) -> str:
    """``repo`` if it is a valid GitHub owner/name, else a one-line ValueError saying how to write it."""
    if not OWNER_NAME.fullmatch(repo) or repo.split("/")[1] in (".", ".."):
        raise ValueError(f"invalid repository {repo!r}: write it as OWNER/NAME, as on GitHub "
                         "(e.g. make colab REPO=alice/chapter32-fusion)")
    return repo


def read_repository(root: Path = ROOT) -> str:
    """The owner/name in pyproject.toml's ``[project.urls] Repository``."""
    urls = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"].get("urls", {})
    url = urls.get("Repository", "")
    if not url.startswith(GITHUB):
        raise ValueError(f"pyproject.toml has no [project.urls] Repository = \"{GITHUB}OWNER/NAME\"; "
                         "add it, or run make colab REPO=owner/name")
    return check_repository(url.removeprefix(GITHUB).rstrip("/"))


def write_repository(repo: str, root: Path = ROOT) -> None:
    path = root / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    if len(URL_LINE.findall(text)) != 1:
        raise ValueError(f"{path} needs exactly one line Repository = \"...\" under [project.urls]")
    path.write_text(URL_LINE.sub(f'Repository = "{GITHUB}{check_repository(repo)}"', text), encoding="utf-8")


# -- what each file should say --------------------------------------------------------------------
def badge(repo: str, path: str) -> str:
    return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{repo}/blob/{BRANCH}/{path})")


def install_cell(repo: str) -> str:
    return INSTALL_CELL.substitute(repo=repo, branch=BRANCH)


def render_notebook(text: str, repo: str, path: str) -> str:
    """A py:percent notebook's text with its one badge and its one install cell regenerated.
    ``path`` is the .ipynb's path in the repository, which the badge opens."""
    if len(BADGE.findall(text)) != 1:
        raise ValueError(f"{path}: expected one Colab badge in the first markdown cell, "
                         f"found {len(BADGE.findall(text))}; add it as in chapters/01_shared_trunk.py")
    text = BADGE.sub(badge(repo, path), text)
    cells = re.split(r"(?m)^(?=# %%)", text)  # the header, then one chunk per cell
    hits = [i for i, c in enumerate(cells) if c.startswith("# %%\n") and INSTALL_MARK in c]
    if len(hits) != 1:
        raise ValueError(f"{path}: expected one install cell (a code cell testing {INSTALL_MARK}), "
                         f"found {len(hits)}; add it as in chapters/01_shared_trunk.py")
    old = cells[hits[0]]
    blank_after = old[len(old.rstrip("\n")):]
    cells[hits[0]] = "# %%\n" + install_cell(repo).rstrip("\n") + blank_after
    return "".join(cells)


def render_readme(text: str, repo: str) -> str:
    """The README with every Colab badge pointing at ``repo`` (each keeps the notebook it opens)."""
    return BADGE.sub(lambda m: badge(repo, m["path"]), text)


def notebook_sources(root: Path = ROOT) -> list[Path]:
    return sorted(p for pattern in NOTEBOOK_GLOBS for p in root.glob(pattern))


def rendered(root: Path, repo: str) -> dict[Path, str]:
    """Every generated file -> the text it should have."""
    out = {p: render_notebook(p.read_text(encoding="utf-8"), repo, p.relative_to(root).with_suffix(".ipynb").as_posix())
           for p in notebook_sources(root)}
    readme = root / "README.md"
    out[readme] = render_readme(readme.read_text(encoding="utf-8"), repo)
    return out


# -- checking and writing ---------------------------------------------------------------------------
def problems(root: Path = ROOT) -> list[str]:
    """One line per file whose badge or install cell disagrees with the setting (empty: all agree)."""
    try:
        repo = read_repository(root)
        wanted = rendered(root, repo)
    except ValueError as err:
        return [str(err)]
    return [f"{p.relative_to(root)}: Colab badge or install cell disagrees with pyproject.toml's repository "
            f"{repo}; run make colab" for p, text in wanted.items() if p.read_text(encoding="utf-8") != text]


def regenerate(root: Path = ROOT) -> list[Path]:
    """Rewrite what disagrees with the setting, re-sync the changed notebooks; returns the changed sources."""
    wanted = rendered(root, read_repository(root))
    changed = [p for p, text in wanted.items() if p.read_text(encoding="utf-8") != text]
    for p in changed:
        p.write_text(wanted[p], encoding="utf-8")
    sync_notebooks([p for p in changed if p.suffix == ".py"])
    return changed


def sync_notebooks(sources: list[Path]) -> None:
    """``jupytext --sync`` the .ipynb of each source, then drop the version lines jupytext adds to the
    .py header (the repository keeps them out, so a jupytext upgrade does not touch every file)."""
    if not sources:
        return
    try:
        subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--sync", *map(str, sources)], check=True)
    except subprocess.CalledProcessError:
        raise SystemExit("error: jupytext --sync failed; install the test extras (make setup) and rerun") from None
    for p in sources:
        lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [ln for ln in lines if not re.match(r"#\s+(format_version|jupytext_version):", ln)]
        p.write_text("".join(keep), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", metavar="OWNER/NAME",
                        help="write this GitHub repository to pyproject.toml first")
    parser.add_argument("--check", action="store_true", help="only list what disagrees with the setting")
    args = parser.parse_args(argv)
    try:
        if args.check:
            found = problems()
            print("\n".join(found) or f"every badge and install cell points at {read_repository()}")
            return 1 if found else 0
        if args.repository:
            write_repository(args.repository)
        changed = regenerate()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    repo = read_repository()
    print("".join(f"rewrote {p.relative_to(ROOT)}\n" for p in changed)
          + f"every badge and install cell points at {repo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

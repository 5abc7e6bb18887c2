#!/usr/bin/env bash
# Build the HTML book: `make book` calls this (BOOK_PROFILE=ci by default).
#
#   BOOK_PROFILE=ci|cpu|gpu   profile every notebook is executed at (exported as MINIGPT_PROFILE)
#   BOOK_JOBS=N               notebooks executed side by side, one torch thread each (default: the CPU cores,
#                             at most 4, at ci and cpu; 1 at gpu, whose notebooks share one GPU)
#   BOOK_PREFETCH_JOBS=N      language models trained side by side before the notebooks run (default: CPU
#                             cores; 0: none, each notebook trains what it needs, as a reader in order would)
#   BOOK_ALLOW_MISSING=1      build without chapters that do not exist yet (default: fail)
#   PY=path/to/python         the venv's python (default .venv/bin/python)
#
# Steps: copy the committed notebooks (no outputs) into jupyter_book/chapters/ (Jupyter Book 1
# cannot include files outside its folder), each exercise's solution collapsed under its stub;
# train every model side by side; execute every notebook once, several at a time, into a jupyter-cache whose folder
# is keyed by profile and package source (the cache itself only hashes the notebook's code, so
# without the key a changed package or profile would reuse stale outputs); then build with
# warnings as errors, so a failed cell, a missing figure or a broken cross-reference fails the build
# (the freeze-depth figures are drawn after the notebooks ran, from what notebook 8 computed).
set -euo pipefail
BOOK="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BOOK")"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
PROFILE="${BOOK_PROFILE:-ci}"
CORES=$(nproc)
if [ "$PROFILE" = gpu ]; then JOBS="${BOOK_JOBS:-1}"; else JOBS="${BOOK_JOBS:-$(( CORES < 4 ? CORES : 4 ))}"; fi
PREFETCH_JOBS="${BOOK_PREFETCH_JOBS:-$(nproc)}"
BUILD="$BOOK/_build"
mkdir -p "$BUILD"
LOG="$BUILD/build-$PROFILE.log"
t0=$(date +%s)

export MINIGPT_PROFILE="$PROFILE"
export MINIGPT_HEADLESS=1   # sliders run once with their default and draw a static figure (no kernel in a web page)
export TQDM_DISABLE=1       # no progress bars in the pages
if [ "$JOBS" -gt 1 ]; then
  # one thread per notebook process: two processes on two cores, oversubscription is ~10x slower. Small
  # models use a second thread poorly, so two notebooks on one thread each finish sooner than one after
  # the other on two threads (measured: docs/design.md, "The book in minutes"); one thread is also the
  # thread count of the committed reference, so the pages show its numbers to the last digit
  export OMP_NUM_THREADS=1 MINIGPT_NUM_THREADS=1
fi

# 1. which pages the table of contents asks for, and whether they exist
TOC="$BOOK/_toc.yml"
missing=$("$PY" - "$BOOK" <<'EOF'
import sys
from pathlib import Path

import yaml

book = Path(sys.argv[1])
def files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for v in node.values():
            yield from files(v)
    elif isinstance(node, list):
        for v in node:
            yield from files(v)
for f in files(yaml.safe_load((book / "_toc.yml").read_text())):
    src = (book.parent / f).with_suffix(".ipynb") if f.startswith("chapters/") else None
    if src is not None and not src.exists():
        print(f)
    elif src is None and not any((book / f).with_suffix(s).exists() for s in (".md", ".ipynb")):
        print(f)
EOF
)
if [ -n "$missing" ]; then
  if [ "${BOOK_ALLOW_MISSING:-0}" = 1 ]; then
    echo "book: building WITHOUT these pages (not written yet): $(echo $missing)" >&2
    TOC="$BUILD/_toc.partial.yml"
    "$PY" - "$BOOK/_toc.yml" "$TOC" $missing <<'EOF'
import sys
import yaml

src, dst, drop = sys.argv[1], sys.argv[2], set(sys.argv[3:])
def prune(node):
    if isinstance(node, list):
        return [prune(v) for v in node if not (isinstance(v, dict) and v.get("file") in drop)]
    if isinstance(node, dict):
        return {k: prune(v) for k, v in node.items()}
    return node
with open(dst, "w") as fh:
    yaml.safe_dump(prune(yaml.safe_load(open(src))), fh, sort_keys=False)
EOF
  else
    echo "book: the table of contents lists pages that do not exist: $(echo $missing)" >&2
    echo "      (write them, or build a partial book with BOOK_ALLOW_MISSING=1)" >&2
    exit 1
  fi
fi

# 2. fresh copies of the notebooks (the .ipynb the reader opens; tests keep them in sync with the .py),
#    each exercise followed by the answer key's solution, collapsed (tools/solved.py --book)
rm -rf "$BOOK/chapters"
"$PY" tools/solved.py --book "$BOOK/chapters"

# 3. every language model the book uses, PREFETCH_JOBS at a time (one thread each; minigpt/studies/prefetch.py),
#    before the notebooks run: the cores are busy training, and notebooks started beside it (tried) made
#    the whole build slower (docs/design.md, "The book in minutes"). BOOK_PREFETCH_JOBS=0 skips it, so
#    the notebooks train what they need in reading order
if [ "$PREFETCH_JOBS" -gt 0 ]; then
  tp=$(date +%s)
  "$PY" -m minigpt prefetch --profile "$PROFILE" --jobs "$PREFETCH_JOBS"
  echo "book: prefetch ($PREFETCH_JOBS at a time) in $(( $(date +%s) - tp )) s"
fi

# 4. the execution cache for this profile and this package source; older ones are dropped
key=$(cat minigpt/*.py pyproject.toml | sha256sum | cut -c1-12)
CACHE="$BUILD/.jupyter_cache/$PROFILE-$key"
for old in "$BUILD/.jupyter_cache/$PROFILE"-*; do
  [ -e "$old" ] && [ "$old" != "$CACHE" ] && rm -rf "$old"
done
CONFIG="$BUILD/_config.$PROFILE.yml"
"$PY" - "$BOOK/_config.yml" "$CONFIG" "$CACHE" <<'EOF'
import sys
import yaml

src, dst, cache = sys.argv[1:4]
cfg = yaml.safe_load(open(src))
cfg["execute"]["cache"] = cache
# MathJax from a local copy when one is installed (jupyter-server-mathjax ships MathJax 2), so
# formulas render without a network; otherwise the theme's default CDN copy is used
try:
    import shutil
    from pathlib import Path

    import jupyter_server_mathjax

    # not under the book's _static/: every .js there would be loaded as a page script. Extra files
    # land at the site root; mathjax_path is relative to _static/
    extra = Path(dst).parent / "extra"
    if not (extra / "mathjax" / "MathJax.js").exists():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", extra / "mathjax", dirs_exist_ok=True)
    cfg["sphinx"]["config"]["html_extra_path"] = [str(extra)]
    cfg["sphinx"]["config"]["mathjax_path"] = "../mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
    # Sphinx writes this dict as window.MathJax whatever the version; the same classes MyST-NB
    # gives MathJax 3 (pages are marked ignore, formulas process), in MathJax 2's words
    cfg["sphinx"]["config"]["mathjax3_config"] = {"tex2jax": {
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
        "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
        "HTML-CSS": {"webFont": "STIX-Web", "availableFonts": ["STIX-Web"], "imageFont": None}}  # the fonts it ships
except ImportError:
    print("book: jupyter-server-mathjax not installed; formulas need MathJax from its CDN (network)")
with open(dst, "w") as fh:
    yaml.safe_dump(cfg, fh, sort_keys=False)
EOF

# 5. execute what the cache does not hold yet, JOBS notebooks at a time (see execute.py), then the
#    freeze-depth grid standing in for the live slider (notebook 8 has trained and scored its depths)
"$PY" "$BOOK/execute.py" "$CACHE" "$JOBS" "$BOOK"/chapters/*.ipynb "$BOOK"/chapters/answers/*.ipynb
"$PY" "$BOOK/build_figures.py"
"$PY" -m minigpt.readme --render runtimes > "$BOOK/_generated/runtimes.md"  # measured times, for intro.md

# 6. the build: warnings are errors (failed cells, missing images, broken references, bad toc).
#    A partial build cannot use -W (links to the missing pages warn), so step 7 filters those out.
W=(--warningiserror)
[ -n "$missing" ] && W=()
set +e
"$(dirname "$PY")/jupyter-book" build "$BOOK" --config "$CONFIG" --toc "$TOC" --all \
  "${W[@]}" --keep-going 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

# 7. belt and braces: things that must never reach a page, whatever the log level
html="$BUILD/html"
problems=""
# Sphinx's own "path:line: WARNING: ..." lines (not a kernel's "[IPKernelApp] WARNING | ..." chatter)
warnings=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -E "(^|: )(WARNING|ERROR|CRITICAL|SEVERE):" || true)
for m in $missing; do
  warnings=$(printf '%s\n' "$warnings" | grep -v -F "$m" || true)
done
[ -n "$warnings" ] && problems+=" warnings-in-log"
grep -q "Executing notebook failed" "$LOG" && problems+=" failed-notebook"
if [ -d "$html" ]; then
  grep -rlq 'output traceback' "$html/chapters" --include=*.html 2>/dev/null && problems+=" traceback-in-page"
  grep -rlq 'widget-view+json\|Error displaying widget' "$html" --include=*.html 2>/dev/null && problems+=" widget-output"
fi
# a warning or an error printed by any executed cell (the executed notebooks in this build's cache)
"$PY" tools/scan_outputs.py "$CACHE/executed" || problems+=" warnings-in-cells"
# pages of the table of contents (not the theme's templates, the index redirect, genindex, search)
pages=$(find "$html" -name '*.html' ! -path '*/_static/*' ! -name index.html ! -name genindex.html \
  ! -name search.html 2>/dev/null | wc -l)
echo "book: profile $PROFILE, $pages pages, $(( $(date +%s) - t0 )) s, log $LOG"
if [ "$status" -ne 0 ] || [ -n "$problems" ]; then
  [ -n "$warnings" ] && printf 'book: %s\n' "$warnings" >&2
  echo "book: FAILED (jupyter-book exit $status;${problems:- no extra problems})" >&2
  exit 1
fi
[ -n "$missing" ] && echo "book: PARTIAL build, missing: $(echo $missing)" >&2
echo "book: open $html/index.html"

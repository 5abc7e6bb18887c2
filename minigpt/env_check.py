"""``python -m minigpt.env_check``: is this machine ready to run the chapter?

One line per check: ``OK``, ``FAIL`` (must be fixed) or ``MISSING`` (an optional extra is not
installed). Exits 1 if anything FAILs, so ``make env-check`` can gate a run or a CI job.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass

# config imports only the standard library, so it is safe before any dependency is checked
from .config import DEFAULT_PROFILE, PROFILE_ENV, PROFILES, cache_dir, env

# pip name -> import name; all in pyproject's dependencies
REQUIRED = {"torch": "torch", "numpy": "numpy", "datasets": "datasets", "tokenizers": "tokenizers",
            "safetensors": "safetensors", "filelock": "filelock", "tqdm": "tqdm", "pandas": "pandas",
            "matplotlib": "matplotlib", "seaborn": "seaborn", "ipywidgets": "ipywidgets"}
# pip name -> (import name, the extra that installs it)
OPTIONAL = {"transformers": ("transformers", "hf"), "nbmake": ("nbmake", "test"),
            "jupytext": ("jupytext", "test"), "jupyter-book": ("jupyter_book", "book")}
MIN_PYTHON = (3, 10)


@dataclass
class Check:
    status: str  # OK, FAIL or MISSING
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<8} {self.name:<16} {self.detail}"  # >= 2 spaces after the name


def _version(dist: str, module=None) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return getattr(module, "__version__", "?")


def check_required(dist: str, module: str) -> Check:
    """Import it for real: an installed but broken package (e.g. an ABI mismatch) must FAIL."""
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any import error is a FAIL, reported in one line
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Check("FAIL", dist, f"cannot import {module} ({msg}); run: pip install -e .")
    return Check("OK", dist, _version(dist, mod))


def check_optional(dist: str, module: str, extra: str) -> Check:
    # find_spec, not import: optional extras are slow to import and not needed for a verdict
    if importlib.util.find_spec(module) is None:
        return Check("MISSING", dist, f"(optional) pip install -e '.[{extra}]'")
    return Check("OK", dist, f"{_version(dist)} (optional)")


def check_python() -> Check:
    v = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("FAIL", "python", f"{v} is too old; minigpt needs Python >= {'.'.join(map(str, MIN_PYTHON))}")
    return Check("OK", "python", f"{v} ({sys.executable})")


def check_torch() -> list[Check]:
    try:
        import torch
    except Exception:  # noqa: BLE001 - already reported by check_required
        return [Check("FAIL", name, "torch is not importable") for name in ("torch build", "device", "threads")]
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
    if torch.cuda.is_available():
        device = f"CUDA ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "MPS (Apple GPU)"
    else:
        device = "CPU"
    return [Check("OK", "torch build", f"torch {torch.__version__}, {build}"),
            Check("OK", "device", device),
            Check("OK", "threads",
                  f"torch.get_num_threads()={torch.get_num_threads()}, os.cpu_count()={os.cpu_count()}")]


def check_cache() -> Check:
    try:
        from .cache import cache_root

        root = cache_root()
        with tempfile.NamedTemporaryFile(dir=root, prefix=".env_check-"):
            pass
    except Exception as err:  # noqa: BLE001
        where = cache_dir()
        return Check("FAIL", "cache dir", f"{where} is not writable ({type(err).__name__}: {err}); "
                                         "set MINIGPT_CACHE_DIR to a writable folder")
    return Check("OK", "cache dir", f"{root} is writable")


def check_profile() -> Check:
    name = env(PROFILE_ENV)
    if not name:
        return Check("OK", PROFILE_ENV, f"unset (default: {DEFAULT_PROFILE})")
    if name not in PROFILES:
        return Check("FAIL", PROFILE_ENV, f"{name!r} is not a profile; choose one of {', '.join(PROFILES)}")
    if name == "gpt2" and importlib.util.find_spec("transformers") is None:
        return Check("FAIL", PROFILE_ENV, "'gpt2' needs transformers and the Hugging Face hub; "
                                          "pip install -e '.[hf]'")
    return Check("OK", PROFILE_ENV, name)


def run_checks() -> list[Check]:
    checks = [check_python()]
    checks += [check_required(dist, mod) for dist, mod in REQUIRED.items()]
    checks += [check_optional(dist, mod, extra) for dist, (mod, extra) in OPTIONAL.items()]
    checks += check_torch()
    checks += [check_cache(), check_profile()]
    return checks


def main() -> int:
    checks = run_checks()
    for c in checks:
        print(c.line())
    failed = [c.name for c in checks if c.status == "FAIL"]
    print(f"RESULT: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

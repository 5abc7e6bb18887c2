"""On-disk cache for long computations: keyed by config, written atomically, guarded by a lock.

Every expensive artifact (corpus, tokenizer, checkpoints, result tables) goes through
:func:`cached`, so notebooks and the CLI can run alone, in any order, or in parallel and
still train each thing once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from filelock import FileLock

from .config import cache_dir

T = TypeVar("T")


def cache_root() -> Path:
    """Where cached artifacts live: ``$MINIGPT_CACHE_DIR`` or ``<repo>/.cache`` (created on first use)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}  # keep order; config_key sorts
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_key(*parts: Any, length: int = 16) -> str:
    """A short stable hash of any mix of dataclasses, dicts, lists and scalars."""
    blob = json.dumps(_jsonable(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an inter-process lock for ``path`` (a sibling ``.lock`` file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file or folder next to ``path``, then rename it into place.

    A process killed half-way leaves only a ``.tmp-*`` leftover, never a truncated ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    target = tmp / path.name
    try:
        write(target)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False)))


def cached(path: Path, build: Callable[[], T], save: Callable[[T, Path], None],
           load: Callable[[Path], T]) -> T:
    """Load ``path`` if it holds a valid artifact, else build it, save it atomically and return it.

    The lock makes concurrent callers wait for the first one instead of training twice. A file
    that exists but fails to load (truncated, corrupt) is rebuilt with a warning, not trusted.
    """
    path = Path(path)
    with locked(path):
        if path.exists():
            try:
                return load(path)
            except Exception as err:  # corrupt cache: rebuild rather than crash or trust it
                warnings.warn(f"cache entry {path} is unreadable ({err!r}); rebuilding it")
        obj = build()
        atomic_write(path, lambda tmp: save(obj, tmp))
        return obj

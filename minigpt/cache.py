"""On-disk cache for long computations: keyed by config, verified on load, replaced atomically.

Every expensive artifact (corpus, tokenizer, token streams, checkpoints, routers, result tables)
goes through :func:`cached`, so notebooks and the CLI can run alone, in any order, or in parallel
and still train each thing once.

Layout of one entry ``<folder>/<name>`` (``name`` holds the config key)::

    <name> -> .entry-<name>-<random>/<name>     a relative symlink: what callers read
    .entry-<name>-<random>/<name>               the artifact itself (a file or a folder)
    .entry-<name>-<random>/cache-entry.json     sha256 and size of every file of the artifact
    <name>.lock                                 the inter-process lock

Loading checks every file against ``cache-entry.json`` first: a damaged entry (flipped byte,
truncated, missing file) is rebuilt with a one-line warning naming the file. An intact entry that
was written for something else (copied or renamed under another key, or a checkpoint whose
manifest disagrees with what the caller expects) raises :class:`CacheMismatch` instead: that is a
wrong configuration, and silently retraining would hide it. A new version is written beside the
old one and the symlink is switched in one ``rename``, so a process killed at any moment leaves
the old complete entry or the new complete one, never a missing or partial one (readers hold the
lock, so they never see the old version being deleted). Deleting ``<name>`` deletes the entry; a
later write in that folder removes its version folder (:func:`clean_stale`). Entries written
before this layout (a plain file or folder at ``<name>``) are loaded as before and then given their
manifest once, without rebuilding them. Results JSONs (:func:`write_json`) stay plain files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from filelock import FileLock

from .config import cache_dir, home_dir

T = TypeVar("T")

ENTRY_MANIFEST = "cache-entry.json"  # beside the artifact in its version folder
TMP, VERSION = ".tmp-", ".entry-"  # prefixes of in-progress writes and of version folders
STALE_SECONDS = 3600.0  # leftovers untouched this long belong to a dead writer (see clean_stale)
_FORMAT = 1


class CacheCorrupt(ValueError):
    """A cache entry is damaged (a file missing, truncated or changed): it is rebuilt, not trusted."""


class CacheMismatch(ValueError):
    """A cache entry is intact but belongs to something else: refused, never silently rebuilt."""


class CacheDirError(RuntimeError):
    """The cache folder cannot be created or written."""


def cache_root() -> Path:
    """Where cached artifacts live: ``$MINIGPT_CACHE_DIR`` or ``config.home_dir()/.cache`` (created on first use)."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheDirError(f"cannot use {root} as the cache folder ({err.strerror or err}); "
                            f"point MINIGPT_CACHE_DIR at a writable folder, or unset it to use {home_dir() / '.cache'}"
                            ) from None
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


def one_line(err: BaseException | str) -> str:
    """An error's message on one line (whitespace runs collapsed)."""
    return " ".join(str(err).split()) or type(err).__name__


# -- content manifests -------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(version: Path) -> dict[str, dict]:
    """``{relative path: {"sha256", "bytes"}}`` for every file in ``version`` but the manifest."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(version):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(version).as_posix()
            if rel != ENTRY_MANIFEST:
                out[rel] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
    return out


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_manifest(version: Path, name: str) -> None:
    body = {"format": _FORMAT, "entry": name, "files": _files(version)}
    (version / ENTRY_MANIFEST).write_text(json.dumps({**body, "checksum": _checksum(body)}, indent=1))


def _verify_version(version: Path, name: str) -> None:
    """Raise :class:`CacheCorrupt` unless every file in ``version``'s manifest is there, unchanged, and
    :class:`CacheMismatch` if the version was written for another entry name. Files that the manifest
    does not list are ignored (libraries may add their own caches beside an artifact)."""
    try:
        manifest = json.loads((version / ENTRY_MANIFEST).read_text())
        body = {k: v for k, v in manifest.items() if k != "checksum"}
        files = body["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CacheCorrupt(f"its {ENTRY_MANIFEST} is missing or unreadable ({one_line(err)})") from None
    if manifest.get("checksum") != _checksum(body):
        raise CacheCorrupt(f"its {ENTRY_MANIFEST} does not match its own checksum")
    if body.get("entry") != name:
        raise CacheMismatch(f"it holds the artifact written as {body.get('entry')!r} "
                            "(copied or renamed from another key)")
    for rel, want in files.items():
        p = version / rel
        if not p.is_file():
            raise CacheCorrupt(f"file {rel} is missing")
        if p.stat().st_size != want["bytes"]:
            raise CacheCorrupt(f"file {rel} has {p.stat().st_size} bytes, its manifest says {want['bytes']}")
        if _sha256(p) != want["sha256"]:
            raise CacheCorrupt(f"file {rel} does not match the sha256 in its manifest")


def version_of(path: Path) -> Path | None:
    """The version folder that the entry ``path`` links to, or None for an entry of the older layout
    (a plain file or folder) or a symlink this cache did not make."""
    path = Path(path)
    if not path.is_symlink():
        return None
    target = Path(os.readlink(path))
    if len(target.parts) != 2 or not target.parts[0].startswith(VERSION):
        return None
    return path.parent / target.parts[0]


def verify(path: Path) -> Path | None:
    """Check the entry at ``path`` against its manifest (see :func:`_verify_version`); return its
    version folder, or None for an entry of the older layout, which has no manifest to check.
    The errors name the entry and say what to do."""
    path = Path(path)
    version = version_of(path)
    if version is None:
        return None
    try:
        link_name = Path(os.readlink(path)).name
        if link_name != path.name:
            raise CacheMismatch(f"it links to the artifact written as {link_name!r} "
                                "(copied or renamed from another key)")
        if not version.is_dir():
            raise CacheCorrupt(f"its version folder {version.name} is missing")
        _verify_version(version, path.name)
    except CacheMismatch as err:
        raise CacheMismatch(f"cache entry {path} belongs to something else: {err}; delete {path} to rebuild "
                            "it, or fix the config that asked for it") from None
    except CacheCorrupt as err:
        raise CacheCorrupt(f"cache entry {path} is damaged: {err}") from None
    return version


# -- writing -------------------------------------------------------------------------------------

def _last_activity(p: Path) -> float:
    """The newest mtime of ``p`` and everything under it (a live writer keeps touching its files)."""
    newest = p.lstat().st_mtime
    if p.is_dir() and not p.is_symlink():
        for dirpath, dirnames, filenames in os.walk(p):
            for name in dirnames + filenames:
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def clean_stale(folder: Path, older_than: float = STALE_SECONDS) -> list[str]:
    """Delete what dead writers left in ``folder``; return the names deleted.

    Candidates are ``.tmp-*`` items (a write in progress) and ``.entry-*`` version folders that no
    entry links to (replaced, or finished by a writer killed before it switched the link). One is
    deleted only when nothing in it changed for ``older_than`` seconds (an hour): a live writer in
    another process holds its ``.tmp-`` folder only while its artifact is being saved (seconds, and
    it keeps touching the files), and a new version is unlinked only for the instant between its
    rename and the link switch, so neither can be an hour old. A version an entry links to is
    never deleted, however old. Runs whenever something is written in ``folder``.
    """
    folder, now, removed = Path(folder), time.time(), []
    try:
        items = list(folder.iterdir())
    except FileNotFoundError:
        return removed
    linked = {v.name for p in items if not p.name.startswith((TMP, VERSION)) and (v := version_of(p)) is not None}
    for p in items:
        if not p.name.startswith((TMP, VERSION)) or p.name in linked:
            continue
        try:
            if now - _last_activity(p) < older_than:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
        except FileNotFoundError:  # another process cleaned it first
            continue
    return removed


def _switch(path: Path, version: Path) -> None:
    """Point ``path`` at ``version`` with one atomic rename, then delete the version it replaced."""
    link = path.parent / f"{TMP}{path.name}-link-{secrets.token_hex(4)}"
    os.symlink(f"{version.name}/{path.name}", link)
    old = version_of(path)
    aside = None
    if path.is_dir() and not path.is_symlink():
        # an entry of the older layout is a real folder, which rename cannot replace with a link:
        # move it aside first. This is the one moment with nothing at ``path``, once per such entry;
        # a process killed just here leaves no entry, so the next cached() call rebuilds it.
        aside = path.parent / f"{TMP}{path.name}-old-{secrets.token_hex(4)}"
        os.rename(path, aside)
    try:
        os.replace(link, path)
    except BaseException:
        link.unlink(missing_ok=True)
        if aside is not None:
            os.rename(aside, path)
        raise
    for gone in (old, aside):
        if gone is not None and gone != version:
            shutil.rmtree(gone, ignore_errors=True)


def atomic_write(path: Path, write: Callable[[Path], None], manifest: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary file or folder next to ``path``, then move it into place.

    A single file replaces ``path`` with one rename. A folder (or any artifact when ``manifest`` is
    set, which adds ``cache-entry.json`` with the hash of every file) becomes a new version folder
    and ``path`` a symlink switched to it in one rename (see the module docstring). Either way a
    process killed at any point leaves the old complete ``path`` or the new one, plus at most a
    ``.tmp-*`` leftover that :func:`clean_stale` deletes once it is an hour old.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    tmp = path.parent / f"{TMP}{path.name}-{secrets.token_hex(6)}"
    tmp.mkdir()  # not tempfile.mkdtemp: its 0700 would become the version folder's mode
    target = tmp / path.name
    try:
        write(target)
        if not manifest and target.is_file():
            old = version_of(path)
            os.replace(target, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return
        if manifest:
            _write_manifest(tmp, path.name)
        version = path.parent / f"{VERSION}{path.name}-{secrets.token_hex(6)}"
        os.rename(tmp, version)
        _switch(path, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False)))


# -- the cache -------------------------------------------------------------------------------------

def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same folder, same file system: no bytes copied
    except OSError:
        shutil.copy2(src, dst)


def _copy_artifact(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def _what_is_wrong(path: Path, err: Exception) -> str:
    """One line naming the entry and its damage (the check's own message, or the loader's error)."""
    msg = one_line(err)
    return msg if msg.startswith(f"cache entry {path} ") else f"cache entry {path} is unreadable ({msg})"


def _load(path: Path, load: Callable[[Path], T]) -> T:
    """Verify the entry at ``path``, then load it. An entry of the older layout that loads is given
    its manifest now (its files are hard-linked into a version folder), so later loads check it."""
    version = verify(path)
    obj = load(path)
    if version is None:
        try:
            atomic_write(path, lambda tmp: _copy_artifact(path, tmp), manifest=True)
        except OSError:  # a read-only cache: keep using the entry as it is
            pass
    return obj


def cached(path: Path, build: Callable[[], T], save: Callable[[T, Path], None],
           load: Callable[[Path], T]) -> T:
    """Load ``path`` if it holds a valid artifact, else build it, save it atomically and return it.

    The lock makes concurrent callers wait for the first one instead of training twice. An entry
    whose files do not match their manifest, or that fails to load (truncated, corrupt), is rebuilt
    with a one-line warning naming the file. :class:`CacheMismatch` from the check or from ``load``
    (an intact entry that belongs to another config) is raised: fix the config or delete the entry.
    """
    path = Path(path)
    with locked(path):
        if os.path.lexists(path):
            try:
                return _load(path, load)
            except CacheMismatch:
                raise
            except Exception as err:  # damaged or unreadable: rebuild rather than crash or trust it
                warnings.warn(f"{_what_is_wrong(path, err)}; rebuilding it", stacklevel=2)
        obj = build()
        atomic_write(path, lambda tmp: save(obj, tmp), manifest=True)
        return obj

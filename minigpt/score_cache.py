"""Scores remembered on disk, keyed by what produced them, so a book build scores each window once.

The notebooks and the answer keys ask for the same numbers many times: notebooks 4, 5 and 8 and
both answer keys call ``chapter_table``; the answer keys rerun Break 1, Break 2, the freeze sweep and the
hybrid windows; the sweep figures rescore what notebook 8 scores. The models and routers already
come from the cache, so every repeat would run the same forward passes again. :func:`remembered`
stores the token losses of one scoring call the first time and reads them back after that.

The key is the *content* of everything the call reads, not a config that names it:

* each module's weights and buffers (sha256 of their bytes), its class and the plain settings of
  every submodule (a router's decay, whether it normalises, a model's config);
* the windows (sha256 of the token ids) and the call's own settings (batch size, row names...);
* where it ran: device type, mixed-precision dtype, TF32, torch version and thread count (the last
  bits of a loss depend on them);
* the source text of every module whose code computes the score (this one's callers in
  :mod:`minigpt.scoring`, :mod:`minigpt.fusion`, the model, and the module of every class involved),
  so an edit to the code scores afresh instead of returning old numbers.

A module with state the key cannot see (a public attribute holding tensors or objects, like the
document-memory router's stored batches) or without data (the ``meta`` device of the device-leak
test) is scored every time. ``MINIGPT_SCORE_CACHE=0`` turns remembering off, and so does
:func:`not_remembered` for a block of code (the smoke run, whose models are random and whose
phases are timed). An entry is one safetensors file and a JSON index (no pickle), written by
:func:`minigpt.cache.cached`: atomic, locked, and checked against its manifest on every read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from . import device
from .cache import cache_root, cached, config_key
from .checkpoint import tensors_hash
from .config import env

Tree = Mapping[str, Any]  # nested dicts whose leaves are tensors
SCORE_CACHE_ENV = "MINIGPT_SCORE_CACHE"
FOLDER = "scores"
# modules whose code decides a score whatever classes are involved
SCORING_CODE = ("minigpt.scoring", "minigpt.fusion", "minigpt.stacked", "minigpt.model", "minigpt.device")
_PLAIN = (bool, int, float, str, type(None))


class Unkeyable(Exception):
    """Something the call reads cannot be described by content; the call is scored afresh."""


_off = 0  # depth of not_remembered() blocks


def enabled() -> bool:
    flag = env(SCORE_CACHE_ENV)
    return _off == 0 and (flag is None or flag.strip().lower() not in ("0", "false", "no"))


@contextmanager
def not_remembered() -> Iterator[None]:
    """Score afresh and store nothing inside the block (the smoke run: random models, timed phases)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


# -- describing what a call reads --------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A submodule attribute as JSON (numbers, strings, and lists, dicts and dataclasses of them, like a
    checkpoint's manifest), or :class:`Unkeyable` when it is state the key cannot see (a tensor, an object)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    raise Unkeyable(type(value).__name__)


def _module(m: nn.Module, code: set[str]) -> dict:
    """Class, plain settings of every submodule, and a hash of every weight and buffer."""
    tensors = m.state_dict()
    if any(t.is_meta for t in tensors.values()):
        raise Unkeyable("a module on the meta device")
    settings = {}
    for name, sub in m.named_modules():
        code.add(type(sub).__module__)
        try:  # private attributes hold derived copies (e.g. FusedModel._stacked), never new state
            settings[name] = {k: _plain(v) for k, v in vars(sub).items() if not k.startswith("_")}
        except Unkeyable as err:
            raise Unkeyable(f"{type(sub).__name__} keeps a {err} attribute") from None
    return {"class": f"{type(m).__module__}.{type(m).__qualname__}", "settings": settings,
            "weights": tensors_hash(tensors)}


def describe(obj: Any, code: set[str]) -> Any:
    """``obj`` as JSON by content: modules and tensors become hashes; ``code`` collects the modules
    whose source decides the result."""
    if isinstance(obj, nn.Module):
        return _module(obj, code)
    if isinstance(obj, torch.Tensor):
        if obj.is_meta:
            raise Unkeyable("a tensor on the meta device")
        return {"tensor": tensors_hash({"t": obj})}
    if isinstance(obj, Mapping):
        return {str(k): describe(v, code) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [describe(v, code) for v in obj]
    return _plain(obj)


def _source_hash(modules: set[str]) -> str:
    """sha256 of the source files of ``modules`` (read now: an edit made while a kernel runs counts)."""
    h = hashlib.sha256()
    for name in sorted(modules):
        path = getattr(sys.modules.get(name), "__file__", None)
        h.update(name.encode() + (Path(path).read_bytes() if path else b"<no source>"))
    return h.hexdigest()


def _where() -> dict:
    dev = device.resolve()
    if dev.type == "meta":  # shapes without values (the device-leak test): nothing worth keeping
        raise Unkeyable("the meta device")
    return {"device": dev.type, "amp": str(device.amp_dtype(dev)), "threads": torch.get_num_threads(),
            "tf32": torch.backends.cuda.matmul.allow_tf32, "torch": torch.__version__}


def score_key(kind: str, reads: Mapping[str, Any], compute: Callable) -> str:
    """The cache key of one call (:class:`Unkeyable` when something it reads has hidden state)."""
    where = _where()  # first: on the meta device nothing is hashed
    code = set(SCORING_CODE) | {compute.__module__}
    described = describe(reads, code)
    return config_key(kind, described, where, _source_hash(code), length=24)


# -- storing a tree of tensors ----------------------------------------------------------------
def _flatten(tree: Tree, prefix: tuple = ()) -> list[tuple[tuple, torch.Tensor | None]]:
    """Every tensor with its path; an empty mapping as its path and None (it must come back empty)."""
    out = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out += _flatten(v, prefix + (k,)) if v else [(prefix + (k,), None)]
        else:
            out.append((prefix + (k,), v))
    return out


def save_tree(tree: Tree, folder: Path) -> None:
    """``folder/tensors.safetensors`` and ``folder/index.json`` (each tensor's path in the tree, in order,
    and the paths of empty mappings)."""
    folder.mkdir(parents=True)
    items = [(path, t) for path, t in _flatten(tree) if t is not None]
    save_file({str(i): t.detach().cpu().contiguous() for i, (_, t) in enumerate(items)},
              str(folder / "tensors.safetensors"))
    empty = [list(path) for path, t in _flatten(tree) if t is None]
    (folder / "index.json").write_text(json.dumps({"tensors": [list(path) for path, _ in items], "empty": empty}))


def load_tree(folder: Path) -> dict:
    tensors = load_file(str(folder / "tensors.safetensors"))
    index = json.loads((folder / "index.json").read_text())
    if isinstance(index, list):  # written before empty mappings were kept
        index = {"tensors": index, "empty": []}
    tree: dict = {}
    for path in index["empty"]:
        _node(tree, path[:-1]).setdefault(path[-1], {})
    for i, path in enumerate(index["tensors"]):
        _node(tree, path[:-1])[path[-1]] = tensors[str(i)]
    return tree


def _node(tree: dict, path: list) -> dict:
    for k in path:
        tree = tree.setdefault(k, {})
    return tree


def remembered(kind: str, reads: Mapping[str, Any], compute: Callable[[], Tree]) -> dict:
    """``compute()`` (a tree of host tensors), stored under a key of ``reads`` and read back by any
    later call with the same content; computed without storing when remembering is off or a
    module in ``reads`` has state the key cannot see."""
    if not enabled():
        return dict(compute())
    try:
        key = score_key(kind, reads, compute)
    except Unkeyable:
        return dict(compute())
    return cached(cache_root() / FOLDER / f"{kind}-{key}", compute, save_tree, load_tree)

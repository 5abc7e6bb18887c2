"""Checkpoints as safetensors weights plus a JSON manifest that pins the interface.

The manifest records the model config, tokenizer fingerprint, base fingerprint, a hash of the
frozen trunk, the training config, the seed and the package version (and ``tied_head: false`` for a
model whose head was untied, so the loader unties it before loading the weights). Loading checks the manifest
against what the caller expects and refuses a mismatch (:class:`CheckpointMismatch`: a sound
checkpoint of something else), and checks the weights against the manifest's fingerprint
(:class:`CheckpointCorrupt`: damaged bytes). No pickle is ever loaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from .cache import CacheCorrupt, CacheMismatch
from .config import GPTConfig, __version__
from .model import GPT

WEIGHTS, MANIFEST = "model.safetensors", "manifest.json"


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes, dtypes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def trunk_hash(model: GPT, k: int) -> str:
    return tensors_hash(model.trunk_parameters(k))


def model_fingerprint(model: GPT) -> str:
    return tensors_hash(dict(model.named_parameters()))


class CheckpointMismatch(CacheMismatch):
    """A checkpoint's manifest disagrees with what the caller expects: it belongs to another config.
    The cache raises it rather than retraining behind the caller's back."""


class CheckpointCorrupt(CacheCorrupt):
    """A checkpoint's weights do not match the fingerprint in its manifest: the cache rebuilds it."""


def save_checkpoint(model: GPT, path: Path, manifest: dict[str, Any]) -> None:
    """Write ``path/model.safetensors`` and ``path/manifest.json`` (``path`` is a new folder)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / WEIGHTS))
    full = {"model_config": dataclasses.asdict(model.config), "package_version": __version__,
            "model_fingerprint": model_fingerprint(model), **manifest}
    if not model.tied_head:  # the loader unties before loading (no key: a tied head, as every older manifest)
        full["tied_head"] = False
    (path / MANIFEST).write_text(json.dumps(full, indent=2, default=str))


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / MANIFEST).read_text())


def load_checkpoint(path: Path, expect: dict[str, Any] | None = None) -> tuple[GPT, dict[str, Any]]:
    """Load a checkpoint, refusing it if any ``expect`` key differs from its manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    for key, want in (expect or {}).items():
        have = manifest.get(key)
        if have != want:
            raise CheckpointMismatch(f"checkpoint {path} has {key}={have!r} but {want!r} was expected, so it "
                                     "was built for another config; fix the config that asked for it, or "
                                     f"delete {path} to retrain it")
    model = GPT(GPTConfig(**manifest["model_config"]))
    if manifest.get("tied_head", True) is False:
        model.untie_head()
    try:
        load_model(model, str(path / WEIGHTS))
    except (RuntimeError, OSError, SafetensorError) as err:  # wrong shapes for the config, or a damaged file
        raise CheckpointCorrupt(f"weights in {path} do not fit the model config in its manifest "
                                f"({str(err).splitlines()[0]}); delete the folder and rerun to rebuild it") from None
    if model_fingerprint(model) != manifest["model_fingerprint"]:
        raise CheckpointCorrupt(f"weights in {path} do not match the fingerprint in its manifest; "
                                "the file is corrupt: delete the folder and rerun to rebuild it")
    model.eval()
    return model, manifest

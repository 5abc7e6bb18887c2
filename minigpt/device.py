"""Where the computation runs: one device policy for every compute path.

LM training, router training, scoring, the studies, fused generation and the smoke run all ask
:func:`resolve` for the device, move their models and batches there once with :func:`to_device`
(a no-op for whatever is already there) and bring results back with :func:`to_host` only to
report them. :func:`autocast` and :func:`grad_scaler` give mixed precision on CUDA only (bf16 where
the GPU has it, else fp16 with loss scaling) and :func:`resolve` turns on TF32 there; ``MINIGPT_AMP=0``
switches both off. On the CPU none of this changes anything: no autocast, same dtypes, same op
order, so CPU runs stay bit-identical (docs/design.md, "Device policy").
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn

from .config import amp_enabled, device_name

# device types the package runs on; meta has no data (shapes only) and serves the device-leak test
KNOWN = ("cpu", "cuda", "mps", "meta")
FIX = "set MINIGPT_DEVICE to cpu, cuda, cuda:<n> or mps, or unset it (cuda when available, else cpu)"


def resolve(name: str | None = None) -> torch.device:
    """``name``, else ``$MINIGPT_DEVICE``, else CUDA when PyTorch sees a GPU, else the CPU (the models
    here are small enough that Apple's MPS rarely beats the CPU, so it is used only when asked for)."""
    name = name or device_name() or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; {FIX}") from None
    if dev.type not in KNOWN:
        raise ValueError(f"device {name!r} is not one minigpt runs on; {FIX}")
    if not _available(dev):
        raise ValueError(f"device {name!r} is not available on this machine (PyTorch sees "
                         f"{torch.cuda.device_count()} CUDA GPUs); {FIX}")
    if dev.type == "cuda" and amp_enabled():
        _allow_tf32()
    return dev


def _available(dev: torch.device) -> bool:
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    if dev.type == "mps":
        return torch.backends.mps.is_available()
    return True


def _allow_tf32() -> None:
    """float32 matmuls (what autocast leaves in float32) in TF32 on Ampere and later GPUs."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9 names it this way
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def amp_dtype(dev: torch.device) -> torch.dtype | None:
    """The autocast dtype on ``dev``: bf16 or fp16 on CUDA (unless ``MINIGPT_AMP=0``), else None."""
    if dev.type != "cuda" or not amp_enabled():
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(dev: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA; on any other device a context that does nothing."""
    dtype = amp_dtype(dev)
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(dev: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast (its gradients underflow without it); with bf16, float32 or off
    the CUDA device, a disabled scaler whose scale/unscale_/step/update pass straight through."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(dev) == torch.float16)


def to_device(obj: Any, dev: torch.device) -> Any:
    """A module (moved in place) or tensor on ``dev``, or a tuple/list of them; a no-op for what is
    already there, so every compute path can call it on entry and only the first one moves."""
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, dev) for o in obj)
    if isinstance(obj, (nn.Module, torch.Tensor)):
        return obj.to(dev)
    raise TypeError(f"cannot move a {type(obj).__name__} to a device; pass a module, a tensor or a tuple of them")


def to_host(obj: Any) -> Any:
    """Results back on the CPU to be reported: tensors, and dicts, lists and tuples of them."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_host(o) for o in obj)
    return obj

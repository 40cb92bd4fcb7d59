"""Atomic checkpoints in safetensors format.

A checkpoint is one ``.safetensors`` file: every tensor of the state (model weights,
optimizer moments, RNG state) is stored under a flat key, and everything else
(step counters, hyperparameters, optimizer hyperparameters) as JSON in the file's
metadata.  The file is written to a temporary name in the same directory, flushed to
disk, and renamed over the old one (``os.replace``), so a crash never leaves a torn
checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from ..exceptions import InputError

_META_KEY = "predcode"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a reference, collecting the tensors."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_flatten(k, f"{prefix}.k{i}", tensors), _flatten(v, f"{prefix}.{i}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at '{prefix}' in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and JSON scalars) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    metadata = {_META_KEY: json.dumps(skeleton)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`.  A missing, truncated or foreign file is
    an :class:`~predcode.exceptions.InputError` naming it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"{path} is a folder; give its checkpoint.safetensors (or the run folder where a run folder is accepted)"
        )
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise InputError(
            f"{path} is not a readable safetensors checkpoint ({_short(exc)}); it "
            "may be truncated or another format: give a checkpoint predcode "
            "wrote"
        ) from None
    if _META_KEY not in metadata:
        raise InputError(f"{path} is not a predcode checkpoint (no '{_META_KEY}' metadata)")
    try:
        tensors = load_file(str(path), device=str(device))
        return _unflatten(json.loads(metadata[_META_KEY]), tensors)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise InputError(
            f"{path} is damaged ({_short(exc)}); it may be truncated: use an intact copy, or start the run again"
        ) from None
    except Exception as exc:  # safetensors' own errors for truncated data
        raise InputError(
            f"{path} is damaged ({_short(exc)}); it may be truncated: use an intact copy, or start the run again"
        ) from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(exc).__name__

"""Atomic file writes: a temp file in the same directory, flushed, then ``os.replace``.

Readers never see a half-written file, even if the process dies mid-write, and two writers
never share a temp file.  Checkpoints (:mod:`predcode.app.checkpoint`) use the same scheme
through ``safetensors``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of
    ``data``, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; these files are not secret
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def to_jsonable(obj: Any) -> Any:
    """``obj`` with tensors and arrays as lists, numpy scalars as numbers, paths as strings,
    dict keys as strings and non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(obj, Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, np.integer)):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, payload: Any, indent: int = 1) -> Path:
    """Write ``payload`` as JSON (:func:`to_jsonable`) to ``path`` atomically."""
    path = Path(path)
    atomic_write(path, (json.dumps(to_jsonable(payload), indent=indent) + "\n").encode())
    return path

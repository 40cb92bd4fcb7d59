"""Reader for CIFAR-10 in its "python version" pickle format (cannot be downloaded here).

Each batch file is a pickled dict with ``data`` (uint8 ``[N, 3072]``: 1024 red, then
green, then blue values of a 32x32 image, row-major) and ``labels`` (list of ints 0..9).
The files are unpickled, so only put files you trust into the data directory.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import IDXFormatError


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 images ``[N, 3, 32, 32]``, int64 labels ``[N]``)."""
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    data = np.asarray(_get(batch, "data", path), dtype=np.uint8)
    labels = np.asarray(_get(batch, "labels", path), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise IDXFormatError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_split(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate several batch files (e.g. ``data_batch_1..5`` for the train split)."""
    parts = [read_cifar_batch(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _get(batch: Any, key: str, path: str | Path) -> Any:
    if isinstance(batch, dict):
        for candidate in (key.encode(), key):
            if candidate in batch:
                return batch[candidate]
    raise IDXFormatError(f"{path}: not a CIFAR-10 python batch (no {key!r} entry)")

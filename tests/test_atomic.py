"""Atomic writes: the old content or all of the new, never a part; no temp files left."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from predcode.atomic import atomic_write, write_json


class _Unserialisable:
    pass


def test_write_json_converts_and_leaves_no_temp_file(tmp_path):
    path = write_json(
        tmp_path / "sub" / "r.json",
        {"t": torch.tensor([1.0, float("nan")]), "a": np.arange(2), "n": np.float32(0.5), 1: float("-inf")},
    )
    assert json.loads(path.read_text()) == {"t": [1.0, None], "a": [0, 1], "n": 0.5, "1": None}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json(path, {"v": _Unserialisable()})
    assert json.loads(path.read_text()) == {"v": 1}
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]

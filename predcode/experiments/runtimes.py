"""How long each reproduction's default run takes, for ``predcode repro --list``.

The seconds below are measured: the ``runtime_s`` that each experiment recorded in
``results/NAME/result.json`` (or, for the two older experiments, the time their JSON
records) for its default run (no ``--full``) on this project's reference machine, 2
shared CPU cores, no GPU.  An experiment not listed here shows the runtime recorded in
``OUT/NAME/result.json`` when there is one, and "not measured" otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

MEASURED_2_CORES: dict[str, float] = {
    "associative-memory": 980, "bp-equivalence": 190, "char-lstm": 350,
    "concept-drift": 369, "continual": 506, "continuous": 223, "credit-assignment": 266,
    "deep": 1342, "depth": 1878, "error-neurons": 124, "generation": 376,
    "implicit-sgd": 55, "interference": 21, "learned-feedback": 76, "lr-stability": 406,
    "online": 408, "precision": 696, "signal-decay": 215, "small-data": 585,
    "target-alignment": 51, "uncertainty": 81,
}
"""Seconds of the default run on 2 CPU cores (measured; see the module docstring)."""


def runtime_seconds(name: str, out: str | Path = "results") -> float | None:
    """The measured runtime of ``name``'s default run, or None when none is recorded."""
    if name in MEASURED_2_CORES:
        return MEASURED_2_CORES[name]
    try:
        result = json.loads((Path(out) / name / "result.json").read_text())
    except (OSError, ValueError):
        return None
    seconds = result.get("runtime_s") if isinstance(result, dict) and not result.get("full") else None
    return float(seconds) if isinstance(seconds, (int, float)) else None


def runtime_text(name: str, out: str | Path = "results") -> str:
    """``~6 min`` / ``~40 s`` / ``not measured``."""
    seconds = runtime_seconds(name, out)
    if seconds is None:
        return "not measured"
    return f"~{seconds:.0f} s" if seconds < 90 else f"~{seconds / 60:.0f} min"

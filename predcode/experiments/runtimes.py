"""How long each reproduction's default run takes, for ``predcode repro --list``.

The seconds below are measured: the ``runtime_s`` that each experiment recorded in
``results/NAME/result.json`` (or, for the two older experiments, the time their JSON
records) for its default run (no ``--full``) on this project's reference machine, 2
shared CPU cores, no GPU.  The claim experiments rerun on 2026-12-06 with the strict verdicts
(interference, target-alignment, online, small-data, continual, concept-drift, lr-stability,
implicit-sgd) ran at load 4-11 beside other work, so their wall times are up to 3-4x what a
quiet machine takes (each result also records its CPU seconds).  An experiment not listed
here shows the runtime recorded in ``OUT/NAME/result.json`` when there is one, and "not
measured" otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

MEASURED_2_CORES: dict[str, float] = {
    "associative-memory": 980,
    "bp-equivalence": 190,
    "char-lstm": 350,
    "concept-drift": 1255,
    "continual": 1548,
    "continuous": 223,
    "credit-assignment": 266,
    "deep": 1342,
    "depth": 1878,
    "error-neurons": 124,
    "generation": 376,
    "implicit-sgd": 186,
    "interference": 42,
    "learned-feedback": 76,
    "lr-stability": 4621,
    "online": 3311,
    "precision": 696,
    "signal-decay": 215,
    "small-data": 3662,
    "target-alignment": 136,
    "uncertainty": 81,
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

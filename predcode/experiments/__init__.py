"""Reproductions of literature claims, one module per claim, each a registered command.

``predcode repro NAME`` runs one; ``predcode repro --list`` lists them.  An experiment is
a function ``run(out_dir: Path, full: bool, seed: int) -> dict`` that writes JSON and PNG
files into ``out_dir`` and returns its headline numbers; register it with
:func:`experiment`.  Modules listed in ``MODULES`` are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Registry

MODULES: list[str] = ["bp_equivalence", "char_lstm"]  # e.g. "bp_equivalence": predcode/experiments/bp_equivalence.py
MODULES += [
    "interference",
    "target_alignment",
    "online",
    "small_data",
    "continual",
    "concept_drift",
    "lr_stability",
    "implicit_sgd",
]  # inference learning vs backprop claims
MODULES += ["generation", "associative_memory"]  # queries, generation, associative memory
MODULES += ["learned_feedback", "continuous", "error_neurons"]  # learned feedback, continuous PC, error neurons
MODULES += ["depth"]  # muPC, residual PC networks of 100+ layers
MODULES += ["precision", "uncertainty"]  # learnable precision, uncertainty
MODULES += ["credit_assignment"]  # FA, DFA, DTP, EP beside BP and PC
MODULES += ["deep"]  # ePC vs sPC vs backprop on deep nets
MODULES += ["signal_decay"]  # ePC vs sPC: signal decay with depth
MODULES += ["nudging", "bidirectional"]  # output nudging; bidirectional PC
MODULES += ["char_transformer"]  # a transformer language model trained by PC
MODULES += ["montecarlo", "temporal"]  # Monte Carlo PC generating digits; temporal PC vs the Kalman filter


@dataclass(frozen=True)
class Experiment:
    """One claim reproduction: its name, a one-line summary, and ``run(out_dir, full, seed)``."""

    name: str
    summary: str
    run: Callable[..., dict]


EXPERIMENTS: Registry[Experiment] = Registry("experiment")
"""Every claim reproduction by name (``predcode repro NAME``); an entry builds its
:class:`Experiment`.  The modules in ``MODULES`` fill it when they are imported
(:func:`registry` imports them all)."""


def experiment(name: str, summary: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorator registering ``run(out_dir, full, seed) -> dict`` under ``name``."""

    def register(fn: Callable[..., dict]) -> Callable[..., dict]:
        found = Experiment(name, summary, fn)
        EXPERIMENTS.register(name, fn)(lambda: found)
        return fn

    return register


def registry() -> dict[str, Experiment]:
    """Every experiment, by name in alphabetical order (each module imported once)."""
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return {name: EXPERIMENTS.build(name) for name in sorted(EXPERIMENTS)}


def get(name: str) -> Experiment:
    """The experiment ``name``, or one :class:`~predcode.exceptions.OptionError` line listing the choices."""
    registry()
    return EXPERIMENTS.build(name)

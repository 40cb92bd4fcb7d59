"""Exceptions raised by predcode. Each names the problem so the user can fix it."""

from __future__ import annotations


class PredcodeError(Exception):
    """Base class of every error predcode raises on purpose."""


class InputError(PredcodeError, ValueError):
    """Bad input: wrong shape, dtype, device, range, or non-finite values."""


class GraphError(PredcodeError, ValueError):
    """A model cannot be turned into a predictive coding graph as asked."""


class OptionError(PredcodeError, ValueError):
    """An unknown or inconsistent option."""


class DivergenceError(PredcodeError, FloatingPointError):
    """The energy became non-finite or exploded during relaxation.

    Attributes:
        step: inference step at which divergence was first seen (0 = initial state).
        node: name of the node whose energy diverged first.
        energy: the offending energy value.
    """

    def __init__(self, step: int, node: str, energy: float, reason: str) -> None:
        self.step, self.node, self.energy = step, node, energy
        super().__init__(
            f"energy diverged at inference step {step} in node '{node}' "
            f"(energy {energy:.4g}: {reason}); lower the inference rate or the step count"
        )

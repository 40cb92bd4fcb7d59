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
        cause: the likely cause and its fix.  At step 0 the energy is already non-finite
            or huge before any inference step, so the inference rate is not the cause: an
            input, target or clamped value of extreme size, or weights a too-large weight
            learning rate blew up.  Later, the relaxation itself diverged.
    """

    def __init__(self, step: int, node: str, energy: float, reason: str, cause: str | None = None) -> None:
        self.step, self.node, self.energy, self.reason = step, node, energy, reason
        if cause is None:
            cause = START_CAUSE if step == 0 else "the relaxation diverged: lower the inference rate or the step count"
        self.cause = cause
        super().__init__(
            f"energy diverged at inference step {step} in node '{node}' (energy {energy:.4g}: {reason}); {cause}"
        )

    def with_cause(self, cause: str, where: str = "") -> DivergenceError:
        """The same error with a better diagnosis (and ``where`` it happened) prepended."""
        err = DivergenceError(self.step, self.node, self.energy, self.reason, cause)
        if where:
            err.args = (f"{where}: {err.args[0]}",)
        return err


START_CAUSE = (
    "already at the start, before any inference step, so not the inference rate: "
    "an input, target or clamped value is too large, or the weights are (lower the "
    "weight learning rate)"
)


class NonFiniteError(PredcodeError, FloatingPointError):
    """A loss, gradient or parameter became NaN or infinite in a training step.

    The message names the quantity (the loss, or the parameter by name), when it happened
    (the gradient or the weight update) and the likely cause with its fix."""

"""Learning rules behind one interface (:class:`LearningRule`)."""

from .._moved import renamed
from ..learning import StepStats, accumulate_weight_gradients
from .base import LearningRule
from .bp import Backprop
from .dfa import DirectFeedbackAlignment  # other credit-assignment rules: dfa, dtp, ep, fa
from .dtp import DifferenceTargetPropagation
from .ep import EquilibriumPropagation
from .fa import FeedbackAlignment
from .feedback import LearnedFeedback
from .fixed_prediction import FixedPrediction
from .il import ErrorPC, InferenceLearning
from .ipc import IncrementalPC
from .montecarlo import MonteCarloPC  # Monte Carlo PC: Langevin on the free nodes
from .nudging import Nudging  # output nudging around IL and ePC
from .proximal import ProximalInferenceLearning
from .zil import ZIL

__all__ = [
    "LearningRule",
    "StepStats",
    "accumulate_weight_gradients",
    "Backprop",
    "FixedPrediction",
    "InferenceLearning",
    "ErrorPC",
    "IncrementalPC",
    "ZIL",
    "ProximalInferenceLearning",
    "LearnedFeedback",
    "FeedbackAlignment",
    "DirectFeedbackAlignment",
    "DifferenceTargetPropagation",
    "EquilibriumPropagation",
    "Nudging",
    "MonteCarloPC",
]


def __getattr__(name: str) -> object:
    """``weight_energy_backward``, the old name of :func:`~predcode.learning.accumulate_weight_gradients`,
    works for one release with a deprecation warning."""
    if name == "weight_energy_backward":
        return renamed(
            "predcode.rules.weight_energy_backward",
            "predcode.learning.accumulate_weight_gradients",
            accumulate_weight_gradients,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

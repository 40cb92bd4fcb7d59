"""Learning rules behind one interface (:class:`LearningRule`)."""

from .base import LearningRule, StepStats, weight_energy_backward
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
    "weight_energy_backward",
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

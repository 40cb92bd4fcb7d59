"""Learning rules behind one interface (:class:`LearningRule`)."""

from .base import LearningRule, StepStats, weight_energy_backward
from .bp import Backprop
from .fixed_prediction import FixedPrediction
from .il import ErrorPC, InferenceLearning
from .ipc import IncrementalPC
from .zil import ZIL

__all__ = ["LearningRule", "StepStats", "weight_energy_backward", "Backprop", "FixedPrediction",
           "InferenceLearning", "ErrorPC", "IncrementalPC", "ZIL"]
from .proximal import ProximalInferenceLearning  # noqa: E402
__all__.append("ProximalInferenceLearning")
from .feedback import LearnedFeedback  # noqa: E402
__all__.append("LearnedFeedback")
from .fa import FeedbackAlignment  # noqa: E402  (other credit-assignment rules)
from .dfa import DirectFeedbackAlignment  # noqa: E402
from .dtp import DifferenceTargetPropagation  # noqa: E402
from .ep import EquilibriumPropagation  # noqa: E402
__all__ += ["FeedbackAlignment", "DirectFeedbackAlignment", "DifferenceTargetPropagation",
            "EquilibriumPropagation"]
from .nudging import Nudging  # noqa: E402  (output nudging around IL and ePC)
__all__.append("Nudging")
from .montecarlo import MonteCarloPC  # noqa: E402  (Monte Carlo PC: Langevin on the free nodes)
__all__.append("MonteCarloPC")

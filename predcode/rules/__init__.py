"""Learning rules behind one interface (:class:`LearningRule`)."""

from .base import LearningRule, StepStats, weight_energy_backward
from .bp import Backprop
from .fixed_prediction import FixedPrediction
from .il import InferenceLearning
from .ipc import IncrementalPC
from .zil import ZIL

__all__ = ["LearningRule", "StepStats", "weight_energy_backward", "Backprop", "FixedPrediction",
           "InferenceLearning", "IncrementalPC", "ZIL"]
from .proximal import ProximalInferenceLearning  # noqa: E402
__all__.append("ProximalInferenceLearning")

"""predcode: predictive coding networks that learn by inference learning, on PyTorch."""

from .energy import Bernoulli, Categorical, Energy, Gaussian
from .errors import DivergenceError, GraphError, InputError, OptionError, PredcodeError
from .convert import convert, insert_nodes, layered
from .graph import PCGraph
from .inference import (Euler, GradientDescent, Heun, OptimizerSolver, SGD, Solver, StopRule,
                        Trace, Variables, relax)
from .node import Node
from .rules import (Backprop, ErrorPC, FixedPrediction, IncrementalPC, InferenceLearning, LearningRule,
                    StepStats, ZIL)

__version__ = "0.2.0"  # the one place the version is written (pyproject reads it)

__all__ = [
    "Bernoulli", "Categorical", "Energy", "Gaussian", "DivergenceError", "GraphError",
    "InputError", "OptionError", "PredcodeError", "PCGraph", "Euler", "GradientDescent", "Heun",
    "OptimizerSolver", "SGD", "Solver", "StopRule", "Trace", "Variables", "relax", "Node", "Backprop", "ErrorPC",
    "FixedPrediction", "IncrementalPC", "InferenceLearning", "LearningRule", "StepStats", "ZIL",
    "convert", "insert_nodes", "layered", "__version__",
]
from .rules.nudging import Nudging  # noqa: E402  (output nudging around IL and ePC)
__all__.append("Nudging")
from .models.bidirectional import Bidirectional  # noqa: E402  (bidirectional PC)
__all__.append("Bidirectional")

from .rules.montecarlo import MonteCarloPC  # noqa: E402  (Monte Carlo PC)
from .temporal import MatrixGaussian, TemporalPC  # noqa: E402  (temporal PC)
__all__ += ["MonteCarloPC", "MatrixGaussian", "TemporalPC"]

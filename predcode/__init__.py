"""predcode: predictive coding networks that learn by inference learning, on PyTorch."""

from .convert import convert, insert_nodes, layered
from .energy import Bernoulli, Categorical, Energy, Gaussian
from .exceptions import DivergenceError, GraphError, InputError, OptionError, PredcodeError
from .graph import PCGraph
from .inference import SGD, Euler, GradientDescent, Heun, OptimizerSolver, Solver, StopRule, Trace, Variables, relax
from .models.bidirectional import Bidirectional  # bidirectional PC
from .node import Node
from .rules import ZIL, Backprop, ErrorPC, FixedPrediction, IncrementalPC, InferenceLearning, LearningRule, StepStats
from .rules.montecarlo import MonteCarloPC  # Monte Carlo PC
from .rules.nudging import Nudging  # output nudging around IL and ePC
from .temporal import MatrixGaussian, TemporalPC  # temporal PC

__version__ = "0.2.0"  # the one place the version is written (pyproject reads it)

__all__ = [
    "Bernoulli",
    "Categorical",
    "Energy",
    "Gaussian",
    "DivergenceError",
    "GraphError",
    "InputError",
    "OptionError",
    "PredcodeError",
    "PCGraph",
    "Euler",
    "GradientDescent",
    "Heun",
    "OptimizerSolver",
    "SGD",
    "Solver",
    "StopRule",
    "Trace",
    "Variables",
    "relax",
    "Node",
    "Backprop",
    "ErrorPC",
    "FixedPrediction",
    "IncrementalPC",
    "InferenceLearning",
    "LearningRule",
    "StepStats",
    "ZIL",
    "convert",
    "insert_nodes",
    "layered",
    "__version__",
    "Nudging",
    "Bidirectional",
    "MonteCarloPC",
    "MatrixGaussian",
    "TemporalPC",
]

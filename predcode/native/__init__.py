"""Native kernels: the whole inference-learning step of common graphs in one C call.

:mod:`predcode.native.chain` runs dense chains (``Linear`` layers between element-wise
activations, the most common predictive coding network); :mod:`predcode.native.build`
compiles the C source once per machine and loads it.  Rules take these paths by
themselves where they apply (:class:`predcode.InferenceLearning`, :class:`predcode.ErrorPC`
with a fixed step count and gradient descent or momentum SGD on the CPU); every other case
keeps the PyTorch path, with the same numbers.
"""

from .build import NativeUnavailable, enabled, load
from .chain import ChainPlan, chain_plan

__all__ = ["ChainPlan", "NativeUnavailable", "chain_plan", "enabled", "load"]

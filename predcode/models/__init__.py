"""Model factories: ordinary ``nn.Module`` s with :class:`~predcode.Node` markers."""

from .mlp import ACTIVATIONS, activation, mlp

__all__ = ["ACTIVATIONS", "activation", "mlp"]

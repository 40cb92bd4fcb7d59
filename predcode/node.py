"""``Node``: the marker a user places in an ordinary forward pass, like a layer.

In a plain forward pass a ``Node`` is the identity, so the model still runs (and trains
by backprop) unchanged.  When predcode builds the predictive coding graph, every call of
a ``Node`` becomes a value node ``x_i`` whose prediction ``mu_i`` is whatever flowed
into it, and whose energy is ``Node.energy(x_i, mu_i)``.  A node called several times in
one forward pass (a recurrent cell unrolled in time) gives one value node per call,
sharing the energy module.  The value node is named after the ``Node``'s attribute
name in the model (``"h"``, ``"h:1"`` for a second call), or after ``name`` when given
(:func:`predcode.convert.insert_nodes` names its nodes after the layer they follow).
"""

from __future__ import annotations

from torch import Tensor, nn

from .energy import Energy, make_energy


class Node(nn.Module):
    """A value node with its energy (Gaussian squared error by default).

    Args:
        energy: an :class:`~predcode.energy.Energy` or its name (``"se"``, ``"ce"``,
            ``"bernoulli"``).
        name: the value node's name in the graph (default: the attribute name).
    """

    def __init__(self, energy: Energy | str = "se", name: str | None = None) -> None:
        super().__init__()
        self.energy = make_energy(energy)
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}" if self.name else ""

r"""Layered chains: graphs whose value nodes form one line, each predicted through one
``nn.Linear`` between element-wise maps.

.. math:: x_0 \to x_1 \to \dots \to x_L, \qquad
          \mu_l = \mathrm{post}_l\big(W_l\, \mathrm{pre}_l(x_{l-1}) + b_l\big),

where ``pre`` and ``post`` are (possibly empty) sequences of element-wise activation
modules: both MLP forms of :func:`predcode.models.mlp` (``Linear -> act`` and the
act-first ``act -> Linear``) are chains.  On a chain the state update of a hidden node
can be written out with the weights as explicit matrices,

.. math:: -\frac{\partial E}{\partial x_l} = -e_l + \mathrm{pre}_{l+1}'(x_l) \odot
          W_{l+1}^\top \big(\mathrm{post}_{l+1}'(h_{l+1}) \odot e_{l+1}\big),
          \qquad h_{l+1} = W_{l+1}\,\mathrm{pre}_{l+1}(x_l) + b_{l+1},

which is what the learned-feedback rule (:mod:`predcode.rules.feedback`, ``W^T`` replaced
by a separate matrix ``B``) and the error-neuron circuit (:mod:`predcode.bio.circuit`) need.
The derivatives of the element-wise maps act on a node's own value only (a vector-Jacobian
product of an element-wise function is a multiplication by its derivative), so no weight
enters them.  Anything else is a :class:`~predcode.exceptions.GraphError` naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .closed_form import ELEMENTWISE, DensePredictor, split_dense
from .exceptions import GraphError
from .graph import PCGraph

__all__ = ["ELEMENTWISE", "ChainLayer", "as_chain", "angle"]


@dataclass
class ChainLayer:
    """The predictor of node ``child`` from node ``parent = child - 1``:
    ``mu = post(linear(pre(x_parent)))`` (the decomposition of :mod:`predcode.closed_form`)."""

    parent: int
    child: int
    dense: DensePredictor

    @property
    def pre(self) -> list[nn.Module]:
        return self.dense.pre

    @property
    def post(self) -> list[nn.Module]:
        return self.dense.post

    @property
    def linear(self) -> nn.Linear:
        return self.dense.linear

    @property
    def weight(self) -> Tensor:
        return self.dense.linear.weight

    def forward(self, x_parent: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(a, h, mu)``: the linear layer's input ``a = pre(x)``, its output ``h`` and the
        prediction ``mu = post(h)``."""
        pre, post = self.dense.forward(x_parent)
        return pre[-1], post[0], post[-1]

    def post_vjp(self, h: Tensor, e: Tensor) -> Tensor:
        r"""``post'(h) ⊙ e``: the child's error seen at the linear layer's output (``δ``)."""
        return self.dense.post_vjp(h, e)

    def pre_vjp(self, x_parent: Tensor, v: Tensor) -> Tensor:
        r"""``pre'(x) ⊙ v``: a feedback signal ``v`` (at the linear layer's input) seen by
        the parent's value unit."""
        return self.dense.pre_vjp(x_parent, v)


def _split(graph: PCGraph, index: int) -> ChainLayer:
    slot = graph.slots[index]
    if slot.predictor is None or len(slot.parents) != 1 or slot.parents[0] != index - 1:  # an input has no parents
        raise GraphError(
            f"node '{slot.name}' is predicted from {[graph.names[p] for p in slot.parents]};"
            " a layered chain predicts every node from the node just before it"
        )
    try:
        dense = split_dense(slot.predictor)
    except GraphError as why:
        raise GraphError(
            f"node '{slot.name}': {why}; rules written for layered chains (learned feedback, "
            "feedback alignment, target propagation, the error-neuron circuit) need every "
            "predictor to be [activation] -> nn.Linear -> [activation] (e.g. predcode.models.mlp)"
        ) from None
    return ChainLayer(index - 1, index, dense)


def as_chain(graph: PCGraph) -> list[ChainLayer]:
    """The layers of a layered chain graph (one input, then one node per layer, the last
    node the output), or a :class:`~predcode.exceptions.GraphError` saying why it is not one."""
    if len(graph.inputs) != 1 or graph.inputs[0] != 0:
        raise GraphError(
            f"a layered chain has one input, first; this graph has inputs {[graph.names[i] for i in graph.inputs]}"
        )
    if len(graph.slots) < 2:
        raise GraphError("a layered chain needs at least one predicted node")
    if graph.outputs != [len(graph.slots) - 1]:
        raise GraphError(
            f"a layered chain's only output is its last node; outputs are {[graph.names[i] for i in graph.outputs]}"
        )
    return [_split(graph, i) for i in range(1, len(graph.slots))]


def angle(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two tensors of the same shape, seen as vectors."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    cos = float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))
    return float(torch.rad2deg(torch.arccos(torch.tensor(max(-1.0, min(1.0, cos))))))

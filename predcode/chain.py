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
by a separate matrix ``B``) and the error-neuron circuit (:mod:`predcode.circuit`) need.
The derivatives of the element-wise maps act on a node's own value only (a vector-Jacobian
product of an element-wise function is a multiplication by its derivative), so no weight
enters them.  Anything else is a :class:`~predcode.errors.GraphError` naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from .errors import GraphError
from .graph import PCGraph

ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Tanh, nn.ReLU, nn.GELU, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SiLU,
    nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.CELU, nn.SELU, nn.Tanhshrink, nn.Softsign,
)


def _apply(modules: list[nn.Module], x: Tensor) -> Tensor:
    for m in modules:
        x = m(x)
    return x


def _elementwise_vjp(modules: list[nn.Module], x: Tensor, v: Tensor) -> Tensor:
    """``g'(x) * v`` for the element-wise composition ``g`` of ``modules`` (``v`` when empty)."""
    if not modules:
        return v
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        (out,) = torch.autograd.grad(_apply(modules, leaf), leaf, v)
    return out


@dataclass
class ChainLayer:
    """The predictor of node ``child`` from node ``parent = child - 1``:
    ``mu = post(linear(pre(x_parent)))``."""

    parent: int
    child: int
    pre: list[nn.Module]
    linear: nn.Linear
    post: list[nn.Module]

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    def forward(self, x_parent: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(a, h, mu)``: the linear layer's input ``a = pre(x)``, its output ``h`` and the
        prediction ``mu = post(h)``."""
        a = _apply(self.pre, x_parent)
        h = self.linear(a)
        return a, h, _apply(self.post, h)

    def post_vjp(self, h: Tensor, e: Tensor) -> Tensor:
        r"""``post'(h) ⊙ e``: the child's error seen at the linear layer's output (``δ``)."""
        return _elementwise_vjp(self.post, h, e)

    def pre_vjp(self, x_parent: Tensor, v: Tensor) -> Tensor:
        r"""``pre'(x) ⊙ v``: a feedback signal ``v`` (at the linear layer's input) seen by
        the parent's value unit."""
        return _elementwise_vjp(self.pre, x_parent, v)


def _split(graph: PCGraph, index: int) -> ChainLayer:
    slot = graph.slots[index]
    if len(slot.parents) != 1 or slot.parents[0] != index - 1:
        raise GraphError(f"node '{slot.name}' is predicted from {[graph.names[p] for p in slot.parents]};"
                         " a layered chain predicts every node from the node just before it")
    module = slot.predictor
    if not isinstance(module, fx.GraphModule):
        raise GraphError(f"node '{slot.name}': its predictor is not a traced graph")
    pre: list[nn.Module] = []
    post: list[nn.Module] = []
    linear: nn.Linear | None = None
    previous = None
    for node in module.graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise GraphError(f"node '{slot.name}': its predictor is not a single chain of layers")
            break
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
            raise GraphError(
                f"node '{slot.name}': operation '{what}' in its predictor is not an nn.Linear or "
                "an element-wise activation module; learned feedback and the error-neuron "
                "circuit need every predictor to be [activation] -> nn.Linear -> [activation] "
                "(e.g. predcode.models.mlp)")
        sub = module.get_submodule(node.target)
        if isinstance(sub, nn.Linear):
            if linear is not None:
                raise GraphError(f"node '{slot.name}': its predictor has two nn.Linear layers; "
                                 "put a Node between them")
            linear = sub
        elif isinstance(sub, ELEMENTWISE):
            (post if linear is not None else pre).append(sub)
        else:
            raise GraphError(
                f"node '{slot.name}': module '{node.target}' ({type(sub).__name__}) is neither an "
                "nn.Linear nor an element-wise activation; learned feedback and the error-neuron "
                "circuit need [activation] -> nn.Linear -> [activation] predictors")
        previous = node
    if linear is None:
        raise GraphError(f"node '{slot.name}': its predictor has no nn.Linear")
    return ChainLayer(index - 1, index, pre, linear, post)


def as_chain(graph: PCGraph) -> list[ChainLayer]:
    """The layers of a layered chain graph (one input, then one node per layer, the last
    node the output), or a :class:`~predcode.errors.GraphError` saying why it is not one."""
    if len(graph.inputs) != 1 or graph.inputs[0] != 0:
        raise GraphError(f"a layered chain has one input, first; this graph has inputs "
                         f"{[graph.names[i] for i in graph.inputs]}")
    if len(graph.slots) < 2:
        raise GraphError("a layered chain needs at least one predicted node")
    if graph.outputs != [len(graph.slots) - 1]:
        raise GraphError(f"a layered chain's only output is its last node; outputs are "
                         f"{[graph.names[i] for i in graph.outputs]}")
    return [_split(graph, i) for i in range(1, len(graph.slots))]


def angle(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two tensors of the same shape, seen as vectors."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    cos = float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))
    return float(torch.rad2deg(torch.arccos(torch.tensor(max(-1.0, min(1.0, cos))))))

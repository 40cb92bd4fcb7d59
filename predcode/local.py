r"""Closed-form local products: state gradients of dense layers without autograd.

Most predictive coding networks are built from predictors of one shape,

.. math:: \mu_c = \mathrm{post}\big(W_c\, \mathrm{pre}(x_p) + b_c\big),

a ``Linear`` layer with optional elementwise activations before (``pre``) and after it
(``post``).  For such predictors the gradient of the energy with respect to a free node
needs no autograd graph: it is the node's own error minus the errors of its children
carried back through the transposed weights,

.. math::
    \frac{\partial E}{\partial x_i} = \varepsilon_i
        - \sum_{c \in ch(i)} \mathrm{pre}'(x_i) \odot
          \Big(W_c^\top \big(\mathrm{post}'(a_c) \odot e_c\big)\Big),
    \qquad a_c = W_c\,\mathrm{pre}(x_i) + b_c,\;
    e_c = -\partial E_c / \partial \mu_c,

where :math:`\varepsilon_i = \partial E_i/\partial x_i = \pi_i (x_i - \mu_i)` for the
Gaussian energies interior nodes have.  Written out, a relaxation step is a handful of
large operations per layer (one matrix product forward, one back, and the activation's
derivative as one fused kernel), instead of an autograd graph rebuilt and walked at every
step: that per-operation overhead dominates small networks on a CPU.

:func:`local_products` recognises graphs whose moving predictions all have this shape and
returns a :class:`LocalProducts` gradient function; any other graph (convolutions,
branches inside a predictor, non-Gaussian free nodes) keeps the autograd path.  Both give
the same derivative (tested against autograd in float64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor, fx, nn

from .energy import Gaussian

if TYPE_CHECKING:  # pragma: no cover
    from .inference import EnergyLandscape

Activation = Callable[[Tensor], Tensor]
Backward = Callable[[Tensor, Tensor, Tensor], Tensor]  # (grad, input, output) -> grad wrt input


def _backward_of(module: nn.Module) -> Backward | None:
    """The vector-Jacobian product of an elementwise activation: ``g * f'(a)`` as one aten
    kernel, given the activation's input ``a`` and output ``y``; ``None`` if unsupported."""
    aten = torch.ops.aten
    if isinstance(module, nn.Identity):
        return lambda g, a, y: g
    if isinstance(module, nn.Tanh):
        return lambda g, a, y: aten.tanh_backward(g, y)
    if isinstance(module, nn.Sigmoid):
        return lambda g, a, y: aten.sigmoid_backward(g, y)
    if isinstance(module, nn.ReLU):
        return lambda g, a, y: aten.threshold_backward(g, y, 0)
    if isinstance(module, nn.GELU):
        approximate = module.approximate
        return lambda g, a, y: aten.gelu_backward(g, a, approximate=approximate)
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        return lambda g, a, y: aten.leaky_relu_backward(g, a, slope, False)
    if isinstance(module, nn.SiLU):
        return lambda g, a, y: aten.silu_backward(g, a)
    return None


@dataclass
class DensePredictor:
    r"""A predictor :math:`\mu = \mathrm{post}(W\,\mathrm{pre}(x) + b)` taken apart."""

    pre: list[tuple[nn.Module, Backward]]
    linear: nn.Linear
    post: list[tuple[nn.Module, Backward]]

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor, list[Tensor], Tensor]:
        """``(inputs of each pre activation and the linear input, a, outputs of each post
        activation's input chain, mu)``: what the backward products need."""
        pre_inputs = []
        h = x
        for module, _ in self.pre:
            pre_inputs.append(h)
            h = module(h)
        pre_inputs.append(h)
        a = self.linear(h)
        post_inputs = []
        y = a
        for module, _ in self.post:
            post_inputs.append(y)
            y = module(y)
        post_inputs.append(y)
        return pre_inputs, a, post_inputs, y

    def backward(self, error: Tensor, pre_inputs: list[Tensor], post_inputs: list[Tensor]
                 ) -> Tensor:
        r""":math:`J^\top e = \mathrm{pre}'(x) \odot W^\top(\mathrm{post}'(a) \odot e)`."""
        g = error
        for k in range(len(self.post) - 1, -1, -1):
            g = self.post[k][1](g, post_inputs[k], post_inputs[k + 1])
        g = g @ self.linear.weight
        for k in range(len(self.pre) - 1, -1, -1):
            g = self.pre[k][1](g, pre_inputs[k], pre_inputs[k + 1])
        return g


def dense_predictor(predictor: nn.Module) -> DensePredictor | None:
    """Take apart a predictor ``GraphModule`` that is a chain ``pre* -> Linear -> post*``
    of one parent; ``None`` for any other predictor."""
    if not isinstance(predictor, fx.GraphModule):
        return None
    nodes = list(predictor.graph.nodes)
    if len(nodes) < 3 or nodes[0].op != "placeholder" or nodes[-1].op != "output":
        return None
    chain: list[nn.Module] = []
    previous = nodes[0]
    for node in nodes[1:-1]:
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            return None
        chain.append(predictor.get_submodule(node.target))
        previous = node
    if nodes[-1].args != (previous,):
        return None
    linears = [k for k, m in enumerate(chain) if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        return None
    k = linears[0]
    pre, post = [], []
    for side, modules in ((pre, chain[:k]), (post, chain[k + 1:])):
        for module in modules:
            backward = _backward_of(module)
            if backward is None:
                return None
            side.append((module, backward))
    return DensePredictor(pre, chain[k], post)


class LocalProducts:
    """State gradients and per-node energies of an :class:`EnergyLandscape` in closed form."""

    def __init__(self, landscape: "EnergyLandscape", dense: dict[int, DensePredictor]) -> None:
        self.landscape = landscape
        self.dense = dense

    def __call__(self, states: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """``(per-sample dE/dx for each free state, energy of every slot summed over the
        batch)`` at ``states``; the same numbers as autograd on ``energy_row``."""
        with torch.no_grad():  # closed form: no autograd graph, not even to the weights
            return self._evaluate(states)

    def _evaluate(self, states: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        land = self.landscape
        graph = land.graph
        values = land.current(states)
        predictions = list(land.predictions)
        saved: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
        for i in land.dynamic:
            parent = graph.slots[i].parents[0]
            pre_inputs, _, post_inputs, mu = self.dense[i].forward(values[parent])
            saved[i] = (pre_inputs, post_inputs)
            predictions[i] = mu
        for i in land.leaves:
            values[i] = graph.slots[i].energy.mode(predictions[i])
        zero = values[0].new_zeros(())
        row = [zero] * len(values)
        for i in land.scored:
            row[i] = graph.slots[i].energy(values[i], predictions[i]).sum()
        errors: dict[int, Tensor] = {}

        def error(c: int) -> Tensor:
            if c not in errors:
                errors[c] = graph.slots[c].energy.error(values[c], predictions[c])
            return errors[c]

        grads = []
        for i in land.free:
            slot = graph.slots[i]
            g = None if slot.is_input else error(i)
            for c in slot.children:
                pre_inputs, post_inputs = saved[c]
                back = self.dense[c].backward(error(c), pre_inputs, post_inputs)
                g = -back if g is None else g - back
            grads.append(torch.zeros_like(values[i]) if g is None else g)
        return grads, torch.stack(row)


def local_products(landscape: "EnergyLandscape") -> LocalProducts | None:
    """A :class:`LocalProducts` for ``landscape`` if every moving prediction is a dense
    predictor of one parent and every free non-input node is Gaussian; else ``None``."""
    graph = landscape.graph
    dense: dict[int, DensePredictor] = {}
    for i in landscape.dynamic:
        slot = graph.slots[i]
        found = dense_predictor(slot.predictor) if len(slot.parents) == 1 else None
        if found is None:
            return None
        dense[i] = found
    for i in landscape.free:
        slot = graph.slots[i]
        if not slot.is_input and not isinstance(slot.energy, Gaussian):
            return None
        if any(c not in dense for c in slot.children):
            return None
    return LocalProducts(landscape, dense)

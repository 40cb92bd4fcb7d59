r"""Closed-form local products: state gradients of dense layers without autograd.

Most predictive coding networks are built from predictors of one shape,

.. math:: \mu_c = \mathrm{post}\big(W_c\, \mathrm{pre}(x_p) + b_c\big),

a ``Linear`` layer with optional elementwise activations before (``pre``) and after it
(``post``).  For such predictors the gradient of the energy with respect to a free node
needs no autograd graph: it is the node's own error minus the errors of its children
carried back through the transposed weights,

.. math::
    \frac{\partial E}{\partial x_i} = e_i
        - \sum_{c \in ch(i)} \mathrm{pre}'(x_i) \odot
          \Big(W_c^\top \big(\mathrm{post}'(a_c) \odot e_c\big)\Big),
    \qquad a_c = W_c\,\mathrm{pre}(x_i) + b_c,\;
    e_c = -\partial E_c / \partial \mu_c,

where :math:`e_i = \pi_i (x_i - \mu_i) = \partial E_i/\partial x_i` for the Gaussian
energies interior nodes have (notation: :mod:`predcode.inference`).  Written out, a relaxation step is a handful of
large operations per layer (one matrix product forward, one back, and the activation's
derivative as one fused kernel), instead of an autograd graph rebuilt and walked at every
step: that per-operation overhead dominates small networks on a CPU.

:func:`closed_form_gradients` recognises graphs whose moving predictions all have this shape and
returns a :class:`ClosedFormGradients` gradient function; any other graph (convolutions,
branches inside a predictor, non-Gaussian free nodes) keeps the autograd path.  Both give
the same derivative (tested against autograd in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, fx, nn

from .energy import Gaussian
from .exceptions import GraphError

if TYPE_CHECKING:  # pragma: no cover
    from .graph import PCGraph
    from .inference import EnergyLandscape, ErrorFront

ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Tanh,
    nn.ReLU,
    nn.GELU,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Mish,
    nn.CELU,
    nn.SELU,
    nn.Tanhshrink,
    nn.Softsign,
)
"""Parameter-free element-wise activation modules a dense predictor may hold."""

Backward = Callable[[Tensor, Tensor, Tensor], Tensor]  # (grad, input, output) -> grad wrt input


def _aten_backward(module: nn.Module) -> Backward | None:
    """The vector-Jacobian product ``g * f'(a)`` of an element-wise activation as one aten
    kernel, given the activation's input ``a`` and output ``y``; ``None`` where there is none
    here (those take autograd, :func:`_autograd_backward`)."""
    aten = torch.ops.aten
    if isinstance(module, nn.Identity):
        return lambda g, a, y: g
    if isinstance(module, nn.Tanh):
        return lambda g, a, y: aten.tanh_backward(g, y)
    if isinstance(module, nn.Sigmoid):
        return lambda g, a, y: aten.sigmoid_backward(g, y)
    if type(module) is nn.ReLU:
        return lambda g, a, y: aten.threshold_backward(g, y, 0)
    if isinstance(module, nn.GELU):
        approximate = module.approximate
        return lambda g, a, y: aten.gelu_backward(g, a, approximate=approximate)
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        return lambda g, a, y: aten.leaky_relu_backward(g, a, slope, False)
    if isinstance(module, nn.SiLU):
        return lambda g, a, y: aten.silu_backward(g, a)
    if type(module) is nn.Hardtanh:
        lo, hi = module.min_val, module.max_val
        return lambda g, a, y: aten.hardtanh_backward(g, a, lo, hi)
    return None


def _autograd_backward(module: nn.Module) -> Backward:
    """``g * f'(a)`` by autograd through the module (any element-wise activation)."""

    def backward(g: Tensor, a: Tensor, y: Tensor) -> Tensor:
        with torch.enable_grad():
            leaf = a.detach().requires_grad_()
            (out,) = torch.autograd.grad(module(leaf), leaf, g)
        return out

    return backward


@dataclass
class DensePredictor:
    r"""A predictor :math:`\mu = \mathrm{post}(W\,\mathrm{pre}(x) + b)` taken apart:
    ``pre`` and ``post`` are element-wise activation modules, ``linear`` the layer."""

    pre: list[nn.Module]
    linear: nn.Linear
    post: list[nn.Module]

    def __post_init__(self) -> None:
        fast = [_aten_backward(m) for m in (*self.pre, *self.post)]
        self.closed_form = all(b is not None for b in fast)
        """Whether every activation's derivative is one aten kernel (no autograd at all)."""
        backs = [b or _autograd_backward(m) for b, m in zip(fast, (*self.pre, *self.post))]
        self._pre_back, self._post_back = backs[: len(self.pre)], backs[len(self.pre) :]

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    @staticmethod
    def _chain(modules: list[nn.Module], x: Tensor) -> list[Tensor]:
        """``[x, m1(x), m2(m1(x)), ...]``: every activation's input, then the result."""
        out = [x]
        for module in modules:
            out.append(module(out[-1]))
        return out

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        r"""``(pre chain, post chain)``: ``pre[-1]`` is the linear layer's input
        :math:`\mathrm{pre}(x)`, ``post[0]`` its output :math:`a = W\,\mathrm{pre}(x) + b`
        and ``post[-1]`` the prediction :math:`\mu`."""
        pre = self._chain(self.pre, x)
        return pre, self._chain(self.post, self.linear(pre[-1]))

    def backward_post(self, g: Tensor, post: list[Tensor]) -> Tensor:
        r""":math:`\mathrm{post}'(a) \odot g` along a saved post chain."""
        for k in range(len(self.post) - 1, -1, -1):
            g = self._post_back[k](g, post[k], post[k + 1])
        return g

    def backward_pre(self, g: Tensor, pre: list[Tensor]) -> Tensor:
        r""":math:`\mathrm{pre}'(x) \odot g` along a saved pre chain."""
        for k in range(len(self.pre) - 1, -1, -1):
            g = self._pre_back[k](g, pre[k], pre[k + 1])
        return g

    def backward(self, error: Tensor, pre: list[Tensor], post: list[Tensor]) -> Tensor:
        r""":math:`J^\top e = \mathrm{pre}'(x) \odot W^\top(\mathrm{post}'(a) \odot e)`."""
        return self.backward_pre(self.backward_post(error, post) @ self.linear.weight, pre)

    def post_vjp(self, a: Tensor, g: Tensor) -> Tensor:
        r""":math:`\mathrm{post}'(a) \odot g` from the linear layer's output ``a`` alone."""
        return self.backward_post(g, self._chain(self.post, a)) if self.post else g

    def pre_vjp(self, x: Tensor, g: Tensor) -> Tensor:
        r""":math:`\mathrm{pre}'(x) \odot g` from the parent's value ``x`` alone."""
        return self.backward_pre(g, self._chain(self.pre, x)) if self.pre else g


def split_dense(predictor: nn.Module) -> DensePredictor:
    """Take apart a predictor ``GraphModule`` that is a chain ``pre* -> Linear -> post*`` of
    one parent, or raise :class:`GraphError` saying what in it is not."""
    if not isinstance(predictor, fx.GraphModule):
        raise GraphError("its predictor is not a traced graph")
    nodes = list(predictor.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise GraphError(f"its predictor reads {len(placeholders)} nodes, not one")
    pre: list[nn.Module] = []
    post: list[nn.Module] = []
    linear: nn.Linear | None = None
    previous = placeholders[0]
    for node in nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise GraphError("its predictor is not a single chain of layers")
            break
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            what = getattr(node.target, "__name__", node.target)  # a function's name, or the module's path
            raise GraphError(
                f"operation '{what}' in its predictor is not an nn.Linear or an element-wise activation module"
            )
        module = predictor.get_submodule(node.target)
        if isinstance(module, nn.Linear):
            if linear is not None:
                raise GraphError("its predictor has two nn.Linear layers; put a Node between them")
            linear = module
        elif isinstance(module, ELEMENTWISE):
            (post if linear is not None else pre).append(module)
        else:
            raise GraphError(
                f"module '{node.target}' ({type(module).__name__}) in its predictor "
                "is neither an nn.Linear nor an element-wise activation"
            )
        previous = node
    if linear is None:
        raise GraphError("its predictor has no nn.Linear")
    return DensePredictor(pre, linear, post)


def dense_predictor(predictor: nn.Module) -> DensePredictor | None:
    """:func:`split_dense` whose every activation has a one-kernel derivative, else ``None``."""
    try:
        found = split_dense(predictor)
    except GraphError:
        return None
    return found if found.closed_form else None


Chains = dict[int, tuple[list[Tensor], list[Tensor]]]
"""Per slot, the pre and post chains of its dense predictor (:meth:`DensePredictor.forward`)."""


class ClosedFormGradients:
    """State gradients, per-node energies and weight gradients of an
    :class:`EnergyLandscape` in closed form.

    ``chains`` may hold the saved chains of the constant predictions (those whose parents
    are all clamped, e.g. computed by :func:`dense_forward`), which the weight gradients need.
    """

    def __init__(
        self, landscape: EnergyLandscape, dense: dict[int, DensePredictor], chains: Chains | None = None
    ) -> None:
        self.landscape = landscape
        self.dense = dense
        self.chains = dict(chains or {})

    def __call__(self, states: Sequence[Tensor], front: ErrorFront | None = None) -> tuple[list[Tensor], Tensor]:
        """``(per-sample gradient for each of the solver's variables, energy of every slot
        summed over the batch)`` at ``states``; the same numbers as autograd on
        ``node_energies`` (``front``: see :meth:`EnergyLandscape.assemble`)."""
        if self.landscape.errors:
            return self._error_gradients(states)
        with torch.no_grad():  # closed form: no autograd graph, not even to the weights
            values, predictions, saved, row, _ = self._evaluate(states, front)
            errors = _Errors(self.landscape.graph, values, predictions)
            grads = []
            for i in self.landscape.free:
                slot = self.landscape.graph.slots[i]
                g = None if slot.is_input else errors(i)
                for c in slot.children:
                    if c not in saved:  # an unchanged prediction: its error is still zero
                        continue
                    back = self.dense[c].backward(errors(c), *saved[c])
                    g = -back if g is None else g - back
                grads.append(torch.zeros_like(values[i]) if g is None else g)
            return grads, row

    def _error_gradients(self, states: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        r"""ePC's gradients in closed form: one reverse sweep of the forward sweep
        :math:`x_i = \mu_i + d_i`.  With :math:`G_i = \mathrm{d}E/\mathrm{d}x_i` through
        everything downstream, taken in reverse topological order,

        .. math:: G_i = e_i + \sum_{c \in ch(i)} J_{ci}^\top s_c, \qquad
                  s_c = -e_c + [c \text{ has an error coordinate}]\, G_c,

        and :math:`\partial E/\partial d_i = G_i` (zero at clamped units, whose value
        does not follow :math:`\mu_c`); a free input's state gradient is the same
        :math:`G_i` without the :math:`e_i` term (inputs have no energy)."""
        land = self.landscape
        graph = land.graph
        with torch.no_grad():
            values, predictions, saved, row, differences = self._evaluate(states)
            errors = _Errors(graph, values, predictions, differences)
            total: dict[int, Tensor] = {}
            for i in reversed(land.free):  # free is in topological order
                slot = graph.slots[i]
                g = None if slot.is_input else errors(i)
                for c in slot.children:
                    signal = -errors(c)
                    if c in land.errors:
                        through = total[c]
                        if c in land.masks:
                            through = through.masked_fill(land.masks[c], 0.0)
                        signal = signal + through
                    back = self.dense[c].backward(signal, *saved[c])
                    g = back if g is None else g + back
                total[i] = torch.zeros_like(values[i]) if g is None else g
            return [total[i] for i in land.free], row

    def _evaluate(
        self, states: Sequence[Tensor], front: ErrorFront | None = None
    ) -> tuple[list[Tensor], list[Tensor | None], Chains, Tensor, dict[int, Tensor]]:
        """Values (free leaves at their mode), predictions, the chains of the moving
        predictions, and every slot's energy summed over the batch, at ``states`` (the
        solver's variables: states, or errors through the landscape's forward sweep)."""
        land = self.landscape
        graph = land.graph
        saved: Chains = {}
        if land.errors:

            def predict(i: int, values: list[Tensor]) -> Tensor:
                saved[i] = self.dense[i].forward(values[graph.slots[i].parents[0]])
                return saved[i][1][-1]

            values, predictions = land.sweep(states, predict)
            differences = land.error_differences(states, values, predictions)
            return values, predictions, saved, land.node_totals(values, predictions, differences), differences
        values = land.current(states)
        predictions = list(land.predictions)
        recomputed, unchanged = land.split_dynamic(front)
        for i in recomputed:
            if i in self.chains and land.unmoved_parents(i, front):  # the feed-forward chain holds
                pre, post = self.chains[i]
            else:
                pre, post = self.dense[i].forward(values[graph.slots[i].parents[0]])
            saved[i] = (pre, post)
            predictions[i] = post[-1]
        land.complete(values, predictions, unchanged)  # under no_grad: its detach changes nothing
        return values, predictions, saved, land.node_totals(values, predictions, {}), {}

    def weight_gradients(
        self, states: Sequence[Tensor], names: dict[int, tuple[str, str | None]]
    ) -> tuple[dict[str, Tensor], Tensor]:
        r"""``(dE/dθ for every dense layer's weight and bias, per-node batch-mean energies)``
        at ``states``: the Hebbian products

        .. math:: \frac{\partial E}{\partial W_i} = -\frac1B \sum_b \delta_{bi}\, h_{bi}^\top,
                  \qquad \frac{\partial E}{\partial b_i} = -\frac1B \sum_b \delta_{bi},
                  \qquad \delta_i = \mathrm{post}'(a_i) \odot e_i,\; h_i = \mathrm{pre}(x_{pa(i)}),

        summed over every node a shared layer predicts.  ``names`` maps ``id(linear)`` to
        the names of its weight and bias."""
        with torch.no_grad():
            land = self.landscape
            graph = land.graph
            values, predictions, saved, row, differences = self._evaluate(states)
            saved = {**self.chains, **saved}
            errors = _Errors(graph, values, predictions, differences)
            batch = land.batch_size
            grads: dict[str, Tensor] = {}

            def add(name: str, g: Tensor) -> None:
                grads[name] = g if name not in grads else grads[name] + g

            for i in land.scored:
                dense = self.dense[i]
                pre, post = saved[i] if i in saved else dense.forward(values[graph.slots[i].parents[0]])
                delta = dense.backward_post(errors(i), post)
                delta2 = delta.reshape(-1, delta.shape[-1])
                h = pre[-1].reshape(-1, pre[-1].shape[-1])
                weight, bias = names[id(dense.linear)]
                scale = -1.0 / batch
                add(weight, torch.mm(delta2.T, h).mul_(scale))
                if bias is not None:
                    add(bias, delta2.sum(0).mul_(scale))
            return grads, row / batch


class _Errors:
    """Each slot's error ``e_i = -dE_i/dmu_i``, computed once when first asked for (from
    the kept difference ``x_i - mu_i`` of an error coordinate, where given)."""

    def __init__(
        self,
        graph: PCGraph,
        values: list[Tensor],
        predictions: list[Tensor | None],
        differences: dict[int, Tensor] | None = None,
    ) -> None:
        self.graph, self.values, self.predictions = graph, values, predictions
        self.differences = differences or {}
        self.cache: dict[int, Tensor] = {}

    def __call__(self, i: int) -> Tensor:
        if i not in self.cache:
            energy = self.graph.slots[i].node_energy
            if i in self.differences:
                assert isinstance(energy, Gaussian)  # error coordinates are Gaussian nodes'
                self.cache[i] = energy.error_of(self.differences[i])
            else:
                mu = self.predictions[i]
                assert mu is not None  # asked only of nodes
                self.cache[i] = energy.error(self.values[i], mu)
        return self.cache[i]


def _dense_slots(graph: PCGraph) -> dict[int, DensePredictor | None]:
    """Every non-input slot's dense predictor (one parent, a closed-form derivative for
    every activation), ``None`` where its predictor is not one (found once per graph,
    :meth:`~predcode.graph.PCGraph.memo`)."""

    def build() -> dict[int, DensePredictor | None]:
        return {
            s.index: dense_predictor(s.predictor) if s.predictor is not None and len(s.parents) == 1 else None
            for s in graph.slots
            if not s.is_input
        }

    return graph.memo("dense_slots", build)


def dense_layers(graph: PCGraph) -> dict[int, DensePredictor] | None:
    """Every non-input slot's dense predictor if all of them are dense; else ``None``."""
    found = {i: d for i, d in _dense_slots(graph).items() if d is not None}
    return found if len(found) == len(_dense_slots(graph)) else None


def dense_forward(
    graph: PCGraph, dense: dict[int, DensePredictor], inputs: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor | None], Chains]:
    """The feed-forward pass through dense predictors: ``(values, predictions, chains)``,
    the same values as :meth:`PCGraph.forward_pass` plus every predictor's saved chains."""
    given = dict(zip(graph.inputs, inputs))
    values: list[Tensor] = []  # filled in slot order: a slot's parents come before it
    predictions: list[Tensor | None] = []
    chains: Chains = {}
    for slot in graph.slots:
        if slot.is_input:
            values.append(given[slot.index])
            predictions.append(None)
            continue
        pre, post = dense[slot.index].forward(values[slot.parents[0]])
        chains[slot.index] = (pre, post)
        predictions.append(post[-1])
        values.append(slot.node_energy.mode(post[-1]))
    return values, predictions, chains


def closed_form_gradients(landscape: EnergyLandscape, chains: Chains | None = None) -> ClosedFormGradients | None:
    """A :class:`ClosedFormGradients` for ``landscape`` if every moving prediction is a dense
    predictor of one parent and every free non-input node is Gaussian; else ``None``."""
    graph = landscape.graph
    found = _dense_slots(graph)
    if any(found[i] is None for i in landscape.dynamic):
        return None
    dense = {i: d for i, d in found.items() if d is not None}
    for i in landscape.free:
        slot = graph.slots[i]
        if not slot.is_input and not isinstance(slot.energy, Gaussian):
            return None
    return ClosedFormGradients(landscape, dense, chains)

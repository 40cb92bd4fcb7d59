r"""Bidirectional predictive coding (bPC; Oliviers, Tang & Bogacz 2025, arXiv 2505.23415).

One network of value nodes :math:`x_0` (the data, e.g. an image), :math:`x_1, \dots,
x_{L-1}` (hidden) and :math:`x_L` (the label), whose energy holds a bottom-up
(discriminative) and a top-down (generative) prediction error at every layer:

.. math:: E = \sum_{l=1}^{L} \frac{\alpha_d}{2} \big\| x_l - V_l f_l(x_{l-1}) \big\|^2
          + \sum_{l=0}^{L-1} \frac{\alpha_g}{2} \big\| x_l - W_l f_{l+1}(x_{l+1}) \big\|^2 ,

with :math:`V_l, W_l` affine maps (``up[l-1]``, ``down[l]``) and :math:`f` the activation on
the hidden nodes (the data and the label enter the maps as they are).

The graph is an ordinary :class:`~predcode.graph.PCGraph`, built by composition: the
discriminative terms are the chain ``image -> h1 -> ... -> label`` of value nodes with
precision :math:`\alpha_d`; each generative term is a node ``gen{l}`` whose prediction is
the difference :math:`x_l - W_l f(x_{l+1})` and whose value is clamped at zero with
precision :math:`\alpha_g`, so that its energy is exactly
:math:`\tfrac{\alpha_g}{2}\|x_l - W_l f(x_{l+1})\|^2`.  Every learning rule, solver and query
of the library then applies unchanged: training is inference learning with the image, the
label and the ``gen`` nodes clamped (:func:`targets`), and a weight's gradient stays local
(:math:`-\alpha_d\, e^{d}_l f(x_{l-1})^\top` for :math:`V_l`,
:math:`-\alpha_g\, e^{g}_l f(x_{l+1})^\top` for :math:`W_l`).  Queries clamp other nodes
(:func:`classify`, :func:`generate`, :func:`complete`, all through
:func:`predcode.query.infer`), with the ``gen`` nodes always at zero.

With :math:`\alpha_g = 0` the energy is a discriminative PC network's; with
:math:`\alpha_d = 0`, a generative one's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checks import require_positive
from ..energy import Gaussian
from ..exceptions import InputError, OptionError
from ..graph import PCGraph
from ..inference import GradientDescent, Solver, StopRule
from ..node import Node
from ..query import Clamp, infer
from .mlp import activation


class Bidirectional(nn.Module):
    """bPC network on ``sizes = [data, hidden..., classes]`` (module docstring).

    ``forward(x)`` returns the label node's bottom-up prediction and every ``gen`` node
    (the graph's outputs, in that order); an ordinary call is the feed-forward classifier
    in its first output.
    """

    def __init__(
        self,
        sizes: Sequence[int] = (784, 256, 256, 10),
        act: str = "leaky-relu",
        alpha_disc: float = 1.0,
        alpha_gen: float = 0.1,
    ) -> None:
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise OptionError(f"bPC needs layer sizes >= 1, data first and classes last, got {sizes}")
        require_positive(alpha_disc, "alpha_disc")
        require_positive(alpha_gen, "alpha_gen")
        self.sizes, self.alpha_disc, self.alpha_gen = sizes, float(alpha_disc), float(alpha_gen)
        n = len(sizes) - 1
        self.up = nn.ModuleList(nn.Linear(sizes[k], sizes[k + 1]) for k in range(n))
        self.down = nn.ModuleList(nn.Linear(sizes[k + 1], sizes[k]) for k in range(n))
        self.acts = nn.ModuleList(activation(act) for _ in range(n - 1))
        self.nodes = nn.ModuleList(
            Node(Gaussian(alpha_disc), name="label" if k == n - 1 else f"h{k + 1}") for k in range(n)
        )
        self.gen = nn.ModuleList(Node(Gaussian(alpha_gen), name=f"gen{k}") for k in range(n))

    def _f(self, k: int, x: Tensor) -> Tensor:
        """The activation of node ``k`` (0 = data, n = label): on hidden nodes only."""
        return self.acts[k - 1](x) if 0 < k < len(self.sizes) - 1 else x

    def forward(self, x: Tensor):
        xs = [x]
        for k, (up, node) in enumerate(zip(self.up, self.nodes)):
            xs.append(node(up(self._f(k, xs[-1]))))
        gens = [gen(xs[k] - down(self._f(k + 1, xs[k + 1]))) for k, (down, gen) in enumerate(zip(self.down, self.gen))]
        return (xs[-1], *gens)

    def top_down(self, label: Tensor) -> list[Tensor]:
        """The generative sweep from a label: ``x_{l} = W_l f(x_{l+1})`` down to the data."""
        xs = [label]
        for k in reversed(range(len(self.down))):
            xs.insert(0, self.down[k](self._f(k + 1, xs[0])))
        return xs


def bidirectional(
    sizes: Sequence[int] = (784, 256, 256, 10), act: str = "leaky-relu", alpha_disc: float = 1.0, alpha_gen: float = 0.1
) -> Bidirectional:
    """Factory of :class:`Bidirectional`."""
    return Bidirectional(sizes, act, alpha_disc, alpha_gen)


def _model(graph: PCGraph) -> Bidirectional:
    if not isinstance(graph.model, Bidirectional):
        raise OptionError(f"this query needs a PCGraph of a Bidirectional model, got {type(graph.model).__name__}")
    return graph.model


def _onehot(labels: Tensor, classes: int, like: Tensor) -> Tensor:
    if labels.dtype in (torch.int64, torch.int32) and labels.dim() == 1:
        if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
            raise InputError(f"labels must be in [0, {classes}), got {labels.min()}..{labels.max()}")
        return F.one_hot(labels.long(), classes).to(like.dtype)
    if labels.shape[-1:] != (classes,):
        raise InputError(f"labels must be class indices or [batch, {classes}] vectors, got shape {tuple(labels.shape)}")
    return labels.to(like.dtype)


def targets(graph: PCGraph, labels: Tensor, like: Tensor) -> dict[str, Tensor]:
    """Training targets: the label node at the one-hot label, every ``gen`` node at zero
    (``like``: a data batch, for the batch size, dtype and device)."""
    model = _model(graph)
    b = like.shape[0]
    out = {"label": _onehot(labels, model.sizes[-1], like)}
    for k, size in enumerate(model.sizes[:-1]):
        out[f"gen{k}"] = like.new_zeros(b, size)
    return out


def _gen_clamps(graph: PCGraph, like: Tensor) -> dict[str | int, Tensor | Clamp]:
    model = _model(graph)
    return {f"gen{k}": like.new_zeros(like.shape[0], s) for k, s in enumerate(model.sizes[:-1])}


def classify(graph: PCGraph, x: Tensor, *, steps: int = 100, solver: Solver | None = None) -> Tensor:
    """The label node's value after relaxing with the data clamped (label and hidden nodes
    free, from the feed-forward pass)."""
    clamp: dict[str | int, Tensor | Clamp] = {graph.inputs[0]: x, **_gen_clamps(graph, x)}
    r = infer(graph, clamp, solver=solver or GradientDescent(0.1), stop=StopRule(max_steps=steps))
    return r.values[graph.index("label")]


def generate(graph: PCGraph, labels: Tensor, init: Tensor, *, steps: int = 200, solver: Solver | None = None) -> Tensor:
    """Data for ``labels``: the label clamped, the data node free from ``init`` (hidden
    nodes from the feed-forward pass of ``init``), relaxed ``steps`` steps."""
    model = _model(graph)
    y = _onehot(labels, model.sizes[-1], init)
    clamp: dict[str | int, Tensor | Clamp] = {"label": y, **_gen_clamps(graph, init)}
    r = infer(
        graph,
        clamp,
        init={graph.inputs[0]: init},
        solver=solver or GradientDescent(0.1),
        stop=StopRule(max_steps=steps),
    )
    return r.values[graph.inputs[0]]


def complete(graph: PCGraph, x: Tensor, known: Tensor, *, steps: int = 200, solver: Solver | None = None) -> Tensor:
    """Fill in the data where ``known`` is False: the known part clamped, the rest of the
    data, the hidden nodes and the label free (the unknown part starts at ``x``'s values
    there), relaxed ``steps`` steps."""
    if known.shape != x.shape or known.dtype != torch.bool:
        raise InputError(
            f"known must be a boolean mask of the data's shape {tuple(x.shape)}, got {known.dtype} {tuple(known.shape)}"
        )
    clamp: dict[str | int, Tensor | Clamp] = {graph.inputs[0]: Clamp(x, known), **_gen_clamps(graph, x)}
    r = infer(
        graph, clamp, init={graph.inputs[0]: x}, solver=solver or GradientDescent(0.1), stop=StopRule(max_steps=steps)
    )
    return r.values[graph.inputs[0]]

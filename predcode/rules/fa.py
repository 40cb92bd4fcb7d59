r"""Feedback alignment (Lillicrap et al. 2016): backprop with fixed random feedback weights.

On a layered chain (:mod:`predcode.chain`: node ``l`` is predicted from node ``l-1`` by
:math:`\mu_l = \mathrm{post}_l(h_l)`, :math:`h_l = W_l a_{l-1} + b_l`,
:math:`a_{l-1} = \mathrm{pre}_l(x_{l-1})`) backprop sends the output error down through the
*transposed forward weights*,

.. math:: \delta_L = \mathrm{post}_L'(h_L) \odot \frac{\partial L}{\partial \mu_L}, \qquad
          \delta_{l} = \mathrm{post}_l'(h_l) \odot \mathrm{pre}_{l+1}'(x_l) \odot
          W_{l+1}^\top \delta_{l+1}.

Feedback alignment replaces every :math:`W_{l+1}^\top` by a fixed random matrix
:math:`B_{l+1}` of the same shape, drawn once (seeded) and never learned:

.. math:: \delta_{l} = \mathrm{post}_l'(h_l) \odot \mathrm{pre}_{l+1}'(x_l) \odot
          B_{l+1}\, \delta_{l+1}, \qquad
          \frac{\partial L}{\partial W_l} \approx \mathrm{mean}_b\, \delta_l a_{l-1}^\top,
          \quad \frac{\partial L}{\partial b_l} \approx \mathrm{mean}_b\, \delta_l.

The weight update is the Hebbian product of the delivered signal and the layer's input;
the forward weights learn to *align* with :math:`B^\top`.  With :math:`B = W^\top` this is
backprop exactly (see the tests).  Only the ``nn.Linear`` weights and biases of the chain are
trained.

The helpers here (:func:`chain_pass`, :func:`output_delta`, :func:`accumulate`) are shared by
the other non-PC rules (:mod:`~predcode.rules.dfa`, :mod:`~predcode.rules.dtp`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from ..batch import Batch, Inputs, Targets, prepare_batch
from ..chain import ChainLayer, as_chain
from ..exceptions import GraphError
from ..graph import PCGraph
from ..learning import StepStats
from .base import LearningRule


def chain_of(graph: PCGraph, rule: str) -> list[ChainLayer]:
    """The chain's layers, or a :class:`GraphError` that names ``rule`` and the problem."""
    try:
        return as_chain(graph)
    except GraphError as exc:
        raise GraphError(f"{rule} runs on layered chains (e.g. predcode.models.mlp): {exc}") from None


@dataclass
class ChainPass:
    """The feed-forward pass of a chain: per layer ``a`` (the linear layer's input), ``h``
    (its output) and every node's value ``x`` (``x[0]`` the input), plus the batch."""

    layers: list[ChainLayer]
    a: list[Tensor]
    h: list[Tensor]
    x: list[Tensor]
    batch: Batch


def chain_pass(graph: PCGraph, layers: list[ChainLayer], inputs: Inputs, target: Targets) -> ChainPass:
    """Validate the batch (:func:`~predcode.rules.base.prepare_batch`) and take the linear
    layers' inputs and outputs at the feed-forward pass (no autograd)."""
    batch = prepare_batch(graph, inputs, target)
    a, h = [], []
    with torch.no_grad():
        for layer in layers:
            ai, hi, _ = layer.forward(batch.values[layer.parent])
            a.append(ai)
            h.append(hi)
    return ChainPass(layers, a, h, list(batch.values), batch)


def output_delta(graph: PCGraph, p: ChainPass) -> Tensor:
    r"""``δ_L = post_L'(h_L) ⊙ ∂L/∂μ_L`` of the batch-mean loss: the output error
    :math:`-e_L/N` seen at the top linear layer's output."""
    out = p.batch.output
    slot = graph.slots[out]
    top = p.layers[-1]
    with torch.no_grad():
        mu = p.batch.prediction
        if not isinstance(mu, Tensor):
            raise GraphError("a feedback-alignment chain has one output")
        grad_mu = -slot.node_energy.error(p.batch.target, mu) / mu.shape[0]
    return top.post_vjp(p.h[-1], grad_mu)


def accumulate(layer: ChainLayer, delta: Tensor, a: Tensor) -> None:
    r"""Add ``δ^T a`` to the weight's ``.grad`` and ``Σ_b δ`` to the bias's (``δ`` already
    carries the ``1/N`` of the batch mean)."""
    lin = layer.linear
    gw = delta.reshape(-1, delta.shape[-1]).T @ a.reshape(-1, a.shape[-1])
    lin.weight.grad = gw if lin.weight.grad is None else lin.weight.grad + gw
    if lin.bias is not None:
        gb = delta.reshape(-1, delta.shape[-1]).sum(0)
        lin.bias.grad = gb if lin.bias.grad is None else lin.bias.grad + gb


def random_matrix(shape: tuple[int, int], fan: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """Uniform in ``±1/sqrt(fan)`` (``nn.Linear``'s default range), drawn in float64 from
    ``generator`` so that the matrix does not depend on the model's dtype."""
    bound = 1.0 / max(fan, 1) ** 0.5
    b: Tensor = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return b.to(dtype=like.dtype, device=like.device)


class RandomFeedback(LearningRule):
    """A rule whose errors travel back through fixed random matrices: drawn on first use
    for a graph from ``seed`` (so a resumed run gets the same ones) by :meth:`draw`, and
    held per graph weakly (a graph the user drops is not kept alive by the rule)."""

    name = "random feedback"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._matrices: weakref.WeakKeyDictionary[PCGraph, list[Tensor]] = weakref.WeakKeyDictionary()

    def matrices(self, graph: PCGraph) -> list[Tensor]:
        """``graph``'s fixed feedback matrices, one per chain layer (:meth:`draw`)."""
        mats = self._matrices.get(graph)
        if mats is None:
            layers = chain_of(graph, self.name)
            mats = self._matrices[graph] = self.draw(layers, torch.Generator().manual_seed(self.seed))
        return mats

    def draw(self, layers: list[ChainLayer], generator: torch.Generator) -> list[Tensor]:
        """The matrices for the chain ``layers``, drawn from ``generator``."""
        raise NotImplementedError


class FeedbackAlignment(RandomFeedback):
    r"""Feedback alignment: backprop's backward pass through fixed random ``B_l`` (shape of
    :math:`W_l^\top`) instead of :math:`W_l^\top`.

    ``seed`` fixes the matrices (drawn on first use for a graph, so a resumed run gets the
    same ones); :meth:`matrices` returns them (a list, ``B[k]`` for chain layer ``k``; the
    first layer's is unused) and may be edited, e.g. set to the transposes for a check.
    """

    name = "feedback alignment"

    def draw(self, layers: list[ChainLayer], generator: torch.Generator) -> list[Tensor]:
        """``B[k]`` shaped as ``W_k^T``, in ``nn.Linear``'s range for ``W_k``'s fan."""
        return [
            random_matrix((l.weight.shape[1], l.weight.shape[0]), l.weight.shape[0], generator, l.weight)
            for l in layers
        ]

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        layers = chain_of(graph, self.name)
        B = self.matrices(graph)
        p = chain_pass(graph, layers, inputs, target)
        with torch.no_grad():
            delta = output_delta(graph, p)
            for k in range(len(layers) - 1, -1, -1):
                accumulate(layers[k], delta, p.a[k])
                if k == 0:
                    break
                signal = delta @ B[k].T  # B_k δ_k, at the input of layer k
                below = layers[k - 1]
                g_x = layers[k].pre_vjp(p.x[layers[k].parent], signal)
                delta = below.post_vjp(p.h[k - 1], g_x)
        return StepStats(p.batch.loss, p.batch.prediction)

    def __repr__(self) -> str:
        return f"FeedbackAlignment(seed={self.seed})"

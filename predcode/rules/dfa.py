r"""Direct feedback alignment (Nøkland 2016): the output error broadcast to every layer.

On a layered chain (notation of :mod:`predcode.rules.fa`) the output error
:math:`\delta_L = \mathrm{post}_L'(h_L) \odot \partial L/\partial\mu_L` reaches the input of
every linear layer :math:`k \ge 2` through its own fixed random matrix :math:`D_k` (shape
``[in_k, C]``), with no layer-to-layer backward pass:

.. math:: \delta_{k-1} = \mathrm{post}_{k-1}'(h_{k-1}) \odot \mathrm{pre}_k'(x_{k-1}) \odot
          D_k\, \delta_L, \qquad
          \frac{\partial L}{\partial W_l} \approx \mathrm{mean}_b\, \delta_l a_{l-1}^\top .

For the usual MLP (``Linear -> act`` per layer, ``pre`` empty) this is Nøkland's
:math:`\delta a_l = (B_l e) \odot f'(a_l)`.  The top layer takes backprop's (local)
gradient; only the ``nn.Linear`` weights and biases are trained.
"""

from __future__ import annotations

import torch

from ..batch import Inputs, Targets
from ..chain import ChainLayer
from ..graph import PCGraph
from ..learning import StepStats
from .fa import RandomFeedback, accumulate, chain_of, chain_pass, output_delta, random_matrix


class DirectFeedbackAlignment(RandomFeedback):
    """Direct feedback alignment with fixed random matrices drawn from ``seed``.

    :meth:`matrices` returns ``D[k]`` (shape ``[in_k, C]``: the output error to the input of
    chain layer ``k``; ``D[0]`` is unused) and may be edited.
    """

    name = "direct feedback alignment"

    def draw(self, layers: list[ChainLayer], generator: torch.Generator) -> list[torch.Tensor]:
        """``D[k]`` maps the output error to layer ``k``'s input: shape (inputs of ``W_k``, classes)."""
        classes = layers[-1].weight.shape[0]
        return [random_matrix((l.weight.shape[1], classes), classes, generator, l.weight) for l in layers]

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        layers = chain_of(graph, self.name)
        D = self.matrices(graph)
        p = chain_pass(graph, layers, inputs, target)
        with torch.no_grad():
            e = output_delta(graph, p)
            accumulate(layers[-1], e, p.a[-1])
            for k in range(len(layers) - 1, 0, -1):
                signal = e @ D[k].T  # D_k e, at the input of layer k
                g_x = layers[k].pre_vjp(p.x[layers[k].parent], signal)
                delta = layers[k - 1].post_vjp(p.h[k - 1], g_x)
                accumulate(layers[k - 1], delta, p.a[k - 1])
        return StepStats(p.batch.loss, p.batch.prediction)

    def __repr__(self) -> str:
        return f"DirectFeedbackAlignment(seed={self.seed})"

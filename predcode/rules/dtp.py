r"""Difference target propagation (Lee, Zhang, Fischer & Bengio 2015).

On a layered chain (notation of :mod:`predcode.rules.fa`; node values
:math:`x_1 \dots x_L`, :math:`x_l = f_l(x_{l-1})`) every hidden node gets a *target*
instead of a gradient.  The top hidden node's target is one gradient step on the loss,

.. math:: \hat x_{L-1} = x_{L-1} - \hat\eta\, \frac{\partial L_b}{\partial x_{L-1}}

(per sample; this one step goes through the top layer's weights), and lower targets come
down through learned approximate inverses :math:`g_l \approx f_l^{-1}` with the
*difference correction*

.. math:: \hat x_{l-1} = x_{l-1} + g_l(\hat x_l) - g_l(x_l),

which gives :math:`\hat x_{l-1} = x_{l-1}` whenever :math:`\hat x_l = x_l`, even for an
imperfect inverse, and :math:`\hat x_{l-1} = f_l^{-1}(\hat x_l)` for a perfect one.  Each
hidden layer then moves its weights down its own local loss, with its input fixed,

.. math:: L_l = \mathrm{mean}_b\, \tfrac12 \lVert f_l(x_{l-1}) - \hat x_l \rVert^2,

and the top layer down the loss itself.  The inverses learn by their own reconstruction loss
on noise-corrupted inputs (:math:`\tilde x = x_{l-1} + \sigma\varepsilon`),

.. math:: L^{\mathrm{inv}}_l = \mathrm{mean}_b\, \tfrac12 \lVert g_l(f_l(\tilde x)) - \tilde x\rVert^2,

with an optimizer of their own (Adam, ``inverse_lr``), one step per training step, after
the targets are computed.  An inverse has the form of the layer below it with the linear map
reversed: :math:`g_l(y) = \mathrm{post}_{l-1}(V_l\, \mathrm{pre}_{l-1}(y) + c_l)` (for the
usual MLP, :math:`\mathrm{act}(V y + c)` as in the paper).  Only the forward ``nn.Linear``
weights and biases are trained by the model's optimizer.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from ..batch import Inputs, Targets
from ..chain import ChainLayer
from ..checks import require_positive
from ..exceptions import OptionError
from ..graph import PCGraph
from ..learning import StepStats
from .base import LearningRule
from .fa import ChainPass, accumulate, chain_of, chain_pass, output_delta


class Inverse(nn.Module):
    r""":math:`g(y) = \mathrm{post}(V\,\mathrm{pre}(y) + c)`, mapping node ``l`` back to node ``l-1``."""

    def __init__(self, below: ChainLayer, n_in: int, n_out: int) -> None:
        super().__init__()
        self.pre = list(below.pre)  # parameter-free element-wise modules, shared
        self.post = list(below.post)
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, y: Tensor) -> Tensor:
        for m in self.pre:
            y = m(y)
        y = self.linear(y)
        for m in self.post:
            y = m(y)
        return y


class DifferenceTargetPropagation(LearningRule):
    """Difference target propagation with learned inverses.

    Args:
        target_lr: :math:`\\hat\\eta`, the step of the top hidden target.
        noise: :math:`\\sigma` of the inverses' input corruption.
        inverse_lr: Adam learning rate of the inverses.
        learn_inverses: train the inverses at every step (off: keep them as set).
        seed: the inverses' initial weights.

    The inverses (and their optimizer) belong to the graph the rule last trained; a rule
    used on another graph builds new ones.  The corruption noise comes from torch's global
    generator (which the trainer's checkpoint restores).
    """

    name = "difference target propagation"

    def __init__(
        self,
        target_lr: float = 0.1,
        noise: float = 0.1,
        inverse_lr: float = 1e-3,
        learn_inverses: bool = True,
        seed: int = 0,
    ) -> None:
        require_positive(target_lr, "target_lr")
        require_positive(inverse_lr, "inverse_lr")
        if not noise >= 0:
            raise OptionError(f"noise must be >= 0, got {noise}")
        self.target_lr, self.noise, self.inverse_lr = target_lr, noise, inverse_lr
        self.learn_inverses, self.seed = learn_inverses, seed
        self._graph: weakref.ref[PCGraph] | None = None  # weak: a dropped graph is not kept alive
        self._inverses: nn.ModuleList | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def inverses(self, graph: PCGraph) -> nn.ModuleList:
        """``g[k]`` inverts chain layer ``k`` (node ``k+1`` -> node ``k``) for ``k = 1 ..
        L-2``; ``g[0]`` and ``g[L-1]`` are ``None`` placeholders (identity modules)."""
        if self._graph is None or self._graph() is not graph:
            layers = chain_of(graph, self.name)
            ref = layers[0].weight
            state = torch.random.get_rng_state()
            torch.manual_seed(self.seed)
            mods: list[nn.Module] = [nn.Identity()]
            for k in range(1, len(layers) - 1):
                w = layers[k].weight
                mods.append(Inverse(layers[k - 1], w.shape[0], w.shape[1]))
            mods.append(nn.Identity())
            torch.random.set_rng_state(state)
            inverses = nn.ModuleList(mods).to(dtype=ref.dtype, device=ref.device)
            self._inverses = inverses
            self._optimizer = torch.optim.Adam(inverses.parameters(), lr=self.inverse_lr)
            self._graph = weakref.ref(graph)
        return self._trained()[0]

    def _trained(self) -> tuple[nn.ModuleList, torch.optim.Optimizer]:
        """The inverses and their optimizer (built by :meth:`inverses`)."""
        if self._inverses is None or self._optimizer is None:
            raise OptionError("the inverses are built at the first step (or by inverses(graph))")
        return self._inverses, self._optimizer

    def targets(self, graph: PCGraph, p: ChainPass) -> dict[int, Tensor]:
        """The hidden targets (node index -> tensor) of a feed-forward pass."""
        layers, g = p.layers, self.inverses(graph)
        out: dict[int, Tensor] = {}
        if len(layers) < 2:
            return out
        top = layers[-1]
        batch = p.x[0].shape[0]
        with torch.no_grad():
            delta = output_delta(graph, p)
            grad = top.pre_vjp(p.x[top.parent], delta @ top.weight) * batch  # per sample
            node = top.parent
            out[node] = p.x[node] - self.target_lr * grad
            for k in range(len(layers) - 2, 0, -1):  # layer k: node k -> node k+1
                below = layers[k].parent
                out[below] = p.x[below] + g[k](out[node]) - g[k](p.x[node])
                node = below
        return out

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        layers = chain_of(graph, self.name)
        p = chain_pass(graph, layers, inputs, target)
        targets = self.targets(graph, p)
        batch = p.x[0].shape[0]
        with torch.no_grad():
            accumulate(layers[-1], output_delta(graph, p), p.a[-1])
            for k, layer in enumerate(layers[:-1]):
                mu = p.x[layer.child]
                delta = layer.post_vjp(p.h[k], (mu - targets[layer.child]) / batch)
                accumulate(layer, delta, p.a[k])
        if self.learn_inverses and len(layers) > 2:
            self.inverse_step(p)
        return StepStats(p.batch.loss, p.batch.prediction)

    def inverse_loss(self, p: ChainPass) -> Tensor:
        """:math:`\\sum_l L^{inv}_l` on noise-corrupted feed-forward values (grads to the
        inverses only)."""
        g = self._trained()[0]
        total: Tensor | None = None
        for k in range(1, len(p.layers) - 1):
            layer = p.layers[k]
            x = p.x[layer.parent]
            x = x + self.noise * torch.randn_like(x) if self.noise else x
            with torch.no_grad():
                y = layer.forward(x)[2]
            rec = g[k](y)
            term = 0.5 * ((rec - x) ** 2).reshape(x.shape[0], -1).sum(1).mean()
            total = term if total is None else total + term
        if total is None:
            raise OptionError("the inverse loss needs a chain of at least three layers")
        return total

    def inverse_step(self, p: ChainPass) -> float:
        optimizer = self._trained()[1]
        with torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            loss = self.inverse_loss(p)
            torch.autograd.backward(loss)
        optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        """The inverses and their optimizer (for checkpoints)."""
        if self._inverses is None:
            return {}
        inverses, optimizer = self._trained()
        return {"inverses": inverses.state_dict(), "optimizer": optimizer.state_dict()}

    def load_state_dict(self, graph: PCGraph, state: dict[str, Any]) -> None:
        if state:
            self.inverses(graph).load_state_dict(state["inverses"])
            self._trained()[1].load_state_dict(state["optimizer"])

    def __repr__(self) -> str:
        return (
            f"DifferenceTargetPropagation(target_lr={self.target_lr}, noise={self.noise}, inverse_lr={self.inverse_lr})"
        )

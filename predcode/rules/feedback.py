r"""Predictive coding with learned feedback weights: no weight transport.

In standard PC an error reaches a node's parent through the *transpose* of the forward
weights: on a layered chain (:mod:`predcode.chain`,
:math:`\mu_{l+1} = \mathrm{post}(W_{l+1}\mathrm{pre}(x_l) + b_{l+1})`) the hidden state moves by

.. math:: \dot x_l = -e_l + \mathrm{pre}'(x_l) \odot W_{l+1}^\top \delta_{l+1},
          \qquad \delta_{l+1} = \mathrm{post}'(h_{l+1}) \odot e_{l+1},

so the synapses that carry errors down would have to know the weights of the synapses that
carry predictions up.  Here the feedback runs through a separate matrix :math:`B_{l+1}`
(shape of :math:`W_{l+1}^\top`), written out explicitly (no autograd through the
predictor, which would use :math:`W^\top`):

.. math:: \dot x_l = -e_l + \mathrm{pre}'(x_l) \odot B_{l+1}\, \delta_{l+1}.

:math:`B` learns by its own local rule, the transpose of the forward weights' Hebbian rule
(Kolen-Pollack; the learnable backward weights of Millidge et al. 2020, *Relaxing the
constraints on predictive coding models*): the synapse from error unit ``l+1`` to value
unit ``l`` sees the same two activities as the forward synapse, :math:`a_l =
\mathrm{pre}(x_l)` and :math:`\delta_{l+1}`, so at the relaxed state

.. math:: \frac{\partial E}{\partial W_{l+1}} = -\mathrm{mean}_b\, \delta_{l+1} a_l^\top,
          \qquad g_{B_{l+1}} = -\mathrm{mean}_b\, a_l\, \delta_{l+1}^\top
          \;(+\,\lambda B_{l+1}),

i.e. :math:`g_B = g_W^\top`.  Any optimizer that treats every element alike (SGD, Adam,
AdamW with the same weight decay on both) then gives :math:`W^\top` and :math:`B` the same
update, so their difference only decays: :math:`W^\top - B \leftarrow (1 - \eta\lambda)(W^\top - B)`
with decay :math:`\lambda` (weight decay of the optimizer, or ``decay`` here, applied to both).
Without decay the difference stays as it started while both accumulate the same updates, so
the angle between :math:`B` and :math:`W^\top` still falls as training moves the weights.

The forward weights (and biases, learnable precisions) take IL's local gradient at the
relaxed state (:func:`~predcode.learning.accumulate_weight_gradients`).  With
``init="transpose"`` (:math:`B = W^\top` at the start) and no decay mismatch the rule is
standard inference learning, step for step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..batch import Batch, Inputs, Targets, prepare_batch
from ..chain import ChainLayer, angle, as_chain
from ..exceptions import GraphError, OptionError
from ..graph import PCGraph
from ..inference import GradientDescent, Solver, StopRule, Trace, _grad_norm
from ..learning import StepStats, accumulate_weight_gradients
from .base import LearningRule

INITS = ("random", "zero", "transpose")


class FeedbackWeights(nn.Module):
    r"""One feedback matrix :math:`B_{l}` (shape of :math:`W_l^\top`) for every layer
    whose parent is a hidden node (layers 2..L of a chain; the first layer's parent is the
    clamped input and needs no feedback).  ``B[k]`` belongs to ``layers[k + 1]``."""

    def __init__(self, layers: list[ChainLayer], init: str = "random", seed: int = 0) -> None:
        super().__init__()
        if init not in INITS:
            raise OptionError(f"unknown feedback init '{init}'; choose one of {INITS}")
        g = torch.Generator().manual_seed(seed)
        mats = []
        for layer in layers[1:]:
            w = layer.weight.detach()
            if init == "transpose":
                b = w.T.clone()
            elif init == "zero":  # B then holds exactly the sum of W^T's updates
                b = torch.zeros_like(w.T)
            else:  # nn.Linear's default range, drawn independently of W
                bound = 1.0 / w.shape[1] ** 0.5
                b = (torch.rand(w.T.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound
            mats.append(nn.Parameter(b.to(dtype=w.dtype, device=w.device)))
        self.B = nn.ParameterList(mats)


class LearnedFeedback(LearningRule):
    r"""Inference learning on a layered chain with learned feedback weights ``B``.

    Args:
        graph: the chain (built from e.g. :func:`predcode.models.mlp`); the rule owns
            feedback weights shaped for it and only trains this graph.
        solver: state solver (default ``GradientDescent(0.1)``; any functional solver or
            ``OptimizerSolver``).
        stop: stop rule or step count ``T``.
        init: ``"random"`` (independent of ``W``, the default), ``"zero"`` (:math:`B_0 = 0`:
            with equal updates :math:`W^\top - B` stays :math:`W_0^\top`, norm
            :math:`|W_0|` instead of :math:`\sqrt 2 |W_0|`, and the relaxation starts as a
            purely feed-forward one, which is stable) or ``"transpose"``
            (:math:`B = W^\top`: standard PC).
        seed: seed of the random feedback weights.
        decay: :math:`\lambda` added to the gradients of the forward weight matrices and of
            ``B`` alike (Kolen-Pollack's decay); leave 0 when the optimizer applies the
            same weight decay to both (``AdamW``).
        learn: ``False`` keeps ``B`` fixed (random feedback, an ablation).

    Put ``rule.parameters()`` (the ``B`` matrices) in the optimizer beside the model's:
    ``torch.optim.AdamW([*model.parameters(), *rule.parameters()], ...)``.
    """

    def __init__(
        self,
        graph: PCGraph,
        solver: Solver | None = None,
        stop: StopRule | int = 20,
        *,
        init: str = "random",
        seed: int = 0,
        decay: float = 0.0,
        learn: bool = True,
    ) -> None:
        self.graph = graph
        self.layers = as_chain(graph)
        self.feedback = FeedbackWeights(self.layers, init=init, seed=seed)
        for b in self.feedback.B:
            b.requires_grad_(learn)
        self.solver = solver or GradientDescent(0.1)
        self.stop = StopRule(max_steps=stop) if isinstance(stop, int) else stop
        if decay < 0:
            raise OptionError(f"decay must be >= 0, got {decay}")
        self.decay, self.learn, self.init = decay, learn, init

    # -- the feedback weights ------------------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        """The feedback matrices ``B`` (give them to the optimizer)."""
        return iter(self.feedback.B)

    def feedback_matrices(self) -> list[Tensor]:
        return list(self.feedback.B)

    def angles(self) -> list[float]:
        r"""Angle in degrees between :math:`B_l` and :math:`W_l^\top` for every layer with
        feedback (layers 2..L)."""
        return [angle(b, layer.weight.T) for b, layer in zip(self.feedback.B, self.layers[1:])]

    # -- relaxation ----------------------------------------------------------------------
    def _check(self, graph: PCGraph) -> None:
        if graph is not self.graph:
            raise GraphError(
                "this LearnedFeedback rule holds feedback weights for another graph; make one rule per graph"
            )
        w = self.layers[-1].weight
        for b in self.feedback.B:
            if b.dtype != w.dtype or b.device != w.device:
                raise OptionError(
                    f"the feedback weights are {b.dtype} on {b.device} but the model "
                    f"is {w.dtype} on {w.device}: create the rule after moving the model"
                )

    def pass_(self, values: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        r"""One sweep over the layers at ``values``: per layer ``k`` (predicting node
        ``k + 1``), the linear layer's input ``a``, output ``h``, the child's prediction
        :math:`\mu` and error :math:`e` (``energy.error``, :math:`-\partial E/\partial\mu`)."""
        acts, hs, mus, errors = [], [], [], []
        for layer in self.layers:
            a, h, mu = layer.forward(values[layer.parent])
            acts.append(a)
            hs.append(h)
            mus.append(mu)
            errors.append(self.graph.slots[layer.child].node_energy.error(values[layer.child], mu))
        return acts, hs, mus, errors

    def state_gradients(self, values: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        r"""The update direction of every hidden node (per sample) and the energy per node
        summed over the batch:

        .. math:: g_l = e_l - \mathrm{pre}'(x_l) \odot \big(\delta_{l+1} B_{l+1}^\top\big)
                  \quad(\text{batch rows}),\qquad \delta_{l+1} = \mathrm{post}'(h_{l+1}) \odot e_{l+1}.

        With :math:`B = W^\top` this is :math:`\partial E/\partial x_l`."""
        slots = self.graph.slots
        acts, hs, mus, errors = self.pass_(values)
        grads = []
        for k, (layer, b) in enumerate(zip(self.layers[1:], self.feedback.B)):
            delta = layer.post_vjp(hs[k + 1], errors[k + 1])
            back = layer.pre_vjp(values[layer.parent], delta @ b.detach().T)
            grads.append(errors[k] - back)  # own term: dE_l/dx_l = pi (x - mu) for a Gaussian
        row = [values[0].new_zeros(())] + [
            slots[layer.child].node_energy(values[layer.child], mu).sum() for layer, mu in zip(self.layers, mus)
        ]
        return grads, torch.stack(row)

    def relax(self, graph: PCGraph, inputs: Inputs, target: Targets) -> tuple[list[Tensor], Trace, Batch]:
        """Clamp input and target, start the hidden nodes at the feed-forward pass and run the
        solver on :meth:`state_gradients`; returns ``(values, trace, batch)``."""
        self._check(graph)
        batch = prepare_batch(graph, inputs, target)
        values = [v.detach() for v in batch.values]
        values[batch.output] = batch.target
        for i, v in enumerate(values):
            if v.dim() != 2:
                raise GraphError(
                    f"node '{graph.names[i]}' has shape {tuple(v.shape)}; learned "
                    "feedback needs flat [batch, units] nodes"
                )
        hidden = list(range(1, len(values) - 1))
        n = max(values[0].shape[0], 1)

        def current(states: Sequence[Tensor]) -> list[Tensor]:
            out = list(values)
            for i, x in zip(hidden, states):
                out[i] = x
            return out

        def grad_fn(states: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
            return self.state_gradients(current([x.detach() for x in states]))

        with torch.no_grad():
            states = [values[i] for i in hidden]
            memory = self.solver.init(states)
            rows: list[Tensor] = []
            norms: list[Tensor] = []
            previous: float | None = None
            for step in range(self.stop.max_steps if hidden else 0):
                states, memory, row, grads = self.solver.update(step, states, grad_fn, memory)
                states = [x.detach() for x in states]
                norm = _grad_norm(grads, n, row)
                rows.append(row)
                norms.append(norm)
                if self.stop.needs_checks:
                    total = float(row.sum())
                    if self.stop.converged(total, previous, float(norm)):
                        break
                    previous = total
            values = current(states)
            _, final = self.state_gradients(values)
        trace = Trace(graph.names, torch.stack(rows + [final]) / n, torch.stack(norms) if norms else torch.empty(0))
        trace.check_divergence(self.stop.divergence_factor)
        return values, trace, batch

    # -- learning ------------------------------------------------------------------------
    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        values, trace, batch = self.relax(graph, inputs, target)
        accumulate_weight_gradients(graph, values)  # W, biases, precisions: IL's local gradient
        with torch.no_grad():
            n = values[0].shape[0]
            acts, hs, _, errors = self.pass_(values)
            for k, layer in enumerate(self.layers):
                w = layer.weight
                if self.decay and w.requires_grad:
                    w.grad = self.decay * w if w.grad is None else w.grad + self.decay * w
                if k == 0 or not self.learn:
                    continue
                b = self.feedback.B[k - 1]
                delta = layer.post_vjp(hs[k], errors[k])
                g = -(acts[k].T @ delta) / n  # a_l delta_{l+1}^T: the transpose of W's Hebbian term
                if self.decay:
                    g = g + self.decay * b.detach()
                b.grad = g if b.grad is None else b.grad + g
        return StepStats(batch.loss, batch.prediction, trace.energy[0], trace.energy[-1], trace)

    def step(self, graph: PCGraph, inputs: Inputs, target: Targets, optimizer: torch.optim.Optimizer) -> StepStats:
        if self.learn:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if any(id(b) not in held for b in self.feedback.B):
                raise OptionError(
                    "the optimizer does not hold the feedback weights: build it over "
                    "[*model.parameters(), *rule.parameters()]"
                )
            for b in self.feedback.B:
                b.grad = None
        return super().step(graph, inputs, target, optimizer)

    def __repr__(self) -> str:
        return (
            f"LearnedFeedback({self.solver}, max_steps={self.stop.max_steps}, init={self.init!r}, "
            f"decay={self.decay}, learn={self.learn})"
        )

r"""Fixed-prediction PC (Millidge et al. 2020; Rosenbaum 2022 "FixedPred"): exact backprop.

The predictions and their Jacobians are held at the feed-forward pass
:math:`\hat\mu_i = f_i(\hat x_{pa(i)})`; the output error is the loss gradient
:math:`e_L = -\partial E_L(y, \hat\mu_L)/\partial\mu`; the hidden nodes relax by

.. math:: x_i \leftarrow x_i - \eta\,\big(e_i - \textstyle\sum_{c} \hat J_{ci}^\top e_c\big),
          \qquad e_i = \pi_i (x_i - \hat\mu_i),

whose fixed point is :math:`e_i = \sum_c \hat J_{ci}^\top e_c`, i.e. backprop's
:math:`-\partial L/\partial \mu_i`.  With :math:`\eta = 1` node ``i`` is exact after as many
steps as its distance to the output.  The weights then take
:math:`\partial E/\partial\theta_i = -\mathrm{mean}_b\, e_i^\top \partial\hat\mu_i/\partial\theta_i`.
This works on any graph (skip connections, shared weights, several children).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..batch import Inputs, Targets, as_inputs, encode_targets, output_loss, output_prediction
from ..checks import require_positive
from ..exceptions import GraphError
from ..graph import PCGraph, prediction_of
from ..learning import StepStats
from ..validate import check_inputs, forward_errors
from .base import LearningRule


@dataclass
class FixedPredictionState:
    """The feed-forward pass that fixed prediction holds: every slot's value (hidden ones
    as autograd leaves), every prediction ``mu_i`` (with its autograd graph, for the
    Jacobian-vector products), the outputs' errors (slot -> ``-dE_o/dmu_o``), the summed
    loss and the prediction (a tuple, in output order, for several outputs)."""

    values: list[Tensor]
    mus: list[Tensor | None]
    hidden: list[int]
    output_errors: dict[int, Tensor]
    loss: Tensor
    prediction: Tensor | tuple[Tensor, ...]

    @property
    def output(self) -> int:
        """The single output slot (error if the model has several)."""
        if len(self.output_errors) != 1:
            raise GraphError(f"the model has {len(self.output_errors)} outputs; use output_errors")
        return next(iter(self.output_errors))

    @property
    def output_error(self) -> Tensor:
        return self.output_errors[self.output]

    @property
    def batch(self) -> int:
        return next(iter(self.output_errors.values())).shape[0]


class FixedPrediction(LearningRule):
    """Fixed-prediction PC with inference rate ``lr`` for ``steps`` steps
    (default: the longest path to the output, exact at ``lr = 1``)."""

    def __init__(self, lr: float = 1.0, steps: int | None = None) -> None:
        require_positive(lr, "inference rate")
        self.lr, self.steps = lr, steps

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        state = self.forward_state(graph, inputs, target)
        errors = self.relax(graph, state)
        self.backward(graph, state, errors)
        return StepStats(state.loss, state.prediction)

    def forward_state(self, graph: PCGraph, inputs: Inputs, target: Targets) -> FixedPredictionState:
        """Feed-forward pass with autograd graphs, the encoded target and the output error."""
        inputs = as_inputs(inputs)
        check_inputs(graph, inputs)
        outs = graph.outputs
        slots = graph.slots
        given = dict(zip(graph.inputs, inputs))
        values: list[Tensor] = []  # filled in slot order: a slot's parents come before it
        mus: list[Tensor | None] = []
        hidden = graph.free_slots(outs)
        with torch.enable_grad(), forward_errors(graph, inputs):
            for s in slots:
                if s.is_input:
                    values.append(given[s.index])
                    mus.append(None)
                else:
                    mu = graph.node_prediction(s.index, values)
                    mus.append(mu)
                    values.append(s.node_energy.mode(mu).detach().requires_grad_(s.index in hidden))
        predictions = [None if mu is None else mu.detach() for mu in mus]
        targets = encode_targets(graph, target, [prediction_of(predictions, o) for o in outs])
        loss = output_loss(graph, targets, predictions)
        errors = {o: slots[o].node_energy.error(y, prediction_of(predictions, o)) for o, y in targets.items()}
        return FixedPredictionState(values, mus, hidden, errors, loss, output_prediction(graph, predictions))

    def relax(
        self,
        graph: PCGraph,
        state: FixedPredictionState,
        on_step: Callable[[int, dict[int, Tensor]], None] | None = None,
    ) -> dict[int, Tensor]:
        """Run the fixed-prediction iterations; return every node's error ``e_i`` (slot ->
        tensor; each output's is its loss gradient).  ``on_step(t, errors)`` sees the
        errors after each step ``t = 1, 2, ...``."""
        slots, hidden, mus, values = graph.slots, state.hidden, state.mus, state.values
        errors = dict(state.output_errors)
        states = {i: values[i].detach().clone() for i in hidden}
        for i in hidden:
            errors[i] = torch.zeros_like(states[i])
        # Errors start at zero everywhere but the outputs and spread one node per step, so
        # only the predictions whose errors can be non-zero carry anything back (the active
        # ones); skipping the rest changes no number and saves the Jacobian products of the
        # nodes the output's error has not reached yet.
        active = set(state.output_errors)
        steps = self.steps if self.steps is not None else self.depth(graph)
        for step in range(1, steps + 1):
            carriers = [c for c in sorted(active) if any(p in states for p in slots[c].parents)]
            receivers = sorted({p for c in carriers for p in slots[c].parents if p in states})
            if receivers:
                feedback = torch.autograd.grad(
                    [prediction_of(mus, c) for c in carriers],
                    [values[i] for i in receivers],
                    grad_outputs=[errors[c] for c in carriers],
                    retain_graph=True,
                    allow_unused=True,
                )
                for i, back in zip(receivers, feedback):
                    if back is not None:
                        states[i] = states[i] + self.lr * back
                moved = [i for i in hidden if i in active or i in receivers]
                for i in moved:
                    if i in active:  # its own error pulls it back toward its prediction
                        states[i] = states[i] - self.lr * errors[i]
                for i in moved:
                    errors[i] = slots[i].node_energy.error(states[i], prediction_of(mus, i).detach())
                active.update(receivers)
            if on_step is not None:
                on_step(step, errors)
        return errors

    def backward(
        self, graph: PCGraph, state: FixedPredictionState, errors: dict[int, Tensor], retain_graph: bool = False
    ) -> None:
        r"""Accumulate :math:`\partial E/\partial\theta_i = -\mathrm{mean}_b\, e_i^\top
        \partial\hat\mu_i/\partial\theta_i` into the parameters' ``.grad``."""
        owners = [i for i, mu in enumerate(state.mus) if mu is not None and mu.requires_grad]
        params = [p for p in graph.model.parameters() if p.requires_grad]
        if not owners or not params:
            return
        # only into the parameters: the hidden values are autograd leaves too, and their
        # gradients (one more product per layer) are not wanted
        torch.autograd.backward(
            [prediction_of(state.mus, i) for i in owners],
            [-errors[i] / state.batch for i in owners],
            retain_graph=retain_graph,
            inputs=params,
        )

    @staticmethod
    def depth(graph: PCGraph) -> int:
        """The longest path from a node to the output: the steps exact at ``lr = 1``."""
        return max(max(d) for d in graph.depth_to_outputs() if d)

    def __repr__(self) -> str:
        return f"FixedPrediction(lr={self.lr}, steps={self.steps})"

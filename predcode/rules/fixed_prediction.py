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

import torch

from ..errors import OptionError
from ..graph import PCGraph
from ..validate import check_inputs, encode_target, forward_errors
from .base import LearningRule, StepStats, as_inputs


class FixedPrediction(LearningRule):
    """Fixed-prediction PC with inference rate ``lr`` for ``steps`` steps
    (default: the longest path to the output, exact at ``lr = 1``)."""

    def __init__(self, lr: float = 1.0, steps: int | None = None) -> None:
        if not lr > 0:
            raise OptionError(f"inference rate must be > 0, got {lr}")
        self.lr, self.steps = lr, steps

    def gradients(self, graph: PCGraph, inputs, target) -> StepStats:
        inputs = as_inputs(inputs)
        check_inputs(graph, inputs)
        out = graph.output
        slots = graph.slots
        values: list[torch.Tensor] = [None] * len(slots)  # type: ignore[list-item]
        mus: list[torch.Tensor | None] = [None] * len(slots)
        for i, x in zip(graph.inputs, inputs):
            values[i] = x
        hidden = [s.index for s in slots if not s.is_input and s.index != out]
        with torch.enable_grad(), forward_errors(graph, inputs):
            for s in slots:
                if not s.is_input:
                    mus[s.index] = graph.predict(s.index, values)
                    values[s.index] = s.energy.mode(mus[s.index]).detach().requires_grad_(
                        s.index in hidden)
        prediction = mus[out].detach()
        y = encode_target(target, prediction, graph.names[out])
        loss = slots[out].energy(y, prediction).mean()
        errors = {out: slots[out].energy.error(y, prediction)}
        states = {i: values[i].detach().clone() for i in hidden}
        for i in hidden:
            errors[i] = torch.zeros_like(states[i])
        # the predictions that depend on a hidden node, with the errors they carry back
        carriers = [s.index for s in slots if not s.is_input and any(p in states for p in s.parents)]
        steps = self.steps if self.steps is not None else max(max(d) for d in graph.depth_to_outputs() if d)
        for _ in range(steps):
            feedback = torch.autograd.grad(
                [mus[c] for c in carriers], [values[i] for i in hidden],
                grad_outputs=[errors[c] for c in carriers], retain_graph=True, allow_unused=True)
            for i, back in zip(hidden, feedback):
                back = torch.zeros_like(states[i]) if back is None else back
                states[i] = states[i] - self.lr * (errors[i] - back)
            for i in hidden:
                errors[i] = slots[i].energy.error(states[i], mus[i].detach())
        batch = prediction.shape[0]
        owners = [i for i in range(len(slots)) if mus[i] is not None and mus[i].requires_grad]
        torch.autograd.backward([mus[i] for i in owners], [-errors[i] / batch for i in owners])
        return StepStats(loss, prediction)

    def __repr__(self) -> str:
        return f"FixedPrediction(lr={self.lr}, steps={self.steps})"

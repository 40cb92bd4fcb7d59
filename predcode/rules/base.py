"""The interface every learning rule follows, and what a training step reports.

A rule turns one batch ``(inputs, target)`` into parameter gradients (``.grad`` of the
model's parameters) with :meth:`LearningRule.gradients`; :meth:`LearningRule.step` zeroes the
gradients, calls it, and steps any ``torch.optim`` optimizer.  Every rule reports the
feed-forward loss (the output node's energy at the feed-forward pass, i.e. the loss
backprop would see) and the feed-forward prediction, so rules compare on equal terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..graph import PCGraph
from ..inference import Trace
from ..validate import check_inputs, encode_target, forward_errors


@dataclass
class StepStats:
    """What one training step measured (tensors stay on the device; read with float())."""

    loss: Tensor
    prediction: Tensor
    energy_initial: Tensor | None = None
    energy_final: Tensor | None = None
    trace: Trace | None = None

    @property
    def steps(self) -> int:
        return 0 if self.trace is None else self.trace.steps


@dataclass
class Batch:
    """One batch after validation: inputs, feed-forward values and the encoded target."""

    inputs: list[Tensor]
    values: list[Tensor]
    target: Tensor
    output: int
    loss: Tensor
    prediction: Tensor


def as_inputs(inputs: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [inputs] if isinstance(inputs, Tensor) else list(inputs)


def prepare_batch(graph: PCGraph, inputs: Tensor | Sequence[Tensor], target: Tensor) -> Batch:
    """Validate, run the feed-forward pass (no autograd) and encode the target."""
    inputs = as_inputs(inputs)
    check_inputs(graph, inputs)
    out = graph.output
    with torch.no_grad():
        with forward_errors(graph, inputs):
            values, predictions = graph.forward_pass(inputs)
        prediction = predictions[out]
        target_value = encode_target(target, prediction, graph.names[out])
        loss = graph.slots[out].energy(target_value, prediction).mean()
    return Batch(inputs, values, target_value, out, loss, prediction)


class LearningRule:
    """Base class: subclasses implement :meth:`gradients`."""

    def gradients(self, graph: PCGraph, inputs, target: Tensor) -> StepStats:
        """Accumulate this rule's parameter gradients into ``.grad``; return the stats."""
        raise NotImplementedError

    def step(self, graph: PCGraph, inputs, target: Tensor,
             optimizer: torch.optim.Optimizer) -> StepStats:
        """One training step: zero grads, compute this rule's gradients, step the optimizer."""
        optimizer.zero_grad(set_to_none=True)
        stats = self.gradients(graph, inputs, target)
        optimizer.step()
        return stats


def weight_energy_backward(graph: PCGraph, values: Sequence[Tensor],
                           slots: Sequence[int] | None = None) -> Tensor:
    r"""Backpropagate the local weight gradients ``dE/dθ_i`` at fixed values.

    .. math:: \frac{\partial E}{\partial \theta_i}
              = \mathrm{mean}_b\, \frac{\partial E_i(x_i, f_i(x_{pa(i)};\theta_i))}{\partial\theta_i}
              = -\mathrm{mean}_b\, e_i^\top \frac{\partial f_i}{\partial \theta_i}

    The values are detached, so each weight sees only its own node's error and its
    parents' values (a Hebbian product for a linear predictor).  Returns the per-node
    energies (detached).
    """
    values = [v.detach() for v in values]
    chosen = range(len(graph.slots)) if slots is None else slots
    terms = torch.zeros(len(graph.slots), dtype=values[0].dtype, device=values[0].device)
    total = None
    with torch.enable_grad():  # callers may sit inside no_grad (iPC updates within relax)
        for i in chosen:
            slot = graph.slots[i]
            if slot.is_input:
                continue
            e = slot.energy(values[i], graph.predict(i, values)).mean()
            terms[i] = e.detach()
            total = e if total is None else total + e
        if total is not None and total.requires_grad:
            total.backward()
    return terms

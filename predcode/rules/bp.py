"""Backprop on the same model object: the baseline every rule is compared with.

The loss is the output node's own energy at the feed-forward pass,
``L = mean_b E_out(y_b, f(x_b))`` (squared error for a Gaussian output, cross-entropy
for a categorical one), so BP and PC optimise the same objective.
"""

from __future__ import annotations

from ..graph import PCGraph
from .base import LearningRule, StepStats, as_inputs
from ..validate import check_inputs, encode_target, forward_errors


class Backprop(LearningRule):
    """Plain backpropagation through ``graph.model``."""

    def gradients(self, graph: PCGraph, inputs, target) -> StepStats:
        inputs = as_inputs(inputs)
        check_inputs(graph, inputs)
        out = graph.output
        with forward_errors(graph, inputs):
            prediction = graph.model(*inputs)
        target_value = encode_target(target, prediction.detach(), graph.names[out])
        loss = graph.slots[out].energy(target_value, prediction).mean()
        loss.backward()
        return StepStats(loss.detach(), prediction.detach())

    def __repr__(self) -> str:
        return "Backprop()"

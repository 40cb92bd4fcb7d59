"""Backprop on the same model object: the baseline every rule is compared with.

The loss is the output node's own energy at the feed-forward pass,
``L = mean_b E_out(y_b, f(x_b))`` (squared error for a Gaussian output, cross-entropy
for a categorical one), summed over the outputs of a model with several,
``L = sum_o mean_b E_o(y_o, f_o(x))``, so BP and PC optimise the same objective.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..batch import Inputs, Targets, as_inputs, encode_targets, output_loss
from ..graph import PCGraph
from ..learning import StepStats
from ..validate import check_inputs, forward_errors
from .base import LearningRule


class Backprop(LearningRule):
    """Plain backpropagation through ``graph.model``."""

    records_in_its_forward = True  # its one forward pass records batch-norm statistics

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        inputs = as_inputs(inputs)
        check_inputs(graph, inputs)
        with forward_errors(graph, inputs):
            result = graph.model(*inputs)
        outs = list(result) if isinstance(result, (tuple, list)) else [result]
        predictions: list[Tensor | None] = [None] * len(graph.slots)
        for o, p in zip(graph.outputs, outs):
            predictions[o] = p
        targets = encode_targets(graph, target, [p.detach() for p in outs])
        loss = output_loss(graph, targets, predictions)
        torch.autograd.backward(loss)
        prediction = tuple(p.detach() for p in outs)
        return StepStats(loss.detach(), prediction[0] if len(prediction) == 1 else prediction)

    def __repr__(self) -> str:
        return "Backprop()"

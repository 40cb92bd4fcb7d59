"""Incremental predictive coding (iPC, Salvatori et al.): a weight update after every
inference step, so states and weights descend the same energy together.

At every step ``t``: ``x <- x - solver(dE/dx)`` for the free nodes, then
``θ <- optimizer(dE/dθ)`` at the new state; ``T`` weight updates per batch.
"""

from __future__ import annotations

import torch

from ..graph import PCGraph
from .base import StepStats, prepare_batch, weight_energy_backward
from .il import InferenceLearning
from ..inference import relax


class IncrementalPC(InferenceLearning):
    """iPC: same solver and stop rule as :class:`InferenceLearning`, weights move every step."""

    records_in_its_forward = True  # step()'s feed-forward pass records batch-norm statistics

    def gradients(self, graph, inputs, target):
        raise TypeError("incremental PC updates the weights inside relaxation; call step()")

    def step(self, graph: PCGraph, inputs, target, optimizer: torch.optim.Optimizer) -> StepStats:
        batch = prepare_batch(graph, inputs, target)
        values = batch.clamped()

        def update_weights(step: int, current: list[torch.Tensor]) -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                weight_energy_backward(graph, current)
            optimizer.step()

        with torch.no_grad():
            relaxed = relax(graph, values, self.free_slots(graph, batch.outputs), self.solver,
                            self.stop, on_step=update_weights, cache_constant=False)
        trace = relaxed.trace
        return StepStats(batch.loss, batch.prediction, trace.energy[0], trace.energy[-1], trace)

    def __repr__(self) -> str:
        return f"IncrementalPC({self.solver}, max_steps={self.stop.max_steps})"

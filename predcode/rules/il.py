"""Inference learning (IL): relax with input and target clamped, then one local update.

1. clamp the inputs and the output node to the target; the other nodes start at the
   feed-forward pass;
2. relax the free nodes with the solver until the stop rule holds (see
   :mod:`predcode.inference`);
3. every weight takes the gradient of the energy at the relaxed state,
   ``dE/dθ_i = -mean_b e_i^T df_i/dθ_i`` (local: own error, parents' values).
"""

from __future__ import annotations

import torch

from ..graph import PCGraph
from ..inference import GradientDescent, Solver, StopRule, relax
from .base import LearningRule, StepStats, prepare_batch, weight_energy_backward


def _as_stop(stop: StopRule | int) -> StopRule:
    return StopRule(max_steps=stop) if isinstance(stop, int) else stop


class InferenceLearning(LearningRule):
    """Inference learning with any solver and stop rule (``T = stop.max_steps``)."""

    def __init__(self, solver: Solver | None = None, stop: StopRule | int = 20) -> None:
        self.solver = solver or GradientDescent(0.1)
        self.stop = _as_stop(stop)

    def free_slots(self, graph: PCGraph, output: int) -> list[int]:
        return [s.index for s in graph.slots if not s.is_input and s.index != output]

    def gradients(self, graph: PCGraph, inputs, target) -> StepStats:
        batch = prepare_batch(graph, inputs, target)
        values = list(batch.values)
        values[batch.output] = batch.target
        with torch.no_grad():
            relaxed = relax(graph, values, self.free_slots(graph, batch.output), self.solver, self.stop)
        final = weight_energy_backward(graph, relaxed.values)
        trace = relaxed.trace
        return StepStats(batch.loss, batch.prediction, trace.energy[0], final.sum(), trace)

    def __repr__(self) -> str:
        return f"InferenceLearning({self.solver}, max_steps={self.stop.max_steps})"

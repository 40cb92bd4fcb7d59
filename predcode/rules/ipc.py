"""Incremental predictive coding (iPC, Salvatori et al.): a weight update after every
inference step, so states and weights descend the same energy together.

At every step ``t``: ``x <- x - solver(dE/dx)`` for the free nodes, then
``θ <- optimizer(dE/dθ)`` at the new state; ``T`` weight updates per batch.
"""

from __future__ import annotations

import torch

from ..batch import Inputs, Targets, prepare_batch
from ..finite import check_update
from ..graph import PCGraph
from ..inference import GradientDescent, Solver, StopRule, Variables, relax
from ..learning import StepStats, accumulate_weight_gradients
from .base import LearningRule
from .il import as_stop


class IncrementalPC(LearningRule):
    """iPC: the solver and stop rule of :class:`~predcode.rules.il.InferenceLearning`, with
    the weights stepped by the optimizer after every inference step.  Its unit of work is
    :meth:`step` (weights move inside the relaxation), so it has no separate
    :meth:`gradients`."""

    records_in_its_forward = True  # step()'s feed-forward pass records batch-norm statistics

    def __init__(
        self, solver: Solver | None = None, stop: StopRule | int = 20, variables: Variables = Variables.STATES
    ) -> None:
        self.solver = solver or GradientDescent(0.1)
        self.stop = as_stop(stop)
        self.variables = Variables(variables)

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        raise TypeError("incremental PC updates the weights inside relaxation; call step()")

    def step(self, graph: PCGraph, inputs: Inputs, target: Targets, optimizer: torch.optim.Optimizer) -> StepStats:
        batch = prepare_batch(graph, inputs, target)
        values = batch.clamped()

        def update_weights(step: int, current: list[torch.Tensor]) -> None:
            optimizer.zero_grad(set_to_none=True)
            accumulate_weight_gradients(graph, current)
            optimizer.step()

        with torch.no_grad():
            relaxed = relax(
                graph,
                values,
                graph.free_slots(batch.outputs),
                self.solver,
                self.stop,
                on_step=update_weights,
                cache_constant=False,
                variables=self.variables,
            )
        check_update(graph.model, optimizer)  # a weight update made a parameter non-finite
        trace = relaxed.trace
        return StepStats(batch.loss, batch.prediction, trace.energy[0], trace.energy[-1], trace)

    def __repr__(self) -> str:
        return f"IncrementalPC({self.solver}, max_steps={self.stop.max_steps})"

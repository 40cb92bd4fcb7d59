"""Inference learning (IL): relax with input and target clamped, then one local update.

1. clamp the inputs and the output node to the target; the other nodes start at the
   feed-forward pass;
2. relax the free nodes with the solver until the stop rule holds (see
   :mod:`predcode.inference`);
3. every weight takes the gradient of the energy at the relaxed state,
   ``dE/dθ_i = -mean_b e_i^T df_i/dθ_i`` (local: own error, parents' values).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .._moved import renamed
from ..batch import Inputs, Targets, as_inputs, encode_targets, prepare_batch
from ..graph import PCGraph
from ..inference import GradientDescent, Solver, StopRule, Variables, relax
from ..learning import (
    LearningPlan,
    StepStats,
    accumulate_weight_gradients,
    compile_learn_step,
    learn_step,
    learning_plan,
)
from ..native.chain import native_learn_step
from ..validate import check_inputs, forward_errors
from .base import LearningRule


def as_stop(stop: StopRule | int) -> StopRule:
    """A stop rule from a step count or a :class:`StopRule`."""
    return StopRule(max_steps=stop) if isinstance(stop, int) else stop


class InferenceLearning(LearningRule):
    """Inference learning with any solver and stop rule (``T = stop.max_steps``), relaxing
    the states (state-based PC, sPC).

    With a fixed step count and a functional solver the whole step (relaxation and weight
    gradients) is one pure function (:func:`predcode.learning.learn_step`); on the CPU a
    dense chain with gradient descent or momentum SGD runs it as one native call
    (:mod:`predcode.native.chain`, by default), and ``compile=True`` runs it under
    ``torch.compile``, with the same numbers.  A tolerance stop rule or an
    ``OptimizerSolver`` takes the step-by-step path.
    """

    variables = Variables.STATES
    """What the relaxation moves (:class:`~predcode.inference.Variables`)."""

    def __init__(self, solver: Solver | None = None, stop: StopRule | int = 20, compile: bool = False) -> None:
        self.solver = solver or GradientDescent(0.1)
        self.stop = as_stop(stop)
        self.compile = compile

    @property
    def fused(self) -> bool:
        """Whether steps take the fused (compilable) path."""
        return self.solver.compilable and not self.stop.needs_checks

    def free_slots(self, graph: PCGraph, output: int | Iterable[int]) -> list[int]:
        """Deprecated: :meth:`PCGraph.free_slots <predcode.graph.PCGraph.free_slots>` (kept for one release)."""
        return renamed("InferenceLearning.free_slots(graph, outputs)", "graph.free_slots(outputs)", graph.free_slots)(
            output
        )

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        if self.fused:
            return self._fused_gradients(graph, inputs, target)
        batch = prepare_batch(graph, inputs, target)
        with torch.no_grad():
            relaxed = relax(
                graph,
                batch.clamped(),
                graph.free_slots(batch.outputs),
                self.solver,
                self.stop,
                variables=self.variables,
            )
        final = accumulate_weight_gradients(graph, relaxed.values, differences=relaxed.errors)
        trace = relaxed.trace
        return StepStats(batch.loss, batch.prediction, trace.energy[0], final.sum(), trace)

    def _fused_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        plan = learning_plan(graph)
        inputs = as_inputs(inputs)
        check_inputs(graph, inputs)
        with forward_errors(graph, inputs):
            shapes = graph.node_shapes(inputs)
        like = [inputs[0].new_empty((inputs[0].shape[0], *shapes[o])) for o in graph.outputs]
        target = tuple(encode_targets(graph, target, like).values())
        if not self.compile:  # a dense chain on the CPU: the whole step in one native call
            native = native_learn_step(plan, self.solver, self.stop.max_steps, inputs, target, self.variables)
            if native is not None:
                return self._finish(plan, *native)
        run = learn_step
        if self.compile:
            key = (
                self.variables,
                self.solver.settings(),
                self.stop.max_steps,
                tuple(shapes),
                torch.is_grad_enabled(),
                plan.modes(),
                plan.unit_precisions(),
            )
            run = compile_learn_step(plan, key)
        with torch.no_grad():
            params = plan.trainable() if plan.needs_params() else {}
            grads, stats = run(plan, params, self.solver, self.stop.max_steps, inputs, target, self.variables)
        return self._finish(plan, grads, stats)

    def _finish(self, plan: LearningPlan, grads: dict[str, Tensor], stats: StepStats) -> StepStats:
        """Add a fused step's weight gradients into ``.grad``; check its trace for divergence."""
        plan.accumulate(grads)
        assert stats.trace is not None  # a fused step always records its trace
        stats.trace.check_divergence(self.stop.divergence_factor)
        return stats

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.solver}, max_steps={self.stop.max_steps})"


class ErrorPC(InferenceLearning):
    r"""Error-based predictive coding (ePC; Goemaere, Oliviers, Bogacz & Demeester 2025):
    inference learning whose relaxation moves the prediction errors instead of the states.

    The free nodes are :math:`x_i = \mu_i(x_{pa(i)}) + d_i`, recomputed by one forward
    sweep; the solver descends :math:`\partial E/\partial d_i` (one reverse pass, so an
    error at the output reaches every node at the first step, where sPC needs one step per
    node); then every weight takes the same local gradient as in inference learning,
    :math:`\partial E/\partial\theta_i = -\mathrm{mean}_b\, e_i^\top \partial f_i/\partial\theta_i`
    at the relaxed values.  Same energy, same equilibria and the same weight gradients
    there as sPC (:class:`InferenceLearning`), reached in far fewer steps on deep graphs.
    Its inference is not local (a node's update reads everything downstream of it); use
    sPC where the dynamics themselves must be biologically plausible.

    Any solver and stop rule, ``compile=True``, every graph inference learning accepts.
    """

    variables = Variables.ERRORS

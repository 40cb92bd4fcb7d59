r"""Equilibrium propagation (Scellier & Bengio 2017) on the predictive coding energy.

EP needs an energy :math:`E(x, \theta)` of the free states and a cost :math:`C`.  We take
predcode's own: the PC energy of the hidden nodes, with the output node's energy (the loss,
:math:`C = \mathrm{mean}_b E_L(y, \mu_L)`) as the cost,

.. math:: F_\beta(x) = \sum_{l \,\mathrm{hidden}} \mathrm{mean}_b E_l(x_l, \mu_l) + \beta\, C .

*Free phase* (:math:`\beta = 0`): the minimum of :math:`E \ge 0` is the feed-forward pass
(:math:`E = 0`), in closed form, so :math:`\partial E/\partial\theta = 0` there.
*Nudged phase*: relax the hidden nodes on :math:`F_\beta` (output clamped to the target at
precision :math:`\beta`) with predcode's :func:`~predcode.inference.relax` and any solver.
The update is EP's

.. math:: \Delta\theta \propto -\frac{1}{\beta}\Big(\frac{\partial F_\beta}{\partial\theta}(x^\beta)
          - \frac{\partial F_0}{\partial\theta}(x^0)\Big)
          = -\frac{1}{\beta}\frac{\partial F_\beta}{\partial\theta}(x^\beta),

which tends to :math:`-\partial C/\partial\theta`, backprop's gradient, as
:math:`\beta \to 0` (tested).  ``symmetric=True`` uses the nudges :math:`\pm\beta`
(Laborieux et al. 2021): :math:`(\partial_\theta F_\beta(x^{\beta}) -
\partial_\theta F_{-\beta}(x^{-\beta}))/2\beta`, whose bias is :math:`O(\beta^2)` instead of
:math:`O(\beta)`.  With :math:`\beta = 1` and one-sided nudging this is exactly inference
learning (the output clamped at its own precision): IL is EP at a strong nudge.  The energy
of EP's original papers (a Hopfield energy with symmetric weights) would train a different
model than the feed-forward one every other rule here trains and tests, so we use the PC
energy, which has the feed-forward pass as its free phase.  Works on any
:class:`~predcode.graph.PCGraph` with one output.
"""

from __future__ import annotations

import dataclasses
import weakref

import torch
from torch import Tensor

from ..batch import Batch, Inputs, Targets, prepare_batch
from ..checks import require_positive
from ..energy import Energy
from ..graph import PCGraph
from ..inference import GradientDescent, Relaxation, Solver, StopRule, Trace, relax
from ..learning import StepStats
from .base import LearningRule


class Scaled(Energy):
    r""":math:`\beta E(x, \mu)`: an energy times a constant (the nudge)."""

    def __init__(self, base: Energy, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, value: Tensor, prediction: Tensor) -> Tensor:
        energy: Tensor = self.base(value, prediction)
        return self.scale * energy

    def error(self, value: Tensor, prediction: Tensor) -> Tensor:
        return self.scale * self.base.error(value, prediction)

    def mode(self, prediction: Tensor) -> Tensor:
        return self.base.mode(prediction)


def nudged_graph(graph: PCGraph, beta: float) -> PCGraph:
    """``graph`` with its output energy scaled by ``beta`` (same predictors and weights)."""
    out = graph.output
    slots = [dataclasses.replace(s, energy=Scaled(s.node_energy, beta)) if s.index == out else s for s in graph.slots]
    return PCGraph.from_slots(graph.model, slots, graph.outputs)


class EquilibriumPropagation(LearningRule):
    """Equilibrium propagation with nudge ``beta`` (see the module docstring).

    Args:
        beta: the nudge strength (> 0).
        solver: the nudged phase's solver (default: gradient descent at rate 0.1).
        stop: its stop rule or step count (default: 20 steps).
        symmetric: nudge with ``+beta`` and ``-beta`` (two relaxations).
    """

    def __init__(
        self, beta: float = 0.1, solver: Solver | None = None, stop: StopRule | int = 20, symmetric: bool = False
    ) -> None:
        require_positive(beta, "EP's nudge beta")
        self.beta, self.symmetric = beta, symmetric
        self.solver = solver or GradientDescent(0.1)
        self.stop = StopRule(max_steps=stop) if isinstance(stop, int) else stop
        # nudged copies per graph and beta, held weakly: a graph the user drops is not kept
        # alive by the rule (a copy shares the model, not the graph itself)
        self._nudged: weakref.WeakKeyDictionary[PCGraph, dict[float, PCGraph]] = weakref.WeakKeyDictionary()

    def _graph(self, graph: PCGraph, beta: float) -> PCGraph:
        copies = self._nudged.setdefault(graph, {})
        if beta not in copies:
            copies[beta] = nudged_graph(graph, beta)
        return copies[beta]

    def nudged_phase(self, graph: PCGraph, batch: Batch, beta: float) -> tuple[PCGraph, Relaxation]:
        """Relax the hidden nodes on :math:`F_\\beta` from the free phase (feed-forward)."""
        nudged = self._graph(graph, beta)
        values = batch.clamped()
        free = graph.free_slots(batch.output)
        with torch.no_grad():
            return nudged, relax(nudged, values, free, self.solver, self.stop)

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        batch = prepare_batch(graph, inputs, target)
        phases = [(self.beta, 1.0)] + ([(-self.beta, -1.0)] if self.symmetric else [])
        denominator = self.beta * len(phases)
        total: Tensor | None = None
        traces: list[Trace] = []
        with torch.enable_grad():
            for beta, sign in phases:
                nudged, relaxed = self.nudged_phase(graph, batch, beta)
                traces.append(relaxed.trace)
                values = [v.detach() for v in relaxed.values]
                f = nudged.node_energies(values).sum() * (sign / denominator)
                total = f if total is None else total + f
            if total is not None:  # one phase at least
                torch.autograd.backward(total)
        trace = traces[0]
        return StepStats(batch.loss, batch.prediction, trace.energy[0], trace.energy[-1], trace)

    def __repr__(self) -> str:
        return (
            f"EquilibriumPropagation(beta={self.beta}, {self.solver}, "
            f"max_steps={self.stop.max_steps}, symmetric={self.symmetric})"
        )

r"""Output nudging: the output feels :math:`\beta` times its loss instead of a hard clamp.

Inference learning clamps the output to the target at the output's own precision.  Output
nudging (Scellier & Bengio 2017; the positive, negative and centred variants of Pinchetti
et al. 2025, "Benchmarking predictive coding networks made simple") keeps everything else
and scales the output's energy (the loss :math:`L = \mathrm{mean}_b E_L(y, \mu_L)`) by a
signed nudge :math:`\beta`:

.. math:: F_\beta(x; \theta) = \sum_{l\ \mathrm{hidden}} \mathrm{mean}_b E_l(x_l, \mu_l)
          + \beta\, \mathrm{mean}_b E_L(y, \mu_L(x)) .

The wrapped rule (:class:`~predcode.rules.il.InferenceLearning`, sPC, or
:class:`~predcode.rules.il.ErrorPC`, ePC) relaxes the free nodes on :math:`F_\beta` from
the feed-forward pass with its own solver and stop rule (the one relax loop,
:func:`~predcode.inference.relax_steps`), then takes its local weight gradient
:math:`g(\beta) = \partial F_\beta / \partial\theta` at the relaxed state.  The update is

* positive nudging: :math:`g(\beta)/\beta`;
* negative nudging: :math:`g(-\beta)/(-\beta)`;
* centred nudging: :math:`\big(g(\beta) - g(-\beta)\big) / 2\beta`, the average of the two.

At the feed-forward pass the hidden energies are zero, so :math:`g(0) = 0` and
:math:`g(\beta)/\beta \to \partial L/\partial\theta` (backprop's gradient) as
:math:`\beta \to 0`, with a bias of order :math:`\beta`; the centred difference cancels the
even terms and its bias is of order :math:`\beta^2` (both tested in float64).  With
:math:`\beta = 1` and positive nudging the rule is the wrapped rule itself.

pcx clamps the output at :math:`\mu_L^{(0)} + \beta(y - \mu_L^{(0)})` (a point a fraction
:math:`\beta` of the way from the first prediction to the target) and divides the weight
gradient by :math:`\beta`; for a squared-error output its first relaxation step is the same
as here and the two differ at order :math:`\beta^2`.  We scale the energy instead, so the
output error is :math:`\beta\,\epsilon_L(y, \mu_L)` for any output energy (squared error or
cross-entropy), exactly the nudge of equilibrium propagation
(:class:`~predcode.rules.ep.EquilibriumPropagation` is this rule around a plain relaxation).
"""

from __future__ import annotations

import dataclasses
import weakref

import torch

from ..batch import Inputs, Targets
from ..checks import require_positive
from ..exceptions import OptionError
from ..graph import PCGraph
from ..learning import StepStats
from .base import LearningRule
from .ep import Scaled
from .il import InferenceLearning

NUDGES = ("positive", "negative", "centred")
"""The nudging variants (``"centered"`` is accepted for ``"centred"``)."""


def nudged_outputs(graph: PCGraph, beta: float) -> PCGraph:
    """``graph`` with every output's energy multiplied by ``beta`` (same predictors, same
    weights, same model)."""
    outputs = set(graph.outputs)
    slots = [
        dataclasses.replace(s, energy=Scaled(s.node_energy, beta)) if s.index in outputs else s for s in graph.slots
    ]
    return PCGraph.from_slots(graph.model, slots, graph.outputs)


def signed_nudges(nudge: str, beta: float) -> list[float]:
    """The signed nudges one update relaxes with: ``[beta]``, ``[-beta]`` or both."""
    return {"positive": [beta], "negative": [-beta], "centred": [beta, -beta]}[nudge]


class Nudging(LearningRule):
    r"""Output nudging around inference learning or error-based PC (module docstring).

    Args:
        rule: the relaxation and local weight gradient: an
            :class:`~predcode.rules.il.InferenceLearning` (sPC) or
            :class:`~predcode.rules.il.ErrorPC` (ePC) with its solver and stop rule
            (default: ``InferenceLearning()``).
        beta: the nudge's size (> 0); its sign comes from ``nudge``.
        nudge: ``"positive"``, ``"negative"`` or ``"centred"`` (two relaxations).
    """

    def __init__(self, rule: InferenceLearning | None = None, beta: float = 0.1, nudge: str = "centred") -> None:
        rule = InferenceLearning() if rule is None else rule
        if not isinstance(rule, InferenceLearning):
            raise OptionError(f"nudging wraps InferenceLearning or ErrorPC, got {type(rule).__name__}")
        require_positive(beta, "the nudge beta (its sign comes from nudge='positive'/'negative'/'centred')")
        nudge = "centred" if nudge == "centered" else nudge
        if nudge not in NUDGES:
            raise OptionError(f"unknown nudge '{nudge}'; choose one of {list(NUDGES)}")
        self.rule, self.beta, self.nudge = rule, float(beta), nudge
        # nudged copies per graph and beta, held weakly: a graph the user drops is not kept
        # alive by the rule (a copy shares the model, not the graph itself)
        self._graphs: weakref.WeakKeyDictionary[PCGraph, dict[float, PCGraph]] = weakref.WeakKeyDictionary()

    def nudged_graph(self, graph: PCGraph, beta: float) -> PCGraph:
        """The copy of ``graph`` whose outputs' energies are scaled by ``beta`` (kept, so
        that its compiled steps and closed-form products are built once)."""
        copies = self._graphs.setdefault(graph, {})
        if beta not in copies:
            copies[beta] = nudged_outputs(graph, beta)
        return copies[beta]

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        nudges = signed_nudges(self.nudge, self.beta)
        params = [p for p in graph.model.parameters() if p.requires_grad]
        before = [p.grad for p in params]
        update: list[torch.Tensor | None] = [None] * len(params)
        first: tuple[float, StepStats] | None = None
        try:
            for beta in nudges:
                for p in params:
                    p.grad = None
                stats = self.rule.compute_gradients(self.nudged_graph(graph, beta), inputs, target)
                first = first or (beta, stats)
                scale = 1.0 / (beta * len(nudges))
                for k, p in enumerate(params):
                    if p.grad is not None:
                        g = p.grad * scale
                        held = update[k]
                        update[k] = g if held is None else held + g
        finally:
            for k, p in enumerate(params):
                new, old = update[k], before[k]
                if new is None:
                    p.grad = old
                else:
                    p.grad = new if old is None else old + new
        if first is None:
            raise OptionError("no nudge to run")
        beta, stats = first
        return StepStats(stats.loss / beta, stats.prediction, stats.energy_initial, stats.energy_final, stats.trace)

    def __repr__(self) -> str:
        return f"Nudging({self.rule!r}, beta={self.beta}, nudge='{self.nudge}')"

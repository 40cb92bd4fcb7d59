r"""Monte Carlo predictive coding (MCPC; Oliviers, Bogacz & Meulemans, "Learning probability
distributions of sensory inputs with Monte Carlo predictive coding", PLoS Comput Biol 2024).

Plain inference learning moves the weights down the energy at the *mode* of the posterior
over the free nodes, :math:`\hat x = \arg\min_x E(x, y; \theta)`.  MCPC moves them down its
*posterior mean*: with the data :math:`y` clamped, the latent and hidden nodes follow
Langevin dynamics (:class:`predcode.sampling.Langevin`, the library's one relaxation loop
with noise),

.. math:: x \leftarrow x - \eta\, \nabla_x E(x, y;\theta) + \sqrt{2\eta}\,\xi, \qquad
          \xi \sim \mathcal N(0, I),

whose stationary distribution is the posterior :math:`p(x \mid y;\theta) \propto e^{-E}`;
after a burn-in the local weight gradient is averaged over ``samples`` states of the chain,

.. math:: \Delta\theta \propto -\frac1S \sum_{s=1}^{S}
          \frac{\partial E(x^{(s)}, y;\theta)}{\partial\theta}
          \;\approx\; -\mathbb E_{p(x\mid y)}\Big[\frac{\partial E}{\partial\theta}\Big]
          = \frac{\partial \log p(y;\theta)}{\partial\theta},

an unbiased estimate (up to the chain's discretisation and mixing) of the maximum
likelihood gradient (Fisher's identity), where plain PC follows the gradient of the
energy at the mode.  Each term is the library's local weight gradient
(:func:`predcode.learning.weight_gradients`): a node's error times its parents' values.  The
chain starts at the feed-forward pass from the inputs, optionally after ``map_stop``
steps of plain relaxation (the paper starts from the MAP estimate).
"""

from __future__ import annotations

import torch

from ..batch import Inputs, Targets, prepare_batch
from ..exceptions import OptionError
from ..graph import PCGraph
from ..inference import Solver, StopRule, relax
from ..learning import StepStats, learning_plan, weight_gradients
from ..sampling import Langevin
from .base import LearningRule
from .il import as_stop


class MonteCarloPC(LearningRule):
    """Monte Carlo predictive coding: Langevin dynamics on the free nodes with the data
    clamped, weight gradients averaged over the chain's samples after a burn-in.

    Args:
        solver: the :class:`~predcode.sampling.Langevin` chain (step size, temperature,
            generator).
        burn_in: chain steps before the first sample.
        samples: chain steps whose states each add ``1/samples`` of their local weight
            gradient.
        map_solver: the solver of an optional plain relaxation (no noise) before the chain.
        map_stop: that relaxation's steps (0: none).
    """

    def __init__(
        self,
        solver: Langevin,
        burn_in: int = 50,
        samples: int = 100,
        map_solver: Solver | None = None,
        map_stop: StopRule | int = 0,
    ) -> None:
        if not isinstance(solver, Langevin):
            raise OptionError(f"MonteCarloPC needs a Langevin solver (predcode.sampling.Langevin), got {solver!r}")
        if burn_in < 0 or samples < 1:
            raise OptionError(f"need burn_in >= 0 and samples >= 1, got {burn_in}, {samples}")
        self.solver, self.burn_in, self.samples = solver, burn_in, samples
        self.map_stop = as_stop(map_stop)
        if self.map_stop.max_steps and map_solver is None:
            raise OptionError("map_stop > 0 needs a map_solver (e.g. GradientDescent(0.1))")
        self.map_solver = map_solver

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        batch = prepare_batch(graph, inputs, target)
        free = graph.free_slots(batch.outputs)
        energy = learning_plan(graph)
        params = energy.trainable()
        total: dict[str, torch.Tensor] = {}
        values = batch.clamped()

        def on_step(step: int, current: list[torch.Tensor]) -> None:
            if step < self.burn_in:
                return
            grads, _ = weight_gradients(energy, params, current)
            for name, g in grads.items():
                total[name] = g if name not in total else total[name] + g

        with torch.no_grad():
            if self.map_stop.max_steps and self.map_solver is not None:  # __init__ pairs them
                values = relax(graph, values, free, self.map_solver, self.map_stop).values
            chain = relax(
                graph,
                values,
                free,
                self.solver,
                StopRule(max_steps=self.burn_in + self.samples, divergence_factor=float("inf")),
                on_step=on_step,
            )
        energy.accumulate({name: g / self.samples for name, g in total.items()})
        trace = chain.trace
        return StepStats(batch.loss, batch.prediction, trace.energy[0], trace.energy[-1], trace)

    def __repr__(self) -> str:
        return (
            f"MonteCarloPC({self.solver}, burn_in={self.burn_in}, samples={self.samples}, "
            f"map_steps={self.map_stop.max_steps})"
        )

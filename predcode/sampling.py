r"""Monte-Carlo predictive coding: inference with noise (Langevin dynamics) as a solver.

Gradient descent on the energy finds the *mode* of the posterior over the free nodes,
:math:`p(x_{free} \mid x_{clamped}) \propto \exp(-E(x))` (every energy is a negative
log-likelihood).  Adding Gaussian noise to every step turns the same local dynamics into
a sampler (the unadjusted Langevin algorithm):

.. math:: x \leftarrow x - \eta\,\nabla_x E(x) + \sqrt{2\eta\,T}\;\xi, \qquad \xi \sim \mathcal N(0, I)

whose stationary distribution is :math:`\propto \exp(-E/T)` up to an :math:`O(\eta)`
discretisation bias (for a Gaussian posterior of precision :math:`\lambda` the stationary
variance is :math:`1/(\lambda T^{-1}(1 - \eta\lambda/2))`).  ``T = 1`` samples the
posterior, ``T = 0`` is plain gradient descent.  Gradients are per sample, so a batch of
``B`` copies of one clamp pattern is ``B`` independent chains.

:func:`sample` runs :func:`predcode.inference.relax` with a :class:`Langevin` solver and
records every free node's value after a burn-in.  Free nodes without children are set to
their energy's mode at every step (they are not sampled; their distribution given their
parents is their energy), so read their *predictions* to get a predictive distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import require_positive
from .energy import Gaussian
from .exceptions import OptionError
from .graph import PCGraph, prediction_of
from .inference import GradFn, Solver, StopRule, Variables, relax


class Langevin(Solver):
    r"""Langevin dynamics on the free states: ``x <- x - lr * dE/dx + sqrt(2 lr T) * noise``.

    Args:
        lr: step size :math:`\eta`.
        temperature: :math:`T` (1 samples :math:`\propto e^{-E}`; 0 is gradient descent).
        generator: a ``torch.Generator`` for reproducible noise (on the states' device).

    Not compilable (its noise comes from a Python-side generator).
    """

    compilable = False

    def __init__(self, lr: float = 0.01, temperature: float = 1.0, generator: torch.Generator | None = None) -> None:
        require_positive(lr, "Langevin step size")
        if not temperature >= 0:
            raise OptionError(f"Langevin temperature must be >= 0, got {temperature}")
        self.lr, self.temperature, self.generator = lr, temperature, generator
        self.scale = math.sqrt(2 * lr * temperature)

    def noise(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, dtype=like.dtype, device=like.device)

    def update(
        self, step: int, states: list[Tensor], grad_fn: GradFn, memory: object
    ) -> tuple[list[Tensor], object, Tensor, list[Tensor]]:
        grads, energies = grad_fn(states)
        new = [x - self.lr * g + (self.scale * self.noise(x) if self.scale else 0.0) for x, g in zip(states, grads)]
        return new, memory, energies, grads

    def __repr__(self) -> str:
        return f"Langevin(lr={self.lr}, temperature={self.temperature})"


@dataclass
class Samples:
    """Per recorded step: every slot's value and every node's prediction (``None`` for
    inputs): ``values[i]`` is ``[S, B, ...]`` for ``S`` recorded steps."""

    values: list[Tensor]
    predictions: list[Tensor | None]
    names: list[str]

    def __getitem__(self, name: str) -> Tensor:
        return self.values[self.names.index(name)]


def sample(
    graph: PCGraph,
    values: list[Tensor],
    free: list[int],
    solver: Langevin,
    *,
    burn_in: int,
    samples: int,
    thin: int = 1,
    masks: Mapping[int, Tensor] | None = None,
    variables: Variables = Variables.STATES,
) -> Samples:
    r"""Run ``burn_in + samples * thin`` Langevin steps from ``values`` on the ``free``
    slots; record every ``thin``-th state after the burn-in (and each node's prediction
    there).

    ``variables``: the noise and the gradient act on the states or on the errors
    (:class:`~predcode.inference.Variables`).  Both sample the same posterior: the map
    from errors to states, :math:`x_i = \mu_i(x_{pa(i)}) + d_i`, is triangular with a unit
    diagonal, so its Jacobian determinant is 1 and :math:`p(d) \propto e^{-E(x(d))/T}`."""
    if burn_in < 0 or samples < 1 or thin < 1:
        raise OptionError(f"need burn_in >= 0, samples >= 1, thin >= 1; got {burn_in}, {samples}, {thin}")
    if not isinstance(solver, Langevin):
        raise OptionError(f"sample() needs a Langevin solver, got {solver!r}")
    kept_values: list[list[Tensor]] = []
    kept_preds: list[list[Tensor | None]] = []

    def on_step(step: int, current: list[Tensor]) -> None:
        k = step + 1 - burn_in
        if k > 0 and k % thin == 0:
            with torch.no_grad():
                kept_values.append([v.detach().clone() for v in current])
                kept_preds.append(
                    [None if s.is_input else graph.node_prediction(s.index, current).detach() for s in graph.slots]
                )

    steps = burn_in + samples * thin
    relax(
        graph,
        values,
        free,
        solver,
        StopRule(max_steps=steps, divergence_factor=float("inf")),
        masks=dict(masks or {}),
        on_step=on_step,
        variables=variables,
    )
    stacked = [torch.stack([row[i] for row in kept_values]) for i in range(len(graph.slots))]
    preds = [
        None if graph.slots[i].is_input else torch.stack([prediction_of(row, i) for row in kept_preds])
        for i in range(len(graph.slots))
    ]
    return Samples(stacked, preds, list(graph.names))


def ancestral(
    graph: PCGraph, inputs: list[Tensor], generator: torch.Generator | None = None, noise: bool = True
) -> list[Tensor]:
    r"""Sample every node from the generative model, parents first: a Gaussian node is
    :math:`x_i = \mu_i(x_{pa(i)}) + \Pi_i^{-1/2}\xi`, :math:`\xi \sim \mathcal N(0, I)`
    (``noise=False``: :math:`x_i = \mu_i`, the feed-forward pass), any other node (a
    Bernoulli or categorical output) its energy's mode, the mean of its distribution.
    Returns every slot's value (inputs as given).  This is exactly sampling the joint
    :math:`p(x) \propto e^{-E(x)}` of a layered graph, the model that Monte Carlo PC
    (:class:`predcode.rules.MonteCarloPC`) learns."""
    if len(inputs) != len(graph.inputs):
        raise OptionError(f"the graph has {len(graph.inputs)} input(s), got {len(inputs)}")
    given = dict(zip(graph.inputs, inputs))
    values: list[Tensor] = []  # slot i's value at position i (slots are in topological order)
    with torch.no_grad():
        for slot in graph.slots:
            if slot.is_input:
                values.append(given[slot.index])
                continue
            mu = graph.node_prediction(slot.index, values)
            energy = slot.node_energy
            if not noise or not isinstance(energy, Gaussian):
                values.append(energy.mode(mu))
                continue
            xi = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            matrix = getattr(energy, "precision_matrix", None)
            if matrix is not None:  # x = mu + L^{-T} xi with Pi = L L^T
                chol = torch.linalg.cholesky(matrix)
                step = torch.linalg.solve_triangular(chol.T, xi.T, upper=True).T
            else:
                step = xi * energy.precision.rsqrt()
            values.append(mu + step)
    return values

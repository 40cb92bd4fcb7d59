r"""Inference: relax the free value nodes to lower the energy.

The free nodes follow the energy's negative gradient (gradient flow)

.. math:: \dot x_i = -\partial E / \partial x_i
         = -\big(\partial_{x_i} E_i(x_i,\mu_i) - \sum_{c \in ch(i)} J_{ci}^\top e_c\big),
         \qquad e_c = -\partial E_c / \partial \mu_c,\; J_{ci} = \partial\mu_c/\partial x_i,

discretised by a :class:`Solver`.  Gradients are per sample (the energy summed over the
batch), so a state step size means the same at any batch size.  Free nodes with no
children are set to their energy's mode at every step (their exact minimiser), and
predictions whose parents are all clamped are computed once per call.

A :class:`StopRule` ends relaxation after ``max_steps`` or earlier when the state-gradient
norm or the relative energy change falls below a tolerance.  :func:`relax` returns the
values and a :class:`Trace` of the energy per node at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from .errors import DivergenceError, OptionError
from .graph import PCGraph

GradFn = Callable[[Sequence[Tensor]], tuple[Tensor, list[Tensor]]]
"""Maps the free states to (per-node energies, per-sample state gradients)."""


# -- solvers ---------------------------------------------------------------------------
class Solver:
    """Advances the free states one step along the negative energy gradient."""

    evaluations_per_step = 1

    def reset(self, states: list[Tensor]) -> None:
        """Called once per relaxation, before the first step (re-initialises any memory)."""

    def step(self, states: list[Tensor], grad_fn: GradFn) -> tuple[Tensor, list[Tensor]]:
        """Update ``states`` in place; return the energies and gradients at the old point."""
        raise NotImplementedError


class GradientDescent(Solver):
    r"""Plain gradient descent ``x <- x - lr * dE/dx`` (explicit Euler with ``dt = lr``)."""

    def __init__(self, lr: float = 0.1) -> None:
        if not lr > 0:
            raise OptionError(f"inference rate must be > 0, got {lr}")
        self.lr = lr

    def step(self, states, grad_fn):
        energies, grads = grad_fn(states)
        for x, g in zip(states, grads):
            x.sub_(g, alpha=self.lr)
        return energies, grads

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr})"


class Euler(GradientDescent):
    r"""Explicit Euler on the gradient flow: ``x_{t+dt} = x_t - dt * dE/dx(x_t)``."""

    def __init__(self, dt: float = 0.1) -> None:
        super().__init__(lr=dt)


class Heun(Solver):
    r"""Heun's second-order method on the gradient flow.

    .. math:: \tilde x = x - dt\, g(x), \qquad x \leftarrow x - \tfrac{dt}{2}(g(x) + g(\tilde x))
    """

    evaluations_per_step = 2

    def __init__(self, dt: float = 0.1) -> None:
        if not dt > 0:
            raise OptionError(f"Heun step dt must be > 0, got {dt}")
        self.dt = dt

    def step(self, states, grad_fn):
        energies, g1 = grad_fn(states)
        trial = [x - self.dt * g for x, g in zip(states, g1)]
        _, g2 = grad_fn(trial)
        for x, a, b in zip(states, g1, g2):
            x.sub_(a + b, alpha=0.5 * self.dt)
        return energies, g1

    def __repr__(self) -> str:
        return f"Heun(dt={self.dt})"


class OptimizerSolver(Solver):
    """Any ``torch.optim`` optimizer over the states, re-created for every relaxation.

    Example: ``OptimizerSolver(torch.optim.SGD, lr=0.01, momentum=0.65)``.
    """

    def __init__(self, optimizer: type[torch.optim.Optimizer], **kwargs) -> None:
        if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
            raise OptionError(f"expected a torch.optim.Optimizer class, got {optimizer!r}")
        self.optimizer_class, self.kwargs = optimizer, kwargs
        self._optimizer: torch.optim.Optimizer | None = None

    def reset(self, states):
        self._optimizer = self.optimizer_class(states, **self.kwargs)

    def step(self, states, grad_fn):
        energies, grads = grad_fn(states)
        for x, g in zip(states, grads):
            x.grad = g
        self._optimizer.step()
        return energies, grads

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"OptimizerSolver({self.optimizer_class.__name__}, {args})"


def SGD(lr: float, momentum: float = 0.0, **kwargs) -> OptimizerSolver:
    """State SGD (with momentum), re-initialised per batch as in pcx."""
    return OptimizerSolver(torch.optim.SGD, lr=lr, momentum=momentum, **kwargs)


SOLVERS = {"gd": GradientDescent, "euler": Euler, "heun": Heun, "sgd": SGD}


def make_solver(name: str, lr: float, momentum: float = 0.0) -> Solver:
    """A solver from its name: ``gd``, ``euler``, ``heun`` (step ``lr``) or ``sgd`` (momentum)."""
    if name == "sgd":
        return SGD(lr, momentum=momentum)
    if name not in SOLVERS:
        raise OptionError(f"unknown solver '{name}'; choose one of {sorted(SOLVERS)}")
    if momentum:
        raise OptionError(f"momentum applies to the 'sgd' solver only, not '{name}'")
    return SOLVERS[name](lr)


# -- stop rules ------------------------------------------------------------------------
@dataclass
class StopRule:
    """When to end relaxation.

    Args:
        max_steps: the step cap (``T``).
        grad_tol: stop once ``sqrt(sum_i ||dE/dx_i||^2 / B) <= grad_tol``.
        energy_rtol: stop once ``|E_t - E_{t-1}| <= energy_rtol * |E_{t-1}|``.
        divergence_factor: raise :class:`DivergenceError` when the energy becomes
            non-finite or exceeds ``divergence_factor * max(E_0, 1)``.
    """

    max_steps: int = 20
    grad_tol: float | None = None
    energy_rtol: float | None = None
    divergence_factor: float = 1e6

    def __post_init__(self) -> None:
        if self.max_steps < 0:
            raise OptionError(f"max_steps must be >= 0, got {self.max_steps}")

    @property
    def needs_checks(self) -> bool:
        return self.grad_tol is not None or self.energy_rtol is not None

    def converged(self, energy: float, previous: float | None, grad_norm: float) -> bool:
        if self.grad_tol is not None and grad_norm <= self.grad_tol:
            return True
        if self.energy_rtol is not None and previous is not None:
            return abs(energy - previous) <= self.energy_rtol * abs(previous)
        return False


# -- the trace -------------------------------------------------------------------------
@dataclass
class Trace:
    """Per-step record of a relaxation.

    ``node_energies[t, i]`` is the batch-mean energy of slot ``i`` before step ``t``; the
    last row is the final state.  ``grad_norms[t]`` is the state-gradient norm at step t.
    """

    names: list[str]
    node_energies: Tensor
    grad_norms: Tensor = field(default_factory=lambda: torch.empty(0))

    @property
    def energy(self) -> Tensor:
        """Total energy per step."""
        return self.node_energies.sum(dim=1)

    @property
    def steps(self) -> int:
        return self.node_energies.shape[0] - 1

    def check_divergence(self, factor: float) -> None:
        """Raise :class:`DivergenceError` naming the first step and node that diverged."""
        e = self.node_energies.detach().double().cpu()
        limit = factor * max(float(e[0].sum()) if torch.isfinite(e[0]).all() else 1.0, 1.0)
        totals = e.sum(dim=1)
        bad = ~torch.isfinite(totals) | (totals > limit)
        if not bad.any():
            return
        step = int(bad.nonzero()[0])
        row = e[step]
        nonfinite = ~torch.isfinite(row)
        node = int(nonfinite.nonzero()[0]) if nonfinite.any() else int(row.argmax())
        reason = "not finite" if nonfinite.any() or not math.isfinite(float(totals[step])) else (
            f"above {limit:.3g}")
        raise DivergenceError(step, self.names[node], float(row[node]), reason)


# -- relaxation ------------------------------------------------------------------------
@dataclass
class Relaxation:
    """Result of :func:`relax`: the relaxed values of every slot and the trace."""

    values: list[Tensor]
    trace: Trace
    predictions: list[Tensor | None]


class EnergyLandscape:
    """The energy of a graph as a function of its free states, for one batch.

    Splits the slots once: ``free`` (interior free nodes, relaxed by the solver),
    ``leaves`` (free nodes without children, set to their mode), ``constant`` (predictions
    whose parents are all clamped, computed once) and ``dynamic`` (the rest).
    """

    def __init__(self, graph: PCGraph, values: list[Tensor], free: Sequence[int],
                 masks: dict[int, Tensor] | None = None, cache_constant: bool = True) -> None:
        self.graph = graph
        self.masks = masks or {}
        free_set = set(free)
        self.free = [i for i in free if graph.slots[i].children or graph.slots[i].is_input]
        self.leaves = [i for i in free if not (graph.slots[i].children or graph.slots[i].is_input)]
        self.leaves = [i for i in self.leaves if i not in self.masks]
        self.free += [i for i in free if i in self.masks and i not in self.free]
        moving = set(self.free) | set(self.leaves)
        self.dynamic = [s.index for s in graph.slots if not s.is_input and (
            not cache_constant or any(p in moving for p in s.parents))]
        self.values = list(values)
        self.clamp_values = {i: values[i].clone() for i in self.masks}
        self.predictions: list[Tensor | None] = [None] * len(values)
        with torch.no_grad():
            for s in graph.slots:
                if not s.is_input and s.index not in self.dynamic:
                    self.predictions[s.index] = graph.predict(s.index, values)
        for i in self.leaves:
            self.values[i] = graph.slots[i].energy.mode(self.predictions[i]) \
                if self.predictions[i] is not None else self.values[i]
        self._scored = [s.index for s in graph.slots if not s.is_input]
        self._free_set = free_set

    def current(self, states: Sequence[Tensor]) -> list[Tensor]:
        """Every slot's value, with the free states substituted in."""
        return self._current(states)

    def _current(self, states: Sequence[Tensor]) -> list[Tensor]:
        values = list(self.values)
        for i, x in zip(self.free, states):
            values[i] = x
        return values

    def evaluate(self, states: Sequence[Tensor], need_grad: bool = True
                 ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Per-node energies (batch means), per-sample state gradients, and the values."""
        graph = self.graph
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(need_grad) for x in states]
            values = self._current(leaves)
            preds = list(self.predictions)
            for i in self.dynamic:
                preds[i] = graph.predict(i, values)
                if i in self.leaves:
                    values[i] = graph.slots[i].energy.mode(preds[i]).detach()
                    self.values[i] = values[i]
            terms = []
            for i in self._scored:
                terms.append(graph.slots[i].energy(values[i], preds[i]).sum())
            summed = torch.stack(terms)
            grads = list(torch.autograd.grad(summed.sum(), leaves, allow_unused=True)) \
                if need_grad and leaves else []
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(states, grads)]
        if grads:  # none when need_grad is False
            for k, i in enumerate(self.free):
                if i in self.masks:
                    grads[k] = grads[k].masked_fill(self.masks[i], 0.0)
        batch = states[0].shape[0] if states else max(values[0].shape[0], 1)
        energies = torch.zeros(len(graph.slots), dtype=summed.dtype, device=summed.device)
        energies[self._scored] = summed.detach() / batch
        self.last_predictions = [None if p is None else p.detach() for p in preds]
        return energies, grads, [v.detach() for v in values]


def relax(graph: PCGraph, values: list[Tensor], free: Sequence[int], solver: Solver,
          stop: StopRule, masks: dict[int, Tensor] | None = None,
          on_step: Callable[[int, list[Tensor]], None] | None = None,
          cache_constant: bool = True) -> Relaxation:
    """Relax the ``free`` slots of ``graph`` starting from ``values``.

    Args:
        values: initial value of every slot (clamped slots keep theirs).
        free: indices of the slots to relax.
        masks: for partially clamped slots, a boolean mask (True = clamped unit) of the
            slot's shape; those slots must also be listed in ``free``.
        on_step: called after every step with ``(step, values)``, the current value of
            every slot (e.g. incremental PC updates the weights there).
        cache_constant: compute predictions whose parents are all clamped once; turn off
            when ``on_step`` changes the weights.
    """
    landscape = EnergyLandscape(graph, values, free, masks, cache_constant)
    states = [landscape.values[i].detach().clone() for i in landscape.free]
    solver.reset(states)
    rows, norms = [], []
    previous: float | None = None

    def grad_fn(xs):
        energies, grads, _ = landscape.evaluate(xs)
        return energies, grads

    for step in range(stop.max_steps):
        energies, grads = solver.step(states, grad_fn)
        with torch.no_grad():
            for k, i in enumerate(landscape.free):
                if i in landscape.masks:
                    states[k].copy_(torch.where(landscape.masks[i], landscape.clamp_values[i], states[k]))
        rows.append(energies)
        batch = max(states[0].shape[0], 1) if states else 1
        norm = torch.sqrt(sum((g * g).sum() for g in grads) / batch) if grads else energies.new_zeros(())
        norms.append(norm)
        if on_step is not None:
            on_step(step, landscape.current(states))
        if stop.needs_checks:
            total = float(energies.sum())
            if stop.converged(total, previous, float(norm)):
                break
            previous = total
    energies, _, final_values = landscape.evaluate(states, need_grad=False)
    rows.append(energies)
    trace = Trace(graph.names, torch.stack(rows),
                  torch.stack(norms) if norms else torch.empty(0))
    trace.check_divergence(stop.divergence_factor)
    return Relaxation(final_values, trace, landscape.last_predictions)

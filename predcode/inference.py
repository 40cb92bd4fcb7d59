r"""Inference: relax the free value nodes to lower the energy.

The free nodes follow the energy's negative gradient (gradient flow)

.. math:: \dot x_i = -\partial E / \partial x_i
         = -\big(\partial_{x_i} E_i(x_i,\mu_i) - \sum_{c \in ch(i)} J_{ci}^\top e_c\big),
         \qquad e_c = -\partial E_c / \partial \mu_c,\; J_{ci} = \partial\mu_c/\partial x_i,

discretised by a :class:`Solver`.  What the solver moves is a component, :class:`Variables`:
the states themselves (state-based PC, sPC, above) or the prediction errors (error-based
PC, ePC; Goemaere et al. 2025), where every free node with a prediction is
:math:`x_i = \mu_i(x_{pa(i)}) + d_i`, recomputed by one forward sweep, and the solver
follows :math:`-\partial E/\partial d_i` (one reverse pass reaches every node).  Both have the
same fixed points.  Gradients are per sample (the energy summed over the
batch), so a state step size means the same at any batch size.  Free nodes with no
children are set to their energy's mode at every step (their exact minimiser), and
predictions whose parents are all clamped are computed once per call.

A :class:`StopRule` ends relaxation after ``max_steps`` or earlier when the state-gradient
norm or the relative energy change falls below a tolerance.  :func:`relax` returns the
values and a :class:`Trace` of the energy per node at every step.

Notation (one for every docstring on the training path): :math:`x_i` the value of node
:math:`i`; :math:`\mu_i = f_i(x_{pa(i)};\theta_i)` its prediction; :math:`E_i(x_i, \mu_i)` its
energy and :math:`E = \sum_i \mathrm{mean}_b E_i`; :math:`e_i = -\partial E_i/\partial\mu_i`
its prediction error (:math:`\pi_i (x_i - \mu_i)` for a Gaussian of precision :math:`\pi_i`);
:math:`d_i = x_i - \mu_i` the difference, which ePC moves; :math:`J_{ci} = \partial\mu_c/\partial x_i`;
:math:`ch(i)`, :math:`pa(i)` the children and parents; :math:`b` the sample, :math:`B` the batch size,
:math:`T` the relaxation steps.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._moved import renamed
from .checks import require_positive
from .closed_form import closed_form_gradients
from .energy import Gaussian, unit_precisions
from .exceptions import DivergenceError, OptionError
from .graph import PCGraph
from .registry import Registry
from .running_stats import frozen_running_stats

GradFn = Callable[[Sequence[Tensor]], tuple[list[Tensor], Tensor]]
"""Maps the free states to (per-sample state gradients, per-node energies summed over the batch)."""


class Variables(str, Enum):  # noqa: UP042  (StrEnum would change str(member), which messages print)
    r"""What a relaxation moves.

    ``STATES`` (state-based PC, sPC): the free values :math:`x_i` themselves, descending

    .. math:: \partial E/\partial x_i = \partial_{x_i} E_i(x_i, \mu_i) - \sum_{c \in ch(i)} J_{ci}^\top e_c,

    local (a node hears only its own and its children's errors), so an error at the output
    reaches a node ``d`` edges away only after ``d`` steps.

    ``ERRORS`` (error-based PC, ePC): the prediction errors in difference form,
    :math:`d_i = x_i - \mu_i`, of the free nodes that have a prediction, with the values
    given by a forward sweep in topological order, :math:`x_i = \mu_i(x_{pa(i)}) + d_i`
    (free inputs stay states, leaves their mode), so

    .. math:: E(d) = \sum_{i\,\text{free}} E_i(\mu_i + d_i, \mu_i)
              + \sum_{o\,\text{clamped}} E_o(y_o, \mu_o(x_{pa(o)}(d))), \qquad
              \frac{\partial E}{\partial d_i} = \pi_i d_i
              + \frac{\partial x_{\text{later}}}{\partial d_i}^{\!\top} \nabla E,

    the second term one reverse pass through everything downstream of node ``i``: every
    node hears the output in the first step.  Not local in its inference, but a
    reparametrisation of the same energy: the stationary points, and so the relaxed
    states and the (local) weight gradients there, are sPC's.
    """

    STATES = "states"
    ERRORS = "errors"

    @classmethod
    def _missing_(cls, value: object) -> Variables:
        raise OptionError(f"a relaxation moves 'states' or 'errors' (predcode.Variables), not {value!r}")


# -- solvers ---------------------------------------------------------------------------
class Solver:
    """Advances the free states one step along the negative energy gradient.

    Solvers are functional: ``update`` returns new states and the solver's memory (e.g. a
    momentum buffer) instead of changing them, so a whole relaxation can be compiled.
    ``grad_fn(states)`` returns ``(per-sample gradients, per-node energies)``.
    """

    compilable = True
    moves_only_with_gradient = False
    """Whether a state whose gradient has been exactly zero at every step so far is
    unchanged, and the solver evaluates the gradient once per step (plain gradient
    descent, momentum): then a relaxation from the feed-forward pass need not recompute
    what is still zero (:func:`error_frontier`).  Gradient descent and momentum SGD say
    so only for their own ``update``: a subclass that changes it (noise, decay) may move
    states with a zero gradient, and must set the flag itself if it still holds."""

    def settings(self) -> Hashable:
        """What fixes this solver's update: its class and every attribute's value.  Part
        of a compiled step's cache key (compiled code bakes in the settings), so two
        solvers share compiled code exactly when their settings are equal."""
        return (type(self), repr(sorted(vars(self).items())))

    def init(self, states: list[Tensor]) -> Any:
        """Fresh memory at the start of every relaxation."""
        return None

    def update(
        self, step: int, states: list[Tensor], grad_fn: GradFn, memory: Any
    ) -> tuple[list[Tensor], Any, Tensor, list[Tensor]]:
        """One step: ``(new states, new memory, energies and gradients at the old states)``."""
        raise NotImplementedError


class GradientDescent(Solver):
    r"""Plain gradient descent ``x <- x - lr * dE/dx`` (explicit Euler with ``dt = lr``)."""

    @property
    def moves_only_with_gradient(self) -> bool:  # type: ignore[override]
        """True for this class's own ``update`` (a subclass's own update must say so)."""
        return type(self).update is GradientDescent.update

    def __init__(self, lr: float = 0.1) -> None:
        require_positive(lr, "inference rate")
        self.lr = lr

    def update(
        self, step: int, states: list[Tensor], grad_fn: GradFn, memory: Any
    ) -> tuple[list[Tensor], Any, Tensor, list[Tensor]]:
        grads, energies = grad_fn(states)
        return [torch.add(x, g, alpha=-self.lr) for x, g in zip(states, grads)], memory, energies, grads

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

    def __init__(self, dt: float = 0.1) -> None:
        require_positive(dt, "Heun step dt")
        self.dt = dt

    def update(
        self, step: int, states: list[Tensor], grad_fn: GradFn, memory: Any
    ) -> tuple[list[Tensor], Any, Tensor, list[Tensor]]:
        g1, energies = grad_fn(states)
        g2, _ = grad_fn([x - self.dt * g for x, g in zip(states, g1)])
        new = [x - 0.5 * self.dt * (a + b) for x, a, b in zip(states, g1, g2)]
        return new, memory, energies, g1

    def __repr__(self) -> str:
        return f"Heun(dt={self.dt})"


class SGD(Solver):
    r"""SGD with momentum on the states, re-initialised per relaxation (as pcx does).

    .. math:: b_0 = g_0,\quad b_t = m\, b_{t-1} + g_t,\qquad x \leftarrow x - lr\, b_t

    the same numbers as ``torch.optim.SGD(lr, momentum=m)``, in functional form.
    """

    @property
    def moves_only_with_gradient(self) -> bool:  # type: ignore[override]
        """True for this class's own ``update`` (a subclass's own update must say so)."""
        return type(self).update is SGD.update

    def __init__(self, lr: float, momentum: float = 0.0) -> None:
        require_positive(lr, "inference rate")
        if not 0 <= momentum < 1:
            raise OptionError(f"momentum must lie in [0, 1), got {momentum}")
        self.lr, self.momentum = lr, momentum

    def update(
        self, step: int, states: list[Tensor], grad_fn: GradFn, memory: Any
    ) -> tuple[list[Tensor], Any, Tensor, list[Tensor]]:
        grads, energies = grad_fn(states)
        if memory is None or self.momentum == 0:
            buffers = list(grads)
        else:
            buffers = [torch.add(g, b, alpha=self.momentum) for b, g in zip(memory, grads)]
        new = [torch.add(x, b, alpha=-self.lr) for x, b in zip(states, buffers)]
        return new, buffers, energies, grads

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum})"


class OptimizerSolver(Solver):
    """Any ``torch.optim`` optimizer over the states, re-created for every relaxation.

    Example: ``OptimizerSolver(torch.optim.Adam, lr=0.05)``.  Runs eagerly (not compiled).
    """

    compilable = False

    def __init__(self, optimizer: type[torch.optim.Optimizer], **kwargs: Any) -> None:
        if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
            raise OptionError(f"expected a torch.optim.Optimizer class, got {optimizer!r}")
        self.optimizer_class, self.kwargs = optimizer, kwargs

    def init(self, states: list[Tensor]) -> None:
        return None

    def update(
        self, step: int, states: list[Tensor], grad_fn: GradFn, memory: Any
    ) -> tuple[list[Tensor], Any, Tensor, list[Tensor]]:
        grads, energies = grad_fn(states)
        if memory is None:
            states = [x.detach().clone() for x in states]
            memory = (states, self.optimizer_class(states, **self.kwargs))
        params, optimizer = memory
        for x, g in zip(params, grads):
            x.grad = g
        with torch.no_grad():
            optimizer.step()
        return params, memory, energies, grads

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"OptimizerSolver({self.optimizer_class.__name__}, {args})"


SOLVERS: Registry[Solver] = Registry("solver")
"""The state solvers a name selects (``--solver``); the ``momentum`` tag marks those that
take a momentum."""
SOLVERS.add("gd", GradientDescent)
SOLVERS.add("euler", Euler)
SOLVERS.add("heun", Heun)
SOLVERS.add("sgd", SGD, "momentum")


def make_solver(name: str, lr: float, momentum: float = 0.0) -> Solver:
    """A solver from its name (:data:`SOLVERS`) with step ``lr``, and ``momentum`` for
    those tagged ``momentum``."""
    entry = SOLVERS[name]
    if "momentum" in entry.tags:
        return entry.build(lr, momentum=momentum)
    if momentum:
        takes = " / ".join(f"'{n}'" for n in SOLVERS.tagged("momentum"))
        raise OptionError(f"momentum applies to the {takes} solver only, not '{name}'")
    return entry.build(lr)


def __getattr__(name: str) -> object:
    """``MomentumSGD``, the old name of :class:`SGD`, works for one release with a warning."""
    if name == "MomentumSGD":
        return renamed("predcode.inference.MomentumSGD", "predcode.inference.SGD (the same class)", SGD)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- stop rules ------------------------------------------------------------------------
@dataclass
class StopRule:
    """When to end relaxation.

    Args:
        max_steps: the step cap (``T``).
        grad_tol: stop once ``sqrt(sum_i ||dE/dx_i||^2 / B) <= grad_tol``.
        energy_rtol: stop once ``|E_t - E_{t-1}| <= energy_rtol * |E_{t-1}|``.
        divergence_factor: raise :class:`DivergenceError` when the energy becomes
            non-finite or exceeds ``divergence_factor`` times the relaxation's starting
            energy ``E_0`` (:func:`divergence_limit`).
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

    def diverged(self, energy: float, first: float) -> bool:
        """Whether a batch-mean energy is not finite or above the limit relative to the
        first step's (:func:`divergence_limit`): the rule :meth:`Trace.check_divergence` applies."""
        return not math.isfinite(energy) or energy > divergence_limit(self.divergence_factor, first)

    def converged(self, energy: float, previous: float | None, grad_norm: float) -> bool:
        if self.grad_tol is not None and grad_norm <= self.grad_tol:
            return True
        if self.energy_rtol is not None and previous is not None:
            return abs(energy - previous) <= self.energy_rtol * abs(previous)
        return False


DIVERGENCE_FLOOR = 1e-8
"""Starting energies below this count as this much in :func:`divergence_limit` (a start at
an exact equilibrium, E_0 = 0, must not make rounding noise a divergence)."""


def divergence_limit(factor: float, first: float) -> float:
    """The energy above which a relaxation that started at energy ``first`` has diverged:
    ``factor * max(E_0, DIVERGENCE_FLOOR)``, relative to the start, so a relaxation from a
    small output error that grows a millionfold is caught as well as one from a large one."""
    start = first if math.isfinite(first) else 1.0
    return factor * max(start, DIVERGENCE_FLOOR)


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

    def plot(self, ax: Any = None, *, path: str | Path | None = None, log: bool | None = None) -> Any:
        """Draw the energy of every node against the inference step, and the total
        (:func:`predcode.plotting.energy_trace`): the first thing to look at when a
        relaxation misbehaves.  Draws into ``ax`` when given; writes a PNG to ``path`` when
        given.  Returns the matplotlib figure (needs the ``plots`` extra)."""
        from .plotting import energy_trace, save

        fig = energy_trace(self.node_energies, self.names, ax, log=log)
        if path is not None:
            save(fig, path)
        return fig

    def check_divergence(self, factor: float) -> None:
        """Raise :class:`DivergenceError` naming the first step and node that diverged: the
        first step whose total energy is not finite or above :func:`divergence_limit`.
        At step 0 (the start) the cause is the inputs or the weights, not the inference
        rate, and the message says so."""
        totals = self.node_energies.detach().sum(dim=1, dtype=torch.float64).tolist()
        first = totals[0] if totals else 0.0
        limit = divergence_limit(factor, first)
        step = next((t for t, v in enumerate(totals) if not math.isfinite(v) or v > limit), None)
        if step is None:
            return
        row = self.node_energies[step].detach().double().cpu()
        nonfinite = ~torch.isfinite(row)
        node = int(nonfinite.nonzero()[0]) if nonfinite.any() else int(row.argmax())
        reason = "not finite" if nonfinite.any() or not math.isfinite(totals[step]) else (f"above {limit:.3g}")
        raise DivergenceError(step, self.names[node], float(row[node]), reason)


# -- relaxation ------------------------------------------------------------------------
@dataclass
class Relaxation:
    """Result of :func:`relax`: the relaxed values of every slot, the trace, and every
    node's prediction at the relaxed state (``None`` for inputs)."""

    values: list[Tensor]
    trace: Trace
    predictions: list[Tensor | None]
    errors: dict[int, Tensor] = field(default_factory=dict)
    """For a relaxation of the errors (ePC): each error coordinate's ``x_i - mu_i``, kept
    exactly (:meth:`EnergyLandscape.error_differences`)."""


class EnergyLandscape:
    """The energy of a graph as a pure function of its free states, for one batch.

    Splits the slots once: ``free`` (relaxed by the solver: interior free nodes, free
    inputs and partially clamped nodes), ``leaves`` (free nodes without children, set to
    their energy's mode), constant predictions (all parents clamped: computed here, once)
    and ``dynamic`` predictions (recomputed from the states at every evaluation).
    """

    def __init__(
        self,
        graph: PCGraph,
        values: Sequence[Tensor],
        free: Sequence[int],
        masks: dict[int, Tensor] | None = None,
        cache_constant: bool = True,
        precomputed: Sequence[Tensor | None] | None = None,
        closed_form: bool = True,
        chains: dict[int, Any] | None = None,
        start_predictions: Sequence[Tensor | None] | None = None,
        variables: Variables = Variables.STATES,
    ) -> None:
        """``precomputed``: predictions already computed at ``values`` (e.g. by the feed-forward
        pass); the constant ones are taken from it instead of being computed again.
        ``closed_form``: take state gradients from :mod:`predcode.closed_form`'s closed-form
        products where the graph allows (dense layers), else from autograd; ``chains``:
        the dense predictors' saved intermediate values from the feed-forward pass
        (:func:`predcode.closed_form.dense_forward`), for closed-form weight gradients;
        ``start_predictions``: every prediction at ``values``, which lets an evaluation
        with a ``front`` set recompute only the predictions it names (:func:`error_frontier`);
        ``variables``: what the solver moves (:class:`Variables`): with ``ERRORS`` the
        free Gaussian nodes that have a prediction are moved through their errors, which
        start at ``values[i] - mu_i(values)`` (zero at the feed-forward pass), so both
        parametrisations start from the same values."""
        self.graph = graph
        self.variables = Variables(variables)
        self.start_predictions = None if start_predictions is None else list(start_predictions)
        self.masks = dict(masks or {})
        slots = graph.slots
        self.free = [i for i in free if slots[i].children or slots[i].is_input or i in self.masks]
        self.leaves = [i for i in free if i not in self.free]
        moving = set(free)
        self.dynamic = [
            s.index for s in slots if not s.is_input and (not cache_constant or any(p in moving for p in s.parents))
        ]
        self.scored = [s.index for s in slots if not s.is_input]
        self.values = list(values)
        self.clamp_values = {i: values[i] for i in self.masks}
        self.predictions: list[Tensor | None] = [None] * len(values)
        with torch.no_grad():
            for s in slots:
                if not s.is_input and s.index not in self.dynamic:
                    given = None if precomputed is None else precomputed[s.index]
                    self.predictions[s.index] = graph.node_prediction(s.index, values) if given is None else given
            for i in self.leaves:
                precomputed_mu = self.predictions[i]
                if precomputed_mu is not None:
                    self.values[i] = slots[i].node_energy.mode(precomputed_mu)
            self.errors: dict[int, Tensor] = {}
            """Error coordinates (ePC): free Gaussian node -> its starting error."""
            if self.variables is Variables.ERRORS:
                for i in self.free:
                    if not slots[i].is_input and isinstance(slots[i].energy, Gaussian):
                        given = None if precomputed is None else precomputed[i]
                        mu = given if given is not None else graph.node_prediction(i, self.values)
                        self.errors[i] = (self.values[i] - mu).detach()
        self._dynamic = frozenset(self.dynamic)
        self._leaves = frozenset(self.leaves)
        self.closed_form = closed_form_gradients(self, chains) if closed_form else None

    def initial_states(self) -> list[Tensor]:
        """The solver's variables at the start, one per ``free`` slot: its state, or its
        error for an error coordinate (solvers never change them in place)."""
        return [self.errors[i] if i in self.errors else self.values[i].detach() for i in self.free]

    def current(self, states: Sequence[Tensor]) -> list[Tensor]:
        """Every slot's value at the solver's variables ``states``: the free states
        substituted in (leaves as last set), or with error coordinates the forward sweep
        of :meth:`sweep`."""
        if self.errors:
            return self.assemble(states)[0]
        values = list(self.values)
        for i, x in zip(self.free, states):
            values[i] = x
        return values

    def sweep(
        self, states: Sequence[Tensor], predict: Callable[[int, list[Tensor]], Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        r"""Values and predictions from error coordinates by one forward sweep in
        topological order: :math:`x_i = \mu_i(x_{pa(i)}) + d_i` for a free node with an
        error coordinate (clamped units of a partly clamped node keep their value), the
        state itself for any other free variable, the mode for a free leaf.
        ``predict(i, values)`` computes a moving prediction (default
        :meth:`PCGraph.node_prediction`; the closed form passes one that keeps its chains)."""
        graph = self.graph
        predict = predict or graph.node_prediction
        values = list(self.values)
        preds = list(self.predictions)
        given = dict(zip(self.free, states))
        for slot in graph.slots:
            i = slot.index
            if i in self._dynamic:
                preds[i] = predict(i, values)
            mu = preds[i]
            if i in self.errors:
                assert mu is not None  # an error coordinate is a node's, which has a prediction
                x = mu + given[i]
                values[i] = torch.where(self.masks[i], self.clamp_values[i], x) if i in self.masks else x
            elif i in given:
                values[i] = given[i]
            elif i in self._leaves:
                assert mu is not None  # a leaf is a node
                values[i] = slot.node_energy.mode(mu).detach()
        return values, preds

    def assemble(
        self, states: Sequence[Tensor], front: ErrorFront | None = None
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Values and predictions at the solver's variables ``states``; free leaves are set
        to their mode.  With a ``front`` (:func:`error_frontier`) only the dynamic
        predictions whose error can be non-zero are recomputed; every other one keeps its
        value in ``start_predictions`` (it and its parents have not moved)."""
        if self.errors:
            return self.sweep(states)
        graph = self.graph
        values = self.current(states)
        preds = list(self.predictions)
        recomputed, unchanged = self.split_dynamic(front)
        for i in recomputed:
            preds[i] = graph.node_prediction(i, values)
        self.complete(values, preds, unchanged)
        return values, preds

    def complete(self, values: list[Tensor], predictions: list[Tensor | None], unchanged: Sequence[int]) -> None:
        """Finish an evaluation in place: the ``unchanged`` dynamic predictions (see
        :meth:`split_dynamic`) take their start value, and every free leaf its energy's
        mode at its prediction."""
        if unchanged:
            start = self.start_predictions
            assert start is not None  # a front is only given with start_predictions
            for i in unchanged:
                predictions[i] = start[i]
        for i in self.leaves:
            mu = predictions[i]
            assert mu is not None  # a leaf is a node
            values[i] = self.graph.slots[i].node_energy.mode(mu).detach()

    def error_differences(
        self, states: Sequence[Tensor], values: Sequence[Tensor], predictions: Sequence[Tensor | None]
    ) -> dict[int, Tensor]:
        r"""For every error coordinate, :math:`x_i - \mu_i` as the variable itself (the
        clamp value minus the prediction at clamped units of a partly clamped node).  The
        energies, errors and weight gradients of these nodes are taken from it: an error
        far below the resolution of :math:`x_i` (float32 keeps about 7 digits) would be
        lost to cancellation if recomputed as ``x - mu``."""
        if not self.errors:
            return {}
        given = dict(zip(self.free, states))
        out = {}
        for i in self.errors:
            d = given[i]
            if i in self.masks:
                mu = predictions[i]
                assert mu is not None  # an error coordinate is a node's
                d = torch.where(self.masks[i], values[i] - mu, d)
            out[i] = d
        return out

    def node_totals(
        self, values: Sequence[Tensor], predictions: Sequence[Tensor | None], differences: dict[int, Tensor]
    ) -> Tensor:
        r"""Energy of every slot summed over the batch (zero for inputs), as one vector;
        error coordinates' from their ``differences``."""
        zero = values[0].new_zeros(())
        row = [zero] * len(values)
        for i in self.scored:
            energy = self.graph.slots[i].node_energy
            if i in differences:
                assert isinstance(energy, Gaussian)  # error coordinates are Gaussian nodes' (__init__)
                row[i] = energy.total_of(differences[i])
            else:
                mu = predictions[i]
                assert mu is not None  # a scored slot is a node
                row[i] = energy.total(values[i], mu)
        return torch.stack(row)

    def split_dynamic(self, front: ErrorFront | None) -> tuple[list[int], list[int]]:
        """``(recomputed, unchanged)``: the dynamic predictions an evaluation at ``front``
        computes, and those that keep their start value (none without a front)."""
        if front is None:
            return self.dynamic, []
        recomputed = [i for i in self.dynamic if i in front.errors]
        return recomputed, [i for i in self.dynamic if i not in front.errors]

    def unmoved_parents(self, i: int, front: ErrorFront | None) -> bool:
        """Whether slot ``i``'s parents all still hold their start values at ``front`` (so
        its prediction does too, though its error may not be zero)."""
        return front is not None and not any(p in front.moved for p in self.graph.slots[i].parents)

    def node_energies(self, states: Sequence[Tensor], front: ErrorFront | None = None) -> Tensor:
        r"""Energy of every slot summed over the batch, :math:`\sum_b E_i(x_{bi}, \mu_{bi})`
        (zero for inputs), as one vector."""
        values, preds = self.assemble(states, front)
        return self.node_totals(values, preds, self.error_differences(states, values, preds))

    def grad_fn(self, states: Sequence[Tensor], front: ErrorFront | None = None) -> tuple[list[Tensor], Tensor]:
        """Per-sample gradients of the solver's variables (``dE/dx`` for states, ``dE/de``
        for errors; zero at clamped units) and the energy row (``front``: see
        :meth:`assemble`).

        Eagerly this is ``torch.autograd.grad`` (the fastest eager path); inside a
        ``torch.compile`` region it is ``torch.func.grad``, which the compiler can trace.
        The two are the same derivative of the same :meth:`node_energies`.  Graphs of dense
        layers take the closed form of :mod:`predcode.closed_form` instead (same numbers).
        """
        if self.closed_form is not None:
            grads, row = self.closed_form(states, front)
        elif torch.compiler.is_compiling():

            def total(xs: list[Tensor]) -> tuple[Tensor, Tensor]:
                row = self.node_energies(xs, front)
                return row.sum(), row

            grads, row = torch.func.grad(total, has_aux=True)(list(states))
        else:
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_() for x in states]
                row = self.node_energies(leaves, front)
                grads = list(torch.autograd.grad(row.sum(), leaves)) if leaves else []
            row = row.detach()
        for k, i in enumerate(self.free):
            if i in self.masks:
                grads[k] = grads[k].masked_fill(self.masks[i], 0.0)
        return grads, row

    def clamp(self, states: list[Tensor]) -> list[Tensor]:
        """Restore the clamped units of partially clamped nodes (error coordinates need
        nothing: the sweep puts the clamped units back)."""
        if not self.masks:
            return states
        return [
            torch.where(self.masks[i], self.clamp_values[i], x) if i in self.masks and i not in self.errors else x
            for i, x in zip(self.free, states)
        ]

    def evaluate(self, states: Sequence[Tensor], need_grad: bool = True) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Per-node batch-mean energies, per-sample state gradients, and all values."""
        states = [x.detach() for x in states]
        batch = self.batch_size
        if need_grad:
            grads, row = self.grad_fn(states)
        else:
            grads, row = [], self.node_energies(states)
        values, _ = self.assemble(states)
        return row.detach() / batch, grads, [v.detach() for v in values]

    @property
    def batch_size(self) -> int:
        return max(self.values[0].shape[0], 1)


def _grad_norm(grads: Sequence[Tensor], batch: int, like: Tensor) -> Tensor:
    """``sqrt(sum_i ||g_i||^2 / B)``: the per-sample RMS norm of the state gradient."""
    if not grads:
        return like.new_zeros(())
    flat = [g.reshape(-1) for g in grads]
    total = torch.dot(flat[0], flat[0])
    for g in flat[1:]:  # left to right, as sum() would add them
        total = total + torch.dot(g, g)
    return torch.sqrt(total / batch)


@dataclass(frozen=True)
class ErrorFront:
    """Where an evaluation of a relaxation from the feed-forward pass stands: the slots
    whose error can be non-zero, and the free slots that have moved so far."""

    errors: frozenset[int]
    moved: frozenset[int]


def error_frontier(graph: PCGraph, free: Sequence[int], changed: Sequence[int], steps: int) -> list[ErrorFront]:
    r"""For a relaxation that starts at the feed-forward pass, where the errors can be
    non-zero at each of the ``steps + 1`` evaluations of a one-evaluation-per-step solver.

    At the feed-forward pass every free node equals its prediction, so only the
    ``changed`` slots (the clamped outputs) have errors.  A free node moves once its
    gradient :math:`\partial_{x_i} E_i - \sum_c J_{ci}^\top e_c` can be non-zero (its own error
    or a child's is); a node's error can be non-zero once it or a parent has moved.  So the
    errors spread one node per step from the outputs, and every other slot's prediction
    and error are still exactly their feed-forward values (zero error)."""
    free_set = set(free)
    moved: set[int] = set()
    fronts = []
    for _ in range(steps + 1):
        errors = (
            set(changed)
            | moved
            | {s.index for s in graph.slots if not s.is_input and any(p in moved for p in s.parents)}
        )
        fronts.append(ErrorFront(frozenset(errors), frozenset(moved)))
        moved |= {i for i in free_set if i in errors or any(c in errors for c in graph.slots[i].children)}
    return fronts


def relax_steps(
    landscape: EnergyLandscape,
    solver: Solver,
    steps: int,
    states: list[Tensor],
    fronts: Sequence[ErrorFront] | None = None,
    stop: StopRule | None = None,
    on_step: Callable[[int, list[Tensor]], None] | None = None,
) -> tuple[list[Tensor], Tensor, Tensor]:
    r"""The relaxation loop, the one every rule, query and sampler runs: up to ``steps``
    solver steps on the landscape's variables,

    .. math:: v^{(t+1)} = \mathrm{solver}\big(v^{(t)}, \nabla_v E(v^{(t)})\big),

    with ``v`` the states (sPC) or errors (ePC) of :class:`Variables`.  Returns the final
    variables, the energy rows (per node, summed over the batch) and the gradient norms,
    one per step taken.

    With neither ``stop`` (tolerance checks) nor ``on_step`` it reads no tensor on the
    Python side: a pure function, the unit that ``torch.compile`` turns into one region.
    ``stop`` ends the loop early once its tolerance holds or the energy diverges (the
    caller's :meth:`Trace.check_divergence` then names the step and node); ``on_step(step, values)`` sees
    every slot's value after each step (incremental PC updates the weights there).
    ``fronts`` (from :func:`error_frontier`, for a relaxation from the feed-forward pass
    with a solver that evaluates once per step): step ``t`` recomputes only the
    predictions whose error can be non-zero (:meth:`EnergyLandscape.assemble`); the others are
    still their start values, exactly."""
    memory = solver.init(states)
    rows, norms = [], []
    batch = landscape.batch_size
    checks = stop is not None and stop.needs_checks
    previous = first = None
    for step in range(steps):
        grad_fn = landscape.grad_fn if fronts is None else functools.partial(landscape.grad_fn, front=fronts[step])
        states, memory, row, grads = solver.update(step, states, grad_fn, memory)
        states = landscape.clamp(states)
        rows.append(row)
        norms.append(_grad_norm(grads, batch, row))
        if on_step is not None:
            on_step(step, landscape.current([x.detach() for x in states]))
        if stop is not None and checks:  # the energy is read anyway: stop at once on divergence (reported after)
            total = float(row.sum()) / batch
            first = total if first is None else first
            if stop.diverged(total, first) or stop.converged(total, previous, float(norms[-1])):
                break
            previous = total
    if not rows:
        like = landscape.values[0]
        return states, like.new_zeros((0, len(landscape.values))), like.new_zeros((0,))
    return states, torch.stack(rows), torch.stack(norms)


def compiled_relax_steps(graph: PCGraph) -> Callable[..., tuple[list[Tensor], Tensor, Tensor]]:
    """``graph``'s compiled copy of :func:`relax_steps`, built on first use and kept on the
    graph (:meth:`PCGraph.memo`), so that it dies with the graph.  A copy is a new function
    on a new code object: dynamo keeps compiled code and guards per code object, so two
    graphs never share them, and one graph's recompilations do not count against
    another's limit."""

    def build() -> Callable[..., tuple[list[Tensor], Tensor, Tensor]]:
        fresh = types.FunctionType(
            relax_steps.__code__.replace(), relax_steps.__globals__, relax_steps.__name__, relax_steps.__defaults__
        )
        return torch.compile(fresh, dynamic=False)

    return graph.memo("compiled_relax_steps", build)


def relax(
    graph: PCGraph,
    values: list[Tensor],
    free: Sequence[int],
    solver: Solver,
    stop: StopRule,
    masks: dict[int, Tensor] | None = None,
    on_step: Callable[[int, list[Tensor]], None] | None = None,
    cache_constant: bool = True,
    compile: bool = False,
    variables: Variables = Variables.STATES,
) -> Relaxation:
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
        compile: run all steps as one ``torch.compile`` region (fixed step count, no
            ``on_step``, a compilable solver); the numbers equal the eager path's.
        variables: what the solver moves, the states (sPC, the default) or the errors
            (ePC), :class:`Variables`; both relax to the same equilibria.
    """
    # state gradients come from torch.func.grad, which ignores no_grad; running statistics
    # (batch norm) are not recorded by a relaxation (predcode.running_stats)
    with torch.no_grad(), frozen_running_stats(graph):
        return _relax(graph, values, free, solver, stop, masks, on_step, cache_constant, compile, variables)


def _relax(
    graph: PCGraph,
    values: list[Tensor],
    free: Sequence[int],
    solver: Solver,
    stop: StopRule,
    masks: dict[int, Tensor] | None,
    on_step: Callable[[int, list[Tensor]], None] | None,
    cache_constant: bool,
    compile: bool,
    variables: Variables,
) -> Relaxation:
    landscape = EnergyLandscape(graph, values, free, masks, cache_constant, variables=variables)
    states = landscape.initial_states()
    batch = landscape.batch_size
    if compile:
        if stop.needs_checks or on_step is not None or not solver.compilable:
            raise OptionError(
                "compile=True needs a fixed step count (no tolerance), no "
                "on_step callback and a compilable solver (not OptimizerSolver)"
            )
        unit_precisions(s.energy for s in graph.slots)  # drop stale armings before the trace
        states, rows, norms = compiled_relax_steps(graph)(landscape, solver, stop.max_steps, states)
    else:
        states, rows, norms = relax_steps(landscape, solver, stop.max_steps, states, stop=stop, on_step=on_step)
    states = [x.detach() for x in states]
    final_values, predictions = landscape.assemble(states)
    differences = landscape.error_differences(states, final_values, predictions)
    final_row = landscape.node_totals(final_values, predictions, differences)
    trace = Trace(graph.names, torch.stack([*rows, final_row]).detach() / batch, norms)
    trace.check_divergence(stop.divergence_factor)
    return Relaxation(
        [v.detach() for v in final_values],
        trace,
        [None if p is None else p.detach() for p in predictions],
        {i: d.detach() for i, d in differences.items()},
    )

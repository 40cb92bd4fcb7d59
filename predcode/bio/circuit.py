r"""Explicit error neurons: the textbook predictive coding circuit, simulated.

The energy form of PC (:mod:`predcode.inference`) computes prediction errors
instantaneously, :math:`e_l = \pi_l (x_l - \mu_l)`, and moves the values down the energy.
In the circuit of Bogacz (2017, *A tutorial on the free-energy framework*) and Whittington &
Bogacz (2017) the errors are carried by separate *error units* :math:`\varepsilon_l`, one per
value unit, with leaky dynamics of their own.  On a layered chain (:mod:`predcode.chain`,
:math:`\mu_l = \mathrm{post}(W_l\,\mathrm{pre}(x_{l-1}) + b_l)`):

.. math::
    \tau_\varepsilon \dot\varepsilon_l &= x_l - \mu_l(x_{l-1}) - \sigma_l^2 \varepsilon_l, \\
    \tau_x \dot x_l &= -\varepsilon_l + \mathrm{pre}'(x_l) \odot W_{l+1}^\top
                       \big(\mathrm{post}'(h_{l+1}) \odot \varepsilon_{l+1}\big),

with :math:`\sigma_l^2 = 1/\pi_l` the node's variance.  The connections and their signs:

====================================  ==========  ====================================
from                                  to          sign
====================================  ==========  ====================================
value unit :math:`x_l`                 error unit  excitatory, one to one (+1)
prediction :math:`\mu_l` (from layer
:math:`l-1` through :math:`W_l`)       error unit  inhibitory (-1)
error unit itself                      error unit  leak :math:`-\sigma^2`
error unit :math:`\varepsilon_l`       value unit  inhibitory, one to one (-1)
error units :math:`\varepsilon_{l+1}`  value unit  through :math:`W_{l+1}^\top` (feedback)
====================================  ==========  ====================================

At a fixed point :math:`\dot\varepsilon = 0` gives :math:`\varepsilon_l = \pi_l(x_l - \mu_l)
= e_l` and :math:`\dot x = 0` gives :math:`-\partial E/\partial x_l = 0`: the circuit settles
where the energy's gradient flow settles.  As :math:`\tau_\varepsilon \to 0` the error
units follow their inputs instantly and the circuit's trajectory :math:`x(t)` becomes the
gradient flow :math:`\tau_x \dot x = -\partial E/\partial x` itself.

Every non-input node must have a Gaussian energy (error units are Gaussian errors).  Both
states are integrated with the explicit Euler method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..batch import Inputs, as_inputs
from ..chain import as_chain
from ..checks import require_positive
from ..energy import Gaussian
from ..exceptions import GraphError, OptionError
from ..graph import PCGraph
from ..validate import check_inputs, encode_target, forward_errors


@dataclass
class CircuitState:
    """Value units of every slot and error units of every non-input slot (``None`` for inputs)."""

    values: list[Tensor]
    errors: list[Tensor | None]

    def error(self, i: int) -> Tensor:
        """The error units of slot ``i`` (a non-input slot; an input has none)."""
        units = self.errors[i]
        if units is None:
            raise GraphError(f"slot {i} is an input: it has no error units")
        return units


@dataclass
class Trajectory:
    """Sampled states: ``times[k]``; ``values[k]`` and ``errors[k]`` are the states then."""

    times: list[float] = field(default_factory=list)
    values: list[list[Tensor]] = field(default_factory=list)
    errors: list[list[Tensor | None]] = field(default_factory=list)


class ErrorNeuronCircuit:
    r"""Value and error populations with leaky dynamics on a layered chain graph.

    Args:
        graph: a layered chain (e.g. :func:`predcode.models.mlp` with squared-error output).
        tau_x: time constant of the value units.
        tau_e: time constant of the error units (``0`` makes them instantaneous: the
            energy form).
    """

    def __init__(self, graph: PCGraph, tau_x: float = 1.0, tau_e: float = 0.1) -> None:
        require_positive(tau_x, "tau_x")
        if not tau_e >= 0:
            raise OptionError(f"tau_e must be >= 0, got {tau_e}")
        self.graph, self.tau_x, self.tau_e = graph, tau_x, tau_e
        self.layers = as_chain(graph)
        for layer in self.layers:
            self._gaussian(layer.child)

    def _gaussian(self, i: int) -> Gaussian:
        """Node ``i``'s energy, which the circuit needs Gaussian."""
        slot = self.graph.slots[i]
        if not isinstance(slot.energy, Gaussian):
            raise GraphError(
                f"node '{slot.name}' has a {type(slot.energy).__name__} energy; the "
                "error-neuron circuit needs Gaussian (squared-error) nodes"
            )
        return slot.energy

    # -- set-up --------------------------------------------------------------------------
    def start(self, inputs: Inputs, target: Tensor | None = None) -> tuple[CircuitState, set[int]]:
        """Values at the feed-forward pass (output clamped to ``target`` when given), error
        units at rest (zero); returns the state and the clamped slots."""
        graph = self.graph
        inputs = as_inputs(inputs)
        check_inputs(graph, inputs)
        with torch.no_grad(), forward_errors(graph, inputs):
            values = [v.detach() for v in graph.feedforward(inputs)]
        clamped = set(graph.inputs)
        if target is not None:
            values[graph.output] = encode_target(target, values[graph.output], graph.names[graph.output])
            clamped.add(graph.output)
        errors = [None] + [torch.zeros_like(values[layer.child]) for layer in self.layers]
        return CircuitState(values, errors), clamped

    # -- dynamics ------------------------------------------------------------------------
    def derivatives(self, state: CircuitState, clamped: set[int]) -> tuple[list[Tensor | None], list[Tensor | None]]:
        r"""``(dx/dt, dε/dt)`` at ``state`` (``None`` for clamped value units and inputs)."""
        x, eps = state.values, state.error
        d_eps: list[Tensor | None] = [None] * len(x)
        hs: dict[int, Tensor] = {}  # each child's linear output
        with torch.no_grad():
            for layer in self.layers:
                _, h, mu = layer.forward(x[layer.parent])
                hs[layer.child] = h
                variance = 1.0 / self._gaussian(layer.child).precision
                drive = x[layer.child] - mu - variance * eps(layer.child)  # +x, -mu, leak
                d_eps[layer.child] = drive / self.tau_e if self.tau_e > 0 else drive
        d_x: list[Tensor | None] = [None] * len(x)
        for layer in self.layers:
            i = layer.child
            if i in clamped:
                continue
            dx = -eps(i)
            child = next((c for c in self.layers if c.parent == i), None)
            if child is not None:
                delta = child.post_vjp(hs[child.child], eps(child.child))
                dx = dx + child.pre_vjp(x[i], delta @ child.weight.detach())
            d_x[i] = dx / self.tau_x
        return d_x, d_eps

    def euler(self, state: CircuitState, clamped: set[int], dt: float) -> CircuitState:
        """One explicit Euler step of both populations (synchronous).  With ``tau_e = 0`` the
        error units are set to their instantaneous value :math:`\\pi(x - \\mu)` first."""
        if self.tau_e == 0:
            state = self.settle_errors(state)
        d_x, d_eps = self.derivatives(state, clamped)
        values = [x if d is None else x + dt * d for x, d in zip(state.values, d_x)]
        if self.tau_e == 0:
            errors = state.errors
        else:
            errors = [e if e is None or d is None else e + dt * d for e, d in zip(state.errors, d_eps)]
        return CircuitState(values, errors)

    def settle_errors(self, state: CircuitState) -> CircuitState:
        """Error units at their fixed point for the current values: :math:`\\pi(x - \\mu)`."""
        errors: list[Tensor | None] = [None] * len(state.values)
        with torch.no_grad():
            for layer in self.layers:
                _, _, mu = layer.forward(state.values[layer.parent])
                errors[layer.child] = self._gaussian(layer.child).error(state.values[layer.child], mu)
        return CircuitState(state.values, errors)

    def simulate(
        self,
        inputs: Inputs,
        target: Tensor | None = None,
        *,
        dt: float = 0.01,
        duration: float = 10.0,
        every: int = 1,
        tol: float | None = None,
    ) -> tuple[CircuitState, Trajectory]:
        """Integrate from :meth:`start` for ``duration`` time units (or until every rate of
        change is below ``tol`` in max norm); returns the final state and the trajectory
        sampled every ``every`` steps.  Euler is stable for ``dt < 2 tau_e`` (error units)."""
        require_positive(dt, "dt")
        state, clamped = self.start(inputs, target)
        record = Trajectory()

        def keep(t: float, s: CircuitState) -> None:
            record.times.append(t)
            record.values.append([v.clone() for v in s.values])
            record.errors.append([None if e is None else e.clone() for e in s.errors])

        keep(0.0, state)
        steps = int(round(duration / dt))
        for k in range(1, steps + 1):
            state = self.euler(state, clamped, dt)
            if not all(torch.isfinite(v).all() for v in state.values):
                raise OptionError(
                    f"the circuit diverged at t = {k * dt:g}; use a smaller dt (dt < 2 tau_e = {2 * self.tau_e:g})"
                )
            if k % every == 0 or k == steps:
                keep(k * dt, state)
            if tol is not None:
                d_x, d_eps = self.derivatives(state, clamped)
                rates = [d.abs().max() for d in d_x + d_eps if d is not None]
                if not rates or float(torch.stack(rates).max()) < tol:
                    if record.times[-1] != k * dt:
                        keep(k * dt, state)
                    break
        return state, record

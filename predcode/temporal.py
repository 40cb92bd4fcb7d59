r"""Temporal predictive coding (tPC; Millidge, Tang, Osanlouy, Harper & Bogacz, "Predictive
coding networks for temporal prediction", PLoS Comput Biol 2024).

The generative model is a hidden Markov model: hidden states that predict their next value
and observations predicted from the hidden state,

.. math:: x_k = A f(x_{k-1}) + B u_k + w_k,\quad w_k \sim \mathcal N(0, \Sigma_x), \qquad
          y_k = C f(x_k) + v_k,\quad v_k \sim \mathcal N(0, \Sigma_y).

At every time step ``k`` the previous estimate :math:`\hat x_{k-1}` and the control
:math:`u_k` are clamped as inputs, the observation :math:`y_k` is clamped at the output,
and the state :math:`x_k` relaxes on the energy of one time step

.. math:: F_k(x_k) = \tfrac12\, \varepsilon_y^\top \Sigma_y^{-1} \varepsilon_y
          + \tfrac12\, \varepsilon_x^\top \Sigma_x^{-1} \varepsilon_x, \qquad
          \varepsilon_y = y_k - C f(x_k), \quad
          \varepsilon_x = x_k - A f(\hat x_{k-1}) - B u_k,

.. math:: \dot x_k = -\partial F_k / \partial x_k
          = -\Sigma_x^{-1}\varepsilon_x + f'(x_k) \odot C^\top \Sigma_y^{-1} \varepsilon_y,

a one-step :class:`~predcode.graph.PCGraph` (:class:`TemporalStep`) relaxed by the
library's one relaxation loop (:func:`predcode.query.infer`, i.e. :func:`predcode.inference.relax`).
The relaxed state becomes :math:`\hat x_k`, the next step's clamped input (online
filtering).  Learning is the library's local rule at the relaxed state
(:func:`predcode.learning.accumulate_weight_gradients`):

.. math:: \Delta A \propto \Sigma_x^{-1}\varepsilon_x f(\hat x_{k-1})^\top, \quad
          \Delta B \propto \Sigma_x^{-1}\varepsilon_x u_k^\top, \quad
          \Delta C \propto \Sigma_y^{-1}\varepsilon_y f(\hat x_k)^\top.

**Relation to the Kalman filter.**  With :math:`f` the identity the energy is quadratic
and its minimiser is

.. math:: \hat x_k = \bar x_k + K (y_k - C \bar x_k), \qquad
          K = \Sigma_x C^\top (C \Sigma_x C^\top + \Sigma_y)^{-1}, \qquad
          \bar x_k = A \hat x_{k-1} + B u_k,

the Kalman filter's update with its prior covariance
:math:`P_k^- = A P_{k-1} A^\top + \Sigma_x` replaced by :math:`\Sigma_x`: tPC is a Kalman
filter that does not track its own posterior covariance.  With :math:`\Sigma_x` set at each
step to the filter's :math:`P_k^-` (:class:`MatrixGaussian` precision
:math:`(P_k^-)^{-1}`) it *is* the Kalman filter (both tested in float64,
``tests/test_temporal.py``; the filters are in :mod:`predcode.kalman`).

The transition and emission are ordinary modules (:class:`LinearTransition`,
:class:`LinearEmission` give the paper's :math:`A f(\cdot) + B u` and :math:`C f(\cdot)`);
any other module works too (e.g. a pendulum's known dynamics), since the graph's state
gradients and weight gradients come from the library's one relaxation and weight-gradient functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .energy import Gaussian
from .exceptions import InputError, OptionError
from .graph import PCGraph
from .inference import GradientDescent, Relaxation, Solver, StopRule
from .learning import accumulate_weight_gradients
from .models.mlp import activation
from .node import Node
from .query import infer


class MatrixGaussian(Gaussian):
    r"""A Gaussian energy with a full precision matrix :math:`\Pi = \Sigma^{-1}` over a
    node's units (1-D nodes ``[batch, n]``):

    .. math:: E_b = \tfrac12 (x_b - \mu_b)^\top \Pi (x_b - \mu_b), \qquad
              e_b = \Pi (x_b - \mu_b).

    ``precision`` is a symmetric positive-definite ``[n, n]`` matrix, kept as the buffer
    ``precision_matrix`` (write it in place to change it between relaxations).  A
    Gaussian, so the node may have children; its error and energy are used by every path
    of the relaxation through :meth:`error_of` and :meth:`of_difference`."""

    precision_matrix: Tensor  # a buffer, registered in __init__

    def __init__(self, precision: Tensor) -> None:
        super().__init__(1.0)
        self._unit_at = None  # the matrix, not log_precision, is the precision
        precision = torch.as_tensor(precision)
        if precision.dim() != 2 or precision.shape[0] != precision.shape[1]:
            raise OptionError(f"a precision matrix must be square [n, n], got shape {tuple(precision.shape)}")
        if not torch.allclose(precision, precision.T, rtol=1e-6, atol=1e-10):
            raise OptionError("a precision matrix must be symmetric")
        if not bool(torch.all(torch.linalg.eigvalsh(precision.double()) > 0)):
            raise OptionError("a precision matrix must be positive definite (the inverse of a covariance)")
        self.register_buffer("precision_matrix", precision.clone())

    def _check(self, diff: Tensor) -> None:
        if diff.dim() != 2 or diff.shape[1] != self.precision_matrix.shape[0]:
            raise InputError(
                f"a node with a {self.precision_matrix.shape[0]}x"
                f"{self.precision_matrix.shape[0]} precision matrix needs values "
                f"[batch, {self.precision_matrix.shape[0]}], got {tuple(diff.shape)}"
            )

    @property
    def precision(self) -> Tensor:
        return self.precision_matrix

    def of_difference(self, diff: Tensor) -> Tensor:
        self._check(diff)
        return 0.5 * ((diff @ self.precision_matrix) * diff).sum(dim=1)

    def error_of(self, diff: Tensor) -> Tensor:
        self._check(diff)
        return diff @ self.precision_matrix

    def total_of(self, diff: Tensor) -> Tensor:
        return self.of_difference(diff).sum()

    def extra_repr(self) -> str:
        return f"units={self.precision_matrix.shape[0]}"


def make_state_energy(precision: float | Tensor, units: int, dtype: torch.dtype | None = None) -> Gaussian:
    """A Gaussian energy from a precision given as a scalar, a vector (one per unit) or a
    matrix (:class:`MatrixGaussian`), held in ``dtype`` (default: torch's default dtype;
    the log-precision is written in that dtype, so a float64 model's precision is exact)."""
    dtype = dtype or torch.get_default_dtype()
    p = torch.as_tensor(precision, dtype=torch.float64)
    if p.dim() == 2:
        if p.shape != (units, units):
            raise OptionError(f"a precision matrix for {units} units must be {units}x{units}, got {tuple(p.shape)}")
        return MatrixGaussian(p.to(dtype))
    if p.dim() > 2 or (p.dim() == 1 and p.shape[0] != units) or not bool(torch.all(p > 0)):
        raise OptionError(
            f"a precision is a positive scalar, {units} positive values or a "
            f"{units}x{units} matrix; got shape {tuple(p.shape)}"
        )
    g = Gaussian(1.0) if p.dim() == 0 else Gaussian(units=units)
    g = g.to(dtype)
    if p.dim() == 1 or float(p) != 1.0:
        with torch.no_grad():
            g.log_precision.copy_(p.log().to(dtype).expand_as(g.log_precision))
    return g


class LinearTransition(nn.Module):
    r"""The paper's transition :math:`\bar x_k = A f(x_{k-1}) + B u_k` (``B`` optional)."""

    def __init__(self, states: int, controls: int = 0, act: str = "identity") -> None:
        super().__init__()
        self.A = nn.Linear(states, states, bias=False)
        self.B = nn.Linear(controls, states, bias=False) if controls else None
        self.f = activation(act)

    def forward(self, prev: Tensor, u: Tensor) -> Tensor:
        out: Tensor = self.A(self.f(prev))
        return out if self.B is None else out + self.B(u)


class LinearEmission(nn.Module):
    r"""The paper's emission :math:`\mu_y = C f(x_k)`."""

    def __init__(self, states: int, observations: int, act: str = "identity") -> None:
        super().__init__()
        self.C = nn.Linear(states, observations, bias=False)
        self.f = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.C(self.f(x))
        return out


class TemporalStep(nn.Module):
    """One time step of the generative model as a predictive coding network: inputs
    ``prev`` (the previous estimate) and ``u`` (the control), value node ``state``
    predicted by ``transition(prev, u)``, output node ``observation`` predicted by
    ``emission(state)``."""

    def __init__(
        self, transition: nn.Module, emission: nn.Module, state_energy: Gaussian, observation_energy: Gaussian
    ) -> None:
        super().__init__()
        self.transition, self.emission = transition, emission
        self.state = Node(state_energy, name="state")
        self.observation = Node(observation_energy, name="observation")

    def forward(self, prev: Tensor, u: Tensor) -> Tensor:
        out: Tensor = self.observation(self.emission(self.state(self.transition(prev, u))))
        return out


@dataclass
class Filtered:
    """What :meth:`TemporalPC.filter` returns, time-major: ``states[k]`` the relaxed
    :math:`\\hat x_k` ``[K, batch, n]``; ``predictions[k]`` the one-step-ahead prediction of
    :math:`y_k` before it was seen, :math:`\\mu_y(\\mu_x(\\hat x_{k-1}, u_k))`; ``steps[k]``
    the relaxation steps taken; ``energies[k]`` the batch-mean energy at the relaxed state."""

    states: Tensor
    predictions: Tensor
    steps: list[int]
    energies: Tensor

    def prediction_mse(self, ys: Tensor, start: int = 0) -> float:
        """Mean squared one-step-ahead prediction error of the observations from ``start``."""
        return float(((ys[start:] - self.predictions[start:]) ** 2).mean())


class TemporalPC(nn.Module):
    r"""Temporal predictive coding: online filtering and learning with one PCGraph per
    time step (see the module docstring for the energy and the rules).

    Args:
        transition: module ``(prev, u) -> predicted state`` (``A f(prev) + B u``).
        emission: module ``state -> predicted observation`` (``C f(state)``).
        state_precision, observation_precision: :math:`\Sigma_x^{-1}`,
            :math:`\Sigma_y^{-1}` as scalars, per-unit vectors or matrices.
        states, observations: the sizes (for the precisions and input checks).
        dtype: the precisions' dtype (default torch's default; :meth:`linear` uses A's).
    """

    _graph: PCGraph | None  # kept in __dict__, not as a submodule (set in __init__, built on first use)

    def __init__(
        self,
        transition: nn.Module,
        emission: nn.Module,
        states: int,
        observations: int,
        state_precision: float | Tensor = 1.0,
        observation_precision: float | Tensor = 1.0,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if states < 1 or observations < 1:
            raise OptionError(f"need at least one state and one observation, got {states}, {observations}")
        self.states, self.observations = states, observations
        self.step_model = TemporalStep(
            transition,
            emission,
            make_state_energy(state_precision, states, dtype),
            make_state_energy(observation_precision, observations, dtype),
        )
        self.__dict__["_graph"] = None  # built on first use; not a submodule (no cycle)

    @classmethod
    def linear(
        cls,
        A: Tensor,
        C: Tensor,
        B: Tensor | None = None,
        act: str = "identity",
        state_precision: float | Tensor = 1.0,
        observation_precision: float | Tensor = 1.0,
    ) -> TemporalPC:
        """The paper's model with the given matrices (copied into ``nn.Linear`` weights)."""
        A, C = torch.as_tensor(A), torch.as_tensor(C)
        n, m = A.shape[0], C.shape[0]
        if A.shape != (n, n) or C.shape[1] != n:
            raise OptionError(f"A must be [n, n] and C [m, n]; got {tuple(A.shape)} and {tuple(C.shape)}")
        controls = 0 if B is None else torch.as_tensor(B).shape[1]
        trans = LinearTransition(n, controls, act).to(A.dtype)  # before the copies: exact
        emit = LinearEmission(n, m, act).to(A.dtype)
        with torch.no_grad():
            trans.A.weight.copy_(A)
            emit.C.weight.copy_(C)
            if B is not None:
                B = torch.as_tensor(B)
                if B.shape[0] != n:
                    raise OptionError(f"B must be [n, controls] with n = {n}; got {tuple(B.shape)}")
                if trans.B is not None:  # None when B has no columns (no controls)
                    trans.B.weight.copy_(B)
        model = cls(trans, emit, n, m, state_precision, observation_precision, dtype=A.dtype)
        return model.to(A.dtype)

    @property
    def graph(self) -> PCGraph:
        graph = self._graph
        if graph is None:
            graph = self.__dict__["_graph"] = PCGraph(self.step_model)
        return graph

    def prior(self, prev: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """The predicted state and observation from ``prev`` and ``u`` (no observation)."""
        x = self.step_model.transition(prev, u)
        return x, self.step_model.emission(x)

    def infer_step(
        self, prev: Tensor, y: Tensor, u: Tensor | None = None, solver: Solver | None = None, stop: StopRule | int = 100
    ) -> Relaxation:
        """Relax ``state`` with ``prev``, ``u`` and the observation ``y`` clamped; returns
        the :class:`~predcode.inference.Relaxation` (``values[graph.index('state')]``)."""
        u = self._control(u, prev)
        if y.dim() != 2 or y.shape[1] != self.observations:
            raise InputError(f"observations must be [batch, {self.observations}], got {tuple(y.shape)}")
        return infer(
            self.graph, {"prev": prev, "u": u, "observation": y}, solver=solver or GradientDescent(0.1), stop=stop
        )

    def _control(self, u: Tensor | None, prev: Tensor) -> Tensor:
        if u is None:
            return prev.new_zeros(prev.shape[0], 0)
        if u.dim() != 2 or u.shape[0] != prev.shape[0]:
            raise InputError(f"controls must be [batch, controls] with batch {prev.shape[0]}, got {tuple(u.shape)}")
        return u

    def filter(
        self,
        ys: Tensor,
        us: Tensor | None = None,
        x0: Tensor | None = None,
        *,
        solver: Solver | None = None,
        stop: StopRule | int = 100,
        optimizer: torch.optim.Optimizer | None = None,
        on_step: Callable[[int, Tensor], None] | None = None,
    ) -> Filtered:
        """Filter the sequences ``ys`` ``[K, batch, observations]`` (controls ``us``
        ``[K, batch, controls]``), from ``x0`` (default zeros), relaxing each step with
        ``solver`` until ``stop``.  With an ``optimizer`` the weights learn online: after
        each relaxation, one step on the local weight gradients of that time step's energy.
        ``on_step(k, state)`` sees each relaxed state."""
        if ys.dim() != 3 or ys.shape[2] != self.observations:
            raise InputError(f"observations must be [time, batch, {self.observations}], got {tuple(ys.shape)}")
        dtype = next(self.parameters(), ys).dtype
        for name, t in (("observations", ys), ("controls", us), ("x0", x0)):
            if t is not None and t.dtype != dtype:
                raise InputError(f"{name} are {t.dtype} but the model is {dtype}; convert one (e.g. ys.to({dtype}))")
            if t is not None and not bool(torch.isfinite(t).all()):
                raise InputError(f"{name} contain NaN or infinite values")
        K, batch = ys.shape[:2]
        if us is not None and (us.dim() != 3 or us.shape[:2] != (K, batch)):
            raise InputError(
                f"controls must be [time, batch, controls] with time {K} and batch {batch}, got {tuple(us.shape)}"
            )
        prev = ys.new_zeros(batch, self.states) if x0 is None else x0
        if prev.shape != (batch, self.states):
            raise InputError(f"x0 must be [batch, {self.states}], got {tuple(prev.shape)}")
        graph = self.graph
        state = graph.index("state")
        states, preds, steps, energies = [], [], [], []
        for k in range(K):
            u = self._control(None if us is None else us[k], prev)
            with torch.no_grad():
                preds.append(self.prior(prev, u)[1])
            r = self.infer_step(prev, ys[k], u, solver, stop)
            if optimizer is not None:
                optimizer.zero_grad()
                accumulate_weight_gradients(graph, r.values)
                optimizer.step()
            prev = r.values[state]
            states.append(prev)
            steps.append(r.trace.steps)
            energies.append(r.trace.energy[-1])
            if on_step is not None:
                on_step(k, prev)
        return Filtered(torch.stack(states), torch.stack(preds), steps, torch.stack(energies))


def converged(max_steps: int = 5000, grad_tol: float = 1e-10) -> StopRule:
    """A stop rule for "inference run to convergence": the state gradient's RMS norm below
    ``grad_tol`` (or ``max_steps``)."""
    return StopRule(max_steps=max_steps, grad_tol=grad_tol)


__all__: Sequence[str] = [
    "MatrixGaussian",
    "LinearTransition",
    "LinearEmission",
    "TemporalStep",
    "TemporalPC",
    "Filtered",
    "converged",
    "make_state_energy",
]

r"""Reference filters for temporal predictive coding: the Kalman filter and the extended
Kalman filter (textbook equations, batched over independent sequences).

Kalman filter for :math:`x_k = A x_{k-1} + B u_k + w_k`, :math:`y_k = C x_k + v_k`,
:math:`w \sim \mathcal N(0, Q)`, :math:`v \sim \mathcal N(0, R)`:

.. math:: \bar x_k = A \hat x_{k-1} + B u_k, \qquad P_k^- = A P_{k-1} A^\top + Q,

.. math:: K_k = P_k^- C^\top (C P_k^- C^\top + R)^{-1}, \qquad
          \hat x_k = \bar x_k + K_k (y_k - C \bar x_k), \qquad P_k = (I - K_k C) P_k^-.

The extended Kalman filter replaces :math:`A` and :math:`C` by the Jacobians of a
nonlinear transition :math:`g(x, u)` at :math:`\hat x_{k-1}` and of an emission :math:`h(x)`
at :math:`\bar x_k`, with :math:`\bar x_k = g(\hat x_{k-1}, u_k)` and the innovation
:math:`y_k - h(\bar x_k)`.

``fixed_gain=True`` keeps :math:`P_k^- = Q` at every step: the filter that temporal
predictive coding's equilibrium equals (:mod:`predcode.temporal`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .exceptions import InputError


@dataclass
class KalmanResult:
    """Time-major: ``means[k]`` :math:`\\hat x_k` ``[K, batch, n]``; ``covariances[k]``
    :math:`P_k` (``[K, n, n]``, or ``[K, batch, n, n]`` for the EKF); ``priors[k]``
    :math:`P_k^-`; ``predictions[k]`` the one-step-ahead prediction of :math:`y_k`."""

    means: Tensor
    covariances: Tensor
    priors: Tensor
    predictions: Tensor


def kalman_filter(
    ys: Tensor,
    A: Tensor,
    C: Tensor,
    Q: Tensor,
    R: Tensor,
    us: Tensor | None = None,
    B: Tensor | None = None,
    x0: Tensor | None = None,
    P0: Tensor | None = None,
    fixed_gain: bool = False,
) -> KalmanResult:
    """The Kalman filter over ``ys`` ``[K, batch, m]`` (controls ``us`` ``[K, batch, c]``
    with ``B`` ``[n, c]``), from ``x0`` (zeros) and ``P0`` (identity)."""
    if ys.dim() != 3:
        raise InputError(f"observations must be [time, batch, m], got {tuple(ys.shape)}")
    if us is not None and B is None:
        raise InputError("controls us need their input matrix B")
    K, batch, _ = ys.shape
    n = A.shape[0]
    x = ys.new_zeros(batch, n) if x0 is None else x0
    P = torch.eye(n, dtype=ys.dtype) if P0 is None else P0
    eye = torch.eye(n, dtype=ys.dtype)
    means, covs, priors, preds = [], [], [], []
    for k in range(K):
        xbar = x @ A.T
        if us is not None and B is not None:
            xbar = xbar + us[k] @ B.T
        Pm = Q.clone() if fixed_gain else A @ P @ A.T + Q
        S = C @ Pm @ C.T + R
        gain = torch.linalg.solve(S, C @ Pm).T  # Pm C^T S^{-1} (S, Pm symmetric)
        pred = xbar @ C.T
        x = xbar + (ys[k] - pred) @ gain.T
        P = (eye - gain @ C) @ Pm
        means.append(x)
        covs.append(P)
        priors.append(Pm)
        preds.append(pred)
    return KalmanResult(torch.stack(means), torch.stack(covs), torch.stack(priors), torch.stack(preds))


def _batch_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``[batch, out, in]`` Jacobians of a row-wise function at every row of ``x``."""
    jacobians: Tensor = torch.func.vmap(torch.func.jacrev(lambda v: fn(v.unsqueeze(0)).squeeze(0)))(x)
    return jacobians


def extended_kalman_filter(
    ys: Tensor,
    transition: Callable[[Tensor, Tensor | None], Tensor],
    emission: Callable[[Tensor], Tensor],
    Q: Tensor,
    R: Tensor,
    x0: Tensor,
    us: Tensor | None = None,
    P0: Tensor | None = None,
) -> KalmanResult:
    """The extended Kalman filter with row-wise ``transition(x, u)`` and ``emission(x)``
    (batched ``[batch, n]`` functions; their Jacobians by ``torch.func``)."""
    if ys.dim() != 3:
        raise InputError(f"observations must be [time, batch, m], got {tuple(ys.shape)}")
    K, batch, _ = ys.shape
    n = x0.shape[1]
    x = x0
    eye = torch.eye(n, dtype=ys.dtype)
    P = (eye if P0 is None else P0).expand(batch, n, n)
    means, covs, priors, preds = [], [], [], []
    for k in range(K):
        u = None if us is None else us[k]
        if u is None:
            F = _batch_jacobian(lambda v: transition(v, None), x)
        else:  # per row: d transition(x_b, u_b) / d x_b
            row = lambda v, w: transition(v.unsqueeze(0), w.unsqueeze(0)).squeeze(0)  # noqa: E731
            F = torch.func.vmap(torch.func.jacrev(row))(x, u)
        with torch.no_grad():
            xbar = transition(x, u)
        Pm = F @ P @ F.transpose(1, 2) + Q
        H = _batch_jacobian(emission, xbar)
        with torch.no_grad():
            pred = emission(xbar)
        S = H @ Pm @ H.transpose(1, 2) + R
        gain = torch.linalg.solve(S, H @ Pm).transpose(1, 2)
        x = xbar + (gain @ (ys[k] - pred).unsqueeze(2)).squeeze(2)
        P = (eye - gain @ H) @ Pm
        means.append(x)
        covs.append(P)
        priors.append(Pm)
        preds.append(pred)
    return KalmanResult(torch.stack(means), torch.stack(covs), torch.stack(priors), torch.stack(preds))


def steady_state_prior(
    A: Tensor, C: Tensor, Q: Tensor, R: Tensor, tol: float = 1e-13, max_iter: int = 100000
) -> Tensor:
    r"""The Kalman filter's stationary prior covariance :math:`P_\infty^-`, the fixed point
    of the Riccati recursion :math:`P^- \leftarrow A (P^- - P^- C^\top (C P^- C^\top + R)^{-1}
    C P^-) A^\top + Q` (iterated from ``Q`` until the change is below ``tol``)."""
    Pm = Q.clone()
    for _ in range(max_iter):
        S = C @ Pm @ C.T + R
        P = Pm - Pm @ C.T @ torch.linalg.solve(S, C @ Pm)
        new: Tensor = A @ P @ A.T + Q
        new = 0.5 * (new + new.T)
        if float((new - Pm).abs().max()) <= tol * max(1.0, float(new.abs().max())):
            return new
        Pm = new
    raise InputError(f"the Riccati recursion did not converge in {max_iter} iterations (is the system detectable?)")

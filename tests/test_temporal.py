"""Temporal predictive coding against the Kalman filter (float64), and its local learning."""

from __future__ import annotations

import pytest
import torch

from predcode import InputError, OptionError
from predcode.inference import GradientDescent, StopRule
from predcode.kalman import extended_kalman_filter, kalman_filter, steady_state_prior
from predcode.learning import learning_plan, weight_gradients
from predcode.temporal import MatrixGaussian, TemporalPC, converged

D = torch.float64


def tracking_system():
    """The paper's tracking task: position, velocity, acceleration; a random 3x3 C."""
    dt = 1e-3
    A = torch.tensor([[1.0, dt, 0.5 * dt**2], [0.0, 1.0, dt], [0.0, 0.0, 1.0]], dtype=D)
    B = torch.tensor([[0.0], [0.0], [1.0]], dtype=D)
    C = torch.randn(3, 3, generator=torch.Generator().manual_seed(10), dtype=D)
    return A, B, C


def simulate(A, B, C, Q, R, K, batch, seed, control=True):
    """``(states, observations, controls)``, time-major, noise with covariances Q and R."""
    g = torch.Generator().manual_seed(seed)
    n, m = A.shape[0], C.shape[0]
    LQ, LR = torch.linalg.cholesky(Q), torch.linalg.cholesky(R)
    us = torch.exp(-0.01 * torch.arange(K, dtype=D)).reshape(K, 1, 1).expand(K, batch, 1) if control else None
    x = torch.zeros(batch, n, dtype=D)
    xs, ys = [], []
    for k in range(K):
        x = x @ A.T + torch.randn(batch, n, generator=g, dtype=D) @ LQ.T
        if control:
            x = x + us[k] @ B.T
        xs.append(x)
        ys.append(x @ C.T + torch.randn(batch, m, generator=g, dtype=D) @ LR.T)
    return torch.stack(xs), torch.stack(ys), us


def random_spd(n, seed, scale=1.0):
    M = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=D)
    return scale * (M @ M.T / n + 0.5 * torch.eye(n, dtype=D))


def mse(a, b):
    return float(((a - b) ** 2).mean())


def test_kalman_reference_equals_the_exact_posterior_mean():
    """The reference filter's estimate is E[x_k | y_1..k] of the joint Gaussian of the whole
    sequence, computed by brute-force conditioning."""
    A, B, C = tracking_system()
    Q, R = random_spd(3, 1), random_spd(3, 2)
    K = 6
    _, ys, us = simulate(A, B, C, Q, R, K, 2, seed=3)
    kf = kalman_filter(ys, A, C, Q, R, us=us, B=B)
    n = 3
    # x_{1..K} = M (x_0 + sum) : build the joint prior of states stacked [x_1 .. x_K], x_0 ~ N(0, I)
    mean_x = []
    Phi = [torch.linalg.matrix_power(A, k) for k in range(K + 1)]
    for b in range(2):
        means = []
        m = torch.zeros(n, dtype=D)
        for k in range(K):
            m = A @ m + B @ us[k, b]
            means.append(m)
        mean_x.append(torch.cat(means))
    big = torch.zeros(K * n, K * n, dtype=D)
    for i in range(K):
        for j in range(K):
            s = Phi[i + 1] @ Phi[j + 1].T  # from x_0 ~ N(0, I)
            for t in range(min(i, j) + 1):
                s = s + Phi[i - t] @ Q @ Phi[j - t].T
            big[i * n : (i + 1) * n, j * n : (j + 1) * n] = s
    Cbig = torch.block_diag(*[C] * K)
    Rbig = torch.block_diag(*[R] * K)
    for b in range(2):
        y = ys[:, b].reshape(-1)
        for k in range(1, K + 1):
            rows = slice(0, k * C.shape[0])
            Ck = Cbig[rows, : k * n]
            cov_xk_y = big[(k - 1) * n : k * n, : k * n] @ Ck.T
            cov_y = Ck @ big[: k * n, : k * n] @ Ck.T + Rbig[rows, rows]
            mu_y = Ck @ mean_x[b][: k * n]
            post = mean_x[b][(k - 1) * n : k * n] + cov_xk_y @ torch.linalg.solve(cov_y, y[rows] - mu_y)
            assert torch.allclose(kf.means[k - 1, b], post, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("full_covariances", [False, True])
def test_tpc_equilibrium_is_the_fixed_gain_kalman_filter(full_covariances):
    """The relaxed tPC state equals x̄ + Σx Cᵀ(CΣxCᵀ + Σy)⁻¹(y − Cx̄) at every step: the
    Kalman update with the prior covariance held at Σx (the paper's derivation)."""
    A, B, C = tracking_system()
    C = C[:2]  # fewer observations than states
    Q = random_spd(3, 4) if full_covariances else torch.eye(3, dtype=D)
    R = random_spd(2, 5) if full_covariances else 0.5 * torch.eye(2, dtype=D)
    _, ys, us = simulate(A, B, C, Q, R, 40, 3, seed=6)
    tpc = TemporalPC.linear(
        A,
        C,
        B,
        state_precision=torch.linalg.inv(Q) if full_covariances else 1.0,
        observation_precision=torch.linalg.inv(R) if full_covariances else 2.0,
    )
    out = tpc.filter(ys, us, solver=GradientDescent(0.1), stop=converged(20000, 1e-12))
    ref = kalman_filter(ys, A, C, Q, R, us=us, B=B, fixed_gain=True)
    assert (out.states - ref.means).abs().max() < 1e-9
    assert torch.allclose(out.predictions, ref.predictions, atol=1e-9)


def test_tpc_with_the_kalman_prior_precision_is_the_kalman_filter():
    """With the state precision set at each step to the Kalman filter's (P_k^-)^-1, the
    relaxed tPC state is the Kalman filter's estimate."""
    A, B, C = tracking_system()
    Q, R = random_spd(3, 7), random_spd(3, 8)
    _, ys, us = simulate(A, B, C, Q, R, 30, 2, seed=9)
    ref = kalman_filter(ys, A, C, Q, R, us=us, B=B)
    tpc = TemporalPC.linear(A, C, B, state_precision=torch.eye(3, dtype=D), observation_precision=torch.linalg.inv(R))
    energy = tpc.step_model.state.energy
    assert isinstance(energy, MatrixGaussian)
    prev = torch.zeros(2, 3, dtype=D)
    for k in range(len(ys)):
        energy.precision_matrix.copy_(torch.linalg.inv(ref.priors[k]))
        r = tpc.infer_step(prev, ys[k], us[k], GradientDescent(0.05), converged(50000, 1e-12))
        prev = r.values[tpc.graph.index("state")]
        assert (prev - ref.means[k]).abs().max() < 1e-9


def filtered_ratio(A, B, C, Q, R, state_precision, K=200, batch=4, seed=11):
    xs, ys, us = simulate(A, B, C, Q, R, K, batch, seed)
    kf = kalman_filter(ys, A, C, Q, R, us=us, B=B)
    Py = torch.linalg.inv(R)
    Px = (
        torch.as_tensor(state_precision, dtype=D) * torch.eye(3, dtype=D)
        if torch.as_tensor(state_precision).dim() == 0
        else torch.as_tensor(state_precision)
    )
    top = float(torch.linalg.eigvalsh(Px + C.T @ Py @ C).max())  # the energy's curvature
    tpc = TemporalPC.linear(A, C, B, state_precision=state_precision, observation_precision=Py)
    out = tpc.filter(ys, us, solver=GradientDescent(1.0 / top), stop=converged(20000, 1e-10))
    return mse(out.states, xs) / mse(kf.means, xs)


def test_tpc_mse_within_ten_percent_of_the_kalman_filter():
    """Inference run to convergence at each step: on the tracking task with the state
    precision the filter settles to, (P∞⁻)⁻¹, and on a system whose observations pin the
    state (posterior spread small against Q) with the plain Σx = Q, the state MSE is within
    10 % of the Kalman filter's."""
    A, B, C = tracking_system()
    I3 = torch.eye(3, dtype=D)
    P = steady_state_prior(A, C, I3, I3)
    assert filtered_ratio(A, B, C, I3, I3, torch.linalg.inv(P)) < 1.10
    pinned = filtered_ratio(A, B, 2 * torch.eye(3, dtype=D), I3, 0.1 * I3, I3)
    assert pinned < 1.10
    # where it does not apply: the tracking task with Σx = Q keeps a fixed gain that is
    # too small (its prior covariance is Q, the filter's settles near 1.4-2.3 Q)
    assert filtered_ratio(A, B, C, I3, I3, I3, K=150) > 1.10


def test_weight_gradients_are_the_local_hebbian_products():
    """The engine's weight gradients at the relaxed state are −Πx εx f(x̂ₖ₋₁)ᵀ, −Πx εx uᵀ and
    −Πy εy f(x̂ₖ)ᵀ, averaged over the batch (tanh f)."""
    torch.manual_seed(0)
    A = 0.5 * torch.randn(4, 4, dtype=D)
    C = torch.randn(3, 4, dtype=D)
    B = torch.randn(4, 2, dtype=D)
    Px, Py = random_spd(4, 1), random_spd(3, 2)
    tpc = TemporalPC.linear(A, C, B, act="tanh", state_precision=Px, observation_precision=Py)
    prev, u, y = torch.randn(5, 4, dtype=D), torch.randn(5, 2, dtype=D), torch.randn(5, 3, dtype=D)
    r = tpc.infer_step(prev, y, u, GradientDescent(0.05), converged(50000, 1e-11))
    x = r.values[tpc.graph.index("state")]
    ex = (x - torch.tanh(prev) @ A.T - u @ B.T) @ Px
    ey = (y - torch.tanh(x) @ C.T) @ Py
    energy = learning_plan(tpc.graph)
    grads, _ = weight_gradients(energy, energy.trainable(), r.values)
    names = {n.split(".")[-2]: n for n in grads}
    assert torch.allclose(grads[names["A"]], -ex.T @ torch.tanh(prev) / 5, atol=1e-12)
    assert torch.allclose(grads[names["B"]], -ex.T @ u / 5, atol=1e-12)
    assert torch.allclose(grads[names["C"]], -ey.T @ torch.tanh(x) / 5, atol=1e-12)
    # and the relaxed state is a stationary point: -εx + f'(x) ⊙ Cᵀ εy = 0
    assert (-ex + (1 - torch.tanh(x) ** 2) * (ey @ C)).abs().max() < 1e-9


def test_learning_A_and_C_reduces_the_prediction_error():
    """From perturbed A and C, online learning by the local rule on training sequences
    lowers the one-step-ahead prediction error on held-out sequences."""
    A, B, C = tracking_system()
    I3 = torch.eye(3, dtype=D)
    _, ytr, utr = simulate(A, B, C, I3, I3, 400, 8, seed=0)
    _, yte, ute = simulate(A, B, C, I3, I3, 300, 8, seed=1)
    g = torch.Generator().manual_seed(3)
    A0 = A + 0.1 * torch.randn(3, 3, generator=g, dtype=D)
    C0 = C + 0.5 * torch.randn(3, 3, generator=g, dtype=D)
    tpc = TemporalPC.linear(A0, C0, B)
    tpc.step_model.transition.B.weight.requires_grad_(False)
    solver, stop = GradientDescent(0.1), StopRule(max_steps=20)
    before = tpc.filter(yte, ute, solver=solver, stop=stop).prediction_mse(yte, 50)
    opt = torch.optim.SGD([p for p in tpc.parameters() if p.requires_grad], lr=3e-4)
    for _ in range(2):
        tpc.filter(ytr, utr, solver=solver, stop=stop, optimizer=opt)
    after = tpc.filter(yte, ute, solver=solver, stop=stop).prediction_mse(yte, 50)
    true = TemporalPC.linear(A, C, B).filter(yte, ute, solver=solver, stop=stop).prediction_mse(yte, 50)
    assert after < 0.2 * before
    assert after < 3.0 * true  # towards the true model's (4.1 here); more epochs get closer


def test_extended_kalman_filter_on_a_linear_system_is_the_kalman_filter():
    A, B, C = tracking_system()
    Q, R = random_spd(3, 1), random_spd(3, 2)
    _, ys, us = simulate(A, B, C, Q, R, 20, 2, seed=4)
    kf = kalman_filter(ys, A, C, Q, R, us=us, B=B)
    ekf = extended_kalman_filter(
        ys, lambda x, u: x @ A.T + u @ B.T, lambda x: x @ C.T, Q, R, x0=torch.zeros(2, 3, dtype=D), us=us
    )
    assert torch.allclose(ekf.means, kf.means, atol=1e-12)
    assert torch.allclose(ekf.covariances[:, 0], kf.covariances, atol=1e-12)


def test_bad_inputs_name_the_problem():
    A, B, C = tracking_system()
    tpc = TemporalPC.linear(A, C, B)
    with pytest.raises(InputError, match=r"observations must be \[time, batch, 3\]"):
        tpc.filter(torch.zeros(5, 2, 4, dtype=D))
    with pytest.raises(InputError, match="controls must be"):
        tpc.filter(torch.zeros(5, 2, 3, dtype=D), torch.zeros(4, 2, 1, dtype=D))
    with pytest.raises(InputError, match="observations are torch.float32 but the model is torch.float64"):
        tpc.filter(torch.zeros(5, 2, 3))
    with pytest.raises(InputError, match="NaN"):
        tpc.filter(torch.full((5, 2, 3), float("nan"), dtype=D))
    with pytest.raises(OptionError, match="positive definite"):
        MatrixGaussian(-torch.eye(2, dtype=D))
    with pytest.raises(OptionError, match="symmetric"):
        MatrixGaussian(torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=D))
    with pytest.raises(OptionError, match="A must be"):
        TemporalPC.linear(torch.zeros(3, 2, dtype=D), C)

r"""Temporal predictive coding against the Kalman filter (Millidge, Tang, Osanlouy, Harper &
Bogacz, "Predictive coding networks for temporal prediction", PLoS Comput Biol 2024).

1. **Linear tracking** (the paper's task, its code's constants): state = position,
   velocity, acceleration; :math:`A` = constant-acceleration dynamics with
   :math:`dt = 10^{-3}`, control :math:`u_k = e^{-0.01k}` through :math:`B = (0,0,1)^\top`,
   a random :math:`3\times3` emission :math:`C` (``torch.randn`` with seed 10, as the
   paper's multi-seed script), :math:`Q = R = I`, 1000 steps, 10 noise seeds (one batch).
   Estimators: the Kalman filter (:func:`predcode.kalman.kalman_filter`); tPC with inference
   run to convergence at each step (the relaxation's gradient RMS below 1e-10), with the
   paper's state precision :math:`\Sigma_x^{-1} = Q^{-1}` and with the stationary prior
   precision :math:`(P_\infty^-)^{-1}`; tPC with 1, 5 and 20 inference steps at rate 0.1
   (the paper's Fig. 3C/D); the fixed-gain Kalman filter that tPC's equilibrium equals.
   Metric: the state MSE against the true states.
2. **Learning A and C** (the paper's Fig. 4 protocol, perturbed rather than random start:
   from a random start the paper's inference rate diverges here): from
   :math:`A + 0.1\,\xi`, :math:`C + 0.5\,\xi`, online learning by the local rule (SGD,
   rate 3e-4, 20 inference steps at 0.1 per time step) over 10 training sequences; the
   one-step-ahead prediction MSE of the observations on 10 held-out sequences, beside the
   true model's and the Kalman filter's.
3. **A nonlinear system, the pendulum**: :math:`\theta_{k} = \theta_{k-1} + dt\,\omega_{k-1}`,
   :math:`\omega_k = \omega_{k-1} - dt\,(g/L)\sin\theta_{k-1}` plus process noise, observed
   through the bob's position :math:`L(\sin\theta, -\cos\theta)` and a gyroscope's
   :math:`\omega`, plus noise.  tPC with
   the known nonlinear transition and emission (any modules work) at convergence, against
   the extended Kalman filter (:func:`predcode.kalman.extended_kalman_filter`); tPC's
   state precision is :math:`Q^{-1}` and, second, the EKF's time-averaged prior precision.

The paper shows these results as figures (Fig. 3D: the MSE difference between tPC and the
Kalman filter over inference steps and rates; Fig. 4: learned vs true vs random A and C;
Fig. 7: linear vs nonlinear tPC on a pendulum); no tabulated numbers were retrievable to
set beside ours, so the orderings are compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor, nn

from ..inference import GradientDescent, StopRule
from ..kalman import extended_kalman_filter, kalman_filter, steady_state_prior
from ..temporal import LinearEmission, LinearTransition, TemporalPC, converged
from . import common, experiment

D = torch.float64


class Settings(TypedDict):
    """Time steps of the tracking task, seeds (batched trajectories), epochs of learning A
    and C, and time steps of the pendulum."""

    steps: int
    seeds: int
    learn_epochs: int
    pendulum_steps: int


class Pendulum(TypedDict):
    """The pendulum: time step, gravity, length, process noise variances of (angle, angular
    velocity), observation noise variance and the initial angle and angular velocity."""

    dt: float
    g: float
    L: float
    q: list[float]
    r: float
    theta0: float
    omega0: float


Say = Callable[[str], None]  # prints one progress line
SETTINGS: dict[str, Settings] = {
    "quick": {"steps": 1000, "seeds": 10, "learn_epochs": 3, "pendulum_steps": 300},
    "full": {"steps": 2000, "seeds": 10, "learn_epochs": 10, "pendulum_steps": 2000},
}
PENDULUM: Pendulum = {"dt": 0.05, "g": 9.81, "L": 3.0, "q": [1e-4, 1e-3], "r": 0.1, "theta0": 1.8, "omega0": 2.2}


def tracking_system() -> tuple[Tensor, Tensor, Tensor]:
    dt = 1e-3
    A = torch.tensor([[1.0, dt, 0.5 * dt**2], [0.0, 1.0, dt], [0.0, 0.0, 1.0]], dtype=D)
    B = torch.tensor([[0.0], [0.0], [1.0]], dtype=D)
    C = torch.randn(3, 3, generator=torch.Generator().manual_seed(10), dtype=D)
    return A, B, C


def simulate_linear(A, B, C, K: int, batch: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(states, observations, controls)`` with unit process and observation noise."""
    g = torch.Generator().manual_seed(seed)
    us = torch.exp(-0.01 * torch.arange(K, dtype=D)).reshape(K, 1, 1).expand(K, batch, 1)
    x = torch.zeros(batch, 3, dtype=D)
    xs, ys = [], []
    for k in range(K):
        x = x @ A.T + us[k] @ B.T + torch.randn(batch, 3, generator=g, dtype=D)
        xs.append(x)
        ys.append(x @ C.T + torch.randn(batch, 3, generator=g, dtype=D))
    return torch.stack(xs), torch.stack(ys), us


def per_seed_mse(est: Tensor, truth: Tensor) -> Tensor:
    return ((est - truth) ** 2).mean(dim=(0, 2))


def rate_for(Px: Tensor, C: Tensor, Py: Tensor) -> float:
    """Inference rate 1/λ_max of the (quadratic) energy's curvature Πx + CᵀΠyC."""
    return 1.0 / float(torch.linalg.eigvalsh(Px + C.T @ Py @ C).max())


class PendulumTransition(nn.Module):
    r""":math:`(\theta, \omega) \mapsto (\theta + dt\,\omega,\ \omega - dt\,(g/L)\sin\theta)`."""

    def __init__(self, dt: float, g: float, L: float) -> None:
        super().__init__()
        self.dt, self.k = dt, g / L

    def forward(self, prev: Tensor, u: Tensor) -> Tensor:
        theta, omega = prev[:, 0:1], prev[:, 1:2]
        return torch.cat([theta + self.dt * omega, omega - self.dt * self.k * torch.sin(theta)], dim=1)


class BobPosition(nn.Module):
    r""":math:`(\theta, \omega) \mapsto (L\sin\theta, -L\cos\theta, \omega)`: the bob's
    position and a gyroscope's angular velocity."""

    def __init__(self, L: float) -> None:
        super().__init__()
        self.L = L

    def forward(self, x: Tensor) -> Tensor:
        theta = x[:, 0:1]
        return torch.cat([self.L * torch.sin(theta), -self.L * torch.cos(theta), x[:, 1:2]], dim=1)


def simulate_pendulum(K: int, batch: int, seed: int, p: Pendulum) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    trans, emit = PendulumTransition(p["dt"], p["g"], p["L"]), BobPosition(p["L"])
    q, r = torch.tensor(p["q"], dtype=D).sqrt(), math.sqrt(p["r"])
    x = torch.tensor([[p["theta0"], p["omega0"]]], dtype=D).expand(batch, 2)
    x = x + 0.1 * torch.randn(batch, 2, generator=g, dtype=D)
    xs, ys = [], []
    with torch.no_grad():
        for _ in range(K):
            x = trans(x, None) + q * torch.randn(batch, 2, generator=g, dtype=D)
            xs.append(x)
            ys.append(emit(x) + r * torch.randn(batch, 3, generator=g, dtype=D))
    return torch.stack(xs), torch.stack(ys)


def tracking(st: Settings, say: Say) -> tuple[dict, dict]:
    A, B, C = tracking_system()
    I3 = torch.eye(3, dtype=D)
    xs, ys, us = simulate_linear(A, B, C, st["steps"], st["seeds"], seed=0)
    out, traces = {}, {}
    kf = kalman_filter(ys, A, C, I3, I3, us=us, B=B)
    fixed = kalman_filter(ys, A, C, I3, I3, us=us, B=B, fixed_gain=True)
    out["Kalman filter"] = per_seed_mse(kf.means, xs)
    out["fixed-gain Kalman filter (P- = Q)"] = per_seed_mse(fixed.means, xs)
    traces["Kalman filter"] = kf.means
    P = steady_state_prior(A, C, I3, I3)
    rate = rate_for(I3, C, I3)
    runs = {
        "tPC, converged, precision Q^-1 (paper)": (I3, converged(20000, 1e-10), rate),
        "tPC, converged, precision (P_inf^-)^-1": (
            torch.linalg.inv(P),
            converged(20000, 1e-10),
            rate_for(torch.linalg.inv(P), C, I3),
        ),
        "tPC, 1 step at 0.1": (I3, StopRule(max_steps=1), 0.1),
        "tPC, 5 steps at 0.1": (I3, StopRule(max_steps=5), 0.1),
        "tPC, 20 steps at 0.1": (I3, StopRule(max_steps=20), 0.1),
    }
    steps = {}
    for name, (Px, stop, lr) in runs.items():
        clock = common.Clock()
        tpc = TemporalPC.linear(A, C, B, state_precision=Px, observation_precision=1.0)
        f = tpc.filter(ys, us, solver=GradientDescent(lr), stop=stop)
        out[name] = per_seed_mse(f.states, xs)
        traces[name] = f.states
        steps[name] = sum(f.steps) / len(f.steps)
        say(
            f"  {name}: state MSE {float(out[name].mean()):.4f} (KF {float(out['Kalman filter'].mean()):.4f}), "
            f"{steps[name]:.0f} steps per time step, {clock():.0f} s"
        )
        if name.endswith("(paper)"):
            gap = float((f.states - fixed.means).abs().max())
    data = {
        "state_mse": {k: common.stats(v) for k, v in out.items()},
        "ratio_to_kalman": {k: common.stats(v / out["Kalman filter"]) for k, v in out.items()},
        "inference_steps_per_time_step": steps,
        "max_abs_gap_tpc_vs_fixed_gain_kalman": gap,
        "stationary_prior_covariance": P.tolist(),
        "C": C.tolist(),
        "inference_rate_converged": rate,
    }
    return data, {"xs": xs, "traces": traces}


def learning(st: Settings, say: Say) -> dict:
    A, B, C = tracking_system()
    I3 = torch.eye(3, dtype=D)
    _, ytr, utr = simulate_linear(A, B, C, st["steps"], st["seeds"], seed=100)
    _, yte, ute = simulate_linear(A, B, C, st["steps"], st["seeds"], seed=200)
    g = torch.Generator().manual_seed(3)
    A0 = A + 0.1 * torch.randn(3, 3, generator=g, dtype=D)
    C0 = C + 0.5 * torch.randn(3, 3, generator=g, dtype=D)
    solver, stop = GradientDescent(0.1), StopRule(max_steps=20)
    burn = 50  # the first steps start from x0 = 0 for every model

    def evaluate(model: TemporalPC) -> Tensor:
        f = model.filter(yte, ute, solver=solver, stop=stop)
        return ((yte[burn:] - f.predictions[burn:]) ** 2).mean(dim=(0, 2))

    kf = kalman_filter(yte, A, C, I3, I3, us=ute, B=B)
    res = {
        "Kalman filter": ((yte[burn:] - kf.predictions[burn:]) ** 2).mean(dim=(0, 2)),
        "tPC, true A and C": evaluate(TemporalPC.linear(A, C, B)),
    }
    tpc = TemporalPC.linear(A0, C0, B)
    transition, emission = tpc.step_model.transition, tpc.step_model.emission
    assert isinstance(transition, LinearTransition) and isinstance(emission, LinearEmission)  # TemporalPC.linear's
    assert transition.B is not None  # built with the control matrix B
    transition.B.weight.requires_grad_(False)
    res["tPC, initial A and C"] = evaluate(tpc)
    opt = torch.optim.SGD([p for p in tpc.parameters() if p.requires_grad], lr=3e-4)
    curve = [float(res["tPC, initial A and C"].mean())]
    for epoch in range(st["learn_epochs"]):
        tpc.filter(ytr, utr, solver=solver, stop=stop, optimizer=opt)
        curve.append(float(evaluate(tpc).mean()))
        say(f"  learning epoch {epoch + 1}: held-out prediction MSE {curve[-1]:.3f}")
    res["tPC, learned A and C"] = evaluate(tpc)
    return {
        "prediction_mse": {k: common.stats(v) for k, v in res.items()},
        "held_out_prediction_mse_per_epoch": curve,
        "epochs": st["learn_epochs"],
        "weight_lr": 3e-4,
        "inference": "20 steps at 0.1",
        "start": "A + 0.1 N(0,1), C + 0.5 N(0,1)",
        "learned_A": transition.A.weight.tolist(),
        "learned_C": emission.C.weight.tolist(),
    }


def pendulum(st: Settings, say: Say) -> tuple[dict, dict]:
    p = PENDULUM
    xs, ys = simulate_pendulum(st["pendulum_steps"], st["seeds"], seed=1, p=p)
    Q, R = torch.diag(torch.tensor(p["q"], dtype=D)), p["r"] * torch.eye(3, dtype=D)
    trans, emit = PendulumTransition(p["dt"], p["g"], p["L"]), BobPosition(p["L"])
    x0 = torch.tensor([[p["theta0"], p["omega0"]]], dtype=D).expand(st["seeds"], 2).contiguous()
    ekf = extended_kalman_filter(ys, trans, emit, Q, R, x0=x0, P0=0.01 * torch.eye(2, dtype=D))
    out = {"extended Kalman filter": per_seed_mse(ekf.means, xs)}
    traces = {"extended Kalman filter": ekf.means}
    prior = ekf.priors[len(ekf.priors) // 10 :].mean(dim=(0, 1))
    for name, Px in (
        ("tPC, converged, precision Q^-1", torch.linalg.inv(Q)),
        ("tPC, converged, EKF's mean prior precision", torch.linalg.inv(prior)),
    ):
        tpc = TemporalPC(
            PendulumTransition(p["dt"], p["g"], p["L"]),
            BobPosition(p["L"]),
            2,
            3,
            state_precision=Px,
            observation_precision=1.0 / p["r"],
            dtype=D,
        )
        top = float(torch.linalg.eigvalsh(Px).max()) + p["L"] ** 2 / p["r"]
        clock = common.Clock()
        f = tpc.filter(ys, None, x0=x0, solver=GradientDescent(1.0 / top), stop=converged(50000, 1e-8))
        out[name] = per_seed_mse(f.states, xs)
        traces[name] = f.states
        say(
            f"  pendulum {name}: state MSE {float(out[name].mean()):.5f} (EKF "
            f"{float(out['extended Kalman filter'].mean()):.5f}), "
            f"{sum(f.steps) / len(f.steps):.0f} steps per time step, {clock():.0f} s"
        )
    data = {
        "state_mse": {k: common.stats(v) for k, v in out.items()},
        "ratio_to_ekf": {k: common.stats(v / out["extended Kalman filter"]) for k, v in out.items()},
        "ekf_mean_prior_covariance": prior.tolist(),
        "system": p,
    }
    return data, {"xs": xs, "traces": traces}


def figure(out_dir: Path, track: dict, pend: dict, learn: dict) -> str:
    fig, axes = common.figure(3, 1, width=4.4, height=3.3)
    ax = axes[0, 0]
    K = len(track["xs"])
    window = slice(max(0, min(560, K - 40)), min(600, K))
    t = torch.arange(window.start, window.stop)
    ax.plot(t, track["xs"][window, 0, 2], "k", label="true")
    for name, style in (
        ("Kalman filter", "-"),
        ("tPC, converged, precision Q^-1 (paper)", "--"),
        ("tPC, 1 step at 0.1", ":"),
        ("tPC, 20 steps at 0.1", "-."),
    ):
        ax.plot(t, track["traces"][name][window, 0, 2], style, label=name.replace(" (paper)", ""))
    ax.set_title("tracking: acceleration (seed 0)", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes[0, 1]
    ax.plot(learn["held_out_prediction_mse_per_epoch"], "o-", label="tPC, learning A and C")
    ax.axhline(learn["prediction_mse"]["tPC, true A and C"]["mean"], color="g", ls="--", label="tPC, true A and C")
    ax.axhline(learn["prediction_mse"]["Kalman filter"]["mean"], color="k", ls=":", label="Kalman filter")
    ax.set_yscale("log")
    ax.set_xlabel("epochs of online learning")
    ax.set_title("held-out one-step prediction MSE", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    n = min(200, len(pend["xs"]))
    ax.plot(pend["xs"][:n, 0, 0], "k", label="true θ")
    for name, style in (
        ("extended Kalman filter", "-"),
        ("tPC, converged, precision Q^-1", "--"),
        ("tPC, converged, EKF's mean prior precision", ":"),
    ):
        ax.plot(pend["traces"][name][:n, 0, 0], style, label=name)
    ax.set_title("pendulum: angle (seed 0)", fontsize=9)
    ax.legend(fontsize=6)
    return common.save(fig, out_dir, "temporal.png")


@experiment(
    "temporal",
    "temporal PC vs the Kalman filter (linear tracking, learning A and C) and the extended Kalman filter (pendulum)",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("temporal", out_dir, full, seed)
    st = SETTINGS["full" if full else "quick"]
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    say("linear tracking")
    track, track_traces = tracking(st, say)
    say("learning A and C")
    learn = learning(st, say)
    say("pendulum")
    pend, pend_traces = pendulum(st, say)
    figures = [figure(out_dir, track_traces, pend_traces, learn)]
    r = track["ratio_to_kalman"]
    paper_ratio = r["tPC, converged, precision Q^-1 (paper)"]["mean"]
    pinf_ratio = r["tPC, converged, precision (P_inf^-)^-1"]["mean"]
    lp = learn["prediction_mse"]
    pr = pend["ratio_to_ekf"]
    pq = pr["tPC, converged, precision Q^-1"]["mean"]
    pe = pr["tPC, converged, EKF's mean prior precision"]["mean"]
    summary = (
        f"tracking task: tPC at convergence has {paper_ratio:.3f}x the Kalman filter's state "
        f"MSE with the paper's precision Q^-1 (equal to the fixed-gain filter to "
        f"{track['max_abs_gap_tpc_vs_fixed_gain_kalman']:.1e}), {pinf_ratio:.3f}x with the "
        f"stationary prior precision; learning A and C: held-out prediction MSE "
        f"{lp['tPC, initial A and C']['mean']:.2f} -> {lp['tPC, learned A and C']['mean']:.2f} "
        f"(true model {lp['tPC, true A and C']['mean']:.2f}, Kalman filter "
        f"{lp['Kalman filter']['mean']:.2f}); pendulum: tPC / EKF state MSE "
        f"{pq:.3f}x (precision Q^-1), {pe:.3f}x (EKF's mean prior precision)"
    )
    notes = [
        "Target: tPC's state MSE within 10 % of the Kalman filter's with inference run to "
        f"convergence: {'met' if pinf_ratio <= 1.10 else 'not met'} with the stationary prior "
        f"precision ({pinf_ratio:.3f}x); with the paper's precision Q^-1 the ratio is "
        f"{paper_ratio:.3f}x ({'met' if paper_ratio <= 1.10 else 'not met'}): tPC's gain is the "
        "Kalman gain with the prior covariance held at Q, while the filter's settles to P_inf^- "
        "(1.4-2.3 Q on this task, `stationary_prior_covariance`), the gap the paper's Fig. 3D shows.",
        "Exact equivalence (tests/test_temporal.py, float64): tPC's relaxed state equals the "
        "fixed-gain Kalman update to 1e-9 (scalar and full covariances), and equals the Kalman "
        "filter itself to 1e-9 when its state precision is set at each step to the filter's "
        "(P_k^-)^-1.",
        "Paper: Fig. 3C/D (tPC approaches the Kalman filter as inference steps increase), "
        "Fig. 4 (learned A and C predict about as well as the true ones, random ones far worse), "
        "Fig. 7 (pendulum); shown as figures; no tabulated numbers were retrievable to set beside ours.",
        "The learning run starts from perturbed A and C: from the paper's random start the "
        "energy's curvature C^T C makes its inference rate (0.1-0.2) diverge at the first steps here.",
    ]
    data = {"tracking": track, "learning": learn, "pendulum": pend, "settings": st}
    job.write(
        hyperparameters={"settings": st, "pendulum": PENDULUM},
        comparisons=[],
        data=data,
        figures=figures,
        summary=summary,
        notes=notes,
    )
    return {
        "runtime_s": round(job.clock(), 1),
        "tracking_ratio_paper_precision": paper_ratio,
        "tracking_ratio_stationary_precision": pinf_ratio,
        "learning": {k: v["mean"] for k, v in lp.items()},
        "pendulum_ratio": {k: v["mean"] for k, v in pr.items()},
    }

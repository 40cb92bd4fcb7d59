r"""Explicit error neurons settle where the energy's gradient flow settles.

An MLP 784-64-64-10 (tanh, squared-error output) is first trained briefly by inference
learning on MNIST (200 batches of 64), then, in float64, 16 test images are relaxed with the
label clamped in two ways:

* the circuit of :mod:`predcode.bio.circuit`: value units and leaky error units with excitatory
  and inhibitory connections, integrated with Euler (tau_x = 1);
* the energy form: the library's :func:`predcode.relax` with gradient descent on the energy.

Recorded: the largest difference of the two fixed points (and the energy gradient at the
circuit's fixed point), and, for tau_e -> 0, the largest difference of the trajectories x(t)
over t in [0, 10] (the circuit against the library's Euler relaxation with the same dt).
``--full`` uses 64 images and one more tau_e.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor

from .. import Euler, GradientDescent, InferenceLearning, PCGraph, StopRule, relax
from ..bio.circuit import ErrorNeuronCircuit, Trajectory
from ..graph import prediction_of
from ..models import mlp
from . import bioplausible, common, experiment

SIZES, ACT = [784, 64, 64, 10], "tanh"


class Settings(TypedDict):
    """Test images relaxed, the error units' time constants tau_e of the trajectory runs
    (the first is plotted) and the inference-learning batches of pretraining."""

    images: int
    taus: list[float]
    pretrain: int


SETTINGS: dict[str, Settings] = {
    "default": {"images": 16, "taus": [0.3, 0.1, 0.03, 0.01], "pretrain": 200},
    "full": {"images": 64, "taus": [1.0, 0.3, 0.1, 0.03, 0.01, 0.003], "pretrain": 200},
}


def trajectory_gap(
    graph: PCGraph, x: Tensor, y: Tensor, tau: float, duration: float = 10.0
) -> tuple[float, Trajectory, list[list[Tensor]], float]:
    """The largest gap over ``[0, duration]`` between the circuit's value units (error
    time constant ``tau``) and the energy form's Euler relaxation with the same ``dt``;
    also the circuit's trajectory, the energy form's values per step and ``dt``."""
    dt = min(0.02, tau / 2)
    steps = int(round(duration / dt))
    circuit = ErrorNeuronCircuit(graph, tau_x=1.0, tau_e=tau)
    _, traj = circuit.simulate(x, y, dt=dt, duration=duration)
    with torch.no_grad():
        values = graph.feedforward([x])
    values[-1] = torch.nn.functional.one_hot(y, 10).to(x.dtype)
    energy_form = [[v.clone() for v in values]]
    relax(
        graph,
        values,
        list(range(1, len(values) - 1)),
        Euler(dt),
        StopRule(steps),
        on_step=lambda t, v: energy_form.append([u.clone() for u in v]),
    )
    gap = max(
        float((a[i] - b[i]).abs().max()) for a, b in zip(traj.values, energy_form) for i in range(1, len(values) - 1)
    )
    return gap, traj, energy_form, dt


def error_units(errors: list[Tensor | None], i: int) -> Tensor:
    """Slot ``i``'s error units in one sampled state of a :class:`Trajectory` (``i`` is not an input)."""
    units = errors[i]
    assert units is not None, f"slot {i} is an input: it has no error units"
    return units


@experiment(
    "error-neurons",
    "explicit value and error neurons with leaky dynamics "
    "settle to the energy form's fixed point; trajectories match as tau_e -> 0",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("error-neurons", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    x, y, xt, yt = bioplausible.mnist()
    torch.manual_seed(seed)
    model = mlp(SIZES, act=ACT)
    graph = PCGraph(model)
    rule = InferenceLearning(GradientDescent(0.1), 20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for k in range(cfg["pretrain"]):
        rule.step(graph, x[k * 64 : (k + 1) * 64], y[k * 64 : (k + 1) * 64], opt)
    pre_acc = bioplausible.accuracy(model, xt, yt)
    model.double()
    graph = PCGraph(model)
    xi, yi = xt[: cfg["images"]].double(), yt[: cfg["images"]]
    # fixed points
    circuit = ErrorNeuronCircuit(graph, tau_x=1.0, tau_e=0.1)
    state, traj = circuit.simulate(xi, yi, dt=0.02, duration=400.0, tol=1e-11, every=50)
    with torch.no_grad():
        values = graph.feedforward([xi])
    values[-1] = torch.nn.functional.one_hot(yi, 10).double()
    ref = relax(graph, values, [1, 2], GradientDescent(0.1), StopRule(200000, grad_tol=1e-12))
    fp_gap = max(float((a - b).abs().max()) for a, b in zip(state.values, ref.values))
    err_gap = max(
        float(
            (state.error(i) - graph.slots[i].node_energy.error(ref.values[i], prediction_of(ref.predictions, i)))
            .abs()
            .max()
        )
        for i in (1, 2, 3)
    )
    with torch.enable_grad():
        leaves = [v.clone().requires_grad_(i in (1, 2)) for i, v in enumerate(state.values)]
        grads = torch.autograd.grad(graph.energy(leaves) * len(yi), [leaves[1], leaves[2]])
    grad_at_fp = max(float(g.abs().max()) for g in grads)
    # trajectories as tau_e -> 0
    gaps: dict[float, float] = {}
    keep: tuple[float, Trajectory, list[list[Tensor]], float] | None = None  # the first tau's run, plotted
    for tau in cfg["taus"]:
        gaps[tau], tr, ef, dt = trajectory_gap(graph, xi, yi, tau)
        if keep is None:
            keep = (tau, tr, ef, dt)
    taus = cfg["taus"]
    checks = [
        {
            "check": "circuit fixed point equals the energy form's (max abs diff < 1e-8, float64)",
            "max_abs_diff_values": fp_gap,
            "max_abs_diff_errors": err_gap,
            "max_abs_energy_gradient_at_circuit_fixed_point": grad_at_fp,
            "settle_time": traj.times[-1],
            "holds": fp_gap < 1e-8 and err_gap < 1e-8,
        },
        {
            "check": "trajectory gap to the gradient flow shrinks as tau_e -> 0",
            "gaps": gaps,
            "holds": all(gaps[a] > gaps[b] for a, b in zip(taus, taus[1:])),
        },
    ]
    fig, axes = common.figure(3, 1)
    assert keep is not None, "the settings give at least one tau_e"
    tau, tr, ef, dt = keep
    times = tr.times
    for j, unit in enumerate((0, 1, 2)):
        ax = axes[0, 0]
        ax.plot(times, [float(v[1][0, unit]) for v in tr.values], color=f"C{j}", label=f"x1[{unit}] circuit")
        ax.plot(
            [k * dt for k in range(len(ef))],
            [float(v[1][0, unit]) for v in ef],
            "--",
            color=f"C{j}",
            label=f"x1[{unit}] energy form",
        )
        ax = axes[0, 1]
        ax.plot(times, [float(error_units(e, 2)[0, unit]) for e in tr.errors], color=f"C{j}", label=f"eps2[{unit}]")
    axes[0, 0].set(xlabel="time (tau_x = 1)", ylabel="value unit", title=f"value units, tau_e = {tau}")
    axes[0, 0].legend(fontsize=6)
    axes[0, 1].set(xlabel="time", ylabel="error unit", title="error units (start at rest)")
    axes[0, 1].legend(fontsize=6)
    ax = axes[0, 2]
    ax.loglog(taus, [gaps[t] for t in taus], marker="o")
    ax.set(
        xlabel="tau_e",
        ylabel="max |x_circuit - x_energy| over t in [0, 10]",
        title="trajectories converge as tau_e -> 0",
    )
    figures = [common.save(fig, out_dir, "error_neurons.png")]
    return bioplausible.finish(
        job,
        summary="error-neuron circuit vs energy-gradient form: fixed points and trajectories",
        hyperparameters={
            "sizes": SIZES,
            "activation": ACT,
            **cfg,
            "tau_x": 1.0,
            "fixed_point": "circuit tau_e 0.1, dt 0.02, until every rate < 1e-11; "
            "energy form GD 0.1 until grad norm < 1e-12",
            "trajectory_dt": "min(0.02, tau_e / 2), same dt for both",
            "pretraining": "IL, GD(0.1) x 20 steps, Adam 1e-3, batch 64",
            "dtype": "float64",
        },
        checks=checks,
        data={"pretrained_test_accuracy": pre_acc, "trajectory_gaps": gaps},
        figures=figures,
    )

"""Learnable precision: the local rule dE/dlog(pi) = 1/2 (pi e^2 - 1) through the learning
rules (float64, against autograd of the relaxed energy), the fixed point pi = 1/mean e^2,
and the precision experiment's defining property on a small budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import predcode as pc
from predcode import Gaussian, Node, PCGraph
from predcode.experiments import precision as exp

D = torch.float64


def _net(hidden_units: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    hidden = Gaussian(precision=0.8, learnable=True, units=5) if hidden_units else Node().energy
    return nn.Sequential(
        nn.Linear(4, 5),
        nn.Tanh(),
        Node(hidden),
        nn.Linear(5, 3),
        Node(Gaussian(precision=1.7, learnable=True, units=3)),
    ).to(D)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 4, generator=g, dtype=D), torch.randn(6, 3, generator=g, dtype=D)


def _relaxed(graph, x, y, steps, lr):
    values = graph.feedforward([x])
    values[graph.output] = y
    free = [s.index for s in graph.slots if not s.is_input and s.index != graph.output]
    return pc.relax(graph, values, free, pc.GradientDescent(lr), pc.StopRule(steps)).values


def test_il_learns_log_precision_by_the_local_rule_fused_and_stepwise():
    """Both IL paths give every log-precision exactly 1/2 mean_b(pi e^2 - 1) at the relaxed
    state, which is also autograd's gradient of the relaxed total energy."""
    x, y = _batch()
    for stop in (pc.StopRule(12), pc.StopRule(12, grad_tol=1e-30)):  # fused, step-by-step
        model = _net()
        graph = PCGraph(model)
        model.zero_grad(set_to_none=True)
        pc.InferenceLearning(pc.GradientDescent(0.1), stop=stop).gradients(graph, x, y)
        values = _relaxed(graph, x, y, 12, 0.1)
        for i in (1, 2):  # hidden and output node
            energy = graph.slots[i].energy
            e = values[i] - graph.node_prediction(i, values).detach()
            want = 0.5 * (energy.precision.detach() * (e**2).mean(0) - 1.0)
            torch.testing.assert_close(energy.log_precision.grad, want)
            lp = energy.log_precision.detach().clone().requires_grad_(True)
            mu = graph.node_prediction(i, values).detach()
            total = (0.5 * (lp.exp() * (values[i] - mu) ** 2).sum(1) - 0.5 * lp.sum()).mean()
            (auto,) = torch.autograd.grad(total, lp)
            torch.testing.assert_close(energy.log_precision.grad, auto)


def test_scalar_learnable_precision_counts_every_unit():
    g = Gaussian(precision=2.0, learnable=True).double()
    x, y = _batch()
    mu = torch.zeros_like(y)
    g(y, mu).mean().backward()
    want = 0.5 * (2.0 * (y**2).sum(1).mean() - y.shape[1])
    torch.testing.assert_close(g.log_precision.grad, want)


def test_learned_precision_reaches_inverse_residual_variance():
    """With the predictions fixed, gradient descent on log pi alone converges to
    pi_j = 1 / mean_b e_j^2 (the zero of the local rule)."""
    g = torch.Generator().manual_seed(3)
    sig = torch.tensor([0.1, 1.0, 3.0], dtype=D)
    y = sig * torch.randn(1000, 3, generator=g, dtype=D)
    energy = Gaussian(learnable=True, units=3).double()
    opt = torch.optim.SGD(energy.parameters(), lr=0.5)
    for _ in range(150):
        opt.zero_grad()
        energy(y, torch.zeros_like(y)).mean().backward()
        opt.step()
    torch.testing.assert_close(energy.precision.detach(), 1 / (y**2).mean(0), rtol=1e-6, atol=0)


@pytest.mark.slow
def test_precision_task_learned_units_beat_fixed_and_match_truth():
    """A short run of the experiment's task: per-unit learned precision gives a lower clean-unit
    error than fixed precision, and the learned precisions order clean above noisy by > 10x."""
    torch.set_num_threads(1)
    x, y, _ = exp.make_data(50, 1)
    xt, _, ft = exp.make_data(500, 2)
    err = {}
    for arm in ("fixed", "units"):
        model, hist = exp.train_arm(arm, 0, 300, x, y)
        with torch.no_grad():
            err[arm] = float(((model(xt) - ft) ** 2)[:, :5].mean())
    prec = torch.tensor(hist[-1])
    assert err["units"] < 0.5 * err["fixed"], err
    assert prec[:5].min() > 10 * prec[5:].max(), prec


def test_precision_experiment_writes_result_and_figure(tmp_path, monkeypatch):
    import json

    torch.set_num_threads(1)
    monkeypatch.setitem(exp.SETTINGS, "default", {"seeds": 1, "iterations": 10, "n_train": 50})
    out = exp.run(tmp_path, False, 0)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["command"] == "predcode repro precision" and result["environment"]["torch"]
    assert (tmp_path / "precision.png").exists()
    assert set(result["test_mse_vs_noise_free"]) == set(exp.ARMS)
    assert out["headline"]["clean_mse_fixed"] > 0

"""Closed-form local products (predcode.local) against autograd, float64."""

import pytest
import torch
from torch import nn

import predcode as pc
from predcode.energy import Gaussian
from predcode.graph import PCGraph
from predcode.inference import EnergyLandscape, GradientDescent, StopRule, relax
from predcode.models import cnn, mlp
from predcode.node import Node

ACTS = ["tanh", "relu", "gelu-tanh", "gelu", "sigmoid", "leaky-relu", "identity"]


def _perturbed_values(graph, x, scale=0.3):
    values = graph.feedforward([x])
    out = [v + scale * torch.randn_like(v) for v in values]
    out[0] = x
    return out


def _grads(graph, values, free, masks=None, closed_form=True):
    land = EnergyLandscape(graph, values, free, masks=masks, closed_form=closed_form)
    return land, land.grad_fn(land.initial_states())


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("act_first", [False, True])
@pytest.mark.parametrize("output", ["se", "ce"])
def test_state_gradients_equal_autograd(act, act_first, output):
    torch.manual_seed(0)
    graph = PCGraph(mlp([6, 5, 4, 3], act=act, output_energy=output, act_first=act_first).double())
    values = _perturbed_values(graph, torch.randn(7, 6, dtype=torch.float64))
    free = [1, 2, 3]  # the output is a free leaf here: set to its mode
    land, (g_closed, row_closed) = _grads(graph, values, free)
    assert land.local is not None
    _, (g_auto, row_auto) = _grads(graph, values, free, closed_form=False)
    for a, b in zip(g_closed, g_auto):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(row_closed, row_auto, rtol=1e-12, atol=1e-12)


def test_learnable_per_unit_precision_free_input_and_masks():
    """Generation-style query: the input is free (partly clamped by a mask), hidden
    nodes have per-unit learnable precision, the output is clamped."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), Node(Gaussian(2.0, learnable=True, units=5)),
                          nn.Tanh(), nn.Linear(5, 3), Node("se")).double()
    with torch.no_grad():
        model[2].energy.log_precision.uniform_(-1, 1)
    graph = PCGraph(model)
    values = _perturbed_values(graph, torch.randn(4, 6, dtype=torch.float64))
    mask = torch.rand(4, 6) < 0.5
    land, (g_closed, row_closed) = _grads(graph, values, [0, 1], masks={0: mask})
    assert land.local is not None
    _, (g_auto, row_auto) = _grads(graph, values, [0, 1], masks={0: mask}, closed_form=False)
    for a, b in zip(g_closed, g_auto):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert (g_closed[0][mask] == 0).all()
    torch.testing.assert_close(row_closed, row_auto, rtol=1e-12, atol=1e-12)


def test_relaxation_and_training_step_unchanged():
    torch.manual_seed(2)
    graph = PCGraph(mlp([8, 6, 6, 3], act="gelu-tanh").double())
    x = torch.randn(5, 8, dtype=torch.float64)
    values = _perturbed_values(graph, x)
    runs = []
    for closed in (True, False):
        land = EnergyLandscape(graph, values, [1, 2], closed_form=closed)
        states = land.initial_states()
        for _ in range(20):
            grads, _ = land.grad_fn(states)
            states = [s - 0.1 * g for s, g in zip(states, grads)]
        runs.append(states)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_other_predictors_keep_autograd():
    torch.manual_seed(3)
    conv = PCGraph(cnn([4, 8]))
    x = torch.randn(2, 1, 28, 28)
    values = conv.feedforward([x])
    land = EnergyLandscape(conv, values, [s.index for s in conv.slots if s.children and not s.is_input])
    assert land.local is None
    # a predictor with two parents (a skip connection) is not a dense chain
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.n1, self.n2 = nn.Linear(3, 3), nn.Linear(3, 3), Node(), Node()
        def forward(self, x):
            h = self.n1(self.a(x))
            return self.n2(self.b(h) + x)
    graph = PCGraph(Skip())
    assert len(graph.slots[2].parents) == 2
    land = EnergyLandscape(graph, graph.feedforward([torch.randn(2, 3)]), [1])
    assert land.local is None


def test_query_uses_closed_form_and_lowers_energy():
    torch.manual_seed(4)
    graph = PCGraph(mlp([6, 5, 3], act="tanh").double())
    x = torch.randn(3, 6, dtype=torch.float64)
    target = torch.randn(3, 3, dtype=torch.float64)
    values = graph.feedforward([x])
    values[-1] = target
    result = relax(graph, values, [1], GradientDescent(0.2), StopRule(max_steps=30))
    energy = result.trace.energy
    assert (energy[1:] <= energy[:-1] + 1e-12).all() and energy[-1] < energy[0]


def _fused_vs_plain(model, x, y, steps=7):
    """Gradients of the fused step (closed form where it applies) and of relax() followed
    by autograd's local weight backward (a tolerance stop rule forces that path)."""
    graph = PCGraph(model)
    solver = pc.SGD(0.05, momentum=0.5)
    results = []
    for stop in (pc.StopRule(max_steps=steps), pc.StopRule(max_steps=steps, energy_rtol=0.0)):
        model.zero_grad(set_to_none=True)
        pc.InferenceLearning(solver, stop).gradients(graph, x, y)
        results.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])
    return graph, results


class _Shared(nn.Module):
    """One linear layer predicting two nodes (weight sharing)."""

    def __init__(self, module_activation: bool = False):
        super().__init__()
        self.inp, self.shared, self.out = nn.Linear(5, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.n1, self.n2, self.n3, self.n4 = Node(), Node(), Node(), Node()
        self.act = nn.Tanh() if module_activation else torch.tanh  # a function: autograd path

    def forward(self, x):
        h = self.n1(self.act(self.inp(x)))
        h = self.n2(self.shared(h))
        h = self.n3(self.shared(h))
        return self.n4(self.out(h))


@pytest.mark.parametrize("build", [
    lambda: mlp([6, 5, 4, 3], act="gelu-tanh"),
    lambda: mlp([6, 5, 4, 3], act="relu", output_energy="ce", act_first=True, bias=False),
    lambda: _Shared(),
], ids=["mlp", "act-first-ce-no-bias", "shared-layer"])
def test_closed_form_weight_gradients_equal_autograd(build):
    torch.manual_seed(5)
    model = build().double()
    x = torch.randn(6, next(model.parameters()).shape[1], dtype=torch.float64)
    graph = PCGraph(model)
    out = graph.slots[graph.output]
    y = torch.randint(0, 3, (6,)) if not isinstance(out.energy, Gaussian) else torch.randn(6, 3, dtype=torch.float64)
    from predcode.engine import WeightEnergy
    expect_closed = not isinstance(model, _Shared)  # tanh inside the predictor: not a module
    assert (WeightEnergy(graph).dense_names is not None) == expect_closed
    _, (fused, plain) = _fused_vs_plain(model, x, y)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_shared_dense_layer_accumulates_both_products():
    torch.manual_seed(6)
    model = _Shared(module_activation=True).double()  # every predictor a module chain
    graph = PCGraph(model)
    from predcode.engine import WeightEnergy
    assert WeightEnergy(graph).dense_names is not None
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    _, (fused, plain) = _fused_vs_plain(model, x, y)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_frozen_or_extra_parameters_fall_back_to_autograd():
    torch.manual_seed(7)
    model = mlp([6, 5, 4, 3], act="tanh").double()
    model[0].weight.requires_grad_(False)
    from predcode.engine import WeightEnergy
    assert WeightEnergy(PCGraph(model)).dense_names is None
    x, y = torch.randn(6, 6, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    _, (fused, plain) = _fused_vs_plain(model, x, y)
    assert fused[0] is None and plain[0] is None
    for a, b in zip(fused[1:], plain[1:]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

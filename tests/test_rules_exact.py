"""Learning rules that are exact backprop (fixed prediction, Z-IL) and the
Whittington-Bogacz limit of strict PC (inference learning), checked against an
independent autograd reference in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import predcode
from predcode import (
    ZIL,
    Backprop,
    FixedPrediction,
    GradientDescent,
    GraphError,
    InferenceLearning,
    Node,
    PCGraph,
    StopRule,
)

ACTS = ["tanh", "relu", "gelu", "sigmoid"]
OUTS = ["se", "ce"]
DEPTHS = [2, 3, 4, 5, 6]
WIDTHS = [5, 7, 6, 8, 5, 6, 7]


def sizes_for(depth: int) -> list[int]:
    """``depth`` weight layers: 5 inputs, small hidden layers, 3 outputs."""
    return WIDTHS[:depth] + [3]


class SkipNet(nn.Module):
    """Not layered: ``h1`` reaches the output directly (through the sum) and via ``h2``."""

    def __init__(self, out: str = "se") -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.h1, self.h2, self.out = Node(), Node(), Node(out)

    def forward(self, x):
        h1 = self.h1(torch.tanh(self.l1(x)))
        h2 = self.h2(torch.tanh(self.l2(h1)))
        return self.out(self.l3(h2 + h1))


@pytest.mark.parametrize("out", OUTS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("rule", [FixedPrediction, ZIL], ids=["fixedpred", "zil"])
def test_exact_rules_equal_backprop(rule, depth, act, out, make_net, make_batch, bp_grads, rule_grads, max_rel_error):
    sizes = sizes_for(depth)
    model, graph = make_net(sizes, act=act, out=out, seed=depth)
    x, y = make_batch(sizes, out=out, batch=6, seed=10 + depth)
    want = bp_grads(model, x, y, out)
    got = rule_grads(rule(), graph, x, y)
    assert max_rel_error(got, want) <= 1e-5


@pytest.mark.parametrize("out", OUTS)
def test_backprop_rule_matches_independent_autograd(out, make_net, make_batch, bp_grads, rule_grads, max_rel_error):
    sizes = sizes_for(3)
    model, graph = make_net(sizes, act="gelu", out=out)
    x, y = make_batch(sizes, out=out)
    assert max_rel_error(rule_grads(Backprop(), graph, x, y), bp_grads(model, x, y, out)) <= 1e-12


@pytest.mark.parametrize("out", OUTS)
def test_fixed_prediction_with_small_rate_is_not_exact(out, make_net, make_batch, bp_grads, rule_grads, max_rel_error):
    """The exactness above is not automatic: a slow, short relaxation misses backprop."""
    sizes = sizes_for(4)
    model, graph = make_net(sizes, act="tanh", out=out)
    x, y = make_batch(sizes, out=out)
    got = rule_grads(FixedPrediction(lr=0.1, steps=3), graph, x, y)
    assert max_rel_error(got, bp_grads(model, x, y, out)) > 1e-3


@pytest.mark.parametrize("out", OUTS)
def test_zil_with_wrong_rate_is_not_exact(out, make_net, make_batch, bp_grads, rule_grads, max_rel_error):
    sizes = sizes_for(4)
    model, graph = make_net(sizes, act="tanh", out=out)
    x, y = make_batch(sizes, out=out)
    got = rule_grads(ZIL(lr=0.5), graph, x, y)
    assert max_rel_error(got, bp_grads(model, x, y, out)) > 1e-3


def test_zil_rejects_graph_with_skip_connection(make_batch):
    torch.manual_seed(0)
    graph = PCGraph(SkipNet().double())
    x, y = make_batch([5, 3])
    with pytest.raises(GraphError, match=r"layered.*'h1'.*lengths \[1, 2\].*FixedPrediction"):
        ZIL().gradients(graph, x, y)


@pytest.mark.parametrize("out", OUTS)
def test_fixed_prediction_is_exact_on_skip_connection(out, make_batch, bp_grads, rule_grads, max_rel_error):
    torch.manual_seed(0)
    model = SkipNet(out).double()
    graph = PCGraph(model)
    x, y = make_batch([5, 3], out=out)
    want = bp_grads(model, x, y, out)
    assert max_rel_error(rule_grads(FixedPrediction(), graph, x, y), want) <= 1e-5


# -- strict PC: the Whittington-Bogacz limit -------------------------------------------
GAMMAS = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003]


def gaussian_output_net(gamma: float) -> nn.Sequential:
    torch.manual_seed(3)  # same weights for every gamma (the energy draws no random numbers)
    return nn.Sequential(
        nn.Linear(5, 7),
        nn.Tanh(),
        Node(),
        nn.Linear(7, 6),
        nn.Tanh(),
        Node(),
        nn.Linear(6, 3),
        Node(predcode.Gaussian(precision=gamma)),
    ).double()


@pytest.mark.parametrize("solver", ["gd", "heun"])
def test_inference_learning_approaches_backprop_as_output_precision_shrinks(
    solver, make_batch, bp_grads, rule_grads, max_rel_error
):
    x, y = make_batch([5, 3], batch=6, seed=4)
    errors = []
    for gamma in GAMMAS:
        model = gaussian_output_net(gamma)
        graph = PCGraph(model)
        want = bp_grads(model, x, y, "se")  # precision-1 squared error: the plain loss
        step = GradientDescent(0.2) if solver == "gd" else predcode.Heun(0.2)
        rule = InferenceLearning(step, StopRule(max_steps=4000, grad_tol=1e-10))
        graph.model.zero_grad(set_to_none=True)
        stats = rule.gradients(graph, x, y)
        assert stats.trace.grad_norms[-1] <= 1e-10, "relaxation did not converge"
        got = [p.grad / gamma for p in model.parameters()]
        errors.append(max_rel_error(got, want))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.05, errors
    assert errors[0] > 5 * errors[-1], errors  # the limit is a real effect, not always exact


def test_inference_learning_unrelaxed_is_zero_hidden_update(make_net, make_batch):
    """With no inference steps only the output weights see an error (hidden errors are zero
    at the feed-forward pass), so IL with T=0 is not backprop."""
    sizes = sizes_for(3)
    model, graph = make_net(sizes, act="tanh")
    x, y = make_batch(sizes)
    model.zero_grad(set_to_none=True)
    InferenceLearning(GradientDescent(0.1), 0).gradients(graph, x, y)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for lin in linears[:-1]:
        assert lin.weight.grad is None or float(lin.weight.grad.abs().max()) == 0.0
    assert float(linears[-1].weight.grad.abs().max()) > 0.0

"""Exactness on every model family: fixed prediction and Z-IL equal autograd's backprop
gradients (float64, relative error <= 1e-5) for CNN, VGG-5/7, the Rosenbaum CNN, ResNet,
RNN, LSTM and the decoder; and Millidge's toy graph at op granularity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from predcode import ZIL, DivergenceError, FixedPrediction, GraphError, PCGraph, models
from predcode.convert import convert, layered
from predcode.inference import GradientDescent, StopRule, relax

D = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def one_hot_seq(batch, steps, vocab, seed):
    labels = torch.randint(0, vocab, (batch, steps), generator=_gen(seed))
    return F.one_hot(labels, vocab).to(D)


# name -> (factory, input, target, loss kind)
CASES = {
    "cnn": (
        lambda: models.cnn((3, 4), act="tanh"),
        lambda: torch.randn(3, 1, 28, 28, generator=_gen(1), dtype=D),
        lambda: torch.randn(3, 10, generator=_gen(2), dtype=D),
        "se",
    ),
    "vgg5": (
        lambda: models.vgg5(1, 10, 28, width=1 / 32, output_energy="ce"),
        lambda: torch.randn(3, 1, 28, 28, generator=_gen(1), dtype=D),
        lambda: torch.randint(0, 10, (3,), generator=_gen(2)),
        "ce",
    ),
    "vgg7": (
        lambda: models.vgg7(3, 10, 32, width=1 / 32),
        lambda: torch.randn(2, 3, 32, 32, generator=_gen(1), dtype=D),
        lambda: torch.randn(2, 10, generator=_gen(2), dtype=D),
        "se",
    ),
    "rosenbaum-cnn": (
        lambda: models.rosenbaum_cnn(),
        lambda: torch.randn(3, 1, 28, 28, generator=_gen(1), dtype=D),
        lambda: torch.randint(0, 10, (3,), generator=_gen(2)),
        "ce",
    ),
    "resnet": (
        lambda: models.resnet(1, 10, (3, 4), blocks=(2, 1), act="tanh"),
        lambda: torch.randn(3, 1, 8, 8, generator=_gen(1), dtype=D),
        lambda: torch.randn(3, 10, generator=_gen(2), dtype=D),
        "se",
    ),
    "rnn": (lambda: models.rnn(5, 6, 5), lambda: one_hot_seq(3, 5, 5, 1), lambda: one_hot_seq(3, 5, 5, 2), "ce"),
    "lstm": (lambda: models.lstm(5, 6, 5), lambda: one_hot_seq(3, 5, 5, 1), lambda: one_hot_seq(3, 5, 5, 2), "ce"),
    "rnn-many-to-one": (
        lambda: models.rnn(5, 6, 5, many_to_one=True),
        lambda: one_hot_seq(3, 5, 5, 1),
        lambda: torch.randint(0, 5, (3,), generator=_gen(2)),
        "ce",
    ),
    "lstm-many-to-one": (
        lambda: models.lstm(5, 6, 5, many_to_one=True),
        lambda: one_hot_seq(3, 5, 5, 1),
        lambda: torch.randint(0, 5, (3,), generator=_gen(2)),
        "ce",
    ),
    "decoder": (
        lambda: models.decoder((3, 6, 6, 8)),
        lambda: torch.randn(3, 3, generator=_gen(1), dtype=D),
        lambda: torch.randn(3, 8, generator=_gen(2), dtype=D),
        "se",
    ),
}
LAYERED = {"cnn", "vgg5", "vgg7", "rosenbaum-cnn", "rnn-many-to-one", "decoder"}


def reference_loss(output, target, kind):
    """The loss by plain torch (not predcode's energies)."""
    if kind == "ce" and not target.is_floating_point():
        return F.cross_entropy(output, target)
    if kind == "ce":  # one-hot sequences: cross-entropy summed over steps, mean over batch
        return -(target * F.log_softmax(output, -1)).sum(dim=(1, 2)).mean()
    return 0.5 * ((output - target) ** 2).flatten(1).sum(1).mean()


def build(name):
    factory, make_x, make_y, kind = CASES[name]
    torch.manual_seed(0)
    model = factory().to(D)
    x, y = make_x(), make_y()
    want = torch.autograd.grad(reference_loss(model(x), y, kind), list(model.parameters()))
    return model, x, y, want


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_prediction_equals_backprop(name, rule_grads, max_rel_error):
    model, x, y, want = build(name)
    assert max_rel_error(rule_grads(FixedPrediction(), PCGraph(model), x, y), want) <= 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_zil_equals_backprop(name, rule_grads, max_rel_error):
    """Z-IL on the graph itself where it is layered, else on its layered closure."""
    model, x, y, want = build(name)
    graph = PCGraph(model)
    if name not in LAYERED:
        with pytest.raises(GraphError, match="layered"):
            ZIL().gradients(graph, x, y)
        graph = layered(graph)
    assert max_rel_error(rule_grads(ZIL(), graph, x, y), want) <= 1e-5


@pytest.mark.parametrize("name", ["lstm", "resnet"])
def test_short_slow_relaxation_is_not_exact(name, rule_grads, max_rel_error):
    """The checks above can fail: a relaxation too short to reach the input misses backprop."""
    model, x, y, want = build(name)
    got = rule_grads(FixedPrediction(lr=0.5, steps=2), PCGraph(model), x, y)
    assert max_rel_error(got, want) > 1e-3


def test_automatic_conversion_of_plain_recurrent_and_residual_models(rule_grads, max_rel_error):
    """A model without Node markers, converted at op granularity, is exact too."""

    class PlainRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell, self.fc = nn.RNNCell(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.cell(x[:, 0])
            for t in range(1, 4):
                h = self.cell(x[:, t], h) + h  # a residual recurrence
            return self.fc(h)

    torch.manual_seed(5)
    model = PlainRNN().to(D)
    x = torch.randn(3, 4, 3, generator=_gen(1), dtype=D)
    y = torch.randn(3, 2, generator=_gen(2), dtype=D)
    want = torch.autograd.grad(reference_loss(model(x), y, "se"), list(model.parameters()))
    for at in ("layers", "ops"):
        graph = convert(model, at=at, example_inputs=x)
        assert max_rel_error(rule_grads(FixedPrediction(), graph, x, y), want) <= 1e-5
        assert max_rel_error(rule_grads(ZIL(), layered(graph), x, y), want) <= 1e-5
    assert convert(model).names == ["x", "cell", "cell:1", "cell:2", "cell:3", "fc"]


# -- Millidge et al. (2020): the toy graph --------------------------------------------
class ToyGraph(nn.Module):
    r"""ANCHORS claim 1: :math:`y_1 = \theta y_0,\ y_2 = \sqrt{y_1},\ y_3 = y_0^2,\
    y_4 = \tan y_2 + \sin y_3`, loss :math:`\tfrac12 (t - y_4)^2`."""

    def __init__(self, theta: float = 2.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta], dtype=D))

    def forward(self, y0):
        y1 = self.theta * y0
        y2 = torch.sqrt(y1)
        y3 = y0**2
        return torch.tan(y2) + torch.sin(y3)


def toy():
    model = ToyGraph()
    y0 = torch.full((1, 1), 5.0, dtype=D)
    t = torch.ones(1, 1, dtype=D)
    graph = convert(model, at="ops", example_inputs=y0, input_nodes=True)
    leaf = y0.clone().requires_grad_()
    loss = 0.5 * (t - model(leaf)) ** 2
    dl_dy0, dl_dtheta = torch.autograd.grad(loss.sum(), [leaf, model.theta])
    return model, graph, y0, t, float(dl_dy0), dl_dtheta


def test_toy_graph_has_a_node_per_operation_and_a_free_leaf():
    _, graph, *_ = toy()
    assert graph.names == ["y0", "y0_node", "mul", "sqrt", "pow_1", "tan", "sin", "add"]
    assert graph.slots[graph.index("y0_node")].parents == (graph.index("y0"),)


def leaf_errors(graph, y0, t, lr, steps):
    rule = FixedPrediction(lr=lr, steps=steps)
    state = rule.forward_state(graph, y0, t)
    leaf = graph.index("y0_node")
    trace = []
    rule.relax(graph, state, on_step=lambda step, errors: trace.append(float(errors[leaf])))
    return trace


def test_toy_leaf_error_converges_to_dl_dy0_at_rate_002():
    """Errors are ``e = x - mu``, so the leaf's converges to ``-dL/dy0`` (= 11.37).  At op
    granularity the leaf is 3 and 4 nodes from the output; after 500 steps at rate 0.02
    the remaining error is P(Binomial(500, 0.02) < 3) ~ 0.3%."""
    _, graph, y0, t, dl_dy0, _ = toy()
    trace = leaf_errors(graph, y0, t, lr=0.02, steps=500)
    assert abs(dl_dy0 + 11.3705) < 1e-3
    assert abs(trace[-1] + dl_dy0) <= 5e-3 * abs(dl_dy0)  # converged by step 500
    assert abs(trace[49] + dl_dy0) > 0.2 * abs(dl_dy0)  # and was far at step 50


def test_toy_rate_one_strict_inference_fails_fixed_prediction_is_exact_at_depth():
    """Rate 1 on the plain energy (predictions recomputed: strict PC) diverges, and the
    strict equilibrium at small rates is nowhere near dL/dy0; fixed prediction at rate 1
    is exact from step 4 (the leaf's longest path to the output)."""
    _, graph, y0, t, dl_dy0, _ = toy()
    values = graph.feedforward([y0])
    values[graph.output] = t
    free = [s.index for s in graph.slots if not s.is_input and s.index != graph.output]
    with pytest.raises(DivergenceError):
        relax(graph, values, free, GradientDescent(1.0), StopRule(max_steps=50))
    slow = relax(graph, values, free, GradientDescent(0.005), StopRule(max_steps=500))
    leaf = graph.index("y0_node")
    strict_error = float(slow.values[leaf] - y0)
    assert abs(strict_error + dl_dy0) > 0.5 * abs(dl_dy0)
    trace = leaf_errors(graph, y0, t, lr=1.0, steps=6)
    assert abs(trace[2] + dl_dy0) > 0.01 * abs(dl_dy0)  # step 3: the long path not yet in
    assert all(abs(e + dl_dy0) <= 1e-12 * abs(dl_dy0) for e in trace[3:])


def test_toy_weight_update_equals_backprop_with_fixed_prediction_and_zil(rule_grads):
    model, graph, y0, t, _, dl_dtheta = toy()
    for rule, g in ((FixedPrediction(), graph), (ZIL(), layered(graph))):
        (got,) = rule_grads(rule, g, y0, t)
        assert math.isclose(float(got), float(dl_dtheta), rel_tol=1e-9)

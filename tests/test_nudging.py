"""Output nudging (positive, negative, centred) around IL (sPC) and ePC.

* as beta -> 0 the nudged update tends to backprop's gradient: the one-sided updates with
  an error of order beta, the centred one of order beta^2 (slopes of a log-log fit in
  float64, relaxations run to equilibrium);
* centred nudging around a plain relaxation is symmetric equilibrium propagation;
  positive nudging at beta = 1 is the wrapped rule itself;
* bad options are one clear error; the rule trains on the fused and compiled paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from predcode import PCGraph
from predcode.app.config import TrainConfig
from predcode.exceptions import OptionError
from predcode.inference import GradientDescent, StopRule
from predcode.models import mlp
from predcode.rules import Backprop, EquilibriumPropagation, ErrorPC, InferenceLearning
from predcode.rules.nudging import Nudging

torch.set_num_threads(1)
SIZES = [5, 6, 6, 3]


def net(out: str, seed: int = 0):
    torch.manual_seed(seed)
    model = mlp(SIZES, act="tanh", output_energy=out).double()
    return model, PCGraph(model)


def batch(out: str, n: int = 6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, SIZES[0], generator=g, dtype=torch.float64)
    y = (
        torch.randint(0, SIZES[-1], (n,), generator=g)
        if out == "ce"
        else torch.randn(n, SIZES[-1], generator=g, dtype=torch.float64)
    )
    return x, y


def flat_grads(model, graph, rule, x, y) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, x, y)
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def bp_grads(model, x, y, out: str) -> torch.Tensor:
    """Autograd on the plain model (independent of predcode's rules)."""
    model.zero_grad(set_to_none=True)
    pred = model(x)
    loss = F.cross_entropy(pred, y) if out == "ce" else 0.5 * ((pred - y) ** 2).sum(1).mean()
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def converged(variables: str):
    """A relaxation run far past equilibrium (contraction ~0.99 per step or better)."""
    if variables == "states":
        return InferenceLearning(GradientDescent(0.3), StopRule(max_steps=1500))
    return ErrorPC(GradientDescent(0.3), StopRule(max_steps=1500))


BETAS = [0.2, 0.1, 0.05, 0.025, 0.0125]


@pytest.mark.parametrize("variables", ["states", "errors"])
@pytest.mark.parametrize("out", ["se", "ce"])
def test_nudged_update_tends_to_backprop_with_its_order(variables, out):
    model, graph = net(out)
    x, y = batch(out)
    ref = bp_grads(model, x, y, out)
    slopes = {}
    errors = {}
    for nudge in ("positive", "negative", "centred"):
        err = []
        for beta in BETAS:
            g = flat_grads(model, graph, Nudging(converged(variables), beta, nudge), x, y)
            err.append(float((g - ref).norm() / ref.norm()))
        errors[nudge] = err
        slopes[nudge] = np.polyfit(np.log(BETAS), np.log(err), 1)[0]
    assert 0.85 < slopes["positive"] < 1.15, (slopes, errors)
    assert 0.85 < slopes["negative"] < 1.15, (slopes, errors)
    assert 1.8 < slopes["centred"] < 2.2, (slopes, errors)
    # and the centred update is the closer one at every beta
    assert all(c < min(p, n) for c, p, n in zip(errors["centred"], errors["positive"], errors["negative"])), errors


def test_one_sided_errors_cancel_to_first_order():
    """The positive and negative updates' biases have opposite signs (first order), so their
    average (centred) is far closer than either."""
    model, graph = net("se")
    x, y = batch("se")
    ref = bp_grads(model, x, y, "se")
    pos = flat_grads(model, graph, Nudging(converged("states"), 0.05, "positive"), x, y) - ref
    neg = flat_grads(model, graph, Nudging(converged("states"), 0.05, "negative"), x, y) - ref
    cos = float(pos @ neg / (pos.norm() * neg.norm()))
    assert cos < -0.99


def test_centred_nudging_is_symmetric_ep():
    model, graph = net("ce")
    x, y = batch("ce")
    for symmetric, nudge in ((True, "centred"), (False, "positive")):
        ep = EquilibriumPropagation(0.2, GradientDescent(0.1), StopRule(max_steps=30), symmetric=symmetric)
        ours = Nudging(InferenceLearning(GradientDescent(0.1), StopRule(max_steps=30)), 0.2, nudge)
        a, b = flat_grads(model, graph, ep, x, y), flat_grads(model, graph, ours, x, y)
        assert float((a - b).abs().max()) < 1e-12


@pytest.mark.parametrize(
    "rule", [InferenceLearning(GradientDescent(0.1), 12), ErrorPC(GradientDescent(0.1), 12)], ids=["il", "epc"]
)
def test_positive_nudge_of_one_is_the_rule_itself(rule):
    model, graph = net("se")
    x, y = batch("se")
    a = flat_grads(model, graph, rule, x, y)
    b = flat_grads(model, graph, Nudging(rule, 1.0, "positive"), x, y)
    assert float((a - b).abs().max()) < 1e-13


def test_loss_is_unscaled_and_grads_accumulate():
    model, graph = net("se")
    x, y = batch("se")
    rule = Nudging(InferenceLearning(GradientDescent(0.1), 10), 0.1, "negative")
    stats = rule.gradients(graph, x, y)
    assert math.isclose(float(stats.loss), float(Backprop().gradients(graph, x, y).loss), rel_tol=1e-12)
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, x, y)
    once = [p.grad.clone() for p in model.parameters()]
    rule.gradients(graph, x, y)
    assert all(torch.allclose(p.grad, 2 * g) for p, g in zip(model.parameters(), once))


def test_bad_options_are_one_clear_error():
    with pytest.raises(OptionError, match="beta"):
        Nudging(beta=0.0)
    with pytest.raises(OptionError, match="beta"):
        Nudging(beta=float("nan"))
    with pytest.raises(OptionError, match="unknown nudge"):
        Nudging(nudge="sideways")
    with pytest.raises(OptionError, match="InferenceLearning or ErrorPC"):
        Nudging(Backprop())
    assert Nudging(nudge="centered").nudge == "centred"
    with pytest.raises(OptionError, match="nudge"):
        TrainConfig(rule="il", nudge="sideways").validate()
    with pytest.raises(OptionError, match="nudge"):
        TrainConfig(rule="bp", nudge="centred").validate()


def test_build_rule_wraps_il_and_epc():
    from predcode.app.train import build_rule

    rule = build_rule(TrainConfig(rule="epc", nudge="negative", nudge_beta=0.05).validate())
    assert isinstance(rule, Nudging) and isinstance(rule.rule, ErrorPC)
    assert rule.beta == 0.05 and rule.nudge == "negative"
    assert isinstance(build_rule(TrainConfig(rule="il").validate()), InferenceLearning)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
def test_nudged_training_lowers_the_loss(compile):
    """A few steps with the fused (and the compiled) path: the feed-forward loss falls."""
    torch.manual_seed(0)
    model = mlp([5, 16, 3], act="tanh", output_energy="ce")
    graph = PCGraph(model)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    rule = Nudging(ErrorPC(GradientDescent(0.1), 5, compile=compile), 0.1, "centred")
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = [float(rule.step(graph, x, y, opt).loss) for _ in range(25)]
    assert losses[-1] < 0.6 * losses[0]

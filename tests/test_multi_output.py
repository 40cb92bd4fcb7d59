"""Models with several outputs: every learning rule clamps every output to its
target, given as a tuple/list (output order) or a dict (by output node name); the
reported loss is the sum of the outputs' feed-forward energies (backprop's summed loss);
fixed prediction and Z-IL give autograd's gradient of that summed loss; IL trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from predcode import ZIL, FixedPrediction, InferenceLearning, InputError
from predcode.batch import prepare_batch
from predcode.convert import convert
from predcode.inference import GradientDescent, StopRule
from predcode.rules import Backprop, IncrementalPC, ProximalInferenceLearning


class TwoHeads(nn.Module):
    """A shared trunk, a classification head (CE) and a regression head (SE)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk1, self.trunk2 = nn.Linear(6, 8), nn.Linear(8, 8)
        self.cls, self.reg = nn.Linear(8, 3), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.trunk2(torch.tanh(self.trunk1(x))))
        return self.cls(h), self.reg(h)


def two_heads(dtype=torch.float64):
    torch.manual_seed(0)
    model = TwoHeads().to(dtype)
    return model, convert(model, output_energy=["ce", "se"])


def data(n=7, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=dtype)
    labels = torch.randint(0, 3, (n,), generator=g)
    t = torch.randn(n, 2, generator=g, dtype=dtype)
    return x, labels, t


def summed_loss(model, x, labels, t):
    logits, reg = model(x)
    return F.cross_entropy(logits, labels) + 0.5 * ((reg - t) ** 2).sum(1).mean()


def test_graph_has_two_outputs():
    _, graph = two_heads()
    assert [graph.names[o] for o in graph.outputs] == ["cls", "reg"]
    assert [type(graph.slots[o].energy).__name__ for o in graph.outputs] == ["Categorical", "Gaussian"]


@pytest.mark.parametrize("rule", [FixedPrediction(), ZIL()], ids=["fixed-prediction", "zil"])
@pytest.mark.parametrize("form", ["tuple", "list", "dict"])
def test_exact_rules_match_autograd_of_the_summed_loss(rule, form, rule_grads, max_rel_error):
    model, graph = two_heads()
    x, labels, t = data()
    target = {"tuple": (labels, t), "list": [labels, t], "dict": {"reg": t, "cls": labels}}[form]
    want = torch.autograd.grad(summed_loss(model, x, labels, t), list(model.parameters()))
    assert max_rel_error(rule_grads(rule, graph, x, target), want) <= 1e-5


@pytest.mark.parametrize(
    "rule",
    [
        FixedPrediction(),
        ZIL(),
        Backprop(),
        InferenceLearning(GradientDescent(0.1), 5),
        InferenceLearning(GradientDescent(0.1), StopRule(5, grad_tol=1e-300)),
    ],
    ids=["fixed-prediction", "zil", "bp", "il-fused", "il-stepwise"],
)
def test_reported_loss_is_the_summed_feedforward_loss(rule):
    model, graph = two_heads()
    x, labels, t = data()
    stats = rule.gradients(graph, x, (labels, t))
    want = summed_loss(model, x, labels, t).detach()
    assert torch.allclose(stats.loss, want, rtol=1e-10, atol=0)
    logits, reg = model(x)
    assert isinstance(stats.prediction, tuple) and len(stats.prediction) == 2
    assert torch.allclose(stats.prediction[0], logits) and torch.allclose(stats.prediction[1], reg)


def test_backprop_rule_gives_autograd_of_the_summed_loss(rule_grads, max_rel_error):
    model, graph = two_heads()
    x, labels, t = data()
    want = torch.autograd.grad(summed_loss(model, x, labels, t), list(model.parameters()))
    assert max_rel_error(rule_grads(Backprop(), graph, x, (labels, t)), want) <= 1e-12


def test_il_clamps_every_output_and_fused_equals_stepwise():
    """Both outputs are clamped (their values are the targets at the relaxed state); the
    fused engine and the step-by-step path give the same gradients."""
    from predcode.inference import StopRule, relax

    model, graph = two_heads()
    x, labels, t = data()
    batch = prepare_batch(graph, x, (labels, t))
    assert sorted(batch.targets) == sorted(graph.outputs)
    rule = InferenceLearning(GradientDescent(0.1), 6)
    relaxed = relax(graph, batch.clamped(), graph.free_slots(batch.outputs), rule.solver, StopRule(max_steps=6))
    cls, reg = graph.outputs
    assert torch.equal(relaxed.values[cls], F.one_hot(labels, 3).double())
    assert torch.equal(relaxed.values[reg], t)
    grads = {}
    for name, stop in [("fused", 6), ("stepwise", StopRule(max_steps=6, grad_tol=1e-300))]:
        r = InferenceLearning(GradientDescent(0.1), stop)
        assert r.fused == (name == "fused")
        model.zero_grad(set_to_none=True)
        r.gradients(graph, x, (labels, t))
        grads[name] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["fused"], grads["stepwise"]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_il_trains_two_heads():
    model, graph = two_heads(torch.float32)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 6, generator=g)
    labels = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    t = torch.stack([x[:, 2] * x[:, 3], x[:, 4] - x[:, 5]], 1)
    rule = InferenceLearning(GradientDescent(0.1), 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [float(rule.step(graph, x, {"cls": labels, "reg": t}, opt).loss) for _ in range(150)]
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        assert float(summed_loss(model, x, labels, t)) < 0.5 * losses[0]


def test_training_scalars_of_two_heads_have_no_single_accuracy():
    """The trainer's per-step scalars of a two-output step: loss and energies, but no
    accuracy (the prediction is one tensor per output; reading its shape raised)."""
    from predcode.app.tracking import batch_scalars

    model, graph = two_heads()
    x, labels, t = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stats = InferenceLearning(GradientDescent(0.1), 4).step(graph, x, (labels, t), opt)
    assert isinstance(stats.prediction, tuple)
    scalars = batch_scalars(graph, stats, labels)
    assert "accuracy" not in scalars
    assert scalars["loss"] == float(stats.loss) and scalars["inference/steps"] == 4.0
    assert {"energy/node/cls", "energy/node/reg"} <= set(scalars)


def test_other_rules_accept_several_targets():
    model, graph = two_heads()
    x, labels, t = data()
    before = summed_loss(model, x, labels, t).item()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        IncrementalPC(GradientDescent(0.1), 4).step(graph, x, (labels, t), opt)
    assert summed_loss(model, x, labels, t).item() < before


def test_proximal_rule_accepts_several_targets():
    """Proximal IL needs Gaussian outputs: two SE heads."""
    torch.manual_seed(0)
    model = TwoHeads().double()
    graph = convert(model, output_energy="se")
    x, labels, t = data()
    y = F.one_hot(labels, 3).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stats = ProximalInferenceLearning(GradientDescent(0.1), 4).step(graph, x, [y, t], opt)
    with torch.no_grad():
        logits, reg = model(x)
    after = 0.5 * float(((logits - y) ** 2).sum(1).mean() + ((reg - t) ** 2).sum(1).mean())
    assert after < stats.loss.item()  # one step on the summed loss of both heads


def test_single_target_calls_are_unchanged(make_net, make_batch, bp_grads, rule_grads, max_rel_error):
    sizes = [4, 5, 3]
    model, graph = make_net(sizes, out="ce")
    x, y = make_batch(sizes, out="ce")
    want = bp_grads(model, x, y, "ce")
    for target in (y, (y,), [y], {graph.names[graph.output]: y}):
        assert max_rel_error(rule_grads(FixedPrediction(), graph, x, target), want) <= 1e-5
        stats = InferenceLearning(GradientDescent(0.1), 3).gradients(graph, x, target)
        assert isinstance(stats.prediction, torch.Tensor)


@pytest.mark.parametrize(
    "rule",
    [FixedPrediction(), ZIL(), Backprop(), InferenceLearning(GradientDescent(0.1), 3)],
    ids=["fixed-prediction", "zil", "bp", "il"],
)
def test_wrong_targets_give_errors_naming_the_outputs(rule):
    _, graph = two_heads()
    x, labels, t = data()
    with pytest.raises(InputError, match=r"2 outputs \('cls', 'reg'\).*one target tensor"):
        rule.gradients(graph, x, labels)
    with pytest.raises(InputError, match=r"2 output\(s\) \('cls', 'reg'\) but 3 targets"):
        rule.gradients(graph, x, (labels, t, t))
    with pytest.raises(InputError, match=r"'cls', 'reg'.*unknown key\(s\) \['class'\]"):
        rule.gradients(graph, x, {"class": labels, "reg": t})
    with pytest.raises(InputError, match=r"missing \['reg'\]"):
        rule.gradients(graph, x, {"cls": labels})
    with pytest.raises(InputError, match="target for 'reg' has shape"):
        rule.gradients(graph, x, (labels, t[:, :1]))

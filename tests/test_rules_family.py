"""The other credit-assignment rules: each one's defining property.

* feedback alignment sends errors down through its fixed matrices ``B``, not ``W^T``
  (with ``B = W^T`` it *is* backprop, in float64);
* direct feedback alignment's hidden update is ``(D_l e) ⊙ f'(a_l)`` times the input;
* difference target propagation's targets: with perfect inverses on an invertible linear
  net ``f_l(t_{l-1}) = t_l``; with any inverses, no output error means no displacement;
* equilibrium propagation's update tends to backprop's as the nudge goes to zero (O(beta)
  one-sided, O(beta^2) symmetric) and at beta = 1 equals inference learning;
* every rule lowers the loss of a small MLP on real MNIST images.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from predcode import PCGraph
from predcode.app.config import TrainConfig
from predcode.chain import as_chain
from predcode.exceptions import GraphError, OptionError
from predcode.inference import GradientDescent, StopRule
from predcode.models import mlp
from predcode.node import Node
from predcode.rules import (
    Backprop,
    DifferenceTargetPropagation,
    DirectFeedbackAlignment,
    EquilibriumPropagation,
    FeedbackAlignment,
    InferenceLearning,
)
from predcode.rules.fa import chain_pass

torch.set_num_threads(1)
SIZES = [6, 5, 4, 3]


def net(act_first: bool = False, out: str = "ce", act: str = "tanh", sizes=SIZES, seed: int = 0):
    torch.manual_seed(seed)
    model = mlp(sizes, act=act, output_energy=out, act_first=act_first).double()
    return model, PCGraph(model)


def batch(out: str = "ce", sizes=SIZES, n: int = 7):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, sizes[0], generator=g, dtype=torch.float64)
    y = (
        torch.randint(0, sizes[-1], (n,), generator=g)
        if out == "ce"
        else torch.randn(n, sizes[-1], generator=g, dtype=torch.float64)
    )
    return x, y


def grads(model, graph, rule, x, y):
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, x, y)
    return [p.grad.clone() for p in model.parameters()]


def max_diff(a, b) -> float:
    return max(float((u - v).detach().abs().max()) for u, v in zip(a, b))


# -- feedback alignment -----------------------------------------------------------------
@pytest.mark.parametrize("act_first", [False, True])
def test_fa_with_transposed_weights_is_backprop(act_first):
    model, graph = net(act_first)
    x, y = batch()
    fa = FeedbackAlignment()
    for B, layer in zip(fa.matrices(graph), as_chain(graph)):
        B.copy_(layer.weight.detach().T)
    assert max_diff(grads(model, graph, fa, x, y), grads(model, graph, Backprop(), x, y)) < 1e-14


def test_fa_uses_B_not_W():
    """The update equals the hand computation with B; changing B changes the hidden layers'
    updates (not the top's); it differs from backprop's, which uses W^T."""
    model, graph = net()
    x, y = batch()
    fa = FeedbackAlignment(seed=3)
    got = grads(model, graph, fa, x, y)
    B = fa.matrices(graph)
    W = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    b = [m.bias.detach() for m in model if isinstance(m, nn.Linear)]
    h1 = torch.tanh(x @ W[0].T + b[0])
    h2 = torch.tanh(h1 @ W[1].T + b[1])
    out = h2 @ W[2].T + b[2]
    e = (torch.softmax(out, -1) - torch.nn.functional.one_hot(y, 3)) / x.shape[0]
    d2 = (e @ B[2].T) * (1 - h2**2)
    d1 = (d2 @ B[1].T) * (1 - h1**2)
    want = [d1.T @ x, d1.sum(0), d2.T @ h1, d2.sum(0), e.T @ h2, e.sum(0)]
    assert max_diff(got, want) < 1e-14
    bp = grads(model, graph, Backprop(), x, y)
    assert max_diff(got[:4], bp[:4]) > 1e-3 and max_diff(got[4:], bp[4:]) < 1e-14
    B[1].mul_(-1.0)  # flip the feedback into layer 1 only
    flipped = grads(model, graph, fa, x, y)
    assert torch.allclose(flipped[0], -got[0]) and max_diff(flipped[2:], got[2:]) < 1e-15


def test_fa_matrices_are_fixed_and_seeded():
    model, graph = net()
    x, y = batch()
    fa = FeedbackAlignment(seed=5)
    before = [B.clone() for B in fa.matrices(graph)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        fa.step(graph, x, y, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, fa.matrices(graph)))
    assert all(torch.equal(a, b) for a, b in zip(before, FeedbackAlignment(seed=5).matrices(graph)))


# -- direct feedback alignment ----------------------------------------------------------
def test_dfa_hidden_update_by_hand():
    model, graph = net()
    x, y = batch()
    dfa = DirectFeedbackAlignment(seed=2)
    got = grads(model, graph, dfa, x, y)
    D = dfa.matrices(graph)
    W = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    b = [m.bias.detach() for m in model if isinstance(m, nn.Linear)]
    h1 = torch.tanh(x @ W[0].T + b[0])
    h2 = torch.tanh(h1 @ W[1].T + b[1])
    e = (torch.softmax(h2 @ W[2].T + b[2], -1) - torch.nn.functional.one_hot(y, 3)) / x.shape[0]
    d2 = (e @ D[2].T) * (1 - h2**2)  # B_2 e ⊙ f'(a_2)
    d1 = (e @ D[1].T) * (1 - h1**2)  # B_1 e ⊙ f'(a_1): no layer-to-layer pass
    want = [d1.T @ x, d1.sum(0), d2.T @ h1, d2.sum(0), e.T @ h2, e.sum(0)]
    assert max_diff(got, want) < 1e-14
    assert D[1].shape == (5, 3) and D[2].shape == (4, 3)


# -- difference target propagation ------------------------------------------------------
def test_dtp_perfect_inverse_targets_invert_the_layers():
    """Invertible linear net (square, identity activation) with exact inverses:
    t_{l-1} = f_l^{-1}(t_l), i.e. f_l(t_{l-1}) = t_l, for every hidden layer."""
    sizes = [4, 4, 4, 4, 3]
    model, graph = net(act="identity", out="se", sizes=sizes)
    x, y = batch("se", sizes)
    dtp = DifferenceTargetPropagation(target_lr=0.5, learn_inverses=False)
    layers = as_chain(graph)
    g = dtp.inverses(graph)
    with torch.no_grad():
        for k in range(1, len(layers) - 1):
            W, bias = layers[k].weight, layers[k].linear.bias
            inv = torch.linalg.inv(W)
            g[k].linear.weight.copy_(inv)
            g[k].linear.bias.copy_(-inv @ bias)
    p = chain_pass(graph, layers, x, y)
    t = dtp.targets(graph, p)
    assert sorted(t) == [1, 2, 3]
    assert float((t[3] - p.x[3]).abs().max()) > 1e-3  # the top target moved
    with torch.no_grad():
        for k in (1, 2):
            assert torch.allclose(layers[k].forward(t[k])[2], t[k + 1], atol=1e-12)


def test_dtp_difference_correction_cancels_inverse_error():
    """No output error -> every target equals the forward value, whatever the inverses."""
    model, graph = net(out="se", sizes=[6, 5, 5, 4, 3])
    x, _ = batch("se", [6, 5, 5, 4, 3])
    with torch.no_grad():
        y = model(x)
    dtp = DifferenceTargetPropagation(learn_inverses=False)
    layers = as_chain(graph)
    p = chain_pass(graph, layers, x, y)
    for node, target in dtp.targets(graph, p).items():
        assert torch.allclose(target, p.x[node], atol=1e-15)
    got = grads(model, graph, dtp, x, y)
    assert max(float(a.abs().max()) for a in got) < 1e-15


def test_dtp_inverses_learn_to_reconstruct():
    model, graph = net(sizes=[6, 8, 8, 8, 3])
    x, y = batch(sizes=[6, 8, 8, 8, 3], n=32)
    dtp = DifferenceTargetPropagation(noise=0.0, inverse_lr=1e-2)
    p = chain_pass(graph, as_chain(graph), x, y)
    dtp.inverses(graph)
    first = float(dtp.inverse_loss(p).detach())
    for _ in range(100):
        dtp.inverse_step(p)
    assert float(dtp.inverse_loss(p).detach()) < 0.5 * first


# -- equilibrium propagation ------------------------------------------------------------
@pytest.mark.parametrize("symmetric,order", [(False, 1), (True, 2)])
def test_ep_tends_to_backprop(symmetric, order):
    model, graph = net()
    x, y = batch()
    bp = grads(model, graph, Backprop(), x, y)
    errors = []
    for beta in (0.1, 0.01, 0.001):
        ep = EquilibriumPropagation(beta, GradientDescent(0.3), 300, symmetric=symmetric)
        errors.append(max_diff(grads(model, graph, ep, x, y), bp))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < (1e-3 if order == 1 else 1e-6)
    # the order: the error shrinks ~10x (one-sided) or ~100x (symmetric) per 10x smaller beta
    assert errors[1] / errors[2] > (8 if order == 1 else 80)


def test_ep_at_beta_one_is_inference_learning():
    model, graph = net(out="se")
    x, y = batch("se")
    il = InferenceLearning(GradientDescent(0.1), StopRule(max_steps=15))
    ep = EquilibriumPropagation(1.0, GradientDescent(0.1), 15)
    assert max_diff(grads(model, graph, ep, x, y), grads(model, graph, il, x, y)) < 1e-13


def test_ep_free_phase_is_the_feedforward_pass():
    """The free phase (no nudge) is the energy's minimum: relaxing from it moves nothing."""
    from predcode.inference import relax

    model, graph = net()
    x, _ = batch()
    with torch.no_grad():
        values = graph.feedforward([x])
    free = [s.index for s in graph.slots if not s.is_input]
    relaxed = relax(graph, values, free, GradientDescent(0.3), StopRule(max_steps=10))
    assert max_diff(relaxed.values, values) < 1e-15


# -- errors and the CLI -----------------------------------------------------------------
class Skip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.h1, self.h2, self.out = Node(), Node(), Node()

    def forward(self, x):
        h1 = self.h1(torch.tanh(self.l1(x)))
        h2 = self.h2(torch.tanh(self.l2(h1)) + h1)
        return self.out(self.l3(h2))


@pytest.mark.parametrize("rule", [FeedbackAlignment(), DirectFeedbackAlignment(), DifferenceTargetPropagation()])
def test_non_chain_graph_is_refused_by_name(rule):
    graph = PCGraph(Skip())
    with pytest.raises(GraphError, match=rule.name):
        rule.gradients(graph, torch.randn(3, 4), torch.randn(3, 3))


def test_ep_runs_on_a_skip_graph_and_checks_beta():
    graph = PCGraph(Skip())
    EquilibriumPropagation(0.1).gradients(graph, torch.randn(3, 4), torch.randn(3, 3))
    assert graph.model.l1.weight.grad is not None
    with pytest.raises(OptionError, match="beta"):
        EquilibriumPropagation(0.0)
    with pytest.raises(OptionError, match="noise"):
        DifferenceTargetPropagation(noise=-1.0)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("fa", FeedbackAlignment),
        ("dfa", DirectFeedbackAlignment),
        ("dtp", DifferenceTargetPropagation),
        ("ep", EquilibriumPropagation),
    ],
)
def test_train_config_builds_the_rules(name, kind):
    from predcode.app.train import build_rule

    assert isinstance(build_rule(TrainConfig(rule=name).validate()), kind)


# -- every rule learns on real data -----------------------------------------------------
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa", "dtp", "ep"])
def test_rule_lowers_the_loss_on_mnist(rule):
    from predcode.experiments import common
    from predcode.experiments.credit_assignment import make_rule

    data = common.load("mnist", "train")
    x, y = data.x[:512], data.y[:512]
    torch.manual_seed(0)
    model = mlp([784, 32, 32, 10], act="tanh", output_energy="ce")
    graph = PCGraph(model)
    learner = make_rule(rule, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = nn.CrossEntropyLoss()
    with torch.no_grad():
        before = float(loss(model(x), y))
    for step in range(16):
        k = (step % 4) * 128
        learner.step(graph, x[k : k + 128], y[k : k + 128], opt)
    with torch.no_grad():
        after = float(loss(model(x), y))
    assert after < 0.8 * before, (before, after)


def test_dtp_inverses_are_checkpointed(tmp_path):
    """The inverses are rule state: saved with the run's checkpoint and restored exactly."""
    from predcode.app import checkpoint

    model, graph = net(sizes=[6, 8, 8, 8, 3])
    x, y = batch(sizes=[6, 8, 8, 8, 3], n=16)
    dtp = DifferenceTargetPropagation(inverse_lr=1e-2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        dtp.step(graph, x, y, opt)
    path = checkpoint.save(tmp_path / "c.safetensors", {"rule": dtp.state_dict()})
    other = DifferenceTargetPropagation(inverse_lr=1e-2, seed=9)
    other.load_state_dict(graph, checkpoint.load(path)["rule"])
    assert max_diff(list(other.inverses(graph).parameters()), list(dtp.inverses(graph).parameters())) == 0.0
    assert max_diff(grads(model, graph, other, x, y), grads(model, graph, dtp, x, y)) == 0.0

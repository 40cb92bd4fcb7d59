"""The defining property of each biologically motivated variant.

* learned feedback: the state update uses B, not W^T (a change of W that only its transpose
  would see changes nothing); with B = W^T it is standard PC (float64, relaxation and
  gradients); B's update is the transposed Hebbian product of its own two activities; the
  difference W^T - B only decays (Kolen-Pollack); the angle falls on a small problem;
  non-chains are refused with a clear error;
* continuous operation: every node and every weight changes at every tick, from one
  evaluation of the energy, and value nodes carry over between examples (no reset);
* error neurons: the circuit's fixed point is the energy minimum and the energy form's
  fixed point; its trajectory approaches the gradient flow as tau_e -> 0.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from predcode import GradientDescent, InferenceLearning, Node, PCGraph, StopRule, relax
from predcode.bio.circuit import ErrorNeuronCircuit
from predcode.bio.stream import ContinuousPC, run_stream, stream_positions
from predcode.exceptions import GraphError, OptionError
from predcode.models import mlp
from predcode.rules import LearnedFeedback

F64 = torch.float64


def _net(act_first: bool = False, sizes=(6, 5, 4, 3), seed: int = 0):
    torch.manual_seed(seed)
    model = mlp(list(sizes), act="tanh", act_first=act_first).to(F64)
    return model, PCGraph(model)


def _data(sizes=(6, 5, 4, 3), batch: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, sizes[0], generator=g, dtype=F64), torch.randn(batch, sizes[-1], generator=g, dtype=F64))


# -- learned feedback ------------------------------------------------------------------
@pytest.mark.parametrize("act_first", [False, True])
def test_feedback_equal_to_transpose_is_standard_pc(act_first):
    model, graph = _net(act_first)
    x, y = _data()
    rule = LearnedFeedback(graph, GradientDescent(0.1), 15, init="transpose")
    values, _, _ = rule.relax(graph, x, y)
    start = graph.feedforward([x])
    start[-1] = y
    ref = relax(graph, start, [1, 2], GradientDescent(0.1), StopRule(15))
    for a, b in zip(values, ref.values):
        assert torch.allclose(a, b, rtol=0, atol=1e-13)
    model.zero_grad()
    rule.gradients(graph, x, y)
    mine = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    InferenceLearning(GradientDescent(0.1), 15).gradients(graph, x, y)
    for a, p in zip(mine, model.parameters()):
        assert torch.allclose(a, p.grad, rtol=0, atol=1e-13)


def test_state_update_uses_B_not_W_transpose():
    """Change the top weights by u v^T with v orthogonal to the batch's activities below:
    the forward pass (W a) is unchanged, only W^T e sees it.  Learned feedback's first
    state step does not move; standard PC's does."""
    model, graph = _net(act_first=False, sizes=(6, 5, 8, 3))
    x, y = _data((6, 5, 8, 3), batch=3)
    rule = LearnedFeedback(graph, GradientDescent(0.1), 1, seed=3)
    a = graph.feedforward([x])[2].detach()  # input of the top Linear (act-last form: a = x_2)
    v = torch.randn(8, dtype=F64)
    q, _ = torch.linalg.qr(a.T)  # [8, 3]: span of the batch's activities
    v = v - q @ (q.T @ v)
    assert float((a @ v).abs().max()) < 1e-12
    u = torch.randn(3, dtype=F64)
    before, _, _ = rule.relax(graph, x, y)
    il = relax(graph, [*graph.feedforward([x])[:3], y], [1, 2], GradientDescent(0.1), StopRule(1))
    with torch.no_grad():
        model[6].weight += torch.outer(u, v)
    after, _, _ = rule.relax(graph, x, y)
    il_after = relax(graph, [*graph.feedforward([x])[:3], y], [1, 2], GradientDescent(0.1), StopRule(1))
    assert torch.allclose(before[2], after[2], rtol=0, atol=1e-12)  # B's rule: no change
    assert float((il.values[2] - il_after.values[2]).abs().max()) > 1e-3  # W^T's rule: moves
    # and B is what the update uses: a different B gives a different step
    with torch.no_grad():
        rule.feedback.B[-1].mul_(2.0)
    doubled, _, _ = rule.relax(graph, x, y)
    assert float((doubled[2] - after[2]).abs().max()) > 1e-3


def test_feedback_update_is_local_and_transposed_hebbian():
    model, graph = _net()
    x, y = _data()
    rule = LearnedFeedback(graph, GradientDescent(0.1), 10, decay=0.0)
    model.zero_grad()
    rule.gradients(graph, x, y)
    values, _, _ = rule.relax(graph, x, y)
    for layer, b in zip(rule.layers[1:], rule.feedback.B):
        a, h, mu = layer.forward(values[layer.parent])  # the synapse's presynaptic activity
        delta = (1 - mu.pow(2)) * (values[layer.child] - mu) if layer.post else values[layer.child] - mu
        assert torch.allclose(b.grad, -(a.T @ delta) / x.shape[0], rtol=1e-10, atol=1e-13)
        assert torch.allclose(b.grad, layer.weight.grad.T, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_difference_between_W_transpose_and_B_only_decays(optimizer):
    """Kolen-Pollack: equal updates, equal decay => W^T - B shrinks by (1 - lr*decay) per step."""
    model, graph = _net()
    rule = LearnedFeedback(graph, GradientDescent(0.1), 5, seed=1)
    lr, wd = 0.05, 0.5
    params = [*model.parameters(), *rule.parameters()]
    opt = (
        torch.optim.SGD(params, lr=lr, weight_decay=wd)
        if optimizer == "sgd"
        else torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    )
    diff0 = [l.weight.detach().T - b.detach() for l, b in zip(rule.layers[1:], rule.feedback.B)]
    steps = 6
    for s in range(steps):
        rule.step(graph, *_data(seed=10 + s), opt)
    for d0, layer, b in zip(diff0, rule.layers[1:], rule.feedback.B):
        assert torch.allclose(layer.weight.detach().T - b.detach(), d0 * (1 - lr * wd) ** steps, rtol=1e-9, atol=1e-12)


def test_angle_between_feedback_and_forward_weights_falls():
    torch.manual_seed(0)
    model = mlp([8, 16, 16, 4], act="tanh").to(F64)
    graph = PCGraph(model)
    teacher = torch.randn(8, 4, dtype=F64)
    rule = LearnedFeedback(graph, GradientDescent(0.2), 10, seed=5, decay=0.05)
    opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=0.1)
    start = rule.angles()
    assert all(a > 60 for a in start)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = torch.randn(16, 8, generator=g, dtype=F64)
        rule.step(graph, x, torch.tanh(x @ teacher), opt)
    end = rule.angles()
    assert all(e < s - 20 for s, e in zip(start, end)), (start, end)


def test_feedback_rule_refuses_what_it_cannot_do():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.n1, self.n2 = nn.Linear(3, 3), nn.Linear(3, 2), Node(), Node()

        def forward(self, x):
            h = self.n1(self.a(x))
            return self.n2(self.b(h + x))

    with pytest.raises(GraphError, match="n2.*predicted from"):
        LearnedFeedback(PCGraph(Skip()))
    two = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2), Node())
    with pytest.raises(GraphError, match="two nn.Linear"):
        LearnedFeedback(PCGraph(two))
    model, graph = _net()
    rule = LearnedFeedback(graph)
    with pytest.raises(OptionError, match="optimizer does not hold the feedback"):
        rule.step(graph, *_data(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(GraphError, match="another graph"):
        rule.gradients(_net()[1], *_data())
    with pytest.raises(OptionError, match="init"):
        LearnedFeedback(graph, init="ones")


def test_zero_init_feedback_starts_at_zero_and_learns():
    """init="zero": B_0 = 0, then B accumulates W^T's updates -- the top one at once, the
    lower ones as the errors reach their layers through the growing B above."""
    model, graph = _net()
    rule = LearnedFeedback(graph, GradientDescent(0.1), 10, init="zero")
    assert all(float(b.abs().max()) == 0.0 for b in rule.parameters())
    opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=0.1)
    for _ in range(3):
        rule.step(graph, *_data(), opt)
    assert all(float(b.abs().max()) > 0.0 for b in rule.parameters())
    assert all(a < 90.0 for a in rule.angles())


# -- continuous operation --------------------------------------------------------------
def test_every_node_and_weight_moves_every_tick_from_one_energy():
    model, graph = _net()
    x, y = _data()
    net = ContinuousPC(graph, torch.optim.SGD(model.parameters(), lr=0.05), state_lr=0.1)
    for _ in range(3):  # the first tick starts the nodes at the feed-forward pass; errors
        net.tick(x, y)  # then reach one layer further down per tick
    for _ in range(3):
        xs = [v.clone() for v in net.values]
        ws = [p.detach().clone() for p in model.parameters()]
        # the expected tick: both gradients at the same (x(t), theta(t))
        with torch.enable_grad():
            leaves = [xs[0], xs[1].requires_grad_(), xs[2].requires_grad_(), y]
            e = graph.energy(leaves) * x.shape[0]  # summed over streams
            gx = torch.autograd.grad(e, [leaves[1], leaves[2]], retain_graph=True)
            gw = torch.autograd.grad(e, list(model.parameters()))
        net.tick(x, y)
        for i, g in zip((1, 2), gx):
            assert torch.allclose(net.values[i], xs[i].detach() - 0.1 * g, rtol=0, atol=1e-13)
            assert float((net.values[i] - xs[i].detach()).abs().max()) > 0
        for p, w, g in zip(model.parameters(), ws, gw):
            assert torch.allclose(p.detach(), w - 0.05 * g / x.shape[0], rtol=0, atol=1e-13)
            assert float((p.detach() - w).abs().max()) > 0


def test_value_nodes_carry_over_when_the_example_changes():
    model, graph = _net()
    x, y = _data()
    x2, y2 = _data(seed=7)
    net = ContinuousPC(graph, torch.optim.SGD(model.parameters(), lr=0.0), state_lr=0.1)
    for _ in range(5):
        net.tick(x, y)
    carried = [v.clone() for v in net.values]
    net.tick(x2, y2)  # a new example: no reset to its feed-forward values
    with torch.enable_grad():
        leaves = [x2, carried[1].requires_grad_(), carried[2].requires_grad_(), y2]
        g = torch.autograd.grad(graph.energy(leaves) * x.shape[0], leaves[1:3])
    assert torch.allclose(net.values[1], carried[1].detach() - 0.1 * g[0], atol=1e-13, rtol=0)
    assert not torch.allclose(net.values[1], graph.feedforward([x2])[1], atol=1e-3)


def test_streams_switch_examples_at_staggered_ticks():
    pos = stream_positions(8, 4, 4)
    assert pos[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pos[:, 1].tolist() == [0, 0, 0, 1, 1, 1, 1, 2]
    switches = pos[1:] != pos[:-1]
    assert switches.sum(1).max() == 1  # never more than one stream changes at a tick
    model, graph = _net()
    images, targets = _data(batch=12)
    seen = []
    net = ContinuousPC(graph, torch.optim.SGD(model.parameters(), lr=0.01), state_lr=0.1)
    ticks = run_stream(net, images, targets, 3, streams=4, on_tick=lambda t, s: seen.append(t))
    assert ticks == 9 and seen == list(range(9)) and net.ticks == 9


# -- error neurons -----------------------------------------------------------------------
@pytest.mark.parametrize("act_first", [False, True])
def test_circuit_fixed_point_is_the_energy_minimum(act_first):
    model, graph = _net(act_first)
    x, y = _data()
    circuit = ErrorNeuronCircuit(graph, tau_x=1.0, tau_e=0.1)
    state, traj = circuit.simulate(x, y, dt=0.05, duration=300.0, tol=1e-12)
    assert traj.times[-1] < 300.0  # settled
    start = graph.feedforward([x])
    start[-1] = y
    ref = relax(graph, start, [1, 2], GradientDescent(0.1), StopRule(100000, grad_tol=1e-13))
    for a, b in zip(state.values, ref.values):
        assert float((a - b).abs().max()) < 1e-9
    for i in (1, 2, 3):  # error units hold the prediction errors pi (x - mu)
        e = graph.slots[i].energy.error(ref.values[i], ref.predictions[i])
        assert float((state.errors[i] - e).abs().max()) < 1e-9
    with torch.enable_grad():
        leaves = [v.clone().requires_grad_(i in (1, 2)) for i, v in enumerate(state.values)]
        grads = torch.autograd.grad(graph.energy(leaves), [leaves[1], leaves[2]])
    assert max(float(g.abs().max()) for g in grads) < 1e-10


def test_circuit_trajectory_tends_to_gradient_flow_as_tau_e_vanishes():
    model, graph = _net()
    x, y = _data()
    gaps = []
    for tau in (0.2, 0.02):
        dt = tau / 4
        steps = int(round(2.0 / dt))
        _, traj = ErrorNeuronCircuit(graph, tau_e=tau).simulate(x, y, dt=dt, duration=2.0)
        start = graph.feedforward([x])
        start[-1] = y
        flow = [[v.clone() for v in start]]
        relax(
            graph,
            start,
            [1, 2],
            GradientDescent(dt),
            StopRule(steps),
            on_step=lambda t, v, flow=flow: flow.append([u.clone() for u in v]),
        )
        gaps.append(max(float((a[i] - b[i]).abs().max()) for a, b in zip(traj.values, flow) for i in (1, 2)))
    assert gaps[1] < gaps[0] / 5, gaps
    # tau_e = 0: error units are instantaneous and the circuit is the gradient flow exactly
    _, traj = ErrorNeuronCircuit(graph, tau_e=0.0).simulate(x, y, dt=0.05, duration=1.0)
    start = graph.feedforward([x])
    start[-1] = y
    ref = relax(graph, start, [1, 2], GradientDescent(0.05), StopRule(20))
    assert torch.allclose(traj.values[-1][2], ref.values[2], rtol=0, atol=1e-13)


def test_circuit_needs_gaussian_nodes():
    torch.manual_seed(0)
    graph = PCGraph(mlp([4, 3, 2], act="tanh", output_energy="ce"))
    with pytest.raises(GraphError, match="Gaussian"):
        ErrorNeuronCircuit(graph)

"""Relaxation: energy descent per solver, stop rules, the trace, divergence detection,
graph construction from traced models, and incremental PC's training step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import predcode
from predcode import (
    SGD,
    DivergenceError,
    Euler,
    GradientDescent,
    GraphError,
    Heun,
    IncrementalPC,
    InferenceLearning,
    Node,
    PCGraph,
    StopRule,
    relax,
)
from predcode.inference import make_solver

ACTS = ["tanh", "relu", "gelu", "sigmoid"]
NETS = [([4, 9, 7, 3], 0), ([6, 8, 8, 6, 2], 1), ([3, 10, 4], 2)]


def clamped_start(graph: PCGraph, x, y):
    """Feed-forward values with the output clamped to the target; the hidden nodes free."""
    values = graph.feedforward([x])
    out = graph.output
    if not y.is_floating_point():
        y = nn.functional.one_hot(y, values[out].shape[-1]).to(values[out].dtype)
    values[out] = y
    free = [s.index for s in graph.slots if not s.is_input and s.index != out]
    return values, free


def assert_nonincreasing(energy: torch.Tensor) -> None:
    diffs = energy[1:] - energy[:-1]
    slack = 1e-12 * float(energy.abs().max())
    assert float(diffs.max()) <= slack, f"energy rose by {float(diffs.max()):.3g}: {energy.tolist()}"


# -- energy descent --------------------------------------------------------------------
@pytest.mark.parametrize("solver", [GradientDescent(0.05), Euler(0.05), Heun(0.05)], ids=["gd", "euler", "heun"])
@pytest.mark.parametrize("out", ["se", "ce"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("sizes,seed", NETS, ids=["3layer", "4layer", "2layer"])
def test_energy_never_increases_with_small_step(sizes, seed, act, out, solver, make_net, make_batch):
    _, graph = make_net(sizes, act=act, out=out, seed=seed)
    x, y = make_batch(sizes, out=out, batch=8, seed=seed + 100)
    values, free = clamped_start(graph, x, y)
    result = relax(graph, values, free, solver, StopRule(max_steps=60))
    energy = result.trace.energy
    assert energy.shape == (61,)
    assert_nonincreasing(energy)
    assert float(energy[-1]) < float(energy[0])  # and it actually moved


@pytest.mark.parametrize("solver", [GradientDescent(3.0), Heun(3.0)], ids=["gd", "heun"])
def test_too_large_step_raises_energy_or_diverges(solver, make_net, make_batch):
    """The descent test above can fail: with a step far beyond the curvature the energy
    goes up (or blows up)."""
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes, act="tanh")
    x, y = make_batch(sizes, batch=8)
    values, free = clamped_start(graph, x, y)
    try:
        energy = relax(graph, values, free, solver, StopRule(max_steps=30)).trace.energy
    except DivergenceError:
        return
    assert float((energy[1:] - energy[:-1]).max()) > 0


def test_sgd_solver_descends_and_resets_between_relaxations(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes, act="gelu")
    x, y = make_batch(sizes)
    values, free = clamped_start(graph, x, y)
    solver = SGD(0.02, momentum=0.5)
    first = relax(graph, values, free, solver, StopRule(max_steps=15)).trace.energy
    second = relax(graph, values, free, solver, StopRule(max_steps=15)).trace.energy
    assert float(first[-1]) < float(first[0])
    # the momentum buffer is re-created per relaxation, so a repeat is identical
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_trace_records_every_step_per_node(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes)
    x, y = make_batch(sizes)
    values, free = clamped_start(graph, x, y)
    result = relax(graph, values, free, GradientDescent(0.1), StopRule(max_steps=7))
    trace = result.trace
    assert trace.steps == 7
    assert trace.node_energies.shape == (8, len(graph.slots))
    assert trace.grad_norms.shape == (7,)
    assert trace.names == graph.names
    # inputs carry no energy; at the feed-forward start only the clamped output does
    assert float(trace.node_energies[0, graph.inputs[0]]) == 0.0
    hidden = [i for i in free]
    assert float(trace.node_energies[0, hidden].abs().max()) == 0.0
    assert float(trace.node_energies[0, graph.output]) > 0.0
    # the final row is the energy of the returned values
    torch.testing.assert_close(trace.energy[-1], graph.energy(result.values))
    # the first row is the energy of the starting values
    torch.testing.assert_close(trace.energy[0], graph.energy(values))


def test_gradient_descent_step_is_minus_rate_times_per_sample_gradient(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes, act="sigmoid")
    x, y = make_batch(sizes, batch=3)
    values, free = clamped_start(graph, x, y)
    # move off the feed-forward point so every node has an error
    values = [v if i not in free else v + 0.1 * torch.randn_like(v) for i, v in enumerate(values)]
    states = [values[i].clone().requires_grad_(True) for i in free]
    full = list(values)
    for i, s in zip(free, states):
        full[i] = s
    per_sample_total = graph.energy(full) * x.shape[0]  # energy summed over the batch
    want = torch.autograd.grad(per_sample_total, states)
    result = relax(graph, values, free, GradientDescent(0.3), StopRule(max_steps=1))
    for i, g in zip(free, want):
        torch.testing.assert_close(result.values[i], values[i] - 0.3 * g)


def per_sample_grads(graph: PCGraph, values, free):
    states = [values[i].clone().requires_grad_(True) for i in free]
    full = list(values)
    for i, s in zip(free, states):
        full[i] = s
    total = graph.energy(full) * values[0].shape[0]
    return [g.detach() for g in torch.autograd.grad(total, states)]


def test_heun_step_averages_gradients_at_both_ends(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes, act="tanh")
    x, y = make_batch(sizes, batch=3)
    values, free = clamped_start(graph, x, y)
    values = [v if i not in free else v + 0.2 * torch.randn_like(v) for i, v in enumerate(values)]
    dt = 0.3
    g1 = per_sample_grads(graph, values, free)
    trial = list(values)
    for i, g in zip(free, g1):
        trial[i] = values[i] - dt * g
    g2 = per_sample_grads(graph, trial, free)
    result = relax(graph, values, free, Heun(dt), StopRule(max_steps=1))
    for i, a, b in zip(free, g1, g2):
        torch.testing.assert_close(result.values[i], values[i] - 0.5 * dt * (a + b))


def test_stop_rule_grad_tol_ends_early(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes)
    x, y = make_batch(sizes)
    values, free = clamped_start(graph, x, y)
    result = relax(graph, values, free, GradientDescent(0.2), StopRule(max_steps=5000, grad_tol=1e-6))
    assert 0 < result.trace.steps < 5000
    assert float(result.trace.grad_norms[-1]) <= 1e-6
    result = relax(graph, values, free, GradientDescent(0.2), StopRule(max_steps=5000, energy_rtol=1e-8))
    assert 0 < result.trace.steps < 5000


def test_max_steps_zero_keeps_start(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes)
    x, y = make_batch(sizes)
    values, free = clamped_start(graph, x, y)
    result = relax(graph, values, free, GradientDescent(0.2), StopRule(max_steps=0))
    assert result.trace.steps == 0
    for a, b in zip(result.values, values):
        torch.testing.assert_close(a, b)


def test_partially_clamped_node_keeps_masked_units(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes)
    x, y = make_batch(sizes)
    values, free = clamped_start(graph, x, y)
    out = graph.output
    mask = torch.zeros_like(values[out], dtype=torch.bool)
    mask[:, 0] = True
    result = relax(graph, values, free + [out], GradientDescent(0.1), StopRule(max_steps=20), masks={out: mask})
    torch.testing.assert_close(result.values[out][:, 0], values[out][:, 0], rtol=0, atol=0)
    assert float((result.values[out][:, 1:] - values[out][:, 1:]).abs().max()) > 0
    assert_nonincreasing(result.trace.energy)


def test_free_leaf_sits_at_its_mode(make_net, make_batch):
    """An unclamped output (a free leaf) is set to its energy's mode: zero energy there."""
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes, out="ce")
    x, _ = make_batch(sizes, out="ce")
    values = graph.feedforward([x])
    free = [s.index for s in graph.slots if not s.is_input]
    result = relax(graph, values, free, GradientDescent(0.1), StopRule(max_steps=5))
    assert float(result.trace.node_energies[:, graph.output].abs().max()) < 1e-12
    torch.testing.assert_close(result.values[graph.output].sum(-1), torch.ones(x.shape[0], dtype=x.dtype))


def test_divergence_error_names_step_and_node(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes, dtype=torch.float32)
    x, y = make_batch(sizes, dtype=torch.float32)
    values, free = clamped_start(graph, x, y)
    with pytest.raises(DivergenceError) as info:
        relax(graph, values, free, GradientDescent(1e4), StopRule(max_steps=30))
    err = info.value
    assert isinstance(err.step, int) and err.step >= 1
    assert err.node in graph.names and err.node not in [graph.names[i] for i in graph.inputs]
    assert f"step {err.step}" in str(err) and f"'{err.node}'" in str(err)


def test_divergence_factor_catches_finite_blowup(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes)
    x, y = make_batch(sizes)
    values, free = clamped_start(graph, x, y)
    with pytest.raises(DivergenceError, match="above"):
        relax(graph, values, free, GradientDescent(3.0), StopRule(max_steps=30, divergence_factor=2.0))


def test_make_solver_names():
    assert isinstance(make_solver("gd", 0.1), GradientDescent)
    assert isinstance(make_solver("euler", 0.1), Euler)
    assert isinstance(make_solver("heun", 0.1), Heun)
    sgd = make_solver("sgd", 0.1, momentum=0.9)
    assert isinstance(sgd, predcode.inference.SGD) and sgd.momentum == 0.9


@pytest.mark.parametrize("momentum", [0.0, 0.65])
def test_functional_sgd_equals_torch_optim_sgd(make_net, make_batch, momentum):
    """The compilable momentum solver gives torch.optim.SGD's numbers."""
    sizes = [4, 9, 7, 3]
    _, graph = make_net(sizes)
    x, y = make_batch(sizes)
    values, free = clamped_start(graph, x, y)
    stop = StopRule(max_steps=12)
    ours = relax(graph, values, free, make_solver("sgd", 0.05, momentum), stop)
    torch_sgd = predcode.OptimizerSolver(torch.optim.SGD, lr=0.05, momentum=momentum)
    theirs = relax(graph, values, free, torch_sgd, stop)
    for i in free:
        torch.testing.assert_close(ours.values[i], theirs.values[i])
    torch.testing.assert_close(ours.trace.node_energies, theirs.trace.node_energies)


# -- graph construction ------------------------------------------------------------------
class UnrolledRNN(nn.Module):
    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.inp, self.rec, self.read = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 2)
        self.h, self.out = Node(), Node()

    def forward(self, x):
        h = self.h(torch.tanh(self.inp(x)))
        for _ in range(self.steps):
            h = self.h(torch.tanh(self.rec(h) + self.inp(x)))
        return self.out(self.read(h))


def test_graph_of_mlp(make_net):
    model, graph = make_net([4, 9, 7, 3], act="relu", out="ce")
    assert graph.names == ["input", "2", "5", "7"]
    assert graph.inputs == [0] and graph.outputs == [3] and graph.output == 3
    assert [s.parents for s in graph.slots] == [(), (0,), (1,), (2,)]
    assert [s.children for s in graph.slots] == [[1], [2], [3], []]
    assert isinstance(graph.slots[3].energy, predcode.Categorical)
    x = torch.randn(5, 4, dtype=torch.float64)
    values, preds = graph.forward_pass([x])
    torch.testing.assert_close(preds[3], model(x))
    torch.testing.assert_close(values[3], torch.softmax(model(x), -1))


def test_loop_over_same_node_gives_one_slot_per_call():
    torch.manual_seed(0)
    model = UnrolledRNN(steps=3).double()
    graph = PCGraph(model)
    assert graph.names == ["x", "h", "h:1", "h:2", "h:3", "out"]
    parents = {graph.names[s.index]: [graph.names[p] for p in s.parents] for s in graph.slots}
    assert parents["h"] == ["x"]
    assert parents["h:1"] == ["x", "h"] and parents["h:3"] == ["x", "h:2"]
    assert parents["out"] == ["h:3"]
    assert graph.slots[graph.index("h:2")].energy is model.h.energy  # shared energy module
    x = torch.randn(4, 3, dtype=torch.float64)
    values, preds = graph.forward_pass([x])
    torch.testing.assert_close(preds[graph.index("out")], model(x))
    assert graph.depth_to_outputs()[graph.index("h")] == [4]


def test_model_without_node_is_rejected():
    with pytest.raises(GraphError, match="has no Node"):
        PCGraph(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))


def test_output_not_a_node_is_rejected():
    model = nn.Sequential(nn.Linear(3, 4), Node(), nn.Linear(4, 2))
    with pytest.raises(GraphError, match="output of the model must be the output of a Node"):
        PCGraph(model)


def test_categorical_node_with_children_is_rejected():
    model = nn.Sequential(nn.Linear(3, 4), Node("ce"), nn.Linear(4, 2), Node())
    with pytest.raises(GraphError, match="Categorical energy and feeds other nodes"):
        PCGraph(model)


def test_untraceable_model_names_torch_fx():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = nn.Linear(3, 2), Node()

        def forward(self, x):
            if x.sum() > 0:
                x = -x
            return self.out(self.lin(x))

    with pytest.raises(GraphError, match=r"torch\.fx"):
        PCGraph(DataDependent())


def test_unknown_node_name_lists_nodes(make_net):
    _, graph = make_net([4, 9, 3])
    with pytest.raises(GraphError, match=r"no node named 'nope'.*'input'"):
        graph.index("nope")


# -- incremental PC --------------------------------------------------------------------
class CountingSGD(torch.optim.SGD):
    """SGD that counts its steps and whether each one moved the weights."""

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.steps = 0
        self.moved = []

    def step(self, closure=None):
        before = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        out = super().step(closure)
        after = [p.detach() for g in self.param_groups for p in g["params"]]
        self.steps += 1
        self.moved.append(any(not torch.equal(a, b) for a, b in zip(before, after)))
        return out


@pytest.mark.parametrize("T", [1, 4, 9])
def test_ipc_updates_weights_every_inference_step(T, make_net, make_batch):
    sizes = [4, 9, 7, 3]
    model, graph = make_net(sizes)
    x, y = make_batch(sizes)
    opt = CountingSGD(model.parameters(), lr=0.01)
    IncrementalPC(GradientDescent(0.1), T).step(graph, x, y, opt)
    assert opt.steps == T
    assert all(opt.moved)
    IncrementalPC(GradientDescent(0.1), T).step(graph, x, y, opt)
    assert opt.steps == 2 * T


def test_il_updates_weights_once_per_batch(make_net, make_batch):
    sizes = [4, 9, 7, 3]
    model, graph = make_net(sizes)
    x, y = make_batch(sizes)
    opt = CountingSGD(model.parameters(), lr=0.01)
    InferenceLearning(GradientDescent(0.1), 9).step(graph, x, y, opt)
    assert opt.steps == 1 and opt.moved == [True]


@pytest.mark.parametrize("out", ["se", "ce"])
def test_ipc_reduces_loss_on_fixed_batch(out, make_net, make_batch):
    sizes = [4, 9, 7, 3]
    model, graph = make_net(sizes, act="tanh", out=out)
    x, y = make_batch(sizes, out=out, batch=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rule = IncrementalPC(GradientDescent(0.1), 5)
    losses = [float(rule.step(graph, x, y, opt).loss) for _ in range(15)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(math.isfinite(v) for v in losses)


def test_ipc_has_no_separate_gradients(make_net, make_batch):
    sizes = [4, 9, 3]
    _, graph = make_net(sizes)
    x, y = make_batch(sizes)
    with pytest.raises(TypeError, match="step"):
        IncrementalPC().gradients(graph, x, y)


def test_ipc_and_il_agree_for_one_step_without_weight_motion(make_net, make_batch):
    """With a zero learning rate iPC's states follow exactly IL's relaxation."""
    sizes = [4, 9, 7, 3]
    model, graph = make_net(sizes)
    x, y = make_batch(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ipc = IncrementalPC(GradientDescent(0.1), 6).step(graph, x, y, opt)
    il = InferenceLearning(GradientDescent(0.1), 6).gradients(graph, x, y)
    torch.testing.assert_close(ipc.trace.energy, il.trace.energy)


def test_compiled_relax_follows_a_changed_precision():
    """``relax(compile=True)`` traced with unit precisions is not reused once a precision
    has been written in place."""
    from predcode.batch import prepare_batch
    from predcode.models import mlp

    torch.manual_seed(0)
    graph = PCGraph(mlp([6, 8, 8, 3], act="tanh"))
    x, y = torch.randn(5, 6), torch.randn(5, 3)
    batch = prepare_batch(graph, x, y)
    free = [1, 2]
    relax(graph, batch.clamped(), free, GradientDescent(0.1), StopRule(4), compile=True)
    with torch.no_grad():
        graph.slots[2].energy.log_precision.fill_(math.log(3.0))
    a = relax(graph, batch.clamped(), free, GradientDescent(0.1), StopRule(4), compile=True)
    b = relax(graph, batch.clamped(), free, GradientDescent(0.1), StopRule(4))
    torch.testing.assert_close(a.trace.energy, b.trace.energy, rtol=1e-5, atol=1e-6)

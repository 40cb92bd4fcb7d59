"""The fused and compiled inference-learning paths give the plain path's numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import predcode as pc
from predcode.learning import learning_plan
from predcode.models import mlp


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def _setup(act="gelu-tanh", out="se", dtype=torch.float64):
    torch.manual_seed(0)
    model = mlp([12, 16, 16, 4], act=act, output_energy=out).to(dtype)
    x = torch.randn(8, 12, dtype=dtype)
    y = torch.randint(0, 4, (8,))
    return model, x, y


@pytest.mark.parametrize(
    "solver", [pc.SGD(0.05, momentum=0.65), pc.GradientDescent(0.1), pc.Heun(0.1)], ids=["sgd-momentum", "gd", "heun"]
)
@pytest.mark.parametrize("out", ["se", "ce"])
def test_fused_step_equals_step_by_step(solver, out):
    """The fused path (one pure function) against relax() + local weight backward, which
    the tolerance stop rule forces (a tolerance that is never met)."""
    model, x, y = _setup(out=out)
    graph = pc.PCGraph(model)
    fused = pc.InferenceLearning(solver, pc.StopRule(max_steps=9))
    assert fused.fused
    plain = pc.InferenceLearning(solver, pc.StopRule(max_steps=9, energy_rtol=0.0))
    assert not plain.fused
    a = fused.gradients(graph, x, y)
    ga = _grads(model)
    model.zero_grad(set_to_none=True)
    b = plain.gradients(graph, x, y)
    for u, v in zip(ga, _grads(model)):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.trace.node_energies, b.trace.node_energies, rtol=1e-10, atol=1e-12)


def test_compiled_step_equals_eager_step():
    """torch.compile of the whole step (float32, the speed path) matches eager to float
    tolerance, over several training steps with an optimizer."""
    model, x, y = _setup(dtype=torch.float32)
    twin = copy.deepcopy(model)
    solver = pc.SGD(0.05, momentum=0.65)
    eager = pc.InferenceLearning(solver, 6)
    compiled = pc.InferenceLearning(solver, 6, compile=True)
    graphs = pc.PCGraph(model), pc.PCGraph(twin)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, twin)]
    for _ in range(3):
        a = eager.step(graphs[0], x, y, opts[0])
        b = compiled.step(graphs[1], x, y, opts[1])
        torch.testing.assert_close(a.trace.energy, b.trace.energy, rtol=1e-4, atol=1e-6)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_compiled_copies_belong_to_their_graph():
    """Two graphs of the same shapes but different activations, compiled one after the
    other (the first freed first, so the second may reuse its id): each runs its own code
    and matches its own eager step."""
    x = torch.randn(8, 12)
    y = torch.randint(0, 4, (8,))
    solver = pc.SGD(0.05, momentum=0.65)
    for act in ("tanh", "relu"):
        torch.manual_seed(0)
        model = mlp([12, 16, 4], act=act)
        graph = pc.PCGraph(model)
        compiled = pc.InferenceLearning(solver, 3, compile=True)
        a = compiled.gradients(graph, x, y)
        plan = learning_plan(graph)
        assert plan.graph is graph and len(plan.compiled) == 1
        b = pc.InferenceLearning(solver, 3).gradients(graph, x, y)
        torch.testing.assert_close(a.trace.energy, b.trace.energy, rtol=1e-5, atol=1e-6)
        del model, graph, compiled, plan


@pytest.mark.parametrize("act", ["tanh", "softmax-out"])
def test_replaced_parameter_gets_the_gradient(act):
    """Assigning a new ``nn.Parameter`` to a layer after a step: the next step's gradient
    goes to the new parameter (the one an optimizer built now holds), equal to a fresh
    rule's."""
    torch.manual_seed(0)
    model = (
        mlp([6, 8, 3], act="tanh")
        if act == "tanh"
        else nn.Sequential(nn.Linear(6, 8), pc.Node(), nn.Tanh(), nn.Linear(8, 3), nn.Softmax(-1), pc.Node("ce"))
    )
    graph = pc.PCGraph(model)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    rule = pc.InferenceLearning(pc.SGD(0.1), 4)
    rule.gradients(graph, x, y)
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    linear.weight = nn.Parameter(linear.weight.detach() * 1.5)
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, x, y)
    assert linear.weight.grad is not None
    got = linear.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    pc.InferenceLearning(pc.SGD(0.1), 4).gradients(graph, x, y)
    torch.testing.assert_close(got, linear.weight.grad)


def test_compiled_step_follows_train_and_eval_mode():
    """Dropout traces different code in train and eval mode; a compiled step made in
    train mode is not reused in eval mode (its result equals the eager eval step)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), pc.Node(), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3), pc.Node())
    graph = pc.PCGraph(model)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    compiled = pc.InferenceLearning(pc.SGD(0.1), 3, compile=True)
    compiled.gradients(graph, x, y)
    model.eval()
    a = compiled.gradients(graph, x, y)
    b = pc.InferenceLearning(pc.SGD(0.1), 3).gradients(graph, x, y)
    torch.testing.assert_close(a.trace.energy, b.trace.energy, rtol=1e-5, atol=1e-6)


class _PlainDescent(pc.Solver):
    """A user's solver without ``__repr__`` (the default repr names only its address)."""

    moves_only_with_gradient = True

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def update(self, step, states, grad_fn, memory):
        grads, energies = grad_fn(states)
        return [x - self.lr * g for x, g in zip(states, grads)], memory, energies, grads


def test_compiled_copies_are_keyed_by_the_solver_settings():
    """Equal settings share one compiled copy; other settings (even of a solver whose repr
    names only its address, which a freed solver's successor may reuse) get their own."""
    assert _PlainDescent(0.1).settings() == _PlainDescent(0.1).settings()
    assert _PlainDescent(0.1).settings() != _PlainDescent(0.2).settings()
    assert pc.GradientDescent(0.1).settings() != pc.Euler(0.1).settings()
    torch.manual_seed(0)
    graph = pc.PCGraph(mlp([6, 8, 3], act="tanh"))
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    rule = pc.InferenceLearning(_PlainDescent(0.1), 3, compile=True)
    rule.gradients(graph, x, y)
    rule.solver = _PlainDescent(0.1)
    rule.gradients(graph, x, y)
    plan = learning_plan(graph)
    assert len(plan.compiled) == 1
    rule.solver = _PlainDescent(0.3)
    a = rule.gradients(graph, x, y)
    assert len(plan.compiled) == 2
    b = pc.InferenceLearning(_PlainDescent(0.3), 3).gradients(graph, x, y)
    torch.testing.assert_close(a.trace.energy, b.trace.energy, rtol=1e-5, atol=1e-6)


def test_compiled_step_follows_a_changed_precision():
    """A compiled step traced with unit precisions (no multiply) is not reused once a
    precision has been written: the next call compiles anew and equals the eager step."""
    import math

    torch.manual_seed(0)
    model = mlp([6, 8, 3], act="tanh")
    graph = pc.PCGraph(model)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    compiled = pc.InferenceLearning(pc.SGD(0.1), 3, compile=True)
    compiled.gradients(graph, x, y)
    hidden = graph.slots[1].energy
    with torch.no_grad():
        hidden.log_precision.fill_(math.log(4.0))
    a = compiled.gradients(graph, x, y)
    assert len(learning_plan(graph).compiled) == 2
    b = pc.InferenceLearning(pc.SGD(0.1), 3).gradients(graph, x, y)
    torch.testing.assert_close(a.trace.energy, b.trace.energy, rtol=1e-5, atol=1e-6)

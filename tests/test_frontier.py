"""The error frontier: a relaxation from the feed-forward pass recomputes only what can
have changed (errors spread one node per step from the clamped outputs), and gives the
same numbers as recomputing everything."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import predcode as pc
import predcode.learning as learning
from predcode.batch import encode_targets
from predcode.inference import error_frontier
from predcode.learning import LearningPlan, learn_step
from predcode.models import cnn, mlp, resnet
from predcode.sampling import Langevin


def _problem(model, x, y):
    graph = pc.PCGraph(model)
    shapes = graph.node_shapes([x])
    like = [x.new_empty((x.shape[0], *shapes[o])) for o in graph.outputs]
    target = tuple(encode_targets(graph, y, like).values())
    return graph, target


def _step(graph, x, target, solver, steps, frontier: bool, monkeypatch):
    plan = LearningPlan(graph)
    with monkeypatch.context() as patch:
        if not frontier:
            patch.setattr(learning, "error_frontier", lambda *args: None)
        with torch.no_grad():
            return learn_step(plan, plan.trainable(), solver, steps, [x], target)


def _assert_same(a, b):
    (grads_a, stats_a), (grads_b, stats_b) = a, b
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-12, atol=1e-14, msg=name)
    torch.testing.assert_close(stats_a.loss, stats_b.loss, rtol=1e-14, atol=0)
    # every node's energy before each step and at the end, and the state-gradient norms
    torch.testing.assert_close(stats_a.trace.node_energies, stats_b.trace.node_energies, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(stats_a.trace.grad_norms, stats_b.trace.grad_norms, rtol=1e-12, atol=1e-14)


def test_frontier_of_a_chain():
    """Input 0, hidden 1-3, output 4: errors reach one more node per step."""
    graph = pc.PCGraph(mlp([3, 4, 4, 4, 2]))
    fronts = error_frontier(graph, [1, 2, 3], [4], 5)
    assert [set(f.errors) for f in fronts[:4]] == [{4}, {3, 4}, {2, 3, 4}, {1, 2, 3, 4}]
    assert [set(f.moved) for f in fronts[:4]] == [set(), {3}, {2, 3}, {1, 2, 3}]
    assert fronts[4] == fronts[5] == fronts[3]


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 9])
@pytest.mark.parametrize("solver", [pc.SGD(0.1, momentum=0.65), pc.GradientDescent(0.2)], ids=["sgd-momentum", "gd"])
@pytest.mark.parametrize(
    "act,out,act_first",
    [("gelu-tanh", "se", False), ("tanh", "ce", False), ("relu", "se", True), ("sigmoid", "ce", True)],
)
def test_dense_frontier_equals_full_recompute(steps, solver, act, out, act_first, monkeypatch):
    """Closed-form path (dense layers): weight gradients, loss, energy trace and gradient
    norms agree to float64 precision, for every step count, including fewer steps than
    layers (the first layers' errors are then still zero)."""
    torch.manual_seed(0)
    model = mlp([7, 9, 8, 6, 4], act=act, output_energy=out, act_first=act_first).double()
    x = torch.randn(6, 7, dtype=torch.float64)
    y = torch.randint(0, 4, (6,)) if out == "ce" else torch.randn(6, 4, dtype=torch.float64)
    graph, target = _problem(model, x, y)
    _assert_same(
        _step(graph, x, target, solver, steps, True, monkeypatch),
        _step(graph, x, target, solver, steps, False, monkeypatch),
    )


@pytest.mark.parametrize("steps", [1, 2, 6])
@pytest.mark.parametrize("kind", ["cnn", "resnet"])
def test_autograd_frontier_equals_full_recompute(kind, steps, monkeypatch):
    """Autograd path: a CNN (convolutions, pooling) and a ResNet (skip connections, so a
    node's error arrives along paths of two lengths)."""
    torch.manual_seed(0)
    if kind == "cnn":
        model = cnn(channels=(3, 4), in_size=8, num_classes=3).double()
    else:
        model = resnet(widths=(3, 4), num_classes=3).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    graph, target = _problem(model, x, y)
    solver = pc.SGD(0.05, momentum=0.5)
    _assert_same(
        _step(graph, x, target, solver, steps, True, monkeypatch),
        _step(graph, x, target, solver, steps, False, monkeypatch),
    )


def test_few_steps_leave_early_layers_untouched(monkeypatch):
    """With fewer steps than hidden layers no error reaches the first layer: its weight
    gradient is exactly zero, with or without the frontier."""
    torch.manual_seed(0)
    model = mlp([5, 6, 6, 6, 6, 3], act="tanh").double()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    graph, target = _problem(model, x, y)
    for frontier in (True, False):
        grads, _ = _step(graph, x, target, pc.GradientDescent(0.3), 2, frontier, monkeypatch)
        assert torch.count_nonzero(grads["graph.model.0.weight"]) == 0
        assert torch.count_nonzero(grads["graph.model.9.weight"]) > 0


class _CountProducts(TorchDispatchMode):
    """Counts the matrix products run under it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_zero_errors_are_not_carried(monkeypatch):
    """The pcx MLP's shape (4 layers, T = 8): 50 matrix products (feed-forward 4, inference
    39, final predictions 3, weight gradients 4) instead of the 59 of recomputing every
    prediction at every step."""
    torch.manual_seed(0)
    model = mlp([20, 8, 8, 8, 3])
    x, y = torch.randn(5, 20), torch.randint(0, 3, (5,))
    graph, target = _problem(model, x, y)
    counts = []
    for frontier in (True, False):
        with _CountProducts() as mode:
            _step(graph, x, target, pc.SGD(0.1, momentum=0.65), 8, frontier, monkeypatch)
        counts.append(mode.count)
    assert counts == [50, 59]


def test_only_gradient_driven_solvers_use_the_frontier():
    """A state can move without a gradient under Langevin noise, and Heun evaluates twice
    per step: neither may skip anything."""
    assert pc.SGD(0.1, momentum=0.5).moves_only_with_gradient
    assert pc.GradientDescent(0.1).moves_only_with_gradient and pc.Euler(0.1).moves_only_with_gradient
    assert not pc.Heun(0.1).moves_only_with_gradient
    assert not Langevin(0.1).moves_only_with_gradient


class _DecayingDescent(pc.GradientDescent):
    """Gradient descent with state decay: states move even where the gradient is zero."""

    def update(self, step, states, grad_fn, memory):
        new, memory, energies, grads = super().update(step, states, grad_fn, memory)
        return [0.9 * x for x in new], memory, energies, grads


def test_a_subclass_with_its_own_update_does_not_use_the_frontier(monkeypatch):
    """Overriding ``update`` resets the inherited flag, so the step computes what the
    changed update needs (the same numbers as without the frontier)."""
    assert not _DecayingDescent(0.1).moves_only_with_gradient
    torch.manual_seed(0)
    model = mlp([6, 5, 5, 3]).double()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 3, (4,))
    graph, target = _problem(model, x, y)
    solver = _DecayingDescent(0.1)
    _assert_same(
        _step(graph, x, target, solver, 4, True, monkeypatch), _step(graph, x, target, solver, 4, False, monkeypatch)
    )


def test_frozen_layer_takes_autograd_for_the_weights():
    """Freezing a layer rebuilds the rule's energy; the frozen weight gets no gradient and
    the others still do."""
    torch.manual_seed(0)
    model = mlp([6, 5, 5, 3]).double()
    graph = pc.PCGraph(model)
    rule = pc.InferenceLearning(pc.SGD(0.1, momentum=0.5), 4)
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 3, (4,))
    rule.gradients(graph, x, y)
    model.zero_grad(set_to_none=True)
    model[0].weight.requires_grad_(False)
    rule.gradients(graph, x, y)
    assert model[0].weight.grad is None
    assert model[0].bias.grad is not None and model[3].weight.grad is not None


def test_learnable_precision_reads_the_parameters():
    """A learnable precision is a parameter outside the closed-form products: the energy
    says it needs the parameters handed in."""
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), pc.Node(pc.Gaussian(learnable=True)), nn.Linear(5, 3), pc.Node())
    assert LearningPlan(pc.PCGraph(model)).needs_params()
    assert not LearningPlan(pc.PCGraph(mlp([4, 5, 3]))).needs_params()


def test_fixed_prediction_runs_no_unwanted_products():
    """Fixed prediction on 4 dense layers at n = depth: feed-forward 4 products, the
    spreading errors 1 + 2 + 3 + 3, the weights 4; none for the hidden values' own
    gradients (they are autograd leaves, but nothing reads their .grad)."""
    torch.manual_seed(0)
    model = mlp([20, 8, 8, 8, 3])
    graph = pc.PCGraph(model)
    x, y = torch.randn(5, 20), torch.randint(0, 3, (5,))
    with _CountProducts() as mode:
        pc.FixedPrediction(lr=1.0, steps=4).gradients(graph, x, y)
    assert mode.count == 17
    assert all(p.grad is not None for p in model.parameters())


class _TwoHeads(nn.Module):
    """``h`` feeds a deep head (through ``d``, made first) and a shallow one: at the first
    steps ``d``'s error is still zero while the shallow output's is not."""

    def __init__(self):
        super().__init__()
        self.inp, self.deep1 = nn.Linear(5, 4), nn.Linear(4, 4)
        self.deep2, self.short = nn.Linear(4, 3), nn.Linear(4, 2)
        self.a1, self.a2 = nn.Tanh(), nn.Tanh()
        self.h, self.d, self.y1, self.y2 = pc.Node(), pc.Node(), pc.Node(), pc.Node()

    def forward(self, x):
        h = self.h(self.inp(x))
        d = self.d(self.deep1(self.a1(h)))
        return self.y1(self.deep2(self.a2(d))), self.y2(self.short(self.a1(h)))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_a_cold_child_listed_first_does_not_hide_a_later_one(steps, monkeypatch):
    """Closed form on a branching graph: a node whose first child is still cold (no error
    yet) takes the errors of its other children all the same."""
    torch.manual_seed(2)
    model = _TwoHeads().double()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = (torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64))
    graph, target = _problem(model, x, y)
    h, d = graph.index("h"), graph.index("d")
    assert graph.slots[h].children[0] == d  # the cold child comes first
    assert LearningPlan(graph).dense is not None  # the closed-form products
    _assert_same(
        _step(graph, x, target, pc.SGD(0.1, momentum=0.65), steps, True, monkeypatch),
        _step(graph, x, target, pc.SGD(0.1, momentum=0.65), steps, False, monkeypatch),
    )


@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_the_closed_form_does_only_the_work_the_frontier_leaves(steps, monkeypatch):
    """The work the optimisations skip is skipped, not only the numbers kept (the tests above
    check the numbers).  A dense chain of L = 6 layers has D = 5 moving predictions (every
    node but the first, whose parent is the input).  The feed-forward pass runs each layer
    once (L calls); at step t of an sPC relaxation from there only the min(t, D) predictions
    whose parents have moved are recomputed (the others keep the feed-forward pass's chains,
    step 0 none at all); the weight gradients take the relaxed state's D predictions once.
    Without the frontier every step recomputes all D."""
    from predcode.closed_form import DensePredictor

    torch.manual_seed(0)
    model = mlp([5, 6, 6, 6, 6, 6, 3], act="tanh").double()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    graph, target = _problem(model, x, y)
    layers, moving = 6, 5
    calls: list[int] = []
    forward = DensePredictor.forward

    def counted(self: DensePredictor, h: torch.Tensor):
        calls.append(1)
        return forward(self, h)

    monkeypatch.setattr(DensePredictor, "forward", counted)
    _step(graph, x, target, pc.GradientDescent(0.1), steps, True, monkeypatch)
    assert len(calls) == layers + sum(min(t, moving) for t in range(steps)) + moving
    calls.clear()
    _step(graph, x, target, pc.GradientDescent(0.1), steps, False, monkeypatch)
    assert len(calls) == layers + moving * steps + moving

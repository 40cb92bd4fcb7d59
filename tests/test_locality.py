"""Locality of predictive coding's computations.

* A weight update ``dE/dθ_i`` (at fixed values) depends only on node ``i``'s value, its
  parents' values and ``θ_i``: perturbing anything else leaves it bit-for-bit unchanged,
  while perturbing ``x_i`` or a parent's value changes it.
* A state gradient ``dE/dx_i`` depends only on the Markov blanket of ``i`` (its parents,
  children and children's other parents) and on ``θ_i`` and its children's weights.

The test graph has a skip connection so that a child has a second parent:

    x -> h1 -> h2 -> h3 -> h4 -> out,   h1 -> h4
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from predcode import GradientDescent, Node, PCGraph, StopRule, relax
from predcode.inference import EnergyLandscape
from predcode.rules import accumulate_weight_gradients


class SkipChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 6)
        self.l4, self.l5, self.l6 = nn.Linear(6, 5), nn.Linear(6, 5), nn.Linear(5, 3)
        self.h1, self.h2, self.h3, self.h4, self.out = Node(), Node(), Node(), Node(), Node()

    def forward(self, x):
        h1 = self.h1(torch.tanh(self.l1(x)))
        h2 = self.h2(torch.tanh(self.l2(h1)))
        h3 = self.h3(torch.tanh(self.l3(h2)))
        h4 = self.h4(torch.tanh(self.l4(h3) + self.l5(h1)))
        return self.out(self.l6(h4))


NODES = ["h1", "h2", "h3", "h4", "out"]
HIDDEN = ["h1", "h2", "h3", "h4"]


@pytest.fixture
def setup():
    """Graph, and a relaxed state (input and output clamped) of a random batch."""
    torch.manual_seed(0)
    model = SkipChain().double()
    graph = PCGraph(model)
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    values = graph.feedforward([x])
    values[graph.output] = y
    free = [graph.index(n) for n in HIDDEN]
    relaxed = relax(graph, values, free, GradientDescent(0.1), StopRule(max_steps=40)).values
    return model, graph, relaxed


def node_params(graph: PCGraph, i: int) -> list[nn.Parameter]:
    return list(graph.slots[i].predictor.parameters())


def weight_grads(graph: PCGraph, values, i: int) -> list[torch.Tensor]:
    graph.model.zero_grad(set_to_none=True)
    accumulate_weight_gradients(graph, values)
    return [p.grad.clone() for p in node_params(graph, i)]


def perturbed(values, j: int, scale: float = 0.3):
    g = torch.Generator().manual_seed(100 + j)
    out = list(values)
    out[j] = values[j] + scale * torch.randn(values[j].shape, generator=g, dtype=values[j].dtype)
    return out


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b))


def differs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return any(float((u - v).abs().max()) > 1e-8 for u, v in zip(a, b))


def test_graph_shape(setup):
    _, graph, _ = setup
    parents = {graph.names[s.index]: [graph.names[p] for p in s.parents] for s in graph.slots}
    assert parents == {"x": [], "h1": ["x"], "h2": ["h1"], "h3": ["h2"], "h4": ["h1", "h3"], "out": ["h4"]}
    assert {p.shape for p in node_params(graph, graph.index("h4"))} == {torch.Size([5, 6]), torch.Size([5])}


# -- weight updates ----------------------------------------------------------------------
@pytest.mark.parametrize("node", NODES)
def test_weight_update_ignores_values_outside_node_and_parents(setup, node):
    _, graph, values = setup
    i = graph.index(node)
    base = weight_grads(graph, values, i)
    assert all(float(g.abs().max()) > 0 for g in base)
    local = {i, *graph.slots[i].parents}
    for j in range(len(graph.slots)):
        moved = weight_grads(graph, perturbed(values, j), i)
        if j in local:
            assert differs(moved, base), f"{node}'s update ignored {graph.names[j]}"
        else:
            assert same(moved, base), f"{node}'s update depends on {graph.names[j]}"


@pytest.mark.parametrize("node", NODES)
def test_weight_update_ignores_other_weights(setup, node):
    model, graph, values = setup
    i = graph.index(node)
    base = weight_grads(graph, values, i)
    own = {id(p) for p in node_params(graph, i)}
    for p in model.parameters():
        if id(p) in own:
            continue
        with torch.no_grad():
            p.add_(0.5)
        moved = weight_grads(graph, values, i)
        with torch.no_grad():
            p.sub_(0.5)
        assert same(moved, base), f"{node}'s update depends on a weight of {p.shape}"
    # and it does depend on its own weights
    with torch.no_grad():
        for p in node_params(graph, i):
            p.mul_(1.5)
    assert differs(weight_grads(graph, values, i), base)


def test_linear_output_update_is_hebbian(setup):
    """For ``mu = W h + b`` the update is ``-mean_b e h^T``: post error times pre value."""
    model, graph, values = setup
    o = graph.output
    h4 = values[graph.index("h4")]
    e = values[o] - graph.node_prediction(o, values)
    grads = weight_grads(graph, values, o)
    torch.testing.assert_close(grads[0], -(e.T @ h4) / e.shape[0])
    torch.testing.assert_close(grads[1], -e.mean(0))


# -- state gradients ---------------------------------------------------------------------
def blanket(graph: PCGraph, i: int) -> set[int]:
    slot = graph.slots[i]
    members = {i, *slot.parents, *slot.children}
    for c in slot.children:
        members.update(graph.slots[c].parents)
    return members


def state_grads(graph: PCGraph, values) -> dict[int, torch.Tensor]:
    free = [graph.index(n) for n in HIDDEN]
    landscape = EnergyLandscape(graph, values, free)
    _, grads, _ = landscape.evaluate([values[i].clone() for i in landscape.free])
    return dict(zip(landscape.free, grads))


def test_blankets(setup):
    _, graph, _ = setup
    names = lambda s: {graph.names[j] for j in s}  # noqa: E731
    assert names(blanket(graph, graph.index("h2"))) == {"h1", "h2", "h3"}
    assert names(blanket(graph, graph.index("h3"))) == {"h1", "h2", "h3", "h4"}
    assert names(blanket(graph, graph.index("h4"))) == {"h1", "h3", "h4", "out"}


@pytest.mark.parametrize("node", HIDDEN)
def test_state_gradient_depends_only_on_markov_blanket(setup, node):
    _, graph, values = setup
    i = graph.index(node)
    base = state_grads(graph, values)[i]
    assert float(base.abs().max()) > 0
    inside = blanket(graph, i)
    for j in range(len(graph.slots)):
        moved = state_grads(graph, perturbed(values, j))[i]
        if j in inside:
            assert differs([moved], [base]), f"dE/d{node} ignored {graph.names[j]}"
        else:
            assert same([moved], [base]), f"dE/d{node} depends on {graph.names[j]}"


@pytest.mark.parametrize("node", HIDDEN)
def test_state_gradient_uses_only_own_and_childrens_weights(setup, node):
    model, graph, values = setup
    i = graph.index(node)
    base = state_grads(graph, values)[i]
    used = {id(p) for k in [i, *graph.slots[i].children] for p in node_params(graph, k)}
    for p in model.parameters():
        with torch.no_grad():
            p.add_(0.5)
        moved = state_grads(graph, values)[i]
        with torch.no_grad():
            p.sub_(0.5)
        if id(p) in used:
            assert differs([moved], [base])
        else:
            assert same([moved], [base])


@pytest.mark.parametrize("node", HIDDEN)
def test_relax_step_of_a_node_depends_only_on_its_blanket(setup, node):
    """The same through :func:`relax`: one inference step moves ``x_i`` by an amount that
    nothing outside its Markov blanket can change."""
    _, graph, values = setup
    i = graph.index(node)
    free = [graph.index(n) for n in HIDDEN]

    def one_step(vals):
        return relax(graph, vals, free, GradientDescent(0.1), StopRule(max_steps=1)).values[i]

    base = one_step(values)
    inside = blanket(graph, i)
    for j in range(len(graph.slots)):
        if j == i:
            continue
        moved = one_step(perturbed(values, j))
        if j in inside:
            assert differs([moved], [base])
        else:
            assert same([moved], [base]), f"step of {node} depends on {graph.names[j]}"

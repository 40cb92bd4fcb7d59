"""Node energies: values, errors (= -dE/dmu), modes, shapes, and the graph's total energy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import predcode
from predcode import Bernoulli, Categorical, Gaussian, Node, PCGraph
from predcode.energy import make_energy
from predcode.rules import accumulate_weight_gradients

torch_dtype = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch_dtype)


def probs(*shape, seed=0):
    return torch.softmax(rand(*shape, seed=seed), dim=-1)


def value_for(energy, shape, seed=0):
    if isinstance(energy, Categorical):
        return probs(*shape, seed=seed)
    if isinstance(energy, Bernoulli):
        return torch.sigmoid(rand(*shape, seed=seed))
    return rand(*shape, seed=seed)


ENERGIES = {
    "gaussian": lambda: Gaussian(),
    "gaussian-precision": lambda: Gaussian(precision=2.5),
    "gaussian-units": lambda: Gaussian(precision=0.5, units=4),
    "gaussian-learnable": lambda: Gaussian(precision=0.7, learnable=True, units=4),
    "categorical": Categorical,
    "bernoulli": Bernoulli,
}


@pytest.mark.parametrize("name", list(ENERGIES))
def test_error_is_minus_gradient_wrt_prediction(name):
    energy = ENERGIES[name]().double()
    mu = rand(6, 4, seed=1).requires_grad_(True)
    x = value_for(energy, (6, 4), seed=2)
    (grad,) = torch.autograd.grad(energy(x, mu).sum(), mu)
    torch.testing.assert_close(energy.error(x, mu), -grad)


@pytest.mark.parametrize("name", list(ENERGIES))
def test_energy_is_per_sample_and_minimal_at_mode(name):
    energy = ENERGIES[name]().double()
    mu = rand(6, 4, seed=3)
    x = value_for(energy, (6, 4), seed=4)
    at_mode = energy(energy.mode(mu), mu)
    assert energy(x, mu).shape == (6,)
    offset = at_mode  # the learnable log-precision term is a constant in x
    assert (energy(x, mu) >= offset - 1e-12).all()
    if not getattr(energy, "learnable", False):
        torch.testing.assert_close(at_mode, torch.zeros(6, dtype=torch_dtype))
    # the error vanishes at the mode
    torch.testing.assert_close(energy.error(energy.mode(mu), mu), torch.zeros(6, 4, dtype=torch_dtype))


def test_gaussian_value():
    x, mu = rand(5, 3, seed=5), rand(5, 3, seed=6)
    torch.testing.assert_close(Gaussian()(x, mu), 0.5 * ((x - mu) ** 2).sum(1))
    torch.testing.assert_close(Gaussian(precision=0.2)(x, mu), 0.1 * ((x - mu) ** 2).sum(1))
    per_unit = Gaussian(units=3).double()
    with torch.no_grad():
        per_unit.log_precision.copy_(torch.tensor([0.0, math.log(2.0), math.log(4.0)]))
    want = 0.5 * ((x - mu) ** 2 * torch.tensor([1.0, 2.0, 4.0], dtype=torch_dtype)).sum(1)
    torch.testing.assert_close(per_unit(x, mu), want)


def test_gaussian_learnable_precision_gradient():
    g = Gaussian(precision=1.5, learnable=True, units=3).double()
    x, mu = rand(7, 3, seed=7), rand(7, 3, seed=8)
    g(x, mu).mean().backward()
    e2 = ((x - mu) ** 2).mean(0)
    torch.testing.assert_close(g.log_precision.grad, 0.5 * (1.5 * e2 - 1.0))
    assert isinstance(g.log_precision, nn.Parameter)
    assert not isinstance(Gaussian(precision=1.5).log_precision, nn.Parameter)


def test_categorical_is_cross_entropy_for_one_hot():
    mu = rand(8, 5, seed=9)
    labels = torch.arange(8) % 5
    x = F.one_hot(labels, 5).to(torch_dtype)
    torch.testing.assert_close(Categorical()(x, mu), F.cross_entropy(mu, labels, reduction="none"))
    torch.testing.assert_close(Categorical().error(x, mu), x - torch.softmax(mu, -1))


def test_categorical_soft_target_is_kl():
    mu, p = rand(4, 3, seed=10), probs(4, 3, seed=11)
    q = torch.softmax(mu, -1)
    torch.testing.assert_close(Categorical()(p, mu), (p * (p.log() - q.log())).sum(1))


def test_bernoulli_is_bce_for_binary_values():
    mu = rand(6, 4, seed=12)
    x = (rand(6, 4, seed=13) > 0).to(torch_dtype)
    want = F.binary_cross_entropy_with_logits(mu, x, reduction="none").sum(1)
    torch.testing.assert_close(Bernoulli()(x, mu), want)


@pytest.mark.parametrize("name", ["gaussian", "gaussian-precision", "bernoulli"])
def test_energy_sums_over_all_non_batch_dims(name):
    energy = ENERGIES[name]().double()
    mu = rand(3, 2, 4, 5, seed=14)
    x = value_for(energy, (3, 2, 4, 5), seed=15)
    flat = energy(x.reshape(3, -1), mu.reshape(3, -1))
    torch.testing.assert_close(energy(x, mu), flat)


def test_make_energy_names():
    assert isinstance(make_energy("se"), Gaussian)
    assert isinstance(make_energy("Gaussian"), Gaussian)
    assert isinstance(make_energy("CE"), Categorical)
    assert isinstance(make_energy("categorical"), Categorical)
    assert isinstance(make_energy("bernoulli"), Bernoulli)
    mine = Gaussian(precision=3.0)
    assert make_energy(mine) is mine
    assert Node(mine).energy is mine


# -- the graph's energy ------------------------------------------------------------------
def test_graph_energy_is_sum_of_batch_mean_node_energies(make_net, make_batch):
    sizes = [4, 6, 5, 3]
    model, graph = make_net(sizes, act="tanh", out="ce")
    x, y = make_batch(sizes, out="ce", batch=6)
    values = graph.feedforward([x])
    values = [v if i == 0 else v + 0.1 * rand(*v.shape, seed=i) for i, v in enumerate(values)]
    values[graph.output] = F.one_hot(y, 3).to(torch_dtype)
    per_node = graph.node_energies(values).detach()
    assert per_node.shape == (len(graph.slots),)
    assert float(per_node[0]) == 0.0  # the input has no energy
    want = []
    for slot in graph.slots[1:]:
        mu = graph.node_prediction(slot.index, values)
        want.append(slot.energy(values[slot.index], mu).mean().detach())
    torch.testing.assert_close(per_node[1:], torch.stack(want))
    torch.testing.assert_close(graph.energy(values).detach(), per_node.sum())
    # the output term is the usual cross-entropy loss of the hidden states
    h = values[graph.output - 1]
    logits = model[-2](h)
    torch.testing.assert_close(per_node[graph.output], F.cross_entropy(logits, y).detach())


def test_feedforward_state_has_zero_energy(make_net, make_batch):
    sizes = [4, 6, 5, 3]
    for out in ["se", "ce"]:
        _, graph = make_net(sizes, act="gelu", out=out)
        x, _ = make_batch(sizes, out=out)
        with torch.no_grad():
            assert abs(float(graph.energy(graph.feedforward([x])))) < 1e-12


def test_learnable_output_precision_gets_a_local_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 5), nn.Tanh(), Node(), nn.Linear(5, 3), Node(Gaussian(learnable=True, units=3))
    ).double()
    graph = PCGraph(model)
    x, y = rand(6, 4, seed=20), rand(6, 3, seed=21)
    values = graph.feedforward([x])
    values[graph.output] = y
    model.zero_grad(set_to_none=True)
    accumulate_weight_gradients(graph, values)
    e2 = ((y - model(x)) ** 2).mean(0)
    log_precision = graph.slots[graph.output].energy.log_precision
    torch.testing.assert_close(log_precision.grad, 0.5 * (e2 - 1.0))
    assert any(p is log_precision for p in model.parameters())


def test_node_is_identity_in_a_plain_forward_pass():
    node = Node(predcode.Gaussian(precision=2.0))
    x = rand(2, 3)
    assert node(x) is x


@pytest.mark.parametrize("change", ["fill_", "load_state_dict", "double_then_fill_", "assign"])
def test_unit_precision_shortcut_follows_a_changed_precision(change):
    """A Gaussian made with precision 1 skips the multiply only while its precision is
    still 1: writing the buffer in place or loading another precision takes effect."""
    g = Gaussian()
    if change == "fill_":
        g.log_precision.fill_(math.log(2.0))
    elif change == "load_state_dict":
        g.load_state_dict(Gaussian(2.0).state_dict())
    elif change == "assign":
        g.log_precision = torch.tensor(math.log(2.0))
    else:
        g = g.double()
        assert g._unit_precision  # re-armed on the new float64 buffer, value still 1
        g.log_precision.fill_(math.log(2.0))
    value, prediction = rand(4, 3, seed=1).to(g.log_precision.dtype), rand(4, 3, seed=2)
    prediction = prediction.to(value.dtype)
    reference = Gaussian(2.0).to(value.dtype)
    torch.testing.assert_close(g.error(value, prediction), reference.error(value, prediction))
    torch.testing.assert_close(g(value, prediction), reference(value, prediction))
    torch.testing.assert_close(g.total(value, prediction), reference.total(value, prediction))
    assert not g._unit_precision


def test_unit_precision_shortcut_gives_the_general_numbers():
    value, prediction = rand(4, 3, seed=1), rand(4, 3, seed=2)
    unit, general = Gaussian().double(), Gaussian(units=3).double()
    assert unit._unit_precision and not general._unit_precision
    torch.testing.assert_close(unit.error(value, prediction), general.error(value, prediction))
    torch.testing.assert_close(unit(value, prediction), general(value, prediction))
    torch.testing.assert_close(unit.total(value, prediction), general.total(value, prediction))


def test_has_unit_precision_only_for_a_fixed_scalar_precision_of_one():
    """The multiply-free shortcut is taken for a fixed scalar precision of exactly 1 and for
    nothing else: not a learnable precision (even at 1), not one precision per unit (even all
    1), not a fixed precision of 2; a buffer written back to 1 is found again."""
    assert Gaussian().has_unit_precision()
    assert not Gaussian(learnable=True).has_unit_precision()
    assert not Gaussian(units=3).has_unit_precision()
    assert not Gaussian(2.0).has_unit_precision()
    g = Gaussian(2.0)
    with torch.no_grad():
        g.log_precision.zero_()
    assert g.has_unit_precision()


def test_categorical_takes_the_softmax_over_the_last_dimension():
    """Per-position targets ``[batch, time, classes]``: the energy is the cross-entropy summed
    over positions, the error and the mode are per position (softmax over the classes)."""
    torch.manual_seed(4)
    mu = torch.randn(3, 5, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 5))
    x = F.one_hot(labels, 4).double()
    e = Categorical()
    want = F.cross_entropy(mu.reshape(-1, 4), labels.reshape(-1), reduction="none").reshape(3, 5).sum(1)
    torch.testing.assert_close(e(x, mu), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e.mode(mu), torch.softmax(mu, dim=2), rtol=0, atol=0)
    torch.testing.assert_close(e.error(x, mu), x - torch.softmax(mu, dim=2), rtol=0, atol=0)


def test_unit_precisions_lists_the_gaussians_only():
    from predcode.energy import unit_precisions

    assert unit_precisions([Gaussian(), Categorical(), None, Gaussian(2.0), Bernoulli()]) == (True, False)
    assert repr(Gaussian(units=3, learnable=True)) == "Gaussian(learnable=True, shape=(3,))"


@pytest.mark.parametrize(("units", "shape"), [(None, ()), (4, (4,)), ((2, 3), (2, 3))])
def test_gaussian_precision_has_the_units_shape(units, shape):
    """One precision (``units=None``), one per unit of a vector node (an int), or one per
    unit of a node of any shape (a tuple); all start at the given value."""
    energy = Gaussian(2.0, units=units)
    assert tuple(energy.log_precision.shape) == shape
    torch.testing.assert_close(energy.precision, torch.full(shape, 2.0))


def test_unit_precision_error_is_the_difference_itself():
    """At unit precision the error is the difference, returned as it is (no multiply by 1,
    no copy): the shortcut every relaxation step takes; any other precision multiplies."""
    d = torch.randn(3, 4)
    assert Gaussian().error_of(d) is d
    torch.testing.assert_close(Gaussian(2.0).error_of(d), 2.0 * d)

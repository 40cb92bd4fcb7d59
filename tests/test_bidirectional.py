"""Bidirectional PC: the graph's energy is the bPC energy written out, its inference-learning
weight gradients are that energy's at the relaxed state, its relaxation reaches a
stationary point of that energy, queries keep their clamps, bad input is one clear error,
and (slow) it learns to classify and to generate real MNIST digits."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from predcode import GradientDescent, InferenceLearning, PCGraph, StopRule
from predcode.exceptions import InputError, OptionError
from predcode.models import mlp
from predcode.models.bidirectional import Bidirectional, bidirectional, classify, complete, generate, targets
from predcode.query import infer

torch.set_num_threads(1)
SIZES = [12, 7, 6, 4]
AD, AG = 1.3, 0.4


def net(seed: int = 0):
    torch.manual_seed(seed)
    model = bidirectional(SIZES, act="tanh", alpha_disc=AD, alpha_gen=AG).double()
    return model, PCGraph(model)


def written_energy(model: Bidirectional, xs: list[torch.Tensor]) -> torch.Tensor:
    """E = sum_l AD/2 |x_l - V f(x_{l-1})|^2 + sum_l AG/2 |x_l - W f(x_{l+1})|^2, batch mean;
    f = tanh on hidden nodes, identity on the data and the label.  The precisions are read
    from the model (stored as a float32 log, so 1.3 is 1.3 to float32 accuracy)."""
    ad = float(model.nodes[0].energy.precision)
    ag = float(model.gen[0].energy.precision)
    assert abs(ad - AD) < 1e-6 and abs(ag - AG) < 1e-6
    n = len(SIZES) - 1
    f = [(lambda t: t)] + [torch.tanh] * (n - 1) + [(lambda t: t)]
    e = 0.0
    for k in range(1, n + 1):
        e = e + ad / 2 * ((xs[k] - model.up[k - 1](f[k - 1](xs[k - 1]))) ** 2).sum(1)
    for k in range(n):
        e = e + ag / 2 * ((xs[k] - model.down[k](f[k + 1](xs[k + 1]))) ** 2).sum(1)
    return e.mean()


def batch(n: int = 5):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, SIZES[0], generator=g, dtype=torch.float64)
    y = torch.randint(0, SIZES[-1], (n,), generator=g)
    return x, y


def slot_values(graph, xs):
    """Graph values for node values xs (data, hidden..., label) with the gen nodes at zero."""
    values = [None] * len(graph.slots)
    names = ["x"] + [f"h{k}" for k in range(1, len(SIZES) - 1)] + ["label"]
    for name, v in zip(names, xs):
        values[graph.index(name) if name != "x" else graph.inputs[0]] = v
    for k, s in enumerate(SIZES[:-1]):
        values[graph.index(f"gen{k}")] = xs[0].new_zeros(xs[0].shape[0], s)
    return values


def test_graph_energy_is_the_bpc_energy():
    model, graph = net()
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(4, s, generator=g, dtype=torch.float64) for s in SIZES]
    ours = graph.energy(slot_values(graph, xs))
    assert torch.allclose(ours, written_energy(model, xs), rtol=1e-12, atol=0)
    assert [graph.names[o] for o in graph.outputs] == ["label", "gen0", "gen1", "gen2"]


def test_relaxation_is_a_stationary_point_and_weight_grads_are_the_energys():
    model, graph = net()
    x, y = batch()
    onehot = F.one_hot(y, SIZES[-1]).double()
    tg = targets(graph, y, x)
    r = infer(graph, {graph.inputs[0]: x, **tg}, solver=GradientDescent(0.2), stop=2000)
    hidden = [r.values[graph.index(f"h{k}")] for k in range(1, len(SIZES) - 1)]
    # a stationary point of the written energy in the hidden nodes
    hs = [h.clone().requires_grad_(True) for h in hidden]
    e = written_energy(model, [x, *hs, onehot])
    grads = torch.autograd.grad(e, hs)
    assert max(float(g.abs().max()) for g in grads) < 1e-10
    # inference learning's weight gradients: d E / d theta at that state
    rule = InferenceLearning(GradientDescent(0.2), StopRule(max_steps=2000))
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, x, tg)
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    written_energy(model, [x, *[h.detach() for h in hidden], onehot]).backward()
    ref = [p.grad for p in model.parameters()]
    assert max(float((a - b).abs().max()) for a, b in zip(ours, ref)) < 1e-9


def test_queries_keep_their_clamps():
    model, graph = net()
    x, y = batch()
    label = classify(graph, x, steps=50)
    assert label.shape == (len(x), SIZES[-1])
    # the label is free: it moves away from its feed-forward value
    assert not torch.allclose(label, model(x)[0])
    img = generate(graph, y, torch.zeros_like(x), steps=50)
    assert img.shape == x.shape and img.abs().sum() > 0
    known = torch.zeros_like(x, dtype=torch.bool)
    known[:, :6] = True
    filled = complete(graph, torch.where(known, x, torch.zeros_like(x)), known, steps=50)
    assert torch.equal(filled[:, :6], x[:, :6])
    assert not torch.equal(filled[:, 6:], torch.zeros_like(filled[:, 6:]))


def test_bad_input_is_one_clear_error():
    with pytest.raises(OptionError, match="alpha_gen"):
        bidirectional(SIZES, alpha_gen=0.0)
    with pytest.raises(OptionError, match="sizes"):
        bidirectional([784])
    _, graph = net()
    x, _ = batch()
    with pytest.raises(InputError, match="labels must be in"):
        generate(graph, torch.tensor([0, 9]), torch.zeros(2, SIZES[0], dtype=torch.float64))
    with pytest.raises(InputError, match="boolean mask"):
        complete(graph, x, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(OptionError, match="Bidirectional"):
        classify(PCGraph(mlp([4, 3, 2])), torch.zeros(2, 4))


@pytest.mark.slow
def test_bpc_learns_to_classify_and_generate_mnist():
    """200 batches of real MNIST: bPC classifies held-out digits well above chance and its
    generated digits are recognised by an independently trained classifier."""
    from predcode import data
    from predcode.experiments.generation import judge

    x, y = data.load("mnist", "train", normalize="[0,1]")
    torch.manual_seed(0)
    graph = PCGraph(bidirectional((784, 128, 128, 10), alpha_gen=0.03))
    rule = InferenceLearning(GradientDescent(0.1), 20)
    opt = torch.optim.Adam(graph.model.parameters(), lr=1e-3)
    for k in range(200):
        idx = torch.arange(k * 64, (k + 1) * 64)
        rule.step(graph, x[idx], targets(graph, y[idx], x[idx]), opt)
    vx, vy = x[50000:52000], y[50000:52000]
    acc = float((classify(graph, vx, steps=50).argmax(1) == vy).float().mean())
    assert acc > 0.8, acc
    labels = torch.arange(10).repeat(3)
    imgs = generate(graph, labels, torch.zeros(30, 784), steps=200)
    net_ = judge(x[:20000], y[:20000], 0)
    with torch.no_grad():
        judged = float((net_(imgs).argmax(1) == labels).float().mean())
    assert judged > 0.8, judged

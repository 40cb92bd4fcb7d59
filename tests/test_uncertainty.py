"""Uncertainty: AUROC against a brute-force count, ECE on hand-made cases, the relaxed
energy score, and Monte-Carlo PC (Langevin) sampling the exact posterior of a linear
Gaussian model in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import predcode as pc
from predcode import Gaussian, Node, PCGraph
from predcode.exceptions import InputError, OptionError
from predcode.models import mlp
from predcode.query import infer
from predcode.sampling import Langevin, sample
from predcode.uncertainty import (
    auroc,
    expected_calibration_error,
    mc_predictive,
    predictive_entropy,
    relaxed_energy,
    reliability,
)

D = torch.float64


# -- AUROC ------------------------------------------------------------------------------
def brute_auroc(a, b):
    wins = sum((y > x) + 0.5 * (y == x) for x in a.tolist() for y in b.tolist())
    return wins / (len(a) * len(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_equals_pairwise_count_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 6, (37,), generator=g).double()  # many ties
    b = torch.randint(1, 8, (23,), generator=g).double()
    assert math.isclose(auroc(a, b), brute_auroc(a, b), abs_tol=1e-12)
    x, y = torch.randn(50, generator=g), torch.randn(41, generator=g) + 0.5
    assert math.isclose(auroc(x, y), brute_auroc(x, y), abs_tol=1e-12)


def test_auroc_extremes_and_errors():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.ones(4), torch.ones(3)) == 0.5
    with pytest.raises(InputError):
        auroc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(InputError):
        auroc(torch.tensor([float("nan")]), torch.tensor([1.0]))


# -- calibration --------------------------------------------------------------------------
def test_ece_hand_made_cases():
    # confidence 0.9 everywhere, 9 of 10 right: perfectly calibrated
    probs = torch.tensor([[0.9, 0.1]] * 10, dtype=D)
    labels = torch.tensor([0] * 9 + [1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # confidence 1.0, half right: ECE 0.5
    probs = torch.tensor([[1.0, 0.0]] * 4)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.5)
    # two bins: 2 examples at 0.6 (both right: gap 0.4), 2 at 0.95 (one right: gap 0.45)
    probs = torch.tensor([[0.6, 0.4], [0.4, 0.6], [0.95, 0.05], [0.95, 0.05]], dtype=D)
    labels = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.45)


def test_reliability_bins_edges_and_shape_errors():
    # a confidence exactly on an edge (k/15) goes to the lower bin; 1.0 to the last bin
    probs = torch.tensor([[1 / 15, 1 - 1 / 15], [1.0, 0.0]], dtype=D).flip(1)
    r = reliability(probs, torch.tensor([0, 0]), bins=15)
    assert r.counts[13] == 1 and r.counts[14] == 1 and r.counts.sum() == 2
    assert float(r.accuracy[13]) == 1.0 and float(r.accuracy[14]) == 0.0
    with pytest.raises(InputError):
        reliability(torch.rand(3, 2), torch.tensor([0, 1]))


def test_predictive_entropy():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    torch.testing.assert_close(predictive_entropy(p), torch.tensor([0.0, math.log(2)]))


# -- relaxed energy -------------------------------------------------------------------------
def _classifier():
    torch.manual_seed(0)
    return PCGraph(mlp([6, 8, 8, 4], act="tanh", output_energy="ce").double())


def test_output_free_energy_is_zero_so_the_score_clamps_the_label():
    graph = _classifier()
    x = torch.randn(5, 6, dtype=D)
    relaxed = infer(graph, {graph.inputs[0]: x}, stop=10)
    assert float(relaxed.trace.energy[-1].abs()) < 1e-12


def test_relaxed_energy_starts_at_the_cross_entropy_and_decreases():
    graph = _classifier()
    x = torch.randn(7, 6, dtype=D)
    logits = graph.model(x).detach()
    ce = F.cross_entropy(logits, logits.argmax(1), reduction="none")
    torch.testing.assert_close(relaxed_energy(graph, x, stop=0), ce)
    e10 = relaxed_energy(graph, x, stop=10)
    e40 = relaxed_energy(graph, x, stop=40)
    assert (e10 < ce).all() and (e40 <= e10 + 1e-12).all() and (e40 > 0).all()
    other = (logits.argmax(1) + 1) % 4  # another label starts at its own cross-entropy
    torch.testing.assert_close(
        relaxed_energy(graph, x, label=other, stop=0), F.cross_entropy(logits, other, reduction="none")
    )


def test_mc_predictive_at_zero_temperature_is_the_feedforward_softmax():
    graph = _classifier()
    x = torch.randn(5, 6, dtype=D)
    want = torch.softmax(graph.model(x), -1).detach()
    got = mc_predictive(graph, x, Langevin(0.05, temperature=0.0), chains=2, burn_in=3, samples=4)
    torch.testing.assert_close(got, want)
    noisy = mc_predictive(
        graph,
        x,
        Langevin(0.05, temperature=1.0, generator=torch.Generator().manual_seed(0)),
        chains=3,
        burn_in=5,
        samples=5,
    )
    torch.testing.assert_close(noisy.sum(1), torch.ones(5, dtype=D))
    assert not torch.allclose(noisy, want)


# -- Langevin sampling ---------------------------------------------------------------------
def _gaussian_model():
    """prior mean (input) -> z ~ N(mu0, 1/2) -> x ~ N(W z + b, 1/4)."""
    lin = nn.Linear(2, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.3], [0.2, 0.4], [-0.6, 0.1]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    model = nn.Sequential(Node(Gaussian(precision=2.0), name="z"), lin, Node(Gaussian(precision=4.0), name="x"))
    return PCGraph(model), lin


def test_langevin_samples_the_exact_gaussian_posterior():
    graph, lin = _gaussian_model()
    chains, eta = 4000, 0.01
    mu0 = torch.tensor([0.3, -0.5], dtype=D).expand(chains, 2)
    obs = torch.tensor([0.8, -0.1, 0.4], dtype=D)
    W, b = lin.weight.detach(), lin.bias.detach()
    precision = 2.0 * torch.eye(2, dtype=D) + 4.0 * W.T @ W
    cov = torch.linalg.inv(precision)
    mean = cov @ (2.0 * mu0[0] + 4.0 * W.T @ (obs - b))
    ula_cov = torch.linalg.inv(precision @ (torch.eye(2, dtype=D) - eta * precision / 2))

    def draw(temperature):
        values = graph.feedforward([mu0])
        values[graph.index("x")] = obs.expand(chains, 3).clone()
        solver = Langevin(eta, temperature, generator=torch.Generator().manual_seed(0))
        s = sample(graph, values, [graph.index("z")], solver, burn_in=300, samples=40, thin=10)
        z = s["z"].reshape(-1, 2)
        return z.mean(0), torch.cov(z.T)

    m, c = draw(1.0)
    std = cov.diagonal().sqrt()
    assert ((m - mean).abs() < 0.03 * std).all(), (m, mean)
    torch.testing.assert_close(c, ula_cov, rtol=0.05, atol=0.03 * float(ula_cov.abs().max()))
    torch.testing.assert_close(c, cov, rtol=0.06, atol=0.04 * float(cov.abs().max()))
    _, c2 = draw(2.0)  # exp(-E/T): the temperature scales the covariance
    torch.testing.assert_close(c2, 2 * ula_cov, rtol=0.05, atol=0.06 * float(ula_cov.abs().max()))


def test_langevin_at_zero_temperature_is_gradient_descent():
    graph, _ = _gaussian_model()
    mu0 = torch.randn(3, 2, dtype=D)
    values = graph.feedforward([mu0])
    values[2] = torch.randn(3, 3, dtype=D)
    a = pc.relax(graph, values, [1], Langevin(0.1, temperature=0.0), pc.StopRule(15)).values[1]
    b = pc.relax(graph, values, [1], pc.GradientDescent(0.1), pc.StopRule(15)).values[1]
    torch.testing.assert_close(a, b)


def test_langevin_options_are_checked():
    with pytest.raises(OptionError, match="step size"):
        Langevin(0.0)
    with pytest.raises(OptionError, match="temperature"):
        Langevin(0.1, temperature=-1.0)
    graph, _ = _gaussian_model()
    values = graph.feedforward([torch.zeros(2, 2, dtype=D)])
    with pytest.raises(OptionError):
        sample(graph, values, [1], pc.GradientDescent(0.1), burn_in=1, samples=1)
    with pytest.raises(OptionError):
        sample(graph, values, [1], Langevin(0.1), burn_in=1, samples=0)


def test_experiments_are_registered():
    from predcode.experiments import registry

    assert {"precision", "uncertainty"} <= set(registry())


@pytest.mark.slow
def test_uncertainty_experiment_writes_result_and_figure(tmp_path, monkeypatch):
    """A tiny run of ``predcode repro uncertainty`` (needs the cached MNIST and Fashion-MNIST)."""
    import json

    from predcode.experiments import common
    from predcode.experiments import uncertainty as exp

    load = common.load

    def small(name, split):
        s = load(name, split)
        return common.Split(s.x[:2000], s.y[:2000]) if split == "train" else s

    monkeypatch.setattr(common, "load", small)
    monkeypatch.setitem(exp.SETTINGS, "default", {"epochs": 1, "n_eval": 100})
    exp.run(tmp_path, False, 0)
    result = json.loads((tmp_path / "result.json").read_text())
    assert (tmp_path / "uncertainty.png").exists()
    for rule in ("pc", "bp"):
        r = result["results"][rule]
        assert 0 <= r["ece"] <= 1 and all(0 <= v <= 1 for v in r["auroc"].values())


def test_langevin_on_the_errors_samples_the_same_posterior():
    """Two latent layers (z1 -> z2 -> x, linear Gaussian, x observed): Langevin on the
    errors (x_i = mu_i + e_i) samples the exact joint posterior of (z1, z2), as Langevin
    on the states does (the map has a unit Jacobian determinant)."""
    from predcode.inference import Variables

    torch.manual_seed(0)
    a, c = nn.Linear(2, 2, bias=False).double(), nn.Linear(2, 3, bias=False).double()
    model = nn.Sequential(
        Node(Gaussian(precision=1.0), name="z1"),
        a,
        Node(Gaussian(precision=2.0), name="z2"),
        c,
        Node(Gaussian(precision=4.0), name="x"),
    )
    graph = PCGraph(model)
    A, C = a.weight.detach(), c.weight.detach()
    chains, eta = 4000, 0.01
    prior = torch.tensor([0.3, -0.5], dtype=D)
    obs = torch.tensor([0.8, -0.1, 0.4], dtype=D)
    # joint precision of (z1, z2) from E = |z1-p|^2/2 + |z2-A z1|^2 + 2|x-C z2|^2
    eye = torch.eye(2, dtype=D)
    precision = torch.cat([torch.cat([eye + 2 * A.T @ A, -2 * A.T], 1), torch.cat([-2 * A, 2 * eye + 4 * C.T @ C], 1)])
    mean = torch.linalg.solve(precision, torch.cat([prior, 4 * C.T @ obs]))
    cov = torch.linalg.inv(precision)
    for variables in (Variables.STATES, Variables.ERRORS):
        values = graph.feedforward([prior.expand(chains, 2)])
        values[graph.index("x")] = obs.expand(chains, 3).clone()
        solver = Langevin(eta, 1.0, generator=torch.Generator().manual_seed(0))
        s = sample(
            graph,
            values,
            [graph.index("z1"), graph.index("z2")],
            solver,
            burn_in=400,
            samples=40,
            thin=10,
            variables=variables,
        )
        z = torch.cat([s["z1"].reshape(-1, 2), s["z2"].reshape(-1, 2)], 1)
        std = cov.diagonal().sqrt()
        assert ((z.mean(0) - mean).abs() < 0.05 * std).all(), (variables, z.mean(0), mean)
        torch.testing.assert_close(torch.cov(z.T), cov, rtol=0.08, atol=0.05 * float(cov.abs().max()))

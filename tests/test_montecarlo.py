"""Monte Carlo PC: its weight gradient is the maximum-likelihood gradient (a linear-Gaussian
model where that gradient is known in closed form), ancestral sampling draws the model's
joint, and the scores of the generation experiment."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from predcode import Node, OptionError, PCGraph
from predcode.inference import GradientDescent
from predcode.rules import InferenceLearning, MonteCarloPC
from predcode.sampling import Langevin, ancestral
from predcode.temporal import MatrixGaussian

D = torch.float64


def linear_gaussian(dz=2, dx=3, seed=0):
    """latent z ~ N(0, I) -> x = W z + b + N(0, I)."""
    torch.manual_seed(seed)
    model = nn.Sequential(Node(name="latent"), nn.Linear(dz, dx), Node(name="x")).to(D)
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(dx, dz, dtype=D))
        model[1].bias.copy_(0.3 * torch.randn(dx, dtype=D))
    return model


def exact_nll_gradient(W, b, x):
    r"""d(-log p(x))/dW for x ~ N(b, S), S = W Wᵀ + I, averaged over the rows of x:
    (S⁻¹ - S⁻¹ d dᵀ S⁻¹) W with d = x - b."""
    S = W @ W.T + torch.eye(W.shape[0], dtype=D)
    Si = torch.linalg.inv(S)
    grads = [(Si - Si @ torch.outer(d, d) @ Si) @ W for d in x - b]
    return torch.stack(grads).mean(0)


def test_mcpc_weight_gradient_is_the_maximum_likelihood_gradient():
    """Many Langevin chains on one image: the averaged local weight gradient matches
    -d log p(x)/dW within 5 % (Langevin bias and Monte Carlo noise); plain PC's gradient at
    the MAP misses the posterior covariance term W Σ and is far off."""
    model = linear_gaussian()
    graph = PCGraph(model)
    W, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    x = torch.tensor([[1.5, -0.7, 0.4]], dtype=D)
    chains = 400
    xb = x.expand(chains, 3)
    exact = exact_nll_gradient(W, b, x)
    rule = MonteCarloPC(Langevin(0.02, generator=torch.Generator().manual_seed(1)), burn_in=300, samples=400)
    model.zero_grad()
    rule.gradients(graph, torch.zeros(chains, 2, dtype=D), xb)
    mc = model[1].weight.grad.clone()
    model.zero_grad()
    InferenceLearning(GradientDescent(0.2), 500).gradients(graph, torch.zeros(1, 2, dtype=D), x)
    pc = model[1].weight.grad.clone()
    err_mc = float((mc - exact).norm() / exact.norm())
    err_pc = float((pc - exact).norm() / exact.norm())
    print(f"relative error: MCPC {err_mc:.4f}, PC at the MAP {err_pc:.4f}")
    assert err_mc < 0.05, err_mc
    assert err_pc > 0.3, err_pc


def test_ancestral_sampling_draws_the_joint():
    """x = W z + b + noise with z ~ N(0, I): sample mean b and covariance W Wᵀ + Σ, for a
    scalar precision and for a full precision matrix."""
    model = linear_gaussian()
    W, b = model[1].weight.detach(), model[1].bias.detach()
    n = 200000
    g = torch.Generator().manual_seed(0)
    values = ancestral(PCGraph(model), [torch.zeros(n, 2, dtype=D)], g)
    x = values[-1]
    assert torch.allclose(x.mean(0), b, atol=0.02)
    assert torch.allclose(torch.cov(x.T), W @ W.T + torch.eye(3, dtype=D), atol=0.05)
    P = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=D)
    model[2] = Node(MatrixGaussian(P), name="x")
    x = ancestral(PCGraph(model), [torch.zeros(n, 2, dtype=D)], g)[-1]
    assert torch.allclose(torch.cov(x.T), W @ W.T + torch.linalg.inv(P), atol=0.06)
    feed = ancestral(PCGraph(model), [torch.zeros(5, 2, dtype=D)], noise=False)
    assert torch.allclose(feed[-1], b.expand(5, 3))  # the means: z = 0 fed forward


def test_mcpc_trains_a_decoder_step():
    """One MCPC step on a small Bernoulli decoder changes the weights and reports finite
    energies (float32, the experiment's configuration at small size)."""
    from predcode.models import decoder

    torch.manual_seed(0)
    dec = decoder((4, 8, 16), act="relu", output_energy="bernoulli")
    graph = PCGraph(dec)
    before = [p.detach().clone() for p in dec.parameters()]
    rule = MonteCarloPC(
        Langevin(0.1, generator=torch.Generator().manual_seed(0)),
        burn_in=3,
        samples=4,
        map_solver=GradientDescent(0.1),
        map_stop=5,
    )
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    stats = rule.step(graph, torch.zeros(6, 4), torch.rand(6, 16), opt)
    assert torch.isfinite(stats.energy_final) and stats.steps == 7
    assert all(not torch.equal(a, p) for a, p in zip(before, dec.parameters()))


def test_bad_options_name_the_problem():
    with pytest.raises(OptionError, match="Langevin solver"):
        MonteCarloPC(GradientDescent(0.1))
    with pytest.raises(OptionError, match="samples >= 1"):
        MonteCarloPC(Langevin(0.1), samples=0)
    with pytest.raises(OptionError, match="map_solver"):
        MonteCarloPC(Langevin(0.1), map_stop=5)
    with pytest.raises(OptionError, match="input"):
        ancestral(PCGraph(linear_gaussian()), [])


def test_frechet_distance():
    """Zero for the same set; the closed form for Gaussians with diagonal covariances,
    |μa-μb|² + Σ(σa - σb)², estimated from large samples."""
    from predcode.experiments.montecarlo import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(50000, 3, generator=g, dtype=D) * torch.tensor([1.0, 2.0, 0.5], dtype=D)
    b = 1.0 + torch.randn(50000, 3, generator=g, dtype=D) * torch.tensor([2.0, 2.0, 1.0], dtype=D)
    assert abs(frechet_distance(a, a)) < 1e-8
    assert abs(frechet_distance(a, b) - (3 * 1.0 + 1.0 + 0.0 + 0.25)) < 0.1


def test_cli_rule_mcpc():
    """``--rule mcpc``: a Langevin chain at the state rate, half the steps burn in."""
    from predcode.app.config import TrainConfig
    from predcode.app.train import build_rule

    rule = build_rule(TrainConfig(rule="mcpc", steps=9, state_lr=0.05))
    assert isinstance(rule, MonteCarloPC) and isinstance(rule.solver, Langevin)
    assert (rule.burn_in, rule.samples, rule.solver.lr) == (4, 5, 0.05)

"""Shared fixtures for the core tests: small random MLPs, batches, and an independent
autograd backprop reference (plain torch, not predcode's Backprop rule)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from predcode import PCGraph
from predcode.models import mlp

# The nets here are tiny: intra-op threads only add synchronisation overhead (a
# float32 log_softmax on an 8x3 tensor takes ~1 ms with 2 threads under load, ~5 us
# with one), so keep torch on one thread for the test process.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_global_rng() -> None:
    """Every test starts from the same global random state, so a test that draws from
    torch's (or numpy's) global generator sees the same numbers whatever ran before it,
    alone or in the whole suite, in any order."""
    import random

    import numpy as np

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def _net(
    sizes, act: str = "tanh", out: str = "se", seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[nn.Module, PCGraph]:
    torch.manual_seed(seed)
    model = mlp(sizes, act=act, output_energy=out).to(dtype)
    return model, PCGraph(model)


def _batch(
    sizes, out: str = "se", batch: int = 5, seed: int = 1, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sizes[0], generator=g, dtype=dtype)
    if out == "ce":
        y = torch.randint(0, sizes[-1], (batch,), generator=g)
    else:
        y = torch.randn(batch, sizes[-1], generator=g, dtype=dtype)
    return x, y


def _bp_grads(model: nn.Module, x: Tensor, y: Tensor, out: str) -> list[Tensor]:
    """d loss / d params by plain autograd on the model's output.

    SE: ``0.5 * sum_j (f(x)_j - y_j)^2`` averaged over the batch; CE: cross-entropy
    averaged over the batch.  Leaves the model's ``.grad`` untouched."""
    params = [p for p in model.parameters() if p.requires_grad]
    output = model(x)
    if out == "ce":
        loss = F.cross_entropy(output, y)
    else:
        loss = 0.5 * ((output - y) ** 2).sum(dim=1).mean()
    return [g.detach() for g in torch.autograd.grad(loss, params)]


def _max_rel_error(got: list[Tensor], want: list[Tensor]) -> float:
    """Largest per-tensor relative error ``||a - b|| / ||b||``."""
    assert len(got) == len(want) and got
    errors = []
    for a, b in zip(got, want):
        assert a is not None, "a parameter received no gradient"
        assert a.shape == b.shape
        errors.append(float((a - b).norm() / b.norm().clamp_min(1e-30)))
    return max(errors)


@pytest.fixture
def make_net() -> Callable[..., tuple[nn.Module, PCGraph]]:
    """``make_net(sizes, act="tanh", out="se", seed=0, dtype=float64) -> (model, graph)``."""
    return _net


@pytest.fixture
def make_batch() -> Callable[..., tuple[Tensor, Tensor]]:
    """``make_batch(sizes, out="se", batch=5, seed=1, dtype=float64) -> (x, y)``;
    ``y`` holds class labels for ``out="ce"``."""
    return _batch


@pytest.fixture
def bp_grads() -> Callable[..., list[Tensor]]:
    return _bp_grads


@pytest.fixture
def max_rel_error() -> Callable[[list[Tensor], list[Tensor]], float]:
    return _max_rel_error


@pytest.fixture
def rule_grads() -> Callable[..., list[Tensor]]:
    """``rule_grads(rule, graph, x, y)``: run ``rule.gradients`` from zeroed grads and
    return a copy of every parameter's ``.grad`` (None where it got none)."""

    def run(rule, graph: PCGraph, x: Tensor, y: Tensor) -> list[Tensor | None]:
        graph.model.zero_grad(set_to_none=True)
        rule.gradients(graph, x, y)
        return [None if p.grad is None else p.grad.detach().clone() for p in graph.model.parameters()]

    return run

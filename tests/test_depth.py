"""muPC parametrisation, residual factories and the depth experiment's engine."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import predcode as pc
from predcode.models import mupc, residual_cnn, residual_mlp


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _hidden_values(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    graph = pc.PCGraph(model)
    with torch.no_grad():
        values = graph.feedforward([x])
    return [values[i] for i, s in enumerate(graph.slots) if not s.is_input][:-1]


def test_plan_gives_the_depth_mup_multipliers():
    model = residual_mlp(784, 128, 30, 10)
    steps = mupc.plan(model, "mupc")
    assert [s.role for s in steps] == ["input"] + ["hidden"] * 28 + ["output"]
    assert steps[0].multiplier == pytest.approx(1 / math.sqrt(784))
    assert all(s.multiplier == pytest.approx(1 / math.sqrt(128 * 30)) for s in steps[1:-1])
    assert steps[-1].multiplier == pytest.approx(1 / 128)
    assert {s.multiplier for s in mupc.plan(model, "sp")} == {1.0}
    cnn = mupc.plan(residual_cnn(1, 8, 5, 10), "mupc")
    assert cnn[0].fan_in == 9 and cnn[1].fan_in == 72 and cnn[-1].fan_in == 8
    assert cnn[1].multiplier == pytest.approx(1 / math.sqrt(72 * 5))


@pytest.mark.parametrize("depth", [8, 32, 128])
def test_mupc_activations_stay_order_one_at_any_depth(depth):
    x = torch.randn(256, 784, generator=_gen(1))
    model = residual_mlp(784, 128, depth, 10, parametrization="mupc", generator=_gen(depth))
    rms = [float(v.pow(2).mean().sqrt()) for v in _hidden_values(model, x)]
    assert 0.7 < rms[0] < 1.3  # z1 = W x / sqrt(D) with W ~ N(0, 1) and |x|^2 ~ D
    assert max(rms) < 3.0 and min(rms) > 0.7  # the residual stream stays O(1): <= e^(1/2)
    with torch.no_grad():
        out = model(x)
    assert float(out.pow(2).mean().sqrt()) < 5 / math.sqrt(128) * 3  # readout O(1/sqrt(N))


def test_standard_parametrisation_explodes_with_depth():
    x = torch.randn(256, 784, generator=_gen(1))
    torch.manual_seed(0)
    shallow = _hidden_values(residual_mlp(784, 128, 8, 10, parametrization="sp"), x)[-1]
    deep = _hidden_values(residual_mlp(784, 128, 128, 10, parametrization="sp"), x)[-1]
    growth = float(deep.pow(2).mean().sqrt() / shallow.pow(2).mean().sqrt())
    assert growth > 100  # geometric growth of the residual stream's variance


def test_cnn_mupc_activations_order_one():
    x = torch.randn(16, 1, 12, 12, generator=_gen(2))
    for depth in (4, 32):
        model = residual_cnn(1, 16, depth, 10, parametrization="mupc", generator=_gen(depth))
        rms = [float(v.pow(2).mean().sqrt()) for v in _hidden_values(model, x)]
        assert min(rms) > 0.5 and max(rms) < 3.0


def test_feedforward_equals_explicit_multipliers():
    model = residual_mlp(20, 16, 6, 5, parametrization="mupc", generator=_gen(3)).double()
    x = torch.randn(7, 20, dtype=torch.float64, generator=_gen(4))
    raw = [model.input, *[b.layer for b in model.blocks], model.readout]
    W = [m.parametrizations.weight.original for m in raw]
    L, N, D = 6, 16, 20
    z = (W[0] @ x.T).T / math.sqrt(D)
    for l in range(1, L - 1):
        z = z + torch.relu(z) @ W[l].T / math.sqrt(N * L)
    expected = torch.relu(z) @ W[-1].T / N
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    # the raw weights are standard normal; the parameters the optimiser sees are the raw ones
    names = [n for n, _ in model.named_parameters()]
    assert all(n.endswith("parametrizations.weight.original") for n in names)


def test_apply_twice_raises_and_sp_is_marked():
    model = residual_mlp(20, 16, 5, 5)
    mupc.apply(model, "mupc")
    assert mupc.parametrization(model) == "mupc"
    with pytest.raises(mupc.ParametrizationError, match="already has the 'mupc'"):
        mupc.apply(model, "mupc")
    sp = residual_mlp(20, 16, 5, 5, parametrization="sp")
    with pytest.raises(mupc.ParametrizationError):
        mupc.apply(sp, "mupc")
    with pytest.raises(mupc.ParametrizationError, match="unknown parametrisation"):
        mupc.apply(residual_mlp(20, 16, 5, 5), "ntk")  # type: ignore[arg-type]
    with pytest.raises(mupc.ParametrizationError, match="needs an input layer"):
        mupc.apply(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))


def test_pc_gradients_exact_under_fixed_prediction_float64():
    """Fixed prediction at rate 1 for depth steps equals backprop's gradient on the muPC net."""
    model = residual_mlp(12, 8, 6, 4, parametrization="mupc", generator=_gen(5)).double()
    graph = pc.PCGraph(model)
    x = torch.randn(5, 12, dtype=torch.float64, generator=_gen(6))
    y = torch.randint(0, 4, (5,), generator=_gen(7))
    pc.FixedPrediction().gradients(graph, x, y)
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    pc.Backprop().gradients(graph, x, y)
    for a, b in zip(ours, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_closed_form_engine_equals_library():
    from predcode.experiments.depth import library_check

    check = library_check(0, depth=7, width=12)
    assert check["max_rel_diff"] < 1e-9


def test_fused_compiled_functional_call_sees_multipliers():
    """The fused engine differentiates through functional_call over the raw parameters."""
    model = residual_mlp(12, 8, 5, 4, parametrization="mupc", generator=_gen(8)).double()
    graph = pc.PCGraph(model)
    x = torch.randn(5, 12, dtype=torch.float64, generator=_gen(9))
    y = torch.randint(0, 4, (5,), generator=_gen(10))
    pc.InferenceLearning(pc.GradientDescent(0.1), stop=5).gradients(graph, x, y)  # fused path
    fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    stepwise = pc.InferenceLearning(pc.OptimizerSolver(torch.optim.SGD, lr=0.1), stop=5)
    stepwise.gradients(graph, x, y)
    for a, b in zip(fused, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_deep_mupc_net_trains_in_a_few_steps():
    torch.manual_seed(0)
    centers = torch.randn(4, 32, generator=_gen(11)) * 1.5
    labels = torch.arange(64) % 4
    x = centers[labels] + 0.3 * torch.randn(64, 32, generator=_gen(12))
    model = residual_mlp(32, 32, 24, 4, parametrization="mupc", generator=_gen(13))
    from predcode.experiments.depth import ResidualChain

    chain, opt = ResidualChain(model), torch.optim.Adam(model.parameters(), lr=0.1)
    y = torch.nn.functional.one_hot(labels, 4).float()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        losses.append(float(chain.step(x, y, 0.5 / 64, 24)))
        opt.step()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == labels).float().mean())
    assert losses[-1] < 0.5 * losses[0] and acc > 0.9


@pytest.mark.slow
def test_thirty_layers_reach_92_5_after_900_steps():
    """jpc's notebook protocol: width 128, depth 30, batch 64, 900 steps -> >= 92.5 %."""
    from predcode.experiments import depth

    torch.set_num_threads(1)
    data = depth.load_data(0)
    r = depth.train("mupc", "pc", 30, width=128, steps=900, lr=0.1, seed=0, data=data)
    assert r["accuracy"] >= 92.5


def test_claim128_records_T_and_writes_json(tmp_path):
    """The long-run entry point with a tiny network: T is honoured and recorded with provenance."""
    import json

    from predcode.experiments import depth

    torch.set_num_threads(1)
    r = depth.claim128(tmp_path, 0, T=2, steps=3, depth=4)
    saved = json.loads((tmp_path / "claim128.json").read_text())
    assert saved["T"] == 2 and saved["depth"] == 4 and saved["steps"] == 3
    assert saved["holds"] is False  # 3 steps are not the 3-epoch protocol
    assert "--T 2" in saved["command"] and saved["environment"]["date"]
    assert 0.0 <= r["accuracy"] <= 100.0
    depth.claim128(tmp_path, 0, T=2, steps=2, depth=4, kind="sp", lr=1e-3)
    sp = json.loads((tmp_path / "claim128_sp.json").read_text())
    assert sp["kind"] == "sp" and sp["lr"] == 1e-3 and "--kind sp" in sp["command"]

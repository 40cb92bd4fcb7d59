"""Building blocks of ``predcode repro deep`` (ePC vs sPC vs backprop on deep nets) on a
tiny problem: an 8-layer MLP on random data."""

from __future__ import annotations

import torch

from predcode.experiments import common, deep, registry
from predcode.graph import PCGraph
from predcode.rules import Backprop

SIZES = [20] + [32] * 7 + [10]  # 8 weight layers


def _batch(seed: int = 0, n: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, SIZES[0], generator=g), torch.randint(0, 10, (n,), generator=g)


def _updates(method: str, seed: int = 0):
    model = deep.make_model("mlp", seed, sizes=SIZES)
    graph = PCGraph(model)
    x, y = _batch(seed)
    g_bp, _ = deep.update(Backprop(), graph, x, y)
    rule, _ = deep.make_rule(method)
    g, stats = deep.update(rule, graph, x, y)
    return g, g_bp, stats


def test_epc_in_the_paper_regime_is_aligned_with_backprop_in_every_layer():
    g, g_bp, stats = _updates("epc")
    assert stats.trace.steps == deep.EPC_STEPS
    cos = deep.cosines(g, g_bp)
    assert len(cos) == len(SIZES) - 1
    assert min(cos) > 0.9, cos
    # a scaled backprop gradient: about e_lr * T below backprop's in the hidden layers, the
    # output layer's own (its error is the clamped output's)
    ratio = [float(a.norm() / b.norm()) for a, b in zip(g, g_bp)]
    assert all(0.2 * deep.EPC_LR * deep.EPC_STEPS < r < 5 * deep.EPC_LR * deep.EPC_STEPS for r in ratio[:-1]), ratio
    assert 0.5 < ratio[-1] < 2.0


def test_spc_at_the_same_budget_leaves_the_first_layers_untouched():
    g, g_bp, _ = _updates("spc")
    depth = len(SIZES) - 1
    reached = deep.SPC_STEPS  # one node per inference step from the output
    for k in range(depth - reached):
        assert torch.count_nonzero(g[k]) == 0, k  # exactly zero, not small
    assert all(float(t.norm()) > 0 for t in g[depth - reached + 1 :])
    cos = deep.cosines(g, g_bp)
    assert cos[: depth - reached] == [0.0] * (depth - reached)
    assert cos[-2] > 0.9


def _equilibrium_check(seed: int = 1):
    model = deep.make_model("mlp", seed, sizes=SIZES)
    x, y = _batch(seed)
    eq, probes = deep.choose_eq_solver(model, [(x, y), _batch(seed + 1)])
    return eq, probes, deep.equilibrium_check(model, x, y, eq)


def test_near_equilibrium_epc_chooses_a_converging_solver_and_stops_early():
    eq, probes, check = _equilibrium_check()
    # rate 0.3 never settles on the Glorot-initialised net; the first candidate whose
    # relaxations all stop by the tolerance within the cap is chosen
    assert probes[-1]["converged"] and (probes[-1]["lr"], probes[-1]["momentum"]) == eq
    assert all(not p["converged"] for p in probes[:-1])
    assert check["solver"] == list(eq)
    assert 1 < check["steps"] < deep.EQ_MAX_STEPS
    assert check["reference_grad_norm_end"] < check["grad_norm_end"]
    assert all(r < 0.2 for r in check["relative_update_difference"])


def test_near_equilibrium_epc_update_is_close_to_a_long_relaxation():
    """``energy_rtol=1e-4`` stops the relaxation of the Glorot-initialised net a little
    short of equilibrium: the worst layer's update has cosine 0.989 to a 200-step
    relaxation's here (0.976-0.999 over seeds 0-3), so the bound is 0.97, not 0.99."""
    _, _, check = _equilibrium_check()
    assert min(check["cos_to_reference"]) > 0.97, check["cos_to_reference"]


def test_training_runs_pair_methods_by_seed_and_layer_cosines_are_per_batch():
    g = torch.Generator().manual_seed(3)
    train = common.Split(torch.rand(256, 784, generator=g), torch.randint(0, 10, (256,), generator=g))
    small = deep.MLP_SIZES
    deep.MLP_SIZES = [784, 32, 32, 10]
    try:
        a, info_a = deep.train_one("mlp", "bp", 1e-3, 5, train, 1, (784,))
        b, info_b = deep.train_one("mlp", "epc", 1e-3, 5, train, 1, (784,))
        _, info_c = deep.train_one("mlp", "epc-eq", 1e-3, 5, train, 1, (784,), max_updates=2)
        init = deep.make_model("mlp", 5)
        rows, steps = deep.layer_cosines(init, "spc", [(train.x[:64], train.y[:64])] * 2)
    finally:
        deep.MLP_SIZES = small
    assert info_a["updates"] == info_b["updates"] == 256 // deep.BATCH
    assert info_a["diverged"] is None and info_b["diverged"] is None
    assert info_c["updates"] == 2 and 1 < info_c["inference_steps_mean"] <= deep.EQ_MAX_STEPS
    # same initial weights and batches: the first losses agree, the weights moved apart
    assert abs(info_a["first_loss"] - info_b["first_loss"]) < 0.05
    assert not torch.equal(a[0].weight, init[0].weight)
    assert len(rows) == 2 and len(rows[0]) == 3 and steps == [deep.SPC_STEPS] * 2
    assert 0.0 <= deep.accuracy(a, train, (784,)) <= 1.0


def test_the_experiment_is_registered():
    assert "deep" in registry()

"""The signal-decay experiment: ePC moves every hidden layer at the first inference step,
sPC only the one below the clamped output, and ePC reaches the lowest energy in fewer
steps; both relax to the same energy."""

from __future__ import annotations

import math

import pytest
import torch

from predcode.experiments import signal_decay as sd


@pytest.mark.parametrize("depth", [5, 8])
def test_first_step_moves_every_layer_in_epc_and_only_the_top_one_in_spc(depth):
    hidden = depth - 1
    epc = sd.layer_dynamics(depth, torch.float64, "epc", steps=1)
    spc = sd.layer_dynamics(depth, torch.float64, "spc", steps=1)
    assert epc["first_move"] == [1] * hidden
    assert all(r > 0 for r in epc["update_rms"][0])
    assert spc["first_move"] == [None] * (hidden - 1) + [1]
    assert spc["update_rms"][0][:-1] == [0.0] * (hidden - 1) and spc["update_rms"][0][-1] > 0


def test_spc_reaches_layer_l_after_depth_minus_l_steps():
    d = sd.layer_dynamics(5, torch.float64, "spc", steps=5)
    assert d["first_move"] == d["expected_spc"] == [4, 3, 2, 1]


def test_steps_to_tolerance():
    energies = [10.0, 5.0, 2.0021, 2.0019, 2.0]
    assert sd.steps_to(energies, 2.0, 1e-3) == 3
    assert sd.steps_to(energies, 2.0, 1e-6) == 4
    assert sd.steps_to([10.0, float("nan"), 3.0], 2.0, 1e-3) is None


def test_epc_needs_fewer_steps_than_spc_at_depth_8_and_finds_the_same_energy():
    m = sd.measure(8, torch.float64, cap=300, window=50, grid={"gd": [0.1, 0.3]})
    spc, epc = (m["methods"][k]["best"][f"{sd.RTOL:g}"] for k in ("spc", "epc"))
    assert spc is not None and epc is not None
    assert epc["steps"] < spc["steps"], (epc, spc)
    assert m["ratio"][f"{sd.RTOL:g}"]["spc_over_epc"] == spc["steps"] / epc["steps"]
    lowest = {k: min(r["min_energy"] for r in m["methods"][k]["runs"]) for k in ("spc", "epc")}
    assert math.isclose(lowest["spc"], lowest["epc"], rel_tol=1e-7), lowest


def test_a_diverging_step_size_is_counted_as_diverged():
    r = sd.run_config(5, torch.float64, "spc", "gd", 3.0, cap=200, window=50)
    assert r["status"] == "diverged" and r["steps_run"] < 200

"""Every script in examples/ runs, at its tiny ``--quick`` size, in a fresh process, and
writes the result and figures it promises; the numbers it prints are checked where a tiny
run can already show them (so an example cannot rot silently)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cached_data import have_dataset

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {  # script -> (datasets it reads, files it writes)
    "own_cnn": (["mnist"], ["loss.png"]),
    "generate_and_inpaint": (["mnist"], ["generated.png", "inpainted.png", "inpainting_energy.png"]),
    "epc_vs_spc_deep_mlp": (["mnist"], ["epc_vs_spc.png"]),
    "recurrent": (["shakespeare"], ["test_loss.png"]),
    "reproduce_interference": ([], ["interference.png"]),
}


def have_text(name: str) -> bool:
    from predcode import data

    try:
        data.load_text(name, "test")
        return True
    except data.DatasetNotFoundError:
        return False


def test_every_example_is_tested():
    scripts = {p.stem for p in (ROOT / "examples").glob("*.py") if not p.stem.startswith("_")}
    assert scripts == set(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs(name, tmp_path):
    needs, files = EXAMPLES[name]
    for dataset in needs:
        cached = have_text(dataset) if dataset == "shakespeare" else have_dataset(dataset)
        if not cached:
            pytest.skip(f"needs {dataset}: run `predcode data fetch {dataset}`")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == result
    for f in files:
        assert (tmp_path / f).stat().st_size > 5000, f
    check = globals().get(f"check_{name}")
    if check:
        check(result)


def check_own_cnn(result):
    assert result["nodes"] == ["x", "node1", "node2", "out"]
    assert all(0.15 < a <= 1 for a in result["test_accuracy"].values())  # above chance (0.1)


def check_generate_and_inpaint(result):
    assert result["clamped_pixels_unchanged"]
    assert result["query_energy"][1] < result["query_energy"][0]


def check_epc_vs_spc_deep_mlp(result):
    cos = result["cosine_to_backprop_at_init"]
    assert min(cos["epc"]) > 0.9  # every layer hears the output at once
    assert abs(cos["spc"][0]) < 0.1  # sPC's first layer: 5 steps, 6 layers


def check_recurrent(result):
    assert all(v < result["uniform_guess_nats"] for v in result["test_loss_nats_per_char"].values())


def check_reproduce_interference(result):
    dip = result["min_untargeted_output"]
    assert dip["pc lr 0.1"] > 0.93 and dip["bp lr 0.1"] < 0.80  # the paper's claim
    assert result["claim_holds"]

"""The benchmark tooling's structure (tables, JSON, markdown section), on tiny settings.

No timing is asserted: the default suite times nothing.  pcx and compilation are off
(``--no-pcx --no-compile``) and every method runs in this process (``--in-process``).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from cached_data import needs_datasets

from predcode.app.cli import main
from predcode.bench import report
from predcode.bench.common import BenchConfig, cast_like, epoch_order
from predcode.bench.scaling import loglog_slope

needs_mnist = needs_datasets("mnist")


@pytest.fixture
def keep_threads():
    """`predcode bench` pins the process to cores and sets torch's threads: undo it."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    yield
    if affinity is not None:
        os.sched_setaffinity(0, affinity)
    torch.set_num_threads(threads)


TINY = ["--quick", "--no-pcx", "--no-compile", "--in-process", "--threads", "1", "--quiet"]


@needs_mnist
def test_quick_mlp_bench_writes_table_and_json(tmp_path, capsys, keep_threads):
    out = tmp_path / "bench"
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro\n")
    rc = main(
        [
            "bench",
            "mlp",
            *TINY,
            "--out",
            str(out),
            "--markdown",
            str(md),
            "--set",
            "mlp.steps=3",
            "--set",
            "mlp.warmup=1",
            "--set",
            "mlp.epoch_batches=2",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "== mlp:" in printed and "ms/step" in printed and "s/epoch" in printed

    payload = json.loads((out / "bench.json").read_text())
    machine = payload["machine"]
    for key in ("date_utc", "command", "cpu", "python", "torch", "threads", "git_commit"):
        assert key in machine
    assert machine["command"].startswith("predcode bench mlp")
    (result,) = payload["results"]
    assert result["name"] == "mlp" and result["measures"]
    methods = [r["method"] for r in result["rows"]]
    # --no-compile: PC takes the default path; then the PC step's products alone (the floor)
    assert methods == ["pc-default", "bp", "fixed-prediction", "pc-products"]
    *rows, floor = result["rows"]
    assert floor["products"] == 50 and floor["steps_timed"] == 3 and floor["median_ms"] > 0
    for row in rows:
        assert "error" not in row, row.get("error")
        assert row["steps_timed"] == 3 and row["median_ms"] > 0 and row["first_step_s"] > 0
        assert row["epoch_batches"] == 2 and row["batches_per_epoch"] == 468
        assert row["epoch_s_full"] > 0 and row["epoch_extrapolated"] is True
        assert 0.0 <= row["test_acc"] <= 1.0
    by = {r["method"]: r for r in result["rows"]}
    assert by["bp"]["vs_bp"] == pytest.approx(1.0)
    names = [c["name"] for c in result["checks"]]
    assert any("fixed prediction" in n for n in names)
    assert all(c["met"] in (True, False, None) for c in result["checks"])
    # per-benchmark JSON, markdown summary and the BENCHMARKS.md section
    assert json.loads((out / "mlp.json").read_text())["result"]["name"] == "mlp"
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nintro") and report.START in text and "### mlp" in text


def test_quick_scaling_bench_tiny_grid(tmp_path, keep_threads, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "scaling",
            *TINY,
            "--out",
            str(out),
            "--set",
            "scaling.T=1,2",
            "--set",
            "scaling.width=16",
            "--set",
            "scaling.depth=1",
            "--set",
            "scaling.batch=8",
            "--set",
            "scaling.steps=2",
            "--set",
            "scaling.warmup=0",
        ]
    )
    assert rc == 0
    result = json.loads((out / "scaling.json").read_text())["result"]
    sweeps = [(r["sweep"], r["value"]) for r in result["rows"]]
    assert sweeps == [("T", 1), ("T", 2), ("width", 16), ("depth", 1), ("batch", 8)]
    assert all(r["pc-default_ms"] > 0 and r["bp_ms"] > 0 for r in result["rows"])
    assert (out / "scaling.png").stat().st_size > 0


def test_unknown_benchmark_is_a_clear_error(capsys):
    assert main(["bench", "nonsense"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_gpu_bench_skips_without_cuda(tmp_path, keep_threads):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from predcode.bench import gpu

    result = gpu.run(BenchConfig(out=tmp_path, progress=False))
    assert "no CUDA" in result["skipped"]
    assert "skipped" in report.format_text(result)


def test_markdown_section_is_replaced_not_appended(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# B\n\nkeep me\n")
    report.update_markdown(path, "first")
    report.update_markdown(path, "second")
    text = path.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count(report.START) == 1 and text.count(report.END) == 1


def test_helpers():
    assert loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
    assert cast_like("1,8,64", [1]) == [1, 8, 64] and cast_like("0.5", 1.0) == 0.5
    assert cast_like("false", True) is False
    a, b = epoch_order(100, 0, 1), epoch_order(100, 0, 1)
    assert (a == b).all() and not (a == epoch_order(100, 0, 2)).all()
    assert report.check("x", 0.4, "<=", 0.45)["met"] is True
    assert report.check("x", None, "<=", 0.45)["met"] is None
    assert report.fmt(float("nan")) == "nan" and report.fmt(None) == "-"


def test_step_flops_counts_products_inside_autograd_grad():
    """The FLOP counter of the VGG benchmark sees products run by torch.autograd.grad
    (where PC's state gradients come from): forward 2mkn, input gradient 2mkn."""
    import torch

    from predcode.bench.floor import record_products, step_flops

    a = torch.randn(4, 5, requires_grad=True)
    w = torch.randn(5, 3)

    def step():
        (g,) = torch.autograd.grad((a @ w).sum(), a)
        return g

    assert step_flops(step) == 2 * (2 * 4 * 5 * 3)
    assert len(record_products(step)) == 2


@needs_mnist
def test_quick_deep_bench_times_epc_spc_and_bp_through_the_public_api(tmp_path, keep_threads):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "deep",
            *TINY,
            "--out",
            str(out),
            "--set",
            "deep.steps=2",
            "--set",
            "deep.warmup=0",
            "--set",
            "deep.T=2",
            "--set",
            "deep.train_size=512",
            "--set",
            "deep.tta_methods=bp,epc-2",
            "--set",
            "deep.target=0.99",
        ]
    )
    assert rc == 0
    payload = json.loads((out / "deep.json").read_text())
    assert payload["machine"]["command"].startswith("predcode bench deep")
    result = payload["result"]
    by = {r["method"]: r for r in result["rows"]}
    assert list(by) == ["bp", "spc-2", "epc-2"]
    for row in by.values():
        assert "error" not in row, row.get("error")
        assert row["steps_timed"] == 2 and row["median_ms"] > 0 and row["epoch_s"] > 0
    assert by["bp"]["vs_bp"] == pytest.approx(1.0) and by["epc-2"]["vs_spc"] > 0
    # the relaxations lowered the energy
    for name in ("spc-2", "epc-2"):
        assert by[name]["energy_final"] < by[name]["energy_initial"]
    (tta,) = result["tables"]
    rows = {r["method"]: r for r in tta["rows"]}
    assert list(rows) == ["bp", "epc-2"]
    for row in rows.values():  # 99 % in 4 batches is out of reach: reported, not an error
        assert row["reached_target"] is False and row["seconds_text"] == "not reached"
        assert 0.0 < row["best_acc"] < 0.99 and row["train_s_per_epoch"] > 0
    assert any("did not reach 99%" in n for n in result["notes"])
    assert "load_average" in result


@pytest.mark.parametrize("name", ["spc", "epc"])
def test_deep_bench_method_without_its_steps_is_a_clear_error(name):
    """``spc``/``epc`` need their T (``epc-20``): ``epc`` divided by None (a TypeError), and
    ``spc`` built a rule whose stop rule was None."""
    from predcode.bench.deep import HP, build

    with pytest.raises(ValueError, match=f"'{name}' needs its inference steps: {name}-T"):
        build(name, HP, 0)
    with pytest.raises(ValueError, match="choose bp, spc-T or epc-T"):
        build("cpc-5", HP, 0)

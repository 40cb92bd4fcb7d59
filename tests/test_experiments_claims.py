"""Machinery of the claim experiments on tiny sizes: seconds, not conclusions.

* the ensemble engine computes exactly the library's rules (IL, proximal IL, backprop);
* the proximal rule takes the exact proximal step; pairing, grids and orderings work;
* every experiment runs end to end on a tiny size and writes its JSON (numbers, paper
  numbers, hyperparameters, versions) and PNG files; the report and the CLI assemble them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from cached_data import have_dataset, needs_datasets

from predcode import PCGraph
from predcode.app.cli import main
from predcode.exceptions import OptionError
from predcode.experiments import common, registry, verdict
from predcode.experiments.ensemble import TIGHT, Ensemble, Equilibrium, check_against_library, library_rule, make_model
from predcode.experiments.report import CLAIM_ORDER, build
from predcode.inference import GradientDescent, StopRule
from predcode.models import mlp
from predcode.rules import ProximalInferenceLearning

CLAIMS = CLAIM_ORDER  # the inference-learning vs backprop claims, in the report's order


needs_data = needs_datasets("mnist", "fashion-mnist")


# -- the engine is the library's algorithm ---------------------------------------------
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "identity"])
@pytest.mark.parametrize("rule", ["bp", "il", "il-prox"])
def test_ensemble_gradients_equal_library_rules(act, rule):
    sizes = [6, 5, 4, 3]
    models = [make_model(sizes, act, seed, dtype=torch.float64) for seed in (0, 1)]
    net = Ensemble.from_models(models, act)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    y = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    lr = torch.tensor([0.3, 3.0], dtype=torch.float64)
    grads, _ = net.gradients(rule, x, y, steps=15, state_lr=0.1, lr=lr)
    for r, model in enumerate(models):
        model.zero_grad(set_to_none=True)
        library_rule(rule, 15, 0.1, float(lr[r])).gradients(PCGraph(model), x[r], y[r])
        for p, mine in zip(model.parameters(), grads):
            assert torch.allclose(p.grad, mine[r], rtol=1e-10, atol=1e-12), (act, rule)


def test_ensemble_runs_are_independent_and_diverged_runs_are_flagged():
    net = Ensemble.from_seeds([4, 3, 2], "tanh", [0, 0], dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    net.step("il", x, y, torch.tensor([0.1, float("nan")], dtype=torch.float64), steps=5)
    assert net.finite().tolist() == [True, False]
    alone = Ensemble.from_seeds([4, 3, 2], "tanh", [0], dtype=torch.float64)
    alone.step("il", x, y, torch.tensor([0.1], dtype=torch.float64), steps=5)
    assert torch.allclose(alone.W[0][0], net.W[0][0], rtol=1e-12, atol=0)
    assert net.error_rate(x, torch.zeros(5, dtype=torch.long))[1] == 1.0  # NaN run: all wrong


# -- proximal IL ---------------------------------------------------------------------
def test_proximal_rule_takes_the_exact_proximal_step_of_each_layer():
    torch.manual_seed(0)
    model = mlp([3, 2], act="identity", bias=True).double()  # one linear node, input clamped
    graph = PCGraph(model)
    x = torch.randn(1, 3, dtype=torch.float64)
    y = torch.randn(1, 2, dtype=torch.float64)
    eta = 2.5
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    rule = ProximalInferenceLearning(GradientDescent(0.1), StopRule(5))
    rule.step(graph, x, y, torch.optim.SGD(model.parameters(), lr=eta))
    # argmin_W,b 1/2 ||y - W x - b||^2 + 1/(2 eta) ||(W, b) - (W0, b0)||^2, solved directly
    a = torch.cat([x[0], torch.ones(1, dtype=torch.float64)])
    e = y[0] - (w0 @ x[0] + b0)
    step = eta * torch.outer(e, a) / (1 + eta * a @ a)
    assert torch.allclose(model[0].weight, w0 + step[:, :3])
    assert torch.allclose(model[0].bias, b0 + step[:, 3])
    # the layer's new prediction moves only part of the way: 1 / (1 + eta ||a||^2) remains
    remaining = y[0] - model(x)[0]
    assert torch.allclose(remaining, e / (1 + eta * a @ a))


def test_proximal_rule_rejects_what_it_cannot_do():
    graph = PCGraph(mlp([3, 4, 2], act="tanh", output_energy="ce", act_first=True))
    with pytest.raises(OptionError, match="Gaussian"):
        ProximalInferenceLearning(lr=0.1).gradients(graph, torch.randn(2, 3), torch.tensor([0, 1]))
    graph = PCGraph(mlp([3, 4, 2], act="tanh"))  # Linear -> tanh: the Linear is not last
    with pytest.raises(OptionError, match="last operation"):
        ProximalInferenceLearning(lr=0.1).gradients(graph, torch.randn(2, 3), torch.randn(2, 2))
    with pytest.raises(OptionError, match="needs lr"):
        ProximalInferenceLearning().gradients(PCGraph(mlp([3, 2])), torch.randn(2, 3), torch.randn(2, 2))


# -- pairing, selection, orderings ----------------------------------------------------
def test_batch_stream_pairs_runs_by_seed():
    stream = common.BatchStream(10, 3, [5, 5, 6])
    batches = list(stream.epoch(0))
    assert len(batches) == 4 and batches[-1].shape == (3, 1)
    order = torch.cat(batches, dim=1)
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    assert sorted(order[2].tolist()) == list(range(10))
    assert not torch.equal(stream.order(0), stream.order(1))  # a new order every epoch
    assert torch.equal(stream.order(1), common.BatchStream(10, 3, [5, 5, 6]).order(1))


def test_grid_selection_uses_seed_means_and_counts_divergence_as_worst():
    grid = common.Grid([0, 1], [0.1, 0.2, 0.4])
    assert grid.lr_tensor().tolist() == pytest.approx([0.1, 0.2, 0.4, 0.1, 0.2, 0.4])
    metric = torch.tensor([0.5, 0.3, float("nan"), 0.5, 0.35, 0.1])
    assert common.select_lr(metric, grid) == 1  # lr 0.4 has a diverged seed
    assert common.select_lr(torch.tensor([0.5, 0.3, 0.2, 0.5, 0.35, 0.25]), grid, lower_is_better=False) == 0


def test_compare_judges_each_rule_by_welch_and_flags_deviation_from_the_paper():
    pc, bp = common.stats([0.20, 0.22, 0.21]), common.stats([0.30, 0.31, 0.29])
    row = common.compare(
        "c",
        "err",
        pc,
        bp,
        epc=common.stats([0.28, 0.30, 0.30]),
        paper={"pc": 0.21, "bp": 0.25},
        paper_order="pc<bp",
        expected=verdict.Expectation(),
    )
    assert row["verdicts"] == {"spc": "reproduced", "epc": "direction only"}
    assert row["holds_for"] == "simulation only"
    assert row["tests"]["spc"]["p"] < 0.05 < row["tests"]["epc"]["p"]
    assert row["expected"]["spc"] == "reproduced"
    assert not row["paper_deviation"]["pc"]["beyond_spread"]
    assert row["paper_deviation"]["bp"]["beyond_spread"]
    with pytest.raises(TypeError):  # the expectation must be written before the run
        common.compare("c", "err", pc, bp, paper=None, paper_order="pc<bp")


def test_welch_matches_the_textbook_example():
    # two samples with unequal variances: d = 2.0, se = sqrt(4/5 + 1/4), Welch df, two-sided p
    a, b = common.stats([1.0, 3.0, 5.0, 3.0, 3.0]), common.stats([5.0, 5.0, 4.0, 6.0])
    w = verdict.welch(a, b, lower_is_better=True)
    va, vb = 2.0 / 5, (2.0 / 3) / 4  # sample variances over n
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 3)
    assert w["advantage"] == pytest.approx(2.0) and w["se"] == pytest.approx(se)
    assert w["df"] == pytest.approx(df)
    from scipy import stats as sps

    ref = sps.ttest_ind([1.0, 3.0, 5.0, 3.0, 3.0], [5.0, 5.0, 4.0, 6.0], equal_var=False)
    assert w["p"] == pytest.approx(ref.pvalue, rel=1e-10)


@pytest.mark.parametrize(
    "order,pc,bp,margin,expect",
    [
        ("pc<bp", [0.20, 0.21, 0.22], [0.30, 0.31, 0.29], 0.0, "reproduced"),
        ("pc<bp", [0.20, 0.30, 0.25], [0.27, 0.21, 0.29], 0.0, "direction only"),
        ("pc<bp", [0.30, 0.31, 0.32], [0.20, 0.21, 0.22], 0.0, "not reproduced"),
        ("pc>bp", [0.30, 0.31, 0.32], [0.20, 0.21, 0.22], 0.0, "reproduced"),
        ("tie", [0.200, 0.201, 0.199, 0.200], [0.201, 0.200, 0.200, 0.199], 0.005, "reproduced"),
        ("tie", [0.20, 0.21, 0.19, 0.20], [0.201, 0.20, 0.21, 0.19], 0.005, "direction only"),
        ("tie", [0.20, 0.201, 0.199], [0.30, 0.301, 0.299], 0.005, "not reproduced"),
        ("bp<=pc", [0.31, 0.311, 0.309], [0.30, 0.301, 0.299], 0.005, "reproduced"),
        ("bp<=pc", [0.20, 0.201, 0.199], [0.30, 0.301, 0.299], 0.005, "not reproduced"),
    ],
)
def test_verdicts_follow_the_test_written_before_the_run(order, pc, bp, margin, expect):
    got = verdict.decide(common.stats(pc), common.stats(bp), order, lower_is_better=True, margin=margin)
    assert got["verdict"] == expect, got


def test_verdicts_refuse_a_tie_without_a_margin_and_a_bad_expectation():
    s = common.stats([0.2, 0.3])
    with pytest.raises(OptionError, match="margin"):
        verdict.decide(s, s, "tie", lower_is_better=True)
    with pytest.raises(OptionError, match="expected verdict"):
        verdict.Expectation(spc="holds")
    one = common.stats([0.1])  # a single seed: no variance, no test can pass
    assert verdict.decide(one, common.stats([0.5]), "pc<bp", lower_is_better=True)["verdict"] == "direction only"


def test_report_recomputes_old_results_and_flags_changed_expectations():
    from predcode.experiments.report import judged

    pc, bp = common.stats([0.20, 0.22, 0.21]), common.stats([0.30, 0.31, 0.29])
    row = common.compare("c", "err", pc, bp, paper=None, paper_order="pc<bp", expected=verdict.Expectation(epc=None))
    assert judged(row, verdict.Expectation(epc=None))["expectation_flag"] == ""
    changed = judged(row, verdict.Expectation(spc="direction only", epc=None))
    assert "changed after the result was seen" in changed["expectation_flag"]
    legacy = {k: v for k, v in row.items() if k not in ("expected", "tests", "verdicts")}
    old = judged(legacy, verdict.Expectation(epc=None))
    assert old["verdicts"] == {"spc": "reproduced"}
    assert "written after this result was recorded" in old["expectation_flag"]


# -- PC at the exact equilibrium ---------------------------------------------------------
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "identity"])
def test_equilibrium_is_the_library_epc_equilibrium(act):
    models = [make_model([6, 5, 4, 3], act, seed) for seed in (0, 1)]
    net = Ensemble.from_models(models, act)
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 3, generator=g)) for _ in range(2)]
    assert check_against_library(net, models, "epc", batches, torch.tensor([0.3, 1.0]), steps=0, state_lr=0.0) < 1e-6


def test_equilibrium_is_a_fixed_point_of_state_based_pc_and_lowers_the_energy():
    net = Ensemble.from_seeds([7, 6, 5, 4], "tanh", [0, 1, 2], dtype=torch.float64)
    net.equilibrium_spec = TIGHT
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.randn(5, 4, generator=g, dtype=torch.float64)
    errors, acts, _ = net.equilibrium(x, y)
    for l in range(len(errors) - 1):  # dE/dx_l = e_l - f'(x_l) W_{l+1}^T e_{l+1} = 0
        pull = net.back(torch.bmm(errors[l + 1], net.W[l + 1]), None, acts[l + 1])
        assert (errors[l] - pull).abs().max() < 1e-5  # TIGHT: energy change 1e-13 per step

    def energy(es):
        return sum(0.5 * (e * e).sum((1, 2)) for e in es)

    e_spc, _, _ = net.relax(x, y, 8, 0.1)  # sPC, 8 steps: not yet there
    e_long, _, _ = net.relax(x, y, 20000, 0.1)  # sPC run long: the same point
    assert (energy(errors) <= energy(e_spc) + 1e-12).all()
    assert max(float((a - b).abs().max()) for a, b in zip(errors, e_long)) < 1e-5


def test_equilibrium_stops_at_its_tolerance_and_on_an_exact_fit():
    net = Ensemble.from_seeds([5, 6, 3], "tanh", [0], dtype=torch.float64)
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    steps = {}
    for rtol in (1e-3, 1e-6, 1e-12):
        net.equilibrium_spec = Equilibrium(energy_rtol=rtol)
        net.equilibrium_log = type(net.equilibrium_log)()
        net.equilibrium(x, y)
        steps[rtol] = net.equilibrium_log.summary()
        assert steps[rtol]["unconverged_fraction"] == 0
    assert steps[1e-3]["mean_steps"] < steps[1e-6]["mean_steps"] < steps[1e-12]["mean_steps"]
    # the 1-1-2 linear net can fit its target exactly: the energy decays to 0 and the run
    # stops at the floor instead of running to max_steps
    fit = Ensemble([torch.ones(1, 1, 1, dtype=torch.float64), torch.ones(1, 2, 1, dtype=torch.float64)], "identity")
    fit.step(
        "epc",
        torch.ones(1, 1, dtype=torch.float64),
        torch.tensor([[0.0, 1.0]], dtype=torch.float64),
        torch.tensor([0.1], dtype=torch.float64),
    )
    assert fit.equilibrium_log.summary()["max_steps"] < 200


def test_proximal_rule_at_the_equilibrium_is_the_equilibrium_rule_for_small_steps():
    net = Ensemble.from_seeds([5, 4, 3], "sigmoid", [0, 1], dtype=torch.float64)
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    plain, _ = net.gradients("epc", x, y)
    prox, _ = net.gradients("epc-prox", x, y, lr=torch.full((2,), 1e-9, dtype=torch.float64))
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-12) for a, b in zip(plain, prox))
    with pytest.raises(OptionError, match="learning rate"):
        net.gradients("epc-prox", x, y)


# -- every experiment end to end, tiny ------------------------------------------------
TINY = {
    "interference": {"default": {"iterations": 6, "T": 8}},
    "target_alignment": {"default": {"depths": [1, 3], "seeds": 2, "mnist_steps": 3, "T": 8}},
    "online": {"default": {"batches": [1, 4], "seeds": 2, "iterations": 2, "per_iteration": 3, "test_per_class": 10}},
    "small_data": {
        "default": {"per_class": [3, 6], "epochs": {6: 1}, "seeds": 2, "grid": [0.3, 1.2], "test_per_class": 20}
    },
    "continual": {
        "default": {
            "seeds": 2,
            "iterations": 5,
            "fashion_per_class": 20,
            "mnist_per_class": 10,
            "grid": [0.5, 1.0],
            "test_per_class": 20,
        }
    },
    "concept_drift": {
        "default": {
            "seeds": 2,
            "pretrain_epochs": 1,
            "period": 1,
            "periods": 2,
            "grid": [0.32, 1.6],
            "T": 4,
            "train_per_class": 10,
            "test_per_class": 10,
            "pretrain_per_class": 10,
        }
    },
    "lr_stability": {"default": {"seeds": 1, "samples": 20, "every": 10, "early": 10, "test_per_class": 10, "T": 4}},
    "implicit_sgd": {"default": {"nets": 1, "T": 50, "path_steps": 4, "path_seeds": 1}},
}


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """Run every claim experiment once at a tiny size; return the results folder."""
    if not (have_dataset("mnist") and have_dataset("fashion-mnist")):
        pytest.skip("run `predcode data fetch mnist fashion-mnist`")
    import importlib

    out = tmp_path_factory.mktemp("results")
    patch = pytest.MonkeyPatch()
    try:
        for module, settings in TINY.items():
            mod = importlib.import_module(f"predcode.experiments.{module}")
            patch.setitem(mod.SETTINGS, "default", settings["default"])
        patch.setattr("predcode.experiments.small_data.EPOCHS", 2)
        experiments = registry()
        for name in CLAIMS:
            folder = out / name
            folder.mkdir()
            experiments[name].run(folder, False, 0)
    finally:
        patch.undo()
    return out


@needs_data
def test_every_claim_is_registered(capsys):
    assert set(CLAIMS) <= set(registry())
    assert main(["repro", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in CLAIMS)


@needs_data
@pytest.mark.parametrize("name", CLAIMS)
def test_experiment_writes_numbers_provenance_and_figures(tiny_results, name):
    folder = tiny_results / name
    result = json.loads((folder / "result.json").read_text())
    assert result["experiment"] == name and result["command"] == f"predcode repro {name}"
    env = result["environment"]
    assert env["torch"] == torch.__version__ and env["predcode"] and env["date"]
    assert result["hyperparameters"] and result["comparisons"]
    for c in result["comparisons"]:
        assert c["paper_order"] in common.ORDERS and c["verdicts"]["spc"] in verdict.VERDICTS
        for rule in ("pc", "bp"):
            assert c[rule]["n"] >= 1 and "std" in c[rule]
    for fig in result["figures"]:
        png = folder / fig
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    checks = []

    def collect(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k.startswith("library_check"):
                    checks.extend(v.values() if isinstance(v, dict) else [v])
                else:
                    collect(v)

    collect(result["data"])
    assert checks and max(checks) < 1e-5, checks  # the engine is the library's algorithm


@needs_data
def test_target_alignment_is_one_for_a_single_layer(tiny_results):
    result = json.loads((tiny_results / "target-alignment" / "result.json").read_text())
    for rule in ("pc", "bp"):  # one linear layer: both updates move the output straight at t
        assert result["data"]["depth_ta"]["batch1"][rule][0][0] == pytest.approx(1.0, abs=1e-5)


@needs_data
def test_report_puts_our_numbers_beside_the_papers(tiny_results):
    text = build(tiny_results, tiny_results.parent)
    assert (
        "| claim | metric | paper PC | paper BP | ours sPC (T) | ours ePC (eq.) | ours BP | "
        "seeds | paper says | sPC verdict | ePC verdict | holds for |"
    ) in text
    assert "**Of " in text and "sPC (the papers' T):" in text and "ePC at the exact" in text
    for name in CLAIMS:
        assert f"## {name}" in text and f"`predcode repro {name}`" in text
    assert "| 0.272 | 0.289 |" in text  # online, batch 1: the paper's numbers
    assert "Differs from the paper by more than our spread" in text  # tiny runs do differ
    assert f"{tiny_results.name}/interference/interference.png" in text


@needs_data
def test_cli_report_only_writes_report_md_next_to_results(tiny_results, capsys):
    assert main(["repro", "--report", "--out", str(tiny_results)]) == 0
    report = tiny_results.parent / "REPORT.md"
    assert report.exists() and "reproduced" in report.read_text()
    assert str(report) in capsys.readouterr().out


def test_stats_and_json_handle_non_finite_values(tmp_path):
    s = common.stats([0.1, float("nan"), 0.3])
    assert s["n"] == 3 and s["n_finite"] == 2 and math.isclose(s["mean"], 0.2)
    path = common.write_json(tmp_path / "r.json", {"t": torch.tensor([1.0, float("inf")]), "s": s, "p": Path("a/b")})
    loaded = json.loads(path.read_text())
    assert loaded["t"] == [1.0, None] and loaded["p"] == "a/b"


def test_report_counts_the_full_run_once_and_tags_other_runs(tmp_path):
    from predcode.experiments.report import build, counts, load_results, primary

    def write(folder: str, pc_values: list[float], full: bool) -> None:
        row = common.compare(
            "interference: minimum of the untargeted output during learning",
            "m",
            common.stats(pc_values),
            common.stats([0.5, 0.51, 0.49]),
            paper=None,
            paper_order="pc<bp",
            lower_is_better=False,
            expected=verdict.Expectation(epc=None),
        )
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "result.json").write_text(
            json.dumps(
                {
                    "experiment": "interference",
                    "command": "predcode repro interference" + (" --full" if full else ""),
                    "full": full,
                    "summary": "s",
                    "runtime_s": 1.0,
                    "environment": {},
                    "comparisons": [row],
                    "notes": [],
                    "figures": [],
                }
            )
        )

    write("interference", [0.52, 0.51, 0.50], full=False)  # direction only
    write("interference-full", [0.9, 0.91, 0.92], full=True)  # reproduced
    write("interference-paper", [0.9, 0.91, 0.92], full=False)
    found = load_results(tmp_path)
    assert {f.name for f in primary(found)} == {"interference-full"}
    n = counts(found)
    assert n["spc"] == {"reproduced": 1, "direction only": 0, "not reproduced": 0}
    text = build(tmp_path, tmp_path.parent)
    assert "[full]" in text and "[paper]" in text and "## interference (full)" in text

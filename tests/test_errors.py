"""Bad input, bad options and diverging relaxation fail with a predcode error whose
message names the problem."""

from __future__ import annotations

import pytest
import torch

import predcode
from predcode import (
    ZIL,
    Backprop,
    DivergenceError,
    FixedPrediction,
    GradientDescent,
    Heun,
    IncrementalPC,
    InferenceLearning,
    InputError,
    Node,
    OptionError,
    PredcodeError,
    StopRule,
)
from predcode.energy import make_energy
from predcode.inference import OptimizerSolver, make_solver
from predcode.models import activation, mlp

RULES = {
    "il": lambda: InferenceLearning(GradientDescent(0.1), 5),
    "ipc": lambda: IncrementalPC(GradientDescent(0.1), 5),
    "fixedpred": FixedPrediction,
    "zil": ZIL,
    "bp": Backprop,
}


def run(rule_name: str, graph, x, y):
    """One training step of the named rule (iPC has only ``step``)."""
    opt = torch.optim.SGD(graph.model.parameters(), lr=0.01)
    return RULES[rule_name]().step(graph, x, y, opt)


@pytest.fixture(scope="module")
def mnist_net():
    torch.manual_seed(0)
    model = mlp([784, 16, 10], act="relu", output_energy="ce")
    return predcode.PCGraph(model)


@pytest.fixture
def small(make_net):
    """A float32 4-3 classifier and a good batch for it."""
    _, graph = make_net([4, 6, 3], out="ce", dtype=torch.float32)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    return graph, x, y


@pytest.mark.parametrize("rule", list(RULES))
def test_good_batch_runs(rule, small):
    graph, x, y = small
    stats = run(rule, graph, x, y)
    assert torch.isfinite(stats.loss)


@pytest.mark.parametrize("rule", list(RULES))
def test_wrong_feature_count_names_the_shape(rule, mnist_net):
    x = torch.randn(4, 783)
    y = torch.randint(0, 10, (4,))
    with pytest.raises(InputError, match=r"input 'input' of shape \(4, 783\).*shape"):
        run(rule, mnist_net, x, y)


@pytest.mark.parametrize("rule", list(RULES))
def test_wrong_dtype(rule, small):
    graph, x, y = small
    with pytest.raises(InputError, match=r"torch\.float64 but the model is torch\.float32"):
        run(rule, graph, x.double(), y)


@pytest.mark.parametrize("rule", list(RULES))
def test_wrong_device(rule, small):
    graph, x, y = small
    other = "cuda" if torch.cuda.is_available() else "meta"
    with pytest.raises(InputError, match=rf"is on {other}.*model is on cpu"):
        run(rule, graph, x.to(other), y)


def test_target_on_wrong_device(small):
    graph, x, y = small
    with pytest.raises(InputError, match=r"target .* is on meta"):
        run("il", graph, x, y.to("meta"))


@pytest.mark.parametrize("rule", list(RULES))
def test_integer_input(rule, small):
    graph, x, y = small
    with pytest.raises(InputError, match=r"dtype torch\.int64; expected a floating dtype"):
        run(rule, graph, (x * 10).long(), y)


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("bad", [3, -1])
def test_labels_out_of_range(rule, bad, small):
    graph, x, y = small
    y = y.clone()
    y[1] = bad  # 0 and 2 stay in the batch
    with pytest.raises(InputError, match=rf"must lie in \[0, 2\], found values in \[{min(bad, 0)}, {max(bad, 2)}\]"):
        run(rule, graph, x, y)


def test_labels_must_be_one_dimensional(small):
    graph, x, y = small
    with pytest.raises(InputError, match=r"class labels of shape \(batch,\)"):
        run("il", graph, x, y[:, None])
    with pytest.raises(InputError, match=r"class labels"):
        run("il", graph, x, y.bool())


def test_target_batch_size_mismatch(small):
    graph, x, y = small
    with pytest.raises(InputError, match=r"batch size 4 but the input has 5"):
        run("fixedpred", graph, x, y[:4])


def test_float_target_wrong_shape(make_net):
    _, graph = make_net([4, 6, 3], dtype=torch.float32)
    with pytest.raises(InputError, match=r"shape \(5, 2\); the node's prediction has shape \(5, 3\)"):
        run("il", graph, torch.randn(5, 4), torch.randn(5, 2))


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input(rule, value, small):
    graph, x, y = small
    x = x.clone()
    x[1, 2] = value
    with pytest.raises(InputError, match=r"contains 1 NaN or infinite value"):
        run(rule, graph, x, y)


def test_finiteness_check_does_not_trust_an_overflowing_sum():
    """The one-reduction finiteness check: a sum that overflows falls back to the
    element-wise scan (no false alarm), and -inf among finite values is still caught."""
    from predcode.validate import all_finite

    big = torch.full((4, 3), 3e38)
    assert not torch.isfinite(big.sum()) and all_finite(big)
    with_inf = torch.zeros(4, 3)
    with_inf[2, 1] = float("-inf")
    assert not all_finite(with_inf)
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))


def test_nan_in_float_target(make_net):
    _, graph = make_net([4, 6, 3], dtype=torch.float32)
    y = torch.randn(5, 3)
    y[0, 0] = float("nan")
    with pytest.raises(InputError, match=r"target .* NaN"):
        run("il", graph, torch.randn(5, 4), y)


def test_wrong_number_of_inputs(small):
    graph, x, y = small
    with pytest.raises(InputError, match=r"takes 1 input\(s\), got 2"):
        run("il", graph, [x, x], y)


def test_empty_batch(small):
    graph, x, y = small
    with pytest.raises(InputError, match=r"non-empty batch"):
        run("il", graph, x[:0], y[:0])


@pytest.mark.parametrize("solver", [GradientDescent(1e4), Heun(1e4)], ids=["gd", "heun"])
def test_diverging_energy_raises_with_step_and_node(solver, small):
    graph, x, y = small
    rule = InferenceLearning(solver, StopRule(max_steps=40))
    with pytest.raises(DivergenceError) as info:
        rule.gradients(graph, x, y)
    err = info.value
    assert isinstance(err.step, int) and 1 <= err.step <= 40
    assert err.node in graph.names
    message = str(err)
    assert f"inference step {err.step}" in message and f"node '{err.node}'" in message
    assert "lower the inference rate" in message


def test_moderate_rate_does_not_diverge(small):
    graph, x, y = small
    stats = InferenceLearning(GradientDescent(0.1), StopRule(max_steps=40)).gradients(graph, x, y)
    assert torch.isfinite(stats.trace.energy).all()


def test_errors_are_predcode_and_value_errors():
    for cls in (InputError, OptionError, predcode.GraphError):
        assert issubclass(cls, PredcodeError) and issubclass(cls, ValueError)
    assert issubclass(DivergenceError, PredcodeError)


# -- options -----------------------------------------------------------------------------
def test_unknown_energy():
    with pytest.raises(OptionError, match=r"unknown energy 'poisson'; choose one of \[.*'ce'.*\]"):
        Node("poisson")
    with pytest.raises(OptionError, match="unknown energy 'gauss'"):
        make_energy("gauss")
    with pytest.raises(OptionError, match="unknown energy 'mse'"):
        mlp([3, 4, 2], output_energy="mse")


def test_unknown_solver():
    with pytest.raises(OptionError, match=r"unknown solver 'adam'; choose one of \[.*'heun'.*\]"):
        make_solver("adam", 0.1)
    with pytest.raises(OptionError, match="momentum applies to the 'sgd' solver only"):
        make_solver("gd", 0.1, momentum=0.9)


def test_unknown_activation():
    with pytest.raises(OptionError, match=r"unknown activation 'swish'; choose one of \[.*'tanh'.*\]"):
        mlp([3, 4, 2], act="swish")
    with pytest.raises(OptionError, match="unknown activation"):
        activation("elu")


def test_bad_option_values():
    with pytest.raises(OptionError, match="inference rate must be a finite number > 0, got 0.0"):
        GradientDescent(0.0)
    with pytest.raises(OptionError, match="Heun step dt must be a finite number > 0, got -1.0"):
        Heun(-1.0)
    with pytest.raises(OptionError, match="inference rate must be a finite number > 0, got 0"):
        FixedPrediction(lr=0)
    with pytest.raises(OptionError, match="max_steps must be >= 0"):
        StopRule(max_steps=-1)
    with pytest.raises(OptionError, match="Gaussian precision must be a finite number > 0, got 0.0"):
        predcode.Gaussian(precision=0.0)
    with pytest.raises(OptionError, match="expected a torch.optim.Optimizer class"):
        OptimizerSolver(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    with pytest.raises(OptionError, match="at least input and output sizes"):
        mlp([5])

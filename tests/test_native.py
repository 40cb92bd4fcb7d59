"""The native dense-chain step (predcode.native) against the textbook reference.

Oracles: `predcode.reference.reference_step` (plain autograd) in float64 for every
activation, both output energies, both solvers, sPC and ePC, with and without biases and
pre-activations; the PyTorch path in float32 (the kernel's exp-based activations are
accurate to about 1e-7); graphs it must not take fall back to the PyTorch path; a missing
compiler gives one warning and the PyTorch path.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import predcode as pc
from predcode.batch import prepare_batch
from predcode.energy import Gaussian
from predcode.exceptions import DivergenceError
from predcode.learning import learning_plan
from predcode.native import build as native_build
from predcode.native.chain import ChainPlan, chain_plan
from predcode.query import predict
from predcode.reference import reference_step

ERRORS, STATES = pc.Variables.ERRORS, pc.Variables.STATES

ACTS = {
    "gelu-tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky": lambda: nn.LeakyReLU(0.1),
    "identity": nn.Identity,
}


@pytest.fixture(scope="module")
def native():
    try:
        return native_build.load()
    except native_build.NativeUnavailable as why:  # pragma: no cover - CI has gcc
        pytest.fail(f"the native kernels must build on this machine: {why}")


def chain(act: str, out: str = "se", bias: bool = True, pre: bool = False, widths=(5, 7, 6, 8, 3)) -> nn.Sequential:
    """x0 -> [pre] Linear -> act -> Node ... -> Linear -> Node(out)."""
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        if pre and i > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            layers += [ACTS[act](), pc.Node()]
    layers.append(pc.Node(out))
    return nn.Sequential(*layers)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _target(out: str, batch: int, width: int, dtype) -> torch.Tensor:
    return torch.randn(batch, width, dtype=dtype) if out == "se" else torch.randint(0, width, (batch,))


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("out", ["se", "ce"])
@pytest.mark.parametrize("variables", [STATES, ERRORS], ids=["spc", "epc"])
@pytest.mark.parametrize("solver", [pc.GradientDescent(0.1), pc.SGD(0.05, momentum=0.6)], ids=["gd", "momentum"])
def test_native_step_equals_reference(native, act, out, variables, solver):
    """Through the rule (the default path): weight gradients, loss and trace of the
    kernel equal the reference's in float64."""
    torch.manual_seed(0)
    model = chain(act, out, bias=act != "relu", pre=act == "tanh").double()
    graph = pc.PCGraph(model)
    assert chain_plan(learning_plan(graph)) is not None, "the kernel must take this chain"
    x = torch.randn(4, 5, dtype=torch.float64)
    y = _target(out, 4, 3, torch.float64)
    rule = (pc.ErrorPC if variables is ERRORS else pc.InferenceLearning)(solver, 5)
    model.zero_grad(set_to_none=True)
    stats = rule.gradients(graph, x, y)
    batch = prepare_batch(graph, x, y)
    _, ref = reference_step(graph, [x], batch.targets, solver, 5, variables)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, ref["model." + name], rtol=1e-10, atol=1e-13, msg=name)
    torch.testing.assert_close(stats.loss, batch.loss, rtol=1e-12, atol=1e-14)
    assert stats.trace.node_energies.shape == (6, len(graph.slots))


@pytest.mark.parametrize("variables", [STATES, ERRORS], ids=["spc", "epc"])
def test_native_trace_equals_pytorch_path(native, variables, monkeypatch):
    """Energy per node per step and gradient norms: the kernel's trace is the PyTorch
    path's (float64), zero steps included."""
    torch.manual_seed(1)
    model = chain("gelu-tanh").double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    cls = pc.ErrorPC if variables is ERRORS else pc.InferenceLearning
    for steps in (0, 1, 7):
        traces = []
        for switch in ("1", "0"):
            monkeypatch.setenv("PREDCODE_NATIVE", switch)
            graph = pc.PCGraph(model)
            assert (chain_plan(learning_plan(graph)) is not None) == (switch == "1")
            model.zero_grad(set_to_none=True)
            traces.append(cls(pc.SGD(0.1, momentum=0.5), steps).gradients(graph, x, y).trace)
        native_trace, torch_trace = traces
        torch.testing.assert_close(native_trace.node_energies, torch_trace.node_energies, rtol=1e-11, atol=1e-14)
        torch.testing.assert_close(native_trace.grad_norms, torch_trace.grad_norms, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("variables", [STATES, ERRORS], ids=["spc", "epc"])
def test_native_float32_matches_pytorch_path(native, act, variables, monkeypatch):
    """In float32 the kernel's activations are exp-based approximations (about 1e-7):
    its gradients agree with the PyTorch path to float32 accuracy."""
    torch.manual_seed(2)
    model = chain(act, widths=(20, 32, 32, 32, 10))
    x, y = torch.randn(16, 20), torch.randint(0, 10, (16,))
    grads = []
    for switch in ("1", "0"):
        monkeypatch.setenv("PREDCODE_NATIVE", switch)
        graph = pc.PCGraph(model)
        model.zero_grad(set_to_none=True)
        cls = pc.ErrorPC if variables is ERRORS else pc.InferenceLearning
        cls(pc.SGD(0.05, momentum=0.65), 8).gradients(graph, x, y)
        grads.append(_grads(model))
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=2e-4, atol=2e-6, msg=name)


def test_trains_like_pytorch_path(native, monkeypatch):
    """Fifty training steps on the default path and the PyTorch path end at the same
    weights (float64: the same numbers step after step)."""
    weights = []
    for switch in ("1", "0"):
        monkeypatch.setenv("PREDCODE_NATIVE", switch)
        torch.manual_seed(3)
        model = chain("gelu-tanh", widths=(8, 16, 16, 4)).double()
        graph = pc.PCGraph(model)
        rule = pc.InferenceLearning(pc.SGD(0.05, momentum=0.65), 8)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(50):
            x = torch.randn(10, 8, generator=gen, dtype=torch.float64)
            y = torch.randint(0, 4, (10,), generator=gen)
            rule.step(graph, x, y, opt)
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_a_smaller_last_batch_and_a_new_learning_rate(native):
    """Batch sizes change (a last, smaller batch) and solver settings change without a
    rebuild: one plan, one library, one workspace per batch size."""
    torch.manual_seed(4)
    model = chain("relu", widths=(6, 9, 4)).double()
    graph = pc.PCGraph(model)
    learning = learning_plan(graph)
    plan = chain_plan(learning)
    for batch, lr in ((8, 0.1), (3, 0.1), (8, 0.2)):
        x = torch.randn(batch, 6, dtype=torch.float64)
        y = torch.randn(batch, 4, dtype=torch.float64)
        model.zero_grad(set_to_none=True)
        pc.InferenceLearning(pc.GradientDescent(lr), 4).gradients(graph, x, y)
        _, ref = reference_step(graph, [x], prepare_batch(graph, x, y).targets, pc.GradientDescent(lr), 4)
        for name, g in _grads(model).items():
            torch.testing.assert_close(g, ref["model." + name], rtol=1e-10, atol=1e-13)
    assert chain_plan(learning_plan(graph)) is plan
    assert sorted(k[0] for k in plan.workspace_sizes) == [3, 8]


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.h, self.y = pc.Node(), pc.Node("se")

    def forward(self, x):
        h = self.h(torch.tanh(self.a(x)))
        return self.y(self.b(h) + h[:, :2])  # a skip: not a chain


@pytest.mark.parametrize(
    "make",
    [
        lambda: TwoInputs(),
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), pc.Node(), nn.Flatten(), nn.Linear(8, 2), pc.Node()),
        lambda: nn.Sequential(nn.Linear(3, 4), nn.ELU(), pc.Node(), nn.Linear(4, 2), pc.Node()),
        lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), pc.Node(Gaussian(precision=2.0)), nn.Linear(4, 2), pc.Node()),
        lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), pc.Node(), nn.Linear(4, 2), pc.Node("bernoulli")),
    ],
    ids=["skip", "conv", "elu", "precision", "bernoulli"],
)
def test_graphs_it_does_not_take(native, make):
    """Skips, convolutions, activations without a kernel, non-unit precisions and other
    output energies keep the PyTorch path."""
    graph = pc.PCGraph(make())
    assert ChainPlan.of(graph, native) is None


def test_not_on_other_solvers_or_dtypes(native):
    """Heun and optimizer solvers, float16 inputs and a stop tolerance keep the PyTorch
    path, with the reference's numbers."""
    torch.manual_seed(5)
    model = chain("tanh").double()
    graph = pc.PCGraph(model)
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    for solver in (pc.Heun(0.1), pc.OptimizerSolver(torch.optim.Adam, lr=0.01)):
        model.zero_grad(set_to_none=True)
        pc.InferenceLearning(solver, 3).gradients(graph, x, y)
        _, ref = reference_step(graph, [x], prepare_batch(graph, x, y).targets, solver, 3)
        for name, g in _grads(model).items():
            torch.testing.assert_close(g, ref["model." + name], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("act", sorted(ACTS))
def test_nan_weight_is_not_hidden(native, act):
    """A NaN weight is reported as a divergence at the start, never hidden by an
    activation (the kernel's exp-based activations keep NaN)."""
    model = chain(act)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    graph = pc.PCGraph(model)
    with pytest.raises(DivergenceError, match="step 0"):
        pc.InferenceLearning(pc.SGD(0.05, momentum=0.5), 4).compute_gradients(
            graph, torch.randn(4, 5), torch.randn(4, 3)
        )


def test_no_compiler_warns_once_and_keeps_pytorch_path(monkeypatch, tmp_path):
    """Without a C compiler (and no cached build) the step still runs, on the PyTorch
    path, after one warning that names the remedy."""
    monkeypatch.setenv("PREDCODE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native_build, "_key", lambda cc: "missing")
    model = chain("tanh")
    graph = pc.PCGraph(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pc.InferenceLearning(pc.GradientDescent(0.1), 3).gradients(graph, torch.randn(4, 5), torch.randn(4, 3))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "PyTorch path" in messages[0], messages
    assert chain_plan(learning_plan(graph)) is None
    assert not list(tmp_path.rglob("*.so"))


def test_build_is_cached_and_atomic(tmp_path, monkeypatch):
    """The library is built once into the cache; a second build is a no-op, and no
    temporary file is left behind."""
    monkeypatch.setenv("PREDCODE_CACHE", str(tmp_path))
    path = native_build.build()
    stamp = path.stat().st_mtime_ns
    assert native_build.build() == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_nothing_rebuilds_across_a_training_run(native, monkeypatch):
    """Epochs, a smaller last batch, switching to evaluation and back, a new optimizer and
    new learning rates (weights and states) reuse one plan: the kernels are loaded once
    and nothing is compiled again (counted)."""
    from predcode.native import chain as chain_module

    loads = []
    real_load = chain_module.load
    monkeypatch.setattr(chain_module, "load", lambda: loads.append(1) or real_load())
    torch.manual_seed(7)
    model = chain("gelu-tanh", widths=(12, 16, 16, 5))
    graph = pc.PCGraph(model)
    x, y = torch.randn(70, 12), torch.randint(0, 5, (70,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rule = pc.InferenceLearning(pc.SGD(0.05, momentum=0.65), 8)
    for _ in range(3):
        for start in range(0, 70, 32):  # batches of 32, 32 and a last one of 6
            rule.step(graph, x[start : start + 32], y[start : start + 32], opt)
        model.eval()
        with torch.no_grad():
            model(x)
            predict(graph, x)
        model.train()
        for group in opt.param_groups:
            group["lr"] *= 0.5
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    rule = pc.InferenceLearning(pc.SGD(0.02, momentum=0.5), 4)
    rule.step(graph, x[:32], y[:32], opt)
    assert len(loads) == 1
    plan = chain_plan(learning_plan(graph))
    assert plan is not None and sorted(k[0] for k in plan.workspace_sizes) == [6, 32]


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("scale", [1e-4, 1.0, 30.0])
def test_float32_activations_are_accurate_at_every_scale(native, act, scale):
    """The kernel's float32 feed-forward prediction matches PyTorch's to a few ulp
    relative error, for tiny, moderate and saturating pre-activations (an exp-based tanh
    alone would lose its relative accuracy near zero)."""
    torch.manual_seed(8)
    model = chain(act, widths=(16, 32, 32, 8))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale ** (1 / 3) if scale > 1 else 1.0)
                m.bias.mul_(scale if scale < 1 else 1.0)  # tiny pre-activations throughout
    x = torch.randn(64, 16) * (scale if scale < 1 else 1.0)
    graph = pc.PCGraph(model)
    stats = pc.InferenceLearning(pc.GradientDescent(0.1), 0).compute_gradients(graph, x, torch.zeros(64, 8))
    expected = model.double()(x.double()).float()
    model.float()
    torch.testing.assert_close(stats.prediction, expected, rtol=2e-5, atol=1e-6 * float(expected.abs().max()))


def test_loaded_state_and_changed_precision(native):
    """After ``load_state_dict`` (which writes the precision buffers) the kernel still
    takes the step; a precision set to another value afterwards sends the step to the
    PyTorch path, with that precision's numbers."""
    torch.manual_seed(9)
    model = chain("tanh").double()
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    graph = pc.PCGraph(model)
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    rule = pc.InferenceLearning(pc.SGD(0.1, momentum=0.5), 3)
    plan = chain_plan(learning_plan(graph))
    assert plan is not None and plan.accepts(x, y)
    hidden = next(m for m in model.modules() if isinstance(m, pc.Node)).energy
    with torch.no_grad():
        hidden.log_precision.fill_(0.7)
    assert not plan.accepts(x, y)
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, x, y)
    _, ref = reference_step(graph, [x], prepare_batch(graph, x, y).targets, pc.SGD(0.1, momentum=0.5), 3)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, ref["model." + name], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("variables", [STATES, ERRORS], ids=["spc", "epc"])
def test_large_layers_split_over_threads_equal_reference(native, variables):
    """Layers of at least 8192 numbers per batch run their element-wise passes on
    PyTorch's OpenMP threads: the same numbers as the reference (float64), with one thread
    and with two."""
    torch.manual_seed(10)
    model = chain("gelu-tanh", widths=(20, 128, 128, 10), pre=True).double()
    graph = pc.PCGraph(model)
    x = torch.randn(96, 20, dtype=torch.float64)
    y = torch.randint(0, 10, (96,))
    solver = pc.SGD(0.05, momentum=0.6)
    _, ref = reference_step(graph, [x], prepare_batch(graph, x, y).targets, solver, 5, variables)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            model.zero_grad(set_to_none=True)
            cls = pc.ErrorPC if variables is ERRORS else pc.InferenceLearning
            cls(solver, 5).gradients(graph, x, y)
            for name, g in _grads(model).items():
                torch.testing.assert_close(g, ref["model." + name], rtol=1e-10, atol=1e-13)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("shape", ["one-layer", "one-example", "deep"])
@pytest.mark.parametrize("variables", [STATES, ERRORS], ids=["spc", "epc"])
def test_edge_shapes_equal_reference(native, shape, variables):
    """No hidden node, a batch of one with one-unit layers, and 20 hidden layers: the
    kernel still gives the reference's gradients and the PyTorch path's trace shape."""
    torch.manual_seed(11)
    if shape == "one-layer":
        model, batch, steps = nn.Sequential(nn.Linear(5, 3), pc.Node("se")), 4, 0
    elif shape == "one-example":
        model, batch, steps = nn.Sequential(nn.Linear(1, 1), nn.Tanh(), pc.Node(), nn.Linear(1, 2), pc.Node("ce")), 1, 3
    else:
        model = nn.Sequential(
            *[m for _ in range(20) for m in (nn.Linear(6, 6), nn.Tanh(), pc.Node())], nn.Linear(6, 2), pc.Node("se")
        )
        batch, steps = 3, 4
    model = model.double()
    graph = pc.PCGraph(model)
    assert chain_plan(learning_plan(graph)) is not None
    x = torch.randn(batch, model[0].in_features, dtype=torch.float64)
    y = (
        torch.randint(0, 2, (batch,))
        if shape == "one-example"
        else torch.randn(batch, model[-2].out_features, dtype=torch.float64)
    )
    solver = pc.SGD(0.05, momentum=0.5)
    model.zero_grad(set_to_none=True)
    cls = pc.ErrorPC if variables is ERRORS else pc.InferenceLearning
    stats = cls(solver, steps).gradients(graph, x, y)
    assert stats.trace.node_energies.shape == (steps + 1, len(graph.slots))
    _, ref = reference_step(graph, [x], prepare_batch(graph, x, y).targets, solver, steps, variables)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, ref["model." + name], rtol=1e-10, atol=1e-13)

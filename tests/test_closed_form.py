"""Closed-form local products (predcode.closed_form) against autograd, float64."""

import pytest
import torch
from torch import nn

import predcode as pc
from predcode.energy import Gaussian
from predcode.graph import PCGraph
from predcode.inference import EnergyLandscape, GradientDescent, StopRule, relax
from predcode.models import cnn, mlp
from predcode.node import Node

ACTS = ["tanh", "relu", "gelu-tanh", "gelu", "sigmoid", "leaky-relu", "identity"]


def _perturbed_values(graph, x, scale=0.3):
    values = graph.feedforward([x])
    out = [v + scale * torch.randn_like(v) for v in values]
    out[0] = x
    return out


def _grads(graph, values, free, masks=None, closed_form=True):
    land = EnergyLandscape(graph, values, free, masks=masks, closed_form=closed_form)
    return land, land.grad_fn(land.initial_states())


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("act_first", [False, True])
@pytest.mark.parametrize("output", ["se", "ce"])
def test_state_gradients_equal_autograd(act, act_first, output):
    torch.manual_seed(0)
    graph = PCGraph(mlp([6, 5, 4, 3], act=act, output_energy=output, act_first=act_first).double())
    values = _perturbed_values(graph, torch.randn(7, 6, dtype=torch.float64))
    free = [1, 2, 3]  # the output is a free leaf here: set to its mode
    land, (g_closed, row_closed) = _grads(graph, values, free)
    assert land.closed_form is not None
    _, (g_auto, row_auto) = _grads(graph, values, free, closed_form=False)
    for a, b in zip(g_closed, g_auto):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(row_closed, row_auto, rtol=1e-12, atol=1e-12)


def test_learnable_per_unit_precision_free_input_and_masks():
    """Generation-style query: the input is free (partly clamped by a mask), hidden
    nodes have per-unit learnable precision, the output is clamped."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(6, 5), nn.Tanh(), Node(Gaussian(2.0, learnable=True, units=5)), nn.Tanh(), nn.Linear(5, 3), Node("se")
    ).double()
    with torch.no_grad():
        model[2].energy.log_precision.uniform_(-1, 1)
    graph = PCGraph(model)
    values = _perturbed_values(graph, torch.randn(4, 6, dtype=torch.float64))
    mask = torch.rand(4, 6) < 0.5
    land, (g_closed, row_closed) = _grads(graph, values, [0, 1], masks={0: mask})
    assert land.closed_form is not None
    _, (g_auto, row_auto) = _grads(graph, values, [0, 1], masks={0: mask}, closed_form=False)
    for a, b in zip(g_closed, g_auto):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert (g_closed[0][mask] == 0).all()
    torch.testing.assert_close(row_closed, row_auto, rtol=1e-12, atol=1e-12)


def test_relaxation_and_training_step_unchanged():
    torch.manual_seed(2)
    graph = PCGraph(mlp([8, 6, 6, 3], act="gelu-tanh").double())
    x = torch.randn(5, 8, dtype=torch.float64)
    values = _perturbed_values(graph, x)
    runs = []
    for closed in (True, False):
        land = EnergyLandscape(graph, values, [1, 2], closed_form=closed)
        states = land.initial_states()
        for _ in range(20):
            grads, _ = land.grad_fn(states)
            states = [s - 0.1 * g for s, g in zip(states, grads)]
        runs.append(states)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_other_predictors_keep_autograd():
    torch.manual_seed(3)
    conv = PCGraph(cnn([4, 8]))
    x = torch.randn(2, 1, 28, 28)
    values = conv.feedforward([x])
    land = EnergyLandscape(conv, values, [s.index for s in conv.slots if s.children and not s.is_input])
    assert land.closed_form is None

    # a predictor with two parents (a skip connection) is not a dense chain
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.n1, self.n2 = nn.Linear(3, 3), nn.Linear(3, 3), Node(), Node()

        def forward(self, x):
            h = self.n1(self.a(x))
            return self.n2(self.b(h) + x)

    graph = PCGraph(Skip())
    assert len(graph.slots[2].parents) == 2
    land = EnergyLandscape(graph, graph.feedforward([torch.randn(2, 3)]), [1])
    assert land.closed_form is None


def test_query_uses_closed_form_and_lowers_energy():
    torch.manual_seed(4)
    graph = PCGraph(mlp([6, 5, 3], act="tanh").double())
    x = torch.randn(3, 6, dtype=torch.float64)
    target = torch.randn(3, 3, dtype=torch.float64)
    values = graph.feedforward([x])
    values[-1] = target
    result = relax(graph, values, [1], GradientDescent(0.2), StopRule(max_steps=30))
    energy = result.trace.energy
    assert (energy[1:] <= energy[:-1] + 1e-12).all() and energy[-1] < energy[0]


def _fused_vs_plain(model, x, y, steps=7):
    """Gradients of the fused step (closed form where it applies) and of relax() followed
    by autograd's local weight backward (a tolerance stop rule forces that path)."""
    graph = PCGraph(model)
    solver = pc.SGD(0.05, momentum=0.5)
    results = []
    for stop in (pc.StopRule(max_steps=steps), pc.StopRule(max_steps=steps, energy_rtol=0.0)):
        model.zero_grad(set_to_none=True)
        pc.InferenceLearning(solver, stop).gradients(graph, x, y)
        results.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])
    return graph, results


class _Shared(nn.Module):
    """One linear layer predicting two nodes (weight sharing)."""

    def __init__(self, module_activation: bool = False):
        super().__init__()
        self.inp, self.shared, self.out = nn.Linear(5, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.n1, self.n2, self.n3, self.n4 = Node(), Node(), Node(), Node()
        self.act = nn.Tanh() if module_activation else torch.tanh  # a function: autograd path

    def forward(self, x):
        h = self.n1(self.act(self.inp(x)))
        h = self.n2(self.shared(h))
        h = self.n3(self.shared(h))
        return self.n4(self.out(h))


@pytest.mark.parametrize(
    "build",
    [
        lambda: mlp([6, 5, 4, 3], act="gelu-tanh"),
        lambda: mlp([6, 5, 4, 3], act="relu", output_energy="ce", act_first=True, bias=False),
        lambda: _Shared(),
    ],
    ids=["mlp", "act-first-ce-no-bias", "shared-layer"],
)
def test_closed_form_weight_gradients_equal_autograd(build):
    torch.manual_seed(5)
    model = build().double()
    x = torch.randn(6, next(model.parameters()).shape[1], dtype=torch.float64)
    graph = PCGraph(model)
    out = graph.slots[graph.output]
    y = torch.randint(0, 3, (6,)) if not isinstance(out.energy, Gaussian) else torch.randn(6, 3, dtype=torch.float64)
    from predcode.learning import LearningPlan

    expect_closed = not isinstance(model, _Shared)  # tanh inside the predictor: not a module
    assert (LearningPlan(graph).dense_names is not None) == expect_closed
    _, (fused, plain) = _fused_vs_plain(model, x, y)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_shared_dense_layer_accumulates_both_products():
    torch.manual_seed(6)
    model = _Shared(module_activation=True).double()  # every predictor a module chain
    graph = PCGraph(model)
    from predcode.learning import LearningPlan

    assert LearningPlan(graph).dense_names is not None
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    _, (fused, plain) = _fused_vs_plain(model, x, y)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_frozen_or_extra_parameters_fall_back_to_autograd():
    torch.manual_seed(7)
    model = mlp([6, 5, 4, 3], act="tanh").double()
    model[0].weight.requires_grad_(False)
    from predcode.learning import LearningPlan

    assert LearningPlan(PCGraph(model)).dense_names is None
    x, y = torch.randn(6, 6, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    _, (fused, plain) = _fused_vs_plain(model, x, y)
    assert fused[0] is None and plain[0] is None
    for a, b in zip(fused[1:], plain[1:]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# Every activation a dense predictor may hold, with arguments away from the defaults (so a
# derivative that drops or swaps one is caught), in pairs (so a chain of two is walked).
ACTIVATIONS = [
    nn.Identity(),
    nn.Tanh(),
    nn.ReLU(),
    nn.GELU(),
    nn.GELU(approximate="tanh"),
    nn.Sigmoid(),
    nn.LeakyReLU(0.2),
    nn.LeakyReLU(-0.3),
    nn.ELU(0.7),
    nn.SiLU(),
    nn.Softplus(beta=2.0),
    nn.Hardtanh(-0.5, 0.7),
    nn.ReLU6(),
    nn.Mish(),
    nn.CELU(0.8),
    nn.SELU(),
    nn.Tanhshrink(),
    nn.Softsign(),
]


def test_the_activation_list_covers_every_elementwise_module():
    from predcode.closed_form import ELEMENTWISE, _aten_backward

    assert {type(m) for m in ACTIVATIONS} == set(ELEMENTWISE)
    # these take one aten kernel for their derivative (no autograd in the closed form)
    one_kernel = {nn.Identity, nn.Tanh, nn.Sigmoid, nn.ReLU, nn.GELU, nn.LeakyReLU, nn.SiLU, nn.Hardtanh}
    assert {type(m) for m in ACTIVATIONS if _aten_backward(m) is not None} == one_kernel


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda m: repr(m))
def test_every_activation_chain_backward_equals_autograd(act):
    r"""``J^T e`` of ``post(W pre(x) + b)`` with two activations before the layer and two
    after (``act`` then tanh), from the saved chains, against autograd (float64); the one-kernel
    derivatives and the autograd fallback alike."""
    from predcode.closed_form import DensePredictor, _aten_backward

    torch.manual_seed(3)
    linear = nn.Linear(5, 4).double()
    dense = DensePredictor([act, nn.Tanh()], linear, [act, nn.Tanh()])
    assert dense.closed_form == (_aten_backward(act) is not None)
    x = 2 * torch.randn(6, 5, dtype=torch.float64)  # spans the kinks (0, Hardtanh's -0.5 and 0.7)
    e = torch.randn(6, 4, dtype=torch.float64)
    pre, post = dense.forward(x)
    leaf = x.clone().requires_grad_()
    mu = torch.tanh(act(linear(torch.tanh(act(leaf)))))
    torch.testing.assert_close(post[-1], mu.detach(), rtol=0, atol=0)
    (want,) = torch.autograd.grad(mu, leaf, e)
    torch.testing.assert_close(dense.backward(e, pre, post), want, rtol=1e-12, atol=1e-13)
    # the same two halves from the layer's output alone, and from the parent's value alone
    a = post[0].clone().requires_grad_()
    (want_post,) = torch.autograd.grad(torch.tanh(act(a)), a, e)
    torch.testing.assert_close(dense.post_vjp(post[0], e), want_post, rtol=1e-12, atol=1e-13)
    g = torch.randn(6, 5, dtype=torch.float64)
    (want_pre,) = torch.autograd.grad(torch.tanh(act(leaf)), leaf, g)
    torch.testing.assert_close(dense.pre_vjp(x, g), want_pre, rtol=1e-12, atol=1e-13)
    bare = DensePredictor([], linear, [])  # no activation on either side: the identity
    assert bare.post_vjp(post[0], e) is e and bare.pre_vjp(x, g) is g


def _plain_vs_closed_weight_gradients(model, x, y, monkeypatch):
    """The fused step's weight gradients on the PyTorch closed form (the native kernel off)
    and relax() + autograd's local weight backward."""
    monkeypatch.setenv("PREDCODE_NATIVE", "0")
    from predcode.learning import LearningPlan

    assert LearningPlan(PCGraph(model)).dense_names is not None  # the closed form applies
    _, (fused, plain) = _fused_vs_plain(model, x, y)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_shared_dense_layer_accumulates_both_products_in_pytorch(monkeypatch):
    """The same as above with the native kernel off: the PyTorch closed form adds the two
    products of the shared layer."""
    torch.manual_seed(6)
    model = _Shared(module_activation=True).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    _plain_vs_closed_weight_gradients(model, x, y, monkeypatch)


def test_closed_form_weight_gradients_on_sequences(monkeypatch):
    """Nodes with a sequence dimension ``[batch, time, units]``: the Hebbian products sum over
    batch and time (the last dimension is the units)."""
    torch.manual_seed(7)
    model = mlp([5, 4, 3], act="tanh").double()
    x = torch.randn(6, 2, 5, dtype=torch.float64)
    y = torch.randn(6, 2, 3, dtype=torch.float64)
    _plain_vs_closed_weight_gradients(model, x, y, monkeypatch)


def test_local_products_without_saved_chains_recompute_them():
    """``closed_form_gradients`` with no chains from the feed-forward pass recomputes the constant
    predictions' chains for the weight gradients: the same numbers as autograd's."""
    from predcode.closed_form import closed_form_gradients
    from predcode.learning import LearningPlan, weight_gradients

    torch.manual_seed(8)
    model = mlp([6, 5, 4, 3], act="tanh").double()
    graph = PCGraph(model)
    x = torch.randn(5, 6, dtype=torch.float64)
    values = _perturbed_values(graph, x)
    land = EnergyLandscape(graph, values, [1, 2])
    local = closed_form_gradients(land)  # no chains
    assert local is not None
    plan = LearningPlan(graph)
    got, got_row = local.weight_gradients(land.initial_states(), plan.dense_names)
    want, want_row = weight_gradients(plan, plan.trainable(), values)  # autograd of the local plan
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-13, msg=name)
    torch.testing.assert_close(got_row, want_row, rtol=1e-12, atol=1e-13)  # batch-mean energies
    torch.testing.assert_close(got_row, graph.node_energies(values).detach(), rtol=1e-12, atol=1e-13)


def test_closed_form_error_gradients_keep_errors_below_float32_resolution():
    """ePC's closed-form gradients in float32 at errors far below the states' resolution
    (|e| ~ 1e-9, states of order 1 and more): the own term comes from the kept error, not
    from ``x - mu`` (which is 0 there), so they equal the autograd path's."""
    torch.manual_seed(9)
    model = mlp([6, 5, 4, 3], act="tanh")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.sign(p))
    graph = PCGraph(model)
    x = 3 * torch.randn(5, 6)
    values = graph.feedforward([x])  # the output clamped at its prediction: no output error
    grads = []
    for closed in (True, False):
        land = EnergyLandscape(graph, values, [1, 2], closed_form=closed, variables=pc.Variables.ERRORS)
        assert (land.closed_form is not None) == closed
        torch.manual_seed(1)
        states = [1e-9 * torch.randn_like(s) for s in land.initial_states()]
        grads.append(land.grad_fn(states)[0])
    for a, b in zip(*grads):
        assert float(b.abs().max()) > 1e-10  # the gradient is of the errors' size, not zero
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-13)


class _Unused(nn.Module):
    """A model with a second input that feeds nothing."""

    def __init__(self):
        super().__init__()
        self.inp, self.act, self.out = nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)
        self.n1, self.n2 = Node(), Node()

    def forward(self, x, unused):
        return self.n2(self.out(self.act(self.n1(self.inp(x)))))


@pytest.mark.parametrize("variables", [pc.Variables.STATES, pc.Variables.ERRORS])
def test_a_free_input_that_feeds_nothing_does_not_move(variables):
    model = _Unused().double()
    graph = PCGraph(model)
    unused = graph.index("unused")
    x, u = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    values = graph.feedforward([x, u])
    values[graph.output] = torch.randn(4, 2, dtype=torch.float64)
    land = EnergyLandscape(graph, values, [graph.index("n1"), unused], variables=variables)
    assert land.closed_form is not None
    grads, _ = land.grad_fn(land.initial_states())
    assert torch.equal(grads[1], torch.zeros_like(u))
    relaxed = relax(graph, values, [graph.index("n1"), unused], GradientDescent(0.1), StopRule(3), variables=variables)
    assert torch.equal(relaxed.values[unused], u)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.lin(a + b)


class _Branch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.lin(x))
        self.act(y)  # a branch off the chain: the output is not the last layer's
        return y


class _Kwargs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.act = nn.Softplus()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(input=self.lin(x))


class _ExtraKeyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.act = nn.Softplus()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.lin(x), beta=2.0)  # traced, never run: fx keeps the keyword


class _Function(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: nn.Linear(3, 2), "its predictor is not a traced graph"),
        (_TwoInputs, "its predictor reads 2 nodes, not one"),
        (_Branch, "its predictor is not a single chain of layers"),
        (_Function, "operation 'relu' in its predictor is not an nn.Linear or an element-wise activation module"),
        (_Kwargs, "operation 'act' in its predictor is not an nn.Linear or an element-wise activation module"),
        (_ExtraKeyword, "operation 'act' in its predictor is not an nn.Linear or an element-wise activation module"),
        (
            lambda: nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)),
            "its predictor has two nn.Linear layers; put a Node between them",
        ),
        (
            lambda: nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)),
            "module '1' (LayerNorm) in its predictor is neither an nn.Linear nor an element-wise activation",
        ),
        (lambda: nn.Sequential(nn.Tanh(), nn.ReLU()), "its predictor has no nn.Linear"),
    ],
    ids=[
        "not-traced",
        "two-inputs",
        "branch",
        "function",
        "keyword-input",
        "extra-keyword",
        "two-linears",
        "layer-norm",
        "no-linear",
    ],
)
def test_split_dense_names_what_is_not_dense(build, message):
    """Every way a predictor can fail to be ``pre* -> Linear -> post*`` is one GraphError
    that says which (feedback alignment, DTP and the error circuit show it to the user)."""
    from torch import fx

    from predcode.closed_form import split_dense
    from predcode.exceptions import GraphError

    module = build()
    predictor = module if isinstance(module, nn.Linear) else fx.symbolic_trace(module)
    with pytest.raises(GraphError) as caught:
        split_dense(predictor)
    assert str(caught.value) == message


def test_split_dense_takes_apart_a_chain():
    """``pre* -> Linear -> post*`` splits at the Linear, in order."""
    from torch import fx

    from predcode.closed_form import split_dense

    model = nn.Sequential(nn.Tanh(), nn.Linear(3, 2), nn.ReLU(), nn.Sigmoid())
    dense = split_dense(fx.symbolic_trace(model))
    assert dense.linear is model[1]
    assert dense.pre == [model[0]] and dense.post == [model[2], model[3]]


def test_dense_predictor_needs_a_one_kernel_derivative_for_every_activation():
    """ELU is element-wise (``split_dense`` takes it) but has no one-kernel derivative here,
    so its predictor is not closed-form: the graph keeps autograd."""
    from torch import fx

    from predcode.closed_form import dense_predictor, split_dense

    elu = fx.symbolic_trace(nn.Sequential(nn.Linear(3, 2), nn.ELU()))
    assert not split_dense(elu).closed_form and dense_predictor(elu) is None
    tanh = fx.symbolic_trace(nn.Sequential(nn.Linear(3, 2), nn.Tanh()))
    found = dense_predictor(tanh)
    assert found is not None and found.closed_form


def test_dense_layers_only_when_every_node_is_dense():
    """One node whose predictor is not dense (a LayerNorm after its Linear) and the graph has
    no dense layers; without it, every node's."""
    from predcode.closed_form import dense_layers

    dense = PCGraph(nn.Sequential(nn.Linear(4, 4), Node(), nn.Tanh(), nn.Linear(4, 3), Node()))
    found = dense_layers(dense)
    assert found is not None and sorted(found) == [s.index for s in dense.slots if not s.is_input]
    mixed = PCGraph(nn.Sequential(nn.Linear(4, 4), Node(), nn.Linear(4, 3), nn.LayerNorm(3), Node()))
    assert dense_layers(mixed) is None

"""Error-based PC (ePC): the relaxation moves the errors, x_i = mu_i(x_pa) + e_i.

Checked in float64: ePC and state-based PC (sPC) run to convergence reach the same
equilibrium and the same weight gradients; the fused step equals the textbook reference
(`predcode.reference.reference_step`); ePC's first step reaches every layer, sPC's only
the nodes next to the output; small gradient steps never raise the energy; with a weak
output clamp ePC's update is backprop's gradient.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import predcode as pc
from predcode.batch import prepare_batch
from predcode.models import lstm, mlp, resnet, rnn
from predcode.reference import reference_step
from predcode.rules.ep import Scaled

ERRORS, STATES = pc.Variables.ERRORS, pc.Variables.STATES


class Branching(nn.Module):
    """A node read by two children whose paths merge again (a diamond), plus a skip."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(5, 6), nn.Linear(6, 4), nn.Linear(6, 4)
        self.out = nn.Linear(4, 3)
        self.h, self.l, self.r, self.y = pc.Node(), pc.Node(), pc.Node(), pc.Node("se")

    def forward(self, x):
        h = self.h(torch.tanh(self.a(x)))
        left, right = self.l(torch.tanh(self.b(h))), self.r(torch.sigmoid(self.c(h)))
        return self.y(self.out(left * right) + 0.5 * self.out(left))


def _problem(kind: str):
    """(model, inputs, target) in float64."""
    torch.manual_seed(0)
    if kind == "mlp":
        return mlp([6, 7, 7, 7, 3], act="tanh").double(), torch.randn(5, 6), torch.randn(5, 3)
    if kind == "cnn":  # smooth (average pooling), so that the equilibrium is a sharp one
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
            pc.Node(),
            nn.Conv2d(2, 3, 3, padding=1),
            nn.Tanh(),
            pc.Node(),
            nn.Flatten(),
            nn.Linear(48, 3),
            pc.Node("ce"),
        ).double()
        return model, torch.randn(3, 1, 8, 8), torch.randint(0, 3, (3,))
    if kind == "branch":
        return Branching().double(), torch.randn(4, 5), torch.randn(4, 3)
    if kind == "rnn":
        model = rnn(vocab=4, hidden=5, seq_len=4, many_to_one=True).double()
        return model, torch.randn(3, 4, 4), torch.randint(0, 4, (3,))
    if kind == "lstm":  # many-to-many: a node for every cell and hidden state
        model = lstm(vocab=4, hidden=3, seq_len=3).double()
        return model, torch.randn(2, 3, 4), torch.softmax(torch.randn(2, 3, 4), -1)
    if kind == "resnet":
        model = resnet(widths=(2, 3), num_classes=3).double()
        return model, torch.randn(2, 1, 8, 8), torch.randint(0, 3, (2,))
    raise ValueError(kind)


def _as64(x):
    return x.double() if x.is_floating_point() else x


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _converged(graph, model, x, y, rule_class):
    """Weight gradients and relaxed values at convergence (tight gradient tolerance)."""
    stop = pc.StopRule(max_steps=40000, grad_tol=1e-12)
    model.zero_grad()
    stats = rule_class(pc.SGD(0.05, momentum=0.8), stop).gradients(graph, x, y)
    assert stats.steps < 40000, "did not converge"
    batch = prepare_batch(graph, x, y)
    free = [s.index for s in graph.slots if not s.is_input and s.index not in batch.targets]
    variables = rule_class.variables
    relaxed = pc.relax(graph, batch.clamped(), free, pc.SGD(0.05, momentum=0.8), stop, variables=variables)
    return _grads(model), relaxed.values


@pytest.mark.parametrize("kind", ["mlp", "cnn", "branch", "rnn"])
def test_same_equilibrium_and_weight_gradients(kind):
    """sPC and ePC relaxed to convergence agree on every state and every weight gradient
    (relative error <= 1e-6)."""
    model, x, y = _problem(kind)
    x, y = _as64(x), _as64(y)
    graph = pc.PCGraph(model)
    g_s, v_s = _converged(graph, model, x, y, pc.InferenceLearning)
    g_e, v_e = _converged(graph, model, x, y, pc.ErrorPC)
    for a, b in zip(v_s, v_e):
        assert (a - b).norm() <= 1e-6 * max(a.norm(), 1e-12)
    for name in g_s:
        assert (g_s[name] - g_e[name]).norm() <= 1e-6 * g_s[name].norm() + 1e-12, name
    # the equilibrium is not the feed-forward pass: the hidden gradients are not trivial
    first = next(iter(g_s))
    assert g_s[first].norm() > 1e-4


@pytest.mark.parametrize("kind", ["mlp", "cnn", "branch", "rnn", "lstm", "resnet"])
@pytest.mark.parametrize("variables", [STATES, ERRORS], ids=["spc", "epc"])
@pytest.mark.parametrize(
    "solver",
    [pc.GradientDescent(0.1), pc.SGD(0.05, momentum=0.6), pc.Heun(0.1), pc.OptimizerSolver(torch.optim.Adam, lr=0.01)],
    ids=["gd", "momentum", "heun", "adam"],
)
def test_fused_step_equals_reference(kind, variables, solver):
    """The fused training step (closed forms, error frontier, constant predictions) gives
    the textbook reference's weight gradients in float64, for a few steps."""
    model, x, y = _problem(kind)
    x, y = _as64(x), _as64(y)
    graph = pc.PCGraph(model)
    rule = (pc.ErrorPC if variables is ERRORS else pc.InferenceLearning)(solver, 4)
    model.zero_grad()
    rule.gradients(graph, x, y)
    fused = _grads(model)
    batch = prepare_batch(graph, x, y)
    _, ref = reference_step(graph, [x], batch.targets, solver, 4, variables)
    for name, g in ref.items():
        torch.testing.assert_close(fused[name[len("model.") :]], g, rtol=1e-10, atol=1e-13, msg=name)


@pytest.mark.parametrize("variables", [STATES, ERRORS], ids=["spc", "epc"])
def test_step_by_step_path_equals_fused(variables):
    """A tolerance that never triggers sends the step down the step-by-step path (Python
    stop checks, then the general weight gradients): same numbers as the fused step."""
    model, x, y = _problem("mlp")
    x, y = x.double(), y.double()
    graph = pc.PCGraph(model)
    cls = pc.ErrorPC if variables is ERRORS else pc.InferenceLearning
    model.zero_grad()
    cls(pc.SGD(0.1, momentum=0.5), 6).gradients(graph, x, y)
    fused = _grads(model)
    model.zero_grad()
    cls(pc.SGD(0.1, momentum=0.5), pc.StopRule(6, grad_tol=0.0)).gradients(graph, x, y)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, fused[name], rtol=1e-11, atol=1e-14)


def test_first_step_reaches_every_layer():
    """From the feed-forward pass, one ePC step moves every hidden node; one sPC step moves
    only the node next to the output."""
    torch.manual_seed(1)
    model = mlp([4, 6, 6, 6, 6, 6, 2], act="tanh").double()
    graph = pc.PCGraph(model)
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    values = graph.feedforward([x])
    values[graph.output] = y
    hidden = [s.index for s in graph.slots if not s.is_input and s.index != graph.output]
    moved = {}
    for variables in (STATES, ERRORS):
        relaxed = pc.relax(graph, list(values), hidden, pc.GradientDescent(0.1), pc.StopRule(1), variables=variables)
        moved[variables] = [i for i in hidden if not torch.equal(relaxed.values[i], values[i])]
    assert moved[ERRORS] == hidden
    assert moved[STATES] == [hidden[-1]]


@pytest.mark.parametrize("kind", ["mlp", "branch", "rnn"])
def test_energy_never_increases_with_a_small_step(kind):
    model, x, y = _problem(kind)
    x, y = _as64(x), _as64(y)
    graph = pc.PCGraph(model)
    stats = pc.ErrorPC(pc.GradientDescent(0.02), 300).gradients(graph, x, y)
    energy = stats.trace.energy
    assert torch.all(energy[1:] <= energy[:-1] + 1e-12)
    assert energy[-1] < 0.9 * energy[0]


@pytest.mark.parametrize("kind", ["mlp", "branch"])
def test_weak_output_clamp_gives_backprop(kind):
    """With the output energy scaled by beta, ePC's relaxed local update divided by beta
    approaches backprop's gradient as beta -> 0 (error O(beta))."""
    model, x, y = _problem(kind)
    x, y = x.double(), y.double()
    graph = pc.PCGraph(model)
    model.zero_grad()
    pc.Backprop().gradients(graph, x, y)
    bp = _grads(model)
    errors = []
    for beta in (1e-2, 1e-3):
        slots = [pc.graph.Slot(s.name, s.index, s.energy, s.predictor, s.parents, s.children) for s in graph.slots]
        out = graph.output
        slots[out].energy = Scaled(graph.slots[out].energy, beta)
        weak = pc.PCGraph.from_slots(model, slots, graph.outputs)
        model.zero_grad()
        pc.ErrorPC(pc.SGD(0.2, momentum=0.5), pc.StopRule(5000, grad_tol=1e-13)).gradients(weak, x, y)
        g = _grads(model)
        errors.append(max(float((g[n] / beta - bp[n]).norm() / bp[n].norm()) for n in bp))
    assert errors[1] < 0.2 * errors[0]  # shrinks like beta
    assert errors[1] < 1e-2


def test_query_by_errors_equals_query_by_states():
    """A query with part of a node clamped (two of the three output units; input clamped,
    the rest free) relaxes to the same values by ePC as by sPC; clamped units stay put."""
    from predcode.query import Clamp, infer

    torch.manual_seed(0)
    model = mlp([6, 5, 5, 3], act="tanh").double()
    graph = pc.PCGraph(model)
    x, y = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[:, :2] = True
    stop = pc.StopRule(20000, grad_tol=1e-12)
    out = {}
    for variables in (STATES, ERRORS):
        out[variables] = infer(
            graph,
            {"input": x, graph.output: Clamp(y, mask)},
            solver=pc.SGD(0.05, momentum=0.8),
            stop=stop,
            variables=variables,
        )
        assert out[variables].trace.steps < 20000
    for a, b in zip(out[STATES].values, out[ERRORS].values):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    relaxed = out[ERRORS].values[graph.output]
    assert torch.equal(relaxed[mask], y[mask])
    feedforward = graph.feedforward([x])[graph.output]
    assert not torch.allclose(relaxed[~mask], feedforward[~mask])


def test_error_pc_trains():
    """ePC steps with Adam lower the loss of a 6-layer MLP (float32, as users run it)."""
    torch.manual_seed(0)
    model = mlp([10, 16, 16, 16, 16, 16, 3], act="tanh", output_energy="ce")
    graph = pc.PCGraph(model)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rule = pc.ErrorPC(pc.SGD(0.1, momentum=0.5), 5)
    losses = [float(rule.step(graph, x, y, opt).loss) for _ in range(150)]
    assert losses[-1] < 0.2 * losses[0]


class TwoHeads(nn.Module):
    """One trunk, a squared-error head and a cross-entropy head."""

    def __init__(self):
        super().__init__()
        self.trunk, self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 2), nn.Linear(6, 3)
        self.h, self.ya, self.yb = pc.Node(), pc.Node("se"), pc.Node("ce")

    def forward(self, x):
        h = self.h(torch.tanh(self.trunk(x)))
        return self.ya(self.a(h)), self.yb(self.b(torch.relu(h)))


def test_several_outputs_equal_reference():
    torch.manual_seed(0)
    model = TwoHeads().double()
    graph = pc.PCGraph(model)
    x = torch.randn(4, 5, dtype=torch.float64)
    targets = (torch.randn(4, 2, dtype=torch.float64), torch.randint(0, 3, (4,)))
    model.zero_grad()
    pc.ErrorPC(pc.GradientDescent(0.1), 5).gradients(graph, x, targets)
    batch = prepare_batch(graph, x, targets)
    _, ref = reference_step(graph, [x], batch.targets, pc.GradientDescent(0.1), 5, ERRORS)
    for name, g in ref.items():
        torch.testing.assert_close(_grads(model)[name[len("model.") :]], g, rtol=1e-10, atol=1e-13)


def test_batch_norm_records_statistics_once():
    """With batch norm, an ePC step records the running statistics once, from the
    feed-forward pass, as backprop does."""
    from predcode.models import cnn

    stats = []
    for rule in (pc.Backprop(), pc.ErrorPC(pc.SGD(0.05), 4)):
        torch.manual_seed(0)
        model = cnn(channels=(2, 3), in_size=8, num_classes=3, batch_norm=True)
        graph = pc.PCGraph(model)
        x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
        rule.gradients(graph, x, y)
        stats.append([b.clone() for n, b in model.named_buffers() if "running" in n])
        assert all(p.grad is not None for p in model.parameters())
    for a, b in zip(*stats):
        torch.testing.assert_close(a, b)


def test_compiled_step_equals_eager():
    torch.manual_seed(0)
    model = mlp([6, 7, 7, 3], act="tanh")
    graph = pc.PCGraph(model)
    x, y = torch.randn(5, 6), torch.randn(5, 3)
    grads = []
    for compile in (False, True):
        model.zero_grad()
        pc.ErrorPC(pc.SGD(0.1, momentum=0.5), 3, compile=compile).gradients(graph, x, y)
        grads.append(_grads(model))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", ["tanh", "gelu-tanh", "relu", "sigmoid"])
def test_closed_form_error_gradients_equal_autograd(act):
    """Dense graphs take ePC's gradient as one closed-form reverse sweep: equal to autograd
    through the forward sweep (float64), with a free input, a partly clamped node and a
    categorical output."""
    from predcode.inference import EnergyLandscape

    torch.manual_seed(0)
    model = mlp([5, 6, 6, 6, 4], act=act, output_energy="ce").double()
    graph = pc.PCGraph(model)
    x = torch.randn(3, 5, dtype=torch.float64)
    values = graph.feedforward([x])
    values[graph.output] = torch.softmax(torch.randn(3, 4, dtype=torch.float64), -1)
    mask = torch.rand(3, 6) < 0.5
    values[2] = values[2] + 0.3 * torch.randn_like(values[2])  # away from the feed-forward pass
    free = [0, 1, 2, 3]
    rows = []
    for closed in (True, False):
        land = EnergyLandscape(graph, values, free, masks={2: mask}, closed_form=closed, variables=ERRORS)
        assert (land.closed_form is not None) == closed
        torch.manual_seed(1)
        states = [s + 0.1 * torch.randn(s.shape, dtype=s.dtype) for s in land.initial_states()]
        grads, row = land.grad_fn(states)
        rows.append((grads, row))
    for a, b in zip(rows[0][0], rows[1][0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(rows[0][1], rows[1][1], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("tolerance", [False, True], ids=["fused", "step-by-step"])
def test_tiny_errors_survive_float32(kind, tolerance):
    """With a tiny error rate the errors sit far below float32's resolution of the states
    (|e| ~ 1e-9 |x|): the update is taken from the errors themselves, not from x - mu, so
    float32 gives float64's weight update (cosine > 0.999 in every layer)."""
    _assert_tiny_errors_survive_float32(kind, tolerance)


def test_tiny_errors_survive_float32_in_the_pytorch_closed_form(monkeypatch):
    """The same on the dense MLP with the native kernel off: the closed-form products
    (predcode.closed_form) take the kept errors too."""
    monkeypatch.setenv("PREDCODE_NATIVE", "0")
    _assert_tiny_errors_survive_float32("mlp", False)


def _assert_tiny_errors_survive_float32(kind, tolerance):
    model, x, y = _problem(kind)
    model = model.float()
    with torch.no_grad():  # states of order 1 and more, so that x - mu cancels badly
        for p in model.parameters():
            p.add_(0.5 * torch.sign(p))
    stop = pc.StopRule(3, grad_tol=0.0) if tolerance else 3
    grads = {}
    for dtype in (torch.float32, torch.float64):
        model.to(dtype)
        graph = pc.PCGraph(model)
        model.zero_grad()
        pc.ErrorPC(pc.GradientDescent(1e-8), stop).gradients(
            graph, x.to(dtype), y.to(dtype) if y.is_floating_point() else y
        )
        grads[dtype] = {n: p.grad.double().flatten() for n, p in model.named_parameters()}
    for name, g64 in grads[torch.float64].items():
        g32 = grads[torch.float32][name]
        cosine = float(g32 @ g64 / (g32.norm() * g64.norm()))
        assert cosine > 0.999, (name, cosine)


def test_a_diverging_relaxation_with_a_tolerance_stops_at_once():
    """Gradient descent on the errors at far too large a step: with a tolerance stop rule
    the loop ends at the first diverged step and the error names it, instead of running
    (NaN) to the step cap."""
    model, x, y = _problem("mlp")
    graph = pc.PCGraph(model)
    calls = []
    stop = pc.StopRule(10000, energy_rtol=1e-12)

    def on_step(step, values):
        calls.append(step)

    batch = prepare_batch(graph, x.double(), y.double())
    free = [s.index for s in graph.slots if not s.is_input and s.index not in batch.targets]
    with pytest.raises(pc.DivergenceError) as raised:
        pc.relax(graph, batch.clamped(), free, pc.GradientDescent(50.0), stop, on_step=on_step, variables=ERRORS)
    assert len(calls) < 100
    assert raised.value.step <= len(calls)


def test_unknown_variables_is_a_clear_error():
    model, x, y = _problem("mlp")
    graph = pc.PCGraph(model)
    batch = prepare_batch(graph, x.double(), y.double())
    with pytest.raises(pc.OptionError, match="'states' or 'errors'"):
        pc.relax(graph, batch.clamped(), [1, 2, 3], pc.GradientDescent(0.1), pc.StopRule(2), variables="weights")
    assert pc.Variables("errors") is ERRORS


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cnn", "resnet", "lstm"])
def test_compiled_step_equals_eager_on_autograd_graphs(kind):
    """Graphs without the dense closed form: the compiled ePC step (torch.func.grad through
    the forward sweep) gives the eager step's weight gradients (cold compiles of 10-150 s)."""
    model, x, y = _problem(kind)
    model = model.float()
    x, y = x.float(), (y.float() if y.is_floating_point() else y)
    graph = pc.PCGraph(model)
    grads = []
    for compile in (False, True):
        model.zero_grad()
        pc.ErrorPC(pc.SGD(0.05, momentum=0.5), 3, compile=compile).gradients(graph, x, y)
        grads.append(_grads(model))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)

"""Batch norm in a predictive coding network: running statistics are recorded once per
training batch, by the feed-forward pass (as a backprop step records them), never by the
relaxation; eager and compiled steps agree; eval mode is untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import predcode as pc
from predcode.inference import relax
from predcode.running_stats import recording_layers


def _bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 8),
        nn.BatchNorm1d(8),
        nn.Tanh(),
        nn.Linear(8, 3),
    ).double()


def _batch():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(10, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (10,), generator=g))


def _stats(model):
    return [
        t.clone()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
        for t in (m.running_mean, m.running_var, m.num_batches_tracked)
    ]


def _assert_stats(model, want, rtol=0.0, atol=0.0):
    """The model's running statistics equal ``want`` (exactly by default; ``None``
    tolerances are torch's defaults for the dtype)."""
    for got, expected in zip(_stats(model), want, strict=True):
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)


def _assert_same_grads(a, b, rtol, atol):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "rule",
    [
        pc.InferenceLearning(pc.SGD(0.1, momentum=0.5), 6),
        pc.FixedPrediction(),
        pc.IncrementalPC(pc.GradientDescent(0.1), 4),
        pc.Backprop(),
    ],
    ids=["il", "fixed-prediction", "ipc", "bp"],
)
def test_a_training_step_records_running_stats_once_from_the_feedforward_pass(rule):
    x, y = _batch()
    model = _bn_cnn()
    twin = copy.deepcopy(model)
    graph = pc.convert(model)
    if isinstance(rule, pc.IncrementalPC):  # its weights move inside relaxation: step() only
        rule.step(graph, x, y, torch.optim.SGD(model.parameters(), lr=0.01))
    else:
        rule.gradients(graph, x, y)
    with torch.no_grad():
        twin(x)  # one feed-forward pass in train mode: what backprop records
    _assert_stats(model, _stats(twin), rtol=1e-13, atol=0)
    assert recording_layers(graph)  # switched back on after the step


def test_fixed_prediction_equals_backprop_through_batch_norm():
    """Batch norm couples the samples; the fixed-prediction errors carry that coupling
    exactly as backprop's gradients do."""
    x, y = _batch()
    a, b = _bn_cnn(), _bn_cnn()
    pc.FixedPrediction().gradients(pc.convert(a), x, y)
    pc.Backprop().gradients(pc.convert(b), x, y)
    _assert_same_grads(a, b, rtol=1e-10, atol=1e-13)


def test_relaxation_records_nothing_and_lowers_the_energy():
    x, y = _batch()
    model = _bn_cnn()
    graph = pc.convert(model)
    before = _stats(model)
    batch = pc.batch.prepare_batch(graph, x, y)  # records once (the feed-forward pass)
    after_forward = _stats(model)
    free = [s.index for s in graph.slots if not s.is_input and s.index not in graph.outputs]
    relaxed = relax(graph, batch.clamped(), free, pc.GradientDescent(0.1), pc.StopRule(20))
    assert relaxed.trace.energy[-1] < relaxed.trace.energy[0]
    _assert_stats(model, after_forward)
    assert int(after_forward[2]) == int(before[2]) + 1


def test_compiled_step_equals_eager_with_batch_norm():
    x, y = _batch()
    x, model_a, model_b = x.float(), _bn_cnn().float(), _bn_cnn().float()
    solver = pc.SGD(0.1, momentum=0.5)
    a = pc.InferenceLearning(solver, 2, compile=True).gradients(pc.convert(model_a), x, y)
    b = pc.InferenceLearning(solver, 2).gradients(pc.convert(model_b), x, y)
    torch.testing.assert_close(a.trace.energy, b.trace.energy, rtol=1e-5, atol=1e-6)
    _assert_same_grads(model_a, model_b, rtol=1e-4, atol=2e-5)  # a bias before BN: ~0
    _assert_stats(model_a, _stats(model_b), rtol=None, atol=None)


def test_eval_mode_uses_and_keeps_the_running_stats():
    x, y = _batch()
    model = _bn_cnn().eval()
    graph = pc.convert(model)
    before = _stats(model)
    assert not recording_layers(graph)
    pc.InferenceLearning(pc.SGD(0.1), 4).gradients(graph, x, y)
    _assert_stats(model, before)


def test_factories_and_config_take_batch_norm():
    from predcode.app.config import TrainConfig
    from predcode.app.train import build_model
    from predcode.exceptions import OptionError
    from predcode.models import cnn, vgg5

    model = cnn([4, 8], batch_norm=True)
    norms = [m for m in model if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [m.num_features for m in norms] == [4, 8] and all(c.bias is None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in cnn([4, 8]))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg5(width=0.05, batch_norm=True)) == 4
    cfg = TrainConfig(model="cnn", channels=[4], dataset="mnist", batch_norm=True)
    assert any(isinstance(m, nn.BatchNorm2d) for m in build_model(cfg))
    with pytest.raises(OptionError, match="batch_norm applies to the cnn"):
        TrainConfig(model="mlp", batch_norm=True).validate()


def test_evaluate_uses_eval_mode_records_nothing_and_restores_modes():
    from predcode.app.train import evaluate

    x, y = _batch()
    model = _bn_cnn()
    model[0].eval()  # a mixed-mode model: every module's own flag comes back
    before = _stats(model)
    evaluate(model, x, y)
    _assert_stats(model, before)
    assert [m.training for m in model] == [False] + [True] * (len(model) - 1)


def test_resnet_with_batch_norm_fixed_prediction_equals_backprop():
    """A residual net with batch norm on every convolution (the shortcut's too): fixed
    prediction equals backprop in float64 (compiled steps on batch norm: the CNN test)."""
    from predcode.models import resnet

    torch.manual_seed(0)
    a = resnet(1, 3, widths=(4, 8), batch_norm=True).double()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in a.modules()) == 6
    b = copy.deepcopy(a)
    x, y = _batch()
    pc.FixedPrediction().gradients(pc.PCGraph(a), x, y)
    pc.Backprop().gradients(pc.PCGraph(b), x, y)
    _assert_same_grads(a, b, rtol=1e-10, atol=1e-13)


def test_resume_with_batch_norm_equals_uninterrupted_run(tmp_path):
    """Running statistics are part of the checkpoint: a run resumed mid-epoch ends with the
    weights, the statistics and the test accuracies of the uninterrupted run."""
    from predcode.app.config import TrainConfig
    from predcode.app.train import Trainer

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 1, 28, 28, generator=g)
    labels = torch.randint(0, 3, (136,), generator=g)
    images = centers[labels] + torch.randn(136, 1, 28, 28, generator=g)
    data = (images[:96], labels[:96], images[96:], labels[96:])

    def config(run_dir, checkpoint_every=0):
        return TrainConfig(
            model="cnn",
            channels=[2],
            batch_norm=True,
            dataset="mnist",
            batch_size=16,
            epochs=2,
            steps=3,
            lr=1e-2,
            compare_bp=True,
            run_dir=str(run_dir),
            checkpoint_every=checkpoint_every,
        )

    full = Trainer(config(tmp_path / "a"), data, progress=False)
    full.fit()
    cfg = config(tmp_path / "b", checkpoint_every=3)
    Trainer(cfg, data, progress=False).fit(stop_after_batches=9)
    second = Trainer(cfg, data, progress=False)
    second.resume()
    second.fit()
    for a, b in zip(full.runs, second.runs, strict=True):
        for (name, s), (_, t) in zip(
            a.graph.model.state_dict().items(), b.graph.model.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(s, t, rtol=0, atol=0, msg=name)
    assert [h["il"]["test_acc"] for h in full.history] == [h["il"]["test_acc"] for h in second.history]
    assert int(full.runs[0].graph.model[1].num_batches_tracked) == 12  # once per batch


def test_angle_probe_records_no_running_stats():
    """Measuring the angle to backprop's gradient (TensorBoard's probe) runs a backprop
    pass; it must not record the batch a second time."""
    from predcode.app.tracking import AngleProbe

    x, y = _batch()
    model = _bn_cnn()
    graph = pc.convert(model)
    pc.InferenceLearning(pc.SGD(0.1), 4).gradients(graph, x, y)
    recorded = _stats(model)
    probe = AngleProbe(graph, x, y)
    probe([p for p in model.parameters()])
    assert probe.angles
    _assert_stats(model, recorded)


def test_queries_record_no_running_stats():
    from predcode.query import infer, predict

    x, _ = _batch()
    model = _bn_cnn()
    graph = pc.convert(model)
    before = _stats(model)
    predict(graph, x)
    predict(graph, x, inference=True, stop=5)
    infer(graph, {graph.inputs[0]: x}, stop=5)
    _assert_stats(model, before)


@pytest.mark.slow
def test_compiled_resnet_with_batch_norm_equals_eager():
    """Slow suite (a ResNet compiles for about 40 s on 2 cores)."""
    from predcode.models import resnet

    torch.manual_seed(0)
    c = resnet(1, 3, widths=(4, 8), batch_norm=True)
    d = copy.deepcopy(c)
    x, y = _batch()
    solver = pc.SGD(0.1, momentum=0.5)
    s = pc.InferenceLearning(solver, 4, compile=True).gradients(pc.PCGraph(c), x.float(), y)
    t = pc.InferenceLearning(solver, 4).gradients(pc.PCGraph(d), x.float(), y)
    torch.testing.assert_close(s.trace.energy, t.trace.energy, rtol=1e-5, atol=1e-6)
    _assert_same_grads(c, d, rtol=1e-4, atol=2e-5)


def test_incremental_pc_refuses_gradients_without_recording():
    x, y = _batch()
    model = _bn_cnn()
    graph = pc.convert(model)
    before = _stats(model)
    with pytest.raises(TypeError, match="call step"):
        pc.IncrementalPC(pc.GradientDescent(0.1), 4).gradients(graph, x, y)
    _assert_stats(model, before)

"""TensorBoard tracking: the event file holds the scalars, measuring angles to backprop
does not change training, and exact rules point where backprop points."""

from __future__ import annotations

import math

import pytest
import torch

from predcode import SGD, FixedPrediction, InferenceLearning
from predcode.app.cli import build_parser
from predcode.app.config import TrainConfig
from predcode.app.distributed import SINGLE
from predcode.app.tracking import AngleProbe, angle_degrees, gradient_angles
from predcode.app.train import Trainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from test_train import synthetic  # noqa: E402


def small(tmp_path, **kw) -> TrainConfig:
    base = dict(sizes=[12, 16, 16, 3], batch_size=16, epochs=2, steps=4, lr=1e-2, run_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


def read_scalars(log_dir) -> dict[str, list]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_event_file_has_the_scalars(tmp_path):
    trainer = Trainer(small(tmp_path, tensorboard=True, angle_every=2, compare_bp=True), synthetic(), progress=False)
    trainer.fit()
    trainer.close()
    scalars = read_scalars(tmp_path / "run" / "tb")
    nodes = [s.name for s in trainer.runs[0].graph.slots if not s.is_input]
    want = [
        "il/loss",
        "il/accuracy",
        "il/lr",
        "il/energy/total_initial",
        "il/energy/total_final",
        "il/inference/steps",
        "il/inference/grad_norm_final",
        "il/angle/overall",
        "il/epoch/test_acc",
        "il/epoch/loss",
        "bp/loss",
        "bp/epoch/test_acc",
    ]
    want += [f"il/energy/node/{n}" for n in nodes]
    missing = [t for t in want if t not in scalars]
    assert not missing, f"missing {missing}; have {sorted(scalars)}"
    assert [e.step for e in scalars["il/loss"]] == list(range(1, 13))  # 6 batches x 2 epochs
    assert [e.step for e in scalars["il/angle/overall"]] == [1, 3, 5, 7, 9, 11]
    layers = [t for t in scalars if t.startswith("il/angle/") and t != "il/angle/overall"]
    assert len(layers) == 3  # one per Linear layer
    assert all(0 <= e.value < 90 for e in scalars["il/angle/overall"])
    assert all(e.value == 4 for e in scalars["il/inference/steps"])
    assert [e.step for e in scalars["il/epoch/test_acc"]] == [6, 12]
    assert not any(t.startswith("bp/angle") for t in scalars)


def test_measuring_angles_does_not_change_training(tmp_path):
    plain = Trainer(small(tmp_path / "a"), synthetic(), progress=False)
    plain.fit()
    probed = Trainer(small(tmp_path / "b", tensorboard=True, angle_every=1), synthetic(), progress=False)
    probed.fit()
    probed.close()
    for p, q in zip(plain.runs[0].graph.model.parameters(), probed.runs[0].graph.model.parameters()):
        assert torch.equal(p, q)
    assert plain.history[-1]["il"] == {k: v for k, v in probed.history[-1]["il"].items()}


def test_exact_rule_points_where_backprop_points(make_net, make_batch):
    sizes = [6, 8, 8, 3]
    model, graph = make_net(sizes)
    x, y = make_batch(sizes)
    for rule, bound in ((FixedPrediction(lr=1.0), 1e-3), (InferenceLearning(SGD(0.1), 20), 90)):
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # measure only
        probe = AngleProbe(graph, x, y)
        rule.step(graph, x, y, SINGLE.synced(opt, 1.0, probe))
        layers = {n.rsplit(".", 1)[0] for n, _ in model.named_parameters()}
        assert set(probe.angles) == layers | {"overall"} and len(layers) == 3
        assert probe.angles["overall"] < bound


def test_angle_helpers():
    a = torch.tensor([1.0, 0.0])
    assert angle_degrees(a, torch.tensor([0.0, 2.0])) == pytest.approx(90)
    assert angle_degrees(a, -a) == pytest.approx(180)
    assert math.isnan(angle_degrees(a, torch.zeros(2)))
    got = gradient_angles({"0.weight": a, "0.bias": a, "1.weight": a}, {"0.weight": a, "0.bias": -a, "1.weight": a})
    assert got["0"] == pytest.approx(90) and got["1"] == pytest.approx(0)


def test_one_flag_turns_it_on():
    args = build_parser().parse_args(["train", "--tensorboard", "--angle-every", "10"])
    assert args.tensorboard is True and args.angle_every == 10

"""The model registry of `predcode train` (image models), and the two experiments on
small inputs: the bp-equivalence profiles and the char-LSTM training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from predcode import PCGraph
from predcode.app.config import TrainConfig
from predcode.app.train import Trainer, build_model, flat_inputs
from predcode.data import CharVocab
from predcode.exceptions import OptionError
from predcode.experiments import bp_equivalence as bpe
from predcode.experiments.char_lstm import CharConfig, train_char_model
from predcode.models import rosenbaum_cnn


@pytest.mark.parametrize(
    "name, dataset, shape",
    [
        ("cnn", "fashion-mnist", (2, 1, 28, 28)),
        ("vgg5", "mnist", (2, 1, 28, 28)),
        ("vgg7", "cifar10", (2, 3, 32, 32)),
        ("resnet", "cifar10", (2, 3, 32, 32)),
        ("rosenbaum-cnn", "mnist", (2, 1, 28, 28)),
    ],
)
def test_build_image_models(name, dataset, shape):
    cfg = TrainConfig(model=name, dataset=dataset, width=1 / 16, channels=[4, 8])
    model = build_model(cfg)
    assert not flat_inputs(cfg)
    assert model(torch.randn(*shape)).shape == (2, 10)
    PCGraph(model)


def test_build_model_errors_name_the_choices():
    with pytest.raises(OptionError, match="unknown model 'transformer'"):
        build_model(TrainConfig(model="transformer"))
    with pytest.raises(OptionError, match="needs an image dataset"):
        build_model(TrainConfig(model="cnn", dataset="shakespeare"))


def test_trainer_runs_a_cnn_beside_backprop(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(40, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (40,), generator=g)
    cfg = TrainConfig(
        model="cnn",
        channels=[2, 3],
        dataset="fashion-mnist",
        batch_size=10,
        epochs=1,
        compare_bp=True,
        run_dir=str(tmp_path),
        steps=2,
    )
    history = Trainer(cfg, (images, labels, images[:20], labels[:20]), progress=False).fit()
    assert set(history[0]) >= {"il", "bp"} and 0 <= history[0]["il"]["test_acc"] <= 1


# -- bp-equivalence on a random batch (the real run uses MNIST) -----------------------
def profile_setup():
    torch.manual_seed(0)
    graph = PCGraph(rosenbaum_cnn().double())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    groups = bpe.layer_groups(graph)
    return graph, groups, x, y, F.one_hot(y, 10).double(), bpe.backprop_grads(graph, groups, x, y)


def test_fixed_prediction_profile_is_exact_from_the_wavefront():
    graph, groups, x, y, target, want = profile_setup()
    run = bpe.fixed_prediction_profile(graph, groups, x, target, want, lr=1.0, steps=6)
    assert len(groups) == 5 and len(run["rel_error"]) == 7  # step 0 .. 6
    assert bpe.exact_from(run["rel_error"]) == [4, 3, 2, 1, 0]
    slow = bpe.fixed_prediction_profile(graph, groups, x, target, want, lr=0.1, steps=5)
    assert slow["rel_error"][-1][0] > 0.5  # far from exact after 5 slow steps


def test_strict_profile_small_output_error_is_close_to_backprop():
    graph, groups, x, y, target, want = profile_setup()
    weak = bpe.strict_profile(graph, groups, x, target, want, lr=0.1, steps=60, beta=1e-3)
    strong = bpe.strict_profile(graph, groups, x, target, want, lr=0.1, steps=60)
    assert weak["diverged_at_step"] is None
    final = weak["rel_error"][-1]  # Rosenbaum's profile: early layers converge slowest
    assert all(a > b for a, b in zip(final, final[1:])), final
    assert final[3] < 0.05 and final[0] < 0.5
    # per-sample output errors move the states far from the feed-forward pass: the output
    # layer's update, nearly exact with a weak output error, is far from backprop's
    assert final[4] < 1e-2 and strong["rel_error"][-1][4] > 0.3
    # rate 1 strict PC is exact at the wavefront (Z-IL's step) for the last hidden layer
    first = bpe.strict_profile(graph, groups, x, target, want, lr=1.0, steps=2, beta=1e-3)
    assert first["rel_error"][1][3] < 1e-6


# -- char-LSTM training loop on a tiny corpus -----------------------------------------
def tiny_corpus(seq_len):
    text = "to be or not to be that is the question " * 20
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    from predcode.data import char_windows

    return vocab, ids, char_windows(ids, seq_len)


def test_char_lstm_fixed_prediction_at_full_depth_trains_exactly_like_backprop():
    data = tiny_corpus(5)
    common = dict(seq_len=5, hidden=6, batch=4, steps=6, eval_every=3, eval_windows=8, dtype="float64")
    bp = train_char_model(CharConfig(rule="bp", **common), data)
    fp = train_char_model(CharConfig(rule="fp", state_lr=1.0, inference_steps=0, **common), data)
    il = train_char_model(CharConfig(rule="il", state_lr=0.05, inference_steps=3, **common), data)
    assert bp["step"] == [3, 6]
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(bp["test_loss"], fp["test_loss"]))
    assert not math.isclose(bp["test_loss"][-1], il["test_loss"][-1], rel_tol=1e-9)
    assert all(math.isfinite(v) for v in il["train_loss"])


def test_char_lstm_error_pc_trains_and_its_relaxations_lower_the_energy():
    data = tiny_corpus(5)
    common = dict(seq_len=5, hidden=16, batch=8, steps=40, eval_every=20, eval_windows=16, lr=1e-2)
    bp = train_char_model(CharConfig(rule="bp", **common), data)
    epc = train_char_model(
        CharConfig(rule="epc", state_lr=0.001, state_momentum=0.0, inference_steps=5, **common), data
    )
    assert epc["step"] == [20, 40]
    # it learns: the test loss falls from log(vocab) and the train loss from window to window
    vocab = len(data[0])
    assert epc["test_loss"][-1] < math.log(vocab) - 0.3
    assert epc["train_loss"][-1] < epc["train_loss"][0]
    # every relaxation lowered the energy
    assert all(f > 0 for f in epc["energy_fall"]) and epc["energy_rose"] == [0.0, 0.0]
    # small errors: the local update is backprop's direction, so the curves nearly agree
    assert abs(epc["test_loss"][-1] - bp["test_loss"][-1]) < 0.1

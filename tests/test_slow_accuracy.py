"""Accuracy on real data (slow suite: ``pytest -m slow``).

The pcx benchmark MLP (784-128-128-128-10, GELU-tanh, batch 128, T = 8, pcx
hyperparameters) trained by inference learning for 10 epochs, with backprop trained
side by side from the same initial weights on the same batches: MNIST in 10 epochs
(``configs/mlp-mnist.toml``), Fashion-MNIST with pcx's 25-epoch protocol
(``configs/mlp-fashion-mnist.toml``); a small CNN on Fashion-MNIST within half a point of
backprop on a CPU budget (``configs/cnn-fashion-mnist-cpu.toml``), and the same CNN with
batch norm (``configs/cnn-bn-fashion-mnist-cpu.toml``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from predcode import data
from predcode.app.config import TrainConfig
from predcode.app.train import Trainer

pytestmark = pytest.mark.slow


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _train(config: str, tmp_path) -> dict:
    cfg = TrainConfig.from_toml(CONFIGS / config, {"run_dir": str(tmp_path)})
    tensors = (*data.load(cfg.dataset, "train"), *data.load(cfg.dataset, "test"))
    return Trainer(cfg, tensors, progress=False).fit()[-1]


def test_mnist_mlp_reaches_98_and_matches_backprop(tmp_path):
    final = _train("mlp-mnist.toml", tmp_path)
    assert final["il"]["test_acc"] >= 0.980, final
    assert abs(final["il"]["test_acc"] - final["bp"]["test_acc"]) <= 0.003, final


def test_fashion_mnist_mlp_reaches_89_5(tmp_path):
    final = _train("mlp-fashion-mnist.toml", tmp_path)
    assert final["il"]["test_acc"] >= 0.895, final


def test_fashion_mnist_small_cnn_on_cpu_within_half_a_point_of_backprop(tmp_path):
    """``configs/cnn-fashion-mnist-cpu.toml`` (channels [16, 32], 235 steps): measured
    PC 82.92 / BP 82.94 (seed 0), results/cnn-fashion-mnist-cpu/."""
    from predcode.app.train import flat_inputs

    cfg = TrainConfig.from_toml(CONFIGS / "cnn-fashion-mnist-cpu.toml", {"run_dir": str(tmp_path)})
    load = dict(normalize=cfg.normalize, flatten=flat_inputs(cfg))  # as `predcode train` loads
    tensors = (*data.load(cfg.dataset, "train", **load), *data.load(cfg.dataset, "test", **load))
    final = Trainer(cfg, tensors, progress=False).fit()[-1]
    assert final["il"]["test_acc"] >= 0.82, final
    assert final["bp"]["test_acc"] - final["il"]["test_acc"] <= 0.005, final


def test_fashion_mnist_batch_norm_cnn_matches_backprop(tmp_path):
    """``configs/cnn-bn-fashion-mnist-cpu.toml`` (the CPU CNN with batch norm): measured
    PC 81.69 / BP 81.58 (seed 0), results/cnn-bn-fashion-mnist-cpu/."""
    from predcode.app.train import flat_inputs

    cfg = TrainConfig.from_toml(CONFIGS / "cnn-bn-fashion-mnist-cpu.toml", {"run_dir": str(tmp_path)})
    load = dict(normalize=cfg.normalize, flatten=flat_inputs(cfg))
    tensors = (*data.load(cfg.dataset, "train", **load), *data.load(cfg.dataset, "test", **load))
    final = Trainer(cfg, tensors, progress=False).fit()[-1]
    assert final["il"]["test_acc"] >= 0.80, final
    assert final["bp"]["test_acc"] - final["il"]["test_acc"] <= 0.005, final

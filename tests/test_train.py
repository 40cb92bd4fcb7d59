"""Training loop, checkpoints and exact resume, on small synthetic data."""

from __future__ import annotations

import json

import pytest
import torch

from predcode.app import checkpoint
from predcode.app.config import TrainConfig
from predcode.app.train import EpochBatches, Trainer, warmup_cosine
from predcode.exceptions import OptionError, PredcodeError


def synthetic(n_train=96, n_test=40, features=12, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=gen) * 2

    def make(n):
        y = torch.randint(0, classes, (n,), generator=gen)
        return centers[y] + torch.randn(n, features, generator=gen), y

    return (*make(n_train), *make(n_test))


def small_config(tmp_path, **kw) -> TrainConfig:
    base = dict(
        sizes=[12, 16, 16, 3],
        batch_size=16,
        epochs=2,
        steps=4,
        lr=1e-2,
        run_dir=str(tmp_path / "run"),
        checkpoint_every=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def params(trainer):
    return [torch.cat([p.detach().flatten() for p in r.graph.model.parameters()]) for r in trainer.runs]


@pytest.mark.parametrize("rule", ["il", "epc", "ipc", "fixed-prediction", "zil", "bp"])
def test_every_rule_learns_separable_data(tmp_path, rule):
    cfg = small_config(
        tmp_path,
        rule=rule,
        epochs=6,
        state_lr=1.0 if rule in ("zil", "fixed-prediction") else 0.1,
        solver="gd",
        state_momentum=0.0,
    )
    history = Trainer(cfg, synthetic(), progress=False).fit()
    assert history[-1][rule]["test_acc"] >= 0.9


@pytest.mark.parametrize("rule", ["il", "epc"])
def test_resume_equals_uninterrupted_run(tmp_path, rule):
    data = synthetic()
    full = Trainer(small_config(tmp_path / "a", rule=rule, compare_bp=True), data, progress=False)
    full.fit()
    # interrupted: stop mid-epoch 2 right after a checkpoint, resume in a fresh trainer
    cfg = small_config(tmp_path / "b", rule=rule, compare_bp=True, checkpoint_every=3)
    first = Trainer(cfg, data, progress=False)
    first.fit(stop_after_batches=9)  # epoch 1 has 6 batches: stops at batch 3 of epoch 2
    assert (first.epoch, first.batch) == (1, 3)
    second = Trainer(cfg, data, progress=False)
    second.resume()
    second.fit()
    for a, b in zip(params(full), params(second)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [h[rule]["test_acc"] for h in full.history] == [h[rule]["test_acc"] for h in second.history]


def test_checkpoint_is_atomic_and_complete(tmp_path):
    trainer = Trainer(small_config(tmp_path, epochs=1), synthetic(), progress=False)
    trainer.fit()
    path = trainer.checkpoint_path
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    state = checkpoint.load(path)
    assert state["epoch"] == 1 and set(state["runs"]) == {"il"}
    lines = [json.loads(l) for l in trainer.metrics_path.read_text().splitlines()]
    assert lines[-1]["epoch"] == 1 and "test_acc" in lines[-1]["il"]


def test_failed_write_leaves_old_checkpoint(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.ones(2), "step": 1})
    with pytest.raises(TypeError):
        checkpoint.save(path, {"w": torch.zeros(2), "bad": object()})
    assert checkpoint.load(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_refuses_other_settings(tmp_path):
    data = synthetic()
    Trainer(small_config(tmp_path, epochs=1), data, progress=False).fit()
    other = Trainer(small_config(tmp_path, epochs=1, lr=0.5), data, progress=False)
    with pytest.raises(PredcodeError, match="lr"):
        other.resume()


def test_batches_depend_only_on_seed_and_epoch():
    a, b = EpochBatches(50, 8, seed=3), EpochBatches(50, 8, seed=3)
    a.set_epoch(2)
    b.set_epoch(2, start=4)
    assert [t.tolist() for t in a][4:] == [t.tolist() for t in b]
    a.set_epoch(3)
    assert [t.tolist() for t in a] != [t.tolist() for t in b]


def test_warmup_cosine_shape():
    f = warmup_cosine(100)
    assert f(0) == 1.0 and f(10) == pytest.approx(1.1) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 99))


def test_config_rejects_unknown_keys_and_values(tmp_path):
    with pytest.raises(OptionError, match="unknown config key"):
        TrainConfig.from_dict({"lrate": 1})
    with pytest.raises(OptionError, match="unknown rule"):
        TrainConfig(rule="magic").validate()
    toml = tmp_path / "c.toml"
    toml.write_text('rule = "bp"\nepochs = 3\nsizes = [784, 10]\n')
    cfg = TrainConfig.from_toml(toml, {"epochs": 5})
    assert (cfg.rule, cfg.epochs, cfg.sizes) == ("bp", 5, [784, 10])


def test_a_run_checkpoints_the_learned_state_of_its_rule(tmp_path):
    """A rule with learned state of its own (target propagation's inverses) is saved with
    its run and restored into a fresh run; a rule without any saves none."""
    trainer = Trainer(small_config(tmp_path, rule="dtp", epochs=1, max_batches=2), synthetic(), progress=False)
    trainer.fit()
    run = trainer.runs[0]
    state = run.state_dict()
    assert set(state["rule"]) == {"inverses", "optimizer"}
    fresh = Trainer(small_config(tmp_path / "b", rule="dtp", epochs=1), synthetic(), progress=False).runs[0]
    fresh.load_state_dict(state)
    restored = fresh.rule.inverses(fresh.graph).state_dict()
    for key, value in run.rule.inverses(run.graph).state_dict().items():
        assert torch.equal(restored[key], value)
    assert "rule" not in Trainer(small_config(tmp_path / "c"), synthetic(), progress=False).runs[0].state_dict()

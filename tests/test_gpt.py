"""The character transformer (predcode.models.gpt) under every rule: fixed prediction
equals backprop (gradients in float64, loss curves in float32), ePC in its small-error
regime points where backprop does, sampling, the char-transformer experiment's pieces and
the tutorial page in a short form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import predcode as pc
from predcode import data as pcdata
from predcode.exceptions import OptionError
from predcode.experiments import char_transformer as ct
from predcode.models import gpt

ROOT = Path(__file__).resolve().parents[1]
V, L = 11, 8


def tiny(dtype=torch.float64, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return gpt(V, context=L, width=16, depth=2, heads=2, **kwargs).to(dtype)


def batch(n: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, L), generator=g), torch.randint(0, V, (n, L), generator=g)


def bp_grads(model, ids, nxt):
    logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, V), nxt.reshape(-1), reduction="sum") / ids.shape[0]
    return torch.autograd.grad(loss, list(model.parameters()))


def rule_grads(rule, graph, model, ids, nxt):
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, ids, nxt)
    return [p.grad.detach().clone() for p in model.parameters()]


def test_nodes_after_embedding_sublayers_blocks_and_output():
    graph = pc.PCGraph(tiny())
    assert graph.names == [
        "ids",
        "embed",
        "blocks.0.attn_node",
        "blocks.0.mlp_node",
        "blocks.0.node",
        "blocks.1.attn_node",
        "blocks.1.mlp_node",
        "blocks.1.node",
        "out",
    ]
    assert type(graph.slots[-1].energy).__name__ == "Categorical"
    coarse = pc.PCGraph(tiny(nodes="blocks"))
    assert coarse.names == ["ids", "embed", "blocks.0.node", "blocks.1.node", "out"]


@pytest.mark.parametrize("nodes", ["sublayers", "blocks"])
def test_fixed_prediction_equals_backprop(nodes, max_rel_error):
    model = tiny(nodes=nodes)
    graph = pc.PCGraph(model)
    ids, nxt = batch()
    want = bp_grads(model, ids, nxt)
    assert max_rel_error(rule_grads(pc.FixedPrediction(), graph, model, ids, nxt), want) <= 1e-10
    assert max_rel_error(rule_grads(pc.Backprop(), graph, model, ids, nxt), want) <= 1e-12


def test_feedforward_loss_is_the_summed_cross_entropy():
    model = tiny()
    graph = pc.PCGraph(model)
    ids, nxt = batch()
    stats = pc.ErrorPC().gradients(graph, ids, nxt)
    with torch.no_grad():
        want = F.cross_entropy(model(ids).reshape(-1, V), nxt.reshape(-1), reduction="sum") / ids.shape[0]
    assert float(stats.loss) == pytest.approx(float(want), rel=1e-12)


def test_epc_small_errors_point_where_backprop_points():
    """Per parameter, ePC's update at a small error rate is parallel to backprop's (at init
    with the unit-scale embedding; the measured worst cosine is 0.99999)."""
    model = tiny(seed=2)
    graph = pc.PCGraph(model)
    ids, nxt = batch(8)
    want = bp_grads(model, ids, nxt)
    got = rule_grads(pc.ErrorPC(pc.SGD(1e-4), pc.StopRule(max_steps=5)), graph, model, ids, nxt)
    cos = [float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0)) for a, b in zip(got, want) if b.norm() > 1e-12]
    assert min(cos) > 0.999


def test_fixed_prediction_loss_curve_equals_backprop_in_float32():
    text = ct.PROMPT + "".join(chr(97 + (i * 7 + i // 5) % 4) for i in range(4000))
    vocab = pcdata.CharVocab.from_text(text)
    ids = vocab.encode(text)
    windows = pcdata.char_windows(ids[-800:], L)
    corpus = ct.Corpus(vocab, ids[:-800], windows, windows)
    base = dict(context=L, width=16, depth=2, heads=2, batch=8, steps=6, eval_every=3, sample_chars=12, test_windows=16)
    curves = {
        rule: ct.train_lm(
            ct.LMConfig(rule=rule, **base, **({"state_lr": 1.0, "inference_steps": 0} if rule == "fp" else {})), corpus
        )
        for rule in ("bp", "fp")
    }
    diffs = [abs(a - b) for a, b in zip(curves["fp"]["loss"], curves["bp"]["loss"])]
    assert max(diffs) < 1e-5 and diffs[0] == 0.0  # the same weights and batch at step 1
    assert curves["bp"]["loss"][-1] < curves["bp"]["loss"][0]
    assert len(curves["bp"]["sample"]) == len(ct.PROMPT) + 12
    summary = ct.summarise({k: [v] for k, v in curves.items()})
    assert summary["fp_vs_bp_max_abs_diff"]["train_loss_per_step"] == max(diffs)


def test_generate_continues_the_prompt_beyond_the_context():
    model = tiny(torch.float32)
    prompt = torch.tensor([1, 2, 3])
    a = model.generate(prompt, 20, temperature=0.8, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 20, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert a.shape == (23,) and torch.equal(a[:3], prompt) and torch.equal(a, b)
    assert int(a.max()) < V
    with pytest.raises(OptionError, match="temperature"):
        model.generate(prompt, 2, temperature=0.0)


def test_bad_options_are_clear():
    with pytest.raises(OptionError, match="not divisible"):
        gpt(V, width=10, heads=4)
    with pytest.raises(OptionError, match="nodes must be"):
        gpt(V, nodes="all")
    with pytest.raises(OptionError, match=">= 1"):
        gpt(V, depth=0)


def _has_shakespeare() -> bool:
    try:
        pcdata.load_text("shakespeare", "test")
        return True
    except pcdata.DatasetNotFoundError:
        return False


@pytest.mark.skipif(not _has_shakespeare(), reason="run `predcode data fetch shakespeare`")
def test_tutorial_page_runs_in_a_short_form(tmp_path, monkeypatch, capsys):
    """docs/tutorials/char-transformer.md, every block, with its training time cut from
    minutes to a few seconds."""
    page = (ROOT / "docs" / "tutorials" / "char-transformer.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(code) == 4 and "minutes = 3.0" in code[2]
    code[2] = code[2].replace("minutes = 3.0", "minutes = 0.05")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for source in code:
        exec(compile(source, "char-transformer.md", "exec"), namespace)
    assert namespace["step"] >= 1
    assert namespace["text"].startswith("ROMEO:\n") and len(namespace["text"]) == 307


def test_train_config_pairs_gpt_with_shakespeare():
    from predcode.app.config import TrainConfig

    for bad in (dict(model="gpt"), dict(dataset="shakespeare"), dict(model="cnn", dataset="shakespeare")):
        with pytest.raises(OptionError, match="--model gpt --dataset shakespeare together"):
            TrainConfig(**bad)
    TrainConfig(model="gpt", dataset="shakespeare")


@pytest.mark.skipif(not _has_shakespeare(), reason="run `predcode data fetch shakespeare`")
def test_trainer_trains_gpt_on_token_windows(tmp_path):
    """The trainer behind `predcode train --model gpt --dataset shakespeare`, on a few
    windows: integer ids stay integers, accuracies count positions."""
    from predcode.app.config import TrainConfig
    from predcode.app.registry import GPT_CONTEXT
    from predcode.app.train import Trainer

    vocab = pcdata.corpus_vocab("shakespeare")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(vocab), (12, GPT_CONTEXT + 1), generator=g)
    x, y = ids[:, :-1], ids[:, 1:]
    cfg = TrainConfig(
        model="gpt",
        dataset="shakespeare",
        rule="epc",
        steps=2,
        state_lr=1e-3,
        state_momentum=0.0,
        batch_size=4,
        epochs=1,
        max_batches=2,
        compare_bp=True,
        run_dir=str(tmp_path / "run"),
    )
    trainer = Trainer(cfg, (x, y, x[:4], y[:4]), progress=False)
    assert trainer.train[0].dtype == torch.int64
    record = trainer.fit()[-1]
    for run in ("epc", "bp"):
        assert 0.0 <= record[run]["test_acc"] <= 1.0 and 0.0 <= record[run]["train_acc"] <= 1.0
        assert record[run]["loss"] == pytest.approx(GPT_CONTEXT * 4.17, rel=0.1)  # summed over positions


@pytest.mark.slow
@pytest.mark.skipif(not _has_shakespeare(), reason="run `predcode data fetch shakespeare`")
def test_train_command_on_shakespeare(tmp_path):
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "predcode",
            "train",
            "--model",
            "gpt",
            "--dataset",
            "shakespeare",
            "--rule",
            "epc",
            "--state-lr",
            "0.001",
            "--steps",
            "5",
            "--max-batches",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--quiet",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    assert 0.0 < json.loads(out.stdout.strip().splitlines()[-1])["test_acc"]["epc"] < 1.0

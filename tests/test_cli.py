"""The command line, end to end on the real (cached) MNIST data: train, resume, eval."""

from __future__ import annotations

import json

from cached_data import needs_datasets

from predcode import data
from predcode.app.cli import main

needs_mnist = needs_datasets("mnist")


@needs_mnist
def test_train_resume_eval(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--quiet",
        "--epochs",
        "1",
        "--max-batches",
        "30",
        "--compare-bp",
        "--run-dir",
        str(run),
        "--sizes",
        "784",
        "32",
        "10",
        "--lr",
        "1e-3",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["test_acc"]) == {"il", "bp"} and out["test_acc"]["il"] > 0.5
    # resume with more epochs continues from the checkpoint (epoch 2 only)
    assert main(args[:3] + ["2"] + args[4:] + ["--resume"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "checkpoint.safetensors"), "--inference", "--steps", "20"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["il"]["test_acc"] > 0.5
    assert abs(result["il"]["test_acc_inference"] - result["il"]["test_acc"]) < 0.02


def test_unknown_option_is_a_clear_error(capsys):
    assert main(["train", "--rule", "magic", "--quiet"]) == 2
    assert "unknown rule 'magic'" in capsys.readouterr().err


def test_missing_dataset_names_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREDCODE_DATA", str(tmp_path))
    data.clear_cache()
    code = main(["train", "--quiet", "--dataset", "fashion-mnist", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert "predcode data fetch fashion-mnist" in capsys.readouterr().err


@needs_mnist
def test_batch_norm_train_then_eval_gives_the_same_accuracy(tmp_path, capsys):
    """`predcode eval` evaluates in eval mode with the checkpoint's running statistics, so
    it repeats the accuracy the training run reported, by the feed-forward pass and by
    relaxation (in train mode the relaxation would normalise by the test images'
    statistics, and its accuracy would differ)."""
    run = tmp_path / "bn"
    assert (
        main(
            [
                "train",
                "--quiet",
                "--model",
                "cnn",
                "--channels",
                "2",
                "--batch-norm",
                "--epochs",
                "1",
                "--max-batches",
                "40",
                "--steps",
                "3",
                "--lr",
                "3e-3",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_acc"]["il"]
    assert trained > 0.3
    assert main(["eval", "--checkpoint", str(run / "checkpoint.safetensors"), "--inference", "--steps", "5"]) == 0
    result = json.loads(capsys.readouterr().out)["il"]
    assert result["test_acc"] == trained
    assert abs(result["test_acc_inference"] - trained) < 1e-3


@needs_mnist
def test_train_error_pc_then_query_by_errors(tmp_path, capsys):
    """``--rule epc`` trains from the command line; ``eval --inference --relax errors`` and
    ``query --relax errors`` relax a trained network by its errors."""
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--quiet",
                "--rule",
                "epc",
                "--epochs",
                "1",
                "--max-batches",
                "30",
                "--run-dir",
                str(run),
                "--sizes",
                "784",
                "32",
                "32",
                "10",
                "--lr",
                "1e-3",
                "--steps",
                "4",
                "--state-lr",
                "0.05",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["test_acc"]) == {"epc"} and out["test_acc"]["epc"] > 0.5
    ckpt = str(run / "checkpoint.safetensors")
    assert main(["eval", "--checkpoint", ckpt, "--inference", "--relax", "errors", "--steps", "20"]) == 0
    result = json.loads(capsys.readouterr().out)["epc"]
    assert abs(result["test_acc_inference"] - result["test_acc"]) < 0.02
    assert (
        main(
            [
                "query",
                ckpt,
                "--clamp",
                "output=label:3",
                "--relax",
                "errors",
                "--steps",
                "30",
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["relax"] == "errors" and summary["energy_final"] < summary["energy_initial"]

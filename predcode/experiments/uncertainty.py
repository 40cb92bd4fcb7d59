r"""Uncertainty: relaxed energy as an out-of-distribution score (MNIST
in, Fashion-MNIST out, AUROC), calibration (ECE) of PC against backprop, and Monte-Carlo
PC (Langevin inference) predictive entropy as a second OOD score.

Protocol.  MLP 784-128-128-10 (tanh, categorical output), inputs in [0, 1], batch 128,
Adam lr 1e-3; PC = inference learning with T = 8 steps of state SGD (lr 0.1, momentum
0.5); backprop trained side by side from the same initial weights on the same batches.
Test: the first ``n_eval`` MNIST test images (in distribution) and the first ``n_eval``
Fashion-MNIST test images (out of distribution).

Scores (higher = more likely OOD), each with its AUROC (:func:`predcode.uncertainty.auroc`):

* ``msp``: one minus the maximum softmax probability of the feed-forward pass (baseline);
* ``energy``: the relaxed energy with the input and the argmax label clamped, 20 steps of
  state gradient descent at rate 0.1 (:func:`predcode.uncertainty.relaxed_energy`; why
  this energy and not the output-free one is in that module's docstring);
* ``mc_entropy``: the entropy of the Monte-Carlo PC predictive distribution (Langevin
  chains over the hidden nodes, input clamped; :func:`predcode.uncertainty.mc_predictive`)
  at each temperature of ``TEMPERATURES`` (all reported; none is selected).

Calibration: ECE with 15 bins and the reliability diagram of both networks' softmax
outputs on the MNIST test images.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from .. import SGD, Backprop, GradientDescent, InferenceLearning, PCGraph
from ..models import mlp
from ..sampling import Langevin
from ..uncertainty import auroc, mc_predictive, predictive_entropy, relaxed_energy, reliability
from . import common, experiment

SETTINGS = {"default": {"epochs": 2, "n_eval": 1000}, "full": {"epochs": 10, "n_eval": 10000}}
TEMPERATURES = (0.01, 0.1)
MC = {"lr": 0.05, "chains": 4, "burn_in": 10, "samples": 10}
ENERGY_STEPS, ENERGY_LR = 20, 0.1


def train_pair(train: common.Split, epochs: int, seed: int):
    """PC and BP copies of one initial MLP, trained on the same batches."""
    torch.manual_seed(seed)
    pc_model = mlp([784, 128, 128, 10], act="tanh", output_energy="ce")
    bp_model = copy.deepcopy(pc_model)
    nets = {"pc": (pc_model, InferenceLearning(SGD(0.1, momentum=0.5), stop=8)), "bp": (bp_model, Backprop())}
    graphs = {k: PCGraph(m) for k, (m, _) in nets.items()}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, (m, _) in nets.items()}
    stream = common.BatchStream(len(train), 128, [seed])
    for epoch in range(epochs):
        for idx in stream.epoch(epoch):
            idx = idx[0]
            for k, (_, rule) in nets.items():
                rule.step(graphs[k], train.x[idx], train.y[idx], opts[k])
    return graphs


def _batched(fn, x: torch.Tensor, size: int = 500) -> torch.Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


@experiment(
    "uncertainty", "Relaxed-energy and MC-PC entropy OOD scores (MNIST vs Fashion-MNIST, AUROC); ECE of PC vs backprop"
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("uncertainty", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    train = common.load("mnist", "train")
    test_in = common.load("mnist", "test")
    test_out = common.load("fashion-mnist", "test")
    n = cfg["n_eval"]
    x_in, y_in, x_out = test_in.x[:n], test_in.y[:n], test_out.x[:n]
    graphs = train_pair(train, cfg["epochs"], seed)
    train_s = job.clock()
    results, hist, rel = {}, {}, {}
    aurocs: dict[str, dict[str, float]] = {}  # per graph: the AUROC of every OOD score
    gen = torch.Generator().manual_seed(seed)
    for name, graph in graphs.items():
        with torch.no_grad():
            p_in = torch.softmax(graph.model(x_in), -1)
            p_out = torch.softmax(graph.model(x_out), -1)
        r = reliability(p_in, y_in)
        rel[name] = r
        scores = {"msp": (1 - p_in.max(1).values, 1 - p_out.max(1).values)}

        def energy(x, graph=graph):
            return relaxed_energy(graph, x, solver=GradientDescent(ENERGY_LR), stop=ENERGY_STEPS)

        scores["energy"] = (_batched(energy, x_in), _batched(energy, x_out))
        mc_acc = {}
        for t in TEMPERATURES:
            solver = Langevin(MC["lr"], temperature=t, generator=gen)

            def mc(x, graph=graph, solver=solver):
                return mc_predictive(
                    graph, x, solver, chains=MC["chains"], burn_in=MC["burn_in"], samples=MC["samples"]
                )

            q_in, q_out = _batched(mc, x_in), _batched(mc, x_out)
            scores[f"mc_entropy_T{t}"] = (predictive_entropy(q_in), predictive_entropy(q_out))
            mc_acc[f"T{t}"] = float((q_in.argmax(1) == y_in).double().mean())
        hist[name] = scores["energy"]
        aurocs[name] = {k: auroc(a, b) for k, (a, b) in scores.items()}
        results[name] = {
            "accuracy": float((p_in.argmax(1) == y_in).double().mean()),
            "ece": r.ece,
            "auroc": aurocs[name],
            "score_means": {k: {"in": float(a.mean()), "out": float(b.mean())} for k, (a, b) in scores.items()},
            "mc_accuracy": mc_acc,
            "reliability": {"counts": r.counts, "confidence": r.confidence, "accuracy": r.accuracy},
        }
    headline = {f"{k}_{m}": results[k][m] for k in graphs for m in ("accuracy", "ece")}
    headline.update({f"{k}_auroc_{s}": v for k in graphs for s, v in aurocs[k].items()})
    figures = [_figure(out_dir, hist, rel)]
    payload = {
        **job.header(),
        "runtime_s": job.clock(),
        "train_s": train_s,
        "environment": common.environment(),
        "hyperparameters": {
            "model": "mlp 784-128-128-10 tanh, ce output",
            "batch": 128,
            "optimizer": "Adam lr 1e-3 (both)",
            "epochs": cfg["epochs"],
            "pc_rule": "InferenceLearning(SGD(0.1, momentum=0.5), T=8)",
            "energy_score": f"GradientDescent({ENERGY_LR}), {ENERGY_STEPS} steps, argmax label clamped",
            "mc_pc": {**MC, "temperatures": list(TEMPERATURES)},
            "n_eval_in": n,
            "n_eval_out": n,
            "ece_bins": 15,
        },
        "headline": headline,
        "results": results,
        "figures": figures,
    }
    common.write_json(out_dir / "result.json", payload)
    return {"runtime_s": round(job.clock(), 1), "headline": headline}


def _figure(out_dir: Path, hist: dict, rel: dict) -> str:
    fig, axes = common.figure(ncols=3)
    for ax, name in zip(axes[0, :2], ("pc", "bp")):
        a, b = (np.log10(np.asarray(v.clamp(min=1e-6))) for v in hist[name])
        bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 40)
        ax.hist(a, bins, alpha=0.6, label="MNIST (in)", color="#1f77b4")
        ax.hist(b, bins, alpha=0.6, label="Fashion-MNIST (out)", color="#d62728")
        ax.set_xlabel("log10 relaxed energy (argmax label clamped)")
        ax.set_ylabel(f"test images per bin (of {len(a)} each)")
        ax.set_title(f"{common.LABELS.get(name, name)}: energy score")
        ax.legend()
    ax = axes[0, 2]
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for name in ("pc", "bp"):
        r = rel[name]
        keep = r.counts > 0
        mids = ((r.edges[:-1] + r.edges[1:]) / 2)[keep]
        ax.plot(mids, r.accuracy[keep], "o-", color=common.COLORS[name], label=f"{name.upper()} (ECE {r.ece:.4f})")
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("accuracy in the confidence bin")
    ax.set_title("reliability, MNIST test (15 bins)")
    ax.legend()
    return common.save(fig, out_dir, "uncertainty.png")

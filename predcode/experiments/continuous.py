r"""Continuous predictive coding on a stream (no phases, no global clock).

An MLP 784-128-128-10 (GELU-tanh, squared-error output on one-hot labels, inputs in
[-1, 1]) runs on a stream of MNIST training images and labels (:mod:`predcode.bio.stream`): each
example stays on the input for K ticks, and at *every* tick every value node takes one
Euler step (rate 0.5) and every weight one SGD step (lr 0.02 per tick), from the same
errors; value nodes are never reset between examples.  S = 32 streams run side by side
sharing the weights, with staggered example boundaries (no tick at which all inputs change).
Every K sees the same examples in the same order (so larger K means more ticks); the
metric is feed-forward test accuracy after one pass.  Quick: 10,000 examples, K in
{1, 2, ..., 32}; ``--full``: all 60,000 examples, K up to 64, 2 seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor

from .. import PCGraph
from ..bio.stream import ContinuousPC, run_stream
from ..models import mlp
from . import bioplausible, common, experiment

SIZES, ACT = [784, 128, 128, 10], "gelu-tanh"


class Settings(TypedDict):
    """Ticks per example K, stream examples, streams side by side and seeds."""

    ks: list[int]
    examples: int
    streams: int
    seeds: int


class Hyperparameters(TypedDict):
    """The value nodes' Euler rate, the weights' SGD rate per tick and that optimizer in words."""

    state_lr: float
    weight_lr: float
    weight_optimizer: str


SETTINGS: dict[str, Settings] = {
    "default": {"ks": [1, 2, 4, 8, 16, 32], "examples": 10000, "streams": 32, "seeds": 1},
    "full": {"ks": [1, 2, 4, 8, 16, 32, 64], "examples": 60000, "streams": 32, "seeds": 2},
}
HP: Hyperparameters = {"state_lr": 0.5, "weight_lr": 0.02, "weight_optimizer": "SGD, one step per tick"}


def one(k: int, seed: int, cfg: Settings, x: Tensor, y: Tensor, xt: Tensor, yt: Tensor) -> dict:
    torch.manual_seed(seed)
    model = mlp(SIZES, act=ACT)
    net = ContinuousPC(PCGraph(model), torch.optim.SGD(model.parameters(), lr=HP["weight_lr"]), state_lr=HP["state_lr"])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: cfg["examples"]]
    energy: list[float] = []
    ticks = run_stream(
        net,
        x,
        y,
        k,
        streams=cfg["streams"],
        order=order,
        on_tick=lambda t, s: energy.append(float(s.energy) / cfg["streams"]),
    )
    every = max(1, len(energy) // 200)
    return {
        "K": k,
        "ticks": ticks,
        "accuracy": bioplausible.accuracy(model, xt, yt),
        "energy_per_stream": energy[::every],
    }


@experiment(
    "continuous",
    "continuous PC on a stream (every node and weight updated "
    "every tick, no resets); MNIST accuracy vs ticks per example",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("continuous", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    x, y, xt, yt = bioplausible.mnist()
    seeds = job.seeds(cfg["seeds"])
    runs = {k: [one(k, s, cfg, x, y, xt, yt) for s in seeds] for k in cfg["ks"]}
    acc = {k: common.stats([r["accuracy"] * 100 for r in runs[k]]) for k in cfg["ks"]}
    ks = cfg["ks"]
    checks = [
        {
            "check": "the stream learns at every K (test accuracy above chance, 10 %)",
            "accuracy": acc,
            "holds": all(acc[k]["mean"] > 10 for k in ks),
        },
        {
            "check": "accuracy at the largest K is above accuracy at K = 1",
            "holds": acc[ks[-1]]["mean"] > acc[ks[0]]["mean"],
        },
    ]
    fig, axes = common.figure(2, 1)
    ax = axes[0, 0]
    ax.errorbar(ks, [acc[k]["mean"] for k in ks], yerr=[acc[k]["std"] for k in ks], marker="o")
    ax.set(
        xscale="log",
        xlabel="ticks per example K",
        ylabel="test accuracy (%)",
        title=f"continuous PC, {cfg['examples']} examples",
    )
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax = axes[0, 1]
    for k in ks:
        e = runs[k][0]["energy_per_stream"]
        ax.plot([i / (len(e) - 1) for i in range(len(e))], e, label=f"K = {k}", lw=0.8)
    ax.set(yscale="log", xlabel="fraction of the stream", ylabel="energy per stream", title="energy along the stream")
    ax.legend(fontsize=7)
    figures = [common.save(fig, out_dir, "continuous.png")]
    return bioplausible.finish(
        job,
        summary="MNIST test accuracy vs ticks per example, every node and weight updated every tick",
        hyperparameters={
            "sizes": SIZES,
            "activation": ACT,
            "output": "squared error, one-hot",
            "inputs": "[-1, 1]",
            **HP,
            **cfg,
            "seeds": seeds,
            "stagger": "stream s starts s*K//S ticks into its first example",
            "start": "value nodes at the feed-forward pass on the first tick only",
        },
        checks=checks,
        data={str(k): {"accuracy": acc[k], "runs": runs[k]} for k in ks},
        figures=figures,
    )

r"""Credit-assignment rules side by side: backprop, predictive coding
(inference learning, and fixed prediction), feedback alignment, direct feedback alignment,
difference target propagation and equilibrium propagation, all behind the same
:class:`~predcode.rules.base.LearningRule` interface, on the same model.

Protocol: MNIST and Fashion-MNIST in [0, 1]; the MLP 784-128-128-10 (tanh, ``Linear ->
tanh -> Node`` per hidden layer, cross-entropy output node), PyTorch's default
initialisation from the same seed for every rule; batch 128, Adam at a constant rate, the
same number of optimizer steps for every rule (quick: 1 epoch of 20 000 of the training
images, 156 steps; ``--full``: 10 epochs of all 55 000).  Every rule's learning rate is
chosen from a small grid (quick: 1e-3, 3e-3, 1e-2; full: 1e-4 to 1e-2) by the accuracy on
a 5000-image validation split held out of the training set; the test accuracy of that run is reported (one seed).

Rule settings (not tuned): IL relaxes 20 steps of gradient descent at rate 0.1 with input
and target clamped; fixed prediction runs at rate 1 for depth steps (exact backprop);
FA/DFA draw their fixed random matrices in nn.Linear's default range; DTP uses target step
0.1, corruption noise 0.1 and Adam 1e-3 for its inverses; EP nudges with beta = 0.1 and
relaxes 20 steps of gradient descent at 0.1 on the PC energy (one-sided nudge).

Cost: wall-clock milliseconds per training step (the rule's gradients plus the optimizer
step) on one CPU thread, measured round-robin after training (one step of every rule per
round on the same batch, median over the rounds), so that the load of a shared machine
falls on all rules alike; the table gives the median and its ratio to backprop's.  The
mean step time of each training run is kept in the JSON too (``ms_per_step``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from .. import plotting
from ..graph import PCGraph
from ..inference import GradientDescent, StopRule
from ..models import mlp
from ..rules import (
    Backprop,
    DifferenceTargetPropagation,
    DirectFeedbackAlignment,
    EquilibriumPropagation,
    FeedbackAlignment,
    FixedPrediction,
    InferenceLearning,
    LearningRule,
)
from . import common, experiment

SIZES, ACT, OUTPUT = [784, 128, 128, 10], "tanh", "ce"
BATCH, VALIDATION = 128, 5000
DATASETS = ("mnist", "fashion-mnist")


class Settings(TypedDict):
    """Training epochs, training images (None: all but the validation images), the
    learning-rate grid and the rounds of the interleaved timing."""

    epochs: int
    train_images: int | None
    grid: list[float]
    timing_rounds: int


SETTINGS: dict[str, Settings] = {
    "default": {"epochs": 1, "train_images": 20000, "grid": [1e-3, 3e-3, 1e-2], "timing_rounds": 40},
    "full": {"epochs": 10, "train_images": None, "grid": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "timing_rounds": 200},
}
RULES = ("bp", "il", "fixed-prediction", "fa", "dfa", "dtp", "ep")
NAMES = {
    "bp": "backprop",
    "il": "PC (inference learning, T=20)",
    "fixed-prediction": "PC, fixed prediction",
    "fa": "feedback alignment",
    "dfa": "direct feedback alignment",
    "dtp": "difference target propagation",
    "ep": "equilibrium propagation (beta=0.1, T=20)",
}

# What each update needs.  transport: the forward weights (their transpose) carry errors
# back; phase: a separate backward pass/phase after the forward pass; broadcast: one global
# error sent to every layer; space: a weight's update reads only its own layer's signal and
# its input; time: every quantity of the update is present at the same time (no forward
# activations stored for a later pass).
LOCALITY = {
    "bp": {
        "transport": "yes (W^T)",
        "phase": "yes (backward sweep)",
        "broadcast": "no",
        "space": "no (delta from all layers above)",
        "time": "no (stores the forward pass)",
    },
    "il": {
        "transport": "yes (W^T in the relaxation)",
        "phase": "no (one relaxation, both ends clamped)",
        "broadcast": "no",
        "space": "yes (own error, parents' values)",
        "time": "yes (all at the relaxed state)",
    },
    "fixed-prediction": {
        "transport": "yes (W^T)",
        "phase": "yes (predictions held from the forward pass)",
        "broadcast": "no",
        "space": "yes (own error, parents' values)",
        "time": "no (stores the forward pass)",
    },
    "fa": {
        "transport": "no (fixed random B)",
        "phase": "yes (backward sweep through B)",
        "broadcast": "no",
        "space": "no (delta from all layers above)",
        "time": "no (stores the forward pass)",
    },
    "dfa": {
        "transport": "no (fixed random B_l)",
        "phase": "yes (one broadcast step)",
        "broadcast": "yes (output error to every layer)",
        "space": "yes (B_l e and own f')",
        "time": "no (stores f'(a_l) until the error arrives)",
    },
    "dtp": {
        "transport": "top layer only (first target)",
        "phase": "yes (targets down learned inverses)",
        "broadcast": "no",
        "space": "yes (own target, own input)",
        "time": "no (stores the forward pass)",
    },
    "ep": {
        "transport": "yes (W^T in the relaxation)",
        "phase": "yes (free, then nudged)",
        "broadcast": "no",
        "space": "yes (own error, parents' values)",
        "time": "needs the free phase's dE/dθ (zero for the PC energy)",
    },
}
COLUMNS = [
    ("transport", "forward weights transported"),
    ("phase", "separate backward phase"),
    ("broadcast", "global error broadcast"),
    ("space", "local in space"),
    ("time", "local in time"),
]


def make_rule(name: str, seed: int) -> LearningRule:
    if name == "bp":
        return Backprop()
    if name == "il":
        return InferenceLearning(GradientDescent(0.1), StopRule(max_steps=20))
    if name == "fixed-prediction":
        return FixedPrediction(lr=1.0)
    if name == "fa":
        return FeedbackAlignment(seed=seed)
    if name == "dfa":
        return DirectFeedbackAlignment(seed=seed)
    if name == "dtp":
        return DifferenceTargetPropagation(target_lr=0.1, noise=0.1, inverse_lr=1e-3, seed=seed)
    if name == "ep":
        return EquilibriumPropagation(beta=0.1, solver=GradientDescent(0.1), stop=20)
    raise KeyError(name)


@torch.no_grad()
def accuracy(model, split: common.Split) -> float:
    correct = 0
    for i in range(0, len(split), 2000):
        correct += int((model(split.x[i : i + 2000]).argmax(-1) == split.y[i : i + 2000]).sum())
    return correct / len(split)


def train_one(
    rule_name: str, lr: float, train: common.Split, val: common.Split, test: common.Split, epochs: int, seed: int
) -> dict:
    """One run: the same initial weights and batch order for every rule and rate."""
    torch.manual_seed(seed)
    model = mlp(SIZES, act=ACT, output_energy=OUTPUT)
    graph = PCGraph(model)
    rule = make_rule(rule_name, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    stream = common.BatchStream(len(train), BATCH, [seed], drop_last=True)
    times, losses, finite = [], [], True
    for epoch in range(epochs):
        for idx in stream.epoch(epoch):
            x, y = train.x[idx[0]], train.y[idx[0]]
            start = time.perf_counter()
            stats = rule.step(graph, x, y, optimizer)
            times.append(time.perf_counter() - start)
            losses.append(float(stats.loss))
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            finite = False
            break
    timed = times[5:] if len(times) > 10 else times
    return {
        "lr": lr,
        "val_acc": accuracy(model, val) if finite else 0.0,
        "test_acc": accuracy(model, test) if finite else 0.0,
        "finite": finite,
        "ms_per_step": 1000 * sum(timed) / len(timed),
        "steps": len(times),
        "first_loss": sum(losses[:20]) / len(losses[:20]),
        "last_loss": sum(losses[-20:]) / len(losses[-20:]),
    }


def interleaved_timing(train: common.Split, rounds: int, seed: int) -> dict[str, dict]:
    """Milliseconds per training step of every rule, measured round-robin (one step of each
    rule per round, on the same batch, learning rate 1e-3) so that a shared machine's load
    falls on all rules alike; median and quartiles over ``rounds`` after 3 warm-up rounds."""
    setups = {}
    for name in RULES:
        torch.manual_seed(seed)
        model = mlp(SIZES, act=ACT, output_energy=OUTPUT)
        setups[name] = (PCGraph(model), make_rule(name, seed), torch.optim.Adam(model.parameters(), lr=1e-3))
    x, y = train.x[:BATCH], train.y[:BATCH]
    samples: dict[str, list[float]] = {name: [] for name in RULES}
    for r in range(rounds + 3):
        for name, (graph, rule, opt) in setups.items():
            start = time.perf_counter()
            rule.step(graph, x, y, opt)
            if r >= 3:
                samples[name].append(1000 * (time.perf_counter() - start))
    out = {}
    for name, v in samples.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[name] = {
            "median_ms": float(t.median()),
            "q25_ms": float(t.quantile(0.25)),
            "q75_ms": float(t.quantile(0.75)),
            "rounds": rounds,
        }
    bp = out["bp"]["median_ms"]
    for name in out:
        out[name]["vs_bp"] = out[name]["median_ms"] / bp
    return out


def markdown(results: dict, grid: list[float], epochs: int, n_train: int, timing: dict) -> str:
    lines = [
        f"**Credit-assignment rules: MLP {'-'.join(map(str, SIZES))} ({ACT}, CE), "
        f"Adam, {epochs} epoch(s) of {n_train} images, batch {BATCH}**",
        "",
        "Test accuracy of the run whose learning rate (grid "
        f"{grid}) was best on a {VALIDATION}-image validation split; ms per training "
        "step: median of round-robin steps on one CPU thread (a shared machine; the "
        "ratio to backprop is the figure to read).",
        "",
        "| rule | MNIST acc | F-MNIST acc | lr (MNIST / F-MNIST) | ms/step | x BP | "
        + " | ".join(title for _, title in COLUMNS)
        + " |",
        "|---" * (6 + len(COLUMNS)) + "|",
    ]
    for r in RULES:
        m, f = results["mnist"][r], results["fashion-mnist"][r]
        lines.append(
            f"| {NAMES[r]} | {m['test_acc']:.4f} | {f['test_acc']:.4f} | "
            f"{m['best_lr']:g} / {f['best_lr']:g} | {timing[r]['median_ms']:.2f} | "
            f"{timing[r]['vs_bp']:.1f} | " + " | ".join(LOCALITY[r][k] for k, _ in COLUMNS) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, timing: dict, epochs: int, test_images: int, out_dir: Path) -> str:
    """``credit_assignment.png``: each rule's test accuracy (one training seed; the bars are
    the 95 % binomial interval of the test-set estimate) per dataset, and its time per
    training step relative to backprop's (median; bars: interquartile range of the rounds)."""
    fig, axes = common.figure(2, 1, width=5.4, height=3.8)
    ax = axes[0, 0]
    xs = list(range(len(RULES)))
    for k, dataset in enumerate(DATASETS):
        acc = [100 * results[dataset][r]["test_acc"] for r in RULES]
        ci = 100 * plotting.binomial_interval(np.asarray([a / 100 for a in acc], dtype=np.float64), test_images)
        ax.errorbar(
            [x + 0.16 * (2 * k - 1) for x in xs],
            acc,
            yerr=ci,
            fmt="o",
            capsize=3,
            label=f"{dataset} (±95 % interval, {test_images} test images)",
        )
    unit = "epoch" if epochs == 1 else "epochs"
    ax.set(
        ylabel="test accuracy (%)",
        xlabel="learning rule",
        title=f"{epochs} {unit} of training, best lr per rule (one seed)",
    )
    ax.set_xticks(xs, RULES, rotation=30, ha="right")
    ax.legend(loc="center")
    ax = axes[0, 1]
    bp = timing["bp"]["median_ms"]
    ratio = [timing[r]["median_ms"] / bp for r in RULES]
    lo = [ratio[j] - timing[r]["q25_ms"] / bp for j, r in enumerate(RULES)]
    hi = [timing[r]["q75_ms"] / bp - ratio[j] for j, r in enumerate(RULES)]
    ax.bar(
        xs,
        ratio,
        color="gray",
        yerr=[lo, hi],
        capsize=3,
        label=f"median, bars: interquartile range ({timing['bp']['rounds']} rounds)",
    )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(
        ylabel="time per training step / backprop's",
        xlabel="learning rule",
        title="cost per step (1 thread)",
        ylim=(0, None),
    )
    ax.set_xticks(xs, RULES, rotation=30, ha="right")
    ax.legend(loc="upper left")
    return common.save(fig, out_dir, "credit_assignment.png")


@experiment(
    "credit-assignment",
    "BP, PC (IL, fixed prediction), FA, DFA, DTP, EP on the same "
    "MLP, MNIST and Fashion-MNIST: accuracy, ms/step, locality",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("credit-assignment", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    grid, epochs = cfg["grid"], cfg["epochs"]
    results: dict = {}
    for dataset in DATASETS:
        full_train = common.load(dataset, "train")
        g = torch.Generator().manual_seed(seed + 7919)
        order = torch.randperm(len(full_train), generator=g)
        val_idx, train_idx = order[:VALIDATION].sort().values, order[VALIDATION:].sort().values
        if cfg["train_images"]:
            train_idx = train_idx[torch.randperm(len(train_idx), generator=g)[: cfg["train_images"]]]
        train = common.Split(full_train.x[train_idx], full_train.y[train_idx])
        val = common.Split(full_train.x[val_idx], full_train.y[val_idx])
        test = common.load(dataset, "test")
        results[dataset] = {}
        for rule in RULES:
            runs = [train_one(rule, lr, train, val, test, epochs, seed) for lr in grid]
            best = max(range(len(runs)), key=lambda j: runs[j]["val_acc"])
            results[dataset][rule] = {
                **runs[best],
                "best_lr": grid[best],
                "best_at_grid_edge": best in (0, len(grid) - 1),
                "per_lr": runs,
            }
            print(
                f"{dataset:14s} {rule:17s} lr {grid[best]:g}  val {runs[best]['val_acc']:.4f}  "
                f"test {runs[best]['test_acc']:.4f}  {runs[best]['ms_per_step']:.2f} ms/step  "
                f"[{job.clock():.0f} s]",
                flush=True,
            )

    timing = interleaved_timing(train, cfg["timing_rounds"], seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(markdown(results, grid, epochs, len(train), timing))
    figures = [plot(results, timing, epochs, len(test), out_dir)]
    job.write(
        summary="test accuracy, ms per step and locality of seven credit-assignment rules",
        hyperparameters={
            "sizes": SIZES,
            "activation": ACT,
            "output_energy": OUTPUT,
            "batch": BATCH,
            "epochs": epochs,
            "train_images": cfg["train_images"] or 60000 - VALIDATION,
            "optimizer": "Adam, constant lr",
            "lr_grid": grid,
            "selection": f"best validation accuracy ({VALIDATION} training images held out), one seed",
            "rules": {r: repr(make_rule(r, seed)) for r in RULES},
            "inputs": "[0, 1]",
            "threads": 1,
        },
        comparisons=[],
        figures=figures,
        data={"results": results, "timing": timing, "locality": LOCALITY, "names": NAMES},
        notes=["Timings are wall-clock on a machine shared with other jobs."],
    )
    return {
        "runtime_s": round(job.clock(), 1),
        "test_acc": {d: {r: results[d][r]["test_acc"] for r in RULES} for d in DATASETS},
        "ms_per_step": {r: round(timing[r]["median_ms"], 2) for r in RULES},
        "vs_bp": {r: round(timing[r]["vs_bp"], 2) for r in RULES},
    }

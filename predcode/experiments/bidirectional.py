r"""Bidirectional PC on MNIST against discriminative and generative PC of the same size.

Three networks of the same layer sizes (784-256-256-10, leaky ReLU on the hidden nodes,
``mu = W f(x)``), each trained by inference learning (T = 20 steps of gradient descent at
rate 0.1 on the states, Adam 1e-3 on the weights, batch 128), from one seed per run:

* **discriminative PC** (discPC): ``image -> h1 -> h2 -> label`` (the image clamped as the
  input, the label as the output);
* **generative PC** (genPC): ``label -> h2 -> h1 -> image`` (the label the input, the image
  the output);
* **bidirectional PC** (bPC, :mod:`predcode.models.bidirectional`): both sets of weights in
  one energy, :math:`\alpha_d = 1`, :math:`\alpha_g` chosen on a selection seed as the
  largest value of the grid whose validation accuracy is within 1 point of discPC's there
  (the smallest when none is).

Measured on the test set, 3 seeds:

1. **classification**: discPC by its feed-forward pass (its relaxed answer with the label
   free); bPC by relaxing with the image clamped (100 steps; its feed-forward accuracy is
   recorded too);
2. **class-conditional generation**: genPC's image for a clamped label is its feed-forward
   pass (the energy's minimum); bPC clamps the label and relaxes the image from small noise
   (300 steps), 10 images per class.  Scored by an independently trained backprop
   classifier (784-256-10): its accuracy on the images (the clamped label as the truth)
   and its mean probability of the clamped label (confidence);
3. **completion**: the bottom half of 1,000 test images hidden (set to zero), the top half
   clamped, everything else relaxed (300 steps); pixel MSE on the hidden half.  discPC
   relaxes the free pixels of its input, genPC the free pixels of its output (its label
   input free from 0.1 everywhere), bPC the free pixels of its data node.

The default run trains every network 1 epoch (about 25 minutes on one shared core);
``--full`` trains 10.  Oliviers, Tang & Bogacz 2025 report these comparisons on MNIST with
their own sizes and training; their numbers were not retrieved into this repository, so
no paper number is placed beside ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as _data
from ..graph import PCGraph
from ..inference import GradientDescent, StopRule
from ..models import mlp
from ..models.bidirectional import bidirectional, classify, complete, generate, targets
from ..query import Clamp, infer
from ..rules import InferenceLearning
from . import common, experiment
from .generation import judge

SIZES = [784, 256, 256, 10]
ACT = "leaky-relu"
BATCH, T, STATE_LR, LR = 128, 20, 0.1, 1e-3
QUERY_STEPS = {"classify": 100, "generate": 300, "complete": 300}


class Settings(TypedDict):
    """Training epochs, the alpha_gen grid, validation images held out of training, test
    images completed and generated images per class."""

    epochs: int
    alpha_grid: list[float]
    validation: int
    complete: int
    per_class: int


SETTINGS: dict[str, Settings] = {
    "quick": {"epochs": 1, "alpha_grid": [0.003, 0.01], "validation": 5000, "complete": 1000, "per_class": 10},
    "full": {
        "epochs": 10,
        "alpha_grid": [0.001, 0.003, 0.01, 0.03],
        "validation": 5000,
        "complete": 1000,
        "per_class": 10,
    },
}
SEEDS = [0, 1, 2]
SELECTION_OFFSET = 100
TOLERANCE = 0.01  # bPC's classification within this of discPC's (the target)


def train(graph: PCGraph, inputs: Tensor, target_fn, n_epochs: int, seed: int) -> list[float]:
    """Inference learning, batches from ``seed``; returns the feed-forward loss per epoch."""
    rule = InferenceLearning(GradientDescent(STATE_LR), StopRule(max_steps=T))
    opt = torch.optim.Adam(graph.model.parameters(), lr=LR)
    stream = common.BatchStream(len(inputs), BATCH, [seed], drop_last=True)
    losses = []
    for epoch in range(n_epochs):
        total, count = 0.0, 0
        for idx in stream.epoch(epoch):
            idx = idx[0]
            stats = rule.step(graph, inputs[idx], target_fn(idx), opt)
            total, count = total + float(stats.loss), count + 1
        losses.append(total / count)
    return losses


def make(kind: str, seed: int, alpha_gen: float = 0.01) -> PCGraph:
    torch.manual_seed(seed)
    model: nn.Module
    if kind == "disc":
        model = mlp(SIZES, act=ACT, act_first=True)
    elif kind == "gen":
        model = mlp(SIZES[::-1], act=ACT, act_first=True)
    else:
        model = bidirectional(SIZES, ACT, alpha_disc=1.0, alpha_gen=alpha_gen)
    return PCGraph(model)


def fit(kind: str, seed: int, x: Tensor, y: Tensor, epochs: int, alpha_gen: float = 0.01):
    graph = make(kind, seed, alpha_gen)
    onehot = F.one_hot(y, 10).float()
    if kind == "disc":
        losses = train(graph, x, lambda idx: y[idx], epochs, seed)
    elif kind == "gen":
        losses = train(graph, onehot, lambda idx: x[idx], epochs, seed)
    else:
        losses = train(graph, x, lambda idx: targets(graph, y[idx], x[idx]), epochs, seed)
    return graph, losses


def accuracy_of(graph: PCGraph, kind: str, x: Tensor, y: Tensor) -> dict:
    with torch.no_grad():
        if kind == "disc":
            return {"feedforward": float((graph.model(x).argmax(1) == y).float().mean())}
        ff = float((graph.model(x)[0].argmax(1) == y).float().mean())
        rel = classify(graph, x, steps=QUERY_STEPS["classify"])
        return {"feedforward": ff, "relaxed": float((rel.argmax(1) == y).float().mean())}


def generated(graph: PCGraph, kind: str, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    labels = torch.arange(10).repeat_interleave(per_class)
    if kind == "gen":
        with torch.no_grad():
            return graph.model(F.one_hot(labels, 10).float()), labels
    g = torch.Generator().manual_seed(seed + 7)
    init = 0.1 * torch.randn(len(labels), SIZES[0], generator=g)
    return generate(graph, labels, init, steps=QUERY_STEPS["generate"]), labels


def completed(graph: PCGraph, kind: str, x: Tensor) -> Tensor:
    known = torch.zeros_like(x, dtype=torch.bool)
    known[:, : SIZES[0] // 2] = True
    start = torch.where(known, x, torch.zeros_like(x))
    stop = StopRule(max_steps=QUERY_STEPS["complete"])
    if kind == "bpc":
        return complete(graph, start, known, steps=QUERY_STEPS["complete"])
    if kind == "disc":
        r = infer(
            graph,
            {graph.inputs[0]: Clamp(start, known)},
            init={graph.inputs[0]: start},
            solver=GradientDescent(0.1),
            stop=stop,
        )
        return r.values[graph.inputs[0]]
    label0 = torch.full((len(x), 10), 0.1)
    r = infer(
        graph,
        {graph.output: Clamp(start, known)},
        init={graph.inputs[0]: label0},
        solver=GradientDescent(0.1),
        stop=stop,
    )
    return r.values[graph.output]


def hidden_mse(images: Tensor, x: Tensor) -> float:
    h = SIZES[0] // 2
    return float(((images[:, h:] - x[:, h:]) ** 2).mean())


def scored(net: nn.Module, images: Tensor, labels: Tensor) -> dict:
    with torch.no_grad():
        p = torch.softmax(net(images), dim=1)
    return {
        "judge_accuracy": float((p.argmax(1) == labels).float().mean()),
        "judge_confidence": float(p[torch.arange(len(labels)), labels].mean()),
        "judge_max_probability": float(p.max(1).values.mean()),
    }


@experiment(
    "bidirectional",
    "bidirectional PC on MNIST: classification, class-conditional "
    "generation and completion against discriminative and generative PC (3 seeds)",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("bidirectional", out_dir, full, seed)
    st = SETTINGS["full" if full else "quick"]
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    x, y = _data.load("mnist", "train", normalize="[0,1]")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(4321))
    vx, vy = x[perm[: st["validation"]]], y[perm[: st["validation"]]]
    tx_, ty_ = x[perm[st["validation"] :]], y[perm[st["validation"] :]]
    test_x, test_y = _data.load("mnist", "test", normalize="[0,1]")
    comp_x = test_x[: st["complete"]]

    # alpha_gen on the selection seed: the largest whose validation accuracy is within 1 point
    sel = seed + SELECTION_OFFSET
    disc_sel, _ = fit("disc", sel, tx_, ty_, st["epochs"])
    disc_val = accuracy_of(disc_sel, "disc", vx, vy)["feedforward"]
    selection = {"seed": sel, "disc_val_accuracy": disc_val, "bpc": []}
    say(f"selection: discPC val {disc_val:.4f} ({job.clock():.0f}s)")
    for a in st["alpha_grid"]:
        g, _ = fit("bpc", sel, tx_, ty_, st["epochs"], a)
        acc = accuracy_of(g, "bpc", vx, vy)
        selection["bpc"].append({"alpha_gen": a, **{f"val_{k}": v for k, v in acc.items()}})
        say(f"selection: bPC alpha_gen {a:g} val {acc} ({job.clock():.0f}s)")
    ok = [s["alpha_gen"] for s in selection["bpc"] if s["val_relaxed"] >= disc_val - TOLERANCE]
    alpha = max(ok) if ok else min(st["alpha_grid"])
    selection["chosen_alpha_gen"] = alpha
    say(f"chosen alpha_gen {alpha:g}")

    judge_net = judge(tx_, ty_, seed)
    per_seed: dict[str, list[dict]] = {"disc": [], "gen": [], "bpc": []}
    grids: dict[str, Tensor] = {}
    completions: dict[str, Tensor] = {}
    for s in [seed + k for k in SEEDS]:
        for kind in ("disc", "gen", "bpc"):
            t0 = job.clock()
            graph, losses = fit(kind, s, tx_, ty_, st["epochs"], alpha)
            row: dict = {"seed": s, "train_loss_per_epoch": losses}
            if kind != "gen":
                row["test_accuracy"] = accuracy_of(graph, kind, test_x, test_y)
            if kind != "disc":
                imgs, labels = generated(graph, kind, st["per_class"], s)
                row["generation"] = scored(judge_net, imgs, labels)
                row["generation"]["pixel_range"] = [float(imgs.min()), float(imgs.max())]
                if s == seed:
                    grids[kind] = imgs.reshape(10, st["per_class"], -1)[:, :8].detach()
            filled = completed(graph, kind, comp_x)
            row["completion_mse_hidden_half"] = hidden_mse(filled.detach(), comp_x)
            if s == seed:
                completions[kind] = filled[:8].detach()
            row["seconds"] = round(job.clock() - t0, 1)
            per_seed[kind].append(row)
            say(f"{kind} seed {s}: { {k: v for k, v in row.items() if k != 'train_loss_per_epoch'} }")

    def agg(kind: str, *path: str) -> dict[str, Any]:
        """Statistics over the seeds of the number at ``path`` in ``kind``'s rows."""
        vals: list[float] = []
        for row in per_seed[kind]:
            v: object = row
            for p in path:
                assert isinstance(v, dict), f"{p!r} is looked up in a dict"
                v = v[p]
            assert isinstance(v, float), f"{path} ends at a number"
            vals.append(v)
        return common.stats(vals)

    c = {  # classification
        "disc_feedforward": agg("disc", "test_accuracy", "feedforward"),
        "bpc_relaxed": agg("bpc", "test_accuracy", "relaxed"),
        "bpc_feedforward": agg("bpc", "test_accuracy", "feedforward"),
    }
    generation = {
        k: {
            "judge_accuracy": agg(k, "generation", "judge_accuracy"),
            "judge_confidence": agg(k, "generation", "judge_confidence"),
        }
        for k in ("gen", "bpc")
    }
    completion_mse = {k: agg(k, "completion_mse_hidden_half") for k in ("disc", "gen", "bpc")}
    summary = {
        "classification": c,
        "generation": generation,
        "completion_mse": completion_mse,
        "completion_mse_zero_fill": hidden_mse(torch.zeros_like(comp_x), comp_x),
        "completion_mse_mean_image": hidden_mse(tx_.mean(0).expand_as(comp_x), comp_x),
        "real_test_images": scored(judge_net, test_x[:1000], test_y[:1000]),
    }
    gap = c["disc_feedforward"]["mean"] - c["bpc_relaxed"]["mean"]
    gen, bpc_gen = generation["gen"], generation["bpc"]
    cm = {k: v["mean"] for k, v in completion_mse.items()}
    targets_met = {
        "classification_within_1_point": bool(gap <= TOLERANCE),
        "generation_accuracy_as_good": bool(
            bpc_gen["judge_accuracy"]["mean"]
            >= gen["judge_accuracy"]["mean"] - max(gen["judge_accuracy"]["std"], bpc_gen["judge_accuracy"]["std"])
        ),
        "generation_confidence_as_good": bool(
            bpc_gen["judge_confidence"]["mean"]
            >= gen["judge_confidence"]["mean"] - max(gen["judge_confidence"]["std"], bpc_gen["judge_confidence"]["std"])
        ),
        "completion_better_than_both": bool(cm["bpc"] < min(cm["disc"], cm["gen"])),
    }
    figures = plot_all(out_dir, grids, completions, comp_x[:8], c, completion_mse)
    job.write(
        hyperparameters={
            "sizes": SIZES,
            "activation": ACT,
            "batch": BATCH,
            "T": T,
            "state_solver": f"GradientDescent({STATE_LR})",
            "optimizer": f"Adam({LR})",
            "epochs": st["epochs"],
            "alpha_disc": 1.0,
            "alpha_grid": st["alpha_grid"],
            "query_steps": QUERY_STEPS,
            "per_class": st["per_class"],
            "completion_images": st["complete"],
            "seeds": [seed + k for k in SEEDS],
        },
        comparisons=[],
        data={
            "selection": selection,
            "per_seed": per_seed,
            "summary": summary,
            "targets_met": targets_met,
            "classification_gap": gap,
        },
        figures=figures,
        summary=(
            f"test accuracy discPC {common.fmt(c['disc_feedforward'], 4)}, bPC (relaxed) "
            f"{common.fmt(c['bpc_relaxed'], 4)} (gap {gap * 100:.2f} points); generation judged "
            f"correct {common.fmt(gen['judge_accuracy'])} (genPC) vs "
            f"{common.fmt(bpc_gen['judge_accuracy'])} (bPC), confidence "
            f"{common.fmt(gen['judge_confidence'])} vs {common.fmt(bpc_gen['judge_confidence'])}; "
            f"completion MSE disc {cm['disc']:.4f}, gen {cm['gen']:.4f}, bPC {cm['bpc']:.4f}"
        ),
        notes=[
            f"alpha_gen = {alpha:g} chosen on seed {sel} (largest within 1 point of discPC's validation accuracy).",
            "genPC's generation is deterministic (the feed-forward pass is its energy's "
            "minimum), so its 10 images per class are one image repeated.",
            "Oliviers, Tang & Bogacz 2025 give their own MNIST numbers for other sizes and "
            "training; none is placed beside ours.",
        ],
    )
    return {
        "runtime_s": round(job.clock(), 1),
        "alpha_gen": alpha,
        "targets_met": targets_met,
        "classification_gap_points": round(gap * 100, 2),
        "completion_mse": cm,
    }


def plot_all(out_dir: Path, grids: dict, completions: dict, truth: Tensor, c: dict, comp: dict) -> list[str]:
    import matplotlib.pyplot as plt

    figures = []
    fig, axes = plt.subplots(10, 17, figsize=(17 * 0.7, 10 * 0.75))
    for r in range(10):
        for col in range(17):
            ax = axes[r][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 8:
                ax.axis("off")
                continue
            kind, k = ("gen", col) if col < 8 else ("bpc", col - 9)
            ax.imshow(grids[kind][r, k].reshape(28, 28).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            if col in (0, 9):
                ax.set_ylabel(f"label {r}", fontsize=7)
            if r == 0:
                ax.set_title(f"{'genPC' if kind == 'gen' else 'bPC'} #{k + 1}", fontsize=6)
    fig.suptitle("class-conditional generation: genPC (left, feed-forward) | bPC (right, relaxed)")
    figures.append(common.save(fig, out_dir, "generation.png"))

    rows = [
        ("original", truth),
        ("masked", torch.where(torch.arange(784) < 392, truth, torch.zeros_like(truth))),
        ("discPC", completions["disc"]),
        ("genPC", completions["gen"]),
        ("bPC", completions["bpc"]),
    ]
    fig, axes = plt.subplots(len(rows), 8, figsize=(8 * 0.8, len(rows) * 0.9))
    for r, (name, imgs) in enumerate(rows):
        for col in range(8):
            ax = axes[r][col]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(imgs[col].reshape(28, 28).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            if col == 0:
                label = (
                    name
                    if name in ("original", "masked")
                    else (f"{name}\nMSE {comp[{'discPC': 'disc', 'genPC': 'gen', 'bPC': 'bpc'}[name]]['mean']:.3f}")
                )
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(f"test #{col}", fontsize=7)
    fig.suptitle("completion of the hidden bottom half (MSE on the hidden half, mean of 3 seeds)", fontsize=8)
    figures.append(common.save(fig, out_dir, "completion.png"))
    return figures


def alpha_arm(alpha_gen: float, out: Path, full: bool = False, seed: int = 0) -> dict:
    """bPC alone at a given ``alpha_gen`` (3 seeds, the main run's protocol, data split and
    judge), written to ``out`` as JSON: the other end of the alpha trade-off."""
    common.setup()
    clock = common.Clock()
    st = SETTINGS["full" if full else "quick"]
    x, y = _data.load("mnist", "train", normalize="[0,1]")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(4321))
    tx_, ty_ = x[perm[st["validation"] :]], y[perm[st["validation"] :]]
    test_x, test_y = _data.load("mnist", "test", normalize="[0,1]")
    comp_x = test_x[: st["complete"]]
    judge_net = judge(tx_, ty_, seed)
    rows = []
    for s in [seed + k for k in SEEDS]:
        graph, losses = fit("bpc", s, tx_, ty_, st["epochs"], alpha_gen)
        imgs, labels = generated(graph, "bpc", st["per_class"], s)
        row = {
            "seed": s,
            "train_loss_per_epoch": losses,
            "test_accuracy": accuracy_of(graph, "bpc", test_x, test_y),
            "generation": scored(judge_net, imgs, labels),
            "completion_mse_hidden_half": hidden_mse(completed(graph, "bpc", comp_x).detach(), comp_x),
        }
        rows.append(row)
        print(f"bpc alpha_gen {alpha_gen:g} seed {s}: {row}", flush=True)
    summary = {
        "test_accuracy_relaxed": common.stats([r["test_accuracy"]["relaxed"] for r in rows]),
        "judge_accuracy": common.stats([r["generation"]["judge_accuracy"] for r in rows]),
        "judge_confidence": common.stats([r["generation"]["judge_confidence"] for r in rows]),
        "completion_mse": common.stats([r["completion_mse_hidden_half"] for r in rows]),
    }
    payload = {
        "command": f"python -m predcode.experiments.bidirectional --alpha-gen {alpha_gen:g} --out {out}",
        "alpha_gen": alpha_gen,
        "full": full,
        "seconds": clock(),
        "environment": common.environment(),
        "per_seed": rows,
        "summary": summary,
    }
    common.write_json(out, payload)
    return summary


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="bPC at one alpha_gen (3 seeds)")
    parser.add_argument("--alpha-gen", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    print(alpha_arm(args.alpha_gen, args.out, args.full))

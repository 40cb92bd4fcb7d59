"""Error-based PC (ePC) against state-based PC (sPC) on a deep MLP.

In sPC the states relax by local steps, so an error at the output needs one inference
step per layer to reach a node: with a budget of 5 steps the lower layers of a deep
network get no weight gradient at all.  ePC (Goemaere et al. 2025) relaxes the prediction
errors instead, so the output's error reaches every layer at the first step.  Here a
deep tanh MLP is trained on MNIST by backprop, ePC and sPC from the same initial weights
on the same batches, each with 5 inference steps; the script reports test accuracy and,
at initialisation, the per-layer cosine between each rule's weight gradient and
backprop's.

    python examples/epc_vs_spc_deep_mlp.py           # depth 15, 12,000 images, 1 epoch
    python examples/epc_vs_spc_deep_mlp.py --quick   # a tiny run (the test suite's)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import predcode as pc
from predcode import data, plotting
from predcode.models import mlp


def gradients(rule, graph: pc.PCGraph, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Each Linear layer's weight gradient under ``rule`` on one batch."""
    graph.model.zero_grad()
    rule.gradients(graph, x, y)
    return [m.weight.grad.detach().clone() for m in graph.model.modules() if isinstance(m, nn.Linear)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", type=Path, default=Path("examples/out/epc_vs_spc_deep_mlp"), help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    depth, width, n_train, n_test = (6, 32, 256, 256) if args.quick else (15, 128, 12000, 5000)

    x, y = data.load("mnist", "train", normalize="[0,1]")
    xt, yt = data.load("mnist", "test", normalize="[0,1]")
    x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]

    torch.manual_seed(0)
    base = mlp([784] + [width] * (depth - 1) + [10], act="tanh", output_energy="ce")
    for m in base.modules():  # Glorot with the tanh gain: the forward signal survives depth
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
            nn.init.zeros_(m.bias)
    rules = {
        "bp": pc.Backprop(),
        "epc": pc.ErrorPC(pc.SGD(0.001), stop=5),
        "spc": pc.InferenceLearning(pc.SGD(0.01), stop=5),
    }
    graphs = {k: pc.PCGraph(copy.deepcopy(base)) for k in rules}

    probe_x, probe_y = x[:128], y[:128]
    bp_grads = gradients(rules["bp"], graphs["bp"], probe_x, probe_y)
    cosine = {}
    for k in ("epc", "spc"):
        grads = gradients(rules[k], graphs[k], probe_x, probe_y)
        cosine[k] = [
            float(F.cosine_similarity(g.flatten(), b.flatten(), dim=0)) if g.abs().sum() > 0 else 0.0
            for g, b in zip(grads, bp_grads)
        ]
    trace = rules["epc"].gradients(graphs["epc"], probe_x[:64], probe_y[:64]).trace

    opts = {k: torch.optim.Adam(g.model.parameters(), lr=1e-3) for k, g in graphs.items()}
    order = torch.Generator().manual_seed(1)
    perm = torch.randperm(n_train, generator=order)
    steps, acc = [], {k: [] for k in rules}
    for s, i in enumerate(range(0, n_train, 64)):
        idx = perm[i : i + 64]
        for k, rule in rules.items():
            opts[k].zero_grad()
            rule.gradients(graphs[k], x[idx], y[idx])
            opts[k].step()
        if s % 25 == 0 or i + 64 >= n_train:
            steps.append(s + 1)
            for k, g in graphs.items():
                with torch.no_grad():
                    acc[k].append(float((g.model(xt).argmax(1) == yt).float().mean()))
            print(f"step {s + 1}: " + ", ".join(f"{k} {acc[k][-1]:.3f}" for k in rules), flush=True)

    result = {
        "depth": depth,
        "width": width,
        "train_images": n_train,
        "inference_steps": 5,
        "test_accuracy": {k: v[-1] for k, v in acc.items()},
        "cosine_to_backprop_at_init": cosine,
        "layers_with_zero_gradient_at_init": {k: sum(c == 0.0 for c in v) for k, v in cosine.items()},
        "seconds": 0.0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plotting.figure(3, 1, width=4.4, height=3.4)
    for k in rules:
        axes[0, 0].plot(
            steps,
            [100 * a for a in acc[k]],
            marker=".",
            color=plotting.COLORS[k],
            label=plotting.LABELS[k] + " (1 seed)",
        )
    axes[0, 0].set(
        xlabel="training step (batch of 64)", ylabel="test accuracy (%)", title=f"{depth}-layer tanh MLP, MNIST"
    )
    axes[0, 0].legend()
    layers = range(1, depth + 1)
    for k in ("epc", "spc"):
        axes[0, 1].plot(layers, cosine[k], "o-", color=plotting.COLORS[k], label=plotting.LABELS[k])
    axes[0, 1].set(
        xlabel="layer (1 = input side)",
        ylabel="cosine to backprop's gradient",
        title="weight gradients at initialisation",
        ylim=(-0.05, 1.05),
    )
    axes[0, 1].legend()
    plotting.energy_trace(
        trace.node_energies, trace.names, axes[0, 2], total=True, title="one ePC relaxation (5 steps)"
    )
    axes[0, 2].get_legend().remove()
    plotting.save(fig, args.out / "epc_vs_spc.png")
    result["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""Your own CNN as a predictive coding network.

Any ``nn.Module`` becomes a PC network once ``pc.Node()`` markers sit where value nodes
should be: here a two-block CNN written from scratch.  It is trained on MNIST by inference
learning (PC) and, from the same initial weights on the same batches, by backprop; both
are tested on held-out images.

    python examples/own_cnn.py            # 12,000 images, 2 epochs
    python examples/own_cnn.py --quick    # a tiny run (what the test suite executes)
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
from predcode import data


class SmallCNN(nn.Module):
    """conv5x5(8) -> relu -> pool -> Node -> conv5x5(16) -> relu -> pool -> Node -> linear -> Node."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.node1 = nn.Conv2d(1, 8, 5, padding=2), pc.Node()
        self.conv2, self.node2 = nn.Conv2d(8, 16, 5, padding=2), pc.Node()
        self.head, self.out = nn.Linear(16 * 7 * 7, 10), pc.Node("se")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.node1(F.max_pool2d(F.relu(self.conv1(x)), 2))
        h = self.node2(F.max_pool2d(F.relu(self.conv2(h)), 2))
        return self.out(self.head(h.flatten(1)))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", type=Path, default=Path("examples/out/own_cnn"), help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    n_train, n_test, epochs, steps = (512, 256, 1, 3) if args.quick else (12000, 5000, 2, 8)

    x, y = data.load("mnist", "train", normalize="[0,1]", flatten=False)
    xt, yt = data.load("mnist", "test", normalize="[0,1]", flatten=False)
    x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]

    torch.manual_seed(0)
    nets = {"pc": SmallCNN()}
    nets["bp"] = copy.deepcopy(nets["pc"])  # the same initial weights
    rules = {"pc": pc.InferenceLearning(pc.SGD(0.002, momentum=0.65), stop=steps), "bp": pc.Backprop()}
    graphs = {k: pc.PCGraph(net) for k, net in nets.items()}
    opts = {k: torch.optim.Adam(net.parameters(), lr=1e-3) for k, net in nets.items()}
    curves: dict[str, list[float]] = {k: [] for k in nets}
    order = torch.Generator().manual_seed(1)
    for epoch in range(epochs):
        perm = torch.randperm(n_train, generator=order)  # the same batches for both
        for i in range(0, n_train, 64):
            idx = perm[i : i + 64]
            for k in nets:
                stats = rules[k].step(graphs[k], x[idx], y[idx], opts[k])
                curves[k].append(float(stats.loss))
        print(
            f"epoch {epoch + 1}: " + ", ".join(f"{k} test accuracy {accuracy(nets[k], xt, yt):.4f}" for k in nets),
            flush=True,
        )

    result = {
        "nodes": graphs["pc"].names,
        "train_images": n_train,
        "epochs": epochs,
        "inference_steps": steps,
        "test_accuracy": {k: accuracy(nets[k], xt, yt) for k in nets},
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    from predcode import plotting

    fig, axes = plotting.figure(width=5.5, height=3.5)
    for k in nets:
        plotting.band(axes[0, 0], range(len(curves[k])), [curves[k]], k)
    axes[0, 0].set(
        xlabel="training step (batch of 64)",
        ylabel="training loss (squared error)",
        yscale="log",
        title="your own CNN: PC and backprop from the same weights",
    )
    axes[0, 0].legend()
    plotting.save(fig, args.out / "loss.png")
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

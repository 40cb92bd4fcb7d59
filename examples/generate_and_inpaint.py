"""Generation and inpainting from one trained predictive coding network.

One network ``label (10) -> hidden node (256) -> hidden node (256) -> image node (784)`` is
trained on MNIST with the label as input and the image as target (inference learning:
the hidden nodes relax between the two clamps).  The same trained network then answers
three queries, each a different clamp pattern of ``predcode.query.infer``:

* generation: the label clamped, the image read out (one digit per class);
* inpainting: the top half of a test image clamped, the bottom half and the label free;
* classification by inference: the label node's relaxed value from that half image.

    python examples/generate_and_inpaint.py           # 20,000 images, 4 epochs
    python examples/generate_and_inpaint.py --quick   # a tiny run (the test suite's)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import predcode as pc
from predcode import data, plotting
from predcode.query import Clamp, infer


def network() -> nn.Module:
    return nn.Sequential(
        nn.Linear(10, 256),
        nn.Tanh(),
        pc.Node(name="h1"),
        nn.Linear(256, 256),
        nn.Tanh(),
        pc.Node(name="h2"),
        nn.Linear(256, 784),
        nn.Sigmoid(),
        pc.Node(name="image"),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", type=Path, default=Path("examples/out/generate_and_inpaint"), help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    n_train, epochs, n_test, query_steps = (512, 1, 64, 60) if args.quick else (20000, 4, 500, 300)

    x, y = data.load("mnist", "train", normalize="[0,1]")
    xt, yt = data.load("mnist", "test", normalize="[0,1]")
    x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]
    onehot = F.one_hot(y, 10).float()

    torch.manual_seed(0)
    model = network()
    graph = pc.PCGraph(model)
    rule = pc.InferenceLearning(pc.SGD(0.05, momentum=0.5), stop=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(1)
    for epoch in range(epochs):
        perm = torch.randperm(n_train, generator=order)
        total = 0.0
        for i in range(0, n_train, 64):
            idx = perm[i : i + 64]
            total += float(rule.step(graph, onehot[idx], x[idx], opt).loss) * len(idx)
        print(f"epoch {epoch + 1}: training energy at the image {total / n_train:.2f}", flush=True)

    # generation: the label clamped, everything else relaxed (the image settles at its mode)
    labels = F.one_hot(torch.arange(10), 10).float()
    generated = infer(graph, {"input": labels}, stop=1).values[graph.index("image")]

    # inpainting: the top half clamped; the bottom half and the label are free
    known = torch.zeros(n_test, 784, dtype=torch.bool)
    known[:, :392] = True
    solver = pc.GradientDescent(0.05)
    relaxed = infer(
        graph,
        {"image": Clamp(xt, known)},
        init={"input": torch.full((n_test, 10), 0.1)},
        solver=solver,
        stop=query_steps,
    )
    completed = relaxed.values[graph.index("image")]
    label_guess = relaxed.values[graph.index("input")].argmax(1)
    bottom = ~known
    mean_image = x.mean(0, keepdim=True).expand_as(xt)
    result = {
        "train_images": n_train,
        "epochs": epochs,
        "query_steps": query_steps,
        "inpainting_mse_bottom_half": float(((completed - xt)[bottom] ** 2).mean()),
        "mean_image_mse_bottom_half": float(((mean_image - xt)[bottom] ** 2).mean()),
        "label_accuracy_from_top_half": float((label_guess == yt).float().mean()),
        "query_energy": [float(relaxed.trace.energy[0]), float(relaxed.trace.energy[-1])],
        "clamped_pixels_unchanged": bool(torch.equal(completed[known], xt[known])),
        "seconds": 0.0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plotting.image_grid(
        args.out / "generated.png",
        [generated],
        ["generated"],
        [f"label {k}" for k in range(10)],
        title="generation: label clamped",
    )
    show = slice(0, 10)
    cue = torch.where(known[show], xt[show], torch.full_like(xt[show], 0.5))
    plotting.image_grid(
        args.out / "inpainted.png",
        [xt[show], cue, completed[show]],
        ["test image", "cue (top half)", "inpainted"],
        [f"label {int(label_guess[k])}?" for k in range(10)],
        title="inpainting: top half clamped (column: the label the net inferred)",
    )
    relaxed.trace.plot(path=args.out / "inpainting_energy.png")
    result["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

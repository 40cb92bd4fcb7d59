"""Floating-point operations of one VGG-5 training step (T = 7, batch 128): predcode PC
with and without the error frontier, and BP, on 28x28x1 and 32x32x3 inputs.

Usage: .venv/bin/python scripts/vgg_flops.py [OUT.json]
Counts are independent of the pixel values (random images) and of the machine."""

import json
import sys

import torch

import predcode.learning as engine
from predcode.bench.common import VGG_HP, make_step, synthetic_images
from predcode.bench.floor import step_flops
from predcode.models import vgg5

torch.set_num_threads(2)
frontier = engine.error_frontier
rows = []
for channels, size in ((1, 28), (3, 32)):
    x, y = synthetic_images(128, (channels, size, size), seed=0)
    row = {"input": f"{size}x{size}x{channels}"}
    for name, method, fronts in (("pc", "pc-eager", True), ("pc_no_frontier", "pc-eager", False), ("bp", "bp", True)):
        torch.manual_seed(0)
        model = vgg5(in_channels=channels, num_classes=10, in_size=size)
        step = make_step(method, model, VGG_HP, compile=False)
        engine.error_frontier = frontier if fronts else (lambda *args: None)
        row[f"{name}_gflop"] = step_flops(lambda: step(x, y))  # noqa: B023  (called before the loop moves on) / 1e9
    engine.error_frontier = frontier
    row["pc_x_bp"] = row["pc_gflop"] / row["bp_gflop"]
    row["pc_no_frontier_x_bp"] = row["pc_no_frontier_gflop"] / row["bp_gflop"]
    rows.append(row)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump({"command": "python scripts/vgg_flops.py " + sys.argv[1], "rows": rows}, f, indent=1)

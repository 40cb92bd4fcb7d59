"""Median ms per training step of the pcx benchmark MLP (784-128-128-128-10, GELU-tanh,
batch 128, T = 8, state SGD momentum 0.65, fused AdamW) for predcode PC eager, PC compiled
and BP eager, on random data.  Usage: NT=2 .venv/bin/python scripts/step_time.py
(NT = torch threads).  A quick check; `predcode bench mlp` is the full benchmark."""

import os
import time

import torch

torch.set_num_threads(int(os.environ.get("NT", "2")))  # before predcode loads its kernels
import predcode as pc  # noqa: E402
from predcode.models import mlp  # noqa: E402

torch.manual_seed(0)
m = mlp([784, 128, 128, 128, 10], act="gelu-tanh")
g = pc.PCGraph(m)
x = torch.randn(128, 784)
y = torch.randint(0, 10, (128,))


def bench(f, n=60):
    for _ in range(5):
        f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


opt = torch.optim.AdamW(m.parameters(), lr=3e-4, fused=True)
for comp in [False, True]:
    rule = pc.InferenceLearning(pc.SGD(0.0105, momentum=0.65), 8, compile=comp)
    t = time.perf_counter()
    rule.step(g, x, y, opt)
    print("first", time.perf_counter() - t)
    print("PC compile" if comp else "PC eager", "ms", bench(lambda rule=rule: rule.step(g, x, y, opt)))
bp = pc.Backprop()
print("BP step ms", bench(lambda: bp.step(g, x, y, opt)))

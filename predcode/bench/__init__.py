"""Speed benchmarks: ``predcode bench [NAMES...] [--quick]``.

Sub-benchmarks (each a module with ``run(cfg: BenchConfig) -> result``):

========  ================================================================================
mlp       pcx's MLP (784-128x3-10, batch 128, T = 8): ms/step and s/epoch for predcode PC,
          BP, fixed prediction and pcx 0.6.3, first (compiling) step apart
vgg       VGG-5 (pcx's definition), 28x28x1 and 32x32x3 inputs, T = 7: PC vs BP s/epoch
tta       time to 98 % MNIST test accuracy: predcode PC, predcode BP, pcx PC
scaling   step time against T, width, depth and batch (log-log figure)
gpu       on CUDA: ms/step and the PC/BP ratio for batch 128 to 4096
deep      20-layer tanh MLP, MNIST: ePC vs sPC (T = 5, 20) vs BP ms/step, time to 90 %
          (BP and ePC); run by name, not part of the default set
========  ================================================================================

The results are printed as tables and written as JSON (with the machine, the versions,
the command and the date) to ``--out`` (default ``results/bench``); ``--markdown
BENCHMARKS.md`` also rewrites that file's results section.
"""

from __future__ import annotations

import importlib
import traceback

from .common import BenchConfig

BENCHMARKS = {
    "mlp": "MLP of the pcx benchmark: predcode PC/BP/fixed prediction vs pcx, ms/step and s/epoch",
    "vgg": "VGG-5 on 28x28x1 and 32x32x3 inputs, T = 7: PC vs BP s/epoch",
    "tta": "time to 98% MNIST test accuracy: predcode PC, predcode BP, pcx PC",
    "scaling": "step time against T, width, depth and batch (log-log plot)",
    "gpu": "CUDA only: ms/step and PC/BP ratio for batch 128 to 4096",
    "deep": "20-layer tanh MLP on MNIST: ePC vs sPC (T = 5, 20) vs BP ms/step; time to 90 % (BP, ePC)",
}
DEFAULT = ["mlp", "vgg", "tta", "scaling", "gpu"]
MODULES = {"mlp": "mlp", "vgg": "vgg", "tta": "time_to_accuracy", "scaling": "scaling", "gpu": "gpu", "deep": "deep"}

__all__ = ["BENCHMARKS", "BenchConfig", "DEFAULT", "run_one"]


def run_one(name: str, cfg: BenchConfig) -> dict:
    """Run one sub-benchmark; a crash becomes a result with ``error`` (the others go on)."""
    module = importlib.import_module(f"{__name__}.{MODULES[name]}")
    try:
        return module.run(cfg)
    except Exception as exc:  # a failed benchmark must not lose the others' results
        return {
            "name": name,
            "title": BENCHMARKS[name],
            "error": f"{type(exc).__name__}: {exc}",
            "skipped": f"failed: {type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }

"""Shared bits of the biological-plausibility experiments: MNIST
arrays, feed-forward test accuracy, and the result document (no PC-vs-BP comparisons, so
REPORT.md, which is about those, leaves these results out; ``checks`` lists each
experiment's pass/fail properties instead)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import data
from . import common


def mnist(normalize: str = "[-1,1]") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = data.load("mnist", "train", normalize=normalize)
    xt, yt = data.load("mnist", "test", normalize=normalize)
    return x, y, xt, yt


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 5000) -> float:
    """Feed-forward test accuracy (the prediction of a relaxed chain with the output free)."""
    right = sum(int((model(x[k : k + chunk]).argmax(-1) == y[k : k + chunk]).sum()) for k in range(0, len(y), chunk))
    return right / len(y)


def finish(
    job: common.Job,
    *,
    summary: str,
    hyperparameters: dict,
    checks: list[dict],
    data: dict,
    figures: list[str],
    notes: Sequence[str] = (),
) -> dict:
    """Write the result of ``job`` (runtime: its clock now) with ``checks`` in place of
    comparisons; return the runtime and every check's pass/fail."""
    seconds = job.clock()
    payload = common.result(
        job.name,
        full=job.full,
        seed=job.seed,
        seconds=seconds,
        hyperparameters=hyperparameters,
        comparisons=[],
        data=data,
        figures=figures,
        summary=summary,
        notes=notes,
    )
    payload.pop("comparisons")
    payload["checks"] = checks
    common.write_json(job.out_dir / "result.json", payload)
    return {"runtime_s": round(seconds, 1), "checks": {c["check"]: c["holds"] for c in checks}}

"""Scaling: training-step time against T, width, depth and batch, on log-log axes.

Around the pcx MLP (784-128-128-128-10, GELU tanh, batch 128, T = 8), one factor varies at
a time: T (inference steps), the hidden width, the depth (number of hidden layers of that
width) and the batch size.  Inputs are random (timing only).  For every point: predcode PC
(compiled, and eager), and BP (eager; BP does not depend on T, so it is timed once for the
T sweep).  Each point: the first step apart (compilation; with dynamo's caches reset
before it), ``warmup`` untimed steps, the median of ``steps`` timed steps.  The figure
shows ms per step against each factor on log-log axes with the fitted slope (the exponent
of the cost's growth) over the upper half of each sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypedDict

import numpy as np

from .common import (
    METHODS,
    MLP_HP,
    BenchConfig,
    build_mlp,
    effective_method,
    make_step,
    raise_recompile_limits,
    synthetic_images,
)
from .report import ratio
from .timing import time_steps

NAME = "scaling"
TITLE = "step time against T, width, depth and batch (MLP around the pcx benchmark)"
Axis = Literal["T", "width", "depth", "batch"]


class Preset(TypedDict):
    """The grid of every axis, the timed and warm-up steps of a point, and the methods timed."""

    T: list[int]
    width: list[int]
    depth: list[int]
    batch: list[int]
    steps: int
    warmup: int
    methods: list[str]


FULL: Preset = {
    "T": [1, 2, 4, 8, 16, 32, 64],
    "width": [32, 64, 128, 256, 512, 1024],
    "depth": [1, 2, 3, 4, 6, 8, 12, 16],
    "batch": [16, 32, 64, 128, 256, 512, 1024, 2048],
    "steps": 30,
    "warmup": 5,
    "methods": ["pc-default", "pc", "pc-eager", "bp"],
}
QUICK: Preset = {
    "T": [1, 4],
    "width": [64, 128],
    "depth": [1, 3],
    "batch": [64, 128],
    "steps": 5,
    "warmup": 1,
    "methods": ["pc-default", "bp"],
}
BASE = {"T": 8, "width": 128, "depth": 3, "batch": 128}
AXES: dict[Axis, str] = {
    "T": "inference steps T",
    "width": "hidden width",
    "depth": "hidden layers",
    "batch": "batch size",
}


def point(
    method: str,
    T: int,
    width: int,
    depth: int,
    batch: int,
    steps: int,
    warmup: int,
    seed: int,
    compile: bool,
    device: str = "cpu",
) -> dict:
    """Time ``method`` on one MLP configuration (in this process)."""
    import torch._dynamo

    from .common import device_sync

    torch._dynamo.reset()
    sizes = [784] + [width] * depth + [10]
    model = build_mlp(sizes, seed, device)
    hp = dict(MLP_HP, T=T, batch=batch)
    step = make_step(method, model, hp, compile=compile)
    x, y = synthetic_images(max(4 * batch, 512), (784,), seed=seed, device=device)
    n = x.shape[0]

    def run(k: int) -> None:
        i = (k * batch) % (n - batch + 1)
        step(x[i : i + batch], y[i : i + batch])

    timing = time_steps(run, warmup, steps, sync=device_sync(device))
    return timing.summary()


def run(cfg: BenchConfig) -> dict:
    preset = QUICK if cfg.quick else FULL
    grids = {axis: cfg.param(NAME, axis, list(preset[axis])) for axis in AXES}
    steps = cfg.param(NAME, "steps", preset["steps"])
    warmup = cfg.param(NAME, "warmup", preset["warmup"])
    compile = cfg.compile and not cfg.quick  # quick mode: eager only (no compiling)
    methods = list(
        dict.fromkeys(effective_method(m, compile) for m in cfg.param(NAME, "methods", list(preset["methods"])))
    )
    raise_recompile_limits()
    cache: dict[tuple, dict] = {}
    rows, notes = [], []
    for axis, grid in grids.items():
        for value in grid:
            conf = dict(BASE, **{axis: value})
            row = {"sweep": axis, "value": value, **conf}
            for method in methods:
                key_conf = dict(conf, T=0) if method == "bp" else conf  # BP ignores T
                key = (method, *sorted(key_conf.items()))
                if key not in cache:
                    cfg.say(f"[scaling] {axis}={value}: {METHODS[method]} ...")
                    try:
                        cache[key] = point(
                            method,
                            conf["T"],
                            conf["width"],
                            conf["depth"],
                            conf["batch"],
                            steps,
                            warmup,
                            cfg.seed,
                            compile,
                            cfg.device,
                        )
                    except Exception as exc:  # one failed point must not lose the sweep
                        cache[key] = {"error": f"{type(exc).__name__}: {exc}"}
                        notes.append(f"{axis}={value} {method} failed: {cache[key]['error']}")
                res = cache[key]
                row[f"{method}_ms"] = res.get("median_ms")
                row[f"{method}_first_s"] = res.get("first_step_s")
            pc = row.get("pc-default_ms", row.get("pc_ms", row.get("pc-eager_ms")))
            row["pc_over_bp"] = ratio(pc, row.get("bp_ms"))
            rows.append(row)
    slopes = {}
    for axis in grids:
        for method in methods:
            xs = [r["value"] for r in rows if r["sweep"] == axis and r.get(f"{method}_ms")]
            ys = [r[f"{method}_ms"] for r in rows if r["sweep"] == axis and r.get(f"{method}_ms")]
            slopes[f"{axis}/{method}"] = loglog_slope(xs, ys)
    columns = [["sweep", "sweep"], ["value", "value"]]
    for m in methods:
        columns.append([f"{m}_ms", f"{m} ms"])
    if "pc" in methods:
        columns.append(["pc_first_s", "pc first step s"])
    columns.append(["pc_over_bp", "PC/BP"])
    files = []
    try:
        files.append(str(plot(rows, methods, slopes, cfg.out / "scaling.png")))
    except Exception as exc:
        notes.append(f"no figure: {exc}")
    notes.append(
        "slopes (log-log, upper half of each sweep): "
        + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items() if v is not None)
    )
    if not compile:
        notes.append("PC eager only (quick mode or --no-compile)")
    return {
        "name": NAME,
        "title": TITLE,
        "measures": __doc__.split("\n\n", 1)[1].strip(),
        "config": {
            "grids": grids,
            "base": BASE,
            "steps": steps,
            "warmup": warmup,
            "methods": methods,
            "compile": compile,
        },
        "columns": columns,
        "rows": rows,
        "slopes": slopes,
        "notes": notes,
        "files": files,
    }


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of log y against log x over the upper half of the points."""
    pts = sorted((x, y) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0)
    if len(pts) >= 4:
        pts = pts[(len(pts) - 1) // 2 :]
    if len(pts) < 2:
        return None
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def plot(rows: list[dict], methods: list[str], slopes: dict, path: Path) -> Path:
    from .. import plotting

    fig, axes = plotting.figure(2, 2, width=5, height=4, squeeze=True)
    for ax, axis in zip(axes.flat, AXES):
        sub = [r for r in rows if r["sweep"] == axis]
        for method in methods:
            pts = [(r["value"], r[f"{method}_ms"]) for r in sub if r.get(f"{method}_ms")]
            if not pts:
                continue
            slope = slopes.get(f"{axis}/{method}")
            label = METHODS[method] + (f" (slope {slope:.2f})" if slope is not None else "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        first = [(r["value"], r[f"{methods[0]}_ms"]) for r in sub if r.get(f"{methods[0]}_ms")]
        if len(first) > 1:  # a slope-1 guide from the first series' first point
            x0, y0 = min(first)
            xs = sorted(x for x, _ in first)
            ax.plot(xs, [y0 * x / x0 for x in xs], color="grey", lw=0.8, ls=":", label="slope 1 (cost proportional)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(AXES[axis] + f" (others: {_others(axis)})")
        ax.set_ylabel("ms per training step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("predcode step time (MLP 784-[width]x[depth]-10, GELU, SE)")
    fig.tight_layout()
    plotting.save(fig, path)
    return path


def _others(axis: str) -> str:
    return ", ".join(f"{k} {v}" for k, v in BASE.items() if k != axis)

"""The pcx benchmark MLP: ms per training step and s per epoch, predcode vs pcx.

Model 784-128-128-128-10, GELU (tanh approximation, JAX's default), SE output energy,
batch 128, T = 8 inference steps of state SGD (lr 0.010535, momentum 0.65, re-initialised
per batch), AdamW on the weights (pcx's MNIST PC-SE hyperparameters; BP-SE's for the
backprop rows), MNIST scaled to [-1, 1].  All methods start from the same initial weights
(pcx gets predcode's) and see the same batches in the same order.

Measured per method, each in a fresh process (with an empty torch.compile cache unless
``--no-cold-compile`` or ``--quick``):

* ``first_step_s``: the first training step, which includes compilation (torch.compile
  for predcode PC / compiled BP, ``jax.jit`` for pcx);
* ``median_ms`` (and p10/p90): the median of ``steps`` single steps after ``warmup``
  untimed ones; a step is the batch gather (``x[idx]``, one-hot for pcx) plus the full
  training step (feed-forward, T inference steps, weight gradients, optimizer), ended by a
  device sync;
* ``epoch_s``: one real epoch timed as a loop: ``60000 // 128 = 468`` batches (59,904
  images; the partial last batch is dropped, as pcx's loaders do); in quick mode a few
  batches, scaled to 468 and marked extrapolated;
* ``test_acc``: feed-forward test accuracy after those steps (a check that the timed code
  trains; not a result).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TypedDict

from .common import (
    METHODS,
    MLP_HP,
    MLP_SIZES,
    BatchSource,
    BenchConfig,
    build_mlp,
    effective_method,
    load_mnist,
    make_step,
    test_accuracy,
)
from .floor import step_peak_memory
from .report import check, ratio
from .timing import time_loop, time_steps
from .worker import WorkerError, run_isolated

NAME = "mlp"
TITLE = "pcx benchmark MLP 784-128-128-128-10, batch 128, T = 8 (ms per step, s per epoch)"


class Preset(TypedDict):
    """Timed and warm-up steps, batches of the timed epoch (0 = all), training images (0 =
    all) and the methods timed."""

    steps: int
    warmup: int
    epoch_batches: int
    train_size: int
    methods: list[str]


FULL: Preset = {
    "steps": 200,
    "warmup": 20,
    "epoch_batches": 0,
    "train_size": 0,
    "methods": ["user-loop", "user-loop-cold", "pc-default", "pc", "pc-eager", "bp", "bp-compiled", "fixed-prediction"],
}
QUICK: Preset = {
    "steps": 20,
    "warmup": 3,
    "epoch_batches": 20,
    "train_size": 0,
    "methods": ["pc-default", "bp", "fixed-prediction"],
}

COLUMNS = [
    ["label", "method"],
    ["first_step_s", "first step s"],
    ["median_ms", "ms/step"],
    ["p10_ms", "p10"],
    ["p90_ms", "p90"],
    ["epoch_s_full", "s/epoch"],
    ["first_epoch_s", "first epoch s"],
    ["vs_pcx", "x pcx"],
    ["vs_pcx_epoch", "x pcx (epoch)"],
    ["vs_pcx_first_epoch", "x pcx (first epoch)"],
    ["vs_bp", "x BP"],
    ["peak_step_mib", "step MiB"],
    ["test_acc", "test acc"],
]


def measure_method(spec: dict) -> dict:
    """Time one predcode method (runs in a worker process or in-process)."""
    import torch

    sizes, hp, seed = spec["sizes"], spec["hp"], spec["seed"]
    train_x, train_y, test_x, test_y = load_mnist(spec.get("train_size") or None)
    source = BatchSource(train_x, train_y, hp["batch"], seed)
    model = build_mlp(sizes, seed)
    step = make_step(spec["method"], model, hp, compile=spec["compile"])

    def run(k: int) -> None:
        x, y = source(k)
        step(x, y)

    timing = time_steps(run, spec["warmup"], spec["steps"])
    k = 1 + spec["warmup"] + spec["steps"]
    per_epoch = source.per_epoch
    count = min(spec.get("epoch_batches") or per_epoch, per_epoch)
    start = per_epoch * max(1, -(-k // per_epoch))  # first batch of the next epoch
    epoch_s = time_loop(run, count, start=start)
    result = {
        **timing.summary(),
        "epoch_s": epoch_s,
        "epoch_batches": count,
        "batches_per_epoch": per_epoch,
        "steps_trained": start + count,
        "test_acc": test_accuracy(model, test_x, test_y),
        "torch_threads": torch.get_num_threads(),
    }
    if not spec["compile"] or spec["method"] in ("pc-default", "pc-eager", "bp", "fixed-prediction"):
        # peak tensor memory of two steps of a fresh model (compiled code allocates out of
        # the dispatcher's sight, so compiled rows have none)
        fresh = make_step(spec["method"], build_mlp(sizes, seed), hp, compile=False)
        x, y = source(0)
        result["peak_step_mib"] = step_peak_memory(lambda: fresh(x, y)) / 2**20
    return result


def measure_user_loop(spec: dict) -> dict:
    """The README's loop as a user runs it: ``user_scripts/readme_loop.py`` in a fresh
    process (import, model, data loaders, ``rule.step`` over one epoch, no flags)."""
    import json
    import os
    import subprocess
    import sys

    from .timing import Timing
    from .worker import parse_result

    script = Path(__file__).parent / "user_scripts" / "readme_loop.py"
    args = {"epochs": 1, "seed": spec["seed"], "threads": spec.get("threads", 0)}
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="predcode-bench-cold-") as empty:
        if spec.get("cold_native"):  # no native kernels built yet: the first step builds them
            env["PREDCODE_CACHE"] = empty
        proc = subprocess.run(
            [sys.executable, str(script), json.dumps(args)], capture_output=True, text=True, timeout=1800, env=env
        )
    out = parse_result(proc, "USER_LOOP ", "the README loop script")
    steps = out["step_times_s"]
    per = out["batches_per_epoch"]
    timing = Timing(steps[0], steps[1 + min(spec["warmup"], len(steps) - 2) :])
    return {
        **timing.summary(),
        "first_step_from_start_s": out["first_step_from_start_s"],
        "import_s": out["import_s"],
        "first_epoch_s": out["first_epoch_s"],
        "epoch_s": (out["first_epoch_s"] - steps[0]) * per / (per - 1),
        "epoch_batches": per,
        "batches_per_epoch": per,
        "test_acc": out["epochs"][-1]["test_acc"],
        "torch_threads": out["torch_threads"],
    }


def measure_products(spec: dict) -> dict:
    """Time the matrix products of one PC step alone (the floor, :mod:`.floor`)."""
    import torch

    from .floor import record_products, time_products

    train_x, train_y, _, _ = load_mnist(spec.get("train_size") or None)
    source = BatchSource(train_x, train_y, spec["hp"]["batch"], spec["seed"])
    step = make_step("pc-eager", build_mlp(spec["sizes"], spec["seed"]), spec["hp"], compile=False)
    x, y = source(0)  # the PyTorch path: its products are torch calls that can be recorded
    step(x, y)
    calls = record_products(lambda: step(x, y))
    timing = time_products(calls, spec["warmup"], spec["steps"])
    return {**timing.summary(), "products": len(calls), "torch_threads": torch.get_num_threads()}


def measure_pcx(spec: dict, cfg: BenchConfig) -> dict:
    from .pcx_runner import run_pcx_mlp
    from .timing import Timing

    out, versions = run_pcx_mlp(
        "speed",
        spec,
        cfg.threads,
        say=cfg.say,
        warmup=spec["warmup"],
        steps=spec["steps"],
        epoch_batches=spec.get("epoch_batches") or 0,
    )
    timing = Timing(out["first_step_s"], out["step_times_s"])
    return {
        **timing.summary(),
        "epoch_s": out["epoch_s"],
        "epoch_batches": out["epoch_batches"],
        "batches_per_epoch": out["batches_per_epoch"],
        "steps_trained": out["steps_trained"],
        "test_acc": out["test_acc"],
        "setup_s": out.get("setup_s"),
        "versions": versions,
    }


def run(cfg: BenchConfig) -> dict:
    preset = QUICK if cfg.quick else FULL
    steps = cfg.param(NAME, "steps", preset["steps"])
    warmup = cfg.param(NAME, "warmup", preset["warmup"])
    epoch_batches = cfg.param(NAME, "epoch_batches", preset["epoch_batches"])
    train_size = cfg.param(NAME, "train_size", preset["train_size"])
    methods = cfg.param(NAME, "methods", list(preset["methods"]))
    sizes = cfg.param(NAME, "sizes", list(MLP_SIZES))
    hp = dict(MLP_HP, T=cfg.param(NAME, "T", MLP_HP["T"]), batch=cfg.param(NAME, "batch", MLP_HP["batch"]))
    base = {
        "sizes": sizes,
        "hp": hp,
        "seed": cfg.seed,
        "steps": steps,
        "warmup": warmup,
        "epoch_batches": epoch_batches,
        "train_size": train_size,
        "compile": cfg.compile,
    }

    rows = []
    notes: list[str] = []
    seen = set()
    for method in methods:
        if method in ("user-loop", "user-loop-cold"):
            cfg.say(f"[mlp] {METHODS[method]} ...")
            rows.append(
                _measure(
                    method,
                    dict(base, threads=cfg.threads, cold_native=method == "user-loop-cold"),
                    cfg,
                    notes,
                    target=f"{__name__}:measure_user_loop",
                )
            )
            continue
        actual = effective_method(method, cfg.compile)
        if actual in seen:
            continue
        seen.add(actual)
        cfg.say(f"[mlp] {METHODS[actual]} ...")
        rows.append(_measure(actual, dict(base, method=actual), cfg, notes))
    if cfg.pcx:
        cfg.say(f"[mlp] {METHODS['pcx']} ...")
        try:
            rows.append({"method": "pcx", "label": METHODS["pcx"], **measure_pcx(base, cfg)})
        except WorkerError as exc:
            rows.append({"method": "pcx", "label": METHODS["pcx"], "error": str(exc)})
            notes.append(f"pcx failed: {str(exc).splitlines()[0]}")

    cfg.say("[mlp] the PC step's matrix products alone ...")
    floor = _measure("pc-products", dict(base, method="pc-products"), cfg, notes, target=f"{__name__}:measure_products")
    rows.append(floor)
    if floor.get("products"):
        notes.append(
            f"pc-products: the {floor['products']} matrix products of one PC step "
            "replayed alone (a floor for the step on this machine and BLAS)"
        )
    by = {r["method"]: r for r in rows}
    for r in rows:
        if r.get("epoch_s") is not None:
            r["epoch_s_full"] = r["epoch_s"] * r["batches_per_epoch"] / r["epoch_batches"]
            r["epoch_extrapolated"] = r["epoch_batches"] < r["batches_per_epoch"]
            # the first epoch as a user waits for it: the first (compiling) step, then the rest
            per = r["batches_per_epoch"]
            if r.get("first_step_s") is not None and r.get("first_epoch_s") is None:
                r["first_epoch_s"] = r["first_step_s"] + r["epoch_s_full"] * (per - 1) / per
    for r in rows:
        r["vs_pcx"] = ratio(r.get("median_ms"), by.get("pcx", {}).get("median_ms"))
        r["vs_bp"] = ratio(r.get("median_ms"), by.get("bp", {}).get("median_ms"))
        r["vs_pcx_epoch"] = ratio(r.get("epoch_s_full"), by.get("pcx", {}).get("epoch_s_full"))
        r["vs_pcx_first_epoch"] = ratio(r.get("first_epoch_s"), by.get("pcx", {}).get("first_epoch_s"))
    pc = by.get("pc-default") or by.get("pc") or by.get("pc-eager")
    checks = []
    if pc is not None and "pcx" in by:  # the targets hold for what a user gets by default
        checks.append(
            check(
                f"{pc['method']} ms/step / pcx ms/step",
                ratio(pc.get("median_ms"), by["pcx"].get("median_ms")),
                "<=",
                0.6,
            )
        )
        # a timed single step ends with a sync; in an epoch loop jax dispatches the next
        # step while the last one runs, so pcx's loop is faster than its timed steps
        checks.append(check(f"{pc['method']} s/epoch / pcx s/epoch", pc.get("vs_pcx_epoch"), "<=", 0.6))
        checks.append(
            check(f"{pc['method']} first epoch (compile included) / pcx's", pc.get("vs_pcx_first_epoch"), "<=", 1.0)
        )
    if pc is not None:
        checks.append(check(f"{pc['method']} first step s", pc.get("first_step_s"), "<=", 2.0))
        if "bp" in by:
            checks.append(
                check(
                    f"{pc['method']} / BP peak step memory",
                    ratio(pc.get("peak_step_mib"), by["bp"].get("peak_step_mib")),
                    "<=",
                    1.5,
                )
            )
    user = by.get("user-loop")
    if user is not None and "pcx" in by:
        checks.append(
            check(
                "user-loop ms/step / pcx ms/step", ratio(user.get("median_ms"), by["pcx"].get("median_ms")), "<=", 0.6
            )
        )
        checks.append(
            check(
                "user-loop first epoch / pcx first epoch (compile included)", user.get("vs_pcx_first_epoch"), "<=", 1.0
            )
        )
        checks.append(check("user-loop first step s (from the loop's start)", user.get("first_step_s"), "<=", 2.0))
    cold = by.get("user-loop-cold")
    if cold is not None:
        checks.append(
            check("user-loop, native kernels not yet built: first step s", cold.get("first_step_s"), "<=", 2.0)
        )
        if "pcx" in by:
            checks.append(
                check(
                    "user-loop, kernels not yet built: first epoch / pcx's", cold.get("vs_pcx_first_epoch"), "<=", 1.0
                )
            )
    if "fixed-prediction" in by and "bp" in by:
        checks.append(
            check("fixed prediction (n = depth) / BP per step", by["fixed-prediction"].get("vs_bp"), "<=", 2.0)
        )
    if any(r.get("epoch_extrapolated") for r in rows):
        notes.append(
            f"s/epoch extrapolated from a partial epoch ({epoch_batches} of {rows[0].get('batches_per_epoch')} batches)"
        )
    n_train = train_size or 60000
    notes.append(
        f"epoch = {n_train // hp['batch']} batches of {hp['batch']} "
        f"({n_train // hp['batch'] * hp['batch']} of {n_train} MNIST training images; "
        "last partial batch dropped)"
    )
    pcx_versions = by.get("pcx", {}).get("versions")
    return {
        "name": NAME,
        "title": TITLE,
        "measures": __doc__.split("\n\n", 1)[1].strip(),
        "config": dict(base, methods=methods),
        "columns": COLUMNS,
        "rows": rows,
        "checks": checks,
        "notes": notes,
        "pcx_versions": pcx_versions,
    }


def _measure(
    method: str, spec: dict, cfg: BenchConfig, notes: list, target: str = f"{__name__}:measure_method"
) -> dict:
    row = {"method": method, "label": METHODS[method]}
    try:
        if cfg.isolate:
            out = run_isolated(target, spec, cfg.threads, cold=cfg.cold_compile)
        else:
            import importlib

            import torch._dynamo

            torch._dynamo.reset()
            module, name = target.split(":")
            out = getattr(importlib.import_module(module), name)(spec)
    except WorkerError as exc:
        out = {"error": str(exc)}
    if "error" in out:
        notes.append(f"{method} failed: {out['error'].splitlines()[-1]}")
    return {**row, **out}

"""GPU: ms per training step and the PC/BP ratio for batch 128 to 4096 (CUDA only).

Models: the pcx MLP (784-128-128-128-10, GELU tanh, T = 8) and VGG-5 (pcx's definition,
32x32x3 inputs, T = 7), float32 (TF32 matmuls as torch's defaults leave them), random
inputs resident on the GPU.  Per model and batch: predcode PC (compiled), BP (eager) and BP
with a compiled forward; each point has dynamo's caches reset, then the first step apart
(compilation), ``warmup`` untimed steps and the median of ``steps`` timed steps, each ended
by ``torch.cuda.synchronize()``.  Skipped when ``torch.cuda.is_available()`` is False.
"""

from __future__ import annotations

from pathlib import Path

from .common import (
    METHODS,
    MLP_HP,
    MLP_SIZES,
    VGG_HP,
    BenchConfig,
    build_mlp,
    device_sync,
    effective_method,
    make_step,
    raise_recompile_limits,
    synthetic_images,
)
from .report import ratio
from .timing import time_steps

NAME = "gpu"
TITLE = "GPU: ms per step and PC/BP ratio, batch 128 to 4096"
FULL = {
    "batches": [128, 256, 512, 1024, 2048, 4096],
    "models": ["mlp", "vgg5"],
    "steps": 50,
    "warmup": 10,
    "methods": ["pc", "bp", "bp-compiled"],
}
QUICK = {"batches": [128, 1024], "models": ["mlp"], "steps": 10, "warmup": 2, "methods": ["pc", "bp"]}


def point(
    model_name: str, method: str, batch: int, steps: int, warmup: int, seed: int, compile: bool, device: str
) -> dict:
    import torch
    import torch._dynamo

    torch._dynamo.reset()
    shape: tuple[int, ...]  # one example's
    if model_name == "mlp":
        model, hp, shape = build_mlp(MLP_SIZES, seed, device), dict(MLP_HP), (784,)
    elif model_name == "vgg5":
        from ..models import vgg5

        torch.manual_seed(seed)
        model, hp, shape = vgg5(in_channels=3, num_classes=10, in_size=32).to(device), dict(VGG_HP), (3, 32, 32)
    else:
        raise ValueError(f"unknown model '{model_name}'; choose mlp or vgg5")
    hp["batch"] = batch
    step = make_step(method, model, hp, compile=compile)
    x, y = synthetic_images(2 * batch, shape, seed=seed, device=device)

    def run(k: int) -> None:
        i = (k % 2) * batch
        step(x[i : i + batch], y[i : i + batch])

    out = time_steps(run, warmup, steps, sync=device_sync(device)).summary()
    out["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return out


def run(cfg: BenchConfig) -> dict:
    import torch

    result: dict[str, object] = {"name": NAME, "title": TITLE, "measures": __doc__.split("\n\n", 1)[1].strip()}
    device = cfg.param(NAME, "device", "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        result["skipped"] = "no CUDA device (torch.cuda.is_available() is False)"
        return result
    preset = QUICK if cfg.quick else FULL
    opts = {key: cfg.param(NAME, key, preset[key]) for key in preset}
    methods = list(dict.fromkeys(effective_method(m, cfg.compile) for m in opts["methods"]))
    raise_recompile_limits()
    rows, notes = [], []
    for model_name in opts["models"]:
        for batch in opts["batches"]:
            row = {"model": model_name, "batch": batch}
            for method in methods:
                cfg.say(f"[gpu] {model_name} batch {batch}: {METHODS[method]} ...")
                try:
                    res = point(model_name, method, batch, opts["steps"], opts["warmup"], cfg.seed, cfg.compile, device)
                except Exception as exc:  # e.g. out of memory at the largest batch
                    res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
                    notes.append(f"{model_name} batch {batch} {method} failed: {res['error']}")
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
                row[f"{method}_ms"] = res.get("median_ms")
                row[f"{method}_first_s"] = res.get("first_step_s")
                row[f"{method}_gib"] = res.get("max_memory_gib")
            pc = row.get("pc_ms", row.get("pc-default_ms"))
            row["pc_over_bp"] = ratio(pc, row.get("bp_ms"))
            row["pc_over_bp_compiled"] = ratio(pc, row.get("bp-compiled_ms"))
            rows.append(row)
    columns = [["model", "model"], ["batch", "batch"]]
    columns += [[f"{m}_ms", f"{m} ms"] for m in methods]
    columns += [["pc_over_bp", "PC/BP"]]
    if "bp-compiled" in methods:
        columns.append(["pc_over_bp_compiled", "PC/BP compiled"])
    if "pc" in methods:
        columns.append(["pc_first_s", "pc first step s"])
    files = []
    try:
        files.append(str(plot(rows, methods, cfg.out / "gpu.png")))
    except Exception as exc:
        notes.append(f"no figure: {exc}")
    result.update(
        config=dict(
            opts,
            methods=methods,
            device=device,
            gpu=torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        ),
        columns=columns,
        rows=rows,
        notes=notes,
        files=files,
    )
    return result


def plot(rows: list[dict], methods: list[str], path: Path) -> Path:
    from .. import plotting

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plotting.figure(2, 1, width=5.5, height=4, squeeze=True)
    for model in models:
        sub = [r for r in rows if r["model"] == model]
        for method in methods:
            pts = [(r["batch"], r[f"{method}_ms"]) for r in sub if r.get(f"{method}_ms")]
            if pts:
                axes[0].plot(*zip(*pts), marker="o", label=f"{model} {METHODS[method]}")
        pts = [(r["batch"], r["pc_over_bp"]) for r in sub if r.get("pc_over_bp")]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=f"{model} PC / BP (eager)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("ms per training step")
    axes[1].set_ylabel("PC step time / BP step time")
    fig.tight_layout()
    plotting.save(fig, path)
    return path

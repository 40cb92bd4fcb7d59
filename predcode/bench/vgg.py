"""VGG-5 (pcx's definition): PC vs BP time per epoch at T = 7, on 28x28x1 and 32x32x3 inputs.

VGG-5 as in pcx's ``examples/discriminative_experiments/VGG5``: four blocks
``conv3x3(pad 1) -> GELU(tanh) -> maxpool 2x2 -> node`` with 128, 256, 512, 512 channels,
then ``Linear -> SE output node`` (``predcode.models.vgg5``); batch 128; PC with T = 7
state-SGD steps (lr 0.0235, momentum 0.3) and AdamW (lr 2.66e-4, wd 6.66e-3), the pcx
CIFAR-10 VGG5_PCN_SE config.  28x28x1 inputs are MNIST (60000 // 128 = 468 batches per
epoch), 32x32x3 inputs are CIFAR-10 when it is in predcode's data folder, else random
images of that shape (50000 // 128 = 390 batches per epoch; a step's cost does not depend on
the pixel values).

Per method, in a fresh process: the first step (compilation) apart, ``warmup`` untimed
steps, the median of ``steps`` timed steps; s/epoch = median step x batches per epoch
(extrapolated: a full-width epoch on a 2-core CPU takes hours), unless ``epoch_batches`` is
set, in which case that many consecutive batches are timed as a loop and scaled.  Then the
floating-point operations of one step (``torch.utils.flop_counter``: convolutions and
matrix products), so that the time ratio can be read against the arithmetic ratio.
"""

from __future__ import annotations

from .common import METHODS, VGG_HP, BatchSource, BenchConfig, effective_method, synthetic_images
from .report import check, ratio
from .timing import time_loop, time_steps
from .worker import WorkerError, run_isolated

NAME = "vgg"
TITLE = "VGG-5 (pcx definition), batch 128, T = 7: PC vs BP"
INPUTS = {"mnist": (1, 28), "cifar": (3, 32)}
FULL = {
    "steps": 5,
    "warmup": 2,
    "epoch_batches": 0,
    "width": 1.0,
    "inputs": ["mnist", "cifar"],
    "methods": ["pc-default", "pc", "bp", "bp-compiled"],
}
QUICK = {
    "steps": 2,
    "warmup": 1,
    "epoch_batches": 0,
    "width": 0.125,
    "inputs": ["mnist", "cifar"],
    "methods": ["pc-default", "bp"],
}
COLUMNS = [
    ["input", "input"],
    ["label", "method"],
    ["first_step_s", "first step s"],
    ["median_ms", "ms/step"],
    ["epoch_s_full", "s/epoch"],
    ["vs_bp", "x BP"],
    ["vs_bp_compiled", "x BP compiled"],
    ["gflop", "GFLOP/step"],
    ["flop_vs_bp", "FLOP x BP"],
    ["time_over_flop_ratio", "time ratio / FLOP ratio"],
    ["peak_step_mib", "step MiB"],
]


def vgg5_factory():
    """``predcode.models.vgg5``, or None where this install has none."""
    try:
        from ..models import vgg5
    except ImportError:
        return None
    return vgg5


def load_images(kind: str, seed: int):
    """``(x, y, description)``: images ``[N, C, H, W]`` in [-1, 1] and labels."""
    from .. import data

    if kind == "mnist":
        x, y = data.load("mnist", "train", normalize="[-1,1]", flatten=False)
        return x, y, "MNIST 60000 x 1x28x28"
    try:
        x, y = data.load("cifar10", "train", normalize="[-1,1]", flatten=False)
        return x, y, "CIFAR-10 50000 x 3x32x32"
    except Exception:
        x, y = synthetic_images(50000, (3, 32, 32), seed=seed)
        return x, y, "random 50000 x 3x32x32 (CIFAR-10 not in the data folder)"


def measure_method(spec: dict) -> dict:
    import torch

    from .common import make_step

    vgg5 = vgg5_factory()
    if vgg5 is None:
        return {"error": "predcode.models.vgg5 is missing"}
    channels, size = INPUTS[spec["input"]]
    x, y, described = load_images(spec["input"], spec["seed"])
    hp = spec["hp"]
    source = BatchSource(x, y, hp["batch"], spec["seed"])
    torch.manual_seed(spec["seed"])
    model = vgg5(in_channels=channels, num_classes=10, in_size=size, width=spec["width"])
    step = make_step(spec["method"], model, hp, compile=spec["compile"])

    def run(k: int) -> None:
        xb, yb = source(k)
        step(xb, yb)

    timing = time_steps(run, spec["warmup"], spec["steps"])
    out = {
        **timing.summary(),
        "batches_per_epoch": source.per_epoch,
        "data": described,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflop": step_gflop(spec["method"], model, hp, *source(0)),
    }
    if spec["method"] in ("pc-default", "pc-eager", "bp"):  # compiled code allocates unseen
        from .floor import step_peak_memory

        torch.manual_seed(spec["seed"])
        fresh = make_step(
            spec["method"],
            vgg5(in_channels=channels, num_classes=10, in_size=size, width=spec["width"]),
            hp,
            compile=False,
        )
        xb, yb = source(0)
        out["peak_step_mib"] = step_peak_memory(lambda: fresh(xb, yb)) / 2**20
    count = min(spec.get("epoch_batches") or 0, source.per_epoch)
    if count:
        k = 1 + spec["warmup"] + spec["steps"]
        out["epoch_s"] = time_loop(run, count, start=k)
        out["epoch_batches"] = count
    return out


def step_gflop(method: str, model, hp: dict, x, y) -> float:
    """GFLOP of one training step of ``method`` (its eager twin: the same arithmetic),
    counted with ``torch.utils.flop_counter``'s formulas (convolutions and matrix products)."""
    from .common import make_step
    from .floor import step_flops

    eager = {"pc": "pc-eager", "pc-default": "pc-eager", "pc-warm": "pc-eager", "bp-compiled": "bp"}.get(method, method)
    step = make_step(eager, model, hp, compile=False)
    return step_flops(lambda: step(x, y)) / 1e9


def run(cfg: BenchConfig) -> dict:
    preset = QUICK if cfg.quick else FULL
    opts = {key: cfg.param(NAME, key, preset[key]) for key in preset}
    compile = cfg.compile and not cfg.quick  # quick mode: eager PC (no minutes of compiling)
    base = {
        "hp": dict(VGG_HP, T=cfg.param(NAME, "T", VGG_HP["T"]), batch=cfg.param(NAME, "batch", VGG_HP["batch"])),
        "seed": cfg.seed,
        "compile": compile,
        "steps": opts["steps"],
        "warmup": opts["warmup"],
        "epoch_batches": opts["epoch_batches"],
        "width": opts["width"],
    }
    result: dict[str, object] = {
        "name": NAME,
        "title": TITLE,
        "measures": __doc__.split("\n\n", 1)[1].strip(),
        "config": dict(base, inputs=opts["inputs"], methods=opts["methods"]),
        "columns": COLUMNS,
    }
    if vgg5_factory() is None:
        result["skipped"] = "predcode.models.vgg5 is missing from this install; this benchmark runs once it exists"
        return result
    rows, notes, checks = [], [], []
    for kind in opts["inputs"]:
        group = []
        for method in dict.fromkeys(effective_method(m, compile) for m in opts["methods"]):
            cfg.say(f"[vgg] {kind}: {METHODS[method]} ...")
            spec = dict(base, input=kind, method=method)
            try:
                out = (
                    run_isolated(f"{__name__}:measure_method", spec, cfg.threads, cold=cfg.cold_compile)
                    if cfg.isolate
                    else _in_process(spec)
                )
            except WorkerError as exc:
                out = {"error": str(exc)}
            if "error" in out:
                notes.append(f"{kind} {method} failed: {out['error'].splitlines()[-1]}")
            c, s = INPUTS[kind]
            group.append({"input": f"{s}x{s}x{c}", "method": method, "label": METHODS[method], **out})
        by = {r["method"]: r for r in group}
        for r in group:
            if r.get("epoch_s") is not None:
                r["epoch_s_full"] = r["epoch_s"] * r["batches_per_epoch"] / r["epoch_batches"]
            elif r.get("median_ms") is not None:
                r["epoch_s_full"] = r["median_ms"] / 1e3 * r["batches_per_epoch"]
        for r in group:
            r["flop_vs_bp"] = ratio(r.get("gflop"), by.get("bp", {}).get("gflop"))
            r["vs_bp"] = ratio(r.get("epoch_s_full"), by.get("bp", {}).get("epoch_s_full"))
            r["vs_bp_compiled"] = ratio(r.get("epoch_s_full"), by.get("bp-compiled", {}).get("epoch_s_full"))
        pc = by.get("pc-default") or by.get("pc") or by.get("pc-eager")
        if pc is not None and "bp" in by:
            # the work is the floor: the time ratio must follow the counted FLOP ratio
            for r in group:
                r["time_over_flop_ratio"] = ratio(r.get("vs_bp"), r.get("flop_vs_bp"))
            checks.append(
                check(
                    f"VGG-5 {group[0]['input']} {pc['method']}: (PC/BP time) / (PC/BP FLOP)",
                    pc.get("time_over_flop_ratio"),
                    "<=",
                    1.15,
                )
            )
            checks.append(
                check(
                    f"VGG-5 {group[0]['input']} {pc['method']} / BP peak step memory",
                    ratio(pc.get("peak_step_mib"), by["bp"].get("peak_step_mib")),
                    "<=",
                    1.5,
                )
            )
        rows += group
    if not opts["epoch_batches"]:
        notes.append("s/epoch = median step x batches per epoch (extrapolated)")
    if opts["width"] != 1.0:
        notes.append(f"channel width x{opts['width']} (not the full VGG-5)")
    if not compile:
        notes.append("PC eager (quick mode or --no-compile)")
    result.update(rows=rows, checks=checks, notes=notes)
    return result


def _in_process(spec: dict) -> dict:
    import torch._dynamo

    torch._dynamo.reset()
    return measure_method(spec)

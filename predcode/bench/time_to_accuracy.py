"""Time to accuracy: wall-clock seconds from the start of training to 98.0 % MNIST test
accuracy, for predcode PC, predcode BP and pcx PC.

The pcx MLP protocol: 784-128-128-128-10 GELU (tanh), batch 128, MNIST in [-1, 1]; PC with
T = 8 state-SGD steps (lr 0.010535, momentum 0.65) and AdamW (lr 2.969e-4, wd 3.55e-4);
BP with AdamW (lr 2.749e-4, wd 5.121e-3); the pcx warmup-cosine schedule over
``schedule_epochs`` epochs (10 % warmup to 1.1x lr, cosine to 0.1x).  All start from the
same initial weights and see the same batches in the same order (60000 // 128 = 468 per
epoch, the partial batch dropped).  Each run is its own fresh process (with an empty
torch.compile cache unless ``--no-cold-compile`` or ``--quick``); predcode PC runs
compiled, eager, and compiled with a warm cache (a throwaway process compiles the same
step first, as a user's earlier run would: the row a second run of the same model sees),
since a cold compile can cost more than the eager steps it saves.  The targets are checked
on the fastest predcode PC row with a cold start (compiled or eager).

The clock starts before the model, the optimizers and the compiled step are built (so it
includes compilation, predcode's graph tracing and pcx's forward initialisation) and runs
during training only: the test accuracy (all 10,000 images, feed-forward) is measured every
``1 / evals_per_epoch`` epoch with the clock stopped.  A run stops at the first evaluation
at or above ``target``, or after ``max_epochs``.  The time reported is the training clock
at that evaluation.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .common import (
    METHODS,
    MLP_HP,
    MLP_SIZES,
    BenchConfig,
    build_mlp,
    effective_method,
    epoch_batches,
    load_mnist,
    make_step,
    test_accuracy,
)
from .report import check, ratio
from .timing import Stopwatch
from .worker import WorkerError, run_isolated

NAME = "tta"
TITLE = "time to 98 % MNIST test accuracy (pcx MLP, batch 128, T = 8)"
FULL = {
    "target": 0.98,
    "max_epochs": 25,
    "schedule_epochs": 25,
    "evals_per_epoch": 4,
    "methods": ["pc-default", "pc", "pc-warm", "bp"],
    "train_size": 0,
}
QUICK = {
    "target": 0.90,
    "max_epochs": 1,
    "schedule_epochs": 1,
    "evals_per_epoch": 4,
    "methods": ["pc-default", "bp"],
    "train_size": 0,
}
COLUMNS = [
    ["label", "method"],
    ["seconds", "s to target"],
    ["epochs", "epochs"],
    ["first_step_s", "first step s"],
    ["train_s_per_epoch", "s/epoch after 1st step"],
    ["best_acc", "best acc"],
    ["vs_pcx", "x pcx"],
    ["vs_bp", "x BP"],
]


def train_predcode(spec: dict) -> dict:
    """Train one predcode method until the target (runs in a worker process)."""
    import torch

    from ..app.train import warmup_cosine

    hp, seed = spec["hp"], spec["seed"]
    train_x, train_y, test_x, test_y = load_mnist(spec.get("train_size") or None)
    per_epoch = train_x.shape[0] // hp["batch"]
    clock = Stopwatch()
    with clock:
        model = build_mlp(spec["sizes"], seed)
        step = make_step(spec["method"], model, hp, compile=spec["compile"])
        optimizer = step.optimizer
        total = spec["schedule_epochs"] * per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total))

    def step_and_schedule(x, y):
        step(x, y)
        scheduler.step()

    return train_to_target(model, step_and_schedule, clock, spec, (train_x, train_y), (test_x, test_y))


def train_to_target(model, step, clock: Stopwatch, spec: dict, train, test) -> dict:
    """Run ``step(x, y)`` over the seeded batch order (clock running) until the test
    accuracy, measured ``evals_per_epoch`` times an epoch with the clock stopped, reaches
    ``spec["target"]``, or ``max_epochs`` pass: the first step's time, the history and
    the evaluation that reached the target (``None`` if none did)."""
    import torch

    (train_x, train_y), (test_x, test_y) = train, test
    batch, seed = spec["hp"]["batch"], spec["seed"]
    n = train_x.shape[0]
    per_epoch = n // batch
    eval_every = max(1, per_epoch // spec["evals_per_epoch"])
    history, reached, first_step, after_first, k = [], None, None, None, 0
    for epoch in range(spec["max_epochs"]):
        for order in epoch_batches(n, batch, seed, epoch):
            with clock:
                t0 = clock.total
                idx = torch.from_numpy(order)
                step(train_x[idx], train_y[idx])
            if first_step is None:
                first_step, after_first = clock.total - t0, clock.total
            k += 1
            if k % eval_every == 0 or k % per_epoch == 0:
                acc = test_accuracy(model, test_x, test_y)
                history.append({"step": k, "epoch": k / per_epoch, "train_s": clock.total, "test_acc": acc})
                if acc >= spec["target"]:
                    reached = history[-1]
                    break
        if reached is not None:
            break
    return {
        "first_step_s": first_step,
        "after_first_s": after_first,
        "history": history,
        "reached": reached,
        "batches_per_epoch": per_epoch,
    }


def compile_once(spec: dict) -> dict:
    """Build and run one step of ``spec``'s method (fills the compile cache; not timed)."""
    train_x, train_y, _, _ = load_mnist(spec.get("train_size") or None)
    step = make_step("pc", build_mlp(spec["sizes"], spec["seed"]), spec["hp"], compile=True)
    step(train_x[: spec["hp"]["batch"]], train_y[: spec["hp"]["batch"]])
    return {}


def _isolated(method: str, spec: dict, cfg: BenchConfig) -> dict:
    """Train ``method`` in a fresh process; ``pc-warm`` first compiles in another one that
    shares its compile cache."""
    if method != "pc-warm":
        return run_isolated(f"{__name__}:train_predcode", dict(spec, method=method), cfg.threads, cold=cfg.cold_compile)
    with tempfile.TemporaryDirectory(prefix="predcode-bench-cache-") as cache:
        run_isolated(f"{__name__}:compile_once", spec, cfg.threads, cache_dir=cache)
        return run_isolated(f"{__name__}:train_predcode", dict(spec, method=method), cfg.threads, cache_dir=cache)


def train_pcx(spec: dict, cfg: BenchConfig) -> dict:
    from .pcx_runner import run_pcx_mlp

    per_epoch = (spec.get("train_size") or 60000) // spec["hp"]["batch"]
    out, versions = run_pcx_mlp(
        "train",
        spec,
        cfg.threads,
        say=cfg.say,
        max_epochs=spec["max_epochs"],
        schedule_epochs=spec["schedule_epochs"],
        target=spec["target"],
        eval_every=max(1, per_epoch // spec["evals_per_epoch"]),
    )
    return {
        "first_step_s": out["first_step_s"],
        "after_first_s": out.get("after_first_s"),
        "history": out["history"],
        "reached": out["reached"],
        "batches_per_epoch": out["batches_per_epoch"],
        "versions": versions,
    }


def run(cfg: BenchConfig) -> dict:
    preset = QUICK if cfg.quick else FULL
    spec = {key: cfg.param(NAME, key, preset[key]) for key in preset}
    methods = spec.pop("methods")
    compile = cfg.compile and not cfg.quick  # quick mode: eager PC (no minutes of compiling)
    spec.update(sizes=list(MLP_SIZES), hp=dict(MLP_HP), seed=cfg.seed, compile=compile)
    rows, notes = [], []
    if not compile:
        notes.append("PC eager (quick mode or --no-compile)")
    for method in dict.fromkeys(effective_method(m, compile) for m in methods):
        cfg.say(f"[tta] {METHODS[method]} ...")
        try:
            if cfg.isolate:
                out = _isolated(method, spec, cfg)
            else:
                import torch._dynamo

                torch._dynamo.reset()
                out = train_predcode(dict(spec, method=method))
        except WorkerError as exc:
            out = {"error": str(exc)}
        rows.append({"method": method, "label": METHODS[method], **out})
    if cfg.pcx:
        cfg.say(f"[tta] {METHODS['pcx']} ...")
        try:
            rows.append({"method": "pcx", "label": METHODS["pcx"], **train_pcx(spec, cfg)})
        except WorkerError as exc:
            rows.append({"method": "pcx", "label": METHODS["pcx"], "error": str(exc)})
    for r in rows:
        if "error" in r:
            notes.append(f"{r['method']} failed: {r['error'].splitlines()[-1]}")
            continue
        summarise(r)
        add_epoch_seconds(r)
    by = {r["method"]: r for r in rows}
    for r in rows:
        r["vs_pcx"] = ratio(r.get("seconds"), by.get("pcx", {}).get("seconds"))
        r["vs_bp"] = ratio(r.get("seconds"), by.get("bp", {}).get("seconds"))
    checks = []
    # the targets hold for what a user gets without any flag, from a cold start
    pc = by.get("pc-default") or by.get("pc") or by.get("pc-eager")
    target = spec["target"]
    if pc is not None:
        if "pcx" in by:
            checks.append(check(f"{pc['method']} / pcx PC time to {target:.1%}", pc.get("vs_pcx"), "<=", 0.75))
        if "bp" in by:
            checks.append(check(f"{pc['method']} / predcode BP time to {target:.1%}", pc.get("vs_bp"), "<=", 1.5))
    for r in rows:
        if "error" not in r and not r.get("reached_target"):
            notes.append(
                f"{r['method']} did not reach {target:.1%} in {spec['max_epochs']} epochs (best {r.get('best_acc')})"
            )
    files = []
    try:
        files.append(str(plot(rows, cfg.out / "tta.png", target)))
    except Exception as exc:  # a figure is a bonus, never a failure
        notes.append(f"no figure: {exc}")
    return {
        "name": NAME,
        "title": TITLE if target == 0.98 else TITLE.replace("98 %", f"{target:.0%}"),
        "measures": __doc__.split("\n\n", 1)[1].strip(),
        "config": dict(spec, methods=methods),
        "columns": COLUMNS,
        "rows": rows,
        "checks": checks,
        "notes": notes,
        "files": files,
        "pcx_versions": by.get("pcx", {}).get("versions"),
    }


def summarise(row: dict, *, final_acc: bool = False) -> list[dict]:
    """Add to a row of :func:`train_to_target`'s output ``best_acc`` (and, with
    ``final_acc``, the last evaluation's accuracy ``final_acc``), ``reached_target``, and
    ``seconds`` and ``epochs`` at the evaluation that reached the target; return the row's
    history (``[]`` where it has none)."""
    hist = row.get("history") or []
    row["best_acc"] = max((h["test_acc"] for h in hist), default=None)
    if final_acc:
        row["final_acc"] = hist[-1]["test_acc"] if hist else None
    row["reached_target"] = row.get("reached") is not None
    if row["reached_target"]:
        row["seconds"], row["epochs"] = row["reached"]["train_s"], row["reached"]["epoch"]
    return hist


def add_epoch_seconds(row: dict) -> None:
    """Add ``train_s_per_epoch`` to a row of :func:`train_to_target`'s output: training
    seconds per epoch after the first (compiling) step, where more than one step ran."""
    hist = row.get("history") or []
    if hist and row.get("after_first_s") is not None and hist[-1]["step"] > 1:
        last = hist[-1]
        row["train_s_per_epoch"] = (
            (last["train_s"] - row["after_first_s"]) / (last["step"] - 1) * row["batches_per_epoch"]
        )


def plot(
    rows: list[dict],
    path: Path,
    target: float,
    *,
    title: str = "time to accuracy",
    label: str = "label",
    fit_y: bool = True,
) -> Path:
    """Test accuracy against training seconds, one line per row (named by its ``label``
    key), the target dashed; ``fit_y`` starts the y axis just below the lowest accuracy."""
    from .. import plotting

    fig, ax = plotting.figure(width=6, height=4, squeeze=True)
    for r in rows:
        hist = r.get("history") or []
        if hist:
            ax.plot([h["train_s"] for h in hist], [h["test_acc"] for h in hist], marker=".", label=r[label])
    ax.axhline(target, color="grey", lw=0.8, ls="--")
    lows = [h["test_acc"] for r in rows for h in (r.get("history") or [])]
    if fit_y and lows:
        ax.set_ylim(max(0.0, min(min(lows), target) - 0.01), 1.0)
    ax.set_xlabel("training wall time (s, evaluation excluded)")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    plotting.save(fig, path)
    return path

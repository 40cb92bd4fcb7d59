"""Deep MLP: error-based PC (ePC) against state-based PC (sPC) and backprop, time per
training step and time to a test accuracy.

Model: a 20-layer MLP, 784-128x19-10, ``Linear -> tanh -> Node`` per hidden layer,
cross-entropy output energy, Glorot-normal weights (gain 1) and zero biases drawn from the
seed (every method starts from the same weights and sees the same batches in the same
order), MNIST in [-1, 1], batch 128.  (At PyTorch's default initialisation a 20-layer tanh
net barely trains in 2 epochs; at Glorot with tanh's gain 5/3 it is chaotic, and ePC's
few-step update is far from backprop's.)  Every method is timed as a user runs it, through the public API only:
``rule.step(graph, x, y, optimizer)`` on a :class:`~predcode.PCGraph`, with the rule's
defaults (no ``compile``), so the numbers follow whatever the library does:

* ``bp``: :class:`~predcode.Backprop`;
* ``spc-T``: :class:`~predcode.InferenceLearning` (state-based PC), ``T`` steps of state SGD;
* ``epc-T``: :class:`~predcode.ErrorPC`, ``T`` steps of error SGD at rate ``0.005 / T``;

``T`` = 5 and 20 for both PC rules; Adam on the weights.  Each method runs in a fresh
process (unless ``--in-process``).

* ``median_ms`` (and p10/p90): the median of ``steps`` single training steps (the batch
  gather plus ``rule.step``) after the first step and ``warmup`` untimed ones;
  ``epoch_s`` is ``median_ms`` times the 468 batches of an epoch;
* time to accuracy (second table): wall seconds from building the model, graph and
  optimizer until the first evaluation at or above ``target`` test accuracy (all 10,000
  test images, feed-forward; measured ``evals_per_epoch`` times an epoch with the clock
  stopped), at most ``max_epochs`` epochs; "not reached" otherwise.

The step times of a shared machine depend on its other jobs: the load average before and
after each benchmark is recorded beside the results.
"""

from __future__ import annotations

from .common import BatchSource, BenchConfig, load_mnist, test_accuracy
from .report import ratio
from .time_to_accuracy import add_epoch_seconds, plot, summarise
from .timing import Stopwatch, time_steps
from .worker import WorkerError, run_isolated

NAME = "deep"
TITLE = (
    "20-layer MLP 784-128x19-10 (tanh, CE), MNIST batch 128: ePC vs sPC vs backprop, "
    "ms per step (T = 5, 20) and time to test accuracy"
)
SIZES = [784] + [128] * 19 + [10]
# Rates: Adam on the weights, each of backprop and ePC (T = 5) at the better of 3e-4 and
# 1e-3 for one epoch of seed 0 (sPC shares ePC's); error SGD for ePC in its small-error
# regime at rate ``epc_budget / T`` (0.001 at T = 5: the weight update within a few degrees
# of backprop's, layer by layer, at the initial weights; at T = 20 the same rate moved the
# errors so far that the update lost backprop's direction and training collapsed); state
# SGD 0.01 for sPC (timed only).
HP = {"batch": 128, "w_lr": 1e-3, "bp_lr": 3e-4, "epc_budget": 0.005, "spc_lr": 0.01, "adam_eps": 1e-8}
FULL = {
    "steps": 200,
    "warmup": 10,
    "T": [5, 20],
    "methods": ["bp", "spc", "epc"],
    "target": 0.90,
    "max_epochs": 2,
    "evals_per_epoch": 8,
    "tta_methods": ["bp", "epc-5", "epc-20"],
    "train_size": 0,
}
QUICK = {
    "steps": 3,
    "warmup": 1,
    "T": [5, 20],
    "methods": ["bp", "spc", "epc"],
    "target": 0.30,
    "max_epochs": 1,
    "evals_per_epoch": 2,
    "tta_methods": ["bp", "epc-5"],
    "train_size": 1280,
}
PLOT_TITLE = "20-layer tanh MLP: time to accuracy"
LABELS = {"bp": "backprop", "spc": "sPC (InferenceLearning), state SGD", "epc": "ePC (ErrorPC), error SGD"}

COLUMNS = [
    ["label", "method"],
    ["T", "T"],
    ["first_step_s", "first step s"],
    ["median_ms", "ms/step"],
    ["p10_ms", "p10"],
    ["p90_ms", "p90"],
    ["epoch_s", "s/epoch (est.)"],
    ["vs_bp", "x BP"],
    ["vs_spc", "x sPC same T"],
]
TTA_COLUMNS = [
    ["label", "method"],
    ["T", "T"],
    ["seconds_text", "s to target"],
    ["epochs", "epochs"],
    ["best_acc", "best acc"],
    ["final_acc", "final acc"],
    ["train_s_per_epoch", "s/epoch"],
    ["vs_bp", "x BP"],
]


def method_name(kind: str, T: int | None) -> str:
    return kind if T is None else f"{kind}-{T}"


def parse_method(name: str) -> tuple[str, int | None]:
    kind, _, T = name.partition("-")
    return kind, (int(T) if T else None)


def build(name: str, hp: dict, seed: int):
    """``(model, step(x, y))`` for one method: the model, its graph, rule and Adam, built
    through the public API."""
    import torch

    from .. import SGD, Backprop, ErrorPC, InferenceLearning, PCGraph
    from ..models import mlp
    from ..rules import LearningRule

    kind, T = parse_method(name)
    torch.manual_seed(seed)
    model = mlp(SIZES, act="tanh", output_energy="ce")
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):  # Glorot (gain 1), zero biases
            torch.nn.init.xavier_normal_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    graph = PCGraph(model)
    rule: LearningRule
    if kind == "bp":
        rule, lr = Backprop(), hp["bp_lr"]
    elif kind not in ("spc", "epc"):
        raise ValueError(f"unknown method '{name}'; choose bp, spc-T or epc-T")
    elif T is None:
        raise ValueError(f"method '{name}' needs its inference steps: {kind}-T (e.g. {kind}-20)")
    elif kind == "spc":
        rule, lr = InferenceLearning(SGD(hp["spc_lr"]), T), hp["w_lr"]
    else:
        rule, lr = ErrorPC(SGD(hp["epc_budget"] / T), T), hp["w_lr"]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=hp["adam_eps"])

    def step(x, y):
        return rule.step(graph, x, y, optimizer)

    return model, step


def measure_step(spec: dict) -> dict:
    """Time one method's training step (in a worker process or in-process)."""
    import torch

    train_x, train_y, test_x, test_y = load_mnist(spec.get("train_size") or None)
    source = BatchSource(train_x, train_y, spec["hp"]["batch"], spec["seed"])
    model, step = build(spec["method"], spec["hp"], spec["seed"])
    last = {}

    def run(k: int) -> None:
        x, y = source(k)
        last["stats"] = step(x, y)

    timing = time_steps(run, spec["warmup"], spec["steps"])
    stats = last["stats"]
    out = {
        **timing.summary(),
        "batches_per_epoch": source.per_epoch,
        "steps_trained": 1 + spec["warmup"] + spec["steps"],
        "test_acc": test_accuracy(model, test_x, test_y),
        "torch_threads": torch.get_num_threads(),
    }
    if stats.energy_initial is not None and stats.energy_final is not None:
        # the last step's relaxation: the energy it started from and reached
        out["energy_initial"] = float(stats.energy_initial)
        out["energy_final"] = float(stats.energy_final)
    return out


def train_to_target(spec: dict) -> dict:
    """Train one method until ``target`` test accuracy or ``max_epochs`` (clock: building
    and training; evaluation excluded; :func:`.time_to_accuracy.train_to_target`)."""
    import torch

    from .time_to_accuracy import train_to_target as train_loop

    train_x, train_y, test_x, test_y = load_mnist(spec.get("train_size") or None)
    clock = Stopwatch()
    with clock:
        model, step = build(spec["method"], spec["hp"], spec["seed"])
    out = train_loop(model, step, clock, spec, (train_x, train_y), (test_x, test_y))
    return {**out, "torch_threads": torch.get_num_threads()}


def _call(target: str, spec: dict, cfg: BenchConfig) -> dict:
    try:
        if cfg.isolate:
            return run_isolated(f"{__name__}:{target}", spec, cfg.threads, cold=cfg.cold_compile)
        return globals()[target](spec)
    except WorkerError as exc:
        return {"error": str(exc)}


def run(cfg: BenchConfig) -> dict:
    preset = QUICK if cfg.quick else FULL
    spec = {key: cfg.param(NAME, key, preset[key]) for key in preset}
    hp = {key: cfg.param(NAME, key, value) for key, value in HP.items()}
    Ts, kinds, tta_methods = spec.pop("T"), spec.pop("methods"), spec.pop("tta_methods")
    spec.update(hp=hp, seed=cfg.seed)
    names = [
        method_name(k, None) if k == "bp" else method_name(k, T) for k in kinds for T in ([None] if k == "bp" else Ts)
    ]

    rows, notes = [], []
    for name in names:
        kind, T = parse_method(name)
        cfg.say(f"[deep] step time: {name} ...")
        out = _call("measure_step", dict(spec, method=name), cfg)
        rows.append({"method": name, "label": LABELS[kind], "T": T, **out})
    by = {r["method"]: r for r in rows}
    for r in rows:
        if "error" in r:
            notes.append(f"{r['method']} failed: {r['error'].splitlines()[-1]}")
            continue
        r["epoch_s"] = r["median_ms"] * r["batches_per_epoch"] / 1e3
        r["vs_bp"] = ratio(r.get("median_ms"), by.get("bp", {}).get("median_ms"))
        if r["method"].startswith("epc-"):
            r["vs_spc"] = ratio(r["median_ms"], by.get(f"spc-{r['T']}", {}).get("median_ms"))
        if "energy_initial" in r and r["energy_final"] > r["energy_initial"]:
            notes.append(
                f"{r['method']}: the last timed relaxation raised the energy "
                f"({r['energy_initial']:.4g} -> {r['energy_final']:.4g})"
            )

    target = spec["target"]
    tta = []
    for name in tta_methods:
        kind, T = parse_method(name)
        cfg.say(f"[deep] time to {target:.0%}: {name} ...")
        out = _call("train_to_target", dict(spec, method=name), cfg)
        tta.append({"method": name, "label": LABELS[kind], "T": T, **out})
    for r in tta:
        if "error" in r:
            notes.append(f"{r['method']} (time to accuracy) failed: {r['error'].splitlines()[-1]}")
            continue
        hist = summarise(r, final_acc=True)
        if r["reached_target"]:
            r["seconds_text"] = f"{r['seconds']:.1f}"
        else:
            r["epochs"] = hist[-1]["epoch"] if hist else None
            r["seconds_text"] = "not reached"
            notes.append(
                f"{r['method']} did not reach {target:.0%} in {spec['max_epochs']} epoch(s) (best {r['best_acc']:.4f})"
            )
        add_epoch_seconds(r)
    by_tta = {r["method"]: r for r in tta}
    for r in tta:
        r["vs_bp"] = ratio(r.get("seconds"), by_tta.get("bp", {}).get("seconds"))
    n_train = spec["train_size"] or 60000
    notes.append(f"epoch = {n_train // hp['batch']} batches of {hp['batch']} (the last partial batch dropped)")
    notes.append(
        "rates: Adam {w_lr:g} on the weights of both PC rules, {bp_lr:g} for backprop "
        "(eps {adam_eps:g}); ePC error SGD {epc_budget:g} / T; sPC state SGD {spc_lr:g}".format(**hp)
    )
    files = []
    try:
        files.append(str(plot(tta, cfg.out / "deep_tta.png", target, title=PLOT_TITLE, label="method", fit_y=False)))
    except Exception as exc:  # a figure is a bonus, never a failure
        notes.append(f"no figure: {exc}")
    return {
        "name": NAME,
        "title": TITLE,
        "measures": __doc__.split("\n\n", 1)[1].strip(),
        "config": dict(spec, T=Ts, methods=kinds, tta_methods=tta_methods, sizes=SIZES),
        "columns": COLUMNS,
        "rows": rows,
        "tables": [
            {
                "title": f"time to {target:.0%} MNIST test accuracy (at most {spec['max_epochs']} epoch(s))",
                "columns": TTA_COLUMNS,
                "rows": tta,
            }
        ],
        "checks": [],
        "notes": notes,
        "files": files,
    }

r"""Signal decay with depth: error-based PC (ePC) against state-based PC (sPC) (Goemaere,
Oliviers, Bogacz & Demeester 2025, "ePC: Fast and Deep Predictive Coding in Digital
Simulation", arXiv 2505.20137).

A chain of ``L`` dense layers, ``x_0`` the clamped input, ``x_L`` the clamped target, the
hidden nodes ``x_1 .. x_{L-1}`` free, with the energy

.. math:: E = \sum_{l=1}^{L} \tfrac12 \lVert x_l - \mu_l(x_{l-1}) \rVert^2, \qquad
          \mu_l(x_{l-1}) = \tanh(W_l x_{l-1} + b_l) \;(\text{the top layer linear}).

sPC descends the states, :math:`x_l \leftarrow x_l - \eta\,(\varepsilon_l - J_{l+1}^\top
\varepsilon_{l+1})` with :math:`\varepsilon_l = x_l - \mu_l`: a node hears only its own and
its child's error, so the target's error reaches hidden layer ``l`` after ``L - l`` steps,
shrunk by every Jacobian on the way.  ePC descends the errors
:math:`e_l` with :math:`x_l = \mu_l(x_{l-1}) + e_l` recomputed by one forward sweep,

.. math:: e_l \leftarrow e_l - \eta\,\frac{\mathrm dE}{\mathrm de_l}, \qquad
          \frac{\mathrm dE}{\mathrm de_l} = e_l + \Big(\frac{\partial x_{>l}}{\partial e_l}
          \Big)^{\!\top} \nabla_{x_{>l}} E,

one reverse pass through everything above ``l``: every layer hears the target at step 1.
Both have the same stationary points.

Protocol.  MLPs ``predcode.models.mlp([64] * (L + 1), act="tanh")`` (width 64 for input,
hidden and output, PyTorch's default init, seeded per depth), ``L`` in 5, 10, 20, 40; one
batch of 32 random Gaussian inputs and 32 random Gaussian targets (no data set); the same
weights and batch in float32 and float64.  A diagnostic arm (float64) repeats everything
with orthogonal weight matrices of gain 1 (default biases), whose Jacobians keep the signal
from decaying with depth.  ``E`` above is summed over units and averaged over the batch.
Every relaxation starts at the feed-forward pass
with the output replaced by the target and runs ``predcode.relax`` with the hidden nodes
free (``Variables.STATES`` for sPC, ``Variables.ERRORS`` for ePC).

1. Per-layer dynamics: gradient descent at step size 0.1 (stable for both) for ``max(3L, 60)``
   steps; per step and hidden layer the RMS of :math:`x_l^{(t+1)} - x_l^{(t)}`, and the
   first step at which :math:`x_l` differs at all from its start value.
2. Steps to tolerance: every solver of the grid (gradient descent, momentum 0.9 SGD and
   Adam at a few step sizes each) for both methods; the reference :math:`E_{min}` is the
   lowest energy any of these runs finds for that network, batch and dtype; a run's count
   is the first step ``t`` with :math:`E_t - E_{min} \le 10^{-3} |E_{min}|` (``E_t`` the
   energy before step ``t``; 0 = the feed-forward start), and each method is scored by
   its best grid point (the first time a run gets there; a diverged run never counts).
   A run ends at the step cap, when it diverges (:class:`predcode.DivergenceError`), or
   when its lowest energy so far has improved by less than ``plateau_rtol`` (relative) over
   the last ``window`` steps (stalled: at that rate it cannot close a gap of
   :math:`10^{-3}` before the cap).

Findings (``results/signal-decay``; the default size and ``--full`` give the same counts):
the first-move pattern is as the equations say (ePC: every layer at step 1; sPC: layer
``l`` never before step ``L - l``, later or never where the increment is below the
resolution of :math:`x_l`).  With PyTorch's default init the steps to tolerance hardly
depend on depth (best ePC 6, best sPC 19-24 at ``L`` = 5-40, a ratio of 3-4x; float32
gives the same counts): the Jacobians shrink the signal about 1.8x per layer, so the
layers far from the output hold almost none of the energy that relaxation removes.  With
orthogonal weights plain gradient descent shows the depth effect (sPC/ePC 3.9x, 4.6x,
12x, 28x at ``L`` = 5, 10, 20, 40), but momentum SGD and Adam let sPC catch up (best
solver against best solver 3.9-4.8x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from .. import SGD, DivergenceError, GradientDescent, OptimizerSolver, PCGraph, Solver, StopRule, Variables, relax
from ..atomic import write_json
from ..exceptions import OptionError
from ..models import mlp
from . import common, experiment

WIDTH, BATCH, ACT = 64, 32, "tanh"
RTOL = 1e-3
EXTRA_RTOLS = (1e-6,)
"""Tighter tolerances reported beside the headline one (float64 only: float32's energy is
resolved to about 1e-7 relative)."""
DYNAMICS_LR = 0.1
PAPER_RATIO = "paper: 100-1000x"
TARGET_RATIO_20 = 15.0
METHODS = {"spc": Variables.STATES, "epc": Variables.ERRORS}
GRID = {"gd": [0.01, 0.03, 0.1, 0.3, 1.0], "momentum": [0.003, 0.01, 0.03, 0.1], "adam": [0.001, 0.003, 0.01, 0.03]}
QUICK_GRID = {"gd": [0.03, 0.1, 0.3, 1.0], "momentum": [0.01, 0.03, 0.1], "adam": [0.003, 0.01, 0.03]}
"""The default size drops the smallest step size of each solver (never a method's best in
the full grid, and the runs that last longest)."""
MOMENTUM = 0.9
PLATEAU_RTOL = {torch.float64: 1e-8, torch.float32: 1e-6}
INITS = ("default", "orthogonal")
ARMS = [("default", "float64"), ("default", "float32"), ("orthogonal", "float64")]
"""(init, dtype) pairs measured; the headline is PyTorch's default init, the orthogonal
arm (float64 only) shows the same comparison on a network whose signal does not decay."""


class Settings(TypedDict):
    """Depths measured, the step cap per depth, the stall window, the ``(init, dtype)`` arms
    and the step-size grid per solver family."""

    depths: list[int]
    caps: dict[int, int]
    window: int
    arms: list[tuple[str, str]]
    grid: dict[str, list[float]]


SETTINGS: dict[str, Settings] = {
    "default": {
        "depths": [5, 10, 20, 40],
        "caps": {5: 500, 10: 500, 20: 1000, 40: 1000},
        "window": 100,
        "arms": ARMS,
        "grid": QUICK_GRID,
    },
    "full": {
        "depths": [5, 10, 20, 40],
        "caps": {5: 5000, 10: 5000, 20: 5000, 40: 10000},
        "window": 500,
        "arms": ARMS,
        "grid": GRID,
    },
}


# -- the problem -----------------------------------------------------------------------
def problem(
    depth: int, dtype: torch.dtype, seed: int = 0, init: str = "default"
) -> tuple[PCGraph, list[torch.Tensor], list[int]]:
    """``(graph, start values, free slots)`` for an ``L = depth`` layer tanh MLP of width 64:
    the feed-forward pass of a random Gaussian batch with the output set to a random
    Gaussian target.  The weights and the batch depend on ``(depth, seed, init)`` only, not
    on ``dtype`` (float64 holds the float32 initial weights exactly).  ``init``:
    ``"default"`` (PyTorch's) or ``"orthogonal"`` (orthogonal weight matrices of gain 1,
    default biases: Jacobians near norm 1, so the signal does not decay with depth)."""
    if init not in INITS:
        raise OptionError(f"unknown init {init!r}; choose one of {INITS}")
    torch.manual_seed(seed * 1009 + depth)
    model = mlp([WIDTH] * (depth + 1), act=ACT, output_energy="se")
    if init == "orthogonal":
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.orthogonal_(layer.weight, gain=1.0)
    model = model.to(dtype)
    gen = torch.Generator().manual_seed(seed * 1009 + depth + 500)
    x = torch.randn(BATCH, WIDTH, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(BATCH, WIDTH, generator=gen, dtype=torch.float64).to(dtype)
    graph = PCGraph(model)
    with torch.no_grad():
        values = list(graph.feedforward([x]))
    (out,) = graph.outputs
    values[out] = y
    free = graph.free_slots(out)
    return graph, values, free


def make_solver(kind: str, lr: float) -> Solver:
    if kind == "gd":
        return GradientDescent(lr)
    if kind == "momentum":
        return SGD(lr, momentum=MOMENTUM)
    if kind == "adam":
        return OptimizerSolver(torch.optim.Adam, lr=lr)
    raise OptionError(f"unknown solver kind {kind!r}; choose gd, momentum or adam")


def _sig(values: Sequence[float], digits: int) -> list[float]:
    """``values`` rounded to ``digits`` significant digits (for a compact JSON)."""
    return [float(f"{v:.{digits}g}") for v in values]


# -- per-layer dynamics ----------------------------------------------------------------
def layer_dynamics(
    depth: int,
    dtype: torch.dtype,
    method: str,
    steps: int,
    lr: float = DYNAMICS_LR,
    seed: int = 0,
    init: str = "default",
) -> dict[str, Any]:
    """Gradient descent at step size ``lr`` for ``steps`` steps: ``update_rms[t][l-1]`` is
    the RMS of :math:`x_l^{(t+1)} - x_l^{(t)}` for hidden layer ``l`` (1 = nearest the input),
    ``first_move[l-1]`` the first step (1-based) after which :math:`x_l` differs from its
    start value in any unit (``None``: never within ``steps``)."""
    graph, values, free = problem(depth, dtype, seed, init)
    previous = [values[i].clone() for i in free]
    start = [v.clone() for v in previous]
    rms: list[list[float]] = []
    first: list[int | None] = [None] * len(free)

    def on_step(step: int, current: list[torch.Tensor]) -> None:
        row = []
        for k, i in enumerate(free):
            x = current[i]
            row.append(float((x - previous[k]).double().pow(2).mean().sqrt()))
            if first[k] is None and bool((x != start[k]).any()):
                first[k] = step + 1
            previous[k] = x.clone()
        rms.append(row)

    relax(graph, values, free, GradientDescent(lr), StopRule(steps), on_step=on_step, variables=METHODS[method])
    return {
        "update_rms": [_sig(row, 4) for row in rms],
        "first_move": first,
        "expected_spc": [depth - l for l in range(1, depth)],
    }


def dynamics_steps(depth: int) -> int:
    """Steps recorded per layer: past ``L - 1`` (when sPC's first layer could first move)."""
    return max(3 * depth, 60)


# -- steps to tolerance ------------------------------------------------------------------
class _Stalled(Exception):
    """Raised by :class:`_Watched` to end a run whose energy has stopped improving."""


class _Watched(Solver):
    """A solver that records the batch-mean energy before every step (the row the inner
    solver evaluates anyway), raises :class:`~predcode.DivergenceError` as soon as the
    energy is non-finite or above ``factor * max(E_0, 1)`` (the stop rule's criterion, without
    waiting for the step cap), and :class:`_Stalled` once the lowest energy so far has
    improved by at most ``plateau_rtol`` (relative) over the last ``window`` steps."""

    compilable = False

    def __init__(self, inner: Solver, batch: int, window: int, plateau_rtol: float, factor: float = 1e6) -> None:
        self.inner, self.batch, self.window, self.plateau_rtol = inner, batch, window, plateau_rtol
        self.factor = factor
        self.energies: list[float] = []
        self.best: list[float] = []

    def init(self, states):
        return self.inner.init(states)

    def update(self, step, states, grad_fn, memory):
        new, memory, row, grads = self.inner.update(step, states, grad_fn, memory)
        energy = float(row.detach().sum(dtype=torch.float64)) / self.batch
        self.energies.append(energy)
        limit = self.factor * max(self.energies[0], 1.0)
        if not math.isfinite(energy) or energy > limit:
            raise DivergenceError(
                step, "total", energy, "not finite" if not math.isfinite(energy) else f"above {limit:.3g}"
            )
        self.best.append(min(energy, self.best[-1]) if self.best else energy)
        if step >= self.window:
            old, now = self.best[step - self.window], self.best[step]
            if old - now <= self.plateau_rtol * abs(now):
                raise _Stalled()
        return new, memory, row, grads


def run_config(
    depth: int,
    dtype: torch.dtype,
    method: str,
    kind: str,
    lr: float,
    cap: int,
    window: int,
    seed: int = 0,
    init: str = "default",
) -> dict[str, Any]:
    """One relaxation: ``energies[t]`` = batch-mean energy before step ``t`` (the last entry
    the state where it ended) and how it ended: ``cap``, ``stalled`` or ``diverged``."""
    graph, values, free = problem(depth, dtype, seed, init)
    watched = _Watched(make_solver(kind, lr), BATCH, window, PLATEAU_RTOL[dtype])
    status = "cap"
    try:
        relaxed = relax(graph, values, free, watched, StopRule(cap), variables=METHODS[method])
        energies = watched.energies + [float(relaxed.trace.energy[-1].double())]
    except DivergenceError:
        status, energies = "diverged", watched.energies
    except _Stalled:
        status, energies = "stalled", watched.energies
    return {
        "solver": kind,
        "lr": lr,
        "momentum": MOMENTUM if kind == "momentum" else None,
        "status": status,
        "steps_run": len(energies) - 1,
        "energies": energies,
    }


def steps_to(energies: Sequence[float], e_min: float, rtol: float) -> int | None:
    """First ``t`` with ``E_t - e_min <= rtol * |e_min|``, or ``None``."""
    bound = e_min + rtol * abs(e_min)
    return next((t for t, e in enumerate(energies) if math.isfinite(e) and e <= bound), None)


def best_of(runs: list[dict], rtol_key: str) -> dict[str, Any] | None:
    """The grid point reaching the tolerance in the fewest steps (None: none reaches it)."""
    reached = [r for r in runs if r[rtol_key] is not None]
    if not reached:
        return None
    r = min(reached, key=lambda r: (r[rtol_key], r["solver"], r["lr"]))
    return {"solver": r["solver"], "lr": r["lr"], "momentum": r["momentum"], "steps": r[rtol_key]}


def _key(rtol: float) -> str:
    return f"steps_rtol_{rtol:g}"


def measure(
    depth: int,
    dtype: torch.dtype,
    *,
    cap: int,
    window: int,
    grid: dict[str, list[float]] = GRID,
    seed: int = 0,
    init: str = "default",
    rtols: Sequence[float] = (RTOL,),
    keep_energies: bool = False,
) -> dict[str, Any]:
    """Steps to within ``rtol`` of the lowest energy found, for sPC and ePC, every grid point
    run; per method the best grid point (``best[rtol]``), and the sPC/ePC ratio."""
    runs = {
        m: [run_config(depth, dtype, m, kind, lr, cap, window, seed, init) for kind, lrs in grid.items() for lr in lrs]
        for m in METHODS
    }
    finite = [e for rs in runs.values() for r in rs for e in r["energies"] if math.isfinite(e)]
    e_min = min(finite)
    out: dict[str, Any] = {
        "depth": depth,
        "dtype": str(dtype).replace("torch.", ""),
        "init": init,
        "cap": cap,
        "e_min": e_min,
        "e_start": runs["spc"][0]["energies"][0],
        "methods": {},
    }
    for m, rs in runs.items():
        for r in rs:
            for rtol in rtols:  # a diverged configuration counts as never reaching it
                r[_key(rtol)] = None if r["status"] == "diverged" else steps_to(r["energies"], e_min, rtol)
            r["final_energy"] = r["energies"][-1]
            r["min_energy"] = min((e for e in r["energies"] if math.isfinite(e)), default=None)
            if not keep_energies:  # every k-th energy, ~30 points, 10 significant digits
                r["energies"] = _sig(r["energies"][:: max(1, len(r["energies"]) // 30)], 10)
        out["methods"][m] = {"best": {f"{rtol:g}": best_of(rs, _key(rtol)) for rtol in rtols}, "runs": rs}
    out["ratio"] = {}
    for rtol in rtols:
        s, e = (out["methods"][m]["best"][f"{rtol:g}"] for m in ("spc", "epc"))
        if s and e:
            ratio = {"spc_over_epc": s["steps"] / max(e["steps"], 1), "lower_bound": False}
        elif e:  # sPC never got there: the cap over ePC's count bounds the ratio from below
            ratio = {"spc_over_epc": cap / max(e["steps"], 1), "lower_bound": True}
        else:
            ratio = {"spc_over_epc": None, "lower_bound": False}
        out["ratio"][f"{rtol:g}"] = {**ratio, "paper": PAPER_RATIO}
    # the same comparison within each solver family (best step size of that family only)
    out["by_solver"] = {}
    for kind in grid:
        best = {m: best_of([r for r in out["methods"][m]["runs"] if r["solver"] == kind], _key(RTOL)) for m in METHODS}
        s, e = best["spc"], best["epc"]
        out["by_solver"][kind] = {**best, "ratio": s["steps"] / max(e["steps"], 1) if s and e else None}
    return out


# -- the experiment ----------------------------------------------------------------------
def _fmt_steps(best: dict | None) -> str:
    if best is None:
        return "not reached"
    extra = f", m {best['momentum']}" if best["momentum"] else ""
    return f"{best['steps']} ({best['solver']} {best['lr']:g}{extra})"


def _arm(init: str, dtype: str) -> str:
    return f"{init}/{dtype}"


ARM_STYLES = {
    "default/float64": ("-", "o", 1.0, "full"),
    "default/float32": ("--", "s", 1.05, "none"),
    "orthogonal/float64": (":", "^", 0.95, "full"),
}


def _figure(out_dir: Path, dynamics: dict, table: list[dict], show_depth: int) -> str:
    fig, axes = common.figure(3, 1, width=4.4)
    for ax, method in zip(axes[0, :2], ("spc", "epc")):
        d = dynamics[f"default/float64/{show_depth}/{method}"]
        rms = np.asarray(d["update_rms"], dtype=np.float64).T  # [layer, step]
        with np.errstate(divide="ignore"):
            img = np.log10(np.where(rms > 0, rms, np.nan))
        im = ax.imshow(
            img,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            vmin=-16,
            vmax=0,
            interpolation="nearest",
            extent=(0.5, rms.shape[1] + 0.5, 0.5, rms.shape[0] + 0.5),
        )
        fig.colorbar(im, ax=ax, label="log10 RMS of x_l(t+1) - x_l(t); white: 0")
        ax.set(
            xlabel="inference step t+1",
            ylabel="hidden layer l (1 = input side)",
            title=f"{method.upper()}: per-layer update, L = {show_depth}, float64, GD {DYNAMICS_LR}",
        )
        ax.title.set_fontsize(9)
    ax = axes[0, 2]
    colors = {"spc": "#d62728", "epc": "#1f77b4"}
    for arm, (ls, marker, shift, fill) in ARM_STYLES.items():
        rows = [r for r in table if _arm(r["init"], r["dtype"]) == arm]
        for method, color in colors.items():
            if not rows:
                continue
            depths = [r["depth"] * shift for r in rows]
            steps = [r[method]["steps"] if r[method] else np.nan for r in rows]
            ax.plot(
                depths,
                steps,
                ls=ls,
                marker=marker,
                color=color,
                fillstyle=fill,
                label=f"{method.upper()} {arm.replace('/', ' init, ')}",
            )
            missed = [(r["depth"] * shift, r["cap"]) for r in rows if r[method] is None]
            if missed:
                ax.plot(*zip(*missed), "x", color=color, ms=9, label=f"{method.upper()} {arm}: not reached (cap)")
    depths = sorted({r["depth"] for r in table})
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="depth L",
        ylabel=f"steps to E_min within {RTOL:g} (relative)",
        title="steps to tolerance, best solver of the grid",
    )
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6)
    return common.save(fig, out_dir, "signal_decay.png")


def _ratio_text(r: dict) -> str:
    if r["ratio"] is None:
        return "n/a"
    return f"{'>= ' if r['ratio_is_lower_bound'] else ''}{r['ratio']:.1f}x"


@experiment(
    "signal-decay",
    "Goemaere et al. 2025: ePC moves every layer at step 1 and needs "
    "far fewer steps than sPC as depth grows (paper: 100-1000x)",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    common.setup()
    clock = common.Clock()
    cfg = SETTINGS["full" if full else "default"]
    key = f"{RTOL:g}"
    dynamics, measured, table = {}, {}, []
    for depth in cfg["depths"]:
        for init, name in cfg["arms"]:
            dtype = getattr(torch, name)
            arm = _arm(init, name)
            for method in METHODS:
                dynamics[f"{arm}/{depth}/{method}"] = layer_dynamics(
                    depth, dtype, method, dynamics_steps(depth), seed=seed, init=init
                )
            m = measure(
                depth,
                dtype,
                cap=cfg["caps"][depth],
                window=cfg["window"],
                grid=cfg["grid"],
                seed=seed,
                init=init,
                rtols=(RTOL, *EXTRA_RTOLS) if dtype == torch.float64 else (RTOL,),
            )
            measured[f"{arm}/{depth}"] = m
            row = {
                "init": init,
                "dtype": name,
                "depth": depth,
                "cap": m["cap"],
                "e_start": m["e_start"],
                "e_min": m["e_min"],
                "spc": m["methods"]["spc"]["best"][key],
                "epc": m["methods"]["epc"]["best"][key],
                "ratio": m["ratio"][key]["spc_over_epc"],
                "ratio_is_lower_bound": m["ratio"][key]["lower_bound"],
                "paper": PAPER_RATIO,
                "tighter": {
                    k: {
                        "spc": m["methods"]["spc"]["best"][k],
                        "epc": m["methods"]["epc"]["best"][k],
                        "ratio": v["spc_over_epc"],
                    }
                    for k, v in m["ratio"].items()
                    if k != key
                },
                "by_solver": {
                    k: {
                        "spc": v["spc"] and v["spc"]["steps"],
                        "epc": v["epc"] and v["epc"]["steps"],
                        "ratio": v["ratio"],
                    }
                    for k, v in m["by_solver"].items()
                },
                "first_move": {meth: dynamics[f"{arm}/{depth}/{meth}"]["first_move"] for meth in METHODS},
            }
            table.append(row)
            print(
                f"depth {depth:3d} {arm}: sPC {_fmt_steps(row['spc'])}, ePC "
                f"{_fmt_steps(row['epc'])}, ratio {_ratio_text(row)}  [{clock():.0f}s]",
                flush=True,
            )

    def ratio_at(depth: int, arm: str) -> float | None:
        return next((r["ratio"] for r in table if r["depth"] == depth and _arm(r["init"], r["dtype"]) == arm), None)

    targets = {}
    for init, name in cfg["arms"]:
        arm = _arm(init, name)
        ratios = [ratio_at(d, arm) for d in cfg["depths"]]
        r20 = ratio_at(20, arm)
        targets[arm] = {
            "ratio_at_depth_20": r20,
            "target_at_depth_20": TARGET_RATIO_20,
            "met_depth_20": bool(r20 is not None and r20 >= TARGET_RATIO_20),
            "ratios_by_depth": dict(zip(cfg["depths"], ratios)),
            "ratio_grows_with_depth": bool(
                all(a is not None and b is not None and b > a for a, b in zip(ratios, ratios[1:]))
            ),
            "spc_reaches_tolerance_every_depth": all(
                r["spc"] is not None for r in table if _arm(r["init"], r["dtype"]) == arm
            ),
            "paper": PAPER_RATIO,
        }
    first_move_checks = {}
    for k, d in dynamics.items():
        depth, method = int(k.split("/")[2]), k.split("/")[3]
        expect = d["expected_spc"] if method == "spc" else [1] * (depth - 1)
        first_move_checks[k] = {
            "expected": expect,
            "exactly_as_expected": d["first_move"] == expect,
            "never_before_expected": all(s is None or s >= e for s, e in zip(d["first_move"], expect)),
            "later_than_expected_layers": [
                l + 1 for l, (s, e) in enumerate(zip(d["first_move"], expect)) if s is not None and s > e
            ],
            "never_moved_layers": [l + 1 for l, s in enumerate(d["first_move"]) if s is None],
            "steps_recorded": len(d["update_rms"]),
        }
    figures = [_figure(out_dir, dynamics, table, 20 if 20 in cfg["depths"] else cfg["depths"][-1])]

    def family(r: dict) -> str:
        return "; ".join(f"{k} {v['spc']} vs {v['epc']}" for k, v in r["by_solver"].items())

    notes = [
        f"depth {r['depth']}, {r['init']} init, {r['dtype']}: sPC {_fmt_steps(r['spc'])}, "
        f"ePC {_fmt_steps(r['epc'])}; ratio {_ratio_text(r)} ({PAPER_RATIO}); per solver "
        f"family (sPC vs ePC steps): {family(r)}"
        for r in table
    ]
    notes += [
        f"{arm}: depth-20 ratio target >= {TARGET_RATIO_20:g}x "
        f"{'met' if t['met_depth_20'] else 'NOT met'}; ratio grows with depth: "
        f"{'yes' if t['ratio_grows_with_depth'] else 'no'}; sPC reaches the tolerance at "
        f"every depth: {'yes' if t['spc_reaches_tolerance_every_depth'] else 'no'}"
        for arm, t in targets.items()
    ]
    if not full:
        notes.append(
            "Default size: step caps "
            + ", ".join(f"{d}: {c}" for d, c in cfg["caps"].items())
            + f", stall window {cfg['window']}, "
            "grid without the smallest step size of each solver; --full uses caps 5000 "
            "(depth <= 20) and 10000 (depth 40), window 500 and the whole grid."
        )
    payload = common.result(
        "signal-decay",
        full=full,
        seed=seed,
        seconds=clock(),
        summary="sPC vs ePC on tanh MLPs of width 64 and depth 5-40 (random Gaussian batch of "
        "32): per-layer update size and first-move step, and steps to reach the "
        "lowest energy found within 1e-3 (relative), best solver per method",
        hyperparameters={
            "sizes": "[64] * (L + 1)",
            "activation": ACT,
            "width": WIDTH,
            "batch": BATCH,
            "data": "random Gaussian inputs and targets N(0, 1)",
            "init": "PyTorch default (seeded per depth); diagnostic arm: orthogonal weights, gain 1, default biases",
            "depths": cfg["depths"],
            "arms": [_arm(*a) for a in cfg["arms"]],
            "grid": cfg["grid"],
            "momentum": MOMENTUM,
            "caps": cfg["caps"],
            "stall_window": cfg["window"],
            "stall_rtol": {str(k).replace("torch.", ""): v for k, v in PLATEAU_RTOL.items()},
            "tolerance_rtol": RTOL,
            "extra_rtols_float64": list(EXTRA_RTOLS),
            "dynamics_solver": f"GradientDescent({DYNAMICS_LR})",
            "dynamics_steps": "max(3 L, 60)",
        },
        comparisons=[],
        figures=figures,
        data={
            "table": table,
            "targets": targets,
            "first_move_checks": first_move_checks,
            "dynamics": dynamics,
            "measured": measured,
        },
        notes=notes,
    )
    write_json(out_dir / "result.json", payload)
    return {
        "runtime_s": round(payload["runtime_s"], 1),
        "targets": targets,
        "table": [
            {
                "arm": _arm(r["init"], r["dtype"]),
                "depth": r["depth"],
                "ratio": r["ratio"],
                "spc_steps": r["spc"] and r["spc"]["steps"],
                "epc_steps": r["epc"] and r["epc"]["steps"],
            }
            for r in table
        ],
    }

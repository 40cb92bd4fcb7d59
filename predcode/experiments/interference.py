r"""Claim 4, interference (Song et al. 2024, Fig. 1): the 1-1-2 linear network.

Network ``x0 -> h -> (o1, o2)``, linear, no biases, every weight 1, input ``x0 = 1``; so
both outputs start at 1.  The target is ``(0, 1)``: only the first output is wrong.
Backprop lowers the shared weight ``w_h`` (and ``w_1``), so the *untargeted* output
``o2 = w_2 w_h`` dips before ``w_2`` catches up: interference.  In PC the output is clamped
and the hidden node relaxes to :math:`h^* = (w_h x_0 + w_2)/(1 + w_1^2 + w_2^2) = 2/3`
first; then every weight moves toward that prospective configuration, which raises
``w_2`` while it lowers ``w_h``, and ``o2`` barely moves.

Protocol (the paper's ``nature_target_alignment/base-112-lr``): T = 128 inference steps at
state rate 0.1, weight SGD with lr in {0.5, 0.1, 0.05, 0.01, 0.005}, 2048 iterations on the
single example.  Measured: the minimum of ``o2`` over training, per learning rate; the
headline is its mean ± std over the paper's learning-rate grid (the problem itself is
deterministic, so the spread is over learning rates).  The paper reports BP dipping to
about 0.76 and PC staying at or above 0.93.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import common, experiment
from .ensemble import Ensemble, check_against_library, make_model
from .verdict import Expectation

CLAIM = "interference: minimum of the untargeted output during learning"
EXPECTED = {CLAIM: Expectation()}
"""Written before the run: the paper's ordering, reproduced at T and at the equilibrium."""
RULES = ("il", "epc", "bp")

LRS = [0.5, 0.1, 0.05, 0.01, 0.005]
PAPER = {"bp": 0.76, "pc": 0.93}
SETTINGS = {"default": {"iterations": 2048, "T": 128}, "full": {"iterations": 2048, "T": 128}}


def simulate(lrs: list[float], iterations: int, steps: int, state_lr: float) -> dict[str, torch.Tensor]:
    """Outputs ``[iterations + 1, len(lrs), 2]`` of sPC (IL at ``steps``), PC at the exact
    equilibrium (``epc``) and BP, before every update."""
    runs = len(lrs)
    weights = [torch.ones(runs, 1, 1, dtype=torch.float64), torch.ones(runs, 2, 1, dtype=torch.float64)]
    x = torch.ones(1, 1, dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    lr = torch.tensor(lrs, dtype=torch.float64)
    out = {}
    for rule in RULES:
        net = Ensemble(weights, "identity")
        trace = [net.forward(x)[:, 0, :]]
        for _ in range(iterations):
            net.step(rule, x, y, lr, steps=steps, state_lr=state_lr)
            trace.append(net.forward(x)[:, 0, :])
        out[rule] = torch.stack(trace)
    return out


def library_check(steps: int, state_lr: float, iterations: int = 3) -> dict[str, float]:
    """Max relative weight difference between the engine and the library's rules on
    ``PCGraph(mlp([1, 1, 2], 'identity', bias=False, act_first=True))`` after a few steps."""
    lr = torch.tensor([0.1, 0.5], dtype=torch.float64)
    x = torch.ones(2, 1, 1, dtype=torch.float64)
    y = torch.tensor([0.0, 1.0], dtype=torch.float64).expand(2, 1, 2)
    checks = {}
    for rule in RULES:
        models = [make_model([1, 1, 2], "identity", 0, "default", torch.float64) for _ in range(2)]
        for m in models:
            for p in m.parameters():
                torch.nn.init.ones_(p)
        net = Ensemble.from_models(models, "identity")
        checks[rule] = check_against_library(
            net, models, rule, [(x, y)] * iterations, lr, steps=steps, state_lr=state_lr
        )
    return checks


@experiment(
    "interference", "Song et al. 2024: 1-1-2 linear net; BP's untargeted output dips (~0.76), PC's stays >= 0.93"
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("interference", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    steps, state_lr, iterations = cfg["T"], 0.1, cfg["iterations"]
    outputs = simulate(LRS, iterations, steps, state_lr)
    dip = {rule: outputs[rule][:, :, 1].min(0).values for rule in outputs}
    first_wrong = {rule: outputs[rule][:, :, 0] for rule in outputs}
    pc, bp = common.stats(dip["il"]), common.stats(dip["bp"])
    comparisons = [
        common.compare(
            CLAIM,
            "min o2 (higher = less interference), mean ± std over the lr grid",
            pc,
            bp,
            epc=common.stats(dip["epc"]),
            paper=PAPER,
            paper_order="pc<bp",
            lower_is_better=False,
            expected=EXPECTED[CLAIM],
            note="Deterministic problem: the spread is over the paper's 5 learning rates. BP's "
            "dip deepens with the learning rate (0.805 in the small-lr limit, 0.79 at lr 0.1, "
            "0.50 at lr 0.5); the paper's ~0.76 is a value inside that range. PC's minimum "
            "is 0.91-0.94 at every learning rate.",
        )
    ]
    checks = library_check(steps, state_lr)

    fig, axes = common.figure(3, 1, width=4.2)
    iters = torch.arange(iterations + 1)
    show = LRS.index(0.01)
    for rule in RULES:
        axes[0, 0].plot(iters, outputs[rule][:, show, 1], color=common.COLORS[rule], label=common.LABELS[rule])
        axes[0, 1].plot(iters, first_wrong[rule][:, show], color=common.COLORS[rule], label=common.LABELS[rule])
        axes[0, 2].plot(LRS, dip[rule], "o-", color=common.COLORS[rule], label=common.LABELS[rule])
    axes[0, 0].axhline(PAPER["bp"], color=common.COLORS["bp"], ls=":", lw=1, label="paper BP dip")
    axes[0, 0].axhline(PAPER["pc"], color=common.COLORS["pc"], ls=":", lw=1, label="paper PC min")
    for ax in axes[0, :2]:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, iterations)
    axes[0, 0].set(
        xlabel="iteration", ylabel="untargeted output o2", title=f"untargeted output (lr {LRS[show]})", ylim=(0.7, 1.02)
    )
    axes[0, 1].set(xlabel="iteration", ylabel="targeted output o1", title=f"targeted output -> 0 (lr {LRS[show]})")
    axes[0, 2].set(
        xscale="log",
        xlabel="weight learning rate",
        ylabel="min o2 over training",
        title="interference vs learning rate",
    )
    for ax in axes[0]:
        ax.legend(fontsize=7)
    figures = [common.save(fig, out_dir, "interference.png")]

    return job.finish(
        summary="1-1-2 linear net, weights 1, input 1, target (0, 1): minimum of the "
        "untargeted output over 2048 iterations",
        hyperparameters={
            "sizes": [1, 1, 2],
            "activation": "identity",
            "init": "all weights 1",
            "input": [1.0],
            "target": [0.0, 1.0],
            "T": steps,
            "state_lr": state_lr,
            "weight_optimizer": "SGD",
            "lrs": LRS,
            "iterations": iterations,
            "dtype": "float64",
            "engine": "predcode.experiments.ensemble",
        },
        comparisons=comparisons,
        figures=figures,
        data={
            "min_untargeted": {"pc": dip["il"], "epc": dip["epc"], "bp": dip["bp"], "lrs": LRS},
            "untargeted_trajectory_lr0.01": {
                "pc": outputs["il"][:, show, 1][::16],
                "epc": outputs["epc"][:, show, 1][::16],
                "bp": outputs["bp"][:, show, 1][::16],
                "every": 16,
            },
            "library_check_max_rel_weight_diff": checks,
        },
        notes=["--full is the same size (the problem is tiny)."],
    )

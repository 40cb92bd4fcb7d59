r"""Learnable precision: per-unit precision learned by the local rule
down-weights noisy output units and beats a fixed precision.

Task (a heteroscedastic reduced-rank regression).  Inputs :math:`x \in \mathbb R^{20}`,
:math:`x \sim \mathcal N(0, I)`; a fixed linear teacher of rank 2,
:math:`f(x) = B A x` with 10 outputs; targets :math:`y_j = f_j(x) + \sigma_j \varepsilon_j`
where units 0-4 are *clean* (:math:`\sigma = 0.3`) and units 5-9 are *noisy*
(:math:`\sigma = 3`): noise variances differing by 100x.  Few training examples (50), so
the noise of the noisy units, shared through the rank-2 bottleneck, spoils the fit.

Student: ``Linear(20, 2) -> Node -> Linear(2, 10) -> Node(Gaussian(...))`` trained by
inference learning (T steps of state gradient descent), weights and log-precisions by
one Adam optimizer on the energy's local gradients; for the output's log-precision that
is :math:`\partial E/\partial\log\pi_j = \tfrac12\,\mathrm{mean}_b(\pi_j e_{bj}^2 - 1)`,
which vanishes at :math:`\pi_j = 1/\mathrm{mean}_b e_{bj}^2`.  Four arms from the same
initial weights and data: ``fixed`` (:math:`\pi = 1`), ``scalar`` (one learnable
precision), ``units`` (one learnable precision per unit) and ``oracle`` (fixed at the true
:math:`1/\sigma_j^2`).  Measured on 2000 test inputs: the mean squared error of the
prediction against the noise-free teacher :math:`f(x)`, on clean and noisy units, and the
learned precisions against :math:`1/\sigma_j^2`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import Gaussian, GradientDescent, InferenceLearning, Node, PCGraph
from . import common, experiment

D, K, H = 20, 10, 2
SIGMA_CLEAN, SIGMA_NOISY = 0.3, 3.0
ARMS = ("fixed", "scalar", "units", "oracle")
SETTINGS = {
    "default": {"seeds": 3, "iterations": 1500, "n_train": 50},
    "full": {"seeds": 10, "iterations": 3000, "n_train": 50},
}
T, STATE_LR, LR = 10, 0.05, 1e-2


def sigmas() -> torch.Tensor:
    """Per-unit noise standard deviations (units 0-4 clean, 5-9 noisy)."""
    return torch.tensor([SIGMA_CLEAN] * (K // 2) + [SIGMA_NOISY] * (K - K // 2))


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, f(x))``: inputs, noisy targets and noise-free teacher outputs."""
    g = torch.Generator().manual_seed(1234)  # the teacher is the same for every split
    a = torch.randn(H, D, generator=g) / math.sqrt(D)
    b = torch.randn(K, H, generator=g)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    f = x @ a.T @ b.T
    return x, f + sigmas() * torch.randn(n, K, generator=g), f


def make_model(arm: str, seed: int) -> nn.Sequential:
    """The student with the output energy of ``arm``; weights drawn from ``seed`` only."""
    if arm == "fixed":
        energy = Gaussian()
    elif arm == "scalar":
        energy = Gaussian(learnable=True)
    elif arm == "units":
        energy = Gaussian(learnable=True, units=K)
    elif arm == "oracle":
        energy = Gaussian(units=K)
        with torch.no_grad():
            energy.log_precision.copy_(-2 * sigmas().log())
    else:
        raise ValueError(arm)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, H), Node(), nn.Linear(H, K), Node(energy))


def train_arm(
    arm: str, seed: int, iterations: int, x: torch.Tensor, y: torch.Tensor
) -> tuple[nn.Sequential, list[list[float]]]:
    """Full-batch inference learning; returns the model and the learned per-unit precisions
    over training (one list of ``K`` precisions per logged iteration)."""
    model = make_model(arm, seed)
    graph = PCGraph(model)
    rule = InferenceLearning(GradientDescent(STATE_LR), stop=T)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    output = model[-1]
    assert isinstance(output, Node) and isinstance(output.energy, Gaussian)  # make_model's output node
    energy = output.energy
    history: list[list[float]] = []
    for it in range(iterations):
        rule.step(graph, x, y, opt)
        if it % 50 == 0 or it == iterations - 1:
            history.append(energy.precision.detach().expand(K).tolist())
    return model, history


@experiment(
    "precision",
    "Learnable per-unit precision (local rule) on a regression with 100x "
    "unequal noise: lower clean-unit error than fixed precision; learned ~ 1/sigma^2",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("precision", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    x, y, _ = make_data(cfg["n_train"], 1 + 1000 * seed)
    x_test, _, f_test = make_data(2000, 2 + 1000 * seed)
    clean, noisy = slice(0, K // 2), slice(K // 2, K)
    mse: dict[str, dict[str, list[float]]] = {arm: {"clean": [], "noisy": []} for arm in ARMS}
    precisions: dict[str, list[list[float]]] = {}
    histories: dict[str, list[list[float]]] = {}
    for arm in ARMS:
        precisions[arm] = []
        for s in range(cfg["seeds"]):
            model, history = train_arm(arm, seed * 100 + s, cfg["iterations"], x, y)
            with torch.no_grad():
                err = ((model(x_test) - f_test) ** 2).mean(0)
            mse[arm]["clean"].append(float(err[clean].mean()))
            mse[arm]["noisy"].append(float(err[noisy].mean()))
            precisions[arm].append(history[-1])
            if s == 0:
                histories[arm] = history
    summary = {arm: {k: common.stats(v) for k, v in mse[arm].items()} for arm in ARMS}
    true = (1 / sigmas() ** 2).tolist()
    learned = np.asarray(precisions["units"])  # [seeds, K]
    log_ratio = np.log(learned / np.asarray(true))
    recovery = {
        "true": true,
        "learned_mean": learned.mean(0).tolist(),
        "learned_per_seed": learned.tolist(),
        "mean_abs_log_ratio": float(np.abs(log_ratio).mean()),
        "clean_over_noisy_ratio": float(learned[:, clean].mean() / learned[:, noisy].mean()),
        "true_clean_over_noisy_ratio": SIGMA_NOISY**2 / SIGMA_CLEAN**2,
    }
    headline = {
        "clean_mse_fixed": summary["fixed"]["clean"]["mean"],
        "clean_mse_scalar": summary["scalar"]["clean"]["mean"],
        "clean_mse_units": summary["units"]["clean"]["mean"],
        "clean_mse_oracle": summary["oracle"]["clean"]["mean"],
        "units_beats_fixed_every_seed": bool(all(u < f for u, f in zip(mse["units"]["clean"], mse["fixed"]["clean"]))),
        "learned_clean_over_noisy_precision": recovery["clean_over_noisy_ratio"],
    }
    figures = [_figure(out_dir, summary, recovery, histories, true)]
    payload = {
        **job.header(),
        "runtime_s": job.clock(),
        "environment": common.environment(),
        "task": {
            "D": D,
            "K": K,
            "rank": H,
            "sigma_clean": SIGMA_CLEAN,
            "sigma_noisy": SIGMA_NOISY,
            "n_train": cfg["n_train"],
            "n_test": 2000,
        },
        "hyperparameters": {
            "rule": "InferenceLearning",
            "solver": f"GradientDescent({STATE_LR})",
            "T": T,
            "optimizer": f"Adam(lr={LR}) on weights and log-precisions",
            "iterations": cfg["iterations"],
            "batch": "full",
            "seeds": cfg["seeds"],
        },
        "headline": headline,
        "test_mse_vs_noise_free": summary,
        "precision_recovery": recovery,
        "figures": figures,
    }
    common.write_json(out_dir / "result.json", payload)
    return {"runtime_s": round(job.clock(), 1), "headline": headline}


def _figure(out_dir: Path, summary: dict, recovery: dict, histories: dict, true: list) -> str:
    fig, axes = common.figure(ncols=3)
    ax = axes[0, 0]
    pos = np.arange(len(ARMS))
    for k, (part, color) in enumerate((("clean", "#1f77b4"), ("noisy", "#d62728"))):
        means = [summary[a][part]["mean"] for a in ARMS]
        stds = [summary[a][part]["std"] for a in ARMS]
        ax.bar(pos + (k - 0.5) * 0.38, means, 0.38, yerr=stds, color=color, label=f"{part} units")
    ax.set_xticks(pos, ARMS)
    ax.set_yscale("log")
    ax.set_ylabel("test MSE vs noise-free f(x)")
    ax.set_title("error by output precision")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    units = np.arange(len(true))
    ax.semilogy(units, true, "k_", ms=18, mew=2, label="true 1/sigma^2")
    for row in recovery["learned_per_seed"]:
        ax.semilogy(units, row, "o", color="#1f77b4", alpha=0.5)
    ax.set_xlabel("output unit (0-4 clean, 5-9 noisy)")
    ax.set_ylabel("precision")
    ax.set_title("learned per-unit precision")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    h = np.asarray(histories["units"])
    steps = np.arange(len(h)) * 50
    for j in range(h.shape[1]):
        ax.semilogy(steps, h[:, j], color="#1f77b4" if j < K // 2 else "#d62728", lw=1)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("precision")
    ax.set_title("per-unit precision during training")
    return common.save(fig, out_dir, "precision.png")

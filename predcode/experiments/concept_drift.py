r"""Claim 9, concept drift (Song et al. 2024, Fig. 5): when the mapping from inputs to labels
keeps changing, PC re-learns faster than BP and so has a lower error on average.

Protocol (the paper's ``nature_concept_drift/base``): a 784-32-32-10 sigmoid net (no biases,
squared-error output) is first trained on all of Fashion-MNIST by backprop with Adam (lr
1e-3, batch 60).  Then, from those weights, PC (T = 128 inference steps at rate 0.1) and BP
train with SGD at batch 32 on 120 images per class while the labels drift: every
``period`` epochs the labels of classes 5-9 are permuted among themselves (classes 0-4 keep
theirs) and a fresh 120-per-class training set and 100-per-class test set are drawn.  The
test error under the current mapping is measured after every epoch; the metric is its
**mean over training**.  A second number, the error in the first epoch after each change,
measures how fast each rule re-learns.  The paper (period 64 epochs, 3000 epochs, 64 pre-training epochs)
reports PC about 0.29 vs BP 0.40.

The default run is shorter: pre-training for 4 epochs, a drift every 16 epochs, 12 drifts
(192 epochs); ``--full`` is the paper's 64 / 64 / 3000.  The drift sequence (mappings and
subsets) is drawn from the experiment seed and shared by all runs; the seeds of the
paired runs set the pre-training initialisation and the batch order.  Learning rates: one
grid for both rules (batch-mean units: the paper's ``{0.1, ..., 0.001}`` times 32), chosen
per rule on a fixed validation split (100 per class, current mapping).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from . import common, experiment
from .ensemble import Ensemble, make_model
from ..graph import PCGraph
from ..rules import Backprop

SIZES, ACT = [784, 32, 32, 10], "sigmoid"
GRID = [0.16, 0.32, 0.8, 1.6, 3.2]
PAPER = {"pc": 0.29, "bp": 0.40}
REASONS = {
    "concept drift, Fashion-MNIST 120/class, labels of 5 classes re-permuted": (
        "our errors are far lower than the paper's for both rules and the means tie. After "
        "every change PC's error is lower (first epoch after a drift: see the next row), "
        "but between changes BP settles slightly lower (0.167 vs 0.176 in the last half of "
        "each period), and over 16-epoch periods the two balance. Differences from the "
        "paper's run: 12 drifts every 16 epochs after 4 pre-training epochs (paper: every "
        "64 for 3000 epochs after 64); the paper's code re-creates its data loaders at every "
        "drift without its target_min argument, so after the first drift (at iteration 0) it "
        "trains on {-1, +1} targets instead of the {0, 1} of pre-training (our targets stay "
        "{0, 1}); and its trainer halves the state rate when the energy rises. We did not "
        "find which of these makes the paper's errors 0.29/0.40."),
}
SETTINGS = {"default": {"seeds": 3, "pretrain_epochs": 4, "period": 16, "periods": 12,
                        "grid": GRID, "T": 128, "train_per_class": 120, "test_per_class": 100,
                        "pretrain_per_class": None},
            "full": {"seeds": 3, "pretrain_epochs": 64, "period": 64, "periods": 47,
                     "grid": GRID, "T": 128, "train_per_class": 120, "test_per_class": 100,
                     "pretrain_per_class": None}}


def pretrain(seed: int, train: common.Split, epochs: int, batch: int = 60, lr: float = 1e-3):
    """Backprop with Adam on the library model (``PCGraph`` + :class:`~predcode.rules.Backprop`)."""
    model = make_model(SIZES, ACT, seed, "xavier_uniform")
    graph = PCGraph(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rule = Backprop()
    targets = train.onehot()
    stream = common.BatchStream(len(train), batch, [seed])
    for epoch in range(epochs):
        for idx in stream.epoch(epoch):
            rule.step(graph, train.x[idx[0]], targets[idx[0]], optimizer)
    return model


def first_epoch_after_drift(curves: Tensor, period: int) -> Tensor:
    """Mean test error, per seed, in the first epoch after every drift (the start excluded):
    how fast a rule re-learns.  ``curves`` is ``[seeds, epochs]``."""
    return torch.as_tensor(curves)[:, period::period].mean(1)


def drift_mapping(seed: int, period: int) -> Tensor:
    """Labels 0-4 fixed, 5-9 permuted among themselves (a fresh permutation per period)."""
    g = torch.Generator().manual_seed(seed * 1009 + period)
    return torch.cat([torch.arange(5), 5 + torch.randperm(5, generator=g)])


def drift(models, rule: str, seeds: list[int], lrs: list[float], pool: common.Split,
          val: common.Split, test_all: common.Split, *, periods: int, period: int,
          data_seed: int, batch: int = 32, steps: int = 128, state_lr: float = 0.1,
          train_per_class: int = 120, test_per_class: int = 100) -> dict:
    """Train an ensemble (seed-major over ``lrs``) through ``periods`` drifts."""
    grid = common.Grid(seeds, lrs)
    net = Ensemble.from_models([models[s] for s in grid.seed_of_run], ACT)
    lr = grid.lr_tensor()
    val_err, test_err = [], []
    epoch = 0
    for p in range(periods):
        mapping = drift_mapping(data_seed, p)
        train, _ = common.per_class_subset(pool, train_per_class, seed=data_seed * 1013 + p)
        test, _ = common.per_class_subset(test_all, test_per_class, seed=data_seed * 1019 + p)
        targets = torch.nn.functional.one_hot(mapping[train.y], 10).float()
        stream = common.BatchStream(len(train), batch, grid.seed_of_run)
        for _ in range(period):
            for idx in stream.epoch(epoch):
                net.step(rule, train.x[idx], targets[idx], lr, steps=steps, state_lr=state_lr)
            epoch += 1
            val_err.append(net.error_rate(val.x, mapping[val.y]))
            test_err.append(net.error_rate(test.x, mapping[test.y]))
    return {"val": torch.stack(val_err, 1), "test": torch.stack(test_err, 1),
            "diverged": int((~net.finite()).sum()), "grid": grid}


@experiment("concept-drift", "Song et al. 2024: Fashion-MNIST with drifting labels (classes "
            "5-9 re-permuted periodically); mean test error, PC vs BP")
def run(out_dir: Path, full: bool, seed: int) -> dict:
    common.setup()
    clock = common.Clock()
    cfg = SETTINGS["full" if full else "default"]
    seeds = [seed + k for k in range(cfg["seeds"])]
    pre_epochs, period, periods = cfg["pretrain_epochs"], cfg["period"], cfg["periods"]
    grid_lrs = cfg["grid"]
    full_train = common.load("fashion-mnist", "train")
    val, val_index = common.per_class_subset(full_train, 100, seed=seed + 7)
    pool, _ = common.per_class_subset(full_train, None, seed=seed, exclude=val_index)
    test_all = common.load("fashion-mnist", "test")
    pre_data = common.per_class_subset(pool, cfg["pretrain_per_class"], seed=seed)[0]
    models = {s: pretrain(s, pre_data, pre_epochs) for s in seeds}
    pre_error = {s: float(Ensemble.from_models([m], ACT).error_rate(test_all.x, test_all.y)[0])
                 for s, m in models.items()}
    pre_seconds = clock()
    results: dict = {}
    for rule in ("il", "bp"):
        res = drift(models, rule, seeds, grid_lrs, pool, val, test_all, periods=periods,
                    period=period, data_seed=seed, steps=cfg["T"],
                    train_per_class=cfg["train_per_class"], test_per_class=cfg["test_per_class"])
        grid = res["grid"]
        val_metric, test_metric = res["val"].mean(1), res["test"].mean(1)
        best = common.select_lr(val_metric, grid)
        results[rule] = {"best_lr": grid_lrs[best],
                         "best_at_grid_edge": best in (0, len(grid_lrs) - 1),
                         "test": common.stats(grid.table(test_metric)[:, best]),
                         "per_lr_test": common.per_lr_stats(test_metric, grid),
                         "per_lr_val": common.per_lr_stats(val_metric, grid),
                         "curves_best": res["test"].reshape(len(seeds), len(grid_lrs), -1)[:, best],
                         "diverged_runs": res["diverged"]}
    epochs = period * periods
    comparisons = [common.compare(
        "concept drift, Fashion-MNIST 120/class, labels of 5 classes re-permuted",
        f"mean test error over {epochs} epochs (drift every {period})",
        results["il"]["test"], results["bp"]["test"], paper=PAPER, paper_order="pc<bp",
        note=f"best lr: PC {results['il']['best_lr']}, BP {results['bp']['best_lr']} "
             "(batch-mean units; paper's = ours / 32)"
             + ("" if full else f"; default run drifts every {period} epochs for {epochs} "
                "epochs (paper: every 64 for 3000) after 4 (paper 64) pre-training epochs"))]
    relearn = {r: common.stats(first_epoch_after_drift(results[r]["curves_best"], period))
               for r in ("il", "bp")}
    if periods > 1:
        comparisons.append(common.compare(
            "concept drift: re-learning, first epoch after each drift",
            "test error in the epoch right after a mapping change (same runs)", relearn["il"],
            relearn["bp"], paper=None, paper_order="pc<bp",
            note="no number in the paper; it shows PC re-learning faster after each change"))
    check = common.library_check(SIZES, ACT, "il", pool, lr=0.32, steps=cfg["T"], state_lr=0.1,
                                 batch=2)

    fig, axes = common.figure(1, 1, width=9.0, height=3.4)
    ax = axes[0, 0]
    x = torch.arange(1, epochs + 1)
    for rule in ("il", "bp"):
        r = results[rule]
        common.band(ax, x, r["curves_best"], rule, label=f"{common.LABELS[rule]} (lr {r['best_lr']})")
    for p in range(1, periods):
        ax.axvline(p * period + 0.5, color="gray", lw=0.5, alpha=0.5)
    ax.set(xlabel="epoch (vertical lines: label mapping changes)", ylabel="test error",
           title="concept drift", ylim=(0, 0.8))
    ax.legend(fontsize=8)
    figures = [common.save(fig, out_dir, "concept_drift.png")]

    payload = common.result(
        "concept-drift", full=full, seed=seed, seconds=clock(),
        summary="mean test error while the labels of 5 classes are re-permuted periodically",
        hyperparameters={"sizes": SIZES, "activation": ACT, "bias": False,
                         "init": "xavier_uniform", "inputs": "[0, 1]",
                         "pretraining": {"rule": "Backprop (library)", "optimizer": "Adam",
                                         "lr": 1e-3, "batch": 60, "epochs": pre_epochs,
                                         "images": len(pre_data)},
                         "per_class_train": cfg["train_per_class"],
                         "per_class_test": cfg["test_per_class"], "batch": 32,
                         "drift_period_epochs": period, "drifts": periods, "epochs": epochs,
                         "T": cfg["T"], "state_lr": 0.1, "lr_grid": grid_lrs,
                         "weight_optimizer": "SGD on the batch-mean loss", "seeds": seeds,
                         "selection": "mean-over-seeds validation metric",
                         "engine": "predcode.experiments.ensemble"},
        comparisons=comparisons, figures=figures,
        data={"pretrained_test_error": pre_error, "pretraining_seconds": pre_seconds,
              **{("pc" if r == "il" else "bp"): v for r, v in results.items()},
              "library_check_max_rel_weight_diff": check})
    return common.finish(out_dir, payload)

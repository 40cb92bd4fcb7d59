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

The paper's protocol (``predcode repro concept-drift --protocol paper``, written to
``results/concept-drift-paper/``).  Read in github.com/YuhangSong/Prospective-Configuration
(``experiments/nature_concept_drift/base.yaml``, "base"; ``.../pre-FashionMNIST.yaml``,
"pre"; ``predictive_coding/predictive_coding/pc_trainer.py``, "trainer"):

* pre-training (pre): backprop (``predictive_coding: False``, T = 1; pre 78, 92), SGD at lr
  0.01 on the *summed* loss (pre 87-90; = 0.6 on the batch mean), batch 60 (pre 64), 64
  epochs (pre 14) on all training images (``partial_num`` 6000, pre 20), targets in
  {-1, +1} (``target_min=-1.0``, pre 46), Xavier-uniform (pre 128), one network (one seed,
  pre 18) saved as ``pre_model-FashionMNIST-2.pth`` (pre 162-164) and loaded by every run
  (base 191-194).  At that rate the first steps diverge (the output layer's curvature is
  about 32 x 0.25 per sample) and the net recovers with most sigmoids saturated: the
  checkpoint in the paper's repository has test error 0.42, outputs near -0.9 off the
  target (so it was trained on {-1, +1}), and 82 % of its first-layer units below 0.02 or
  above 0.98 on test images (we loaded it to measure this; it is not part of predcode).
  Our run of the same recipe (seed 0, 64 epochs, 101 s) ends at test error 0.217 with 86 %
  saturated.
* drift (base): 784-32-32-10 sigmoid, no bias (128-147), batch 32 (210), 120 training
  images per class (31), T = 128 with the weights at the last step (119, 107: 127 state
  steps), state SGD at 0.1 (103-104) with ``x_lr_discount: 0.5`` (105; trainer 811-844:
  the rate halves after a step whenever the batch's overall energy did not fall, and is
  reset every batch), weight SGD at ``{0.1, 0.05, 0.01, 0.005, 0.001}`` on the summed loss
  (109-117; :data:`PAPER_GRID` here, times 32), 3000 epochs (21), 3 seeds (25-29).
* the drift: ``learn_code`` checks ``self._iteration % 64 == 0`` after *every batch* (230)
  and then re-creates both loaders with a fresh ``np.random.shuffle`` of labels 5-9
  (232-236), a fresh 120-per-class training set and a 100-per-class test set (238-246), so
  the drift lands inside epochs 0, 64, 128, ...: that epoch's test already uses the new
  mapping (:func:`paper_schedule`).  The re-created loaders do not pass ``target_min``, so
  they take ``data_loader_fn``'s default -1.0 (38): from epoch 1 on the targets are
  {-1, +1}; epoch 0 trains on the configured 0.0 (214, 74-93).
* metric: ``df['test__classification_error'].mean()`` over the 3000 epochs (README.md,
  "mean (nature)", Fig. 4g), per learning rate; the paper's 0.29 / 0.40 are both at lr
  0.01, the best for each rule (its figure; README.md's curve command also uses 0.01).
  Test errors are the mean over test batches of 32 (``DatasetLearningTrainable.step``
  averages per batch); here the rate over all 1000 images (the last batch of 8 weighs the
  same there).

Differences that remain in our paper protocol: the pre-trained net is our run of the
paper's recipe (from the experiment seed), not the paper's checkpoint; the drift sequence
(mappings) is drawn per seed as in the paper but the training and test subsets of each
drift are shared by the seeds; learning rates are chosen on a validation split (recorded
beside the test-selected number); the default run is 192 epochs (3 drifts) on the paper's
three middle learning rates, 5 seeds (``--full``: 3000 epochs, its whole grid and ePC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor

from ..graph import PCGraph
from ..rules import Backprop
from . import common, experiment
from . import paper_protocol as pp
from .ensemble import RULES as ENGINE_RULES
from .ensemble import Ensemble, make_model
from .verdict import DIRECTION_ONLY, Expectation

SIZES, ACT = [784, 32, 32, 10], "sigmoid"
GRID = [0.16, 0.32, 0.8, 1.6, 3.2]
PAPER = {"pc": 0.29, "bp": 0.40}
REASONS = {
    "concept drift, Fashion-MNIST 120/class, labels of 5 classes re-permuted": (
        "our errors are far lower than the paper's for both rules and the means tie (ePC "
        "too). What makes the paper's errors high is its pre-trained network, found with "
        "`--protocol paper` (results/concept-drift-paper): the paper's recipe (SGD at its lr "
        "0.01 on the summed loss, {-1, +1} targets) diverges in its first steps and leaves "
        "most sigmoids saturated (our run: test error 0.217, 86 % of first-layer units "
        "saturated; the checkpoint in the paper's repository: 0.42, 82 %). Under the paper's "
        "protocol at lr 0.32, 5 seeds, 192 epochs, switching only the pre-training to ours "
        "takes both rules from 0.310 / 0.289 (PC / BP) to 0.180 / 0.178, our protocol's "
        "level. Between drifts BP settles slightly lower than PC (0.167 vs 0.176 in the last half "
        "of each period), after a drift PC recovers faster (next row), and over 16-epoch "
        "periods the two balance."
    ),
    "concept drift, the paper's protocol": (
        "192 epochs (3 drifts; the paper ran 3000). The error level matches the paper's "
        "(PC 0.31 vs its 0.29) and comes from its pre-training (see the row above: with our "
        "pre-training both rules fall to 0.18). The ordering does not: over these epochs BP "
        "is lower than PC. One difference at a time, at lr 0.32 (PC / BP): the paper "
        "protocol 0.310 / 0.289; targets {0, 1} after the first drift instead of {-1, +1} "
        "0.287 / 0.297 (PC ahead); no state-rate cut 0.327 / 0.289 (the cut helps PC by "
        "0.017); our pre-training 0.180 / 0.178; a drift every 16 epochs 0.342 / 0.324 (5 "
        "seeds each, std 0.02-0.04, 0.004 with our pre-training). In the last of the three "
        "periods PC closes the gap (both about 0.25 by epoch 192). The paper's own curve "
        "(its Fig. 4f data, "
        "experiments/nature_concept_drift/curve-.png) has the two rules level for the first "
        "few hundred epochs; PC's advantage builds up over 3000 epochs while BP stays near "
        "0.4, so a 192-epoch run cannot show it; `--full` (3000 epochs) is the test, about "
        "4-5 h on one core."
    ),
}


class Settings(TypedDict):
    """Seeds, pre-training epochs, epochs between drifts (``period``) and drifts
    (``periods``), the learning-rate grid, the relaxation steps ``T``, and training, test and
    pre-training images per class (None: all)."""

    seeds: int
    pretrain_epochs: int
    period: int
    periods: int
    grid: list[float]
    T: int
    train_per_class: int
    test_per_class: int
    pretrain_per_class: int | None


SETTINGS: dict[str, Settings] = {
    "default": {
        "seeds": 5,
        "pretrain_epochs": 4,
        "period": 16,
        "periods": 12,
        "grid": GRID,
        "T": 128,
        "train_per_class": 120,
        "test_per_class": 100,
        "pretrain_per_class": None,
    },
    "full": {
        "seeds": 3,
        "pretrain_epochs": 64,
        "period": 64,
        "periods": 47,
        "grid": GRID,
        "T": 128,
        "train_per_class": 120,
        "test_per_class": 100,
        "pretrain_per_class": None,
    },
}


CLAIM = "concept drift, Fashion-MNIST 120/class, labels of 5 classes re-permuted"
CLAIM_RELEARN = "concept drift: re-learning, first epoch after each drift"
CLAIM_PAPER = "concept drift, the paper's protocol"
EXPECTED = {
    CLAIM: Expectation(
        spc=DIRECTION_ONLY,
        epc=DIRECTION_ONLY,
        history="set after the 3-seed run (PC 0.191 +- 0.012, BP 0.193 +- 0.012)",
    ),
    CLAIM_RELEARN: Expectation(
        spc=DIRECTION_ONLY, epc=DIRECTION_ONLY, history="set after the 3-seed run (PC 0.29, BP 0.35)"
    ),
    CLAIM_PAPER: Expectation(
        spc=DIRECTION_ONLY, epc=DIRECTION_ONLY, history="written before the first paper-protocol run"
    ),
}


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


def drift(
    models,
    rule: str,
    seeds: list[int],
    lrs: list[float],
    pool: common.Split,
    val: common.Split,
    test_all: common.Split,
    *,
    periods: int,
    period: int,
    data_seed: int,
    batch: int = 32,
    steps: int = 128,
    state_lr: float = 0.1,
    train_per_class: int = 120,
    test_per_class: int = 100,
) -> dict:
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
    return {
        "val": torch.stack(val_err, 1),
        "test": torch.stack(test_err, 1),
        "diverged": int((~net.finite()).sum()),
        "grid": grid,
    }


# -- the paper's own protocol (``--protocol paper``) --------------------------------------
PAPER_GRID = [0.032, 0.16, 0.32, 1.6, 3.2]
"""The paper's ``{0.001, 0.005, 0.01, 0.05, 0.1}`` (summed loss) times batch 32."""


@dataclass(frozen=True)
class PaperSetup:
    """One version of the paper's protocol; :data:`PAPER_VARIANTS` turns one difference
    from ours off at a time.

    Args:
        pretrain: ``"paper"``: one network for every run, trained by backprop with SGD
            (summed-loss lr 0.01 at batch 60 = 0.6 here) for 64 epochs on all training
            images with targets in {-1, +1}; ``"ours"``: one network per seed, Adam (lr
            1e-3, batch 60) for 4 epochs with targets in {0, 1} (our default).
        low_target: the off value of the one-hot targets after the first drift (the
            paper's data loaders, re-created at every drift without ``target_min``, fall
            back to -1; the first epoch uses the configured 0).
        discount: the state-rate factor when the energy does not fall (the paper: 0.5).
        steps: state steps before the weight update (the paper's T = 128: 127).
        period: epochs between drifts.
    """

    pretrain: str = "paper"
    low_target: float = -1.0
    discount: float = 0.5
    steps: int = 127
    period: int = 64


PAPER_VARIANTS = {
    "paper": PaperSetup(),
    "targets {0, 1}": PaperSetup(low_target=0.0),
    "our pre-training": PaperSetup(pretrain="ours"),
    "no rate cut": PaperSetup(discount=1.0),
    "drift every 16": PaperSetup(period=16),
}


class PaperSettings(TypedDict):
    """The paper-protocol run: seeds, training epochs, the learning-rate grid, the rate of
    the variants' runs, the protocol variants, pre-training epochs, runs trained at a time
    (``chunk``) and the rules."""

    seeds: int
    epochs: int
    grid: list[float]
    ablation_lr: float
    variants: list[str]
    pretrain_epochs: int
    chunk: int
    rules: Sequence[str]


PAPER_SETTINGS: dict[str, PaperSettings] = {
    "default": {
        "seeds": 5,
        "epochs": 192,
        "grid": [0.16, 0.32, 1.6],
        "ablation_lr": 0.32,
        "variants": list(PAPER_VARIANTS),
        "pretrain_epochs": 64,
        "chunk": 15,
        "rules": ("il", "bp"),
    },
    "full": {
        "seeds": 5,
        "epochs": 3000,
        "grid": PAPER_GRID,
        "ablation_lr": 0.32,
        "variants": list(PAPER_VARIANTS),
        "pretrain_epochs": 64,
        "chunk": 25,
        "rules": ("il", "bp", "epc"),
    },
}
"""The default run: 3 drifts (192 epochs) on the paper's three middle learning rates (its
0.001 and 0.1 were far worse for both rules in its Fig. 5 data); ``--full``: 3000 epochs on
its whole grid, with ePC."""


def pretrain_paper(seed: int, train: common.Split, epochs: int, batch: int = 60, lr: float = 0.6) -> torch.nn.Module:
    """The paper's pre-training (``pre-FashionMNIST.yaml``): backprop, SGD at summed-loss
    lr 0.01 (= 0.6 on the batch mean), batch 60, targets in {-1, +1}, Xavier-uniform."""
    model = make_model(SIZES, ACT, seed, "xavier_uniform")
    net = Ensemble.from_models([model], ACT)
    targets = pp.signed_onehot(train.y, 10, -1.0)
    stream = common.BatchStream(len(train), batch, [seed])
    rate = torch.tensor([lr])
    for epoch in range(epochs):
        for idx in stream.epoch(epoch):
            pp.step(net, "bp", train.x[idx], targets[idx], rate, steps=0, state_lr=0.0, full_batch=batch)
    return net.load_into(model, 0)


def paper_schedule(epoch: int, period: int, low_target: float) -> tuple[int, int, float]:
    """``(k_train, k_test, low)`` of an epoch under the paper's drift loop: the mapping (and
    training set) index it trains on, the one its test after training uses, and the off
    value of its targets.  The paper's ``learn_code`` re-creates the loaders whenever
    ``iteration % period == 0`` *during* that epoch's training, so the drift lands after
    epochs 0, period, 2 period, ...; the first epoch still has the configured
    ``target_min = 0``, later ones the loader default -1."""
    return math.ceil(epoch / period), epoch // period + 1, (0.0 if epoch == 0 else low_target)


def drift_paper(
    models: list,
    rule: str,
    seeds_of_run: list[int],
    lr: Tensor,
    pool: common.Split,
    val: common.Split,
    test_all: common.Split,
    setup: PaperSetup,
    *,
    epochs: int,
    data_seed: int,
    batch: int = 32,
    state_lr: float = 0.1,
) -> dict:
    """The paper's drift loop (module doc) for the runs given (one model, seed and lr each).

    Epoch ``e`` trains on mapping ``m_k``, ``k = ceil(e / period)`` (``m_0`` = identity), on
    the ``k``-th 120-per-class training set; the drift at the end of epochs 0, period,
    2 period, ... switches mapping, training set and the 100-per-class test set before that
    epoch's test, as the paper's loaders are swapped inside the epoch's training loop."""
    net = Ensemble.from_models(models, ACT)
    runs = len(seeds_of_run)
    period = setup.period

    def mapping(k: int) -> Tensor:  # [R, 10]
        if k == 0:
            return torch.arange(10).expand(runs, 10)
        return torch.stack([drift_mapping(s, k) for s in seeds_of_run])

    train_sets: dict[int, common.Split] = {}
    test_sets: dict[int, common.Split] = {}
    val_err, test_err = [], []
    cuts, relaxations = 0, 0
    for e in range(epochs):
        k, kt, low = paper_schedule(e, period, setup.low_target)
        if k not in train_sets:
            train_sets[k] = common.per_class_subset(pool, 120, seed=data_seed * 1013 + k)[0]
        train = train_sets[k]
        targets = pp.signed_onehot(mapping(k)[:, train.y], 10, low)
        stream = common.BatchStream(len(train), batch, seeds_of_run)
        for idx in stream.epoch(e):
            r = pp.step(
                net,
                rule,
                train.x[idx],
                pp.gather_rows(targets, idx),
                lr,
                steps=setup.steps,
                state_lr=state_lr,
                discount=setup.discount,
                full_batch=batch,
            )
            if r is not None:
                cuts += int(r.cuts.sum())
                relaxations += r.cuts.numel()
        if kt not in test_sets:
            test_sets[kt] = common.per_class_subset(test_all, 100, seed=data_seed * 1019 + kt)[0]
        test, m = test_sets[kt], mapping(kt)
        test_err.append(pp.error_rate(net, test.x, m[:, test.y]))
        val_err.append(pp.error_rate(net, val.x, m[:, val.y]))
    return {
        "val": torch.stack(val_err, 1),
        "test": torch.stack(test_err, 1),
        "diverged": int((~net.finite()).sum()),
        "rate_cuts_per_relaxation": cuts / max(relaxations, 1),
    }


def run_paper(out_dir: Path, full: bool, seed: int) -> dict:
    """``predcode repro concept-drift --protocol paper``: the paper's protocol on the paper's
    grid, then one run per difference from ours switched off (:data:`PAPER_VARIANTS`) at
    the paper's best learning rate for both rules."""
    job = common.Job("concept-drift", out_dir, full, seed, " --protocol paper")
    cfg = PAPER_SETTINGS["full" if full else "default"]
    seeds = job.seeds(cfg["seeds"])
    epochs = cfg["epochs"]
    pool, val, test_all = common.splits("fashion-mnist", 100, seed)
    shared = pretrain_paper(seed, pool, cfg["pretrain_epochs"])
    pre_error: dict[str, float | dict[int, float]] = {
        "paper": float(Ensemble.from_models([shared], ACT).error_rate(test_all.x, test_all.y)[0])
    }
    ours_models = {s: pretrain(s, pool, 4) for s in seeds}
    pre_error["ours"] = {
        s: float(Ensemble.from_models([m], ACT).error_rate(test_all.x, test_all.y)[0]) for s, m in ours_models.items()
    }
    pre_seconds = job.clock()
    print(f"[concept-drift paper] pre-training: test error {pre_error} ({pre_seconds:.0f} s)", flush=True)
    rules = tuple(r for r in cfg["rules"] if r != "epc" or "epc" in ENGINE_RULES)

    def train(rule: str, setup: PaperSetup, lrs: list[float]) -> dict:
        grid = common.Grid(seeds, lrs)
        parts = []
        for start in range(0, grid.runs, cfg["chunk"]):
            sl = slice(start, min(start + cfg["chunk"], grid.runs))
            run_seeds = grid.seed_of_run[sl]
            models = [shared if setup.pretrain == "paper" else ours_models[s] for s in run_seeds]
            parts.append(
                drift_paper(
                    models,
                    rule,
                    run_seeds,
                    grid.lr_tensor()[sl],
                    pool,
                    val,
                    test_all,
                    setup,
                    epochs=epochs,
                    data_seed=seed,
                )
            )
        val_e = torch.cat([p["val"] for p in parts])
        test_e = torch.cat([p["test"] for p in parts])
        val_metric, test_metric = val_e.mean(1), test_e.mean(1)
        best, out = common.lr_selection(val_metric, test_metric, grid, on_test=True)
        out["best_at_grid_edge"] = len(lrs) > 1 and out["best_at_grid_edge"]  # one lr: no edge
        curves = test_e.reshape(len(seeds), len(lrs), -1)[:, best]
        out["relearn"] = common.stats(first_epoch_after_drift(curves, setup.period))
        out["curves_best"] = curves
        out["curves_all"] = test_e.reshape(len(seeds), len(lrs), -1)
        out["diverged_runs"] = sum(p["diverged"] for p in parts)
        out["rate_cuts_per_relaxation"] = sum(p["rate_cuts_per_relaxation"] for p in parts) / len(parts)
        return out

    results: dict = {"paper": {}}
    for rule in rules:
        results["paper"][rule] = train(rule, PAPER_VARIANTS["paper"], cfg["grid"])
        print(
            f"[concept-drift paper] paper grid, {rule}: "
            f"{results['paper'][rule]['test']['mean']:.3f} at lr "
            f"{results['paper'][rule]['best_lr']} ({job.clock():.0f} s)",
            flush=True,
        )
    ablation: dict = {}
    lr_ab = cfg["ablation_lr"]

    def main_at(rule: str, j: int) -> dict:
        r = results["paper"][rule]
        s = r["per_lr_test"][j]
        curves = r["curves_all"][:, j]
        return {
            "mean": s["mean"],
            "std": s["std"],
            "values": s["values"],
            "relearn": float(first_epoch_after_drift(curves, 64).mean()),
            "curve": curves.mean(0),
            "rate_cuts_per_relaxation": r["rate_cuts_per_relaxation"],
        }

    for name in cfg["variants"]:
        setup = PAPER_VARIANTS[name]
        ablation[name] = {}
        for rule in ("il", "bp"):
            if rule == "bp" and name == "no rate cut":  # backprop has no state rate
                ablation[name][rule] = ablation["paper"][rule]
                continue
            if name == "paper" and lr_ab in cfg["grid"]:  # the main grid's runs at that lr
                j = cfg["grid"].index(lr_ab)
                m = main_at(rule, j)
                ablation[name][rule] = m
                continue
            r = train(rule, setup, [lr_ab])
            ablation[name][rule] = {
                "mean": r["test"]["mean"],
                "std": r["test"]["std"],
                "values": r["test"]["values"],
                "relearn": r["relearn"]["mean"],
                "curve": r["curves_best"].mean(0),
                "rate_cuts_per_relaxation": r["rate_cuts_per_relaxation"],
            }
        print(
            f"[concept-drift paper] {name} at lr {lr_ab}: PC "
            f"{ablation[name]['il']['mean']:.3f}, BP {ablation[name]['bp']['mean']:.3f} "
            f"({job.clock():.0f} s)",
            flush=True,
        )

    main = results["paper"]
    for r in main.values():
        r.pop("curves_all")
    comparisons = [
        pp.compare_paper(
            CLAIM_PAPER,
            f"mean test error over {epochs} epochs (drift every 64)",
            main,
            PAPER,
            EXPECTED[CLAIM_PAPER],
            batch=32,
            on_test=f"PC {main['il']['test_best_lr_on_test']['mean']:.3f}, "
            f"BP {main['bp']['test_best_lr_on_test']['mean']:.3f}"
            + ("" if full else f"; {epochs} epochs (paper: 3000, --full)"),
        )
    ]

    fig, axes = common.figure(2, 1, width=6.5, height=3.4)
    ax = axes[0, 0]
    x = torch.arange(1, epochs + 1)
    for rule in main:
        r = main[rule]
        common.band(ax, x, r["curves_best"], rule, label=f"{common.LABELS.get(rule, rule)} (lr {r['best_lr']})")
    ax.set(xlabel="epoch (drift every 64)", ylabel="test error", title="paper protocol", ylim=(0, 0.9))
    ax.legend(fontsize=7)
    pp.plot_ablation(axes[0, 1], ablation, PAPER, f"mean test error at lr {lr_ab} (dotted: paper)")
    figures = [common.save(fig, out_dir, "concept_drift_paper.png")]

    return job.finish(
        summary="the paper's code's protocol: one SGD-pre-trained net ({-1,+1} targets), "
        "targets in {-1,+1} after the first drift, state rate halved when the energy "
        "rises, T = 128, drift every 64 epochs",
        hyperparameters={
            "protocol": "paper",
            "sizes": SIZES,
            "activation": ACT,
            "bias": False,
            "init": "xavier_uniform",
            "batch": 32,
            "T": 128,
            "state_lr": 0.1,
            "per_class_train": 120,
            "per_class_test": 100,
            "epochs": epochs,
            "lr_grid": cfg["grid"],
            "ablation_lr": lr_ab,
            "seeds": seeds,
            "pretraining": {
                "paper": "backprop, SGD lr 0.6 (batch mean; paper 0.01 summed), batch 60, {-1,+1} targets",
                "epochs": cfg["pretrain_epochs"],
                "ours": "Adam 1e-3, batch 60, 4 epochs, per seed",
            },
            "variants": {n: PAPER_VARIANTS[n].__dict__ for n in cfg["variants"]},
            "selection": "mean-over-seeds validation metric (100/class held out)",
            "engine": "predcode.experiments.paper_protocol",
        },
        comparisons=comparisons,
        figures=figures,
        data={
            "pretrained_test_error": pre_error,
            "pretraining_seconds": pre_seconds,
            **{{"il": "pc"}.get(r, r): v for r, v in main.items()},
            "ablation": ablation,
        },
    )


@experiment(
    "concept-drift",
    "Song et al. 2024: Fashion-MNIST with drifting labels (classes "
    "5-9 re-permuted periodically); mean test error, PC vs BP",
)
def run(out_dir: Path, full: bool, seed: int, protocol: str = "ours") -> dict:
    if pp.wants_paper("concept-drift", protocol):
        return run_paper(out_dir, full, seed)
    job = common.Job("concept-drift", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    seeds = job.seeds(cfg["seeds"])
    pre_epochs, period, periods = cfg["pretrain_epochs"], cfg["period"], cfg["periods"]
    grid_lrs = cfg["grid"]
    pool, val, test_all = common.splits("fashion-mnist", 100, seed)
    pre_data = common.per_class_subset(pool, cfg["pretrain_per_class"], seed=seed)[0]
    models = {s: pretrain(s, pre_data, pre_epochs) for s in seeds}
    pre_error = {
        s: float(Ensemble.from_models([m], ACT).error_rate(test_all.x, test_all.y)[0]) for s, m in models.items()
    }
    pre_seconds = job.clock()
    results: dict = {}
    for rule in ("il", "bp") + (("epc",) if "epc" in ENGINE_RULES else ()):
        res = drift(
            models,
            rule,
            seeds,
            grid_lrs,
            pool,
            val,
            test_all,
            periods=periods,
            period=period,
            data_seed=seed,
            steps=cfg["T"],
            train_per_class=cfg["train_per_class"],
            test_per_class=cfg["test_per_class"],
        )
        grid = res["grid"]
        val_metric, test_metric = res["val"].mean(1), res["test"].mean(1)
        best, results[rule] = common.lr_selection(val_metric, test_metric, grid)
        results[rule]["curves_best"] = res["test"].reshape(len(seeds), len(grid_lrs), -1)[:, best]
        results[rule]["diverged_runs"] = res["diverged"]
    epochs = period * periods
    comparisons = [
        common.compare(
            CLAIM,
            f"mean test error over {epochs} epochs (drift every {period})",
            results["il"]["test"],
            results["bp"]["test"],
            paper=PAPER,
            paper_order="pc<bp",
            epc=results["epc"]["test"] if "epc" in results else None,
            expected=EXPECTED[CLAIM],
            note=f"best lr: PC {results['il']['best_lr']}, BP {results['bp']['best_lr']} "
            "(batch-mean units; paper's = ours / 32)"
            + (
                ""
                if full
                else f"; default run drifts every {period} epochs for {epochs} "
                "epochs (paper: every 64 for 3000) after 4 (paper 64) pre-training epochs"
            ),
        )
    ]
    relearn = {r: common.stats(first_epoch_after_drift(results[r]["curves_best"], period)) for r in results}
    if periods > 1:
        comparisons.append(
            common.compare(
                CLAIM_RELEARN,
                "test error in the epoch right after a mapping change (same runs)",
                relearn["il"],
                relearn["bp"],
                paper=None,
                paper_order="pc<bp",
                epc=relearn.get("epc"),
                expected=EXPECTED[CLAIM_RELEARN],
                note="no number in the paper; it shows PC re-learning faster after each change",
            )
        )
    check = common.library_check(SIZES, ACT, "il", pool, lr=0.32, steps=cfg["T"], state_lr=0.1, batch=2)

    fig, axes = common.figure(1, 1, width=9.0, height=3.4)
    ax = axes[0, 0]
    x = torch.arange(1, epochs + 1)
    for rule in results:
        r = results[rule]
        common.band(ax, x, r["curves_best"], rule, label=f"{common.LABELS.get(rule, rule)} (lr {r['best_lr']})")
    for p in range(1, periods):
        ax.axvline(p * period + 0.5, color="gray", lw=0.5, alpha=0.5)
    ax.set(
        xlabel="epoch (vertical lines: label mapping changes)",
        ylabel="test error",
        title="concept drift",
        ylim=(0, 0.8),
    )
    ax.legend(fontsize=8)
    figures = [common.save(fig, out_dir, "concept_drift.png")]

    return job.finish(
        summary="mean test error while the labels of 5 classes are re-permuted periodically",
        hyperparameters={
            "sizes": SIZES,
            "activation": ACT,
            "bias": False,
            "init": "xavier_uniform",
            "inputs": "[0, 1]",
            "pretraining": {
                "rule": "Backprop (library)",
                "optimizer": "Adam",
                "lr": 1e-3,
                "batch": 60,
                "epochs": pre_epochs,
                "images": len(pre_data),
            },
            "per_class_train": cfg["train_per_class"],
            "per_class_test": cfg["test_per_class"],
            "batch": 32,
            "drift_period_epochs": period,
            "drifts": periods,
            "epochs": epochs,
            "T": cfg["T"],
            "state_lr": 0.1,
            "lr_grid": grid_lrs,
            "weight_optimizer": "SGD on the batch-mean loss",
            "seeds": seeds,
            "selection": "mean-over-seeds validation metric",
            "engine": "predcode.experiments.ensemble",
        },
        comparisons=comparisons,
        figures=figures,
        data={
            "pretrained_test_error": pre_error,
            "pretraining_seconds": pre_seconds,
            **{{"il": "pc"}.get(r, r): v for r, v in results.items()},
            "library_check_max_rel_weight_diff": check,
        },
    )


def long_run(out_path: Path, epochs: int, lr: float = 0.32, seeds: int = 5, seed: int = 0) -> dict:
    """PC and BP under the paper's protocol at one learning rate for ``epochs`` epochs (the
    paper's curve is at its lr 0.01 = 0.32 here): mean test error, its last-quarter mean
    and the curves, written to ``out_path`` (JSON).  ``python -m
    predcode.experiments.concept_drift EPOCHS OUT.json``."""
    from ..atomic import write_json

    common.setup()
    clock = common.Clock()
    pool, val, test_all = common.splits("fashion-mnist", 100, seed)
    shared = pretrain_paper(seed, pool, 64)
    runs = [seed + k for k in range(seeds)]
    out: dict = {"epochs": epochs, "lr": lr, "seeds": runs, "protocol": "paper"}
    for rule in ("il", "bp"):
        r = drift_paper(
            [shared] * seeds,
            rule,
            runs,
            torch.full((seeds,), lr),
            pool,
            val,
            test_all,
            PAPER_VARIANTS["paper"],
            epochs=epochs,
            data_seed=seed,
        )
        curves = r["test"]
        out[rule] = {
            "mean": common.stats(curves.mean(1)),
            "last_quarter": common.stats(curves[:, -epochs // 4 :].mean(1)),
            "per_drift_period_mean": curves.mean(0).reshape(-1, 64).mean(1).tolist() if epochs % 64 == 0 else None,
            "curve_mean": curves.mean(0).tolist(),
            "seconds": clock(),
        }
        print(
            f"[concept-drift long] {rule}: {out[rule]['mean']['mean']:.3f} "
            f"(last quarter {out[rule]['last_quarter']['mean']:.3f}) ({clock():.0f} s)",
            flush=True,
        )
    write_json(out_path, out)
    return out


if __name__ == "__main__":  # pragma: no cover - a long measurement, see long_run
    import sys

    long_run(Path(sys.argv[2]), int(sys.argv[1]))

r"""Claim 6, online learning (Song et al. 2024, Fig. 4): with batch 1 and small batches PC
learns faster than BP; with larger batches they tie.

Protocol (the paper's ``nature_none_batch_new_analysis/base-b*``): Fashion-MNIST scaled to
[0, 1], 784-32-32-10 sigmoid, no biases, Xavier-uniform weights, squared-error output on
one-hot targets, PC with T = 64 inference steps at state rate 0.1, weight SGD.  Training runs
for 64 *iterations* of 200 mini-batches each; after every iteration the test error is
measured, and the metric is its **mean over the 64 evaluations** (area under the learning
curve: low when learning is fast).  The paper reports batch 1: PC 0.272 vs BP 0.289; batch 8:
0.204 vs 0.207; batch 32-64: a tie.

Learning rates: the same grid for both rules at each batch size; each rule takes the grid
point with the lowest mean-over-seeds metric on a 1000-image validation split held out
from the training set.  Our losses are averaged over the batch (the paper's are summed), so
our learning rate is the paper's times the batch size.  The default run has 5 seeds, a
3-point grid per batch size and a 5000-image test subset; ``--full`` has 5 seeds, 5-point
grids, batch sizes 16 and 64 as well, and the full test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from . import common, experiment
from .verdict import DIRECTION_ONLY, Expectation

SIZES, ACT = [784, 32, 32, 10], "sigmoid"
# 3-point grids around the optimum of a 16-iteration pilot over [0.03, 10] (seed 0); --full
# widens each by one point on both sides.
GRIDS = {1: [0.05, 0.1, 0.2], 8: [0.1, 0.2, 0.4], 16: [0.1, 0.2, 0.4], 32: [0.1, 0.2, 0.4], 64: [0.1, 0.2, 0.4]}


def grid_for(batch: int, full: bool) -> list[float]:
    """The learning-rate grid of ``batch`` (mean-loss units)."""
    lrs = GRIDS.get(batch, GRIDS[32])
    return [lrs[0] / 2, *lrs, lrs[-1] * 2] if full else list(lrs)


class Settings(TypedDict):
    """Batch sizes, seeds, evaluations (``iterations``) with ``per_iteration`` mini-batches
    between them, and test images per class (None: all)."""

    batches: list[int]
    seeds: int
    iterations: int
    per_iteration: int
    test_per_class: int | None


SETTINGS: dict[str, Settings] = {
    "default": {"batches": [1, 8, 32], "seeds": 5, "iterations": 64, "per_iteration": 200, "test_per_class": 500},
    "full": {"batches": [1, 8, 16, 32, 64], "seeds": 5, "iterations": 64, "per_iteration": 200, "test_per_class": None},
}
PAPER = {1: {"pc": 0.272, "bp": 0.289}, 8: {"pc": 0.204, "bp": 0.207}}
ORDER = {1: "pc<bp", 8: "pc<bp", 16: "tie", 32: "tie", 64: "tie"}
TIE_MARGIN = 0.005  # a "tie" is |PC - BP| below half an error point
_AFTER = "the paper gives no number at this batch size; the project chose 'tie' after its first run's results were seen"
EXPECTED = {
    "online learning, batch 1": Expectation(),
    "online learning, batch 8": Expectation(),
    "online learning, batch 16": Expectation(DIRECTION_ONLY, DIRECTION_ONLY, TIE_MARGIN, _AFTER),
    "online learning, batch 32": Expectation(DIRECTION_ONLY, DIRECTION_ONLY, TIE_MARGIN, _AFTER),
    "online learning, batch 64": Expectation(DIRECTION_ONLY, DIRECTION_ONLY, TIE_MARGIN, _AFTER),
}
"""Written before the run (5 seeds): batch 1 and 8 reproduced; the ties expected to miss
the equivalence test at 5 seeds (the earlier 3-seed run had PC 0.4 points ahead at 32)."""
REASONS = {
    "online learning, batch 8": (
        "both rules are ~0.6-0.9 points better than the paper's, BP too (which has no "
        "inference), so the gap is not PC-specific; the protocols differ in the test set "
        "(a 5000-image stratified subset here, all 10000 there), in sampling (the paper "
        "restarts a shuffled loader every 200 batches, i.e. samples with replacement "
        "across iterations; we walk through epochs) and in the paper's trainer halving the "
        "state rate when the energy rises. PC's advantage (0.56 points) matches the "
        "paper's direction and is larger than its 0.3 points."
    ),
}


def run_batch_size(
    batch: int,
    seeds: list[int],
    lrs: list[float],
    train: common.Split,
    val: common.Split,
    test: common.Split,
    iterations: int,
    per_iteration: int,
    steps: int = 64,
    state_lr: float = 0.1,
) -> dict:
    """Train every rule of :data:`~.common.IL_RULES` on the grid ``lrs``; select each rule's
    lr on validation."""
    grid = common.Grid(seeds, lrs)
    stream = common.BatchStream(len(train), batch, grid.seed_of_run)
    out: dict = {"lrs": grid.lrs}
    for rule, net, curves in common.train_il_rules(
        SIZES,
        ACT,
        train,
        stream,
        grid,
        updates=iterations * per_iteration,
        eval_every=per_iteration,
        evals={"val": val, "test": test},
        steps=steps,
        state_lr=state_lr,
    ):
        val_metric = curves.errors["val"].mean(1)
        out[rule] = common.classifier_result(
            rule, net, curves, grid, val_metric, curves.errors["test"].mean(1), val=val_metric
        )
    return out


@experiment(
    "online",
    "Song et al. 2024: online/small-batch learning, Fashion-MNIST 784-32-32-10 "
    "sigmoid; mean test error over training, PC vs BP",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("online", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    batches = cfg["batches"]
    seeds = job.seeds(cfg["seeds"])
    iterations, per_iteration = cfg["iterations"], cfg["per_iteration"]
    train, val, test_all = common.splits("fashion-mnist", 100, seed)
    test = common.test_subset(test_all, cfg["test_per_class"], seed)
    results = {}
    for b in batches:
        results[b] = run_batch_size(b, seeds, grid_for(b, full), train, val, test, iterations, per_iteration)
        results[b]["seconds"] = job.clock()

    comparisons = []
    for b in batches:
        comparisons.append(
            common.compare(
                f"online learning, batch {b}",
                f"mean test error over training ({iterations} evaluations)",
                results[b]["il"]["test"],
                results[b]["bp"]["test"],
                epc=results[b]["epc"]["test"],
                paper=PAPER.get(b),
                paper_order=ORDER.get(b, "tie"),
                expected=EXPECTED.get(f"online learning, batch {b}", Expectation(margin=TIE_MARGIN)),
                note=common.best_lr_note(results[b]) + f" (mean-loss units; paper's = ours / {b})",
            )
        )
    check = {
        rule: common.library_check(SIZES, ACT, rule, train, lr=0.1, steps=64, state_lr=0.1, batch=1)
        for rule in ("il", "epc")
    }

    fig, axes = common.figure(len(batches) + 1, 1, width=3.8)
    x = [(k + 1) * per_iteration for k in range(iterations)]
    for k, b in enumerate(batches):
        ax = axes[0, k]
        for rule in common.IL_RULES:
            r = results[b][rule]
            common.band(ax, x, r["curve_best"], rule, label=f"{common.LABELS[rule]} (lr {r['best_lr']})")
        ax.set(xlabel=f"mini-batches of {b}", ylabel="test error", title=f"batch {b}", ylim=(0.1, 0.8))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v / 1000:g}k")
        ax.legend(fontsize=7)
    ax = axes[0, -1]
    for rule, key in (("il", "pc"), ("epc", "pc"), ("bp", "bp")):
        means = [results[b][rule]["test"]["mean"] for b in batches]
        stds = [results[b][rule]["test"]["std"] for b in batches]
        ax.errorbar(
            batches, means, yerr=stds, marker="o", capsize=3, color=common.COLORS[rule], label=common.LABELS[rule]
        )
        paper_b = [b for b in batches if b in PAPER and rule != "epc"]
        ax.plot(
            paper_b,
            [PAPER[b][key] for b in paper_b],
            "x",
            color=common.COLORS[rule],
            ms=8,
            label=f"paper, {key.upper()}",
        )
    ax.set(
        xscale="log", xlabel="batch size", ylabel="mean test error over training", title="summary (best lr per rule)"
    )
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    figures = [common.save(fig, out_dir, "online.png")]

    data: dict[str, object] = {
        str(b): {
            **{rule: {k: v for k, v in results[b][rule].items()} for rule in common.IL_RULES},
            "lrs": results[b]["lrs"],
        }
        for b in batches
    }
    data["library_check_max_rel_weight_diff"] = check
    return job.finish(
        summary="mean test error over training at small batch sizes, best lr per rule",
        hyperparameters={
            **common.network("fashion-mnist", SIZES, ACT),
            "output": "squared error on one-hot targets",
            "T": 64,
            "state_lr": 0.1,
            "weight_optimizer": "SGD on the batch-mean loss",
            "batches": batches,
            "lr_grids": {b: grid_for(b, full) for b in batches},
            "seeds": seeds,
            "iterations": iterations,
            "batches_per_iteration": per_iteration,
            "tie_margin": TIE_MARGIN,
            "train_images": len(train),
            "validation_images": len(val),
            "test_images": len(test),
            "selection": "mean-over-seeds validation metric",
            "engine": "predcode.experiments.ensemble",
        },
        comparisons=comparisons,
        figures=figures,
        data=data,
    )

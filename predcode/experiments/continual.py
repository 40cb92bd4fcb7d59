r"""Claim 8, continual learning (Song et al. 2024, Fig. 5): learning one task disturbs
another less with PC than with BP, so the mean error over alternating tasks is lower.

Split Fashion-MNIST (the paper's ``nature_forgetting/base-shuffle-task-5-FashionMNIST``):
the ten classes are permuted at random (per seed) and split into two 5-class tasks that
share one 5-unit output (class ``k`` of a task is output ``k``).  784-32-32-32-5 sigmoid, no
biases, Xavier-normal weights, squared-error output, 600 training images per class, batch
500, PC with T = 64 at state rate 0.1, weight SGD.  Training alternates: 4 epochs of task A,
4 epochs of task B, and so on (20 repetitions of 8 epochs = 160 epochs in the paper).  After
every epoch the test error of each task is measured; the metric is the **mean test error
over the first 84 epochs and both tasks** (the paper's ``[:84].mean()``).  The paper reports
PC about 0.64 vs BP 0.69.

Permuted MNIST (a harder variant, no paper number): two tasks made of MNIST with two fixed
random pixel permutations, all 10 classes each, shared 10-unit output, same schedule.

Learning rates: one grid for both rules (batch-mean units: the paper's ``{0.005, ...,
0.0001}`` times 500), chosen per rule on validation images of both tasks (the same metric).

One difference from the paper's code: there the output unit of a class is
``shuffled_class % 5`` over the *unpermuted* task split, which can map two classes of one
task to the same output; here each task's five classes get five distinct outputs.

The paper's protocol (``predcode repro continual --protocol paper``, written to
``results/continual-paper/``).  Read in github.com/YuhangSong/Prospective-Configuration
(``experiments/nature_forgetting/base-shuffle-task-5-FashionMNIST.yaml``, "yaml" below;
``predictive_coding/predictive_coding/pc_trainer.py``, "trainer"):

* tasks and shared output: the training loader of task ``t`` keeps the *original*
  classes ``5t .. 5t+4`` (``partial_targets``, yaml 149-158, applied first in
  ``dataset_utils.partial_dateset``), 600 random images per class (yaml 55); the labels
  are then mapped by a per-seed ``np.random.shuffle`` of the ten classes (yaml 99-103,
  133-137) and taken ``% 5`` (yaml 105-109, 126-129).  So class ``c`` drives output
  ``perm[c] % 5``: on average 1.1 pairs of classes of a task share an output.
* the loss leaves out the last output: ``(outputs - target)[:, 0:-1]`` with
  ``error_end_index = -1`` (yaml 357-369), so output 4 never gets an error (its class is
  recognised only by accident) under PC and BP alike.
* 784-32-32-32-5 (``num_layers`` 4, yaml 223, 242-301), Linear-PCLayer-Sigmoid blocks (the
  state is the pre-activation, as here), no bias (230), Xavier-normal gain 1 (225-228),
  energy ``0.5 * error**2`` summed over the batch (232), batch 500 (57, no dropped batch:
  117).
* PC: T = 64 (189) with the weights updated at the last step (``update_p_at: "last"``,
  199; trainer 846-848): 63 state steps, then the weight gradient; state SGD at 0.1 (191-
  195), re-created every batch (trainer 457-458, 692-706); ``x_lr_discount: 0.9`` (196):
  after each state step the rate is multiplied by 0.9 when the batch's overall energy did
  not fall (trainer 811-844); ``x_lr_amplifier`` 1 (197).  BP: the PC layers removed and
  T = 1 (211).  Weight SGD at ``{5e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4, 1e-4}`` on the summed
  loss (200-209) = :data:`PAPER_GRID` here (times 500).
* schedule: 160 iterations (epochs), 20 repetitions of 4 epochs of task 0 then 4 of task 1
  (44-49, 120-170); after every epoch the error on the *whole* test set of one task's
  classes (174-182), one run per logged task (``log_task_i``, 59-62; same seed, so the
  same training).  Metric: ``df['test__classification_error'][:84].mean()`` (the
  folder's README.md, "base-shuffle-task-5 / mean"), averaged over 21 seeds (20-42) and
  both tasks; the paper's 0.64 / 0.69 are the minima over its learning rates (Fig. 4e of
  the source data), i.e. chosen on the test metric.

Differences that remain in our paper protocol: the 600 images per class are drawn once per
experiment seed (the paper: per seed), 100 per class are held out for validation and the
learning rate is chosen there (the test-selected number is recorded beside it), 5 seeds
by default (21 with ``--full``), 84 epochs by default (the metric's window; 160 with
``--full``), errors from one evaluation of each task's test set per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor

from ..exceptions import OptionError
from . import common, experiment
from . import paper_protocol as pp
from .ensemble import RULES as ENGINE_RULES
from .ensemble import Ensemble
from .verdict import DIRECTION_ONLY, Expectation

ACT = "sigmoid"
GRID = [0.05, 0.125, 0.25, 0.5, 1.0, 2.5]
PAPER = {"pc": 0.64, "bp": 0.69}
REASONS = {
    "continual learning, split Fashion-MNIST (2 x 5 classes)": (
        "both rules' errors are 0.13-0.16 below the paper's. The paper's own protocol "
        "(`--protocol paper`, results/continual-paper) gives its numbers: PC 0.625 vs BP "
        "0.686 (paper 0.64 vs 0.69). No single one of its differences from ours makes the "
        "gap: switched off one at a time (PC / BP), distinct outputs instead of perm[c] % 5 "
        "0.616 / 0.653, a loss on all five outputs 0.601 / 0.665, no state-rate cut 0.625 / "
        "0.686 (64 state steps instead of 63: not finished when this was written); what "
        "stays is the fixed class split (task 0 = T-shirt, trouser, pullover, dress, "
        "coat: four mutually confusable classes; task 1 "
        "= sandal, shirt, sneaker, bag, ankle boot), the whole test set, the paper's lr grid "
        "and the summed-loss step. (Shared outputs do not put a floor under the error: the "
        "test labels are mapped the same way, so two classes on one output need not be told "
        "apart.) PC's advantage here (2.2 points, 5 seeds, p 0.09) is smaller than under the paper's "
        "protocol (6.1 points, 5 seeds)."
    ),
    "continual learning, split Fashion-MNIST, the paper's protocol": (
        "the paper's numbers come back (PC 0.625 vs its 0.64, BP 0.686 vs its 0.69) from "
        "the protocol of its code: classes 0-4 and 5-9 on outputs perm[c] % 5, a loss that "
        "leaves out the last output, the state rate times 0.9 whenever the energy does not "
        "fall, the weights at the last of 64 steps, the paper's summed-loss lr grid. PC "
        "stays ahead with any one of these switched off (advantage 0.037 with distinct "
        "outputs, 0.064 without the output mask, 0.061 without the rate cut): the ordering "
        "does not hang on one quirk. The rate cut changes nothing "
        "measurable here: PC's mean is 0.625 with and without it (on a fresh network the "
        "energy of a 0.1-rate relaxation stops falling only at rounding level, after about "
        "64 steps). Our protocol's "
        "lower errors come from what these runs left in place (fixed class split, whole "
        "test set, lr grid; see the row above)."
    ),
}


class Settings(TypedDict):
    """Seeds, training iterations per task, training images per class of split Fashion-MNIST
    and of permuted MNIST, the learning-rate grid and test images per class (None: all)."""

    seeds: int
    iterations: int
    fashion_per_class: int
    mnist_per_class: int
    grid: list[float]
    test_per_class: int | None


SETTINGS: dict[str, Settings] = {
    "default": {
        "seeds": 5,
        "iterations": 84,
        "fashion_per_class": 600,
        "mnist_per_class": 300,
        "grid": GRID,
        "test_per_class": 500,
    },
    "full": {
        "seeds": 10,
        "iterations": 160,
        "fashion_per_class": 600,
        "mnist_per_class": 600,
        "grid": GRID,
        "test_per_class": None,
    },
}


@dataclass
class Task:
    """One task: training split, its validation and test splits, labels already mapped to
    the shared output."""

    train: common.Split
    val: common.Split
    test: common.Split


def split_fashion(seed: int, per_class: int, test_per_class: int | None = None) -> list[Task]:
    """Two 5-class tasks of Fashion-MNIST from a seeded permutation of the classes."""
    train_all = common.load("fashion-mnist", "train")
    test_all = common.load("fashion-mnist", "test")
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(seed)).tolist()
    val_all, val_index = common.per_class_subset(train_all, 100, seed=seed + 7)
    tasks = []
    for t in range(2):
        classes = perm[5 * t : 5 * t + 5]
        remap = torch.full((10,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(5)

        def pick(
            split: common.Split, n: int | None, s: int, exclude=None, classes=classes, remap=remap
        ) -> common.Split:
            sub, _ = common.per_class_subset(split, n, seed=s, classes=classes, exclude=exclude)
            return common.Split(sub.x, remap[sub.y])

        tasks.append(
            Task(
                pick(train_all, per_class, seed + t, val_index),
                pick(val_all, None, 0),
                pick(test_all, test_per_class, 0),
            )
        )
    return tasks


def permuted_mnist(seed: int, per_class: int, tasks: int = 2, test_per_class: int | None = None) -> list[Task]:
    """MNIST under ``tasks`` fixed random pixel permutations (the first one included)."""
    train_all = common.load("mnist", "train")
    test_all = common.load("mnist", "test")
    val_all, val_index = common.per_class_subset(train_all, 50, seed=seed + 7)
    test_all = common.per_class_subset(test_all, test_per_class, seed=0)[0]
    out = []
    for t in range(tasks):
        perm = torch.randperm(784, generator=torch.Generator().manual_seed(seed * 31 + t))
        train, _ = common.per_class_subset(train_all, per_class, seed=seed + t, exclude=val_index)
        out.append(Task(*(common.Split(s.x[:, perm], s.y) for s in (train, val_all, test_all))))
    return out


def alternate(
    tasks: list[Task],
    sizes: list[int],
    grid: common.Grid,
    rule: str,
    *,
    iterations: int,
    per_task: int,
    batch: int,
    steps: int = 64,
    state_lr: float = 0.1,
) -> dict[str, Tensor]:
    """Train on the tasks in blocks of ``per_task`` epochs; error per epoch and task.

    Returns ``val`` and ``test`` errors of shape ``[R, iterations, tasks]``."""
    net = Ensemble.from_seeds(sizes, ACT, grid.seed_of_run, "xavier_normal")
    lr = grid.lr_tensor()
    outputs = sizes[-1]
    streams = [common.BatchStream(len(t.train), batch, grid.seed_of_run) for t in tasks]
    targets = [t.train.onehot(outputs) for t in tasks]
    epochs = [0] * len(tasks)
    val, test = [], []
    for it in range(iterations):
        k = (it // per_task) % len(tasks)
        for idx in streams[k].epoch(epochs[k]):
            net.step(rule, tasks[k].train.x[idx], targets[k][idx], lr, steps=steps, state_lr=state_lr)
        epochs[k] += 1
        val.append(torch.stack([net.error_rate(t.val.x, t.val.y) for t in tasks], dim=1))
        test.append(torch.stack([net.error_rate(t.test.x, t.test.y) for t in tasks], dim=1))
    return {"val": torch.stack(val, dim=1), "test": torch.stack(test, dim=1), "diverged": (~net.finite()).sum()}


def benchmark(
    tasks: list[Task],
    sizes: list[int],
    seeds: list[int],
    lrs: list[float],
    *,
    iterations: int,
    window: int,
    per_task: int,
    batch: int,
) -> dict:
    grid = common.Grid(seeds, lrs)
    out: dict = {"lrs": lrs}
    for rule in ("il", "bp") + (("epc",) if "epc" in ENGINE_RULES else ()):
        res = alternate(tasks, sizes, grid, rule, iterations=iterations, per_task=per_task, batch=batch)
        val_metric = res["val"][:, :window].mean((1, 2))
        test_metric = res["test"][:, :window].mean((1, 2))
        best, out[rule] = common.lr_selection(val_metric, test_metric, grid)
        out[rule]["curves_best"] = res["test"].reshape(len(seeds), len(lrs), iterations, len(tasks))[:, best]
        out[rule]["diverged_runs"] = int(res["diverged"])
    return out


# -- the paper's own protocol (``--protocol paper``) --------------------------------------
PAPER_GRID = [0.05, 0.125, 0.25, 0.375, 0.5, 2.5]
"""The paper's ``{1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 5e-3}`` (summed loss) times batch 500."""


@dataclass(frozen=True)
class PaperSetup:
    """One version of the paper's protocol; :data:`PAPER_VARIANTS` turns one difference
    from ours off at a time.

    Args:
        mapping: ``"mod5"``: class ``c`` of the unpermuted split (task 0 = classes 0-4, task
            1 = 5-9) drives output ``perm[c] % 5`` for a per-seed permutation ``perm`` of
            the ten classes (two classes of a task can share an output); ``"distinct"``:
            the five classes of a task drive five distinct outputs (a per-seed bijection).
        mask_last: the loss and the output error leave out the last output unit (the
            paper's ``[:, 0:-1]`` slice).
        discount: the state-rate factor when the energy does not fall (the paper: 0.9).
        steps: state steps before the weight update (the paper's T = 64 updates the
            weights at the last of its 64 steps: 63 state steps).
    """

    mapping: str = "mod5"
    mask_last: bool = True
    discount: float = 0.9
    steps: int = 63


PAPER_VARIANTS = {
    "paper": PaperSetup(),
    "distinct outputs": PaperSetup(mapping="distinct"),
    "no output mask": PaperSetup(mask_last=False),
    "no rate cut": PaperSetup(discount=1.0),
    "T = 64 state steps": PaperSetup(steps=64),
}


class PaperSettings(TypedDict):
    """The paper-protocol run: seeds, training iterations per task, training images per
    class, runs trained at a time (``chunk``), the protocol variants and the rules."""

    seeds: int
    iterations: int
    per_class: int
    chunk: int
    variants: list[str]
    rules: Sequence[str]


PAPER_SETTINGS: dict[str, PaperSettings] = {
    "default": {
        "seeds": 5,
        "iterations": 84,
        "per_class": 600,
        "chunk": 6,
        "variants": list(PAPER_VARIANTS),
        "rules": ("il", "bp"),
    },
    "full": {
        "seeds": 21,
        "iterations": 160,
        "per_class": 600,
        "chunk": 6,
        "variants": list(PAPER_VARIANTS),
        "rules": ("il", "bp"),
    },
}
CLAIM_PAPER = "continual learning, split Fashion-MNIST, the paper's protocol"
EXPECTED = {
    "continual learning, split Fashion-MNIST (2 x 5 classes)": Expectation(
        spc=DIRECTION_ONLY,
        epc=DIRECTION_ONLY,
        history="set after the 3-seed run (PC 0.505 +- 0.022, BP 0.529 +- 0.023)",
    ),
    "continual learning, permuted MNIST (2 tasks)": Expectation(
        spc=DIRECTION_ONLY, epc=DIRECTION_ONLY, history="set after the 3-seed run (PC 0.757, BP 0.763)"
    ),
    CLAIM_PAPER: Expectation(
        spc=DIRECTION_ONLY, epc=DIRECTION_ONLY, history="written before the first paper-protocol run"
    ),
}


def output_map(seed: int, mapping: str) -> Tensor:
    """The output unit of each of the ten classes for one seed: ``[10]`` (see
    :class:`PaperSetup`)."""
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(seed))
    if mapping == "mod5":
        return perm % 5
    if mapping == "distinct":
        out = torch.empty(10, dtype=torch.long)
        for t in range(2):
            out[5 * t : 5 * t + 5] = perm[5 * t : 5 * t + 5].argsort().argsort()
        return out
    raise OptionError(f"mapping must be 'mod5' or 'distinct', not '{mapping}'")


def paper_tasks(seed: int, per_class: int) -> list[Task]:
    """The paper's two tasks: classes 0-4 and 5-9 (labels left as the original classes;
    :func:`output_map` maps them per run).  ``per_class`` training images per class, 100
    per class held out for validation, the whole test set of the task's classes."""
    train_all = common.load("fashion-mnist", "train")
    test_all = common.load("fashion-mnist", "test")
    val_all, val_index = common.per_class_subset(train_all, 100, seed=seed + 7)
    tasks = []
    for t in range(2):
        classes = list(range(5 * t, 5 * t + 5))
        tasks.append(
            Task(
                common.per_class_subset(train_all, per_class, seed=seed + t, classes=classes, exclude=val_index)[0],
                common.per_class_subset(val_all, None, 0, classes=classes)[0],
                common.per_class_subset(test_all, None, 0, classes=classes)[0],
            )
        )
    return tasks


def alternate_paper(
    tasks: list[Task],
    seeds_of_run: list[int],
    lr: Tensor,
    rule: str,
    setup: PaperSetup,
    *,
    iterations: int,
    per_task: int = 4,
    batch: int = 500,
    state_lr: float = 0.1,
) -> dict:
    """:func:`alternate` under the paper's protocol for the runs given (one seed and one
    learning rate per run); errors ``[R, iterations, 2]`` plus relaxation statistics."""
    sizes = [784, 32, 32, 32, 5]
    net = Ensemble.from_seeds(sizes, ACT, seeds_of_run, "xavier_normal")
    maps = torch.stack([output_map(s, setup.mapping) for s in seeds_of_run])  # [R, 10]
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]) if setup.mask_last else None
    streams = [common.BatchStream(len(t.train), batch, seeds_of_run) for t in tasks]
    targets = [torch.nn.functional.one_hot(maps[:, t.train.y], 5).float() for t in tasks]
    epochs = [0] * len(tasks)
    val, test = [], []
    cuts, relaxations, rose = 0, 0, 0
    for it in range(iterations):
        k = (it // per_task) % len(tasks)
        for idx in streams[k].epoch(epochs[k]):
            r = pp.step(
                net,
                rule,
                tasks[k].train.x[idx],
                pp.gather_rows(targets[k], idx),
                lr,
                steps=setup.steps,
                state_lr=state_lr,
                discount=setup.discount,
                mask=mask,
                full_batch=batch,
            )
            if r is not None:
                cuts += int(r.cuts.sum())
                relaxations += r.cuts.numel()
                rose += int((r.energy_end > r.energy_start).sum())
        epochs[k] += 1
        val.append(torch.stack([pp.error_rate(net, t.val.x, maps[:, t.val.y]) for t in tasks], 1))
        test.append(torch.stack([pp.error_rate(net, t.test.x, maps[:, t.test.y]) for t in tasks], 1))
    return {
        "val": torch.stack(val, 1),
        "test": torch.stack(test, 1),
        "diverged": int((~net.finite()).sum()),
        "relax": {
            "relaxations": relaxations,
            "rate_cuts_per_relaxation": cuts / max(relaxations, 1),
            "energy_ended_above_start": rose,
        },
    }


def benchmark_paper(
    tasks: list[Task],
    seeds: list[int],
    lrs: list[float],
    setup: PaperSetup,
    rules: tuple[str, ...],
    *,
    iterations: int,
    window: int,
    chunk: int,
) -> dict:
    """Every rule on the grid ``seeds x lrs`` (trained ``chunk`` runs at a time: the same
    numbers, less memory traffic), the learning rate chosen on validation."""
    grid = common.Grid(seeds, lrs)
    out: dict = {"lrs": lrs, "setup": setup.__dict__}
    for rule in rules:
        parts = []
        for start in range(0, grid.runs, chunk):
            sl = slice(start, min(start + chunk, grid.runs))
            parts.append(
                alternate_paper(tasks, grid.seed_of_run[sl], grid.lr_tensor()[sl], rule, setup, iterations=iterations)
            )
        val = torch.cat([p["val"] for p in parts])
        test = torch.cat([p["test"] for p in parts])
        val_metric, test_metric = val[:, :window].mean((1, 2)), test[:, :window].mean((1, 2))
        best, out[rule] = common.lr_selection(val_metric, test_metric, grid, on_test=True)
        out[rule]["curves_best"] = test.reshape(len(seeds), len(lrs), iterations, 2)[:, best]
        out[rule]["diverged_runs"] = sum(p["diverged"] for p in parts)
        out[rule]["relax"] = {
            k: sum(p["relax"][k] for p in parts) / (len(parts) if k == "rate_cuts_per_relaxation" else 1)
            for k in parts[0]["relax"]
        }
    return out


def run_paper(out_dir: Path, full: bool, seed: int) -> dict:
    """``predcode repro continual --protocol paper``: the paper's protocol and one run per
    difference from ours switched off (:data:`PAPER_VARIANTS`)."""
    job = common.Job("continual", out_dir, full, seed, " --protocol paper")
    cfg = PAPER_SETTINGS["full" if full else "default"]
    seeds = job.seeds(cfg["seeds"])
    iterations, window = cfg["iterations"], min(84, cfg["iterations"])
    rules = tuple(cfg["rules"])  # no ePC here: the equilibrium rule has no output mask
    tasks = paper_tasks(seed, cfg["per_class"])
    results: dict = {}
    for name in cfg["variants"]:
        setup = PAPER_VARIANTS[name]
        # backprop ignores the state rate and T: those variants reuse the paper's BP runs
        same_bp = name != "paper" and (setup.mapping, setup.mask_last) == ("mod5", True)
        results[name] = benchmark_paper(
            tasks,
            seeds,
            PAPER_GRID,
            setup,
            ("il",) if same_bp else rules,
            iterations=iterations,
            window=window,
            chunk=cfg["chunk"],
        )
        if same_bp:
            results[name]["bp"] = results["paper"]["bp"]
        results[name]["seconds"] = job.clock()
        print(
            f"[continual paper] {name}: "
            + ", ".join(
                f"{r} {results[name][r]['test']['mean']:.3f}" for r in ("il", "bp", "epc") if r in results[name]
            )
            + f" ({job.clock():.0f} s)",
            flush=True,
        )
    main = results["paper"]
    comparisons = [
        pp.compare_paper(
            CLAIM_PAPER,
            f"mean test error over the first {window} epochs, both tasks",
            main,
            PAPER,
            EXPECTED[CLAIM_PAPER],
            batch=500,
            on_test=f"PC {main['il']['test_best_lr_on_test']['mean']:.3f} at {main['il']['best_lr_on_test']}, "
            f"BP {main['bp']['test_best_lr_on_test']['mean']:.3f} at {main['bp']['best_lr_on_test']}",
        )
    ]
    ablation = {
        name: {
            r: {"mean": res[r]["test"]["mean"], "std": res[r]["test"]["std"], "best_lr": res[r]["best_lr"]}
            for r in ("il", "bp", "epc")
            if r in res
        }
        for name, res in results.items()
    }

    fig, axes = common.figure(3, 1, width=5.0, height=3.2)
    x = torch.arange(1, iterations + 1)
    for col in range(2):
        ax = axes[0, col]
        for rule in ("il", "bp", "epc"):
            if rule in main:
                r = main[rule]
                common.band(
                    ax,
                    x,
                    r["curves_best"][:, :, col],
                    rule,
                    label=f"{common.LABELS.get(rule, rule)} (lr {r['best_lr']})",
                )
        for start in range(0, iterations, 8):
            ax.axvspan(start + 0.5 + col * 4, start + 4.5 + col * 4, color="gray", alpha=0.08, lw=0)
        ax.set(
            xlabel="epoch (shaded: training on this task)",
            ylabel="test error",
            title=f"paper protocol: task {'AB'[col]}",
        )
        ax.legend(fontsize=7)
    pp.plot_ablation(axes[0, 2], ablation, PAPER, f"mean test error, first {window} epochs (dotted: paper)")
    figures = [common.save(fig, out_dir, "continual_paper.png")]

    return job.finish(
        summary="the paper's code's protocol: classes 0-4 / 5-9 on outputs perm[c] % 5, loss "
        "without the last output, state rate x0.9 when the energy rises, T = 64",
        hyperparameters={
            "protocol": "paper",
            "sizes": [784, 32, 32, 32, 5],
            "per_class": cfg["per_class"],
            "activation": ACT,
            "bias": False,
            "init": "xavier_normal",
            "batch": 500,
            "epochs_per_task_block": 4,
            "iterations": iterations,
            "metric_window": window,
            "state_lr": 0.1,
            "lr_grid": PAPER_GRID,
            "seeds": seeds,
            "variants": {n: PAPER_VARIANTS[n].__dict__ for n in cfg["variants"]},
            "test": "every test image of the task's classes",
            "selection": "mean-over-seeds validation metric (100/class held out)",
            "engine": "predcode.experiments.paper_protocol",
        },
        comparisons=comparisons,
        figures=figures,
        data={"ablation": ablation, "variants": results},
    )


@experiment(
    "continual",
    "Song et al. 2024: split Fashion-MNIST (2 tasks, shared output) "
    "and permuted MNIST; mean test error while tasks alternate",
)
def run(out_dir: Path, full: bool, seed: int, protocol: str = "ours") -> dict:
    if pp.wants_paper("continual", protocol):
        return run_paper(out_dir, full, seed)
    job = common.Job("continual", out_dir, full, seed)
    cfg = SETTINGS["full" if full else "default"]
    seeds = job.seeds(cfg["seeds"])
    iterations, grid = cfg["iterations"], cfg["grid"]
    window, per_task, batch = min(84, iterations), 4, 500
    # the class split is drawn per seed in the paper; one split per experiment seed here,
    # the paired PC/BP runs differ in initial weights and batch order across seeds
    fashion = split_fashion(seed, cfg["fashion_per_class"], cfg["test_per_class"])
    permuted = permuted_mnist(seed, cfg["mnist_per_class"], test_per_class=cfg["test_per_class"])
    results = {}
    for name, tasks, sizes in (
        ("split-fashion-mnist", fashion, [784, 32, 32, 32, 5]),
        ("permuted-mnist", permuted, [784, 32, 32, 32, 10]),
    ):
        results[name] = benchmark(
            tasks, sizes, seeds, grid, iterations=iterations, window=window, per_task=per_task, batch=batch
        )
        results[name]["seconds"] = job.clock()

    def compared(claim: str, name: str, paper: dict | None, note: str) -> dict:
        """The report row of ``claim`` from the runs on ``name``; the note ends with the
        chosen rates."""
        r = results[name]
        return common.compare(
            claim,
            f"mean test error over the first {window} epochs, both tasks",
            r["il"]["test"],
            r["bp"]["test"],
            paper=paper,
            paper_order="pc<bp",
            epc=r["epc"]["test"] if "epc" in r else None,
            expected=EXPECTED[claim],
            note=f"{note}best lr: PC {r['il']['best_lr']}, BP {r['bp']['best_lr']}",
        )

    comparisons = [
        compared("continual learning, split Fashion-MNIST (2 x 5 classes)", "split-fashion-mnist", PAPER, ""),
        compared(
            "continual learning, permuted MNIST (2 tasks)",
            "permuted-mnist",
            None,
            "harder variant, no paper number; ",
        ),
    ]
    check = common.library_check(
        [784, 32, 32, 32, 5], ACT, "il", fashion[0].train, lr=0.5, steps=64, state_lr=0.1, init="xavier_normal", batch=3
    )

    fig, axes = common.figure(2, 2, width=5.2, height=3.0)
    for row, name in enumerate(results):
        for col in range(2):
            ax = axes[row, col]
            x = torch.arange(1, iterations + 1)
            for rule in ("il", "bp", "epc"):
                if rule not in results[name]:
                    continue
                r = results[name][rule]
                common.band(
                    ax,
                    x,
                    r["curves_best"][:, :, col],
                    rule,
                    label=f"{common.LABELS.get(rule, rule)} (lr {r['best_lr']})",
                )
            for start in range(0, iterations, 2 * per_task):
                ax.axvspan(
                    start + 0.5 + col * per_task, start + 0.5 + (col + 1) * per_task, color="gray", alpha=0.08, lw=0
                )
            ax.set(
                xlabel="epoch (shaded: training on this task)", ylabel="test error", title=f"{name}: task {'AB'[col]}"
            )
            ax.legend(fontsize=7)
    figures = [common.save(fig, out_dir, "continual.png")]

    return job.finish(
        summary="two tasks trained in alternating blocks of 4 epochs; mean test error over "
        "the first 84 epochs of both tasks",
        hyperparameters={
            "split-fashion-mnist": {
                "sizes": [784, 32, 32, 32, 5],
                "per_class": cfg["fashion_per_class"],
                "classes_per_task": 5,
                "shared_output": True,
            },
            "permuted-mnist": {"sizes": [784, 32, 32, 32, 10], "per_class": cfg["mnist_per_class"], "tasks": 2},
            "activation": ACT,
            "bias": False,
            "init": "xavier_normal",
            "inputs": "[0, 1]",
            "batch": batch,
            "epochs_per_task_block": per_task,
            "iterations": iterations,
            "metric_window": window,
            "T": 64,
            "state_lr": 0.1,
            "lr_grid": grid,
            "weight_optimizer": "SGD on the batch-mean loss (paper: summed; ours = paper x 500)",
            "seeds": seeds,
            "selection": "mean-over-seeds validation metric",
            "engine": "predcode.experiments.ensemble",
        },
        comparisons=comparisons,
        figures=figures,
        data={name: {k: v for k, v in r.items()} | {"library_check": check} for name, r in results.items()},
    )

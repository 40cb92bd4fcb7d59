"""Machinery shared by the claim experiments: paired PC/BP runs, learning-rate
grids, data streams, statistics over seeds, JSON with provenance, figures, comparisons.

Pairing.  A *grid* is every ``(seed, lr)`` pair; run ``r`` of a grid has the initial
weights drawn from its seed (:func:`~predcode.experiments.ensemble.make_model`) and sees
the data in the order drawn from its seed (:class:`BatchStream`).  The PC ensemble and the
BP ensemble of an experiment are built from the same grid, so every PC run has a BP twin
with the same initial weights and the same batches in the same order.

Selection.  Learning rates are chosen per rule by the same rule: the grid point with the
best mean over seeds of the experiment's metric measured on a held-out *validation* split
of the training data (never on the test set); the test metric of that grid point is what
is reported.  Diverged runs count as the worst value.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import __version__, plotting
from .. import data as _data
from ..app.provenance import git_commit
from ..atomic import write_json
from ..exceptions import OptionError
from . import verdict

PAPERS = {
    "song2024": "Song et al. 2024, Inferring neural activity before plasticity as a foundation "
    "for learning beyond backpropagation, Nature Neuroscience 27 (prospective "
    "configuration)",
    "alonso2022": "Alonso, Millidge, Krichmar & Neftci 2022, A theoretical framework for inference learning, NeurIPS",
}


# -- process setup and provenance ------------------------------------------------------
def setup() -> None:
    """One intra-op thread (the CPU is shared; the nets are small) and a file-only plot backend."""
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")


def environment() -> dict[str, Any]:
    """Versions, machine and date, recorded in every result file."""
    import matplotlib

    return {
        "predcode": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


class Clock:
    """Wall-clock seconds since creation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


# -- statistics ----------------------------------------------------------------------
def stats(values: Sequence[float] | Tensor) -> dict[str, Any]:
    """Mean, sample standard deviation (the *spread*), standard error, n and the values."""
    v = np.asarray(torch.as_tensor(values, dtype=torch.float64).tolist(), dtype=np.float64).ravel()
    n = len(v)
    finite = v[np.isfinite(v)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return {
        "mean": mean,
        "std": std,
        "sem": std / math.sqrt(max(len(finite), 1)),
        "n": n,
        "n_finite": int(len(finite)),
        "values": v.tolist(),
    }


def fmt(s: dict[str, Any], digits: int = 3) -> str:
    """``mean ± std`` of a :func:`stats` dict."""
    if s is None or s.get("mean") is None or not math.isfinite(s["mean"]):
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


# -- grids of paired runs -------------------------------------------------------------
@dataclass
class Grid:
    """Every ``(seed, lr)`` pair, seed-major: run ``r = i * len(lrs) + j``."""

    seeds: list[int]
    lrs: list[float]

    @property
    def runs(self) -> int:
        return len(self.seeds) * len(self.lrs)

    @property
    def seed_of_run(self) -> list[int]:
        return [s for s in self.seeds for _ in self.lrs]

    def lr_tensor(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.tensor([lr for _ in self.seeds for lr in self.lrs], dtype=dtype)

    def table(self, metric: Tensor) -> Tensor:
        """A per-run metric ``[R]`` as ``[seeds, lrs]``."""
        return torch.as_tensor(metric).reshape(len(self.seeds), len(self.lrs))


def select_lr(val_metric: Tensor, grid: Grid, lower_is_better: bool = True) -> int:
    """Index into ``grid.lrs`` of the best mean-over-seeds validation metric (non-finite =
    worst)."""
    table = grid.table(val_metric).double()
    worst = float("inf") if lower_is_better else float("-inf")
    table = torch.where(torch.isfinite(table), table, torch.full_like(table, worst))
    means = table.mean(0)
    return int(means.argmin() if lower_is_better else means.argmax())


def per_lr_stats(metric: Tensor, grid: Grid) -> list[dict[str, Any]]:
    """``stats`` over seeds for every learning rate of the grid."""
    table = grid.table(metric)
    return [{"lr": lr, **stats(table[:, j])} for j, lr in enumerate(grid.lrs)]


def lr_selection(
    val_metric: Tensor,
    test_metric: Tensor,
    grid: Grid,
    *,
    at_best: dict[str, Tensor] | None = None,
    on_test: bool = False,
) -> tuple[int, dict[str, Any]]:
    """The learning rate chosen on validation (:func:`select_lr`, lower is better) and what a
    rule's result reports about it: ``best_lr``, ``best_at_grid_edge``, the ``test`` stats at
    that rate, the stats at that rate of every per-run metric in ``at_best`` (under its key),
    with ``on_test`` the rate the test metric itself would choose (``best_lr_on_test``,
    ``test_best_lr_on_test``: how the papers chose), and ``per_lr_test`` / ``per_lr_val``.
    Returns the chosen index into ``grid.lrs`` and that dict."""
    best = select_lr(val_metric, grid)
    table = grid.table(test_metric)
    out: dict[str, Any] = {
        "best_lr": grid.lrs[best],
        "best_at_grid_edge": best in (0, len(grid.lrs) - 1),
        "test": stats(table[:, best]),
    }
    for key, metric in (at_best or {}).items():
        out[key] = stats(grid.table(metric)[:, best])
    if on_test:
        chosen = int(table.mean(0).argmin())
        out["best_lr_on_test"] = grid.lrs[chosen]
        out["test_best_lr_on_test"] = stats(table[:, chosen])
    out["per_lr_test"] = per_lr_stats(test_metric, grid)
    out["per_lr_val"] = per_lr_stats(val_metric, grid)
    return best, out


def best_lr_note(results: Mapping[str, Mapping[str, object]], labels: dict[str, str] | None = None) -> str:
    """``"best lr (validation): sPC 0.1, ePC 0.3, BP 0.1"``: the ``best_lr`` of every rule of
    ``results`` named in ``labels`` (rule -> label; default sPC, ePC, BP), in that order."""
    labels = labels or {"il": "sPC", "epc": "ePC", "bp": "BP"}
    return "best lr (validation): " + ", ".join(f"{label} {results[rule]['best_lr']}" for rule, label in labels.items())


class BatchStream:
    """Per-run mini-batch indices with a data order that depends only on the run's seed.

    ``epoch(e)`` yields index tensors ``[R, B]``: for every run the ``n`` training
    examples shuffled by ``torch.Generator().manual_seed(seed * 100003 + e)``, cut into
    batches (the last one partial when ``drop_last`` is False).  Runs sharing a seed share
    the order, so a grid's PC and BP runs see identical batches.
    """

    def __init__(self, n: int, batch: int, seeds: Sequence[int], drop_last: bool = False) -> None:
        if n < 1 or batch < 1:
            raise OptionError(f"need n >= 1 and batch >= 1, got n={n}, batch={batch}")
        self.n, self.batch, self.seeds, self.drop_last = n, batch, list(seeds), drop_last

    def order(self, epoch: int) -> Tensor:
        """``[R, n]`` permutation of every run for ``epoch``."""
        cache: dict[int, Tensor] = {}
        rows = []
        for s in self.seeds:
            if s not in cache:
                g = torch.Generator().manual_seed(s * 100003 + epoch)
                cache[s] = torch.randperm(self.n, generator=g)
            rows.append(cache[s])
        return torch.stack(rows)

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.batch)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch(self, epoch: int) -> Iterator[Tensor]:
        order = self.order(epoch)
        for k in range(self.batches_per_epoch()):
            yield order[:, k * self.batch : (k + 1) * self.batch]


# -- data ----------------------------------------------------------------------------
@dataclass
class Split:
    """Images ``[N, D]`` (float32 in [0, 1]) and int64 labels."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def onehot(self, classes: int = 10) -> Tensor:
        return torch.nn.functional.one_hot(self.y, classes).to(self.x.dtype)


def load(name: str, split: str) -> Split:
    """A cached dataset scaled to [0, 1] (``ToTensor`` in the papers' code)."""
    x, y = _data.load(name, split, normalize="[0,1]")
    return Split(x, y)


def per_class_subset(
    s: Split, per_class: int | None, seed: int, classes: Sequence[int] | None = None, exclude: Tensor | None = None
) -> tuple[Split, Tensor]:
    """``per_class`` random examples of every class (all of them when None), drawn with
    ``seed`` from the examples not in ``exclude`` (indices).  Returns the subset and the
    indices it took, in the original order."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.ones(len(s), dtype=torch.bool)
    if exclude is not None:
        allowed[exclude] = False
    picks = []
    for c in sorted(set(s.y.tolist())) if classes is None else classes:
        pool = torch.nonzero((s.y == c) & allowed).flatten()
        if per_class is not None:
            if per_class > len(pool):
                raise OptionError(f"class {c} has {len(pool)} examples, {per_class} requested")
            pool = pool[torch.randperm(len(pool), generator=g)[:per_class]]
        picks.append(pool)
    index = torch.cat(picks).sort().values
    return Split(s.x[index], s.y[index]), index


def splits(dataset: str, val_per_class: int, seed: int) -> tuple[Split, Split, Split]:
    """``(train, val, test)`` of ``dataset``: ``val_per_class`` validation images per class
    drawn with ``seed + 7`` from the training split, the rest of that split for training,
    and the whole test split."""
    full_train = load(dataset, "train")
    val, val_index = per_class_subset(full_train, val_per_class, seed=seed + 7)
    train, _ = per_class_subset(full_train, None, seed=seed, exclude=val_index)
    return train, val, load(dataset, "test")


def test_subset(test: Split, per_class: int | None, seed: int) -> Split:
    """``test`` itself (``per_class`` None) or ``per_class`` of its images per class, drawn
    with ``seed``."""
    return test if per_class is None else per_class_subset(test, per_class, seed=seed)[0]


# -- comparisons with the papers ------------------------------------------------------
ORDERS = verdict.ORDERS
IL_RULES = ("il", "epc", "bp")
"""The rules of a claim about inference learning: sPC at the paper's T (``il``), PC at the
exact equilibrium of its energy (``epc``: error-based PC until the energy's relative change
per step is below 1e-6, :class:`~predcode.experiments.ensemble.Equilibrium`) and backprop."""


def compare(
    claim: str,
    metric: str,
    pc: dict,
    bp: dict,
    *,
    paper: dict | None,
    paper_order: str,
    expected: verdict.Expectation,
    epc: dict | None = None,
    lower_is_better: bool = True,
    source: str = "song2024",
    note: str = "",
) -> dict[str, Any]:
    """One row of the report: our numbers (``stats`` dicts over seeds) beside the paper's,
    judged strictly (:mod:`.verdict`).

    Args:
        pc: state-based PC at the paper's ``T`` (the papers' simulation of PC).
        bp: backprop, the same seeds.
        epc: the same claim with PC at its exact equilibrium (error-based PC relaxed until
            the energy's relative change is below 1e-6), when the claim involves inference
            learning; the theory's PC.
        paper_order: what the paper reports: ``"pc<bp"`` (PC better), ``"tie"``,
            ``"bp<=pc"`` (BP better or equal) or ``"pc>bp"`` (BP better).
        expected: the verdicts expected and the tie margin, written in the experiment's
            code before the run (the report flags a row whose expectation has changed
            since its result was recorded).

    ``paper_deviation`` lists, per rule, whether our mean is further from the paper's
    number than our spread (the report then has to give the reason, in ``note``).
    """
    if paper_order not in ORDERS:
        raise OptionError(f"paper_order must be one of {ORDERS}")
    tests = {
        name: verdict.decide(s, bp, paper_order, lower_is_better=lower_is_better, margin=expected.margin, paper=paper)
        for name, s in (("spc", pc), ("epc", epc))
        if s is not None
    }
    verdicts = {name: t["verdict"] for name, t in tests.items()}
    deviation = {}
    if paper:
        for rule, ours_s in (("pc", pc), ("bp", bp)):
            if paper.get(rule) is not None and math.isfinite(ours_s["mean"]):
                gap = ours_s["mean"] - paper[rule]
                deviation[rule] = {"gap": gap, "beyond_spread": abs(gap) > ours_s["std"]}
    return {
        "claim": claim,
        "metric": metric,
        "lower_is_better": lower_is_better,
        "paper": paper,
        "paper_order": paper_order,
        "source": source,
        "pc": pc,
        "bp": bp,
        "epc": epc,
        "expected": expected.as_dict(),
        "tests": tests,
        "verdicts": verdicts,
        "holds_for": verdict.holds_for(verdicts["spc"], verdicts.get("epc")),
        "holds": verdicts["spc"] == verdict.REPRODUCED,
        "paper_deviation": deviation,
        "note": note,
    }


def network(dataset: str, sizes: Sequence[int], act: str) -> dict[str, Any]:
    """The hyperparameters of the bias-free, Xavier-uniform MLPs on ``[0, 1]`` inputs of the
    classification experiments."""
    return {
        "dataset": dataset,
        "inputs": "[0, 1]",
        "sizes": sizes,
        "activation": act,
        "bias": False,
        "init": "xavier_uniform",
    }


def header(name: str, full: bool, seed: int) -> dict[str, Any]:
    """The first keys of every result file: the experiment, the command that reproduces it,
    ``full`` and ``seed``."""
    return {
        "experiment": name,
        "command": f"predcode repro {name}" + (" --full" if full else "") + (f" --seed {seed}" if seed else ""),
        "full": full,
        "seed": seed,
    }


def result(
    name: str,
    *,
    full: bool,
    seed: int,
    seconds: float,
    hyperparameters: dict,
    comparisons: list[dict],
    data: dict,
    figures: list[str],
    summary: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON document every experiment writes to ``<out>/<name>/result.json``."""
    return {
        **header(name, full, seed),
        "summary": summary,
        "runtime_s": seconds,
        "cpu_s": time.process_time(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "environment": environment(),
        "hyperparameters": hyperparameters,
        "comparisons": comparisons,
        "notes": list(notes),
        "figures": figures,
        "data": data,
    }


def finish(out_dir: Path, payload: dict) -> dict[str, Any]:
    """Write ``result.json``; return the headline numbers for the command line."""
    write_json(out_dir / "result.json", payload)
    return headline(payload)


def headline(payload: dict) -> dict[str, Any]:
    """The headline numbers of a :func:`result` for the command line: runtime, verdicts and
    every claim's PC and BP means."""
    return {
        "runtime_s": round(payload["runtime_s"], 1),
        "verdicts": [c["verdicts"] for c in payload["comparisons"]],
        "headline": {c["claim"]: {"pc": c["pc"]["mean"], "bp": c["bp"]["mean"]} for c in payload["comparisons"]},
    }


class Job:
    """One run of an experiment: the process set up (:func:`setup`), a :class:`Clock`
    started, and what :func:`result` names the run by.  ``command_suffix`` is appended to
    the recorded command (e.g. ``" --protocol paper"``)."""

    def __init__(self, name: str, out_dir: Path, full: bool, seed: int, command_suffix: str = "") -> None:
        setup()
        self.name, self.out_dir, self.full, self.seed = name, Path(out_dir), full, seed
        self.command_suffix = command_suffix
        self.clock = Clock()

    def header(self) -> dict[str, Any]:
        """:func:`header` of the run (its command with the suffix)."""
        out = header(self.name, self.full, self.seed)
        out["command"] += self.command_suffix
        return out

    def seeds(self, count: int) -> list[int]:
        """The ``count`` seeds of the run's paired runs: ``seed, seed + 1, ...``."""
        return [self.seed + k for k in range(count)]

    def write(
        self,
        *,
        summary: str,
        hyperparameters: dict,
        comparisons: list[dict],
        figures: list[str],
        data: dict,
        notes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Write the run's :func:`result` (runtime: the clock now) to ``result.json``; return it."""
        payload = result(
            self.name,
            full=self.full,
            seed=self.seed,
            seconds=self.clock(),
            hyperparameters=hyperparameters,
            comparisons=comparisons,
            data=data,
            figures=figures,
            summary=summary,
            notes=notes,
        )
        payload["command"] += self.command_suffix
        write_json(self.out_dir / "result.json", payload)
        return payload

    def finish(self, **parts: Any) -> dict[str, Any]:
        """:meth:`write` (same arguments); return the :func:`headline` numbers."""
        return headline(self.write(**parts))


# -- figures (the one style of predcode.plotting) ----------------------------------------
COLORS = plotting.COLORS
LABELS = plotting.LABELS


def figure(ncols: int = 1, nrows: int = 1, width: float = 4.6, height: float = 3.4):
    """:func:`predcode.plotting.figure`."""
    return plotting.figure(ncols, nrows, width, height)


def band(ax, x, runs: Tensor | np.ndarray, rule: str, label: str | None = None, **kw) -> None:
    """Mean over the first axis of ``runs`` with a ±1 std band
    (:func:`predcode.plotting.band`)."""
    plotting.band(ax, x, runs, rule, label, **kw)


def save(fig, out_dir: Path, name: str) -> str:
    """Write ``fig`` as ``out_dir/name`` (:func:`predcode.plotting.save`); returns ``name``."""
    plotting.save(fig, Path(out_dir) / name)
    return name


# -- the training loop of the classification experiments ------------------------------
@dataclass
class Curves:
    """Error curves ``[R, evaluations]`` per evaluation split, the update count at every
    evaluation, and the feed-forward training loss per update ``[R, updates]``."""

    at: list[int]
    errors: dict[str, Tensor]
    loss: Tensor


def train_classifier(
    net,
    rule: str,
    train: Split,
    stream: BatchStream,
    lr: Tensor,
    *,
    updates: int,
    eval_every: int,
    evals: dict[str, Split],
    steps: int = 64,
    state_lr: float = 0.1,
    eval_at_start: bool = False,
    targets: Tensor | None = None,
) -> Curves:
    """SGD with ``rule`` on ``net`` (an :class:`~predcode.experiments.ensemble.Ensemble`)
    for ``updates`` mini-batches drawn from ``stream`` (epoch after epoch), evaluating the
    classification error of every run on every split in ``evals`` each ``eval_every``
    updates.  ``targets`` (default: one-hot labels) are the regression targets."""
    y_all = train.onehot() if targets is None else targets
    at: list[int] = []
    errors: dict[str, list[Tensor]] = {k: [] for k in evals}
    losses: list[Tensor] = []

    def evaluate(k: int) -> None:
        at.append(k)
        for name, split in evals.items():
            errors[name].append(net.error_rate(split.x, split.y))

    if eval_at_start:
        evaluate(0)
    done, epoch = 0, 0
    while done < updates:
        for idx in stream.epoch(epoch):
            losses.append(net.step(rule, train.x[idx], y_all[idx], lr, steps=steps, state_lr=state_lr))
            done += 1
            if done % eval_every == 0:
                evaluate(done)
            if done == updates:
                break
        epoch += 1
    return Curves(at, {k: torch.stack(v, dim=1) for k, v in errors.items()}, torch.stack(losses, dim=1))


def fit_classifier(net: torch.nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int) -> torch.nn.Module:
    """Backprop on ``net`` (logits) with Adam (lr 1e-3) on the cross-entropy of labels ``y``:
    ``epochs`` passes in batches of 128, epoch ``e`` in the order drawn from ``seed + e``.
    Returns ``net``."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + epoch))
        for k in range(0, len(order), 128):
            idx = order[k : k + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net


def train_il_rules(
    sizes: Sequence[int],
    act: str,
    train: Split,
    stream: BatchStream,
    grid: Grid,
    *,
    updates: int,
    eval_every: int,
    evals: dict[str, Split],
    steps: int,
    state_lr: float,
) -> Iterator[tuple[str, Any, Curves]]:
    """Every rule of :data:`IL_RULES` in turn, an ensemble of ``grid``'s runs (Xavier-uniform
    initial weights from each run's seed) trained by :func:`train_classifier`: yields
    ``(rule, ensemble, curves)``."""
    from .ensemble import Ensemble

    for rule in IL_RULES:
        net = Ensemble.from_seeds(sizes, act, grid.seed_of_run, "xavier_uniform")
        curves = train_classifier(
            net,
            rule,
            train,
            stream,
            grid.lr_tensor(),
            updates=updates,
            eval_every=eval_every,
            evals=evals,
            steps=steps,
            state_lr=state_lr,
        )
        yield rule, net, curves


def classifier_result(
    rule: str, net, curves: Curves, grid: Grid, val_metric: Tensor, test_metric: Tensor, **at_best: Tensor
) -> dict[str, Any]:
    """One rule's result after :func:`train_classifier` on ``grid``: :func:`lr_selection`
    (``at_best``: further per-run metrics reported at the chosen rate), the test-error curve
    of every seed at the chosen rate (``curve_best``), the count of diverged runs and, for
    ``epc``, the equilibrium statistics of ``net``."""
    best, out = lr_selection(val_metric, test_metric, grid, at_best=at_best)
    out["curve_best"] = curves.errors["test"].reshape(len(grid.seeds), len(grid.lrs), -1)[:, best]
    out["diverged_runs"] = int((~net.finite()).sum())
    if rule == "epc":
        out["equilibrium"] = net.equilibrium_log.summary()
    return out


def library_check(
    sizes: Sequence[int],
    act: str,
    rule: str,
    train: Split,
    *,
    lr: float,
    steps: int,
    state_lr: float,
    init: str = "xavier_uniform",
    batch: int = 2,
    updates: int = 2,
    seeds: Sequence[int] = (0, 1),
) -> float:
    """Max relative weight difference after ``updates`` steps between the ensemble engine and
    the library's rule on ``PCGraph`` (same model, same batches): rounding level (~1e-6 in
    float32) means the experiment measures the library's algorithm."""
    from .ensemble import Ensemble, check_against_library, make_model

    models = [make_model(sizes, act, s, init) for s in seeds]
    net = Ensemble.from_models(models, act)
    stream = BatchStream(len(train), batch, list(seeds))
    batches = []
    y_all = train.onehot(sizes[-1])
    for idx in stream.epoch(0):
        batches.append((train.x[idx], y_all[idx]))
        if len(batches) == updates:
            break
    return check_against_library(
        net, models, rule, batches, torch.full((len(seeds),), lr), steps=steps, state_lr=state_lr
    )

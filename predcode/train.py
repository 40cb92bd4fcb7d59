"""Training: build model, rule and optimizer from a :class:`TrainConfig`, run epochs with
a progress bar, write metrics as JSON lines and atomic checkpoints, resume exactly.

With ``compare_bp`` a second copy of the model, from the *same initial weights*, is
trained by backprop on the *same batches in the same order*, step by step beside the
predictive coding run.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm.auto import tqdm

from . import checkpoint
from .config import TrainConfig
from .distributed import SINGLE, World
from .errors import OptionError, PredcodeError
from .graph import PCGraph
from .inference import StopRule, make_solver
from .models import cnn, mlp, resnet, rosenbaum_cnn, vgg5, vgg7
from .running_stats import in_eval_mode
from .rules import (Backprop, ErrorPC, FixedPrediction, IncrementalPC, InferenceLearning, LearningRule,
                    ZIL)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# -- builders --------------------------------------------------------------------------
IMAGE_SHAPES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32)}
"""``(channels, height = width)`` of each image dataset, for the image models."""

MODELS = ("mlp", "cnn", "vgg5", "vgg7", "resnet", "rosenbaum-cnn")


def flat_inputs(cfg: TrainConfig) -> bool:
    """Whether the model reads flattened images (the MLP) or ``[N, C, H, W]`` images."""
    return cfg.model == "mlp"


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model named by ``cfg.model`` (factories live in :mod:`predcode.models`).

    ``mlp`` uses ``sizes``; the image models take their input shape from ``dataset`` and
    ``channels`` (``cnn``: per pooled block, default [32, 64]; ``resnet``: per stage,
    default [16, 32, 64]); ``vgg5``/``vgg7`` scale the pcx channels by ``width``."""
    if cfg.model == "mlp":
        return mlp(cfg.sizes, act=cfg.activation, output_energy=cfg.output_energy)
    if cfg.model not in MODELS:
        raise OptionError(f"unknown model '{cfg.model}'; choose one of {list(MODELS)}")
    dataset = cfg.dataset.lower().replace("_", "-")
    if dataset not in IMAGE_SHAPES:
        raise OptionError(f"model '{cfg.model}' needs an image dataset, one of {sorted(IMAGE_SHAPES)}")
    in_channels, size = IMAGE_SHAPES[dataset]
    common = dict(act=cfg.activation, output_energy=cfg.output_energy)
    if cfg.model == "cnn":
        return cnn(cfg.channels or (32, 64), in_channels, 10, size, batch_norm=cfg.batch_norm,
                   **common)
    if cfg.model == "vgg5":
        return vgg5(in_channels, 10, size, width=cfg.width, batch_norm=cfg.batch_norm, **common)
    if cfg.model == "vgg7":
        return vgg7(in_channels, 10, size, width=cfg.width, batch_norm=cfg.batch_norm, **common)
    if cfg.model == "resnet":
        return resnet(in_channels, 10, cfg.channels or (16, 32, 64), batch_norm=cfg.batch_norm,
                      **common)
    if dataset != "mnist" and dataset != "fashion-mnist":
        raise OptionError("rosenbaum-cnn reads 28x28 grey images (mnist, fashion-mnist)")
    return rosenbaum_cnn(output_energy=cfg.output_energy)


def build_rule(cfg: TrainConfig) -> LearningRule:
    if cfg.rule == "bp":
        return Backprop()
    if cfg.rule in ("fa", "dfa", "dtp"):  # issue #8 part 4 (defaults of each rule)
        from .rules import DifferenceTargetPropagation, DirectFeedbackAlignment, FeedbackAlignment
        return {"fa": FeedbackAlignment, "dfa": DirectFeedbackAlignment,
                "dtp": DifferenceTargetPropagation}[cfg.rule](seed=cfg.seed)
    if cfg.rule == "fixed-prediction":
        return FixedPrediction(lr=cfg.state_lr, steps=cfg.steps or None)
    if cfg.rule == "zil":
        return ZIL(lr=cfg.state_lr)
    solver = make_solver(cfg.solver, cfg.state_lr, cfg.state_momentum)
    if cfg.rule == "ep":  # the nudged phase relaxes with the configured solver and steps
        from .rules import EquilibriumPropagation
        return EquilibriumPropagation(solver=solver, stop=StopRule(max_steps=cfg.steps))
    if cfg.rule == "ipc":
        return IncrementalPC(solver, StopRule(max_steps=cfg.steps))
    kind = ErrorPC if cfg.rule == "epc" else InferenceLearning
    rule = kind(solver, StopRule(max_steps=cfg.steps), compile=cfg.compile)
    if cfg.nudge != "clamp":  # output nudging around il/epc
        from .rules.nudging import Nudging
        return Nudging(rule, cfg.nudge_beta, cfg.nudge)
    return rule


def build_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)  # one kernel per step
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise OptionError(f"unknown optimizer '{name}'")


def warmup_cosine(total_steps: int, warmup: float = 0.1, peak: float = 1.1,
                  end: float = 0.1) -> Callable[[int], float]:
    """Learning-rate factor: linear from 1 to ``peak`` over the first ``warmup`` fraction of
    steps, then cosine decay from ``peak`` to ``end`` (the pcx schedule)."""
    warm = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return 1.0 + (peak - 1.0) * step / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    fn = warmup_cosine(total_steps) if cfg.schedule == "warmup-cosine" else (lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


class EpochBatches(Sampler[Tensor]):
    """Yields index batches of one epoch: a permutation fixed by ``(seed, epoch)``.

    Because the order depends only on the seed and the epoch, a run resumed at batch
    ``start`` of an epoch sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size) - self.start

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        for b in range(self.start, math.ceil(self.n / self.batch_size)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]


def batch_loader(images: Tensor, labels: Tensor, sampler: EpochBatches) -> DataLoader:
    """A DataLoader that indexes the tensors with whole index batches (no per-sample collate)."""
    return DataLoader(TensorDataset(images, labels), sampler=sampler, batch_size=None)


def split_validation(images: Tensor, labels: Tensor, n: int, seed: int
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hold out ``n`` training examples (a permutation fixed by ``seed``) for validation."""
    if not 0 < n < images.shape[0]:
        raise OptionError(f"validation must lie in (0, {images.shape[0]}), got {n}")
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + 7919))
    keep, held = order[n:].sort().values, order[:n].sort().values
    return images[keep], labels[keep], images[held], labels[held]


# -- one training run ------------------------------------------------------------------
@dataclass
class Run:
    """A model with its rule, optimizer and schedule, plus running metrics for an epoch."""

    name: str
    graph: PCGraph
    rule: LearningRule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sums: dict[str, float] = field(default_factory=dict)

    def train_batch(self, x: Tensor, y: Tensor, world: World = SINGLE, weight: float = 1.0,
                    batch_size: int | None = None, before_step=None) -> dict[str, float]:
        """One step on ``(x, y)``: this process's part of a global batch of ``batch_size``
        items, weighted ``weight`` (see :mod:`predcode.distributed`). ``before_step(params)``
        runs after the gradients are complete, before the optimizer steps (e.g. an
        :class:`~predcode.tracking.AngleProbe`). Returns the batch's scalars
        (:func:`~predcode.tracking.batch_scalars`) over the global batch."""
        from .tracking import batch_scalars

        if world.active or before_step is not None:
            world.check_rule(self.rule)
            optimizer = world.synced(self.optimizer, weight, before_step)
        else:
            optimizer = self.optimizer
        stats = self.rule.step(self.graph, x, y, optimizer)
        self.scheduler.step()
        scalars = batch_scalars(self.graph, stats, y)
        if world.active:  # batch means over the global batch
            scalars = dict(zip(scalars, world.weighted_sum(list(scalars.values()), weight)))
        n = batch_size or y.shape[0]
        s = self.sums
        s["n"] = s.get("n", 0) + n
        s["batches"] = s.get("batches", 0) + 1
        s["loss"] = s.get("loss", 0.0) + scalars["loss"] * n
        s["correct"] = s.get("correct", 0) + round(scalars.get("accuracy", 0.0) * n)
        if stats.energy_final is not None:
            s["energy"] = s.get("energy", 0.0) + (
                scalars["energy/total_final"] if world.active else float(stats.energy_final))
            s["steps"] = s.get("steps", 0) + (
                scalars["inference/steps"] if world.active else stats.steps)
        return scalars

    def summary(self) -> dict[str, float]:
        s = self.sums
        if not s.get("n"):
            return {}
        out = {"loss": s["loss"] / s["n"], "train_acc": s["correct"] / s["n"]}
        if "energy" in s:
            out["energy"] = s["energy"] / s["batches"]
            out["inference_steps"] = s["steps"] / s["batches"]
        return out

    def state_dict(self) -> dict:
        return {"model": self.graph.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sums": dict(self.sums),
                **({"rule": self.rule.state_dict()} if hasattr(self.rule, "state_dict") else {})}

    def load_state_dict(self, state: dict) -> None:
        self.graph.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sums = dict(state["sums"])
        if state.get("rule"):  # a rule's own learned state (e.g. DTP's inverses)
            self.rule.load_state_dict(self.graph, state["rule"])


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> dict:
    """Feed-forward test accuracy, in eval mode (batch norm uses its running statistics
    and records nothing from the test images; dropout is off); every module's mode is
    restored afterwards."""
    correct, n = 0, labels.shape[0]
    with in_eval_mode(model.modules()):
        for i in range(0, n, batch_size):
            out = model(images[i:i + batch_size])
            correct += int((out.argmax(dim=-1) == labels[i:i + batch_size]).sum())
    return {"test_acc": correct / n}


# -- the trainer -----------------------------------------------------------------------
class Trainer:
    """Trains the runs of a config (the rule, and backprop beside it with ``compare_bp``)."""

    def __init__(self, cfg: TrainConfig, data: tuple[Tensor, Tensor, Tensor, Tensor],
                 progress: bool = True, world: World = SINGLE) -> None:
        self.cfg = cfg.validate()
        self.world = world  # several processes: see predcode.distributed
        device, dtype = world.device(cfg.device), DTYPES[cfg.dtype]
        self.device = device
        train_x, train_y, test_x, test_y = data
        self.validation = None
        if cfg.validation:
            train_x, train_y, val_x, val_y = split_validation(train_x, train_y, cfg.validation, cfg.seed)
            self.validation = (val_x.to(device, dtype), val_y.to(device))
        self.train = (train_x.to(device, dtype), train_y.to(device))
        self.test = (test_x.to(device, dtype), test_y.to(device))
        self.sampler = EpochBatches(train_x.shape[0], cfg.batch_size, cfg.seed)
        self.batches_per_epoch = math.ceil(train_x.shape[0] / cfg.batch_size)
        if cfg.max_batches:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg.max_batches)
        total = self.batches_per_epoch * cfg.epochs
        torch.manual_seed(cfg.seed)
        model = build_model(cfg).to(device, dtype)
        self.runs = [self._run(cfg.rule, model, build_rule(cfg), cfg.lr, cfg.weight_decay, total)]
        if cfg.compare_bp and cfg.rule != "bp":
            twin = copy.deepcopy(model)  # same initial weights
            self.runs.append(self._run("bp", twin, Backprop(), cfg.bp_lr, cfg.bp_weight_decay, total))
        self.epoch, self.batch = 0, 0
        self.progress = progress and world.is_main
        self.run_dir = Path(cfg.run_dir)
        self.history: list[dict] = []
        self.tracker = None  # TensorBoard (rank 0, cfg.tensorboard), opened by fit()

    def _run(self, name, model, rule, lr, wd, total) -> Run:
        optimizer = build_optimizer(self.cfg.optimizer, model.parameters(), lr, wd)
        return Run(name, PCGraph(model), rule, optimizer, build_scheduler(self.cfg, optimizer, total))

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    # checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": self.cfg.to_dict(), "epoch": self.epoch, "batch": self.batch,
                "runs": {r.name: r.state_dict() for r in self.runs},
                "rng": torch.get_rng_state(), "history": json.dumps(self.history)}

    def save_checkpoint(self) -> Path:
        """Write the checkpoint (rank 0 only: every rank holds the same state)."""
        if not self.world.is_main:
            return self.checkpoint_path
        return checkpoint.save(self.checkpoint_path, self.state_dict())

    # settings that may differ between a checkpoint and the run resuming it
    RESUMABLE_CHANGES = ("epochs", "run_dir", "device", "tensorboard", "angle_every")

    def resume(self, path: str | Path | None = None) -> None:
        """Restore weights, optimizer and schedule state, position and metrics (on any
        number of processes: every rank reads the checkpoint rank 0 wrote). The metrics
        file is rewritten from the checkpoint's history, so epochs finished after the
        checkpoint by an interrupted run are not listed twice."""
        state = checkpoint.load(path or self.checkpoint_path, device=self.device)
        saved = {k: v for k, v in state["config"].items() if k not in self.RESUMABLE_CHANGES}
        current = {k: v for k, v in self.cfg.to_dict().items() if k in saved}
        if saved != current:
            diff = sorted(k for k in saved if saved[k] != current[k])
            raise PredcodeError(f"checkpoint was written with different settings: {diff}")
        runs = {r.name: r for r in self.runs}
        for name, run_state in state["runs"].items():
            runs[name].load_state_dict(run_state)
        self.epoch, self.batch = state["epoch"], state["batch"]
        torch.set_rng_state(state["rng"])
        self.history = json.loads(state["history"])
        if self.world.is_main and self.metrics_path.exists():
            tmp = self.metrics_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
            tmp.replace(self.metrics_path)

    # metrics ---------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.world.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # the loop --------------------------------------------------------------------
    def fit(self, stop_after_batches: int | None = None) -> list[dict]:
        """Train until ``cfg.epochs`` (or ``stop_after_batches`` batches in this call, for
        tests of interruption). Returns the per-epoch history."""
        cfg, done = self.cfg, 0
        train_x, train_y = self.train
        if cfg.tensorboard and self.world.is_main and self.tracker is None:
            from .tracking import TensorBoardTracker

            self.tracker = TensorBoardTracker(self.run_dir / "tb", purge_step=self.global_step + 1)
        while self.epoch < cfg.epochs:
            self.sampler.set_epoch(self.epoch, self.batch)
            remaining = self.batches_per_epoch - self.batch
            bar = tqdm(total=self.batches_per_epoch, initial=self.batch, disable=not self.progress,
                       desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=True, mininterval=0.5)
            start = time.perf_counter()
            for k, index in enumerate(self.sampler):  # the global batch; this rank's slice
                if k >= remaining:
                    break
                local, weight = self.world.shard(index)
                x, y = train_x[local], train_y[local]
                self._train_step(x, y, weight, index.shape[0])
                self.batch += 1
                done += 1
                bar.update(1)
                if self.batch % 20 == 0 or self.batch == self.batches_per_epoch:
                    bar.set_postfix(self._postfix(), refresh=False)
                if cfg.checkpoint_every and self.batch % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if stop_after_batches is not None and done >= stop_after_batches:
                    bar.close()
                    self._flush_tracker()
                    return self.history
            bar.close()
            self._end_epoch(time.perf_counter() - start)
        self._flush_tracker()
        return self.history

    @property
    def global_step(self) -> int:
        """Batches trained since the start (the TensorBoard step)."""
        return self.epoch * self.batches_per_epoch + self.batch

    def _train_step(self, x: Tensor, y: Tensor, weight: float, batch_size: int) -> None:
        """Every run on this rank's part of one global batch; TensorBoard scalars."""
        step = self.global_step + 1
        angle_due = (self.cfg.tensorboard and self.cfg.angle_every > 0
                     and (step - 1) % self.cfg.angle_every == 0)  # the same on every rank
        for run in self.runs:
            probe = None
            if angle_due and not isinstance(run.rule, Backprop):
                from .tracking import AngleProbe

                probe = AngleProbe(run.graph, x, y, self.world, weight)
            lr = run.optimizer.param_groups[0]["lr"]  # the rate this step uses
            scalars = run.train_batch(x, y, self.world, weight, batch_size, probe)
            if self.tracker is not None:
                self.tracker.batch(run.name, step, scalars, probe.angles if probe else None, lr)

    def _flush_tracker(self) -> None:
        if self.tracker is not None:
            self.tracker.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (if any)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def _postfix(self) -> dict[str, str]:
        post = {}
        for run in self.runs:
            s = run.summary()
            for key in ("energy", "loss", "train_acc"):
                if key in s:
                    post[f"{run.name}_{key.replace('train_', '')}"] = f"{s[key]:.4g}"
        return post

    def _end_epoch(self, seconds: float) -> None:
        record = {"epoch": self.epoch + 1, "seconds": round(seconds, 3)}
        for run in self.runs:
            record[run.name] = {**run.summary(), **evaluate(run.graph.model, *self.test)}
            if self.validation is not None:
                val = evaluate(run.graph.model, *self.validation)
                record[run.name]["val_acc"] = val["test_acc"]
            run.sums = {}
        self.history.append(record)
        self._log(record)
        if self.tracker is not None:
            self.tracker.epoch(self.global_step, record)
        if self.progress:
            tqdm.write(format_epoch(record))
        self.epoch += 1
        self.batch = 0
        self.save_checkpoint()


def format_epoch(record: dict) -> str:
    parts = [f"epoch {record['epoch']} ({record['seconds']:.1f} s)"]
    for name, m in record.items():
        if isinstance(m, dict):
            parts.append(f"{name}: test acc {m['test_acc']:.4f}, loss {m.get('loss', float('nan')):.4f}")
    return " | ".join(parts)

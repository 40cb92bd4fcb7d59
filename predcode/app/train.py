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
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm.auto import tqdm

from ..atomic import atomic_write, to_jsonable
from ..exceptions import DivergenceError, NonFiniteError, OptionError, PredcodeError
from ..graph import PCGraph
from ..rules import Backprop, LearningRule
from ..running_stats import in_eval_mode
from . import checkpoint
from .config import TrainConfig, check_device
from .distributed import SINGLE, World
from .registry import MODELS, RULES

if TYPE_CHECKING:
    from .tracking import TensorBoardTracker

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# -- builders --------------------------------------------------------------------------


def _to(x: Tensor, device, dtype) -> Tensor:
    """Floating inputs in the model's dtype; integer token ids stay integers."""
    return x.to(device, dtype) if x.is_floating_point() else x.to(device)


def flat_inputs(cfg: TrainConfig) -> bool:
    """Whether the model reads flattened images (the MLP) or ``[N, C, H, W]`` images."""
    return "flat-inputs" in MODELS[cfg.model].tags


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model named by ``cfg.model``, from its builder in
    :data:`predcode.app.registry.MODELS` (the factories live in :mod:`predcode.models`).

    ``mlp`` uses ``sizes``; the image models take their input shape from ``dataset`` and
    ``channels`` (``cnn``: per pooled block, default [32, 64]; ``resnet``: per stage,
    default [16, 32, 64]); ``vgg5``/``vgg7`` scale the pcx channels by ``width``."""
    return MODELS.build(cfg.model, cfg)


def build_rule(cfg: TrainConfig) -> LearningRule:
    """The learning rule named by ``cfg.rule``, from its builder in
    :data:`predcode.app.registry.RULES`."""
    return RULES.build(cfg.rule, cfg)


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


def warmup_cosine(total_steps: int, warmup: float = 0.1, peak: float = 1.1, end: float = 0.1) -> Callable[[int], float]:
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
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


def batch_loader(images: Tensor, labels: Tensor, sampler: EpochBatches) -> DataLoader:
    """A DataLoader that indexes the tensors with whole index batches (no per-sample collate)."""
    return DataLoader(TensorDataset(images, labels), sampler=sampler, batch_size=None)


def split_validation(images: Tensor, labels: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hold out ``n`` training examples (a permutation fixed by ``seed``) for validation."""
    if not 0 < n < images.shape[0]:
        raise OptionError(f"validation must lie in (0, {images.shape[0]}), got {n}")
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + 7919))
    keep, held = order[n:].sort().values, order[:n].sort().values
    return images[keep], labels[keep], images[held], labels[held]


# -- one training run ------------------------------------------------------------------
@runtime_checkable
class StatefulRule(Protocol):
    """A learning rule with learned state of its own, saved in checkpoints (e.g. target
    propagation's inverses)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, graph: PCGraph, state: dict[str, Any]) -> None: ...


@dataclass
class Run:
    """A model with its rule, optimizer and schedule, plus running metrics for an epoch."""

    name: str
    graph: PCGraph
    rule: LearningRule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sums: dict[str, float] = field(default_factory=dict)
    initial_scale: float = 0.0  # largest |weight| at the start (to diagnose a blow-up)

    def __post_init__(self) -> None:
        from ..finite import largest

        self.initial_scale = largest(self.graph.model.parameters())

    def train_batch(
        self,
        x: Tensor,
        y: Tensor,
        world: World = SINGLE,
        weight: float = 1.0,
        batch_size: int | None = None,
        before_step=None,
    ) -> dict[str, float]:
        """One step on ``(x, y)``: this process's part of a global batch of ``batch_size``
        items, weighted ``weight`` (see :mod:`predcode.app.distributed`). ``before_step(params)``
        runs after the gradients are complete, before the optimizer steps (e.g. an
        :class:`~predcode.app.tracking.AngleProbe`). Returns the batch's scalars
        (:func:`~predcode.app.tracking.batch_scalars`) over the global batch."""
        from .tracking import batch_scalars

        optimizer: torch.optim.Optimizer
        if world.active or before_step is not None:
            world.check_rule(self.rule)
            # A SyncedOptimizer stands in for the optimizer it wraps (zero_grad and step, the rest
            # forwarded: all a rule's step uses) without subclassing torch's Optimizer, the type
            # the rules take.
            optimizer = world.synced(self.optimizer, weight, before_step)  # type: ignore[assignment]
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
                scalars["energy/total_final"] if world.active else float(stats.energy_final)
            )
            s["steps"] = s.get("steps", 0) + (scalars["inference/steps"] if world.active else stats.steps)
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
        return {
            "model": self.graph.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sums": dict(self.sums),
            **({"rule": self.rule.state_dict()} if isinstance(self.rule, StatefulRule) else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.graph.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sums = dict(state["sums"])
        if state.get("rule"):  # a rule's own learned state (e.g. DTP's inverses)
            assert isinstance(self.rule, StatefulRule)  # only such a rule's checkpoint holds one
            self.rule.load_state_dict(self.graph, state["rule"])


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> dict:
    """Feed-forward test accuracy (per label: per position for a language model's
    ``(N, length)`` targets), in eval mode (batch norm uses its running statistics and
    records nothing from the test images; dropout is off); every module's mode is restored
    afterwards."""
    correct, n = 0, labels.shape[0]
    with in_eval_mode(model.modules()):
        for i in range(0, n, batch_size):
            out = model(images[i : i + batch_size])
            correct += int((out.argmax(dim=-1) == labels[i : i + batch_size]).sum())
    return {"test_acc": correct / labels.numel()}


# -- the trainer -----------------------------------------------------------------------
class Trainer:
    """Trains the runs of a config (the rule, and backprop beside it with ``compare_bp``)."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: tuple[Tensor, Tensor, Tensor, Tensor],
        progress: bool = True,
        world: World = SINGLE,
    ) -> None:
        self.cfg = cfg.validate()
        check_device(cfg.device)
        self.world = world  # several processes: see predcode.app.distributed
        device, dtype = world.device(cfg.device), DTYPES[cfg.dtype]
        self.device = device
        train_x, train_y, test_x, test_y = data
        self.validation = None
        if cfg.validation:
            train_x, train_y, val_x, val_y = split_validation(train_x, train_y, cfg.validation, cfg.seed)
            self.validation = (_to(val_x, device, dtype), val_y.to(device))
        self.train = (_to(train_x, device, dtype), train_y.to(device))
        self.test = (_to(test_x, device, dtype), test_y.to(device))
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
        self.tracker: TensorBoardTracker | None = None  # TensorBoard (rank 0, cfg.tensorboard), opened by fit()
        self._started = False

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
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "runs": {r.name: r.state_dict() for r in self.runs},
            "rng": torch.get_rng_state(),
            "history": json.dumps(self.history),
        }

    def save_checkpoint(self) -> Path:
        """Write the checkpoint (rank 0 only: every rank holds the same state)."""
        if not self.world.is_main:
            return self.checkpoint_path
        return checkpoint.save(self.checkpoint_path, self.state_dict())

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.toml"

    # settings that may differ between a checkpoint and the run resuming it
    RESUMABLE_CHANGES = ("epochs", "run_dir", "device", "tensorboard", "angle_every")

    def resume(self, path: str | Path | None = None) -> None:
        """Restore weights, optimizer and schedule state, position and metrics (on any
        number of processes: every rank reads the checkpoint rank 0 wrote). The metrics
        file is rewritten from the checkpoint's history (restored if it was deleted), so
        rows written after the checkpoint by an interrupted run are not listed twice."""
        state = checkpoint.load(path or self.checkpoint_path, device=self.device)
        if "config" not in state or "runs" not in state:
            raise OptionError(
                f"{path or self.checkpoint_path} is not a training checkpoint; "
                "resume a folder that 'predcode train' wrote"
            )
        saved = {k: v for k, v in state["config"].items() if k not in self.RESUMABLE_CHANGES}
        current = {k: v for k, v in self.cfg.to_dict().items() if k in saved}
        if saved != current:
            diff = sorted(k for k in saved if saved[k] != current[k])
            raise OptionError(
                f"the checkpoint in {self.run_dir} was written with other settings "
                f"{ {k: saved[k] for k in diff} }; resume with those, or start a "
                "new run (--run-dir NEW or --overwrite)"
            )
        runs = {r.name: r for r in self.runs}
        for name, run_state in state["runs"].items():
            runs[name].load_state_dict(run_state)
        self.epoch, self.batch = state["epoch"], state["batch"]
        torch.set_rng_state(state["rng"])
        self.history = json.loads(state["history"])
        self._write_metrics()

    def start(self) -> None:
        """Prepare the run folder (rank 0): remove temporary files a killed run left, write
        the resolved config (``config.toml``) and the metrics so far."""
        self._started = True
        if not self.world.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stray_temporaries(self.run_dir)
        atomic_write(self.config_path, self.cfg.to_toml().encode())
        self._write_metrics()

    # metrics ---------------------------------------------------------------------
    def _write_metrics(self) -> None:
        """``metrics.jsonl``: one JSON line per finished epoch, the history exactly as the
        last checkpoint holds it (written whole, atomically, after the checkpoint)."""
        if not self.world.is_main:
            return
        lines = "".join(json.dumps(to_jsonable(r), allow_nan=False) + "\n" for r in self.history)
        atomic_write(self.metrics_path, lines.encode())

    # the loop --------------------------------------------------------------------
    def fit(self, stop_after_batches: int | None = None) -> list[dict]:
        """Train until ``cfg.epochs`` (or ``stop_after_batches`` batches in this call, for
        tests of interruption). Returns the per-epoch history."""
        cfg, done = self.cfg, 0
        train_x, train_y = self.train
        if not self._started:
            self.start()
        if cfg.tensorboard and self.world.is_main and self.tracker is None:
            from .tracking import TensorBoardTracker

            self.tracker = TensorBoardTracker(self.run_dir / "tb", purge_step=self.global_step + 1)
        while self.epoch < cfg.epochs:
            self.sampler.set_epoch(self.epoch, self.batch)
            remaining = self.batches_per_epoch - self.batch
            bar = tqdm(
                total=self.batches_per_epoch,
                initial=self.batch,
                disable=not self.progress,
                desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                leave=True,
                mininterval=0.5,
            )
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
        angle_due = (
            self.cfg.tensorboard and self.cfg.angle_every > 0 and (step - 1) % self.cfg.angle_every == 0
        )  # the same on every rank
        for run in self.runs:
            probe = None
            if angle_due and not isinstance(run.rule, Backprop):
                from .tracking import AngleProbe

                probe = AngleProbe(run.graph, x, y, self.world, weight)
            lr = run.optimizer.param_groups[0]["lr"]  # the rate this step uses
            try:
                scalars = run.train_batch(x, y, self.world, weight, batch_size, probe)
            except (DivergenceError, NonFiniteError) as exc:
                raise self._diagnosed(exc, run, x, step) from exc
            if self.tracker is not None:
                self.tracker.batch(run.name, step, scalars, probe.angles if probe else None, lr)

    def _diagnosed(self, exc: PredcodeError, run: Run, x: Tensor, step: int) -> PredcodeError:
        """``exc`` with where it happened (run, epoch, batch, step) and, for a relaxation
        that diverged at its start, whether the input or the weights are to blame."""
        from ..finite import LARGE_INPUT, largest

        where = f"run '{run.name}', epoch {self.epoch + 1}, batch {self.batch + 1} (training step {step})"
        size, scale = largest([x]), largest(run.graph.model.parameters())
        lr_flag = "--bp-lr" if run.name == "bp" and self.cfg.rule != "bp" else "--lr"
        if size >= LARGE_INPUT:
            cause = (
                f"the input batch reaches {size:.3g}, too large for its energy in "
                f"{x.dtype}: scale the inputs (--normalize)"
            )
        elif scale > 1e3 * max(run.initial_scale, 1e-3):
            cause = (
                f"the weights grew from {run.initial_scale:.3g} at the start to "
                f"{scale:.3g}: the weight updates diverged, lower the weight learning "
                f"rate ({lr_flag}, now {run.optimizer.param_groups[0]['lr']:.3g})"
            )
        elif isinstance(exc, DivergenceError):
            cause = exc.cause + ("" if exc.step == 0 else " (--state-lr, --steps)")
        else:
            return NonFiniteError(f"{where}: {exc}")
        if isinstance(exc, DivergenceError):
            return exc.with_cause(cause, where)
        return NonFiniteError(f"{where}: {str(exc).split(':')[0]}: {cause}")

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
        record: dict[str, float | dict[str, float]] = {"epoch": self.epoch + 1, "seconds": round(seconds, 3)}
        for run in self.runs:
            metrics = {**run.summary(), **evaluate(run.graph.model, *self.test)}
            if self.validation is not None:
                val = evaluate(run.graph.model, *self.validation)
                metrics["val_acc"] = val["test_acc"]
            record[run.name] = metrics
            run.sums = {}
        self.history.append(record)
        self.epoch += 1
        self.batch = 0
        self.save_checkpoint()  # first the checkpoint, then the row: a kill between the two
        self._write_metrics()  # loses the row, and resuming restores it from the checkpoint
        if self.tracker is not None:
            self.tracker.epoch(self.global_step, record)
        if self.progress:
            tqdm.write(format_epoch(record))


def format_epoch(record: dict) -> str:
    parts = [f"epoch {record['epoch']} ({record['seconds']:.1f} s)"]
    for name, m in record.items():
        if isinstance(m, dict):
            parts.append(f"{name}: test acc {m['test_acc']:.4f}, loss {m.get('loss', float('nan')):.4f}")
    return " | ".join(parts)


# -- run folders -----------------------------------------------------------------------
RUN_FILES = ("checkpoint.safetensors", "metrics.jsonl", "config.toml", "tb")
"""What a run folder holds (``tb``: TensorBoard events)."""


def remove_stray_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left behind
    (``.NAME.*.tmp`` of the run's own files); returns them."""
    stray = [p for name in RUN_FILES for p in run_dir.glob(f".{name}.*.tmp")]
    stray += list(run_dir.glob("metrics.jsonl.tmp")) + list(run_dir.glob("metrics.jsonl.tmp*"))
    for p in stray:
        p.unlink(missing_ok=True)
    return stray


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool, restarted: bool = False) -> bool:
    """Refuse to lose a run: a folder that holds one is an error unless ``resume`` or
    ``overwrite`` (which deletes the run's files first); ``resume`` of a folder that does
    not exist is an error.  Returns whether the folder has a checkpoint to resume from."""
    if resume and overwrite:
        raise OptionError("--resume continues a run and --overwrite replaces it; give one")
    if run_dir.exists() and not run_dir.is_dir():
        raise OptionError(f"run folder {run_dir} is a file; give a folder with --run-dir")
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not run_dir.is_dir() and not restarted:
            raise OptionError(
                f"--resume: there is no run folder {run_dir}; check the path (or leave out --resume to start a new run)"
            )
        return (run_dir / "checkpoint.safetensors").is_file()
    if held and not overwrite:
        raise OptionError(
            f"run folder {run_dir} already holds a run ({', '.join(held)}); "
            "continue it with --resume, replace it with --overwrite, or give "
            "another --run-dir"
        )
    if held:  # --overwrite: the old run's files go, anything else in the folder stays
        for name in held:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        remove_stray_temporaries(run_dir)
    return False


def fresh_run_dir(parent: Path) -> Path:
    """A new folder name under ``parent``: the current time, ``YYYYmmdd-HHMMSS`` (with
    ``-2``, ``-3``... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = parent / stamp, 1
    while path.exists() or path.is_symlink():
        n += 1
        path = parent / f"{stamp}-{n}"
    return path


LATEST = "latest"


def link_latest(run_dir: Path) -> Path | None:
    """Point ``PARENT/latest`` at ``run_dir`` (a relative symbolic link, replaced
    atomically); a real folder of that name is left alone (None)."""
    link = run_dir.parent / LATEST
    if link.exists() and not link.is_symlink():
        return None
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(run_dir.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # a file system without symbolic links
        tmp.unlink(missing_ok=True)
        return None
    return link


def resolve_latest(path: Path) -> Path:
    """The run folder that ``path`` (``runs/latest`` by default) names, following the link."""
    if not path.exists():
        raise OptionError(f"--resume: there is no run to resume at {path}; give its folder with --run-dir")
    return path.parent / os.readlink(path) if path.is_symlink() else path

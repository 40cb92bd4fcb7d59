r"""Experiment tracking: TensorBoard scalars of a training run (``--tensorboard``).

The trainer writes to ``RUN_DIR/tb`` (read with ``tensorboard --logdir RUN_DIR/tb``),
under one prefix per run (``il/...``, ``bp/...`` with ``--compare-bp``), at the global
step (optimizer steps since the start of training):

=================================  ============================================================
tag                                what
=================================  ============================================================
``RUN/loss``                       feed-forward loss of the batch (what backprop minimises)
``RUN/accuracy``                   training accuracy of the batch
``RUN/lr``                         weight learning rate
``RUN/energy/total_initial``       energy before relaxation (output clamped), batch mean
``RUN/energy/total_final``         energy after relaxation
``RUN/energy/node/NAME``           each non-input node's energy after relaxation
``RUN/inference/steps``            inference steps taken
``RUN/inference/grad_norm_final``  state-gradient norm at the last inference step
``RUN/angle/LAYER``                angle (degrees) between the rule's weight gradient and
                                   backprop's on the same batch, per layer (every
                                   ``angle_every`` steps)
``RUN/angle/overall``              the same over all parameters at once
``RUN/epoch/KEY``                  the epoch's summary: ``loss``, ``train_acc``, ``test_acc``,
                                   ``val_acc``, ``energy``, ``inference_steps``
=================================  ============================================================

The angle compares update *directions*: 0 degrees means the rule moves the weights the way
backprop would (exactly so for fixed prediction and Z-IL), 90 degrees means unrelated.
For incremental PC, whose weights move at every inference step, it is the angle of the
first of the ``T`` updates of the batch. Measuring it does not change training: the
rule's gradients are restored before the optimizer steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..exceptions import OptionError
from ..graph import PCGraph
from ..plotting import tensorboard_convergence_layout
from ..rules import Backprop, StepStats
from ..running_stats import frozen_running_stats


def _layer(name: str) -> str:
    """The module a parameter belongs to: ``"3.weight" -> "3"`` (``"model"`` at top level)."""
    return name.rsplit(".", 1)[0] if "." in name else "model"


def angle_degrees(a: Tensor, b: Tensor) -> float:
    """The angle between two tensors as vectors, in degrees (``nan`` if either is zero)."""
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    denom = float(a.norm() * b.norm())
    if denom == 0.0:
        return math.nan
    cos = max(-1.0, min(1.0, float(a @ b) / denom))
    return math.degrees(math.acos(cos))


def gradient_angles(pc: Mapping[str, Tensor], bp: Mapping[str, Tensor]) -> dict[str, float]:
    """Per-layer and overall angles (degrees) between two sets of named gradients.

    Layers group parameters by their module (``"0.weight"`` and ``"0.bias"`` form layer
    ``"0"``); only parameters present in both sets count.
    """
    names = [n for n in pc if n in bp]
    layers: dict[str, list[str]] = {}
    for n in names:
        layers.setdefault(_layer(n), []).append(n)
    out = {}
    for layer, members in layers.items():
        out[layer] = angle_degrees(
            torch.cat([pc[n].reshape(-1) for n in members]), torch.cat([bp[n].reshape(-1) for n in members])
        )
    if names:
        out["overall"] = angle_degrees(
            torch.cat([pc[n].reshape(-1) for n in names]), torch.cat([bp[n].reshape(-1) for n in names])
        )
    return out


class AngleProbe:
    """Measures, just before the optimizer steps, the angle between the gradients in
    ``.grad`` (the learning rule's, after any all-reduce) and backprop's on the same batch.

    Pass it as ``before_step`` of :class:`~predcode.app.distributed.SyncedOptimizer`; after the
    step, :attr:`angles` holds the result (first call of a batch only).
    """

    def __init__(self, graph: PCGraph, inputs, target: Tensor, world=None, weight: float = 1.0) -> None:
        from .distributed import SINGLE

        self.graph, self.inputs, self.target = graph, inputs, target
        self.world, self.weight = world or SINGLE, weight
        self.angles: dict[str, float] | None = None

    def __call__(self, params: list[Tensor]) -> None:
        if self.angles is not None:
            return
        named = [(n, p) for n, p in self.graph.model.named_parameters() if p.requires_grad]
        saved = {id(p): p.grad for _, p in named}
        pc = {n: p.grad.detach().clone() for n, p in named if p.grad is not None}
        try:
            # a measurement: no random draws and no running statistics (batch norm) recorded
            with torch.enable_grad(), torch.random.fork_rng(devices=[]), frozen_running_stats(self.graph):
                for _, p in named:
                    p.grad = None
                Backprop().gradients(self.graph, self.inputs, self.target)
                self.world.all_reduce_grads([p for _, p in named], self.weight)
                bp = {n: p.grad.detach().clone() for n, p in named if p.grad is not None}
        finally:
            for _, p in named:
                p.grad = saved[id(p)]
        self.angles = gradient_angles(pc, bp)


def batch_scalars(graph: PCGraph, stats: StepStats, target: Tensor) -> dict[str, float]:
    """What one training step measured, as named floats (batch means over this process's
    part of the batch): loss, accuracy (of a network with one output) and, for rules that
    relax, energies per node, inference steps and the final state-gradient norm (squared, so
    that the means of several processes combine: take the square root after averaging)."""
    prediction = stats.prediction
    out = {"loss": float(stats.loss)}
    if isinstance(prediction, Tensor):  # several outputs give a tuple, and no single accuracy
        if target.dtype in (torch.int64, torch.int32) and target.shape == prediction.shape[:-1]:
            out["accuracy"] = float((prediction.argmax(dim=-1) == target).float().mean())
        elif target.shape == prediction.shape and prediction.dim() == 2:
            out["accuracy"] = float((prediction.argmax(dim=-1) == target.argmax(dim=-1)).float().mean())
    trace = stats.trace
    if trace is not None and trace.node_energies.numel():
        rows = trace.node_energies.detach().double().cpu()
        out["energy/total_initial"] = float(rows[0].sum())
        out["energy/total_final"] = float(rows[-1].sum())
        for slot, value in zip(graph.slots, rows[-1].tolist()):
            if not slot.is_input:
                out[f"energy/node/{slot.name}"] = value
        out["inference/steps"] = float(trace.steps)
        if trace.grad_norms.numel():
            out["inference/grad_norm_final_sq"] = float(trace.grad_norms[-1]) ** 2
    return out


class TensorBoardTracker:
    """Writes scalars to TensorBoard event files under ``log_dir``.

    ``purge_step``: when resuming at global step ``s``, events at steps ``>= s`` left by
    the interrupted run are hidden, so curves continue without duplicates.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise OptionError("--tensorboard needs the tensorboard package: pip install 'predcode[tb]'") from exc
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step or None)
        tensorboard_convergence_layout(self.writer)  # the energy-convergence charts

    def batch(
        self,
        run: str,
        step: int,
        scalars: Mapping[str, float],
        angles: Mapping[str, float] | None = None,
        lr: float | None = None,
    ) -> None:
        for key, value in scalars.items():
            if key == "inference/grad_norm_final_sq":
                key, value = "inference/grad_norm_final", math.sqrt(max(value, 0.0))
            self.writer.add_scalar(f"{run}/{key}", value, step)
        for layer, value in (angles or {}).items():
            self.writer.add_scalar(f"{run}/angle/{layer}", value, step)
        if lr is not None:
            self.writer.add_scalar(f"{run}/lr", lr, step)

    def epoch(self, step: int, record: Mapping) -> None:
        for run, metrics in record.items():
            if isinstance(metrics, dict):
                for key, value in metrics.items():
                    self.writer.add_scalar(f"{run}/epoch/{key}", value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

"""Running statistics (batch norm) in a predictive coding network.

A normalisation layer with running statistics (``BatchNorm*``, ``InstanceNorm*`` with
``track_running_stats=True``) updates them every time it runs in train mode.  A relaxation
runs every predictor once per inference step, so left alone the statistics would take
``T + 1`` updates per batch, from values that drift away from the feed-forward pass, and
``torch.func.grad`` (the state gradient inside a compiled step) refuses the in-place update
outright.

predcode's rule: **running statistics are updated once per training batch, by the
feed-forward pass, exactly as a backprop step would update them.**  During relaxation and
the weight update the layer normalises by the statistics of the batch it is given (train
mode) without recording them.  A rule's ``gradients`` does this by itself
(:class:`~predcode.rules.base.LearningRule`); :func:`~predcode.inference.relax`, the queries
(:func:`~predcode.query.infer`, :func:`~predcode.query.predict`) and the angle probe of
:mod:`predcode.app.tracking` record nothing.  Eval mode is untouched: the layer uses its
running statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

if TYPE_CHECKING:  # pragma: no cover
    from .graph import PCGraph


def _norm_layers(graph: PCGraph) -> list[_NormBase]:
    """Every normalisation layer in ``graph`` that can keep running statistics (found once
    per graph, :meth:`~predcode.graph.PCGraph.memo`)."""
    return graph.memo(
        "norm_layers", lambda: [m for m in graph.modules() if isinstance(m, _NormBase) and m.running_mean is not None]
    )


def recording_layers(graph: PCGraph) -> list[_NormBase]:
    """The layers of ``graph`` that would update running statistics if run now (train
    mode, ``track_running_stats`` on)."""
    layers = _norm_layers(graph)
    return [m for m in layers if m.training and m.track_running_stats] if layers else layers


@contextmanager
def frozen_running_stats(graph: PCGraph) -> Iterator[None]:
    """Within this block the recording layers of ``graph`` normalise by the batch's own
    statistics and record nothing (``track_running_stats`` off, restored on exit)."""
    layers = recording_layers(graph)
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


@contextmanager
def in_eval_mode(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within this block every module of ``modules`` runs in eval mode; each gets its own
    mode back on exit (a model may mix modes)."""
    modes = [(m, m.training) for m in modules]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def norm_layers_in_eval(graph: PCGraph) -> AbstractContextManager[None]:
    """:func:`in_eval_mode` for the normalisation layers of ``graph`` (their running
    statistics, nothing recorded): for passes that only look at shapes, which use one
    example (a batch norm in train mode refuses a batch of one)."""
    return in_eval_mode(_norm_layers(graph))


def record_running_stats(model: nn.Module, inputs: Sequence[Tensor]) -> None:
    """Update the running statistics once from the feed-forward pass of ``model`` on
    ``inputs`` (what a backprop step's forward pass records); no autograd graph."""
    with torch.no_grad():
        model(*inputs)

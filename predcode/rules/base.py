"""The interface every learning rule follows (what a step reports is
:class:`~predcode.learning.StepStats`; a validated batch, :class:`~predcode.batch.Batch`).

A rule turns one batch ``(inputs, target)`` into parameter gradients (``.grad`` of the
model's parameters) with :meth:`LearningRule.gradients`; :meth:`LearningRule.step` zeroes the
gradients, calls it, and steps any ``torch.optim`` optimizer.  Every rule reports the
feed-forward loss (the output nodes' summed energy at the feed-forward pass, i.e. the
loss backprop would see) and the feed-forward prediction, so rules compare on equal terms.
"""

from __future__ import annotations

import torch

from .._moved import renamed
from ..batch import Inputs, Targets, as_inputs
from ..finite import check_gradients, check_update
from ..graph import PCGraph
from ..learning import StepStats
from ..running_stats import frozen_running_stats, record_running_stats, recording_layers
from ..validate import check_inputs, forward_errors


class LearningRule:
    """Base class: a rule implements :meth:`compute_gradients`; users call
    :meth:`gradients` or :meth:`step`.

    :meth:`gradients` records batch-norm style running statistics once per batch, by the
    feed-forward pass, and runs the rule's own work with them frozen
    (:mod:`predcode.running_stats`), so no rule needs to think about them."""

    records_in_its_forward = False
    """Whether ``compute_gradients`` runs the model's feed-forward pass once and nothing
    else through it (backprop), so that this pass records the running statistics itself."""

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        """This rule's parameter gradients accumulated into ``.grad``, and its stats."""
        raise NotImplementedError

    def gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        """Accumulate this rule's parameter gradients into ``.grad``; return the stats.
        Layers with running statistics record them once, from the feed-forward pass."""
        if self.records_in_its_forward or not recording_layers(graph):  # or frozen already
            return self.compute_gradients(graph, inputs, target)
        listed = as_inputs(inputs)
        check_inputs(graph, listed)
        with forward_errors(graph, listed):
            record_running_stats(graph.model, listed)
        with frozen_running_stats(graph):
            return self.compute_gradients(graph, inputs, target)

    def step(self, graph: PCGraph, inputs: Inputs, target: Targets, optimizer: torch.optim.Optimizer) -> StepStats:
        """One training step: zero grads, compute this rule's gradients, step the optimizer.
        A non-finite loss, gradient or updated parameter is a
        :class:`~predcode.exceptions.NonFiniteError` naming it and the cause (:mod:`predcode.finite`)."""
        optimizer.zero_grad(set_to_none=True)
        stats = self.gradients(graph, inputs, target)
        check_gradients(graph.model, stats.loss, as_inputs(inputs))
        optimizer.step()
        check_update(graph.model, optimizer)
        return stats


_MOVED_TO_BATCH = frozenset(
    {"Batch", "Inputs", "Targets", "target_list", "encode_targets", "output_loss", "output_prediction", "prepare_batch"}
)


def __getattr__(name: str) -> object:
    """The batch helpers that moved to :mod:`predcode.batch` still import from here for one
    release, with a deprecation warning."""
    if name in _MOVED_TO_BATCH:
        from .. import batch

        return renamed(f"predcode.rules.base.{name}", f"predcode.batch.{name}", getattr(batch, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The interface every learning rule follows, and what a training step reports.

A rule turns one batch ``(inputs, target)`` into parameter gradients (``.grad`` of the
model's parameters) with :meth:`LearningRule.gradients`; :meth:`LearningRule.step` zeroes the
gradients, calls it, and steps any ``torch.optim`` optimizer.  Every rule reports the
feed-forward loss (the output nodes' summed energy at the feed-forward pass, i.e. the
loss backprop would see) and the feed-forward prediction, so rules compare on equal terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..exceptions import GraphError, InputError
from ..finite import check_gradients, check_update
from ..graph import PCGraph, prediction_of
from ..inference import Trace
from ..running_stats import frozen_running_stats, record_running_stats, recording_layers
from ..validate import check_inputs, encode_target, forward_errors


@dataclass
class StepStats:
    """What one training step measured (tensors stay on the device; read with float())."""

    loss: Tensor
    prediction: Tensor | tuple[Tensor, ...]  # a tuple (output order) for several outputs
    energy_initial: Tensor | None = None
    energy_final: Tensor | None = None
    trace: Trace | None = None

    @property
    def steps(self) -> int:
        return 0 if self.trace is None else self.trace.steps


@dataclass
class Batch:
    r"""One batch after validation: inputs, feed-forward values and the encoded targets.

    ``targets`` maps every output slot to its encoded target (in ``graph.outputs``
    order); ``loss`` is the sum of the outputs' energies at the feed-forward pass,
    :math:`L = \sum_{o} \mathrm{mean}_b E_o(y_o, \hat\mu_o)`, which is backprop's summed
    loss; ``prediction`` is the output's feed-forward prediction (a tuple, in output
    order, when the model has several outputs).
    """

    inputs: list[Tensor]
    values: list[Tensor]
    targets: dict[int, Tensor]
    loss: Tensor
    prediction: Tensor | tuple[Tensor, ...]

    @property
    def outputs(self) -> list[int]:
        return list(self.targets)

    @property
    def output(self) -> int:
        """The single output slot (error if the model has several)."""
        if len(self.targets) != 1:
            raise GraphError(f"the model has {len(self.targets)} outputs; use batch.targets")
        return next(iter(self.targets))

    @property
    def target(self) -> Tensor:
        """The single output's encoded target (error if the model has several)."""
        return self.targets[self.output]

    def clamped(self) -> list[Tensor]:
        """The feed-forward values with every output set to its target."""
        values = list(self.values)
        for o, y in self.targets.items():
            values[o] = y
        return values


Targets = Tensor | Sequence[Tensor] | Mapping[str, Tensor]
Inputs = Tensor | Sequence[Tensor]


def as_inputs(inputs: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """One input tensor, or a tuple/list of them (one per model input)."""
    if isinstance(inputs, Tensor):
        return [inputs]
    if not isinstance(inputs, (tuple, list)):
        raise InputError(
            f"inputs must be a torch.Tensor or a tuple/list of them, got "
            f"{type(inputs).__module__}.{type(inputs).__name__}; convert with "
            "torch.as_tensor(x) (and .to(the model's dtype))"
        )
    return list(inputs)


def target_list(graph: PCGraph, target: Targets) -> list[Tensor]:
    """The raw targets in ``graph.outputs`` order.

    One output: a tensor (or a one-element tuple/list, or ``{name: tensor}``).  Several
    outputs: a tuple/list in output order or a dict keyed by output node name; anything
    else is an :class:`InputError` that names the outputs.
    """
    outs = graph.outputs
    names = [graph.names[o] for o in outs]
    listing = ", ".join(f"'{n}'" for n in names)
    if isinstance(target, Tensor):
        if len(outs) == 1:
            return [target]
        raise InputError(
            f"the model has {len(outs)} outputs ({listing}) but one target tensor was "
            f"given; pass a tuple/list of {len(outs)} targets in that order or a dict "
            "keyed by output name"
        )
    if isinstance(target, Mapping):
        unknown = [k for k in target if k not in names]
        missing = [n for n in names if n not in target]
        if unknown or missing:
            raise InputError(
                f"targets are keyed by output node name; the model's outputs are "
                f"{listing}"
                + (f"; unknown key(s) {unknown}" if unknown else "")
                + (f"; missing {missing}" if missing else "")
            )
        return [target[n] for n in names]
    if isinstance(target, (tuple, list)):
        if len(target) != len(outs):
            raise InputError(
                f"the model has {len(outs)} output(s) ({listing}) but {len(target)} "
                "targets were given; give one target per output, in that order"
            )
        return list(target)
    raise InputError(
        f"target must be a tensor, a tuple/list of tensors or a dict by output name, got {type(target).__name__}"
    )


def encode_targets(graph: PCGraph, target: Targets, like: Sequence[Tensor]) -> dict[int, Tensor]:
    """Encoded targets (output slot -> value) given tensors ``like`` shaped as each output's
    prediction (in ``graph.outputs`` order)."""
    raw = target_list(graph, target)
    return {o: encode_target(t, p, graph.names[o]) for o, t, p in zip(graph.outputs, raw, like)}


def output_loss(graph: PCGraph, targets: Mapping[int, Tensor], predictions: Sequence[Tensor | None]) -> Tensor:
    r"""The feed-forward loss :math:`L = \sum_o \mathrm{mean}_b E_o(y_o, \hat\mu_o)`."""
    loss: Tensor | None = None
    for o, y in targets.items():
        term = graph.slots[o].node_energy(y, prediction_of(predictions, o)).mean()
        loss = term if loss is None else loss + term
    if loss is None:
        raise GraphError("no target given: the loss needs at least one clamped output")
    return loss


def output_prediction(graph: PCGraph, predictions: Sequence[Tensor | None]) -> Tensor | tuple[Tensor, ...]:
    """The output's prediction, or a tuple of them (output order) for several outputs."""
    outs = [prediction_of(predictions, o) for o in graph.outputs]
    return outs[0] if len(outs) == 1 else tuple(outs)


def prepare_batch(graph: PCGraph, inputs: Tensor | Sequence[Tensor], target: Targets) -> Batch:
    """Validate, run the feed-forward pass (no autograd) and encode the target(s): one
    tensor for a single output, a tuple/list (output order) or dict (by output name) for
    several; every output is clamped to its target."""
    inputs = as_inputs(inputs)
    check_inputs(graph, inputs)
    with torch.no_grad():
        with forward_errors(graph, inputs):
            values, predictions = graph.forward_pass(inputs)
        targets = encode_targets(graph, target, [prediction_of(predictions, o) for o in graph.outputs])
        loss = output_loss(graph, targets, predictions)
    return Batch(inputs, values, targets, loss, output_prediction(graph, predictions))


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

r"""One batch of a training step: the inputs validated, the feed-forward pass run, the
targets encoded and clamped, and the feed-forward loss and prediction every rule reports.

A batch is ``(inputs, target)``: one input tensor or a tuple/list (one per model input);
one target tensor for a single output, a tuple/list (output order) or a dict (by output
name) for several.  :func:`prepare_batch` turns it into a :class:`Batch`; the fused step
(:func:`predcode.learning.learn_step`) takes the same loss, prediction and clamping from
:func:`output_loss`, :func:`output_prediction` and :func:`clamp_outputs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .exceptions import GraphError, InputError
from .graph import PCGraph, prediction_of
from .validate import check_inputs, encode_target, forward_errors


def clamp_outputs(values: Sequence[Tensor], targets: Mapping[int, Tensor]) -> list[Tensor]:
    """``values`` with every output slot set to its target (a new list)."""
    clamped = list(values)
    for o, y in targets.items():
        clamped[o] = y
    return clamped


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
        return clamp_outputs(self.values, self.targets)


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

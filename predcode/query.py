"""Ask a network: clamp any nodes (or masked parts of them), relax the rest, read any node.

``infer`` is the one entry point; classification (inputs clamped, output free),
generation (output clamped, input free) and completion (part of a node clamped) are the
same call with different clamps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .exceptions import InputError
from .graph import PCGraph, prediction_of
from .inference import GradientDescent, Relaxation, Solver, StopRule, Variables, relax
from .running_stats import frozen_running_stats


@dataclass
class Clamp:
    """A clamp on a node: ``value`` where ``mask`` is True (the whole node when ``mask`` is None)."""

    value: Tensor
    mask: Tensor | None = None


def infer(
    graph: PCGraph,
    clamp: Mapping[str | int, Tensor | Clamp],
    *,
    init: Mapping[str | int, Tensor] | None = None,
    solver: Solver | None = None,
    stop: StopRule | int = 100,
    variables: Variables = Variables.STATES,
) -> Relaxation:
    """Clamp the given nodes, relax all others, and return every node's value.

    ``variables``: relax the free nodes' states (sPC) or their errors (ePC, far fewer
    steps on deep graphs; the same equilibria), :class:`~predcode.inference.Variables`.

    Initial values: inputs come from ``clamp`` or ``init`` (an input that is neither is an
    error); every other node starts at the feed-forward pass from the inputs, except where
    ``init`` gives a value.  Clamped values then replace the feed-forward ones.
    """
    init = dict(init or {})
    clamps = {graph.index(k): (v if isinstance(v, Clamp) else Clamp(v)) for k, v in clamp.items()}
    starts = {graph.index(k): v for k, v in init.items()}
    inputs = []
    for i in graph.inputs:
        if i in clamps and clamps[i].mask is None:
            inputs.append(clamps[i].value)
        elif i in starts:
            inputs.append(starts[i])
        elif i in clamps:
            inputs.append(clamps[i].value)
        else:
            raise InputError(f"input '{graph.names[i]}' is neither clamped nor initialised; pass it in clamp= or init=")
    with torch.no_grad(), frozen_running_stats(graph):  # a query records no statistics
        values = graph.feedforward(inputs)
        for i, v in starts.items():
            values[i] = v
        masks = {}
        for i, c in clamps.items():
            if c.value.shape != values[i].shape:
                raise InputError(
                    f"clamp for '{graph.names[i]}' has shape {tuple(c.value.shape)}; "
                    f"the node has shape {tuple(values[i].shape)}"
                )
            if c.mask is None:
                values[i] = c.value
            else:
                values[i] = torch.where(c.mask, c.value, values[i])
                masks[i] = c.mask
        free = [s.index for s in graph.slots if s.index not in clamps or s.index in masks]
        stop = StopRule(max_steps=stop) if isinstance(stop, int) else stop
        return relax(graph, values, free, solver or GradientDescent(0.1), stop, masks=masks, variables=variables)


def predict(
    graph: PCGraph,
    inputs: Tensor,
    *,
    inference: bool = False,
    solver: Solver | None = None,
    stop: StopRule | int = 100,
    variables: Variables = Variables.STATES,
) -> Tensor:
    """Output node's prediction ``mu_out`` for ``inputs``: by the feed-forward pass, or by
    relaxing every non-input node with the output free (``inference=True``; its states
    or its errors, ``variables``)."""
    out = graph.output
    with torch.no_grad(), frozen_running_stats(graph):  # a query records no statistics
        if not inference:
            return prediction_of(graph.forward_pass([inputs])[1], out)
        relaxed = infer(graph, {graph.inputs[0]: inputs}, solver=solver, stop=stop, variables=variables)
        return prediction_of(relaxed.predictions, out)

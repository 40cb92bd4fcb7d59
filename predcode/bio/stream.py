r"""Continuous predictive coding: no phases, no resets, no global clock.

A network runs on a stream of inputs and labels.  At every tick :math:`t` the input node
holds the current input, the output node the current label, and *every* value node and
*every* weight take one step down the same energy, at the same time, from the same errors
(incremental PC, Salvatori et al., run on a stream):

.. math:: x_i(t+1) = x_i(t) - \gamma\, \frac{\partial E}{\partial x_i}\big(x(t), \theta(t)\big),
          \qquad
          \theta(t+1) = \mathrm{opt}\Big(\theta(t),\; \mathrm{mean}_s\,
          \frac{\partial E_s}{\partial \theta}\big(x(t), \theta(t)\big)\Big).

There is no inference phase followed by a learning phase and no reset between examples:
when the input changes, the value nodes carry over the values they had and move from there
(only the very first tick starts them at the feed-forward pass).  Both gradients are local
(each predictor reads only its parents' values), computed from one evaluation of the
energy.  :math:`\gamma` is the Euler step ``dt / tau_x`` of the value dynamics; the weight
optimizer's learning rate is ``dt / tau_w``.

:class:`ContinuousPC` is the network (one :meth:`~ContinuousPC.tick` per time step);
:func:`run_stream` drives it with ``S`` parallel streams that share the weights (a batch
dimension) and switch examples every ``K`` ticks at *staggered* times: stream ``s`` starts
``s * K // S`` ticks into its first example, so examples never change all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..batch import as_inputs
from ..checks import require_positive
from ..exceptions import OptionError
from ..graph import PCGraph
from ..validate import check_inputs, encode_target, forward_errors


@dataclass
class TickStats:
    """One tick: the energy per node summed over the streams, before the step (detached)."""

    energies: Tensor

    @property
    def energy(self) -> Tensor:
        return self.energies.sum()


class ContinuousPC:
    """A PC network updated tick by tick on a stream.

    Args:
        graph: any :class:`~predcode.PCGraph` with one output.
        optimizer: the weights' ``torch.optim`` optimizer, stepped once per tick.
        state_lr: :math:`\\gamma`, the value nodes' step per tick.
    """

    def __init__(self, graph: PCGraph, optimizer: torch.optim.Optimizer, state_lr: float = 0.1) -> None:
        require_positive(state_lr, "state_lr")
        self.graph, self.optimizer, self.state_lr = graph, optimizer, state_lr
        self.params = [p for p in graph.model.parameters() if p.requires_grad]
        self.values: list[Tensor] | None = None  # every slot's value after the last tick
        self.ticks = 0

    def reset(self) -> None:
        """Forget the value nodes (the next tick starts them at the feed-forward pass)."""
        self.values = None

    def _start(self, inputs: list[Tensor]) -> list[Tensor]:
        with torch.no_grad(), forward_errors(self.graph, inputs):
            return [v.detach() for v in self.graph.feedforward(inputs)]

    def tick(self, inputs: Tensor | Sequence[Tensor], target: Tensor | None) -> TickStats:
        """One time step: clamp ``inputs`` and (unless None) the output to ``target``;
        every free node takes one state step and every weight one optimizer step, both from
        the energy at the current values and weights."""
        graph = self.graph
        inputs = as_inputs(inputs)
        check_inputs(graph, inputs)
        if self.values is None or self.values[graph.inputs[0]].shape[0] != inputs[0].shape[0]:
            self.values = self._start(inputs)
        values = list(self.values)
        for i, x in zip(graph.inputs, inputs):
            values[i] = x
        out = graph.output
        if target is not None:
            values[out] = encode_target(target, values[out], graph.names[out])
        clamped = set(graph.inputs) | ({out} if target is not None else set())
        free = [s.index for s in graph.slots if s.index not in clamped and s.children]
        leaves = [s.index for s in graph.slots if s.index not in clamped and not s.children]
        streams = inputs[0].shape[0]
        with torch.enable_grad():
            leaf_states = [values[i].detach().requires_grad_() for i in free]
            for i, x in zip(free, leaf_states):
                values[i] = x
            terms = []
            for slot in graph.slots:
                if slot.is_input:
                    continue
                mu = graph.node_prediction(slot.index, values)
                energy = slot.node_energy
                if slot.index in leaves:  # a free node without children sits at its mode
                    values[slot.index] = energy.mode(mu).detach()
                terms.append(energy(values[slot.index], mu).sum())
            energies = torch.stack(terms)
            grads = torch.autograd.grad(energies.sum(), [*leaf_states, *self.params], allow_unused=True)
        state_grads, weight_grads = grads[: len(free)], grads[len(free) :]
        with torch.no_grad():
            new = [v.detach() for v in values]
            for i, x, g in zip(free, leaf_states, state_grads):
                new[i] = x.detach() - self.state_lr * g if g is not None else x.detach()
            self.optimizer.zero_grad(set_to_none=True)
            for p, g in zip(self.params, weight_grads):
                if g is not None:
                    p.grad = g / streams  # the weights see the mean over streams
            self.optimizer.step()
        self.values = new
        self.ticks += 1
        return TickStats(energies.detach())


def stream_positions(ticks: int, ticks_per_example: int, streams: int, stagger: bool = True) -> Tensor:
    """``[ticks, streams]``: which example of its own sequence every stream shows at every
    tick.  Stream ``s`` is ``offset_s = s * K // S`` ticks into its first example at tick 0
    (``stagger``), so examples of different streams change at different ticks."""
    if ticks_per_example < 1 or streams < 1:
        raise OptionError(f"need ticks_per_example >= 1 and streams >= 1, got {ticks_per_example}, {streams}")
    t = torch.arange(ticks).unsqueeze(1)
    offset = (
        (torch.arange(streams) * ticks_per_example // streams) if stagger else torch.zeros(streams, dtype=torch.long)
    )
    return (t + offset.unsqueeze(0)) // ticks_per_example


def run_stream(
    net: ContinuousPC,
    images: Tensor,
    targets: Tensor,
    ticks_per_example: int,
    *,
    streams: int = 1,
    order: Tensor | None = None,
    stagger: bool = True,
    on_tick: Callable[[int, TickStats], None] | None = None,
) -> int:
    """Show ``images`` (with ``targets``) to ``net`` as ``streams`` parallel streams, each
    example for ``ticks_per_example`` ticks; returns the number of ticks run.

    The examples, in ``order`` (default: as given), are dealt round-robin to the streams
    (stream ``s`` gets ``order[s::S]``); the run lasts until every stream has shown all of
    its examples (the staggered streams wrap around to their first example at the end).
    """
    n = images.shape[0]
    order = torch.arange(n) if order is None else order
    per_stream = len(order) // streams
    if per_stream < 1:
        raise OptionError(f"{len(order)} examples cannot feed {streams} streams")
    sequences = torch.stack([order[s::streams][:per_stream] for s in range(streams)], dim=1)
    ticks = per_stream * ticks_per_example
    position = stream_positions(ticks, ticks_per_example, streams, stagger) % per_stream
    columns = torch.arange(streams)
    for t in range(ticks):
        index = sequences[position[t], columns]
        stats = net.tick(images[index], targets[index])
        if on_tick is not None:
            on_tick(t, stats)
    return ticks

r"""The reference inference-learning step: the textbook algorithm in plain autograd.

Every fast path of the library (the fused :func:`predcode.learning.learn_step`, its
closed-form local products, the error frontier, predictions computed once,
``torch.compile``) is an optimisation of this function, and the tests compare each with
it in float64.  It is written for reading, not for speed.

.. math::
    \mu_i &= f_i(x_{pa(i)};\theta_i), \qquad
    E(x;\theta) = \sum_i \mathrm{mean}_b\, E_i(x_i, \mu_i), \\
    x^{(0)} &= \text{feed-forward pass}, \quad x_{\text{out}} = y, \\
    v^{(t+1)} &= \mathrm{solver}\big(v^{(t)}, \nabla_v \textstyle\sum_b E\big),
        \quad t < T, \qquad v = x \text{ (sPC) or } v = d,\ x_i = \mu_i + d_i \text{ (ePC)}, \\
    g_\theta &= \partial E(x^{(T)};\theta)/\partial\theta \quad (x^{(T)} \text{ held fixed: local}).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .graph import PCGraph
from .inference import Solver, Variables


def reference_step(
    graph: PCGraph,
    inputs: Sequence[Tensor],
    targets: dict[int, Tensor],
    solver: Solver,
    steps: int,
    variables: Variables = Variables.STATES,
) -> tuple[list[Tensor], dict[str, Tensor]]:
    """One inference-learning step: ``(relaxed values, dE/dθ by parameter name)``.

    ``targets`` maps each output slot to its encoded target.  Free nodes without children
    sit at their energy's mode (their exact minimiser); the rest follow ``solver``.
    """
    slots = graph.slots
    with torch.no_grad():
        values, _ = graph.forward_pass(list(inputs))  # 1. feed-forward pass
    values = [v.detach() for v in values]
    for o, y in targets.items():  # 2. clamp the targets
        values[o] = y
    free = graph.free_slots(targets)
    moved = [i for i in free if slots[i].children]  # leaves sit at their mode
    errors = variables is Variables.ERRORS

    def assemble(v: Sequence[Tensor]) -> list[Tensor]:
        """Every value from the solver's variables (a forward sweep for ePC)."""
        xs, given = list(values), dict(zip(moved, v))
        for s in slots:
            if s.index in given:
                xs[s.index] = graph.node_prediction(s.index, xs) + given[s.index] if errors else given[s.index]
            elif s.index in free:
                xs[s.index] = s.node_energy.mode(graph.node_prediction(s.index, xs))
        return xs

    def energy(xs: Sequence[Tensor]) -> Tensor:
        """Per-node energies summed over the batch."""
        return torch.stack(
            [s.node_energy(xs[s.index], graph.node_prediction(s.index, xs)).sum() for s in slots if not s.is_input]
        )

    def grad_fn(v: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        with torch.enable_grad():
            v = [t.detach().requires_grad_() for t in v]
            row = energy(assemble(v))
            return list(torch.autograd.grad(row.sum(), v)), row.detach()

    with torch.no_grad():
        v = [values[i] - graph.node_prediction(i, values) if errors else values[i] for i in moved]
        memory = solver.init(v)  # 3. relax: T solver steps
        for t in range(steps):
            v, memory, _, _ = solver.update(t, v, grad_fn, memory)
        relaxed = [x.detach() for x in assemble(v)]
    named = [(n, p) for n, p in graph.named_parameters() if p.requires_grad]
    with torch.enable_grad():  # 4. local weight gradients
        batch_mean = energy(relaxed).sum() / relaxed[graph.inputs[0]].shape[0]
        grads = torch.autograd.grad(batch_mean, [p for _, p in named], allow_unused=True)
    return relaxed, {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, grads)}

r"""The learning step: what a step reports (:class:`StepStats`), the one weight-gradient
function (:func:`weight_gradients`, :func:`accumulate_weight_gradients`), what a graph's
step needs to know about its parameters (:class:`LearningPlan`), and the fused
inference-learning step (:func:`learn_step`): feed-forward pass, relaxation and local
weight gradients as one pure function of tensors, so that ``torch.compile`` can make it
one region.

.. math::
    x^{(0)} = \text{feed-forward}, \quad
    x^{(t+1)} = \mathrm{solver}\big(x^{(t)}, \partial E/\partial x\big), \; t < T, \qquad
    g_\theta = \partial E(x^{(T)}; \theta)/\partial\theta

Both gradients come from ``torch.func`` transforms (``grad`` over the free states, then
``grad`` over the parameters through ``functional_call``), so no ``.backward()`` and no
Python-side state break the region; inside one region the compiler also shares the work
the feed-forward pass and the weight gradients have in common (the constant first-layer
prediction).  The eager path calls the very same function.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .batch import clamp_outputs, output_loss, output_prediction
from .closed_form import dense_forward, dense_layers
from .energy import Gaussian, unit_precisions
from .graph import PCGraph
from .inference import EnergyLandscape, Solver, Trace, Variables, error_frontier, relax_steps


class _HeldParameter(NamedTuple):
    """One parameter of a :class:`LearningPlan`: its name, the tensor, whether it learned
    when the plan was built, and the module's parameter table and key that held it."""

    name: str
    param: nn.Parameter
    learns: bool
    table: dict[str, nn.Parameter | None]
    key: str

    @classmethod
    def of(cls, root: nn.Module, name: str, param: nn.Parameter) -> _HeldParameter:
        owner, _, key = name.rpartition(".")
        return cls(name, param, param.requires_grad, root.get_submodule(owner)._parameters, key)

    def is_current(self) -> bool:
        """Still held by its module and learning as it did (not replaced, frozen or
        unfrozen since)."""
        return self.param.requires_grad == self.learns and self.table.get(self.key) is self.param


class LearningPlan(nn.Module):
    r"""What a graph's learning step needs to know about its parameters, kept on the graph
    (:func:`learning_plan`) until a parameter is frozen, unfrozen or replaced.

    - Its ``forward`` is the per-node energy as a function of the weights,
      :math:`\mathrm{mean}_b E_i(x_i, f_i(x_{pa(i)};\theta))` at fixed values, and its
      parameters are the model's (so ``torch.func.functional_call`` can differentiate it);
    - ``parameters_held`` and ``trainable_names``: which parameters there were and which learn;
    - ``dense``, ``dense_names`` and ``closed_form``: whether every gradient is a closed-form
      Hebbian product of :mod:`predcode.closed_form`, and under which parameter names;
    - ``compiled``: the compiled copies of :func:`learn_step` for this graph.
    """

    def __init__(self, graph: PCGraph) -> None:
        super().__init__()
        self.graph = graph
        self.parameters_held = [_HeldParameter.of(self, name, p) for name, p in self.named_parameters()]
        """Every parameter as it was when this plan was built (:meth:`is_current`)."""
        self.trainable_names = frozenset(h.name for h in self.parameters_held if h.learns)
        self._every_module = list(graph.modules())
        self._gaussians = [m for m in self._every_module if isinstance(m, Gaussian)]
        self.compiled: dict[Hashable, Callable[..., tuple[dict[str, Tensor], StepStats]]] = {}
        """Compiled copies of :func:`learn_step` for this plan (:func:`compile_learn_step`)."""
        self.dense = dense_layers(graph)
        self.dense_names = self._dense_names()
        self.closed_form = self.dense_names is not None and all(
            isinstance(s.energy, Gaussian) for s in graph.slots if not s.is_input and s.children
        )
        """Whether :func:`learn_step` takes every gradient as a closed-form product (dense
        predictors, Gaussian interior nodes): then it reads no ``params``."""

    def _dense_names(self) -> dict[int, tuple[str, str | None]] | None:
        """``id(linear) -> (weight name, bias name)`` when every node's predictor is a dense
        layer (:mod:`predcode.closed_form`) and the trainable parameters are exactly those layers'
        weights and biases, so that the closed-form Hebbian products give every gradient;
        else ``None`` (autograd takes them)."""
        if self.dense is None:
            return None
        name_of = {id(p): n for n, p in self.named_parameters()}
        names: dict[int, tuple[str, str | None]] = {}
        for dense in self.dense.values():
            linear = dense.linear
            weight = name_of.get(id(linear.weight))
            bias = None if linear.bias is None else name_of.get(id(linear.bias))
            if weight not in self.trainable_names or (linear.bias is not None and bias not in self.trainable_names):
                return None
            names[id(linear)] = (weight, bias)
        covered = {n for pair in names.values() for n in pair if n is not None}
        return names if covered == self.trainable_names else None

    def forward(
        self,
        values: Sequence[Tensor],
        precomputed: Sequence[Tensor | None] | None = None,
        slots: Sequence[int] | None = None,
        differences: dict[int, Tensor] | None = None,
    ) -> Tensor:
        """Per-node batch-mean energies (of ``slots`` only, where given); ``precomputed[i]``,
        where given, is node i's prediction (already computed, with its autograd history
        to the weights); ``differences``: see :meth:`PCGraph.node_energies`."""
        return self.graph.node_energies(values, precomputed, slots, differences)

    def trainable(self) -> dict[str, Tensor]:
        """The parameters that learn, detached (the functional transforms differentiate)."""
        return {h.name: h.param.detach() for h in self.parameters_held if h.param.requires_grad}

    def is_current(self, graph: PCGraph) -> bool:
        """Whether this is still ``graph``'s energy with the same parameters, learning the
        same way: a layer frozen or unfrozen since, or a parameter replaced or removed (a
        new ``nn.Parameter`` assigned, a parametrization registered), needs a new one."""
        return self.graph is graph and all(h.is_current() for h in self.parameters_held)

    def unit_precisions(self) -> tuple[bool, ...]:
        """Which Gaussian energies still skip their precision multiply (checked eagerly):
        part of a compiled step's cache key, since the trace bakes the shortcut in."""
        return unit_precisions(self._gaussians)

    def modes(self) -> tuple[bool, ...]:
        """Every module's ``training`` flag: part of a compiled step's cache key, since
        dropout or batch norm trace different code in train and eval mode and the compiled
        steps guard only on tensors."""
        return tuple(m.training for m in self._every_module)

    def needs_params(self) -> bool:
        """Whether :func:`learn_step` reads the ``params`` it is given (the closed-form
        products read the modules directly)."""
        return not self.closed_form

    def accumulate(self, grads: dict[str, Tensor]) -> None:
        """Add ``grads`` (by parameter name) into the parameters' ``.grad``."""
        for h in self.parameters_held:
            g = grads.get(h.name)
            if g is not None:
                p = h.param
                p.grad = g if p.grad is None else p.grad + g


def learning_plan(graph: PCGraph) -> LearningPlan:
    """``graph``'s :class:`LearningPlan`, kept on the graph and rebuilt when a parameter
    was frozen, unfrozen or replaced since (:meth:`LearningPlan.is_current`)."""
    memos: dict[str, object] = graph.__dict__.setdefault("_memos", {})
    plan = memos.get("learning_plan")
    if not isinstance(plan, LearningPlan) or not plan.is_current(graph):
        plan = memos["learning_plan"] = LearningPlan(graph)
    return plan


def weight_gradients(
    plan: LearningPlan,
    params: dict[str, Tensor],
    values: Sequence[Tensor],
    precomputed: Sequence[Tensor | None] | None = None,
    slots: Sequence[int] | None = None,
    differences: dict[int, Tensor] | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    r"""``(dE/dθ for every parameter named in params, per-node batch-mean energies)`` at
    fixed ``values``: the one weight-gradient function of every rule (the closed-form
    Hebbian products of :mod:`predcode.closed_form` are its tested fast path).

    .. math:: \frac{\partial E}{\partial \theta_i}
              = \mathrm{mean}_b\, \frac{\partial E_i(x_i, f_i(x_{pa(i)};\theta_i))}{\partial\theta_i}
              = -\mathrm{mean}_b\, e_i^\top \frac{\partial f_i}{\partial \theta_i}

    The values are constants, so each parameter's gradient uses only its own node's error
    and its parents' values (a Hebbian product for a linear predictor); ``slots``, where
    given, limits the energy to those nodes (Z-IL updates one layer per step);
    ``differences`` are an error-based relaxation's kept ``x_i - mu_i``
    (:meth:`~predcode.graph.PCGraph.node_energies`).  Inside
    ``torch.compile`` the gradient is ``torch.func.grad`` over ``params`` through
    ``functional_call``; eagerly it is ``torch.autograd.grad`` over the module's own
    parameters (``params`` then only names them), and ``precomputed`` predictions that carry
    their autograd history (the constant ones of the feed-forward pass) are not computed
    again.
    """
    values = [v.detach() for v in values]
    if torch.compiler.is_compiling():

        def total(p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            row: Tensor = torch.func.functional_call(plan, p, (values, None, slots, differences))
            return row.sum(), row

        grads_and_row: tuple[dict[str, Tensor], Tensor] = torch.func.grad(total, has_aux=True)(params)
        return grads_and_row
    named = dict(plan.named_parameters())
    with torch.enable_grad():  # callers may sit inside no_grad (iPC updates within relax)
        row = plan(values, precomputed, slots, differences)
        wanted = [named[n] for n in params]
        grads = (
            torch.autograd.grad(row.sum(), wanted, allow_unused=True)
            if wanted and row.requires_grad
            else [None] * len(wanted)
        )
    out = {n: torch.zeros_like(named[n]) if g is None else g for n, g in zip(params, grads)}
    return out, row.detach()


def accumulate_weight_gradients(
    graph: PCGraph,
    values: Sequence[Tensor],
    slots: Sequence[int] | None = None,
    differences: dict[int, Tensor] | None = None,
) -> Tensor:
    """:func:`weight_gradients` of every learning parameter at ``values``, added into the
    parameters' ``.grad`` (for rules that step the optimizer themselves or update layer
    by layer); returns the per-node batch-mean energies."""
    plan = learning_plan(graph)
    grads, row = weight_gradients(plan, plan.trainable(), values, slots=slots, differences=differences)
    plan.accumulate(grads)
    return row


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


def step_stats(
    graph: PCGraph,
    batch: int,
    loss: Tensor,
    prediction: Tensor | tuple[Tensor, ...],
    rows: Tensor,
    norms: Tensor,
    final: Tensor,
) -> StepStats:
    """A fused step's :class:`StepStats` from the relaxation's record: ``rows`` ``[T, n]``,
    every node's energy summed over the ``batch`` samples before each step; ``norms`` ``[T]``, the
    state-gradient norms; ``final`` ``[n]``, every node's batch-mean energy at the relaxed
    state (:func:`learn_step`, and the native kernel that computes the same numbers)."""
    trace = Trace(graph.names, torch.cat([rows / batch, final.unsqueeze(0)]), norms)
    energy = trace.energy
    return StepStats(loss, prediction, energy[0], energy[-1], trace)


def learn_step(
    plan: LearningPlan,
    params: dict[str, Tensor],
    solver: Solver,
    steps: int,
    inputs: Sequence[Tensor],
    target: Tensor | Sequence[Tensor],
    variables: Variables = Variables.STATES,
) -> tuple[dict[str, Tensor], StepStats]:
    """One inference-learning step on a batch: feed-forward, clamp every output to its
    target (already encoded; a tensor for one output, a sequence in ``graph.outputs``
    order for several), relax every other non-input node for ``steps`` solver steps on
    its state (sPC) or its error (ePC, ``variables``), and take the local weight
    gradients at the relaxed state.  Returns the gradients by parameter name and the
    step's :class:`StepStats`; the loss and prediction are the feed-forward pass's
    (:func:`~predcode.batch.output_loss`, :func:`~predcode.batch.output_prediction`).
    The reference this fused step is tested against is
    :func:`predcode.reference.reference_step`."""
    graph = plan.graph
    outs = graph.outputs
    targets = dict(zip(outs, [target] if isinstance(target, Tensor) else target))
    eager = not torch.compiler.is_compiling()
    closed = plan.dense_names is not None  # every gradient as a closed-form product
    chains = None
    if closed:
        assert plan.dense is not None  # a plan has dense_names only when it has dense layers
        with torch.no_grad():
            values, predictions, chains = dense_forward(graph, plan.dense, list(inputs))
    else:
        with torch.set_grad_enabled(eager):  # eagerly, keep the weights' autograd history
            values, predictions = graph.forward_pass(list(inputs))
    start = [None if p is None else p.detach() for p in predictions]
    loss = output_loss(graph, targets, start)
    prediction = output_prediction(graph, start)
    values = clamp_outputs([v.detach() for v in values], targets)
    # predictions whose parents keep their feed-forward values stay valid
    precomputed = [None if any(o in s.parents for o in outs) else predictions[s.index] for s in graph.slots]
    landscape = EnergyLandscape(
        graph,
        values,
        graph.free_slots(outs),
        chains=chains,
        start_predictions=start,
        precomputed=[None if p is None else start[i] for i, p in enumerate(precomputed)],
        variables=variables,
    )
    with_history = eager and not closed  # the dense feed-forward pass kept no autograd history
    # only the predictions that stay constant keep their autograd history (the weight
    # gradients reuse it); dropping the others' frees the feed-forward pass's saved
    # activations before the relaxation builds its own
    constant = [p if i not in landscape.dynamic and with_history else None for i, p in enumerate(precomputed)]
    if with_history:
        del precomputed, predictions
    fronts = None
    if (
        solver.moves_only_with_gradient and not landscape.leaves and variables is Variables.STATES
    ):  # sPC: errors spread from the outputs
        fronts = error_frontier(graph, landscape.free, outs, steps)
    states, rows, norms = relax_steps(landscape, solver, steps, landscape.initial_states(), fronts)
    if plan.dense_names is not None and landscape.closed_form is not None:  # `closed`, with dense_names narrowed
        grads, final = landscape.closed_form.weight_gradients(states, plan.dense_names)
        return grads, step_stats(graph, len(inputs[0]), loss, prediction, rows, norms, final)
    params = params or plan.trainable()  # the closed form read none, ePC's weights need them
    if landscape.errors:  # ePC: the sweep's values, and the errors kept exactly
        values, predictions = landscape.assemble(states)
        differences = landscape.error_differences(states, values, predictions)
    else:  # sPC: the states are the values (no prediction recomputed here)
        values, differences = landscape.current(states), {}
    grads, final = weight_gradients(plan, params, values, constant, differences=differences)
    return grads, step_stats(graph, len(inputs[0]), loss, prediction, rows, norms, final)


def compile_learn_step(plan: LearningPlan, key: Hashable) -> Callable[..., tuple[dict[str, Tensor], StepStats]]:
    """A compiled :func:`learn_step` for ``plan`` in one configuration ``key`` (solver,
    steps, shapes).

    Each configuration gets its own copy of the function, so its compiled code and guards
    are its own; the guards then keep only the tensors' shapes, dtypes and devices (the
    plan and the configuration, which fix everything else, are the cache key: solver
    settings (:meth:`~predcode.inference.Solver.settings`), steps, unit precisions, node
    shapes, grad mode, every module's train/eval flag), which removes most of the per-call
    guard cost.  The copies live on ``plan`` itself: a cache keyed by ``id(graph)`` could
    hand a new graph that reuses a freed graph's id the old graph's code, which these guards
    would not catch.  Shapes that change (a last, smaller batch) recompile once.
    """
    compiled = plan.compiled.get(key)
    if compiled is None:
        fresh = types.FunctionType(
            learn_step.__code__.replace(), learn_step.__globals__, learn_step.__name__, learn_step.__defaults__
        )
        compiled = torch.compile(
            fresh, dynamic=False, options={"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe}
        )
        plan.compiled[key] = compiled
    return compiled

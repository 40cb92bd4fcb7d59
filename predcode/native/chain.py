r"""The native step of a dense chain: one C call for a whole inference-learning step.

The graph it takes is the most common predictive coding network, a chain of dense layers

.. math:: \mu_l = \mathrm{post}_l\big(W_l\, \mathrm{pre}_l(x_{l-1}) + b_l\big), \qquad
          E = \sum_{l=1}^{L-1} \tfrac12 \lVert x_l - \mu_l \rVert^2 + E_L(y, \mu_L),

(input :math:`x_0`, output clamped to :math:`y` with a squared-error or categorical energy,
at most one element-wise activation on either side of each ``Linear``).  The step is
:func:`predcode.reference.reference_step` for this graph, written out:

1. feed-forward pass :math:`x_l = \mu_l`;
2. ``T`` solver steps (momentum SGD, ``b_0 = g_0``, ``b_t = m b_{t-1} + g_t``,
   ``v <- v - lr b_t``; gradient descent is ``m = 0``) on the states (sPC),
   :math:`\partial E/\partial x_l = e_l - \mathrm{pre}_{l+1}'(x_l) \odot W_{l+1}^\top
   (\mathrm{post}_{l+1}'(a_{l+1}) \odot e_{l+1})`, or on the errors (ePC), through the sweep
   :math:`x_l = \mu_l(x_{l-1}) + e_l` and its reverse
   :math:`G_l = e_l + J_{l+1}^\top(-e_{l+1} + [l+1 < L]\, G_{l+1})`;
3. the Hebbian weight gradients
   :math:`\partial E/\partial W_l = -\tfrac1B \delta_l^\top \mathrm{pre}_l(x_{l-1})`,
   :math:`\partial E/\partial b_l = -\tfrac1B \sum_b \delta_l`,
   :math:`\delta_l = \mathrm{post}_l'(a_l) \odot e_l`, at the relaxed state.

In C (``dense_chain.c``) this is about four passes over memory per layer and step plus the
matrix products, with no per-operation dispatch: on a 2-core CPU the step of pcx's MLP
costs little more than its matrix products.  Its double-precision build is tested equal
to the reference in float64; the float build uses exp-based activations accurate to
about 1e-7 (``tests/test_native.py``).  Anything else (other layers, energies, solvers,
devices) takes :func:`predcode.learning.learn_step`, the PyTorch path, with the same numbers.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..closed_form import dense_layers
from ..energy import Categorical, Gaussian
from ..exceptions import OptionError
from ..graph import PCGraph
from ..inference import SGD, GradientDescent, Solver, Variables
from ..learning import LearningPlan, StepStats, step_stats
from .build import Native, NativeUnavailable, enabled, load

ACTIVATIONS: dict[type[nn.Module], int] = {
    nn.Identity: 0,
    nn.ReLU: 1,
    nn.Tanh: 2,
    nn.Sigmoid: 3,
    nn.SiLU: 6,
    nn.LeakyReLU: 7,
}
"""Activation modules the kernel computes, by code (GELU is 4 with ``approximate='tanh'``,
5 without)."""


def activation_code(modules: Sequence[nn.Module]) -> tuple[int, float] | None:
    """``(code, slope)`` of at most one activation (identities dropped), else ``None``."""
    acts = [m for m in modules if type(m) is not nn.Identity]
    if not acts:
        return 0, 0.0
    if len(acts) > 1:
        return None
    act = acts[0]
    if type(act) is nn.GELU:
        return (4 if act.approximate == "tanh" else 5), 0.0
    code = ACTIVATIONS.get(type(act))
    if code is None:
        return None
    return code, float(act.negative_slope) if isinstance(act, nn.LeakyReLU) else 0.0


@dataclass
class ChainPlan:
    """A graph recognised as a dense chain, with its per-batch-size workspaces."""

    native: Native
    linears: list[nn.Linear]
    dims: list[int]
    pre: list[tuple[int, float]]
    post: list[tuple[int, float]]
    output_kind: int  # 0: squared error, 1: categorical
    gaussians: list[Gaussian]  # the energies whose unit precision the kernel assumes
    workspace_sizes: dict[tuple[int, bool], int] = field(default_factory=dict)
    _arguments: dict[torch.dtype, tuple[Any, ...]] = field(default_factory=dict)

    def _layout(self, dtype: torch.dtype) -> tuple[Any, ...]:
        """The C arrays that describe the chain (widths, activation codes and slopes),
        built once per dtype."""
        if dtype not in self._arguments:
            L = len(self.linears)
            real = ctypes.c_double if dtype == torch.float64 else ctypes.c_float
            self._arguments[dtype] = (
                (ctypes.c_int * (L + 1))(*self.dims),
                (ctypes.c_int * L)(*(c for c, _ in self.pre)),
                (real * L)(*(s for _, s in self.pre)),
                (ctypes.c_int * L)(*(c for c, _ in self.post)),
                (real * L)(*(s for _, s in self.post)),
            )
        return self._arguments[dtype]

    @classmethod
    def of(cls, graph: PCGraph, native: Native) -> ChainPlan | None:
        """The plan for ``graph`` if it is a dense chain the kernel computes, else ``None``."""
        slots = graph.slots
        if len(graph.inputs) != 1 or graph.outputs != [len(slots) - 1] or graph.inputs != [0]:
            return None
        for k, slot in enumerate(slots[1:], start=1):  # x_{k-1} -> x_k, nothing else
            if list(slot.parents) != [k - 1] or list(slots[k - 1].children) != [k]:
                return None
        if slots[-1].children or len(slots) - 1 > 64:
            return None
        dense = dense_layers(graph)
        if dense is None:
            return None
        for slot in slots[1:-1]:
            if not (isinstance(slot.energy, Gaussian) and slot.energy.has_unit_precision()):
                return None
        out = slots[-1].energy
        if isinstance(out, Gaussian) and out.has_unit_precision():
            kind = 0
        elif type(out) is Categorical:
            kind = 1
        else:
            return None
        linears, pre, post = [], [], []
        for k in range(1, len(slots)):
            d = dense[k]
            p, q = activation_code(d.pre), activation_code(d.post)
            if p is None or q is None:
                return None
            linears.append(d.linear)
            pre.append(p)
            post.append(q)
        dims = [linears[0].in_features] + [lin.out_features for lin in linears]
        if any(lin.in_features != dims[k] for k, lin in enumerate(linears)):
            return None
        gaussians = [s.energy for s in slots[1:] if isinstance(s.energy, Gaussian)]
        return cls(native, linears, dims, pre, post, kind, gaussians)

    def accepts(self, x: Tensor, y: Tensor) -> bool:
        """Whether this batch and the weights are where the kernel runs: on the CPU, in
        float32 or float64, 2-d, contiguous weights, no autograd wanted through them."""
        dtype = x.dtype
        if dtype not in (torch.float32, torch.float64) or x.device.type != "cpu":
            return False
        if x.dim() != 2 or y.dim() != 2 or y.dtype != dtype or x.shape[0] != y.shape[0]:
            return False
        if not all(g.has_unit_precision() for g in self.gaussians):  # a precision was set
            return False
        for lin in self.linears:
            w, b = lin.weight, lin.bias
            if w.dtype != dtype or w.device.type != "cpu" or not w.is_contiguous():
                return False
            if b is not None and (b.dtype != dtype or not b.is_contiguous()):
                return False
        return x.shape[0] > 0

    def _workspace(self, batch: int, dtype: torch.dtype, errors: bool) -> Tensor:
        """The step's scratch memory, allocated per step like autograd's saved tensors (so
        that it is not held between steps, while the optimizer runs)."""
        key = (batch, errors)
        size = self.workspace_sizes.get(key)
        if size is None:
            L = len(self.linears)
            dims = (ctypes.c_int * (L + 1))(*self.dims)
            pre = (ctypes.c_int * L)(*(c for c, _ in self.pre))
            fn = self.native.library.dense_chain_workspace_f32
            fn.restype = ctypes.c_size_t
            size = self.workspace_sizes[key] = fn(L, batch, dims, pre, int(errors))
        return torch.empty(size, dtype=dtype)

    def step(
        self, x: Tensor, y: Tensor, solver: Solver, steps: int, variables: Variables
    ) -> tuple[list[tuple[Tensor, Tensor | None]], Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One inference-learning step: ``(grads by linear index as (dW, db), loss,
        prediction, rows [T, L+1], norms [T], final [L+1])``."""
        lr, momentum = solver_settings(solver)
        L = len(self.linears)
        dtype = x.dtype
        double = dtype == torch.float64
        real = ctypes.c_double if double else ctypes.c_float
        ptr = ctypes.c_void_p
        x = x.contiguous()
        y = y.contiguous()
        batch = x.shape[0]
        errors = variables is Variables.ERRORS
        work = self._workspace(batch, dtype, errors)
        # the gradients as views of one buffer, and the trace in another: two allocations
        sizes = [n for lin in self.linears for n in (lin.weight.numel(), 0 if lin.bias is None else lin.bias.numel())]
        flat = torch.split(torch.empty(sum(sizes), dtype=dtype), sizes)
        dW = [flat[2 * k].view_as(lin.weight) for k, lin in enumerate(self.linears)]
        db = [None if lin.bias is None else flat[2 * k + 1] for k, lin in enumerate(self.linears)]
        record = torch.empty(steps * (L + 1) + steps + (L + 1) + 1, dtype=dtype)
        rows = record[: steps * (L + 1)].view(steps, L + 1)
        norms = record[steps * (L + 1) : steps * (L + 2)]
        final = record[steps * (L + 2) : steps * (L + 2) + L + 1]
        loss = record[-1]
        prediction = x.new_empty((batch, self.dims[-1]))
        fn = self.native.library.dense_chain_step_f64 if double else self.native.library.dense_chain_step_f32
        status = fn(
            ptr(self.native.dgemm if double else self.native.sgemm),
            L,
            batch,
            *self._layout(dtype),
            (ptr * L)(*(lin.weight.data_ptr() for lin in self.linears)),
            (ptr * L)(*(None if lin.bias is None else lin.bias.data_ptr() for lin in self.linears)),
            ptr(x.data_ptr()),
            ptr(y.data_ptr()),
            self.output_kind,
            int(errors),
            steps,
            real(lr),
            real(momentum),
            ptr(work.data_ptr()),
            (ptr * L)(*(g.data_ptr() for g in dW)),
            (ptr * L)(*(None if g is None else g.data_ptr() for g in db)),
            0,
            ptr(rows.data_ptr()),
            ptr(norms.data_ptr()),
            ptr(final.data_ptr()),
            ptr(loss.data_ptr()),
            ptr(prediction.data_ptr()),
        )
        if status != 0:
            raise RuntimeError(f"predcode's native dense-chain step failed (status {status})")
        return list(zip(dW, db)), loss, prediction, rows, norms, final


def solver_settings(solver: Solver) -> tuple[float, float]:
    """``(lr, momentum)`` of a solver the kernel runs (plain gradient descent and momentum
    SGD with their own updates)."""
    if isinstance(solver, SGD):
        return solver.lr, solver.momentum
    if isinstance(solver, GradientDescent):
        return solver.lr, 0.0
    raise OptionError(f"the native step runs gradient descent and momentum SGD, not {solver!r}")


def runs_solver(solver: Solver) -> bool:
    """Whether the kernel runs this solver: gradient descent (Euler) or momentum SGD whose
    ``update`` is the class's own (a subclass that changes it takes the PyTorch path)."""
    return isinstance(solver, (GradientDescent, SGD)) and solver.moves_only_with_gradient


def chain_plan(learning: LearningPlan) -> ChainPlan | None:
    """``learning``'s :class:`ChainPlan` (kept on the :class:`~predcode.learning.LearningPlan`,
    which is rebuilt when a parameter is replaced, frozen or unfrozen), or ``None`` where
    the graph is not a dense chain or the kernels are unavailable (said once, as a warning)."""
    memo: dict[str, ChainPlan | None] = learning.__dict__
    if "native_plan" not in memo:
        plan = None
        if enabled() and learning.dense_names is not None:
            probe = ChainPlan.of(learning.graph, native=None)  # type: ignore[arg-type]
            if probe is not None:
                try:
                    probe.native = load()
                    plan = probe
                except NativeUnavailable as why:
                    warnings.warn(str(why), RuntimeWarning, stacklevel=4)
        memo["native_plan"] = plan
    return memo["native_plan"]


def native_learn_step(
    learning: LearningPlan,
    solver: Solver,
    steps: int,
    inputs: Sequence[Tensor],
    targets: Sequence[Tensor],
    variables: Variables,
) -> tuple[dict[str, Tensor], StepStats] | None:
    """:func:`predcode.learning.learn_step` by the kernel, or ``None`` where it does not
    apply (then the caller takes the PyTorch path): a dense chain on the CPU, one input,
    gradient descent or momentum SGD."""
    if len(inputs) != 1 or len(targets) != 1 or not runs_solver(solver):
        return None
    plan = chain_plan(learning)
    if plan is None or not plan.accepts(inputs[0], targets[0]):
        return None
    layers, loss, prediction, rows, norms, final = plan.step(inputs[0], targets[0], solver, steps, variables)
    grads: dict[str, Tensor] = {}
    names = learning.dense_names
    assert names is not None  # a plan exists only for dense layers (chain_plan)
    for lin, (dW, db) in zip(plan.linears, layers):  # a layer used twice: both products
        weight, bias = names[id(lin)]
        grads[weight] = dW if weight not in grads else grads[weight] + dW
        if bias is not None and db is not None:
            grads[bias] = db if bias not in grads else grads[bias] + db
    return grads, step_stats(learning.graph, len(inputs[0]), loss, prediction, rows, norms, final)

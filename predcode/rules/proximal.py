r"""Proximal inference learning (Alonso et al. 2022): IL whose weight step is the proximal
(implicit) step of each node's own energy at the relaxed state.

Relaxation is IL's (input and target clamped, free nodes descend the energy).  Then, for
every node whose predictor ends in an ``nn.Linear`` :math:`\mu_i = W a + c` (``a`` the
linear layer's input, a function of the parents' relaxed values), the weights take the
step that minimises the node's energy plus a proximity term, per sample ``b``:

.. math:: W^{+} = \arg\min_{W'}\; \tfrac{\pi}{2}\lVert x_i - W' a_b - c\rVert^2
          + \tfrac{1}{2\eta}\lVert W' - W\rVert^2
          = W + \frac{\eta\,\epsilon_b\, a_b^\top}{1 + \eta\,\pi\,n_b},
          \qquad \epsilon_b = \pi\,(x_{i,b} - \mu_{i,b}),\quad
          n_b = \lVert a_b\rVert^2 + 1_{\mathrm{bias}}.

Written as a gradient for a plain SGD step of size :math:`\eta`,

.. math:: g_W = -\mathrm{mean}_b\; \frac{\epsilon_b\, a_b^\top}{1 + \eta\,\pi\,n_b},

which is IL's gradient with every sample's term shrunk.  For small :math:`\eta` this is IL;
for large :math:`\eta` it is the *normalised* update :math:`\epsilon a^\top/\lVert a\rVert^2`
that puts the prediction exactly on its relaxed target and no further, so a step stays
bounded however large the learning rate (IL approximates implicit SGD; this makes each
layer's step exactly implicit, and the bias ``c`` takes the same step).  With batches larger than one each sample is
normalised separately and the results averaged.

Only Gaussian nodes with a fixed scalar precision whose predictor is one ``nn.Linear``
applied last are supported (MLPs, the act-first form included); anything else is a clear
:class:`~predcode.exceptions.OptionError`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..batch import Inputs, Targets, prepare_batch
from ..checks import require_positive
from ..energy import Gaussian
from ..exceptions import OptionError
from ..graph import PCGraph
from ..inference import GradientDescent, Solver, StopRule, relax
from ..learning import StepStats
from .base import LearningRule


class ProximalInferenceLearning(LearningRule):
    """IL relaxation, then the per-sample proximal step of every node's local energy.

    Args:
        solver: state solver (default ``GradientDescent(0.1)``).
        stop: stop rule or step count ``T``.
        lr: the weight learning rate :math:`\\eta` of the proximal step.  ``None`` takes
            it from the optimizer's first parameter group in :meth:`step` (use plain
            ``torch.optim.SGD`` with that ``lr``: the step is then exactly proximal).
    """

    def __init__(self, solver: Solver | None = None, stop: StopRule | int = 20, lr: float | None = None) -> None:
        self.solver = solver or GradientDescent(0.1)
        self.stop = StopRule(max_steps=stop) if isinstance(stop, int) else stop
        if lr is not None:
            require_positive(lr, "the proximal learning rate")
        self.lr = lr
        self._step_lr: float | None = None

    def step(self, graph: PCGraph, inputs: Inputs, target: Targets, optimizer: torch.optim.Optimizer) -> StepStats:
        if self.lr is None:
            self._step_lr = float(optimizer.param_groups[0]["lr"])
        try:
            return super().step(graph, inputs, target, optimizer)
        finally:
            self._step_lr = None

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        eta = self.lr if self.lr is not None else self._step_lr
        if eta is None:
            raise OptionError("ProximalInferenceLearning needs lr (or call step() with an optimizer)")
        batch = prepare_batch(graph, inputs, target)
        values = batch.clamped()
        free = graph.free_slots(batch.targets)
        with torch.no_grad():
            relaxed = relax(graph, values, free, self.solver, self.stop)
            for slot in graph.slots:
                if not slot.is_input:
                    self._proximal_grad(graph, slot.index, relaxed.values, eta)
        trace = relaxed.trace
        return StepStats(batch.loss, batch.prediction, trace.energy[0], trace.energy[-1], trace)

    @staticmethod
    def _proximal_grad(graph: PCGraph, i: int, values: list[Tensor], eta: float) -> None:
        slot = graph.slots[i]
        energy = slot.energy
        if not isinstance(energy, Gaussian) or energy.learnable or energy.log_precision.dim() != 0:
            raise OptionError(
                f"node '{slot.name}': the proximal step needs a Gaussian energy with a fixed scalar precision"
            )
        predictor = slot.predictor
        if predictor is None:
            raise OptionError(f"node '{slot.name}' is an input: it has no predictor")
        linears = [m for m in predictor.modules() if isinstance(m, nn.Linear)]
        if len(linears) != 1:
            raise OptionError(
                f"node '{slot.name}': the proximal step needs a predictor with "
                f"exactly one nn.Linear, found {len(linears)}"
            )
        linear = linears[0]
        seen: dict[str, Tensor] = {}

        def capture(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            seen["a"], seen["out"] = args[0], output

        handle = linear.register_forward_hook(capture)
        try:
            mu = graph.node_prediction(i, values)
        finally:
            handle.remove()
        if "out" not in seen or seen["out"] is not mu:
            raise OptionError(
                f"node '{slot.name}': the proximal step needs the nn.Linear to be "
                "the last operation of the node's predictor"
            )
        a = seen["a"].reshape(mu.shape[0], -1)
        precision = float(energy.precision)
        err = energy.error(values[i], mu).reshape(mu.shape[0], -1)  # pi * (x - mu)
        norm2 = (a * a).sum(1) + (1.0 if linear.bias is not None else 0.0)
        scaled = err / (1 + eta * precision * norm2).unsqueeze(1)
        n = mu.shape[0]
        grads = {"weight": -(scaled.T @ a) / n}
        if linear.bias is not None:
            grads["bias"] = -scaled.sum(0) / n
        for name, g in grads.items():
            p = getattr(linear, name)
            if p.requires_grad:
                g = g.reshape(p.shape).to(p.dtype)
                p.grad = g if p.grad is None else p.grad + g

    def __repr__(self) -> str:
        return f"ProximalInferenceLearning({self.solver}, max_steps={self.stop.max_steps}, lr={self.lr})"

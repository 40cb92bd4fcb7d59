"""Non-finite checks of a training step, with the likely cause named.

Every rule's :meth:`~predcode.rules.base.LearningRule.step` runs :func:`check_gradients`
after the rule computed its gradients and :func:`check_update` after the optimizer
stepped, so a NaN or infinity is reported where it first appears (the loss, a parameter's
gradient, or the weight update), naming the parameter and the cause:

* the inputs are checked finite before anything runs (:func:`predcode.validate.check_inputs`),
  so a non-finite loss with finite weights comes from inputs or targets of extreme size;
* a parameter that is non-finite after the optimizer's step was broken by the update: the
  weight learning rate is too large;
* a relaxation that diverges after its start is the inference rate's doing
  (:class:`~predcode.exceptions.DivergenceError`).

Each check reads one scalar per step (a sum over all tensors: a NaN or infinity survives
any sum), and looks at tensors one by one only when that sum is not finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .exceptions import NonFiniteError

LARGE_INPUT = 1e10
"""Inputs above this size count as the cause of an overflow."""


def _all_finite(tensors: Sequence[Tensor]) -> bool:
    """One multi-tensor reduction decides the common case (a NaN or infinity makes its
    tensor's norm non-finite); only a norm that overflows takes the element-wise check."""
    if not tensors:
        return True
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:  # _foreach_norm wants one device and dtype per call
        groups.setdefault((t.device, t.dtype), []).append(t.detach())
    if all(bool(torch.isfinite(torch.stack(torch._foreach_norm(g)).sum())) for g in groups.values()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def first_nonfinite(named: Iterable[tuple[str, Tensor | None]]) -> str | None:
    """The name of the first tensor holding a NaN or infinity (None: all finite)."""
    items = [(n, t) for n, t in named if t is not None and t.is_floating_point()]
    if _all_finite([t for _, t in items]):
        return None
    return next(n for n, t in items if not bool(torch.isfinite(t).all()))


def largest(tensors: Iterable[Tensor]) -> float:
    """The largest finite absolute value among floating tensors (0 for none)."""
    best = 0.0
    for t in tensors:
        if t.is_floating_point() and t.numel():
            finite = t.detach()[torch.isfinite(t.detach())]
            if finite.numel():
                best = max(best, float(finite.abs().max()))
    return best


def _cause_of_bad_forward(model: nn.Module, inputs: Sequence[Tensor]) -> str:
    size = largest(inputs)
    if size >= LARGE_INPUT or not math.isfinite(size):
        return (
            f"the input reaches {size:.3g}, too large to square in "
            f"{inputs[0].dtype}: scale the inputs (e.g. normalise them)"
        )
    broken = first_nonfinite(model.named_parameters())
    if broken is not None:
        return f"parameter '{broken}' is already non-finite (an earlier weight update): lower the weight learning rate"
    return (
        f"the inputs are moderate (largest {size:.3g}) but the weights reach "
        f"{largest(model.parameters()):.3g} (or a target is extreme): lower the weight "
        "learning rate"
    )


def check_gradients(model: nn.Module, loss: Tensor | None, inputs: Sequence[Tensor]) -> None:
    """Raise :class:`NonFiniteError` if the step's loss or any parameter's gradient is not
    finite, naming the parameter and the likely cause."""
    if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteError(
            f"the loss is {float(loss.detach().sum()):.4g} (not finite): " + _cause_of_bad_forward(model, inputs)
        )
    bad = first_nonfinite((n, p.grad) for n, p in model.named_parameters())
    if bad is not None:
        raise NonFiniteError(
            f"the gradient of parameter '{bad}' is not finite (with a finite "
            "loss): " + _cause_of_bad_forward(model, inputs)
        )


def check_update(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Raise :class:`NonFiniteError` if a parameter is not finite after the weight update."""
    bad = first_nonfinite(model.named_parameters())
    if bad is None:
        return
    lr = ""
    if optimizer is not None and getattr(optimizer, "param_groups", None):
        lr = f" (now {optimizer.param_groups[0].get('lr', float('nan')):.3g})"
    raise NonFiniteError(
        f"parameter '{bad}' became non-finite in the weight update, from "
        f"finite gradients: lower the weight learning rate{lr}"
    )

"""The matrix products of a training step alone: a floor for the step's time here; and
the step's floating-point operations.

One eager step is run under a dispatch mode that records every matrix product
(``mm``, ``addmm``, ``bmm``, ``baddbmm``) with its operands; the recorded products are then
replayed back to back and timed like a step.  The step cannot be faster than its products
on this machine with this BLAS, so ``step / products`` says how much of the step is
everything else (element-wise kernels, framework overhead, the optimizer).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .timing import Timing, time_steps

PRODUCTS = (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.baddbmm)


class RecordProducts(TorchDispatchMode):
    """Records every matrix product run under it, with copies of its operands."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Callable, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in PRODUCTS:
            copy = lambda a: a.detach().clone() if isinstance(a, torch.Tensor) else a  # noqa: E731
            self.calls.append((func, tuple(copy(a) for a in args),
                               {k: copy(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def record_products(step: Callable[[], object]) -> list[tuple[Callable, tuple, dict]]:
    """The matrix products one call of ``step`` runs (eagerly), in order."""
    with RecordProducts() as mode:
        step()
    return mode.calls


def time_products(calls: list[tuple[Callable, tuple, dict]], warmup: int, steps: int) -> Timing:
    """Replay ``calls`` back to back, ``steps`` timed times after ``warmup``."""
    def replay(_: int) -> None:
        for func, args, kwargs in calls:
            func(*args, **kwargs)
    return time_steps(replay, warmup, steps, first=False)


class CountFlops(TorchDispatchMode):
    """Adds up the floating-point operations of the convolutions and matrix products run
    under it, with ``torch.utils.flop_counter``'s per-operator formulas (a dispatch mode,
    so it also sees the products inside ``torch.autograd.grad``, which the module-tracking
    ``FlopCounterMode`` refuses)."""

    def __init__(self) -> None:
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry = flop_registry
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = self.registry.get(func.overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def step_flops(step: Callable[[], object]) -> int:
    """The floating-point operations of one (eager) call of ``step``."""
    with CountFlops() as counter:
        step()
    return counter.total

"""The matrix products of a training step alone: a floor for the step's time here; and
the step's floating-point operations.

One eager step is run under a dispatch mode that records every matrix product
(``mm``, ``addmm``, ``bmm``, ``baddbmm``) with its operands; the recorded products are then
replayed back to back and timed like a step.  The step cannot be faster than its products
on this machine with this BLAS, so ``step / products`` says how much of the step is
everything else (element-wise kernels, framework overhead, the optimizer).
"""

from __future__ import annotations

from collections.abc import Callable

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
            self.calls.append((func, tuple(copy(a) for a in args), {k: copy(v) for k, v in kwargs.items()}))
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


class PeakTensorMemory(TorchDispatchMode):
    """The peak of the bytes held by tensors created under it and still alive: the memory
    a step needs beyond the model, the data and what existed before (buffers a step keeps
    for the next one, like a workspace or the optimizer's state, count when the mode sees
    them created).  Storages are counted once, however many views share them."""

    def __init__(self) -> None:
        super().__init__()
        import weakref

        self._weakref = weakref
        self.live: dict[int, int] = {}  # storage address -> bytes
        self.holders: dict[int, int] = {}  # storage address -> live tensors seen on it
        self.current = 0
        self.peak = 0

    def _release(self, address: int) -> None:
        self.holders[address] -= 1
        if self.holders[address] == 0:
            self.current -= self.live.pop(address)
            del self.holders[address]

    def _track(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        address = storage.data_ptr()
        if address == 0:
            return
        if address not in self.live:
            self.live[address] = storage.nbytes()
            self.holders[address] = 0
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self.holders[address] += 1
        self._weakref.finalize(t, self._release, address)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            self._track(t)
        return out


def step_peak_memory(step: Callable[[], object], steps: int = 2) -> int:
    """Peak bytes of tensors allocated and alive during ``steps`` calls of ``step`` (from
    a fresh model: the first call allocates what the step keeps, e.g. the optimizer's
    state and a kernel's workspace)."""
    with PeakTensorMemory() as mode:
        for _ in range(steps):
            step()
    return mode.peak

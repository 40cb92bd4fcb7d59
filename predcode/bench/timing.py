"""Timing a training step: the first call apart (it compiles), then warmup steps that are
not recorded, then the median (and spread) of many recorded steps.

Every recorded interval ends with ``sync()`` (``torch.cuda.synchronize`` on a GPU, a no-op
on the CPU where PyTorch is synchronous), so a step's time is its real wall time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Wall times of one method's steps (seconds)."""

    first_s: float | None
    times_s: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.times_s) if self.times_s else float("nan")

    def quantile_ms(self, q: float) -> float:
        if not self.times_s:
            return float("nan")
        s = sorted(self.times_s)
        k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
        return 1e3 * s[k]

    def summary(self) -> dict:
        return {
            "first_step_s": self.first_s,
            "median_ms": self.median_ms,
            "mean_ms": 1e3 * statistics.fmean(self.times_s) if self.times_s else float("nan"),
            "p10_ms": self.quantile_ms(0.1),
            "p90_ms": self.quantile_ms(0.9),
            "min_ms": 1e3 * min(self.times_s) if self.times_s else float("nan"),
            "steps_timed": len(self.times_s),
        }


def time_steps(
    step: Callable[[int], object],
    warmup: int,
    steps: int,
    sync: Callable[[], None] = lambda: None,
    first: bool = True,
    start: int = 0,
) -> Timing:
    """Call ``step(k)`` for ``k = start, start + 1, ...``: once apart (timed as the first
    step when ``first``), ``warmup`` times untimed, then ``steps`` timed calls."""
    k = start
    first_s = None
    if first:
        sync()
        t0 = time.perf_counter()
        step(k)
        sync()
        first_s = time.perf_counter() - t0
        k += 1
    for _ in range(warmup):
        step(k)
        k += 1
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(k)
        sync()
        times.append(time.perf_counter() - t0)
        k += 1
    return Timing(first_s, times)


def time_loop(
    step: Callable[[int], object], count: int, sync: Callable[[], None] = lambda: None, start: int = 0
) -> float:
    """Wall time of ``count`` consecutive calls ``step(start), step(start + 1), ...``."""
    sync()
    t0 = time.perf_counter()
    for k in range(start, start + count):
        step(k)
    sync()
    return time.perf_counter() - t0


class Stopwatch:
    """Accumulates the time spent inside ``with watch:`` blocks (e.g. training but not
    evaluation)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._t0: float | None = None

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        assert self._t0 is not None
        self.total += time.perf_counter() - self._t0
        self._t0 = None

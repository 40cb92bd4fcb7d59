"""Checks on option values (rates, step sizes, precisions) shared by every part of predcode.

This module imports nothing of predcode but :mod:`predcode.exceptions`, so any module,
the core ones included (:mod:`predcode.energy` is imported by :mod:`predcode.graph`),
can use it without an import cycle.
"""

from __future__ import annotations

import math
import numbers
from typing import TypeVar

import torch
from torch import Tensor

from .exceptions import OptionError

Positive = TypeVar("Positive", float, Tensor)
"""A number (``int`` or ``float``) or a tensor: what :func:`require_positive` hands back."""


def require_positive(value: Positive, what: str) -> Positive:
    """``value``, unchanged, if it is a finite number > 0; else an :class:`OptionError`.

    Args:
        value: a real number (``int``, ``float``, a NumPy scalar) or a real tensor, whose
            every element must then be finite and > 0 (an empty tensor is refused).
            Booleans (``True`` is ``1`` to Python) and complex or bool tensors are refused:
            a rate or precision given as a flag is a mistake, not a number.  NaN and
            infinities are refused too.
        what: the option's name as the user knows it (``"inference rate"``,
            ``"Heun step dt"``), which starts the error's message.

    Returns:
        ``value`` itself (not converted), so that the caller may store it.

    Raises:
        OptionError: one line, ``"<what> must be a finite number > 0, got <value>"``.
    """
    if isinstance(value, Tensor):
        ok = (
            value.numel() > 0
            and not value.is_complex()
            and value.dtype != torch.bool
            and bool(torch.all(torch.isfinite(value) & (value > 0)))
        )
        shown = " ".join(repr(value).split())  # a tensor's repr may span lines
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        shown = str(value) if isinstance(value, numbers.Real) else repr(value)
    if not ok:
        raise OptionError(f"{what} must be a finite number > 0, got {shown}")
    return value

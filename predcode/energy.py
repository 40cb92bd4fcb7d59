r"""Per-node energies: negative log-likelihoods of a node's value under its prediction.

Every energy is an ``nn.Module`` mapping ``(value x, prediction mu)`` with a leading batch
dimension to the per-sample energy ``E_b`` (summed over all units of the node).  The
network's energy is the sum over nodes of the batch mean of ``E_b``.  Each energy also
gives

* ``error(x, mu) = -dE/dmu``: the (precision-weighted) prediction error that the node
  sends to the weights and to its parents, and
* ``mode(mu) = argmin_x E(x, mu)``: the value a free node with no children settles to.

All energies are zero at their mode, so a free leaf contributes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .checks import require_positive
from .registry import Registry


def _sum_units(t: Tensor) -> Tensor:
    """Sum over every dimension but the first (the batch)."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


class Energy(nn.Module):
    """Interface of a node energy. Subclasses implement the three methods below."""

    def forward(self, value: Tensor, prediction: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def error(self, value: Tensor, prediction: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def mode(self, prediction: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def total(self, value: Tensor, prediction: Tensor) -> Tensor:
        r""":math:`\sum_b E_b`: the energy summed over the batch."""
        per_sample: Tensor = self(value, prediction)
        return per_sample.sum()


class Gaussian(Energy):
    r"""Squared error of a Gaussian with precision :math:`\pi` (inverse variance).

    .. math:: E_b = \tfrac12 \sum_i \pi_i (x_{bi} - \mu_{bi})^2 \;-\; \tfrac12 \sum_i \log \pi_i

    The log-precision term is a constant unless the precision is learnable; it is what
    keeps a learned precision from collapsing to zero.  ``precision`` is a scalar; pass
    ``units`` (the node's shape without the batch) for one precision per unit.  A
    learnable precision is a parameter of the model (``log_precision``) and is learned
    by the same local rule as the weights: :math:`dE/d\log\pi_i = \tfrac12(\pi_i e_i^2 - 1)`.
    """

    def __init__(
        self,
        precision: float = 1.0,
        *,
        learnable: bool = False,
        units: int | tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        require_positive(precision, "Gaussian precision")
        shape = () if units is None else ((units,) if isinstance(units, int) else tuple(units))
        log_precision = torch.full(shape, math.log(precision))
        if learnable:
            self.log_precision = nn.Parameter(log_precision)
        else:
            self.register_buffer("log_precision", log_precision)
        self.learnable = learnable
        self._unit_at: tuple[Tensor, int] | None = None
        if not learnable and units is None and precision == 1.0:
            self._arm_unit_precision()

    def _arm_unit_precision(self) -> None:
        """Remember that ``log_precision`` is exactly 0 now: the buffer and its version."""
        self._unit_at = (self.log_precision, self.log_precision._version)

    @property
    def _unit_precision(self) -> bool:
        """Whether the precision is known to be exactly 1, so that the error needs no
        multiply.  Known without reading the buffer (no device sync): it was 1 when armed
        and the buffer is the same tensor, unwritten since (any in-place write, such as
        ``fill_`` or ``load_state_dict``, bumps its version).  A stale arming is dropped
        for good here, so a trace under ``torch.compile`` (which cannot read versions)
        reads the arming alone: compiled training steps check every Gaussian eagerly
        before each call and key their compiled copies on the result
        (:func:`unit_precisions`)."""
        armed = self._unit_at
        if armed is None:
            return False
        if torch.compiler.is_compiling():
            return True
        if self._buffers.get("log_precision") is armed[0] and armed[0]._version == armed[1]:
            return True
        self._unit_at = None  # written or replaced since: not known to be 1 any more
        return False

    def has_unit_precision(self) -> bool:
        """Whether the precision is exactly 1: known from the arming, else (a fixed scalar
        precision, e.g. after ``load_state_dict`` wrote the buffer) read once and armed
        again when it is still 1."""
        if self._unit_precision:
            return True
        if self.learnable or self.log_precision.dim() != 0 or torch.compiler.is_compiling():
            return False
        if float(self.log_precision) == 0.0:
            self._arm_unit_precision()
            return True
        return False

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Gaussian:
        # ``.to(...)``/``.double()`` make a new buffer with the same (unit) value: re-arm
        was_unit = self._unit_precision
        out: Gaussian = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves _apply unannotated
        if was_unit:
            self._arm_unit_precision()
        return out

    @property
    def precision(self) -> Tensor:
        return self.log_precision.exp()

    def forward(self, value: Tensor, prediction: Tensor) -> Tensor:
        return self.of_difference(value - prediction)

    def of_difference(self, diff: Tensor) -> Tensor:
        r"""``E_b`` from the difference :math:`d = x - \mu` itself.  Error-based PC keeps
        :math:`d = e` as its variable, and an error far below the resolution of
        :math:`x` would be lost to cancellation if recomputed as ``x - mu``."""
        if self._unit_precision:
            return 0.5 * _sum_units(diff * diff)
        energy = 0.5 * _sum_units(self.precision * diff * diff)
        if self.learnable:
            energy = energy - 0.5 * self.log_precision.expand(diff.shape[1:]).sum()
        return energy

    def error(self, value: Tensor, prediction: Tensor) -> Tensor:
        return self.error_of(value - prediction)

    def error_of(self, diff: Tensor) -> Tensor:
        r"""The error :math:`\pi d` from the difference :math:`d = x - \mu`."""
        return diff if self._unit_precision else self.precision * diff

    def mode(self, prediction: Tensor) -> Tensor:
        return prediction

    def total(self, value: Tensor, prediction: Tensor) -> Tensor:
        return self.total_of(value - prediction)

    def total_of(self, diff: Tensor) -> Tensor:
        r""":math:`\sum_b E_b` from the difference :math:`d = x - \mu`."""
        if not self._unit_precision:
            return self.of_difference(diff).sum()
        flat = diff.reshape(-1)
        return 0.5 * torch.dot(flat, flat)

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}, shape={tuple(self.log_precision.shape)}"


class Categorical(Energy):
    r"""Cross-entropy of a categorical distribution with logits :math:`\mu`.

    .. math:: E_b = \sum_k x_{bk} (\log x_{bk} - \log\mathrm{softmax}(\mu_b)_k)

    i.e. the KL divergence from ``softmax(mu)`` to the value ``x`` (a probability vector
    over the last dimension).  For a one-hot ``x`` this is the usual cross-entropy
    :math:`-\log\mathrm{softmax}(\mu)_y`.  Error: ``x - softmax(mu)``; mode: ``softmax(mu)``.
    """

    def forward(self, value: Tensor, prediction: Tensor) -> Tensor:
        log_q = F.log_softmax(prediction, dim=-1)
        return _sum_units(torch.xlogy(value, value) - value * log_q)

    def error(self, value: Tensor, prediction: Tensor) -> Tensor:
        return value - F.softmax(prediction, dim=-1)

    def mode(self, prediction: Tensor) -> Tensor:
        return F.softmax(prediction, dim=-1)


class Bernoulli(Energy):
    r"""Binary cross-entropy of independent Bernoulli units with logits :math:`\mu`.

    .. math:: E_b = \sum_i \mathrm{KL}(\mathrm{Bern}(x_{bi}) \,\|\, \mathrm{Bern}(\sigma(\mu_{bi})))
              = \sum_i [\mathrm{BCE}(\mu_{bi}, x_{bi}) - H(x_{bi})]

    For binary ``x`` the entropy term is zero and this is the usual BCE with logits.
    Error: ``x - sigmoid(mu)``; mode: ``sigmoid(mu)``.
    """

    def forward(self, value: Tensor, prediction: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(prediction, value, reduction="none")
        entropy = -(torch.xlogy(value, value) + torch.xlogy(1 - value, 1 - value))
        return _sum_units(bce - entropy)

    def error(self, value: Tensor, prediction: Tensor) -> Tensor:
        return value - torch.sigmoid(prediction)

    def mode(self, prediction: Tensor) -> Tensor:
        return torch.sigmoid(prediction)


ENERGIES: Registry[Energy] = Registry("energy")
"""The energies a name selects (``pc.Node(energy=...)``, ``--output-energy``); ``se`` and
``ce`` are the loss names of ``gaussian`` and ``categorical``."""
ENERGIES.add("gaussian", Gaussian)
ENERGIES.add("se", Gaussian)
ENERGIES.add("categorical", Categorical)
ENERGIES.add("ce", Categorical)
ENERGIES.add("bernoulli", Bernoulli)


def make_energy(name: str | Energy) -> Energy:
    """Return an energy from its name (``gaussian``/``se``, ``categorical``/``ce``, ``bernoulli``)."""
    if isinstance(name, Energy):
        return name
    return ENERGIES.build(name.lower())


def unit_precisions(energies: Iterable[Energy | None]) -> tuple[bool, ...]:
    """For every :class:`Gaussian` among ``energies``, whether it still skips its precision
    multiply, checked eagerly (which drops stale armings): call it before a compiled
    region traces them, and key compiled code on the result."""
    return tuple(e._unit_precision for e in energies if isinstance(e, Gaussian))

r"""muPC: the Depth-muP parametrisation of residual networks (Innocenti et al. 2025), applied
to a model from the outside.

A residual network of depth :math:`L` (weight layers, the input and readout layers
included), width :math:`N` and input dimension :math:`D` computes

.. math::
    z_1 = a_1 W_1 x, \qquad
    z_\ell = z_{\ell-1} + a_\ell\, W_\ell\, \phi(z_{\ell-1}) \;(1 < \ell < L), \qquad
    \hat y = a_L W_L\, \phi(z_{L-1}),

and the parametrisation is the choice of multipliers :math:`a_\ell` and initial weights:

=========  ===========================  =========================  ==================
           input :math:`a_1`            hidden :math:`a_\ell`       output :math:`a_L`
=========  ===========================  =========================  ==================
``mupc``   :math:`1/\sqrt{D}`           :math:`1/\sqrt{N L}`        :math:`1/N`
``sp``     1                            1                          1
=========  ===========================  =========================  ==================

With ``mupc`` every weight starts as :math:`W_{ij} \sim \mathcal N(0, 1)` (the multiplier
carries the scale, so the optimiser moves the raw weight); with ``sp`` the layers keep
PyTorch's default initialisation.  Under ``mupc`` each residual branch adds
:math:`O(1/L)` variance, so the activations stay :math:`O(1)` at any depth
(:math:`\prod_\ell (1 + c/L) \le e^c`), the readout is :math:`O(1/\sqrt N)` at
initialisation (muP), and the learning rates found on a small network transfer to wider
and deeper ones.  Under ``sp`` the residual stream's variance grows geometrically with depth.

Where each number comes from (jpc, the authors' library, read for this module):

* multipliers ``a1 = 1/sqrt(D)``, ``al = 1/sqrt(N L)`` with skips, ``aL = 1/N``, and
  ``L = len(model)`` counting the input and readout layers: ``_get_param_scalings`` in
  ``jpc/_core/_energies.py``;
* standard-normal weights for ``mupc`` and the layer shape (identity skips on every layer
  but the first and the last, activation applied before each linear map, no biases):
  ``jpc.make_mlp(..., param_type="mupc")``, ``jpc.make_skip_model`` and the ``FCResNet`` of
  ``examples/mupc.ipynb``;
* ``fan_in`` for convolutions (``C_in * k * k``) is the muP convention for conv layers
  (our extension: jpc's muPC covers fully connected networks).

The multipliers are ``torch.nn.utils.parametrize`` parametrisations of the layers'
``weight`` (and ``bias``): the model's own modules stay, its forward pass becomes
:math:`a W x`, its parameters become ``<layer>.parametrizations.weight.original`` (the raw
:math:`W`), and any learning rule, ``torch.func.functional_call`` and ``torch.compile``
see the scaled layer.  Nothing inside a model factory knows about the parametrisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize as _parametrize

from ..exceptions import OptionError

Kind = Literal["mupc", "sp"]
KINDS = ("mupc", "sp")
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MARK = "_predcode_parametrization"


class ParametrizationError(OptionError):
    """A parametrisation cannot be applied to this model as asked."""


class Multiplier(nn.Module):
    """The parametrisation ``W -> a * W`` (a fixed, non-trainable multiplier)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


@dataclass(frozen=True)
class LayerScale:
    """One weight layer's role and multiplier under a parametrisation."""

    name: str
    role: Literal["input", "hidden", "output"]
    fan_in: int
    multiplier: float


def fan_in(layer: nn.Module) -> int:
    """Inputs per output unit: ``in_features``, or ``in_channels / groups * prod(kernel)``."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    raise ParametrizationError(f"no fan-in rule for {type(layer).__name__}")


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d]]:
    """The model's Linear/Conv layers in registration order (for the residual factories in
    :mod:`predcode.models.residual` this is the order of the forward pass)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def multipliers(kind: Kind, *, depth: int, width: int, input_dim: int) -> tuple[float, float, float]:
    """``(a_input, a_hidden, a_output)`` of a parametrisation (table in the module docstring)."""
    if kind not in KINDS:
        raise ParametrizationError(f"unknown parametrisation '{kind}'; choose one of {list(KINDS)}")
    if kind == "sp":
        return 1.0, 1.0, 1.0
    return 1.0 / math.sqrt(input_dim), 1.0 / math.sqrt(width * depth), 1.0 / width


def plan(model: nn.Module, kind: Kind = "mupc") -> list[LayerScale]:
    """Each weight layer's role and multiplier, without changing the model.

    The first weight layer (registration order) is the input layer, the last the readout,
    every other one a residual branch; ``L`` is the number of weight layers, ``D`` the
    input layer's fan-in and ``N`` the residual branches' fan-in (which must agree).
    """
    layers = weight_layers(model)
    if len(layers) < 3:
        raise ParametrizationError(
            f"a residual network for '{kind}' needs an input layer, at least one residual "
            f"layer and a readout; {type(model).__name__} has {len(layers)} Linear/Conv layers"
        )
    hidden_fans = {fan_in(m) for _, m in layers[1:-1]}
    if len(hidden_fans) != 1:
        raise ParametrizationError(
            f"the residual layers of {type(model).__name__} have different fan-ins "
            f"{sorted(hidden_fans)}; muPC's hidden multiplier 1/sqrt(N L) needs one width N"
        )
    width = hidden_fans.pop()
    a_in, a_hidden, a_out = multipliers(kind, depth=len(layers), width=width, input_dim=fan_in(layers[0][1]))
    roles = ["input"] + ["hidden"] * (len(layers) - 2) + ["output"]
    scales = {"input": a_in, "hidden": a_hidden, "output": a_out}
    return [
        LayerScale(name, role, fan_in(m), scales[role])  # type: ignore[arg-type]
        for (name, m), role in zip(layers, roles)
    ]


def parametrization(model: nn.Module) -> str | None:
    """The parametrisation applied to ``model`` by :func:`apply`, or None."""
    return getattr(model, _MARK, None)


def apply(
    model: nn.Module, kind: Kind = "mupc", *, init: bool = True, generator: torch.Generator | None = None
) -> nn.Module:
    r"""Apply the ``mupc`` or ``sp`` parametrisation to a residual ``model`` in place.

    ``mupc``: every Linear/Conv layer's weight (and bias) becomes ``a * W`` through a
    :class:`Multiplier` parametrisation with the multiplier of its role (:func:`plan`), and
    with ``init=True`` the raw weights are redrawn from :math:`\mathcal N(0, 1)` (biases
    zeroed).  ``sp``: the model is left as it is (multipliers 1, PyTorch's default init).
    Applying a parametrisation to a model that already has one raises
    :class:`ParametrizationError`, so scaling never compounds.  Returns ``model``.
    """
    if kind not in KINDS:
        raise ParametrizationError(f"unknown parametrisation '{kind}'; choose one of {list(KINDS)}")
    done = parametrization(model)
    if done is not None:
        raise ParametrizationError(
            f"{type(model).__name__} already has the '{done}' parametrisation; apply one "
            f"parametrisation once, to a freshly built model"
        )
    layers = dict(weight_layers(model))
    for name, m in layers.items():
        if _parametrize.is_parametrized(m):
            raise ParametrizationError(
                f"layer '{name}' is already parametrised; apply muPC to a model without parametrisations"
            )
    steps = plan(model, kind)
    if kind == "mupc":
        for step in steps:
            layer = layers[step.name]
            if init:
                with torch.no_grad():
                    layer.weight.normal_(0.0, 1.0, generator=generator)
                    if layer.bias is not None:
                        layer.bias.zero_()
            _parametrize.register_parametrization(layer, "weight", Multiplier(step.multiplier))
            if layer.bias is not None:
                _parametrize.register_parametrization(layer, "bias", Multiplier(step.multiplier))
    object.__setattr__(model, _MARK, kind)
    return model


def mupc(model: nn.Module, *, init: bool = True, generator: torch.Generator | None = None) -> nn.Module:
    """:func:`apply` with ``kind="mupc"``."""
    return apply(model, "mupc", init=init, generator=generator)


def layer_multiplier(layer: nn.Module) -> float:
    """The multiplier a layer's weight carries (1 when it has none)."""
    if not _parametrize.is_parametrized(layer, "weight"):
        return 1.0
    scale = 1.0
    for p in layer.parametrizations.weight:  # type: ignore[union-attr]
        scale *= p.scale if isinstance(p, Multiplier) else float("nan")
    return scale

r"""Residual MLPs and CNNs of any depth with identity skips, one value node per block: the
architecture of muPC (Innocenti et al. 2025; jpc's ``make_mlp`` + ``make_skip_model``).

With ``L`` weight layers (``depth``, the input layer and the readout included):

.. math::
    z_1 = W_1 x \;\text{(node)}, \qquad
    z_\ell = z_{\ell-1} + W_\ell\, \phi(z_{\ell-1}) \;\text{(node)},\; 1 < \ell < L, \qquad
    \hat y = W_L\, \phi(z_{L-1}) \;\text{(output node)}.

Every residual block is one PC layer: its node's prediction is
:math:`z_{\ell-1} + W_\ell \phi(z_{\ell-1})` from the node below, so the graph is a chain
and every rule (Z-IL included) applies as it is.  The factories build plain networks with
PyTorch's default initialisation; the muPC multipliers and initialisation are applied from
the outside by :func:`predcode.models.mupc.apply` (``parametrization="mupc"`` here calls it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..node import Node
from .mlp import activation


class ResidualBlock(nn.Module):
    r"""``z -> Node(z + layer(act(z)))`` for a width-preserving ``layer`` (Linear or conv)."""

    def __init__(self, layer: nn.Module, act: str = "relu") -> None:
        super().__init__()
        self.act = activation(act)
        self.layer = layer
        self.node = Node()

    def forward(self, z: Tensor) -> Tensor:
        return self.node(z + self.layer(self.act(z)))


class ResidualMLP(nn.Module):
    """Input layer (node), ``depth - 2`` residual blocks (a node each), readout (output node)."""

    def __init__(
        self,
        in_features: int = 784,
        width: int = 128,
        depth: int = 8,
        out_features: int = 10,
        act: str = "relu",
        bias: bool = False,
        output_energy: str = "se",
    ) -> None:
        super().__init__()
        _check_depth(depth)
        self.input = nn.Linear(in_features, width, bias=bias)
        self.input_node = Node()
        self.blocks = nn.Sequential(*[ResidualBlock(nn.Linear(width, width, bias=bias), act) for _ in range(depth - 2)])
        self.readout_act = activation(act)
        self.readout = nn.Linear(width, out_features, bias=bias)
        self.output = Node(output_energy)

    def forward(self, x: Tensor) -> Tensor:
        z = self.blocks(self.input_node(self.input(x)))
        return self.output(self.readout(self.readout_act(z)))


class ResidualCNN(nn.Module):
    """3x3 conv stem (node), ``depth - 2`` residual 3x3-conv blocks at constant width and
    resolution (a node each), then activation, global average pooling and a linear readout
    (output node)."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 16,
        depth: int = 8,
        num_classes: int = 10,
        act: str = "relu",
        bias: bool = False,
        output_energy: str = "se",
    ) -> None:
        super().__init__()
        _check_depth(depth)
        self.input = nn.Conv2d(in_channels, channels, 3, padding=1, bias=bias)
        self.input_node = Node()
        self.blocks = nn.Sequential(
            *[ResidualBlock(nn.Conv2d(channels, channels, 3, padding=1, bias=bias), act) for _ in range(depth - 2)]
        )
        self.readout_act = activation(act)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.readout = nn.Linear(channels, num_classes, bias=bias)
        self.output = Node(output_energy)

    def forward(self, x: Tensor) -> Tensor:
        z = self.blocks(self.input_node(self.input(x)))
        return self.output(self.readout(self.pool(self.readout_act(z))))


def _check_depth(depth: int) -> None:
    if depth < 3:
        raise OptionError(
            f"a residual network needs depth >= 3 (input layer, at least one residual block, readout), got {depth}"
        )


def _parametrize(model: nn.Module, parametrization: str | None, generator: torch.Generator | None) -> nn.Module:
    if parametrization is None:
        return model
    from .mupc import apply  # the parametrisation lives in one place (models/mupc.py), not in each model

    return apply(model, parametrization, generator=generator)  # type: ignore[arg-type]


def residual_mlp(
    in_features: int = 784,
    width: int = 128,
    depth: int = 8,
    out_features: int = 10,
    act: str = "relu",
    bias: bool = False,
    output_energy: str = "se",
    parametrization: str | None = None,
    generator: torch.Generator | None = None,
) -> ResidualMLP:
    """A :class:`ResidualMLP`; ``parametrization="mupc"`` or ``"sp"`` applies
    :func:`predcode.models.mupc.apply` to it (``generator`` seeds muPC's N(0, 1) weights)."""
    model = ResidualMLP(in_features, width, depth, out_features, act, bias, output_energy)
    return _parametrize(model, parametrization, generator)  # type: ignore[return-value]


def residual_cnn(
    in_channels: int = 1,
    channels: int = 16,
    depth: int = 8,
    num_classes: int = 10,
    act: str = "relu",
    bias: bool = False,
    output_energy: str = "se",
    parametrization: str | None = None,
    generator: torch.Generator | None = None,
) -> ResidualCNN:
    """A :class:`ResidualCNN`; ``parametrization`` as in :func:`residual_mlp`."""
    model = ResidualCNN(in_channels, channels, depth, num_classes, act, bias, output_energy)
    return _parametrize(model, parametrization, generator)  # type: ignore[return-value]

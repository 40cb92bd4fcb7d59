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

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from ..exceptions import OptionError
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


class _ResidualNet(nn.Module):
    """The frame both residual networks share: ``input`` layer (node ``input_node``),
    ``depth - 2`` residual blocks around width-preserving layers made by ``layer``,
    activation ``readout_act``, then ``pool`` (when given), ``readout`` and the output node.
    The factories are called in this order, so a seed gives the weights it gave when each
    network built its layers itself."""

    def __init__(
        self,
        depth: int,
        act: str,
        output_energy: str,
        input: Callable[[], nn.Module],
        layer: Callable[[], nn.Module],
        readout: Callable[[], nn.Module],
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        _check_depth(depth)
        self.input = input()
        self.input_node = Node()
        self.blocks = nn.Sequential(*[ResidualBlock(layer(), act) for _ in range(depth - 2)])
        self.readout_act = activation(act)
        if pool is not None:
            self.pool = pool
        self.readout = readout()
        self.output = Node(output_energy)

    def _features(self, x: Tensor) -> Tensor:
        """The last block's node, activated: what the readout (after ``pool``) reads."""
        return self.readout_act(self.blocks(self.input_node(self.input(x))))


class ResidualMLP(_ResidualNet):
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
        super().__init__(
            depth,
            act,
            output_energy,
            input=partial(nn.Linear, in_features, width, bias=bias),
            layer=partial(nn.Linear, width, width, bias=bias),
            readout=partial(nn.Linear, width, out_features, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.readout(self._features(x)))


class ResidualCNN(_ResidualNet):
    """3x3 conv stem (node), ``depth - 2`` residual 3x3-conv blocks at constant width and
    resolution (a node each), then activation, global average pooling and a linear readout
    (output node)."""

    pool: nn.Module

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
        super().__init__(
            depth,
            act,
            output_energy,
            input=partial(nn.Conv2d, in_channels, channels, 3, padding=1, bias=bias),
            layer=partial(nn.Conv2d, channels, channels, 3, padding=1, bias=bias),
            readout=partial(nn.Linear, channels, num_classes, bias=bias),
            pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.readout(self.pool(self._features(x))))


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

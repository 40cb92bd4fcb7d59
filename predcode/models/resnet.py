r"""Residual networks of basic blocks, a value node inside and after every block.

A basic block with input node :math:`x` computes

.. math:: h = \phi(\mathrm{conv}_1(x)) \;\text{(node)}, \qquad
          y = \phi(\mathrm{conv}_2(h) + s(x)) \;\text{(node)},

with :math:`s` the identity, or a strided 1x1 convolution where the shape changes.  The
skip makes :math:`x` a parent of both :math:`h` and :math:`y`: the graph is not layered
(``x`` reaches the output by paths of two lengths), so Z-IL needs
:func:`predcode.convert.layered`; fixed prediction is exact as it is.  With
``batch_norm`` every convolution (the shortcut's too) is followed by a ``BatchNorm2d`` and
has no bias: a prediction then normalises by the statistics of the batch's current values,
and the running statistics are recorded once per batch by the feed-forward pass
(:mod:`predcode.running_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..exceptions import OptionError
from ..node import Node
from .mlp import activation


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int, batch_norm: bool) -> nn.Module:
    """A convolution, or ``conv (no bias) -> BatchNorm2d`` with ``batch_norm``."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=not batch_norm)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if batch_norm else conv


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; nodes ``mid`` and ``out``."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, act: str = "relu", batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, 3, stride, 1, batch_norm)
        self.conv2 = _conv(out_channels, out_channels, 3, 1, 1, batch_norm)
        self.act1, self.act2 = activation(act), activation(act)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _conv(in_channels, out_channels, 1, stride, 0, batch_norm)
        self.mid, self.out = Node(), Node()

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.act1(self.conv1(x)))
        return self.out(self.act2(self.conv2(h) + self.shortcut(x)))


class ResNet(nn.Module):
    """Stem ``conv3x3 -> act -> Node``, stages of :class:`BasicBlock` (the first block of
    every stage after the first halves the resolution), global average pooling and a
    linear head with the output node."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int | Sequence[int] = 1,
        act: str = "relu",
        output_energy: str = "se",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if not widths:
            raise OptionError("a ResNet needs at least one stage: give widths, e.g. [16, 32]")
        per_stage = [blocks] * len(widths) if isinstance(blocks, int) else list(blocks)
        if len(per_stage) != len(widths) or min(per_stage) < 1:
            raise OptionError(f"blocks {blocks} must be >= 1 per stage for widths {list(widths)}")
        self.stem = nn.Sequential(_conv(in_channels, widths[0], 3, 1, 1, batch_norm), activation(act))
        self.stem_node = Node()
        stages: list[nn.Module] = []
        channels = widths[0]
        for s, (width, count) in enumerate(zip(widths, per_stage)):
            for b in range(count):
                stride = 2 if s > 0 and b == 0 else 1
                stages.append(BasicBlock(channels, width, stride, act, batch_norm))
                channels = width
        self.blocks = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        self.output = Node(output_energy)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.head(self.blocks(self.stem_node(self.stem(x)))))


def resnet(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (16, 32, 64),
    blocks: int | Sequence[int] = 1,
    act: str = "relu",
    output_energy: str = "se",
    batch_norm: bool = False,
) -> ResNet:
    """A :class:`ResNet` (see there)."""
    return ResNet(in_channels, num_classes, widths, blocks, act, output_energy, batch_norm)

"""Convolutional networks with a value node after every block.

* :func:`vgg` builds ``conv3x3 [-> BatchNorm2d] -> act [-> maxpool2]`` blocks, a node after each, then a
  linear head with the output node; :func:`vgg5` and :func:`vgg7` are the pcx benchmark
  definitions (examples/discriminative_experiments/VGG5, VGG7 in liukidar/pcx):

  ======  ==============================================================================
  VGG-5   128 p1 pool | 256 p1 pool | 512 p1 pool | 512 p1 pool | Linear
  VGG-7   128 p1 pool | 128 p1 | 256 p1 pool | 256 p0 | 512 p1 pool | 512 p0 | Linear
  ======  ==============================================================================

  (3x3 kernels, stride 1, ``pN`` = padding N, 2x2 max pooling with stride 2, GELU in pcx;
  a node after each block, the output node after the linear head).  ``width`` scales the
  channel counts (``width=0.25`` gives 32-64-128-128 for a CPU-sized VGG-5).
* :func:`cnn` is the same family with a pooled block per entry of ``channels``.
* :func:`rosenbaum_cnn` is the MNIST CNN of Rosenbaum (2022) / Torch2PC's example, a node
  after each of its five blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..exceptions import OptionError
from ..node import Node
from .mlp import activation

Block = tuple[int, int, bool]
"""``(out_channels, padding, pool)`` of a ``conv3x3 -> act [-> maxpool2]`` block."""

VGG5: tuple[Block, ...] = ((128, 1, True), (256, 1, True), (512, 1, True), (512, 1, True))
VGG7: tuple[Block, ...] = (
    (128, 1, True),
    (128, 1, False),
    (256, 1, True),
    (256, 0, False),
    (512, 1, True),
    (512, 0, False),
)


def vgg(
    config: Sequence[Block],
    in_channels: int = 3,
    num_classes: int = 10,
    in_size: int = 32,
    act: str = "gelu-tanh",
    output_energy: str = "se",
    width: float = 1.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """``conv3x3 [-> BatchNorm2d] -> act [-> maxpool] -> Node`` per block of ``config``,
    then ``Flatten -> Linear -> Node(output_energy)``.  ``in_size`` is the input's height
    (= width), used to size the linear head.  With ``batch_norm`` the convolutions have no
    bias (the norm's shift replaces it); see :mod:`predcode.running_stats` for how the
    running statistics are kept."""
    layers: list[nn.Module] = []
    channels, size = in_channels, in_size
    for k, (out, padding, pool) in enumerate(config):
        out = max(1, round(out * width))
        layers.append(nn.Conv2d(channels, out, 3, padding=padding, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(activation(act))
        size = size + 2 * padding - 2
        if pool:
            layers.append(nn.MaxPool2d(2, 2))
            size //= 2
        if size < 1:
            raise OptionError(
                f"an input of size {in_size} shrinks to nothing at block {k + 1} "
                f"of {len(config)}; use a larger input or fewer blocks"
            )
        layers.append(Node())
        channels = out
    layers += [nn.Flatten(), nn.Linear(channels * size * size, num_classes), Node(output_energy)]
    return nn.Sequential(*layers)


def vgg5(
    in_channels: int = 3,
    num_classes: int = 10,
    in_size: int = 32,
    act: str = "gelu-tanh",
    output_energy: str = "se",
    width: float = 1.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """pcx's VGG-5 (four conv blocks with pooling, linear head)."""
    return vgg(VGG5, in_channels, num_classes, in_size, act, output_energy, width, batch_norm)


def vgg7(
    in_channels: int = 3,
    num_classes: int = 10,
    in_size: int = 32,
    act: str = "gelu-tanh",
    output_energy: str = "se",
    width: float = 1.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """pcx's VGG-7 (six conv blocks, three with pooling, linear head); needs ``in_size >= 32``."""
    return vgg(VGG7, in_channels, num_classes, in_size, act, output_energy, width, batch_norm)


def cnn(
    channels: Sequence[int] = (32, 64),
    in_channels: int = 1,
    num_classes: int = 10,
    in_size: int = 28,
    act: str = "gelu-tanh",
    output_energy: str = "se",
    batch_norm: bool = False,
) -> nn.Sequential:
    """``conv3x3(padding 1) [-> BatchNorm2d] -> act -> maxpool2 -> Node`` per entry of
    ``channels``, then the linear head (28x28 input: 28 -> 14 -> 7 with the default two
    blocks)."""
    if not channels:
        raise OptionError("a CNN needs at least one conv block: give channels, e.g. [32, 64]")
    return vgg(
        [(c, 1, True) for c in channels], in_channels, num_classes, in_size, act, output_energy, batch_norm=batch_norm
    )


def rosenbaum_cnn(output_energy: str = "ce", nodes: bool = True) -> nn.Sequential:
    """The MNIST CNN of Rosenbaum (2022), five blocks (a node after each when ``nodes``)::

        [Conv(1,10,3) ReLU MaxPool2] [Conv(10,5,3) ReLU Flatten] [Linear(605,50) ReLU]
        [Linear(50,30) ReLU] [Linear(30,10)]

    With ``nodes=False`` it is the plain ``nn.Sequential`` of blocks (convert it with
    ``predcode.convert(model, at="children")``).
    """
    blocks: list[list[nn.Module]] = [
        [nn.Conv2d(1, 10, 3), nn.ReLU(), nn.MaxPool2d(2)],
        [nn.Conv2d(10, 5, 3), nn.ReLU(), nn.Flatten()],
        [nn.Linear(5 * 11 * 11, 50), nn.ReLU()],
        [nn.Linear(50, 30), nn.ReLU()],
        [nn.Linear(30, 10)],
    ]
    if not nodes:
        return nn.Sequential(*[nn.Sequential(*b) for b in blocks])
    layers: list[nn.Module] = []
    for k, block in enumerate(blocks):
        layers += block + [Node(output_energy if k == len(blocks) - 1 else "se")]
    return nn.Sequential(*layers)

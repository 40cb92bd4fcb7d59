r"""A generative decoder: a latent node with a Gaussian prior, layers down to the data.

.. math:: z \sim \mathcal N(\mu_z, I) \;\text{(node latent)}, \qquad
          x_l = \phi(W_l x_{l-1} + b_l) \;\text{(nodes)}, \qquad
          \text{data} = W_L x_{L-1} + b_L \;\text{(output node)}

The model's input is the prior mean :math:`\mu_z` (zeros during training); the latent is
a free node right after it.  Training (inference learning) clamps the output to an image
and relaxes the latent and hidden nodes; generation feeds a sample :math:`z` and runs the
feed-forward pass; completion clamps the known pixels (:func:`predcode.query.infer`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..exceptions import OptionError
from ..node import Node
from .mlp import activation


def decoder(sizes: Sequence[int] = (64, 128, 128, 784), act: str = "tanh", output_energy: str = "se") -> nn.Sequential:
    """``latent Node -> (Linear -> act -> Node)* -> Linear -> Node(output_energy)``; the
    pcx generative benchmark uses sizes [64, 128, 128, 784] (with ``act="hard-tanh"``).

    The value nodes are named ``latent``, ``h1``, ``h2``, ... and ``image`` (the data)."""
    if len(sizes) < 2:
        raise OptionError(f"a decoder needs latent and data sizes, got {list(sizes)}")
    layers: list[nn.Module] = [Node(name="latent")]
    for k in range(len(sizes) - 1):
        last = k == len(sizes) - 2
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if not last:
            layers.append(activation(act))
        layers.append(Node(output_energy, name="image") if last else Node("se", name=f"h{k + 1}"))
    return nn.Sequential(*layers)

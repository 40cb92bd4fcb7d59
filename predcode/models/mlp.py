"""Multilayer perceptron with a value node after every layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..exceptions import OptionError
from ..node import Node

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,  # exact (erf) GELU
    "gelu-tanh": lambda: nn.GELU(approximate="tanh"),  # as JAX's default jax.nn.gelu
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "leaky-relu": nn.LeakyReLU,
    "hard-tanh": nn.Hardtanh,  # jax.nn.hard_tanh: clip to [-1, 1] (the pcx decoder default)
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise OptionError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}") from None


def mlp(
    sizes: Sequence[int],
    act: str = "gelu-tanh",
    output_energy: str = "se",
    bias: bool = True,
    act_first: bool = False,
) -> nn.Sequential:
    """``sizes[0] -> ... -> sizes[-1]`` with ``Linear -> act -> Node`` per hidden layer and
    ``Linear -> Node(output_energy)`` at the top.

    With ``act_first=True`` each layer computes ``Linear(act(x))`` instead (the activation
    is applied to the node below, as in the pcx and Song et al. formulations:
    ``mu_l = W_l f(x_{l-1})``); the first layer then reads the raw input.
    """
    if len(sizes) < 2:
        raise OptionError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
    layers: list[nn.Module] = []
    n = len(sizes) - 1
    for k in range(n):
        last = k == n - 1
        if act_first and k > 0:
            layers.append(activation(act))
        layers.append(nn.Linear(sizes[k], sizes[k + 1], bias=bias))
        if not act_first and not last:
            layers.append(activation(act))
        layers.append(Node(output_energy if last else "se"))
    return nn.Sequential(*layers)

"""Checks on what users hand in, each failing with an error that names the problem."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from .exceptions import InputError
from .graph import PCGraph


def reference_tensor(graph: PCGraph) -> Tensor | None:
    """A parameter or buffer of the model, whose dtype and device inputs must follow."""
    for p in graph.model.parameters():
        return p
    for b in graph.model.buffers():
        if b.is_floating_point():
            return b
    return None


def check_inputs(graph: PCGraph, inputs: Sequence[Tensor]) -> None:
    """Inputs must be finite float tensors with a batch dimension, on the model's device
    and in the model's dtype."""
    if len(inputs) != len(graph.inputs):
        raise InputError(f"the model takes {len(graph.inputs)} input(s), got {len(inputs)}")
    ref = reference_tensor(graph)
    for i, x in zip(graph.inputs, inputs):
        name = graph.names[i]
        if not isinstance(x, Tensor):
            raise InputError(f"input '{name}' must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[0] == 0:
            raise InputError(f"input '{name}' needs a non-empty batch dimension, got shape {tuple(x.shape)}")
        if x.dtype == torch.bool or x.is_complex():
            raise InputError(
                f"input '{name}' has dtype {x.dtype}; expected a floating dtype "
                f"({ref.dtype if ref is not None else 'float32'}) or integer token ids"
            )
        if not x.is_floating_point():  # integer token ids (e.g. into nn.Embedding)
            if ref is not None and x.device != ref.device:
                raise InputError(
                    f"input '{name}' is on {x.device} but the model is on "
                    f"{ref.device}; move it with .to('{ref.device}')"
                )
            continue
        if ref is not None and x.dtype != ref.dtype:
            raise InputError(
                f"input '{name}' has dtype {x.dtype} but the model is {ref.dtype}; convert with .to({ref.dtype})"
            )
        if ref is not None and x.device != ref.device:
            raise InputError(
                f"input '{name}' is on {x.device} but the model is on {ref.device}; move it with .to('{ref.device}')"
            )
        if not all_finite(x):
            bad = int((~torch.isfinite(x)).sum())
            raise InputError(f"input '{name}' contains {bad} NaN or infinite value(s)")


def all_finite(x: Tensor) -> bool:
    """Whether every element of ``x`` is finite.  A sum is finite only if every term is
    (an infinity or NaN survives any addition), so one reduction decides the common case;
    only a sum that overflows takes the element-wise check."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


@contextmanager
def forward_errors(graph: PCGraph, inputs: Sequence[Tensor]) -> Iterator[None]:
    """Turn a failure of the model's forward pass on valid-looking inputs (almost always a
    shape mismatch, e.g. 783 features into a ``Linear(784, ...)``) into an
    :class:`InputError` that names the inputs' shapes and keeps torch's message."""
    try:
        yield
    except (torch.OutOfMemoryError, NotImplementedError):
        raise
    except IndexError as exc:  # a token id beyond an nn.Embedding's table
        raise InputError(
            f"the model's forward pass failed: {exc}. Integer inputs are token "
            "ids: each must lie in [0, number of embeddings)"
        ) from exc
    except RuntimeError as exc:
        ref = reference_tensor(graph)
        for i, x in zip(graph.inputs, inputs):
            if not x.is_floating_point():  # integer ids into something other than an embedding
                raise InputError(
                    f"input '{graph.names[i]}' has dtype {x.dtype}; expected a floating dtype "
                    f"({ref.dtype if ref is not None else 'float32'}): integer inputs are token "
                    f"ids for an nn.Embedding, and the model failed on them ({exc}); convert "
                    "features with .float()"
                ) from exc
        shapes = ", ".join(f"'{graph.names[i]}' of shape {tuple(x.shape)}" for i, x in zip(graph.inputs, inputs))
        raise InputError(
            f"the model's forward pass failed on input {shapes}: {exc}. "
            "Check that the input's shape is what the model expects"
        ) from exc


def encode_target(target: Tensor, prediction: Tensor, name: str) -> Tensor:
    """Target as a value for the output node: integer class labels become one-hot rows;
    float targets must match the prediction's shape and be finite."""
    if not isinstance(target, Tensor):
        raise InputError(f"target for '{name}' must be a torch.Tensor, got {type(target).__name__}")
    if target.device != prediction.device:
        raise InputError(f"target for '{name}' is on {target.device} but the model is on {prediction.device}")
    if target.shape[:1] != prediction.shape[:1]:
        raise InputError(
            f"target for '{name}' has batch size {target.shape[0] if target.dim() else 0} "
            f"but the input has {prediction.shape[0]}"
        )
    if not target.is_floating_point():
        # class labels: (batch,), or one per position, e.g. (batch, length) next tokens
        if target.dtype == torch.bool or target.is_complex() or tuple(target.shape) != tuple(prediction.shape[:-1]):
            shape = "(batch," + "".join(f" {n}," for n in prediction.shape[1:-1]).rstrip(",") + ")"
            raise InputError(
                f"integer target for '{name}' must be class labels of shape "
                f"{shape} (the prediction's shape "
                f"{tuple(prediction.shape)} without its last, class dimension), "
                f"got {target.dtype} of shape {tuple(target.shape)}"
            )
        classes = prediction.shape[-1]
        low, high = (int(v) for v in torch.aminmax(target))
        if low < 0 or high >= classes:
            raise InputError(f"labels for '{name}' must lie in [0, {classes - 1}], found values in [{low}, {high}]")
        one_hot = prediction.new_zeros(prediction.shape)
        return one_hot.scatter_(-1, target.unsqueeze(-1), 1.0)
    if target.shape != prediction.shape:
        raise InputError(
            f"target for '{name}' has shape {tuple(target.shape)}; the node's "
            f"prediction has shape {tuple(prediction.shape)}"
        )
    if target.dtype != prediction.dtype:
        raise InputError(f"target for '{name}' has dtype {target.dtype}; the model is {prediction.dtype}")
    if not all_finite(target):
        raise InputError(f"target for '{name}' contains NaN or infinite values")
    return target

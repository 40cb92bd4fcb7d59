"""torch.fx helpers shared by :class:`~predcode.graph.PCGraph` and :mod:`predcode.convert`.

* :func:`trace` traces a module with :class:`Node` markers (and any modules named as
  leaves) kept as single calls, and turns a failure into a :class:`GraphError` that names
  the operation, the line of the user's code and what to do.
* :func:`remove_inplace` replaces in-place operations (``x += y``, ``relu_``,
  ``nn.ReLU(inplace=True)``) by their out-of-place twins.  A predictive coding graph
  evaluates every predictor on node *values* many times per batch; an in-place operation
  on a predictor's input would overwrite a node's value (or an autograd input), so the
  traced graph must be functional.  The user's model itself is never changed.
"""

from __future__ import annotations

import copy
import operator
import os
import traceback
from typing import Collection

import torch
from torch import fx, nn

from .errors import GraphError
from .node import Node

_INPLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, operator.ifloordiv: operator.floordiv,
    operator.imod: operator.mod, operator.ipow: operator.pow, operator.imatmul: operator.matmul,
    operator.iand: operator.and_, operator.ior: operator.or_, operator.ixor: operator.xor,
}


class LeafTracer(fx.Tracer):
    """fx tracer that keeps :class:`Node` markers, and the modules named in ``leaves``
    (qualified names, e.g. ``"layer1.0"``), as single ``call_module`` operations."""

    def __init__(self, leaves: Collection[str] = ()) -> None:
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Node) or qualname in self.leaves or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, leaves: Collection[str] = ()) -> fx.GraphModule:
    """Trace ``model`` into a functional ``GraphModule`` sharing its submodules.

    A model that already is a ``GraphModule`` is used as it is (its graph copied), so a
    converted model is not traced twice.
    """
    if isinstance(model, fx.GraphModule):
        graph = fx.Graph()
        graph.output(graph.graph_copy(model.graph, {}))
        traced = fx.GraphModule(model, graph, class_name=type(model).__name__)
    else:
        tracer = LeafTracer(leaves)
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # fx raises many kinds; name the cause and the remedy
            raise GraphError(trace_error_message(model, exc)) from exc
        traced = fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)
    remove_inplace(traced)
    return traced


_PACKAGE_DIRS = tuple(os.path.dirname(p) + os.sep for p in (torch.__file__, __file__))


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback that lies in the user's code (not in torch or
    predcode): where the untraceable operation is."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not frame.filename.startswith(_PACKAGE_DIRS) and "<eval_with_key>" not in frame.filename:
            return frame
    return None


def trace_error_message(model: nn.Module, exc: BaseException) -> str:
    """What failed (the operation and the line of code), why, and what to do."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if "control flow" in lowered:
        why = ("data-dependent control flow: an `if`/`while` (or bool(), int(), float()) on a "
               "tensor's value, which is unknown while tracing")
    elif "cannot be iterated" in lowered or "len(" in lowered or "__len__" in lowered:
        why = "iteration over a tensor or len() of it, whose size is unknown while tracing"
    else:
        why = f"{type(exc).__name__}: {text}"
    frame = _user_frame(exc)
    where = ""
    if frame is not None:
        code = f": `{frame.line.strip()}`" if frame.line else ""
        where = f" at {frame.filename}:{frame.lineno} in {frame.name}(){code}"
    return (
        f"could not trace {type(model).__name__} with torch.fx{where}: {why}. "
        "What to do: unroll loops over a fixed length (e.g. a sequence length given to the "
        "model's constructor); move value-dependent branches out of forward(); or make the "
        "untraceable part a submodule and keep it whole by naming it: "
        "predcode.convert(model, at=[..., 'that.submodule', ...]) puts a node after each "
        "named block and never traces inside it"
    )


def _out_of_place_method(name: str) -> str | None:
    if name.endswith("_") and not name.startswith("_") and hasattr(torch.Tensor, name[:-1]):
        return name[:-1]
    return None


def _out_of_place_function(fn) -> object | None:
    """``torch.relu_`` -> ``torch.relu``, ``F.relu_`` -> ``F.relu`` (None if not in place)."""
    name = getattr(fn, "__name__", "")
    if not name.endswith("_") or name.startswith("_"):
        return None
    for namespace in (torch, torch.nn.functional):
        if getattr(namespace, name, None) is fn and hasattr(namespace, name[:-1]):
            return getattr(namespace, name[:-1])
    return None


def remove_inplace(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite ``gm``'s in-place operations as out-of-place ones (in place; returns ``gm``).

    ``operator.iadd`` -> ``operator.add`` (``x += y``), ``x.relu_()`` -> ``x.relu()``,
    ``torch.relu_`` -> ``torch.relu``, ``F.relu(x, inplace=True)`` -> ``inplace=False``,
    and a module with ``inplace=True`` (``nn.ReLU(inplace=True)``) -> a copy of it with
    ``inplace=False`` held by ``gm`` only.
    """
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_function":
            target = node.target
            if target in _INPLACE_OPERATORS:
                node.target = _INPLACE_OPERATORS[target]
                changed = True
            elif _out_of_place_function(target) is not None:
                node.target = _out_of_place_function(target)
                changed = True
            if node.kwargs.get("inplace") is True:
                node.kwargs = {**node.kwargs, "inplace": False}
                changed = True
        elif node.op == "call_method":
            twin = _out_of_place_method(node.target)
            if twin is not None:
                node.target = twin
                changed = True
        elif node.op == "call_module":
            module = gm.get_submodule(node.target)
            if getattr(module, "inplace", False) is True:
                twin_module = copy.copy(module)
                twin_module.inplace = False
                name = node.target.replace(".", "_") + "_out_of_place"
                gm.add_submodule(name, twin_module)
                node.meta["source_target"] = node.target  # the user's name for it
                node.target = name
                changed = True
    if changed:
        gm.recompile()
    return gm

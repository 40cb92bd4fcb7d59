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
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.nn import functional as F

from .exceptions import GraphError
from .node import Node

_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    operator.ifloordiv: operator.floordiv,
    operator.imod: operator.mod,
    operator.ipow: operator.pow,
    operator.imatmul: operator.matmul,
    operator.iand: operator.and_,
    operator.ior: operator.or_,
    operator.ixor: operator.xor,
}


def attention_mask(
    attn_mask: Tensor | None, key_padding_mask: Tensor | None, query: Tensor, key: Tensor, is_causal: bool = False
) -> Tensor | None:
    """The additive float mask, broadcastable to ``(batch, heads, L, S)``, that
    ``nn.MultiheadAttention`` applies: a boolean mask's ``True`` (not allowed) becomes
    ``-inf``, a float mask is added as it is; ``attn_mask`` of shape ``(L, S)`` or
    ``(batch * heads, L, S)``, ``key_padding_mask`` of shape ``(batch, S)``.  Recorded as
    one operation when traced (its dtype branches run on the values)."""
    L, S = query.shape[-2], key.shape[-2]

    def additive(m: Tensor) -> Tensor:
        if m.is_floating_point():
            return m.to(query.dtype)
        return torch.zeros(m.shape, dtype=query.dtype, device=query.device).masked_fill(m, float("-inf"))

    mask = None
    if attn_mask is not None:
        mask = additive(attn_mask)
        if mask.dim() == 3:
            mask = mask.reshape(query.shape[0], -1, L, S)
    elif is_causal:
        mask = torch.full((L, S), float("-inf"), dtype=query.dtype, device=query.device).triu(1)
    if key_padding_mask is not None:
        padding = additive(key_padding_mask)[:, None, None, :]
        mask = padding if mask is None else mask + padding
    return mask


def multi_head_attention_ops(
    m: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""``nn.MultiheadAttention``'s forward as traceable operations on its own parameters:

    .. math:: \mathrm{softmax}\big(QK^\top/\sqrt{d} + M\big)\,V \text{ per head, then } W_o

    (``M``: :func:`attention_mask`), so that ``at="ops"`` puts a node after each of them.
    Supports ``batch_first`` either way, separate key/value widths, masks; refuses
    ``add_bias_kv`` and ``add_zero_attn``."""
    if m.bias_k is not None or m.add_zero_attn:
        raise GraphError(
            "nn.MultiheadAttention with add_bias_kv or add_zero_attn cannot be "
            "taken apart at at='ops'; name it in at=[...] to keep it whole"
        )
    if not m.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    H, D = m.num_heads, m.head_dim
    if m._qkv_same_embed_dim:
        w_q, w_k, w_v = m.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
    b_q = b_k = b_v = None
    if m.in_proj_bias is not None:
        b_q, b_k, b_v = m.in_proj_bias.chunk(3)
    q, k, v = (
        F.linear(t, w, b).unflatten(-1, (H, D)).transpose(1, 2)  # type: ignore[no-untyped-call]  # unannotated in torch
        for t, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v))
    )
    scores = torch.matmul(q, k.transpose(-2, -1)) * (D**-0.5)
    if attn_mask is not None or key_padding_mask is not None or is_causal:
        scores = scores + attention_mask(attn_mask, key_padding_mask, q, k, is_causal)
    weights = F.dropout(scores.softmax(dim=-1), m.dropout, m.training)
    out = m.out_proj(torch.matmul(weights, v).transpose(1, 2).flatten(2))
    if not m.batch_first:
        out = out.transpose(0, 1)
    if not need_weights:
        return out, None
    return out, weights.mean(dim=1) if average_attn_weights else weights


def encoder_layer_ops(
    m: nn.TransformerEncoderLayer,
    src: Tensor,
    src_mask: Tensor | None = None,
    src_key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
) -> Tensor:
    """``nn.TransformerEncoderLayer``'s forward (its slow path, which computes the same)
    without the fast-path checks that torch.fx cannot trace."""
    x = src
    if m.norm_first:
        x = x + m._sa_block(m.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        return x + m._ff_block(m.norm2(x))
    x = m.norm1(x + m._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
    out: Tensor = m.norm2(x + m._ff_block(x))
    return out


def decoder_layer_ops(
    m: nn.TransformerDecoderLayer,
    tgt: Tensor,
    memory: Tensor,
    tgt_mask: Tensor | None = None,
    memory_mask: Tensor | None = None,
    tgt_key_padding_mask: Tensor | None = None,
    memory_key_padding_mask: Tensor | None = None,
    tgt_is_causal: bool = False,
    memory_is_causal: bool = False,
) -> Tensor:
    """``nn.TransformerDecoderLayer``'s forward, traceable (see :func:`encoder_layer_ops`)."""
    x = tgt
    if m.norm_first:
        x = x + m._sa_block(m.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
        x = x + m._mha_block(m.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
        return x + m._ff_block(m.norm3(x))
    x = m.norm1(x + m._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
    x = m.norm2(x + m._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
    out: Tensor = m.norm3(x + m._ff_block(x))
    return out


fx.wrap("attention_mask")  # one operation in a traced graph; its dtype branches run on values

DECOMPOSED: dict[type[nn.Module], Callable[..., Tensor | tuple[Tensor, Tensor | None]]] = {
    nn.MultiheadAttention: multi_head_attention_ops,
    nn.TransformerEncoderLayer: encoder_layer_ops,
    nn.TransformerDecoderLayer: decoder_layer_ops,
}
"""Built-in modules that torch.fx cannot trace into, with a traceable twin of their forward
(on the module's own parameters), used at ``at="ops"`` and when a block inside one is named."""


class LeafTracer(fx.Tracer):
    """fx tracer that keeps :class:`Node` markers, and the modules named in ``leaves``
    (qualified names, e.g. ``"layer1.0"``), as single ``call_module`` operations.

    A built-in module (normally one operation) is traced into when ``decompose`` is set or
    a named leaf lies inside it; those in :data:`DECOMPOSED` through their traceable twin.
    """

    def __init__(self, leaves: Collection[str] = (), decompose: bool = False) -> None:
        super().__init__()
        self.leaves = set(leaves)
        self.decompose = decompose

    def _opens(self, m: nn.Module, qualname: str) -> bool:
        """Whether to trace into this module rather than keep it whole."""
        if isinstance(m, Node) or qualname in self.leaves:
            return False
        inside = any(name.startswith(qualname + ".") for name in self.leaves) if qualname else False
        return inside or (self.decompose and type(m) in DECOMPOSED)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, Node) or qualname in self.leaves:
            return True
        if self._opens(m, qualname):
            return False
        return super().is_leaf_module(m, qualname)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:  # fx.Tracer.call_module's own signature (proxies and whatever the module returns)
        if type(m) in DECOMPOSED and self._opens(m, self.path_of_module(m)):
            return DECOMPOSED[type(m)](m, *args, **kwargs)
        return super().call_module(m, forward, args, kwargs)


def trace(model: nn.Module, leaves: Collection[str] = (), decompose: bool = False) -> fx.GraphModule:
    """Trace ``model`` into a functional ``GraphModule`` sharing its submodules
    (``leaves``, ``decompose``: see :class:`LeafTracer`).

    A model that already is a ``GraphModule`` is used as it is (its graph copied), so a
    converted model is not traced twice.
    """
    if isinstance(model, fx.GraphModule):
        graph = fx.Graph()
        graph.output(graph.graph_copy(model.graph, {}))
        traced = fx.GraphModule(model, graph, class_name=type(model).__name__)
    else:
        tracer = LeafTracer(leaves, decompose)
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
        why = (
            "data-dependent control flow: an `if`/`while` (or bool(), int(), float()) on a "
            "tensor's value, which is unknown while tracing"
        )
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


def _out_of_place_function(fn: fx.node.Target) -> Callable[..., object] | None:
    """``torch.relu_`` -> ``torch.relu``, ``F.relu_`` -> ``F.relu`` (None if not in place)."""
    name = getattr(fn, "__name__", "")
    if not name.endswith("_") or name.startswith("_"):
        return None
    for namespace in (torch, torch.nn.functional):
        if getattr(namespace, name, None) is fn and hasattr(namespace, name[:-1]):
            twin: Callable[..., object] = getattr(namespace, name[:-1])
            return twin
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
                twin_module.inplace = False  # type: ignore[assignment]  # torch types Module attributes as Tensor | Module
                name = node.target.replace(".", "_") + "_out_of_place"
                gm.add_submodule(name, twin_module)
                node.meta["source_target"] = node.target  # the user's name for it
                node.target = name
                changed = True
    if changed:
        gm.recompile()
    return gm

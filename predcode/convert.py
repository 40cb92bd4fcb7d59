r"""Automatic conversion: any PyTorch model becomes a predictive coding network.

Millidge, Tschantz & Buckley (2020): put a value node :math:`x_i` and an error
:math:`e_i = x_i - \mu_i` on every vertex of a computation graph, with
:math:`\mu_i = f_i(x_{pa(i)})` the vertex's own operation; at the fixed point of (fixed
prediction) inference the errors are backprop's gradients, :math:`e_i = -\partial L/\partial
\mu_i`, on *any* graph.  :func:`insert_nodes` builds that network from an ordinary
``nn.Module`` by tracing it with ``torch.fx`` and inserting :class:`~predcode.node.Node`
markers, at the granularity you choose:

============================  ============================================================
``at="layers"`` (default)     after every layer with parameters (Linear, Conv, ...)
``at="modules"``              after every leaf module call (activations and pooling too)
``at="children"``             after every direct child of the model (``nn.Sequential``
                              blocks: the Torch2PC convention)
``at=["layer1", "fc", ...]``  after every call of the named submodules, each kept whole
``at="ops"``                  after every operation of the traced graph (the Millidge
                              construction; needs ``example_inputs``)
============================  ============================================================

The model's outputs always get a node (with ``output_energy``).  The result is a
``GraphModule`` that shares the model's submodules and parameters: training the
predictive coding network trains the user's model, which itself stays unchanged and can
still be trained by backprop.  :func:`convert` returns the :class:`PCGraph` directly.

:func:`layered` pads a graph with identity *relay* nodes so that every node reaches the
outputs by paths of one length, which makes Z-IL exact on graphs with skip connections
(see :mod:`predcode.rules.zil`).
"""

from __future__ import annotations

import copy
import operator
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .energy import Energy, Gaussian, make_energy
from .exceptions import GraphError, OptionError
from .graph import PCGraph, Slot
from .node import Node
from .tracing import attention_mask, trace

Placement = Literal["layers", "modules", "children", "ops"] | Sequence[str]
EnergySpec = str | Energy | Sequence[str | Energy]

_NON_TENSOR_METHODS = {
    "size",
    "dim",
    "numel",
    "item",
    "tolist",
    "ndimension",
    "nelement",
    "stride",
    "data_ptr",
    "element_size",
    "is_contiguous",
    "get_device",
}
_NOT_NODES = (nn.RNNBase,)
_CONSTANT_FUNCTIONS = {
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.rand_like,
    torch.randn_like,
    torch.randint_like,
    attention_mask,
}
_CONSTANT_METHODS = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "detach"}
"""Operations whose result does not change with the values of their tensor arguments (only
their shape, dtype or device): no node goes on them or on what follows from them alone, so
a predictor never has to differentiate a constant (``h0 = torch.zeros_like(h)``)."""


def insert_nodes(
    model: nn.Module,
    at: Placement = "layers",
    *,
    energy: str | Energy = "se",
    output_energy: EnergySpec = "se",
    example_inputs: Tensor | Sequence[Tensor] | None = None,
    input_nodes: bool = False,
) -> fx.GraphModule:
    """The model with :class:`Node` markers inserted, as a ``GraphModule`` sharing its
    parameters (see the module docstring for ``at``).

    Args:
        energy: energy of the hidden nodes (a name or an :class:`Energy` *type instance*,
            copied per node).
        output_energy: energy of the output node(s) (``"se"``, ``"ce"``, ...); a sequence
            gives one per output.
        example_inputs: a batch of inputs; with it, only operations that yield a floating
            tensor with the batch dimension get nodes (shape, size and constant
            computations stay inside predictors).  Required for ``at="ops"``.
        input_nodes: also put a node directly after every input: a free value node whose
            prediction is the input, so that the input itself carries an error (at
            equilibrium ``e = -dL/dx``, the Millidge construction's leaf).

    Raises:
        GraphError: the model cannot be traced (the message names the operation and the
            line) or a named submodule does not exist.
        OptionError: an unknown ``at``.
    """
    names = _named_leaves(model, at)
    if at == "ops" and example_inputs is None:
        raise OptionError(
            "at='ops' needs example_inputs (a batch of inputs) to tell which "
            "operations yield tensors with a batch dimension"
        )
    traced = trace(model, leaves=names or (), decompose=at == "ops")
    if traced.graph.eliminate_dead_code():  # e.g. attention weights computed but unused
        traced.recompile()
    _check_named_calls(model, traced, names)
    if at == "ops":
        _warn_kept_whole(traced)
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    meta = _shapes(traced, example_inputs) if example_inputs is not None else None
    graph = traced.graph
    depends = _input_dependent(graph)
    outputs = _output_items(graph)
    out_energies = _per_output(output_energy, len(outputs))
    marks: dict[fx.Node, tuple[str, str, Energy | str]] = {}  # fx node -> (key, name, energy)
    for node in graph.nodes:
        if node in depends and _wanted(traced, node, at, names, meta, input_nodes):
            for target in _tensor_sites(traced, node, meta):
                key, name = _identity(traced, target)
                marks[target] = (key, name, energy)
    for k, item in enumerate(outputs):
        if _is_node_call(traced, item):
            continue
        if item.op == "placeholder":
            raise GraphError(
                f"output {k} of {type(model).__name__} is its input "
                f"'{item.name}' itself; an output must be computed from the inputs"
            )
        if meta is not None and item in meta.nonfinite:
            raise GraphError(
                f"output {k} of {type(model).__name__} ('{item.name}') holds "
                "infinite or NaN values on example_inputs; an output node needs "
                "finite values"
            )
        if meta is not None and not _batched_float(meta.entries.get(item)):
            raise GraphError(
                f"output {k} of {type(model).__name__} ('{item.name}') is not a "
                "floating tensor with a batch dimension; it cannot be a node"
            )
        key, name = _identity(traced, item)
        marks[item] = (key + "#out", name, out_energies[k])
    _insert(traced, marks)
    return traced


def convert(
    model: nn.Module,
    at: Placement = "layers",
    *,
    energy: str | Energy = "se",
    output_energy: EnergySpec = "se",
    example_inputs: Tensor | Sequence[Tensor] | None = None,
    input_nodes: bool = False,
) -> PCGraph:
    """``PCGraph(insert_nodes(model, at, ...))``: the predictive coding network of
    ``model`` (see :func:`insert_nodes` for the keyword options, which have its defaults)."""
    return PCGraph(
        insert_nodes(
            model,
            at,
            energy=energy,
            output_energy=output_energy,
            example_inputs=example_inputs,
            input_nodes=input_nodes,
        )
    )


# -- placement ---------------------------------------------------------------------------
def _named_leaves(model: nn.Module, at: Placement) -> list[str] | None:
    """The submodules to keep whole and mark (for ``at`` = names or ``"children"``)."""
    if isinstance(at, str):
        if at == "children":
            return [name for name, _ in model.named_children()]
        if at not in ("layers", "modules", "ops"):
            raise OptionError(
                f"unknown placement at='{at}'; choose 'layers', 'modules', "
                "'children', 'ops' or a list of submodule names"
            )
        return None
    names = list(at)
    known = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str) or name not in known or name == "":
            some = [n for n in known if n][:12]
            raise GraphError(f"{type(model).__name__} has no submodule named {name!r}; its submodules include {some}")
    for a in names:
        for b in names:
            if b.startswith(a + "."):
                raise GraphError(
                    f"'{b}' lies inside '{a}': name blocks that do not nest (a block named in at= is kept whole)"
                )
    return names


def _check_named_calls(model: nn.Module, gm: fx.GraphModule, names: list[str] | None) -> None:
    """Every block named in ``at=[...]`` must be called as a module by ``forward``; one that
    never is (only its parameters used, or never used) cannot hold a node."""
    if not names:
        return
    called = {n.meta.get("source_target", n.target) for n in gm.graph.nodes if n.op == "call_module"}
    missing = [name for name in names if name not in called]
    if missing:
        raise GraphError(
            f"{type(model).__name__}.forward never calls {missing} as a module "
            "(its parameters may be used directly, or the module not at all), so "
            "no node can go after it; name blocks that forward() calls"
        )


def _warn_kept_whole(gm: fx.GraphModule) -> None:
    """At ``at="ops"``: warn about each built-in module with submodules that torch.fx kept
    as one operation (it gets one node after it, none inside)."""
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = _module_of(gm, node)
        if isinstance(module, Node) or not type(module).__module__.startswith("torch.nn"):
            continue
        if any(True for _ in module.children()):
            name = node.meta.get("source_target", node.target)
            warnings.warn(
                f"at='ops' keeps '{name}' ({type(module).__name__}) whole: torch.fx "
                "does not trace into this built-in module, so it gets one node after "
                "it and none inside",
                stacklevel=4,
            )


def _wanted(
    gm: fx.GraphModule, node: fx.Node, at: Placement, names: list[str] | None, meta: _Shapes | None, input_nodes: bool
) -> bool:
    if node.op == "placeholder":
        return input_nodes
    if meta is not None and node in meta.nonfinite:
        return False  # e.g. attention scores with a -inf mask: kept inside the next predictor
    if _is_node_call(gm, node) or _followed_by_node(gm, node):
        return False
    if node.op == "call_module":
        module = _module_of(gm, node)
        if names is not None:
            return node.meta.get("source_target", node.target) in names
        if at == "layers":
            return any(True for _ in module.parameters())
        return at in ("modules", "ops")
    return at == "ops" and node.op in ("call_function", "call_method")


def _tensor_sites(gm: fx.GraphModule, node: fx.Node, meta: _Shapes | None) -> list[fx.Node]:
    """Where to put the node(s) for ``node``: itself if it yields a tensor; the items taken
    from it (``h, c = cell(...)``) if it yields a tuple; nothing if it yields no tensor."""
    if node.op == "call_method" and node.target in _NON_TENSOR_METHODS:
        return []
    if node.op == "call_function" and node.target is getattr:
        return []
    if (
        node.op == "call_module"
        and isinstance(attention := _module_of(gm, node), nn.MultiheadAttention)
        and not attention.batch_first
    ):
        raise GraphError(
            f"'{node.meta.get('source_target', node.target)}' (nn.MultiheadAttention with "
            "batch_first=False) returns (length, batch, width), but a value node needs the batch "
            "first; construct it with batch_first=True"
        )
    if node.op == "call_module" and isinstance(_module_of(gm, node), _NOT_NODES):
        raise GraphError(
            f"'{node.target}' ({type(_module_of(gm, node)).__name__}) processes a "
            "whole sequence in one call, so it cannot hold a node per time step; unroll it "
            "with its cell (nn.LSTMCell / nn.RNNCell in a loop over a fixed length) or use "
            "predcode.models.lstm / rnn"
        )
    if meta is not None:
        info = meta.entries.get(node)
        if _batched_float(info):
            return [node]
        if isinstance(info, (tuple, list)):
            return [
                u
                for u in node.users
                if u.op == "call_function"
                and u.target is operator.getitem
                and isinstance(u.args[1], int)
                and _batched_float(meta.entries.get(u))
                and u.users
                and not _followed_by_node(gm, u)
                and u not in meta.nonfinite
            ]
        return []
    users = list(node.users)
    if users and all(u.op == "call_function" and u.target is operator.getitem for u in users):
        return [u for u in users if u.users and not _followed_by_node(gm, u)]
    return [node]


def _identity(gm: fx.GraphModule, node: fx.Node) -> tuple[str, str]:
    """``(key, name)``: calls of one module share a key (one Node, slots ``name``,
    ``name:1``, ...); an operation or an input has its own."""
    if node.op == "call_module":
        target = node.meta.get("source_target", node.target)
        return f"module:{target}", target
    if node.op == "call_function" and node.target is operator.getitem:
        called, item = node.args[0], node.args[1]
        if isinstance(called, fx.Node) and called.op == "call_module" and isinstance(item, int):
            source = called.meta.get("source_target", called.target)
            return f"module:{source}[{item}]", f"{source}[{item}]"
    if node.op == "placeholder":
        return f"input:{node.name}", f"{node.name}_node"
    return f"op:{node.name}", node.name


def _insert(gm: fx.GraphModule, marks: dict[fx.Node, tuple[str, str, Energy | str]]) -> None:
    modules: dict[str, str] = {}  # key -> attribute name of its Node in gm
    taken = {n.name for n in gm.graph.nodes if n.op == "placeholder"}
    taken |= {m.name for m in gm.modules() if isinstance(m, Node) and m.name}
    for node in list(gm.graph.nodes):
        if node not in marks:
            continue
        key, name, energy = marks[node]
        if key not in modules:
            while name in taken:  # e.g. the output call of a module whose other calls are hidden
                name += "'"
            taken.add(name)
            attribute = _attribute_name(gm, name)
            gm.add_submodule(attribute, Node(_fresh_energy(energy), name=name))
            modules[key] = attribute
        with gm.graph.inserting_after(node):
            marker = gm.graph.call_module(modules[key], (node,))
        node.replace_all_uses_with(marker, delete_user_cb=lambda user, marker=marker: user is not marker)
    gm.graph.lint()
    gm.recompile()


def _attribute_name(gm: fx.GraphModule, name: str) -> str:
    base = "pc_" + re.sub(r"\W", "_", name)
    attribute, k = base, 1
    while hasattr(gm, attribute):
        attribute, k = f"{base}_{k}", k + 1
    return attribute


def _fresh_energy(energy: Energy | str) -> Energy:
    """A new energy per node: a name makes a new module; an instance is deep-copied so
    nodes do not share a learnable precision by accident."""
    if isinstance(energy, Energy):
        return copy.deepcopy(energy)
    return make_energy(energy)


# -- graph facts -------------------------------------------------------------------------
def _module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module:
    """The submodule of ``gm`` that the ``call_module`` operation ``node`` calls."""
    assert isinstance(node.target, str)  # fx: a call_module's target is the module's qualified name
    return gm.get_submodule(node.target)


def _is_node_call(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(_module_of(gm, node), Node)


def _followed_by_node(gm: fx.GraphModule, node: fx.Node) -> bool:
    users = list(node.users)
    return bool(users) and all(_is_node_call(gm, u) for u in users)


def _input_dependent(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on a model input (constants and parameters do not)."""
    depends: set[fx.Node] = set()
    for node in graph.nodes:
        constant = (node.op == "call_function" and node.target in _CONSTANT_FUNCTIONS) or (
            node.op == "call_method" and node.target in _CONSTANT_METHODS
        )
        if node.op == "placeholder" or (not constant and any(a in depends for a in node.all_input_nodes)):
            depends.add(node)
    return depends


def _output_items(graph: fx.Graph) -> list[fx.Node]:
    out = next(n for n in graph.nodes if n.op == "output")
    result = out.args[0]
    items = result if isinstance(result, (tuple, list)) else (result,)
    for item in items:
        if not isinstance(item, fx.Node):
            raise GraphError(
                "every output of the model must be a tensor computed from the "
                f"inputs; got {type(item).__name__} (return a tensor or a tuple "
                "of tensors)"
            )
    return list(items)


def _per_output(spec: EnergySpec, n: int) -> list[str | Energy]:
    if isinstance(spec, (str, Energy)):
        return [spec] * n
    spec = list(spec)
    if len(spec) != n:
        raise OptionError(f"output_energy lists {len(spec)} energies for {n} outputs")
    return spec


_Entry: TypeAlias = "tuple[TensorMetadata, int | None] | list[_Entry] | None"
"""An operation's result metadata with the batch size (a list for a tuple or list result;
None for a result that is not a tensor)."""


@dataclass
class _Shapes:
    """What one run of a traced graph on example inputs showed: each operation's
    :data:`_Entry` (for :func:`_batched_float`), and the operations whose result holds an
    infinite or NaN value."""

    entries: dict[fx.Node, _Entry]
    nonfinite: set[fx.Node]


def _shapes(gm: fx.GraphModule, inputs: Sequence[Tensor]) -> _Shapes:
    """Run the graph once on ``inputs`` and record each operation's result metadata
    (with the batch size) for :func:`_batched_float`."""
    inputs = list(inputs)
    probe = _Probe(gm)
    try:
        with torch.no_grad():
            probe.propagate(*inputs)
    except Exception as exc:
        shapes = [tuple(x.shape) for x in inputs]
        raise GraphError(f"the model failed on example_inputs of shape {shapes}: {exc}") from exc
    batch = inputs[0].shape[0] if inputs and inputs[0].dim() else None
    meta = _Shapes({}, probe.nonfinite)
    for node in gm.graph.nodes:
        info = node.meta.get("tensor_meta")
        meta.entries[node] = _with_batch(info, batch)
    return meta


class _Probe(ShapeProp):
    """Shape propagation that also records the operations whose result holds an infinite
    or NaN value (masked attention scores): such a result cannot be a value node, since its
    error ``x - mu`` would be ``inf - inf``."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.nonfinite: set[fx.Node] = set()

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if isinstance(result, Tensor) and result.is_floating_point() and not bool(torch.isfinite(result).all()):
            self.nonfinite.add(n)
        return result


def _with_batch(info: object, batch: int | None) -> _Entry:
    if isinstance(info, TensorMetadata):
        return (info, batch)
    if isinstance(info, (tuple, list)):
        return [_with_batch(i, batch) for i in info]
    return None


def _batched_float(entry: _Entry) -> bool:
    if not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[0], TensorMetadata):
        return False
    info, batch = entry
    return info.dtype.is_floating_point and len(info.shape) >= 1 and info.shape[0] == batch


# -- layered closure (exact Z-IL on any DAG) -------------------------------------------
def layered(graph: PCGraph) -> PCGraph:
    r"""The same network with identity *relay* nodes on every edge that skips levels.

    A node's level is its longest path to an output, :math:`\ell(i) = 1 + \max_{c}\ell(c)`.
    An edge :math:`i \to c` with :math:`\ell(c) < \ell(i) - 1` is routed through relay nodes
    :math:`r_1, \dots` with :math:`\mu_{r_1} = x_i`, :math:`\mu_{r_{k+1}} = x_{r_k}` (Gaussian
    energy, no weights), so that every node reaches the outputs by paths of one length:
    the graph is *layered* and Z-IL equals backprop on it.  At the feed-forward pass every
    relay equals its source, so predictions, loss and backprop gradients are unchanged.
    Relays of one node are shared by all children that need the same delay.  The model
    and its parameters are shared with ``graph``.
    """
    depth = graph.depth_to_outputs()
    level = [max(d) if d else None for d in depth]
    new_index: dict[int, int] = {}
    relays: dict[int, dict[int, int]] = {}  # slot -> {relay level -> new index}
    slots: list[Slot] = []

    def add(slot: Slot) -> int:
        slot.index = len(slots)
        slots.append(slot)
        return slot.index

    for old in graph.slots:
        parents = []
        for p in old.parents:
            lp, lc = level[p], level[old.index]
            if not graph.slots[p].is_input and lp is not None and lc is not None and lc < lp - 1:
                parents.append(relays[p][lc + 1])  # the edge skips levels: through p's relay one above
            else:
                parents.append(new_index[p])
        new_index[old.index] = add(Slot(old.name, 0, old.energy, old.predictor, tuple(parents)))
        own = level[old.index]
        if old.is_input or own is None:
            continue
        reached = [lv for lv in (level[c] for c in old.children) if lv is not None]
        lowest = min(reached) + 1 if reached else own
        chain: dict[int, int] = {}
        source = new_index[old.index]
        for k, lvl in enumerate(range(own - 1, lowest - 1, -1), start=1):
            source = add(Slot(f"{old.name}~{k}", 0, Gaussian(), nn.Identity(), (source,)))
            chain[lvl] = source
        relays[old.index] = chain
    for slot in slots:
        for p in slot.parents:
            slots[p].children.append(slot.index)
    return PCGraph.from_slots(graph.model, slots, [new_index[o] for o in graph.outputs])

"""``PCGraph``: the predictive coding graph of an ordinary ``nn.Module``.

The model is traced once with ``torch.fx`` (``Node`` modules kept as leaves).  Every model
input and every call of a :class:`~predcode.node.Node` becomes a *slot*: a value node
``x_i``.  The operations between a node and the slots that feed it become that node's
*predictor* ``f_i``, a small ``GraphModule`` sharing the model's own submodules and
parameters, so that

    mu_i = f_i(x_{pa(i)})        and        E(x) = sum_i mean_b E_i(x_i, mu_i).

Input slots have no prediction and no energy.  Because each predictor reads only its
parents' values, autograd through ``E`` never crosses a node: every gradient the library
takes is local by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, fx, nn

from ._moved import renamed
from .energy import Energy, Gaussian
from .exceptions import GraphError
from .node import Node
from .running_stats import norm_layers_in_eval
from .tracing import trace

T = TypeVar("T")


def prediction_of(predictions: Sequence[Tensor | None], i: int) -> Tensor:
    """``predictions[i]``, the prediction of node ``i`` (an input slot, which has none, is
    an error): for lists indexed by slot, such as :meth:`PCGraph.forward_pass`'s."""
    mu = predictions[i]
    if mu is None:
        raise GraphError(f"slot {i} is an input: it has no prediction")
    return mu


@dataclass
class Slot:
    """One value node of the graph.

    ``parents``/``children`` are slot indices; ``predictor`` maps the parents' values (in
    ``parents`` order) to this node's prediction; inputs have neither.
    """

    name: str
    index: int
    energy: Energy | None = None
    predictor: nn.Module | None = None
    parents: tuple[int, ...] = ()
    children: list[int] = field(default_factory=list)

    @property
    def is_input(self) -> bool:
        return self.predictor is None

    @property
    def node_energy(self) -> Energy:
        """The energy of this (non-input) node; an input slot has none."""
        if self.energy is None:
            raise GraphError(f"'{self.name}' is an input: it has no energy")
        return self.energy


class PCGraph(nn.Module):
    """Predictive coding graph of ``model`` (which must contain :class:`Node` markers).

    Attributes:
        model: the user's module, unchanged (its ``forward`` is the feed-forward pass).
        slots: value nodes in topological order.
        inputs: indices of the input slots (the model's positional arguments).
        outputs: indices of the output slots (the Nodes whose values the model returns).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        traced = trace(model)
        self.slots: list[Slot] = []
        self._build(traced)
        self._finish()

    @classmethod
    def from_slots(cls, model: nn.Module, slots: list[Slot], outputs: list[int]) -> PCGraph:
        """A graph with the given slots (topologically ordered, ``slot.index`` = position)
        over ``model``: for graph transformations such as
        :func:`predcode.convert.layered`."""
        graph = cls.__new__(cls)
        nn.Module.__init__(graph)
        graph.model = model
        graph.slots = slots
        graph.outputs = list(outputs)
        graph._finish()
        return graph

    def _finish(self) -> None:
        for position, slot in enumerate(self.slots):
            if slot.index != position or any(p >= position for p in slot.parents):
                raise GraphError(f"slot '{slot.name}' is out of topological order")
        self.inputs = [s.index for s in self.slots if s.is_input]
        self.names = [s.name for s in self.slots]
        self._index = {s.name: s.index for s in self.slots}
        if len(self._index) != len(self.names):
            seen: set[str] = set()
            twice: set[str] = set()
            for n in self.names:
                (twice if n in seen else seen).add(n)
            raise GraphError(f"several nodes are named {sorted(twice)}; give them distinct names")

    # -- construction -------------------------------------------------------------
    def _build(self, traced: fx.GraphModule) -> None:
        slot_of: dict[fx.Node, int] = {}
        calls: dict[str, int] = {}  # how often each Node module was called so far
        result: fx.node.Argument = None
        for fx_node in traced.graph.nodes:
            if fx_node.op == "placeholder":
                slot_of[fx_node] = self._add_slot(str(fx_node.target))
            elif fx_node.op == "call_module" and isinstance(traced.get_submodule(fx_node.target), Node):
                if len(fx_node.args) != 1 or fx_node.kwargs:
                    raise GraphError(f"Node '{fx_node.target}' must be called with one tensor")
                predictor, parents = self._predictor(traced, fx_node.args[0], slot_of)
                target = str(fx_node.target)
                node_module = traced.get_submodule(target)
                assert isinstance(node_module, Node)  # checked by the elif above
                calls[target] = calls.get(target, -1) + 1
                base = node_module.name or target
                name = base + (f":{calls[target]}" if calls[target] else "")
                index = self._add_slot(name, energy=node_module.energy, predictor=predictor, parents=parents)
                slot_of[fx_node] = index
                for p in parents:
                    self.slots[p].children.append(index)
            elif fx_node.op == "output":
                result = fx_node.args[0]
        if all(s.is_input for s in self.slots):
            raise GraphError(
                f"{type(self.model).__name__} has no Node: "
                "place predcode.Node() after the layers whose outputs should be value nodes "
                "(at least after the output layer)"
            )
        self.outputs = self._output_slots(result, slot_of)
        for slot in self.slots:
            if slot.children and slot.energy is not None and not isinstance(slot.energy, Gaussian):
                raise GraphError(
                    f"node '{slot.name}' has a {type(slot.energy).__name__} energy and feeds other "
                    "nodes; only Gaussian nodes may have children (use Node('se') there)"
                )

    def _add_slot(self, name: str, **kwargs: Any) -> int:
        index = len(self.slots)
        self.slots.append(Slot(name=name, index=index, **kwargs))
        return index

    @staticmethod
    def _output_slots(result: fx.node.Argument, slot_of: dict[fx.Node, int]) -> list[int]:
        items = result if isinstance(result, (tuple, list)) else (result,)
        outputs = []
        for item in items:
            if not isinstance(item, fx.Node) or item not in slot_of:
                raise GraphError(
                    "every output of the model must be the output of a Node, so that it can "
                    "be clamped to a target: end forward() with a Node (e.g. Node('ce'))"
                )
            outputs.append(slot_of[item])
        return outputs

    @staticmethod
    def _predictor(
        traced: fx.GraphModule, head: fx.Node, slot_of: dict[fx.Node, int]
    ) -> tuple[fx.GraphModule, tuple[int, ...]]:
        """Cut out the ops between the slots feeding ``head`` and ``head`` itself."""
        ancestors: set[fx.Node] = set()
        parents: set[fx.Node] = set()
        stack = [head]
        while stack:
            n = stack.pop()
            if n in slot_of:
                parents.add(n)
                continue
            if n in ancestors:
                continue
            ancestors.add(n)
            stack.extend(n.all_input_nodes)
        order = {n: i for i, n in enumerate(traced.graph.nodes)}
        parent_list = sorted(parents, key=order.__getitem__)
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for p in parent_list:
            env[p] = graph.placeholder(p.name)
        for n in sorted(ancestors, key=order.__getitem__):
            env[n] = graph.node_copy(n, lambda a: env[a])
        graph.output(env[head])
        return fx.GraphModule(traced, graph), tuple(slot_of[p] for p in parent_list)

    # -- queries --------------------------------------------------------------------
    def index(self, name: str | int) -> int:
        """Slot index from its name (or index)."""
        if isinstance(name, int):
            return name
        try:
            return self._index[name]
        except KeyError:
            raise GraphError(f"no node named '{name}'; nodes are {self.names}") from None

    @property
    def output(self) -> int:
        """The single output slot (error if the model has several)."""
        if len(self.outputs) != 1:
            raise GraphError(f"the model has {len(self.outputs)} outputs; name the one you mean")
        return self.outputs[0]

    def free_slots(self, clamped: int | Iterable[int] = ()) -> list[int]:
        """The nodes that relax while the inputs and the ``clamped`` slots are held: every
        non-input slot not in ``clamped``, in topological order."""
        held = {clamped} if isinstance(clamped, int) else set(clamped)
        return [s.index for s in self.slots if not s.is_input and s.index not in held]

    def node_prediction(self, i: int, values: Sequence[Tensor]) -> Tensor:
        """Prediction ``mu_i = f_i(x_pa(i))`` of slot ``i`` from the current values (the
        model's output for an input is :func:`predcode.query.predict`)."""
        slot = self.slots[i]
        if slot.predictor is None:
            raise GraphError(f"'{slot.name}' is an input: it has no prediction")
        mu: Tensor = slot.predictor(*[values[p] for p in slot.parents])
        return mu

    def predict(self, i: int, values: Sequence[Tensor]) -> Tensor:
        """Deprecated name of :meth:`node_prediction` (kept for one release)."""
        return renamed(
            "PCGraph.predict(i, values)",
            "PCGraph.node_prediction(i, values) (predcode.predict(graph, x) is the model's output)",
            self.node_prediction,
        )(i, values)

    def feedforward(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """Values after one forward pass: each node at its energy's mode, ``x_i = mode(mu_i)``.

        For Gaussian nodes the mode is the prediction itself (the model's forward pass);
        a categorical output holds ``softmax(mu)``.
        """
        return self.forward_pass(inputs)[0]

    def forward_pass(self, inputs: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor | None]]:
        """Feed-forward values of every slot and every node's prediction ``mu_i``."""
        if len(inputs) != len(self.inputs):
            raise GraphError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        given = dict(zip(self.inputs, inputs))
        values: list[Tensor] = []  # filled in slot order: a slot's parents come before it
        predictions: list[Tensor | None] = []
        for slot in self.slots:
            if slot.is_input:
                values.append(given[slot.index])
                predictions.append(None)
            else:
                mu = self.node_prediction(slot.index, values)
                predictions.append(mu)
                values.append(slot.node_energy.mode(mu))
        return values, predictions

    def memo(self, name: str, build: Callable[[], T]) -> T:
        """``build()``, computed once per graph and kept on it: for facts fixed when the
        graph is built (its predictors' structure, its layers).  Kept in the graph's own
        ``__dict__``, not registered as a submodule or buffer, and not in a module-level
        table: compiled steps trace these lookups and guard on what they read, and a global
        table's contents change whenever the garbage collector frees another graph."""
        memos: dict[str, Any] = self.__dict__.setdefault("_memos", {})
        if name not in memos:
            memos[name] = build()
        memo: T = memos[name]
        return memo

    def node_shapes(self, inputs: Sequence[Tensor]) -> list[tuple[int, ...]]:
        """Each slot's shape without the batch dimension, for inputs shaped like ``inputs``
        (found once by a one-example forward pass, then cached)."""
        key = tuple((tuple(x.shape[1:]), x.dtype, str(x.device)) for x in inputs)
        cache = self.memo("shapes", dict)
        if key not in cache:
            with torch.no_grad(), norm_layers_in_eval(self):
                values = self.feedforward([x[:1] for x in inputs])
            cache[key] = [tuple(v.shape[1:]) for v in values]
        return cache[key]

    def energy(self, values: Sequence[Tensor]) -> Tensor:
        """Total energy ``E = sum_i mean_b E_i(x_i, f_i(x_pa(i)))`` at ``values``."""
        return self.node_energies(values).sum()

    def node_energies(
        self,
        values: Sequence[Tensor],
        precomputed: Sequence[Tensor | None] | None = None,
        slots: Sequence[int] | None = None,
        differences: dict[int, Tensor] | None = None,
    ) -> Tensor:
        r"""Vector of ``mean_b E_i`` per slot (zero for inputs, and for slots not in
        ``slots`` where given); ``precomputed[i]``, where given, is used as slot i's prediction
        instead of computing it.  ``differences[i]``, where given, is :math:`x_i - \mu_i`
        kept exactly (an error-based relaxation's variable): the energy is then taken of
        :math:`d + (\mu - \mu)`, the kept value with the prediction's gradient, so an
        error below the resolution of :math:`x_i` still reaches the weights."""
        chosen = None if slots is None else set(slots)
        differences = differences or {}
        terms = []
        for slot in self.slots:
            i = slot.index
            if slot.is_input or (chosen is not None and i not in chosen):
                terms.append(values[i].new_zeros(()))
                continue
            given = None if precomputed is None else precomputed[i]
            mu = given if given is not None else self.node_prediction(i, values)
            if i in differences:
                diff = differences[i].detach() + (mu.detach() - mu)
                energy = slot.node_energy
                assert isinstance(energy, Gaussian)  # error coordinates are Gaussian nodes'
                terms.append(energy.of_difference(diff).mean())
            else:
                terms.append(slot.node_energy(values[i], mu).mean())
        return torch.stack(terms)

    def depth_to_outputs(self) -> list[list[int]]:
        """For each slot, the lengths of all paths from it to an output slot (as a set list)."""
        lengths: list[set[int]] = [set() for _ in self.slots]
        for o in self.outputs:
            lengths[o].add(0)
        for slot in reversed(self.slots):
            for c in slot.children:
                lengths[slot.index].update(d + 1 for d in lengths[c])
        return [sorted(s) for s in lengths]

    def forward(self, *inputs: Tensor) -> Any:
        """The model's own feed-forward pass."""
        return self.model(*inputs)

    def extra_repr(self) -> str:
        lines = []
        for s in self.slots:
            kind = "input" if s.is_input else type(s.energy).__name__
            pa = ",".join(self.names[p] for p in s.parents)
            lines.append(f"{s.name}: {kind}" + (f" <- {pa}" if pa else ""))
        return "\n".join(lines)

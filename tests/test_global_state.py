"""No module-level mutable state: what predcode builds for a graph (its weight energy,
compiled copies of the training step and of the relaxation loop, nudged copies, feedback
matrices, inverses) lives on the graph or on the rule, held weakly by the rule, and dies
with the graph.  Oracles: the garbage collector (a weak reference to a dropped graph is
dead after ``gc.collect()``), object identity (two graphs' compiled copies and their code
objects are distinct), and a scan of every module's top level for caches and registries
that are written at run time."""

from __future__ import annotations

import ast
import gc
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import predcode as pc
from predcode.inference import compiled_relax_steps
from predcode.learning import learning_plan
from predcode.models import mlp
from predcode.rules import (
    DifferenceTargetPropagation,
    DirectFeedbackAlignment,
    EquilibriumPropagation,
    FeedbackAlignment,
    Nudging,
)

PACKAGE = Path(pc.__file__).parent


def _graph(seed: int = 0) -> pc.PCGraph:
    torch.manual_seed(seed)
    return pc.PCGraph(mlp([4, 6, 5, 3], act="tanh"))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)


def _relax(graph: pc.PCGraph, compile: bool) -> None:
    x, y = _batch()
    values = graph.feedforward([x])
    values[graph.output] = y
    pc.relax(graph, values, [1, 2], pc.GradientDescent(0.1), pc.StopRule(3), compile=compile)


RULES: dict[str, Callable[[], pc.LearningRule]] = {
    "il": lambda: pc.InferenceLearning(pc.SGD(0.1), 4),
    "il-compiled": lambda: pc.InferenceLearning(pc.SGD(0.1), 4, compile=True),
    "epc": lambda: pc.ErrorPC(pc.SGD(0.1), 4),
    "fixed-prediction": lambda: pc.FixedPrediction(),
    "backprop": lambda: pc.Backprop(),
    "feedback-alignment": lambda: FeedbackAlignment(),
    "direct-feedback-alignment": lambda: DirectFeedbackAlignment(),
    "equilibrium-propagation": lambda: EquilibriumPropagation(),
    "target-propagation": lambda: DifferenceTargetPropagation(),
    "nudging": lambda: Nudging(pc.InferenceLearning(pc.SGD(0.1), 4)),
}


def _trained(rule: pc.LearningRule | None, compile: bool = False) -> weakref.ref[pc.PCGraph]:
    """Two training steps (or relaxations, ``rule=None``) on a fresh graph; only a weak
    reference to the graph leaves this frame."""
    graph = _graph()
    opt = torch.optim.SGD(graph.parameters(), lr=0.01)
    x, y = _batch()
    for _ in range(2):
        if rule is None:
            _relax(graph, compile)
        else:
            rule.step(graph, x, y, opt)
    return weakref.ref(graph)


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_dropped_graph_is_collected_while_its_rule_lives(name: str) -> None:
    rule = RULES[name]()
    ref = _trained(rule)
    gc.collect()
    assert ref() is None, f"{name}: the rule (or a module) keeps the graph alive"
    _trained(rule)  # the rule still works on a new graph after the old one died


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_a_dropped_graph_is_collected_after_relaxations(compile: bool) -> None:
    ref = _trained(None, compile=compile)
    gc.collect()
    assert ref() is None


def _compiled_code(fn: Callable[..., object]) -> object:
    return fn._torchdynamo_orig_callable.__code__  # type: ignore[attr-defined]


def test_two_graphs_do_not_share_compiled_training_steps() -> None:
    rule = pc.InferenceLearning(pc.SGD(0.1), 4, compile=True)
    first, second = _graph(0), _graph(0)
    x, y = _batch()
    for graph in (first, second):
        rule.step(graph, x, y, torch.optim.SGD(graph.parameters(), lr=0.01))
    a, b = learning_plan(first), learning_plan(second)
    assert a is not b and a.graph is first and b.graph is second
    (copy_a,), (copy_b,) = a.compiled.values(), b.compiled.values()
    assert copy_a is not copy_b
    assert _compiled_code(copy_a) is not _compiled_code(copy_b)


def test_two_graphs_do_not_share_compiled_relaxations() -> None:
    first, second = _graph(0), _graph(0)
    _relax(first, compile=True)
    _relax(second, compile=True)
    a, b = compiled_relax_steps(first), compiled_relax_steps(second)
    assert a is compiled_relax_steps(first)  # built once per graph
    assert a is not b and _compiled_code(a) is not _compiled_code(b)


# -- the static scan ------------------------------------------------------------------------
MUTATORS = {"append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "clear", "remove", "discard"}
CACHES = {"cache", "lru_cache", "cached_property"}

ALLOWED = {
    # (module, name): why it may stay
    (
        "predcode/data/loading.py",
        "_decode",
    ): "decoded dataset splits, at most 8, keyed by path, mtime and size: immutable file contents, "
    "no graph or rule in them",
    (
        "predcode/bench/common.py",
        "_NPY_DIRS",
    ): "one temporary folder of MNIST .npy files per benchmark process (removed at exit) for the "
    "pcx scripts; holds paths only",
}


def _module_level_state(path: Path) -> set[str]:
    """Names bound at a module's top level to a container that the module writes into, or
    to a function cached at module level (functools.cache / lru_cache)."""
    tree = ast.parse(path.read_text())
    containers: set[str] = set()
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name in CACHES:
                    found.add(node.name)
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else ([node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        )
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        mutable = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)) or (
            isinstance(value, ast.Call) and getattr(value.func, "id", "") in {"dict", "list", "set"}
        )
        if mutable:
            containers |= {t.id for t in targets if isinstance(t, ast.Name) and t.id != "__all__"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found |= set(node.names)
        written = None
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            for t in node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]:
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                    written = t.value.id
                    if written in containers:
                        found.add(written)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in containers
        ):
            found.add(node.func.value.id)
    return found


def test_no_module_level_mutable_state() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        offenders += [f"{rel}: {name}" for name in sorted(_module_level_state(path)) if (rel, name) not in ALLOWED]
    assert not offenders, "module-level mutable state (keep it on the graph or the rule):\n" + "\n".join(offenders)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import functools\nTABLE = {}\nFIXED = {'a': 1}\nSEEN: list[int] = []\n"
        "@functools.cache\ndef build():\n    return 1\n"
        "def f(k):\n    TABLE[k] = 1\n    SEEN.append(k)\n    return FIXED[k]\n"
        "def g():\n    global counter\n    counter = 1\n"
    )
    assert _module_level_state(module) == {"TABLE", "SEEN", "build", "counter"}

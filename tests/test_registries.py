"""One registry per family, and everything that lists names reads it.

Families: learning rules and models (predcode.app.registry), energies (predcode.energy.ENERGIES),
inference solvers (predcode.inference.SOLVERS), claim reproductions (predcode.experiments.EXPERIMENTS).
Checked against each registry: the config's
choices (the TrainConfig Literal types), the command-line flags' choices, the docs tables
(docs/hooks), the builders (every name builds what its entry says), the error messages, and
the Registry class itself (duplicates refused, unknown names one OptionError line).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import typing
from pathlib import Path

import pytest
import torch

from predcode import energy, inference
from predcode.app import cli, config, query_cli, registry
from predcode.app.config import TrainConfig
from predcode.app.train import build_model, build_rule, flat_inputs
from predcode.exceptions import OptionError
from predcode.registry import Registry
from predcode.rules.nudging import Nudging

ROOT = Path(__file__).resolve().parents[1]

FAMILIES = {  # config field -> the registry's names
    "rule": tuple(registry.RULES),
    "model": tuple(registry.MODELS),
    "output_energy": tuple(energy.ENERGIES),
    "solver": tuple(inference.SOLVERS),
}


def _hooks():
    spec = importlib.util.spec_from_file_location("predcode_docs_hooks", ROOT / "docs" / "hooks" / "predcode_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_names(table: str) -> list[str]:
    """The names in a docs table's first column (each cell a list of `name`s)."""
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    return [name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])]


def _flag_choices(parser: argparse.ArgumentParser, flag: str) -> tuple[str, ...]:
    for action in parser._actions:
        if flag in action.option_strings:
            if action.choices is not None:
                return tuple(action.choices)
            return tuple(action.metavar.strip("{}").split(","))
    raise AssertionError(f"no flag {flag}")


@pytest.mark.parametrize("field", sorted(FAMILIES))
def test_config_choices_are_the_registry(field):
    kind = TrainConfig.model_fields[field].annotation
    assert typing.get_origin(kind) is typing.Literal
    assert typing.get_args(kind) == FAMILIES[field]


@pytest.mark.parametrize("field", sorted(FAMILIES))
def test_cli_choices_are_the_registry(field):
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    assert _flag_choices(train, "--" + field.replace("_", "-")) == FAMILIES[field]


def test_query_solver_choices_are_the_registry():
    parser = argparse.ArgumentParser()
    query_cli.add_arguments(parser)
    assert set(_flag_choices(parser, "--solver")) == set(inference.SOLVERS)


@pytest.mark.parametrize("field", sorted(FAMILIES))
def test_config_refuses_a_name_outside_the_registry(field):
    with pytest.raises(OptionError, match="choose one of") as info:
        TrainConfig(**{field: "no-such-name"})
    assert str(list(FAMILIES[field])) in str(info.value)


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ("rules_table", registry.RULES),
        ("models_table", registry.MODELS),
        ("solvers_table", inference.SOLVERS),
        ("energies_table", energy.ENERGIES),
    ],
)
def test_docs_tables_are_the_registry(table, names):
    assert _table_names(getattr(_hooks(), table)()) == list(names)


def test_docs_tables_name_what_each_entry_builds():
    hooks = _hooks()
    for table, reg in (("rules_table", registry.RULES), ("models_table", registry.MODELS)):
        rows = getattr(hooks, table)().splitlines()[2:]
        for row, (name, entry) in zip(rows, reg.items(), strict=True):
            assert f"`{name}`" in row.split("|")[1]
            assert entry.builds.__name__ in row.split("|")[2], row


@pytest.mark.parametrize("name", list(registry.RULES))
def test_every_rule_name_builds_its_class(name):
    rule = build_rule(TrainConfig(rule=name, steps=4))
    assert type(rule) is registry.RULES[name].builds


@pytest.mark.parametrize("name", registry.RULES.tagged("nudge"))
def test_nudge_wraps_exactly_the_tagged_rules(name):
    rule = build_rule(TrainConfig(rule=name, nudge="centred"))
    assert isinstance(rule, Nudging) and type(rule.rule) is registry.RULES[name].builds


@pytest.mark.parametrize("name", [n for n in registry.RULES if n not in registry.RULES.tagged("nudge")])
def test_nudge_is_refused_for_untagged_rules(name):
    with pytest.raises(OptionError, match="applies to the il and epc rules"):
        TrainConfig(rule=name, nudge="positive")


_MODEL_CONFIGS = {"mlp": dict(sizes=[784, 8, 10]), "gpt": dict(dataset="shakespeare"), "vgg7": dict(dataset="cifar10")}


@pytest.mark.parametrize("name", list(registry.MODELS))
def test_every_model_name_builds_with_its_factory(name, monkeypatch):
    entry = registry.MODELS[name]
    if "text" in entry.tags:  # no corpus download: a stand-in vocabulary
        monkeypatch.setattr("predcode.data.corpus_vocab", lambda dataset: list("abcdefgh"))
    cfg = TrainConfig(
        model=name,
        channels=[2, 2, 2] if name == "resnet" else [2, 2] if name == "cnn" else [],
        width=0.125,
        **_MODEL_CONFIGS.get(name, {}),
    )
    calls = []
    real = entry.builds

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(f"predcode.models.{real.__name__}", spy)
    model = build_model(cfg)
    assert isinstance(model, torch.nn.Module) and calls == [name]
    assert flat_inputs(cfg) == ("flat-inputs" in entry.tags)


def test_batch_norm_and_text_checks_read_the_tags():
    assert registry.MODELS.tagged("batch-norm") == config.BATCH_NORM_MODELS
    for name in registry.MODELS:
        extra = _MODEL_CONFIGS.get(name, {})
        if name in registry.MODELS.tagged("batch-norm"):
            TrainConfig(model=name, batch_norm=True, **extra)
        else:
            with pytest.raises(OptionError, match="batch_norm applies to the cnn, vgg5, vgg7 and resnet models"):
                TrainConfig(model=name, batch_norm=True, **extra)
    assert registry.MODELS.tagged("text") == ("gpt",)


def test_registry_refuses_duplicates_and_names_the_choices():
    reg: Registry[int] = Registry("widget")
    reg.register("a", int)(lambda: 1)
    reg.register("b", int, "odd")(lambda: 2)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a", int)(lambda: 3)
    assert reg.names() == ("a", "b") and reg.tagged("odd") == ("b",) and reg.build("b") == 2
    assert "a" in reg and "c" not in reg and reg.get("c") is None
    with pytest.raises(OptionError, match=r"unknown widget 'c'; choose one of \['a', 'b'\]"):
        reg.build("c")


def test_builders_have_no_name_special_cases():
    """build_rule, build_model and flat_inputs look the name up and call its builder or read
    its tags: no registered name is written in them (an if-chain on names would be)."""
    import ast
    import inspect
    import textwrap

    from predcode.app import train

    names = set(registry.RULES) | set(registry.MODELS)
    for fn in (train.build_rule, train.build_model, train.flat_inputs):
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & names, (fn.__name__, strings & names)
    # the check sees a special case where there is one
    planted = ast.parse('if cfg.rule == "bp":\n    pass')
    assert {n.value for n in ast.walk(planted) if isinstance(n, ast.Constant)} & names


def test_solvers_take_momentum_by_their_tag():
    """make_solver reads the ``momentum`` tag (no name special-cased): a tagged solver takes
    it, an untagged one refuses a non-zero momentum in one line naming the tagged ones."""
    import inspect

    assert inference.SOLVERS.tagged("momentum") == ("sgd",)
    sgd = inference.make_solver("sgd", 0.1, momentum=0.9)
    assert isinstance(sgd, inference.SGD) and sgd.momentum == 0.9
    assert isinstance(inference.make_solver("heun", 0.1), inference.Heun)
    with pytest.raises(OptionError, match="momentum applies to the 'sgd' solver only, not 'gd'"):
        inference.make_solver("gd", 0.1, momentum=0.5)
    with pytest.raises(OptionError, match=r"unknown solver 'adam'; choose one of \['gd', 'euler', 'heun', 'sgd'\]"):
        inference.make_solver("adam", 0.1)
    assert '"sgd"' not in inspect.getsource(inference.make_solver)


def test_experiments_are_one_registry():
    """``predcode repro``'s names, ``registry()`` and ``get`` read EXPERIMENTS; every entry is
    a module's ``run(out_dir, full, seed)``; an unknown name is one OptionError line that
    lists the choices."""
    import inspect

    from predcode import experiments

    found = experiments.registry()
    assert list(found) == sorted(experiments.EXPERIMENTS) and len(found) >= len(experiments.MODULES)
    assert all(isinstance(e, experiments.Experiment) and e.name == n for n, e in found.items())
    assert experiments.get("online") is found["online"]
    for name, exp in found.items():  # what `predcode repro` calls: run(out_dir, full, seed)
        assert exp.run.__name__ == "run", f"{name}: the decorator sits on {exp.run.__name__}, not run"
        assert list(inspect.signature(exp.run).parameters)[:3] == ["out_dir", "full", "seed"], name
    with pytest.raises(OptionError, match=r"unknown experiment 'nope'; choose one of \[.*'online'.*\]"):
        experiments.get("nope")

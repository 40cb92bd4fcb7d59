"""The command line explains itself: every flag has help, its default and its choices;
``repro --help`` and ``repro --list`` list the experiments with their runtimes; the
model-running subcommands share --threads, --device and --debug."""

from __future__ import annotations

import argparse
import re

import pytest

from predcode import experiments
from predcode.app.cli import build_parser, main
from predcode.app.config import RULES


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBCOMMANDS = subparsers()


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_flag_has_help_default_and_choices(command):
    parser = SUBCOMMANDS[command]
    for action in parser._actions:
        if (
            isinstance(action, (argparse._HelpAction, argparse._VersionAction))
            or action.help == argparse.SUPPRESS
            or type(action).__name__ == "_ReproHelp"
        ):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help) > 8, f"{command} {name}: no help"
        takes_value = action.nargs != 0 and action.option_strings
        if takes_value and action.default not in (None, argparse.SUPPRESS, []):
            assert "(default" in action.help, f"{command} {name}: default not stated"
        if (
            command == "train"
            and action.dest not in ("config", "distributed")
            and action.option_strings
            and action.container.title
            and "settings" in action.container.title
        ):
            assert "(default:" in action.help, f"train {name}: default not stated"
        if action.choices is not None:
            text = parser.format_help()
            assert all(str(c) in text for c in action.choices), f"{command} {name}: choices"


def test_train_help_shows_every_setting_with_default_and_choices(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for flag, default in [
        ("--rule", "il"),
        ("--state-lr", "0.010535"),
        ("--epochs", "10"),
        ("--normalize", "[-1,1]"),
        ("--compare-bp", "off"),
    ]:
        assert flag in text
        assert f"(default: {default})" in text
    assert "{" + ",".join(RULES) + "}" in text
    assert "runs/latest" in text and "--overwrite" in text


RUNTIME = re.compile(r"~\d+ (s|min)|not measured")


def test_repro_help_and_list_name_every_experiment_with_its_runtime(capsys):
    names = list(experiments.registry())
    assert main(["repro", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert main(["repro", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "measured on 2 CPU cores" in help_text and "measured on 2 CPU cores" in listing
    for text in (help_text, listing):
        lines = {
            line.split()[0]: line
            for line in text.splitlines()
            if line.startswith("  ") and line.split() and line.split()[0] in names
        }
        assert set(lines) == set(names)
        for line in lines.values():
            assert RUNTIME.search(line), line
    assert re.search(r"\n  interference +~\d+ s ", listing)


@pytest.mark.parametrize("command", ["train", "eval", "query"])
def test_shared_threads_device_and_debug(command):
    parser = SUBCOMMANDS[command]
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--threads", "--device", "--debug"} <= flags


def test_repro_and_bench_take_threads():
    for command in ("repro", "bench"):
        assert "--threads" in {s for a in SUBCOMMANDS[command]._actions for s in a.option_strings}

"""TrainConfig in sections (model, data, rule, optimizer, run): the TOML layout, the flat
layout still read for one release with a DeprecationWarning, the flags' groups, and the
files in configs/."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import pytest

from predcode.app import cli
from predcode.app.config import SECTION_OF, SECTIONS, TrainConfig, flatten, read_toml
from predcode.exceptions import OptionError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def test_sections_partition_the_fields_in_order():
    keys = [key for section in SECTIONS.values() for key in section]
    assert sorted(keys) == sorted(TrainConfig.model_fields) and len(keys) == len(set(keys))
    assert list(SECTIONS) == ["model", "data", "rule", "optimizer", "run"]
    assert SECTION_OF["steps"] == "rule" and SECTION_OF["lr"] == "optimizer" and SECTION_OF["seed"] == "run"


def test_section_view_and_round_trip(tmp_path):
    cfg = TrainConfig(rule="epc", steps=5, lr=1e-3, sizes=[784, 32, 10], seed=7)
    assert cfg.section("rule")["rule"] == "epc" and cfg.section("rule")["steps"] == 5
    assert cfg.section("model")["sizes"] == [784, 32, 10]
    assert {k: v for s in cfg.to_sections().values() for k, v in s.items()} == cfg.to_dict()
    with pytest.raises(OptionError, match=r"unknown config section 'weights'; the sections are \['model'"):
        cfg.section("weights")
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    written = tomllib.loads(path.read_text())
    assert list(written) == list(SECTIONS) and all(isinstance(v, dict) for v in written.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sectioned layout warns about nothing
        assert TrainConfig.from_toml(path) == cfg


def test_flat_toml_is_read_with_one_deprecation_warning(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text('rule = "bp"\nepochs = 3\nsizes = [784, 10]\n')
    with pytest.warns(
        DeprecationWarning,
        match=r"top-level config keys are deprecated.*rule -> \[rule\], "
        r"epochs -> \[optimizer\], sizes -> \[model\]",
    ) as caught:
        cfg = TrainConfig.from_toml(path, {"epochs": 5})
    assert len([w for w in caught if issubclass(w.category, DeprecationWarning)]) == 1
    assert (cfg.rule, cfg.epochs, cfg.sizes) == ("bp", 5, [784, 10])


def test_mixed_toml_reads_both():
    with pytest.warns(DeprecationWarning, match=r"seed -> \[run\]"):
        flat = flatten({"seed": 3, "rule": {"rule": "il", "steps": 2}})
    assert flat == {"seed": 3, "rule": "il", "steps": 2}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"steps": 3}}, r"config key 'steps' belongs under \[rule\], not \[model\]"),
        ({"weights": {"lr": 0.1}}, r"unknown config section \[weights\] in config; the sections are"),
        ({"optimizer": {"lrate": 0.1}}, r"unknown config key 'lrate' in \[optimizer\]"),
        ({"steps": 3, "rule": {"steps": 4}}, "config key 'steps' is given twice"),
    ],
)
def test_misplaced_keys_are_one_line(values, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(OptionError, match=message) as info:
            flatten(values)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_configs_are_sectioned_and_load_without_warnings(path):
    values = tomllib.loads(path.read_text())
    assert all(isinstance(v, dict) for v in values.values()), "a top-level key in " + path.name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = TrainConfig.from_toml(path)
        assert read_toml(path) == {k: v for section in values.values() for k, v in section.items()}
    assert cfg.compare_bp


def test_flags_stay_flat_and_are_grouped_by_section():
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    groups = {g.title: [a.dest for a in g._group_actions] for g in train._action_groups}
    for section, keys in SECTIONS.items():
        title = next(t for t in groups if t and t.startswith(f"{section} settings"))
        assert groups[title] == list(keys)
    args = train.parse_args(["--steps", "3", "--lr", "0.01"])
    assert (args.steps, args.lr) == (3, 0.01)


def test_cli_says_once_that_a_flat_file_is_deprecated(tmp_path, capsys, monkeypatch):
    path = tmp_path / "flat.toml"
    path.write_text("steps = 3\n")
    monkeypatch.setattr(cli, "_load_data", lambda cfg: (_ for _ in ()).throw(OptionError("stop here")))
    code = cli.main(["train", "--quiet", "--config", str(path), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith("predcode: warning:") and "steps -> [rule]" in err[0]
    assert err[1:] == ["predcode: error: stop here"]

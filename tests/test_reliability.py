"""Nothing lost, nothing silent: every bad input and fault a user can cause, as a table.

Each row of ``CLI_CASES`` is a command (run in-process through :func:`predcode.app.cli.main`,
on small synthetic data), the exit code it must give and a fragment its stderr must hold;
every error is one line on stderr and never a traceback.  ``API_CASES`` do the same for
calls of the Python API (the exception type and message).  Rows that need a state first
(a trained run, a damaged file) build it in ``setup``; rows that check more than the
message (the files a run leaves) do it in ``check``.  Hypothesis fuzzes the config and the
query specs: never an unexpected exception, never a silently changed value.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from predcode import PCGraph
from predcode.app import cli
from predcode.app.cli import main
from predcode.app.config import SECTION_OF, TrainConfig
from predcode.app.query_cli import Network, inclusive_range, node_index, parse_mask, parse_value, save_network
from predcode.app.train import Trainer
from predcode.exceptions import DivergenceError, InputError, NonFiniteError, OptionError, PredcodeError
from predcode.inference import GradientDescent, StopRule
from predcode.models import mlp
from predcode.rules import Backprop, InferenceLearning

FEATURES, CLASSES = 12, 3


def synthetic(n_train=96, n_test=40, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, FEATURES, generator=gen) * 2

    def make(n):
        y = torch.randint(0, CLASSES, (n,), generator=gen)
        return (centers[y] + torch.randn(n, FEATURES, generator=gen)) * scale, y

    return (*make(n_train), *make(n_test))


@pytest.fixture(autouse=True)
def _synthetic_data(monkeypatch, tmp_path):
    """Every command trains and evaluates on the small synthetic set, in a fresh folder."""
    monkeypatch.setattr(cli, "_load_data", lambda cfg: synthetic())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREDCODE_DEBUG", raising=False)


SMALL = [
    "--quiet",
    "--sizes",
    str(FEATURES),
    "16",
    str(CLASSES),
    "--batch-size",
    "16",
    "--epochs",
    "1",
    "--steps",
    "4",
    "--lr",
    "1e-2",
]


def train(*extra: str) -> list[str]:
    return ["train", *SMALL, *extra]


def train_toml(text: str | bytes) -> list[str]:
    """``train --config c.toml`` with ``c.toml`` holding ``text`` (no flag overrides it)."""
    write("c.toml", text)
    return ["train", "--quiet", "--sizes", str(FEATURES), "16", str(CLASSES), "--config", "c.toml"]


def trained(run: str = "run", *extra: str) -> None:
    """A finished one-epoch run in ``run``."""
    assert main(train("--run-dir", run, *extra)) == 0


def metrics_epochs(run: str = "run") -> list[int]:
    text = Path(run, "metrics.jsonl").read_text()
    return [json.loads(line)["epoch"] for line in text.splitlines()]


def write(path: str, text: str | bytes) -> str:
    Path(path).write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def npy(path: str, array: np.ndarray) -> str:
    np.save(path, array, allow_pickle=True)
    return path


def saved_network(path: str = "net.safetensors") -> str:
    torch.manual_seed(0)
    model = mlp([FEATURES, 8, CLASSES], act="tanh")
    save_network(path, model, "mlp", {"sizes": [FEATURES, 8, CLASSES], "act": "tanh"}, [[FEATURES]])
    return path


def truncated(run: str = "run") -> str:
    trained(run)
    ckpt = Path(run, "checkpoint.safetensors")
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    return str(ckpt)


def interrupted_before_metrics(monkeypatch) -> None:
    """A run killed after its first checkpoint, before that epoch's metrics row."""
    calls = {"n": 0}
    original = Trainer._write_metrics

    def write_metrics(self):
        calls["n"] += 1
        if calls["n"] == 2:  # the first is start(); the second follows the first checkpoint
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Trainer, "_write_metrics", write_metrics)
    assert main(train("--run-dir", "run", "--epochs", "2")) == 130
    monkeypatch.setattr(Trainer, "_write_metrics", original)
    assert metrics_epochs() == []  # the row of epoch 1 was lost with the kill


@dataclass
class Case:
    id: str
    argv: list[str]
    code: int
    fragment: str = ""
    setup: Callable[..., object] | None = None  # setup(monkeypatch) before the command
    check: Callable[[], None] | None = None  # after the command
    absent: str = ""  # a fragment the message must not hold (a wrong diagnosis)


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


CLI_CASES = [
    # -- runs are never overwritten ------------------------------------------------------
    Case(
        "existing run folder refused", train("--run-dir", "run"), 2, "already holds a run", setup=lambda mp: trained()
    ),
    Case(
        "--overwrite replaces the run",
        train("--run-dir", "run", "--overwrite"),
        0,
        setup=lambda mp: trained(),
        check=lambda: metrics_epochs() == [1] or pytest.fail("rows"),
    ),
    Case(
        "two plain runs keep two folders",
        train(),
        0,
        setup=lambda mp: main(train()) == 0 or pytest.fail("first run"),
        check=lambda: _two_runs_and_latest(),
    ),
    Case("--resume with --overwrite refused", train("--resume", "--overwrite"), 2, "not allowed with argument"),
    Case(
        "kill between checkpoint and metrics row, resume: rows 1, 2",
        train("--run-dir", "run", "--epochs", "2", "--resume"),
        0,
        setup=interrupted_before_metrics,
        check=lambda: metrics_epochs() == [1, 2] or pytest.fail("rows"),
    ),
    Case(
        "--resume of a missing folder", train("--run-dir", "mistyped", "--resume"), 2, "there is no run folder mistyped"
    ),
    Case("--resume with no run at all", train("--resume"), 2, "no run to resume"),
    Case("--resume of a finished run says so", train("--run-dir", "run", "--resume"), 0, setup=lambda mp: trained()),
    Case(
        "deleted metrics.jsonl restored on resume",
        train("--run-dir", "run", "--resume"),
        0,
        setup=lambda mp: (trained(), os.remove("run/metrics.jsonl")),
        check=lambda: metrics_epochs() == [1] or pytest.fail("not restored"),
    ),
    Case(
        "stray temporary file removed on resume",
        train("--run-dir", "run", "--resume"),
        0,
        setup=lambda mp: (trained(), write("run/.checkpoint.safetensors.x1y2.tmp", b"")),
        check=lambda: not list(Path("run").glob("*.tmp")) or pytest.fail("tmp left"),
    ),
    Case(
        "resolved config written and reusable",
        train("--config", "run/config.toml", "--run-dir", "again"),
        0,
        setup=lambda mp: trained("run", "--seed", "3"),
        check=lambda: TrainConfig.from_toml("again/config.toml").seed == 3 or pytest.fail("seed"),
    ),
    # -- non-finite values are caught, with the right cause ----------------------------------
    Case(
        "backprop diverging to NaN",
        train("--rule", "bp", "--optimizer", "sgd", "--lr", "1e12", "--run-dir", "bp"),
        2,
        "lower the weight learning rate (--lr",
        absent="inference rate",
        check=lambda: _valid_json_lines("bp/metrics.jsonl"),
    ),
    Case(
        "the --compare-bp twin diverging", train("--compare-bp", "--optimizer", "sgd", "--bp-lr", "1e12"), 2, "run 'bp'"
    ),
    Case(
        "weight learning rate 1e6 is not blamed on inference",
        train("--lr", "1e6", "--epochs", "2"),
        2,
        "lower the weight learning rate",
        absent="inference rate",
    ),
    Case(
        "an input of 1e30 is blamed on the input",
        train(),
        2,
        "the input batch reaches",
        setup=lambda mp: mp.setattr(cli, "_load_data", lambda cfg: synthetic(scale=1e30)),
        absent="inference rate",
    ),
    Case(
        "a too-large inference rate is blamed on it",
        train("--state-lr", "50", "--solver", "gd", "--state-momentum", "0"),
        2,
        "lower the inference rate",
    ),
    # -- configs: wrong values refused, never coerced --------------------------------------
    Case(
        'TOML compare_bp = "false"',
        ["toml", '[optimizer]\ncompare_bp = "false"\n'],
        2,
        "'compare_bp' (--compare-bp) must be true or false, got 'false'",
    ),
    Case("TOML epochs = 1.9", ["toml", "[optimizer]\nepochs = 1.9\n"], 2, "must be a whole number, got 1.9"),
    Case("TOML epochs = 2.0", ["toml", "[optimizer]\nepochs = 2.0\n"], 2, "must be a whole number"),
    Case("--epochs 1.9", train("--epochs", "1.9"), 2, "invalid int value: '1.9'"),
    Case("--max-batches -1", train("--max-batches", "-1"), 2, "must be >= 0, got -1"),
    Case("--steps 0", train("--steps", "0"), 2, "'steps' (--steps) must be >= 1, got 0"),
    Case("negative --lr", train("--lr", "-1"), 2, "'lr' (--lr) must be > 0"),
    Case("--lr nan", train("--lr", "nan"), 2, "must be a finite number"),
    Case("TOML of the wrong type", ["toml", '[optimizer]\nlr = "fast"\n'], 2, "'lr' (--lr) must be a number"),
    Case("malformed TOML", ["toml", "epochs = = 3\n"], 2, "is not valid TOML"),
    Case("TOML unknown key", ["toml", "[optimizer]\nlrate = 0.1\n"], 2, "unknown config key 'lrate'"),
    Case("TOML list of floats for channels", ["toml", "[model]\nchannels = [2.5]\n"], 2, "must be a whole number"),
    Case("missing TOML file", train("--config", "none.toml"), 2, "does not exist"),
    Case(
        "TOML key under the wrong section",
        ["toml", "[model]\nsteps = 3\n"],
        2,
        "config key 'steps' belongs under [rule], not [model]",
    ),
    Case("unknown TOML section", ["toml", "[weights]\nlr = 0.1\n"], 2, "unknown config section [weights]"),
    Case(
        "TOML key twice (flat and in its section)",
        ["toml", "steps = 3\n[rule]\nsteps = 4\n"],
        2,
        "config key 'steps' is given twice",
    ),
    Case("binary TOML file", ["toml", b"\xff\xfe\x00bad"], 2, "config file c.toml is not"),
    Case("--normalize foo", train("--normalize", "foo"), 2, "unknown normalize 'foo'"),
    Case("--rule magic", train("--rule", "magic"), 2, "unknown rule 'magic'"),
    Case("--dataset shakespeare", train("--dataset", "shakespeare"), 2, "needs an image dataset"),
    Case("--sizes 12 0 3", train("--sizes", "12", "0", "3"), 2, "must be >= 1, got 0"),
    Case("--batch-norm on an mlp", train("--batch-norm"), 2, "batch_norm applies to"),
    Case("--nudge on backprop", train("--rule", "bp", "--nudge", "positive"), 2, "applies to the il and epc rules"),
    Case("--threads -3", train("--threads", "-3"), 2, "--threads: must be >= 0, got -3"),
    Case("--device cuda without CUDA", train("--device", "cuda"), 2, "no CUDA device", setup=_no_cuda),
    Case("--seed too large", train("--seed", str(2**64)), 2, "'seed' (--seed) must be < 4294967296"),
    Case("query --seed too large", ["query", "run", "--seed", str(2**64)], 2, "--seed: must be < 2**32"),
    Case("--device nonsense", train("--device", "tpu9"), 2, "unknown device 'tpu9'"),
    Case(
        "several processes need --run-dir",
        train(),
        2,
        "give --run-dir",
        setup=lambda mp: [
            mp.setenv(k, v) for k, v in dict(RANK="0", WORLD_SIZE="2", MASTER_ADDR="localhost", MASTER_PORT="1").items()
        ],
    ),
    Case(
        "a run folder that cannot be written",
        train("--run-dir", "ro/run"),
        2,
        "check the path, its permissions",
        setup=lambda mp: _read_only("ro"),
    ),
    Case(
        "a run folder that is a file", train("--run-dir", "afile"), 2, "is a file", setup=lambda mp: write("afile", "x")
    ),
    Case(
        "resume with other settings",
        train("--run-dir", "run", "--resume", "--lr", "0.5", "--epochs", "2"),
        2,
        "written with other settings {'lr': 0.01}",
        setup=lambda mp: trained(),
    ),
    # -- damaged and foreign checkpoints ----------------------------------------------------
    Case("eval: truncated checkpoint", ["eval", "run"], 2, "may be truncated", setup=lambda mp: truncated()),
    Case("query: truncated checkpoint", ["query", "run"], 2, "may be truncated", setup=lambda mp: truncated()),
    Case(
        "train --resume: truncated checkpoint",
        train("--run-dir", "run", "--resume"),
        2,
        "may be truncated",
        setup=lambda mp: truncated(),
    ),
    Case(
        "eval: not a safetensors file",
        ["eval", "--checkpoint", "bad.safetensors"],
        2,
        "not a readable safetensors checkpoint",
        setup=lambda mp: write("bad.safetensors", "junk"),
    ),
    Case(
        "eval: a saved network, not a run",
        ["eval", "net.safetensors"],
        2,
        "holds a saved network, not a training run",
        setup=lambda mp: saved_network(),
    ),
    Case("eval: no checkpoint given", ["eval"], 2, "give the run folder"),
    Case("eval: missing checkpoint", ["eval", "nothing.safetensors"], 2, "no checkpoint at"),
    Case("eval --threads and a run folder", ["eval", "run", "--threads", "1"], 0, setup=lambda mp: trained()),
    Case(
        "eval --device cuda without CUDA",
        ["eval", "run", "--device", "cuda"],
        2,
        "no CUDA device",
        setup=lambda mp: (_no_cuda(mp), trained()),
    ),
    # -- query: nodes by name, values checked ----------------------------------------------
    Case(
        "query --read all",
        ["query", "run", "--read", "all", "--steps", "3", "--out", "q"],
        0,
        setup=lambda mp: trained(),
        check=lambda: (
            {p.name for p in Path("q").glob("*.npy")} == {"input.npy", "2.npy", "4.npy"}
            or pytest.fail(str(list(Path("q").iterdir())))
        ),
    ),
    Case(
        "query --read 3 (a position, not a name)",
        ["query", "run", "--read", "3"],
        2,
        "no node named '3' (for the slot at position 3 write index:3)",
        setup=lambda mp: trained(),
    ),
    Case(
        "query --read index:1",
        ["query", "run", "--read", "index:1", "--steps", "2"],
        0,
        setup=lambda mp: trained(),
        check=lambda: Path("query_out/2.npy").exists() or pytest.fail(),
    ),
    Case(
        "query --read index:9 out of range",
        ["query", "run", "--read", "index:9"],
        2,
        "index:K takes a slot number 0 to 2",
        setup=lambda mp: trained(),
    ),
    Case(
        "query --clamp 10=... (no such name)",
        ["query", "run", "--clamp", "10=zeros"],
        2,
        "no node named '10'",
        setup=lambda mp: trained(),
    ),
    Case(
        "query --mask random:1.5",
        ["query", "run", "--clamp", "input=zeros", "--mask", "input=random:1.5"],
        2,
        "between 0 and 1, got '1.5'",
        setup=lambda mp: trained(),
    ),
    Case(
        "query --mask random:-1",
        ["query", "run", "--clamp", "input=zeros", "--mask", "input=random:-1"],
        2,
        "between 0 and 1, got '-1'",
        setup=lambda mp: trained(),
    ),
    Case(
        "query --batch 0",
        ["query", "run", "--batch", "0"],
        2,
        "--batch: must be >= 1, got 0",
        setup=lambda mp: trained(),
    ),
    Case(
        "query --out is a file",
        ["query", "run", "--out", "afile"],
        2,
        "is a file",
        setup=lambda mp: (trained(), write("afile", "x")),
    ),
    Case(
        "query --out holds an earlier query",
        ["query", "run", "--steps", "1"],
        2,
        "holds an earlier query",
        setup=lambda mp: (trained(), main(["query", "run", "--steps", "1"])),
    ),
    Case(
        "query --overwrite",
        ["query", "run", "--steps", "1", "--overwrite"],
        0,
        setup=lambda mp: (trained(), main(["query", "run", "--steps", "1"])),
    ),
    Case(
        "query: object-dtype .npy",
        ["query", "run", "--clamp", "input=o.npy"],
        2,
        "not a readable numeric .npy",
        setup=lambda mp: (trained(), npy("o.npy", np.array([{}], object))),
    ),
    Case(
        "query: string .npy",
        ["query", "run", "--clamp", "input=s.npy"],
        2,
        "holds a <U1 array",
        setup=lambda mp: (trained(), npy("s.npy", np.array(["a"]))),
    ),
    Case(
        "query: NaN in a clamped .npy",
        ["query", "run", "--clamp", "input=n.npy"],
        2,
        "contains 1 NaN or infinite value(s)",
        absent="inference rate",
        setup=lambda mp: (trained(), npy("n.npy", np.array([[np.nan] + [0.0] * (FEATURES - 1)], np.float32))),
    ),
    Case(
        "query: an input of 1e30",
        ["query", "run", "--clamp", "input=b.npy", "--clamp", "output=label:1"],
        2,
        "the value given for 'input' reaches 1e+30",
        absent="inference rate",
        setup=lambda mp: (trained(), npy("b.npy", np.full((1, FEATURES), 1e30, np.float32))),
    ),
    Case(
        "query: a .npy of the wrong shape",
        ["query", "run", "--clamp", "input=w.npy"],
        2,
        "has shape (2, 5)",
        setup=lambda mp: (trained(), npy("w.npy", np.zeros((2, 5), np.float32))),
    ),
    Case(
        "query: unknown --read checked before relaxing",
        ["query", "run", "--read", "pixels"],
        2,
        "no node named 'pixels'",
        setup=lambda mp: (trained(), mp.setattr("predcode.app.query_cli.infer", _must_not_run)),
    ),
    Case(
        "query: label out of range",
        ["query", "run", "--clamp", "output=label:7"],
        2,
        "outside [0, 2]",
        setup=lambda mp: trained(),
    ),
    Case(
        "query: --clamp without =",
        ["query", "run", "--clamp", "input"],
        2,
        "takes NODE=SPEC",
        setup=lambda mp: trained(),
    ),
    Case(
        "query: const:inf",
        ["query", "run", "--clamp", "input=const:inf"],
        2,
        "takes a finite number",
        setup=lambda mp: trained(),
    ),
    Case("query: --state-lr 0", ["query", "run", "--state-lr", "0"], 2, "must be a finite number > 0"),
    Case("query --device cuda without CUDA", ["query", "run", "--device", "cuda"], 2, "no CUDA device", setup=_no_cuda),
    Case(
        "query: a rising energy is warned about",
        ["query", "run", "--clamp", "output=label:1", "--read", "input", "--state-lr", "1.9", "--steps", "3"],
        0,
        "warning: the energy rose",
        setup=lambda mp: trained(),
    ),
    Case(
        "query: a nearly constant node is warned about",
        ["query", "run", "--clamp", "output=label:1", "--read", "input", "--steps", "1", "--state-lr", "1e-4"],
        0,
        "node 'input' is nearly constant",
        setup=lambda mp: trained(),
    ),
    # -- the rest of the command line ------------------------------------------------------
    Case("unknown subcommand", ["fly"], 2, "invalid choice: 'fly'"),
    Case("unknown flag", train("--speed", "3"), 2, "unrecognized arguments: --speed"),
    Case("repro: unknown experiment", ["repro", "nope"], 2, "unknown experiment 'nope'"),
    Case("bench: unknown benchmark", ["bench", "nope"], 2, "unknown benchmark"),
    Case("bench: bad --cores", ["bench", "mlp", "--cores", "a,b"], 2, "--cores takes core numbers"),
    Case("data fetch with no name", ["data", "fetch"], 2, "name the datasets to fetch"),
]


def _read_only(path: str) -> None:
    Path(path).mkdir()
    os.chmod(path, 0o500)
    if os.access(path, os.W_OK):  # root ignores permissions: a file in the way does it
        os.chmod(path, 0o700)
        write(f"{path}/run", "x")  # then run_dir is a file -> refused by check_run_dir
        Path(path, "run").unlink()
        Path(path).rmdir()
        write(path, "not a folder")  # ro/run cannot be created under a file


def _must_not_run(*args, **kwargs):
    raise AssertionError("the query relaxed before checking its --read names")


def _two_runs_and_latest() -> None:
    runs = sorted(p for p in Path("runs").iterdir() if not p.is_symlink())
    assert len(runs) == 2, runs
    assert Path("runs/latest").is_symlink() and Path("runs/latest").resolve() == runs[-1].resolve()
    for run in runs:
        assert metrics_epochs(str(run)) == [1]


def _valid_json_lines(path: str) -> None:
    def no_constant(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    for line in Path(path).read_text().splitlines():
        json.loads(line, parse_constant=no_constant)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case: Case, monkeypatch, capsys):
    if case.setup is not None:
        case.setup(monkeypatch)
    capsys.readouterr()
    argv = train_toml(case.argv[1]) if case.argv[0] == "toml" else case.argv
    code = main(argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    assert case.fragment in err, err
    assert "Traceback" not in err
    if case.absent:
        assert case.absent not in err, err
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err  # one line naming the problem and the fix
    if case.check is not None:
        case.check()


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "train", *SMALL, "--lr", "-1"]) == 2
    assert "predcode: error:" in capsys.readouterr().err
    assert main(["eval", "missing.safetensors", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("predcode: error:")


def test_unexpected_errors_are_one_line_with_exit_code_1(monkeypatch, capsys):
    def broken(cfg):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_load_data", broken)
    assert main(train()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected ZeroDivisionError: a bug" in err and "--debug" in err


# -- the Python API ------------------------------------------------------------------------
def _net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = mlp([10, 32, 32, 5], act="tanh").to(dtype)
    return model, PCGraph(model)


def _numpy_input():
    model, graph = _net()
    Backprop().gradients(graph, np.zeros((16, 10)), torch.zeros(16, 5, dtype=torch.float64))


def _small_error_divergence():
    """A trained-looking start (output error 1e-4) and an inference rate past stability:
    the energy grows a millionfold from a tiny start and must be reported (the old limit,
    a millionfold of max(E_0, 1), let it through with a 1000x wrong gradient)."""
    model, graph = _net()
    x = torch.randn(8, 10, dtype=torch.float64)
    with torch.no_grad():
        y = model(x) + 1e-4 * torch.randn(8, 5, dtype=torch.float64)
    InferenceLearning(GradientDescent(1.5), StopRule(max_steps=16)).gradients(graph, x, y)


def _bp_step_nan():
    model, graph = _net(dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=1e30)
    x, y = torch.randn(8, 10), torch.randint(0, 5, (8,))
    for _ in range(3):
        Backprop().step(graph, x, y, opt)


def _nonfinite_input():
    model, graph = _net()
    x = torch.zeros(4, 10, dtype=torch.float64)
    x[0, 0] = float("nan")
    Backprop().gradients(graph, x, torch.zeros(4, 5, dtype=torch.float64))


def _huge_input_relaxation():
    torch.manual_seed(0)
    graph = PCGraph(mlp([10, 32, 5], act="relu"))
    InferenceLearning(GradientDescent(0.1), StopRule(max_steps=5)).gradients(
        graph, torch.full((4, 10), 1e30), torch.zeros(4, 5)
    )


def _config_coercion():
    TrainConfig(compare_bp="false")


API_CASES = [
    ("numpy input", _numpy_input, InputError, "must be a torch.Tensor or a tuple/list of them, got numpy.ndarray"),
    ("divergence relative to a small start", _small_error_divergence, DivergenceError, "lower the inference rate"),
    ("backprop step diverging", _bp_step_nan, NonFiniteError, "lower the weight learning rate"),
    ("non-finite input", _nonfinite_input, InputError, "contains 1 NaN or infinite"),
    ("a huge input is not the inference rate", _huge_input_relaxation, DivergenceError, "so not the inference rate"),
    ("config: string for a bool", _config_coercion, OptionError, "must be true or false"),
    ("config: assignment validated", lambda: setattr(TrainConfig(), "epochs", 0), OptionError, "must be >= 1"),
    ("inclusive range reversed", lambda: inclusive_range("5-2", "data"), InputError, "is empty"),
]


@pytest.mark.parametrize("name,call,kind,fragment", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_case(name, call, kind, fragment):
    with pytest.raises(kind) as info:
        call()
    assert fragment in str(info.value)


def test_the_table_covers_every_probe():
    """The probe count reported for this work: every row above is one probe."""
    assert len(CLI_CASES) + len(API_CASES) >= 80


# -- property-based fuzzing ------------------------------------------------------------------
FIELDS = TrainConfig.model_fields
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-2, 2000), max_size=5),
    st.sampled_from(["il", "bp", "mnist", "[0,1]", "cpu", "sgd", "gd", "cnn", "se", "float64"]),
)
keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(min_size=1, max_size=10))


@settings(max_examples=150, deadline=None, database=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_fuzz_config_never_coerces(given_values):
    """A config is either refused with one OptionError line, or holds exactly the values
    given (an int may stand for a float)."""
    try:
        cfg = TrainConfig.from_dict(dict(given_values))
    except OptionError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    for key, value in given_values.items():
        got = getattr(cfg, key)
        assert got == value
        if isinstance(value, bool) or isinstance(got, bool):
            assert type(got) is type(value)
        assert not (isinstance(value, float) and not math.isfinite(value))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), values, max_size=3))
def test_fuzz_toml_through_the_command_line(tmp_path, capsys, given_values):
    """Any TOML a user writes ends in success or one error line (exit 2), never a traceback."""
    sections: dict[str, list[str]] = {}
    for key, value in given_values.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue  # TOML writes neither None nor these through json.dumps
        sections.setdefault(SECTION_OF[key], []).append(f"{key} = {json.dumps(value)}")
    lines = [line for section, keys in sections.items() for line in (f"[{section}]", *keys)]
    path = tmp_path / "fuzz.toml"
    path.write_text("\n".join(lines) + "\n")
    calls = []
    original = cli._load_data
    cli._load_data = lambda cfg: calls.append(cfg) or (_ for _ in ()).throw(OptionError("stop"))
    try:
        code = main(
            ["train", "--quiet", "--config", str(path), "--run-dir", str(tmp_path / f"r{len(os.listdir(tmp_path))}")]
        )
    finally:
        cli._load_data = original
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if calls:  # accepted: the values arrived unchanged
        assert "stop" in err
        for key, value in given_values.items():
            if f"{key} = " in "\n".join(lines) and key != "run_dir":
                assert getattr(calls[0], key) == value


def _query_net() -> Network:
    torch.manual_seed(0)
    model = mlp([16, 8, 4], act="tanh")
    return Network(PCGraph(model), [(16,)])


spec_text = st.one_of(
    st.text(max_size=16),
    st.builds(
        lambda k, a: f"{k}:{a}",
        st.sampled_from(["label", "const", "random", "data", "zeros", "randn", "index"]),
        st.one_of(
            st.text(max_size=8),
            st.integers(-5, 20).map(str),
            st.floats(allow_nan=True).map(str),
            st.lists(st.integers(-3, 6), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
        ),
    ),
    st.sampled_from(["top-half", "left-half", "zeros", "randn", "const:1e400", "label:", "x.npy"]),
)


@settings(max_examples=150, deadline=None, database=None)
@given(spec_text, spec_text)
def test_fuzz_query_specs(value_spec, mask_spec):
    """A value or mask spec is either refused with a PredcodeError, or gives a finite
    tensor of the node's shape whose values are exactly what the spec says."""
    net = _query_net()
    for shape in [(4,), (16,)]:
        try:
            v = parse_value(value_spec, shape, net, seed=1)
        except PredcodeError as exc:
            assert str(exc)
        else:
            assert v.shape[1:] == shape and bool(torch.isfinite(v).all())
            kind, _, arg = value_spec.partition(":")
            if kind == "label":
                labels = [int(k) for k in arg.split(",")]
                assert v.argmax(1).tolist() == labels and v.sum().item() == len(labels)
            elif kind == "const":
                assert bool((v == float(arg)).all())
            elif value_spec == "zeros":
                assert not v.any()
        try:
            m = parse_mask(mask_spec, shape, seed=1)
        except PredcodeError as exc:
            assert str(exc)
        else:
            assert m.dtype == torch.bool and m.shape[1:] == shape
            if mask_spec.startswith("random:"):
                assert 0.0 <= float(mask_spec[7:]) <= 1.0


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.text(max_size=10), st.integers(-3, 12).map(str), st.integers(-3, 12).map(lambda k: f"index:{k}")))
def test_fuzz_node_names(name):
    """A node is found by its name, 'input', 'output' or index:K, or refused: a bare number
    is never taken for a position."""
    graph = _query_net().graph
    try:
        i = node_index(graph, name)
    except PredcodeError:
        assert name not in graph.names and name not in ("input", "output")
        return
    if name.startswith("index:"):
        assert i == int(name[6:])
    elif name in graph.names:
        assert graph.names[i] == name
    else:
        assert name in ("input", "output")


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.one_of(
        st.text(max_size=8),
        st.tuples(st.integers(0, 50), st.integers(0, 50)).map(lambda t: f"{t[0]}-{t[1]}"),
        st.integers(0, 50).map(str),
    )
)
def test_fuzz_inclusive_ranges(text):
    try:
        first, last = inclusive_range(text, "data")
    except InputError:
        return
    lo, _, hi = text.partition("-")
    assert (first, last) == (int(lo), int(hi or lo)) and first <= last


# -- a real kill -9 ------------------------------------------------------------------------
from cached_data import needs_datasets  # noqa: E402


@needs_datasets("mnist")
def test_kill_9_then_resume_loses_nothing(tmp_path):
    """SIGKILL in the middle of epoch 2, then --resume: metrics rows 1, 2, 3 once each, no
    temporary file left, the checkpoint at the end of epoch 3."""
    import signal
    import subprocess
    import sys
    import time

    from predcode.app import checkpoint

    run = tmp_path / "k"
    args = [
        sys.executable,
        "-m",
        "predcode",
        "train",
        "--quiet",
        "--sizes",
        "784",
        "16",
        "10",
        "--epochs",
        "3",
        "--max-batches",
        "80",
        "--checkpoint-every",
        "7",
        "--threads",
        "1",
        "--run-dir",
        str(run),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().strip():
            break
        time.sleep(0.02)
    time.sleep(0.1)  # into epoch 2
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert [json.loads(l)["epoch"] for l in metrics.read_text().splitlines()] in ([1], [1, 2])
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stderr
    assert [json.loads(l)["epoch"] for l in metrics.read_text().splitlines()] == [1, 2, 3]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert checkpoint.load(run / "checkpoint.safetensors")["epoch"] == 3


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "--clamp",
                    "--mask",
                    "--init",
                    "--read",
                    "--batch",
                    "--steps",
                    "--state-lr",
                    "--solver",
                    "--mask-input",
                ]
            ),
            st.one_of(
                spec_text,
                st.builds(
                    lambda n, s: f"{n}={s}",
                    st.sampled_from(["input", "output", "2", "4", "index:0", "index:2", "3", "x"]),
                    spec_text,
                ),
            ),
        ),
        max_size=4,
    )
)
@example(flags=[("--batch", "\x85")])  # a line break of Unicode's, echoed in the message
def test_fuzz_query_command_line(capsys, flags):
    """Any query flags end in success (exit 0) or one error line (exit 2): never exit code 1
    (an unexpected exception) and never a traceback."""
    if not Path("run").exists():
        trained()
    argv = ["query", "run", "--steps", "2", "--overwrite"]
    for flag, value in flags:
        argv += [flag, value]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err

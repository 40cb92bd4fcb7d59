"""Command line: ``predcode data``, ``predcode train``, ``predcode eval``, ``predcode query``,
``predcode repro``, ``predcode bench``.

Thin by design: parse arguments, call the library, print.  Every field of
:class:`~predcode.app.config.TrainConfig` is a flag of ``train`` (``--state-lr 0.01``), with the
field's description, default and choices as its help; a TOML file given by ``--config``
sets the same keys, and flags override it.  Both go through the same validation.

Errors: a mistake the user can fix (a bad flag or value, a missing or damaged file, a run
that diverged) ends in one line on stderr, ``predcode: error: ...`` naming the problem and
the fix, and exit code 2; anything else in one line and exit code 1.  ``--debug`` (or
``PREDCODE_DEBUG=1``) prints the traceback as well.

Run folders (``train``): an existing run folder is never overwritten.  Without
``--run-dir`` each run gets a fresh ``runs/YYYYmmdd-HHMMSS`` folder and ``runs/latest``
links to the newest; a folder that already holds a run is refused unless ``--resume``
(continue it) or ``--overwrite`` (replace it) is given; ``--resume`` of a folder that does
not exist is an error.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import traceback
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..exceptions import OptionError, PredcodeError
from .arguments import (
    Formatter,
    Parser,
    nonnegative_int,
    positive_float,
    positive_int,
    seed,
)
from .config import SECTION_OF, SECTIONS, TrainConfig, check_device, read_toml


# -- the parser ------------------------------------------------------------------------
def add_common(parser: argparse.ArgumentParser, *, device: bool = True, threads_default: int = 0) -> None:
    """The flags every model-running subcommand shares: --threads, --device, --debug."""
    parser.add_argument(
        "--threads",
        type=nonnegative_int,
        default=threads_default,
        metavar="N",
        help=f"torch CPU threads (0 = torch's default) (default: {threads_default})",
    )
    if device:
        parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default: cpu)")
    add_debug(parser)


def add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, print the Python traceback too"
    )


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field: its type, choices, description and default;
    one group per config section (the flag's key goes under that table of a --config file)."""
    groups = {
        section: parser.add_argument_group(f"{section} settings (TOML table [{section}] of --config; flags win)")
        for section in SECTIONS
    }
    for name, field in TrainConfig.model_fields.items():
        group = groups[SECTION_OF[name]]
        flag = "--" + name.replace("_", "-")
        kind = field.annotation
        default = field.get_default(call_default_factory=True)
        text = f"{field.description} (default: {_default_text(default)})"
        if name == "device":
            text += "; checked against this machine"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(kind) is list:
            group.add_argument(
                flag, type=positive_int, nargs="*" if name == "channels" else "+", default=None, metavar="N", help=text
            )
        elif typing.get_origin(kind) is Literal:
            choices = typing.get_args(kind)
            group.add_argument(
                flag, default=None, metavar="{" + ",".join(choices) + "}", help=text
            )  # checked by TrainConfig: the same message as TOML
        elif kind is int:
            group.add_argument(flag, type=int, default=None, metavar="N", help=text)
        elif kind is float:
            group.add_argument(flag, type=float, default=None, metavar="X", help=text)
        else:
            group.add_argument(flag, type=str, default=None, help=text)


def _experiments_listing(out: str | Path = "results") -> str:
    from .. import experiments
    from ..experiments.runtimes import runtime_text

    lines = []
    for exp in experiments.registry().values():
        lines.append(f"  {exp.name:22s} {runtime_text(exp.name, out):>12s}  {exp.summary}")
    return "\n".join(lines)


class _ReproHelp(argparse.Action):
    """``repro --help``: the usage, then every experiment (imported only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.epilog = "experiments (runtime of the default run, measured on 2 CPU cores):\n" + _experiments_listing()
        parser.print_help()
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="predcode", description="Predictive coding networks on PyTorch.", formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"predcode {__version__}")
    parser.add_argument(
        "--debug", action="store_true", default=False, help="on an error, print the Python traceback too"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a network (and backprop beside it with --compare-bp)",
        formatter_class=Formatter,
        description=(
            "Train a network on an image dataset.  Without --run-dir each run writes a fresh\n"
            "runs/YYYYmmdd-HHMMSS folder and runs/latest links to it; a folder that holds a\n"
            "run is never overwritten: continue it with --resume or replace it with --overwrite."
        ),
    )
    train.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file of settings (the keys below); flags override it"
    )
    mode = train.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir (default: runs/latest) from its checkpoint"
    )
    mode.add_argument("--overwrite", action="store_true", help="replace the run already in --run-dir")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--distributed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="data-parallel over the processes torchrun started (default: whenever torchrun's environment is set)",
    )
    add_common(train, device=False)  # --device is a setting (below)
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="test accuracy of a trained run",
        formatter_class=Formatter,
        description="Test accuracy of every run in a checkpoint written by 'predcode train'.",
    )
    ev.add_argument("run", nargs="?", type=Path, help="run folder or its checkpoint.safetensors (or give --checkpoint)")
    ev.add_argument("--checkpoint", type=Path, help="the checkpoint file (same as RUN)")
    ev.add_argument("--inference", action="store_true", help="also predict by relaxation (the output left free)")
    ev.add_argument("--steps", type=positive_int, default=50, help="with --inference: inference steps (default: 50)")
    ev.add_argument(
        "--state-lr", type=positive_float, default=0.1, help="with --inference: inference rate (default: 0.1)"
    )
    ev.add_argument(
        "--relax",
        choices=["states", "errors"],
        default="states",
        help="with --inference: relax the states (sPC) or the errors (ePC) (default: states)",
    )
    add_common(ev)
    ev.set_defaults(func=cmd_eval)

    query = sub.add_parser(
        "query",
        help="clamp any nodes of a trained network, relax, read any node",
        formatter_class=Formatter,
        description=(
            "Clamp nodes of a trained network, relax the rest, write the "
            "nodes read.\nNodes are addressed by name (see the graph's "
            "names), 'input', 'output', or\n'index:K' for the K-th slot."
        ),
    )
    from .query_cli import add_arguments as _query_arguments

    _query_arguments(query)
    add_common(query)
    query.set_defaults(func=cmd_query)

    repro = sub.add_parser(
        "repro",
        help="reproduce a claim of the literature (JSON + PNG)",
        formatter_class=Formatter,
        add_help=False,
        description="Run one experiment (or 'all'); --list shows each with its measured runtime.",
    )
    repro.add_argument("-h", "--help", action=_ReproHelp, help="show this help and the list of experiments, then exit")
    repro.add_argument("name", nargs="?", help="experiment name (see below or --list), or 'all'")
    repro.add_argument("--list", action="store_true", help="list the experiments with their runtimes")
    repro.add_argument(
        "--full",
        action="store_true",
        help="the paper's full size (slower than the listed runtime), written to OUT/NAME-full",
    )
    repro.add_argument("--seed", type=seed, default=0, help="seed (default: 0)")
    repro.add_argument(
        "--protocol",
        choices=["ours", "paper"],
        default="ours",
        help="'paper': the protocol of the paper's own code (continual and "
        "concept-drift only; written to OUT/NAME-paper) (default: ours)",
    )
    repro.add_argument("--out", default="results", help="parent folder of the outputs, OUT/NAME (default: results)")
    repro.add_argument(
        "--report", action="store_true", help="write REPORT.md (next to --out) from every <out>/*/result.json"
    )
    add_common(repro, device=False)
    repro.set_defaults(func=cmd_repro)

    bench = sub.add_parser(
        "bench", help="speed benchmarks (tables + JSON; see BENCHMARKS.md)", formatter_class=Formatter
    )
    bench.add_argument("names", nargs="*", help="sub-benchmarks (default: all; see --list)")
    bench.add_argument("--list", action="store_true", help="list the sub-benchmarks")
    bench.add_argument("--quick", action="store_true", help="few steps, small grids (smoke test)")
    bench.add_argument(
        "--out", default="results/bench", help="folder for the JSON and figures (default: results/bench)"
    )
    bench.add_argument("--cores", help="pin to these cores, e.g. 0,1 (default: the first THREADS)")
    bench.add_argument("--no-pcx", action="store_true", help="skip the pcx comparison")
    bench.add_argument("--no-compile", action="store_true", help="predcode PC steps eager only")
    bench.add_argument(
        "--in-process", action="store_true", help="time every method in this process (default: a fresh process each)"
    )
    bench.add_argument(
        "--cold-compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile with empty torch.compile caches (default: on, off with --quick)",
    )
    bench.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="BENCH.KEY=VALUE",
        help="override a setting, e.g. mlp.steps=100 or scaling.T=1,8,64",
    )
    bench.add_argument("--markdown", metavar="PATH", help="also rewrite PATH's results section (e.g. BENCHMARKS.md)")
    bench.add_argument("--seed", type=seed, default=0, help="seed (default: 0)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    add_common(bench, device=False, threads_default=2)
    bench.set_defaults(func=cmd_bench)

    data = sub.add_parser("data", help="fetch and locate datasets", formatter_class=Formatter)
    data.add_argument(
        "action", choices=["fetch", "path", "list"], help="fetch NAMES, print the data folder, or list the datasets"
    )
    data.add_argument("names", nargs="*", default=[], help="datasets to fetch (see 'list')")
    data.add_argument("--force", action="store_true", help="fetch again even if cached")
    add_debug(data)
    data.set_defaults(func=cmd_data)
    return parser


# -- train -----------------------------------------------------------------------------
def _config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The config (TOML, then flags) and whether a run folder was named explicitly."""
    overrides = {
        name: getattr(args, name) for name in TrainConfig.model_fields if getattr(args, name, None) is not None
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        values = read_toml(args.config) if args.config else {}
    for warning in caught:  # a flat (pre-sections) config file: say so once, on stderr
        print(f"predcode: warning: {warning.message}", file=sys.stderr)
    explicit = "run_dir" in overrides or "run_dir" in values
    values.update(overrides)
    return TrainConfig.from_dict(values), explicit


def _load_data(cfg: TrainConfig):
    from .. import data
    from .registry import GPT_CONTEXT
    from .train import flat_inputs

    if cfg.dataset == "shakespeare":  # next-character id windows for the gpt model
        return data.token_windows(cfg.dataset, GPT_CONTEXT)
    flatten = flat_inputs(cfg)
    train_x, train_y = data.load(cfg.dataset, "train", normalize=cfg.normalize, flatten=flatten)
    test_x, test_y = data.load(cfg.dataset, "test", normalize=cfg.normalize, flatten=flatten)
    return train_x, train_y, test_x, test_y


def _set_threads(threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import Trainer, check_run_dir, fresh_run_dir, link_latest, resolve_latest

    cfg, explicit = _config_from_args(args)
    check_device(cfg.device)
    _set_threads(args.threads)
    restarted = distributed.restart_count() > 0  # torchrun's elastic agent restarted us
    resume = args.resume or restarted
    fresh_default = False
    if not explicit:
        if distributed.launched_by_torchrun() and args.distributed is not False:
            raise OptionError("several processes must share one run folder: give --run-dir")
        if resume:
            cfg.run_dir = str(resolve_latest(Path(cfg.run_dir)))
        else:
            cfg.run_dir, fresh_default = str(fresh_run_dir(Path(cfg.run_dir).parent)), True
    has_checkpoint = check_run_dir(Path(cfg.run_dir), resume=resume, overwrite=args.overwrite, restarted=restarted)
    # under torchrun: join the process group (see predcode.app.distributed); rank 0 talks
    world = distributed.from_env(args.distributed, cfg.device)
    say = (lambda msg: print(msg, file=sys.stderr)) if world.is_main else (lambda msg: None)
    trainer = Trainer(cfg, _load_data(cfg), progress=not args.quiet, world=world)
    if resume and has_checkpoint:
        trainer.resume()
        if trainer.epoch >= cfg.epochs:
            say(
                f"the run in {trainer.run_dir} already finished its {trainer.epoch} epoch(s); "
                "nothing to do (raise --epochs to train further)"
            )
        else:
            say(
                f"resumed from {trainer.checkpoint_path} at epoch {trainer.epoch + 1}, "
                f"batch {trainer.batch}" + (f" on {world.size} processes" if world.active else "")
            )
    elif resume:
        say(f"no checkpoint in {trainer.run_dir} yet (stopped before its first); starting from the beginning")
    trainer.start()
    if fresh_default and world.is_main:
        link_latest(trainer.run_dir)
    try:
        history = trainer.fit()
    finally:
        trainer.close()
    final = history[-1] if history else {}
    summary = {name: m["test_acc"] for name, m in final.items() if isinstance(m, dict)}
    if world.is_main:
        print(json.dumps({"run_dir": str(trainer.run_dir), "epochs": len(history), "test_acc": summary}))
    return 0


# -- eval ------------------------------------------------------------------------------
def _checkpoint_path(args: argparse.Namespace) -> Path:
    given = [p for p in (args.run, args.checkpoint) if p is not None]
    if not given:
        raise OptionError("give the run folder or its checkpoint: predcode eval RUN_DIR")
    if len(given) == 2 and given[0] != given[1]:
        raise OptionError("give the run either as RUN or as --checkpoint, not both")
    path = given[0]
    return path / "checkpoint.safetensors" if path.is_dir() else path


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..graph import PCGraph
    from ..inference import StopRule, Variables, make_solver
    from ..query import predict
    from . import checkpoint
    from .query_cli import NETWORK_KEY
    from .train import DTYPES, build_model, evaluate

    check_device(args.device)
    _set_threads(args.threads)
    path = _checkpoint_path(args)
    state = checkpoint.load(path)
    if NETWORK_KEY in state:
        raise OptionError(
            f"{path} holds a saved network, not a training run; eval reads what "
            f"'predcode train' writes (query the network with 'predcode query {path}')"
        )
    if "config" not in state or "runs" not in state:
        raise OptionError(
            f"{path} is not a training checkpoint (no config and runs); give the "
            "checkpoint.safetensors that 'predcode train' wrote"
        )
    cfg = TrainConfig.from_dict(state["config"])
    _, _, test_x, test_y = _load_data(cfg)
    device = torch.device(args.device)
    test_x, test_y = test_x.to(device, DTYPES[cfg.dtype]), test_y.to(device)
    results = {}
    for name, run in state["runs"].items():
        model = build_model(cfg).to(device, DTYPES[cfg.dtype])
        model.load_state_dict(run["model"])
        model.eval()  # batch norm: the running statistics; dropout off
        graph = PCGraph(model)
        result = evaluate(model, test_x, test_y)
        if args.inference and name != "bp":
            solver = make_solver("gd", args.state_lr)
            with torch.no_grad():
                out = predict(
                    graph,
                    test_x,
                    inference=True,
                    solver=solver,
                    stop=StopRule(max_steps=args.steps),
                    variables=Variables(args.relax),
                )
            result["test_acc_inference"] = float((out.argmax(-1) == test_y).float().mean())
        results[name] = result
    print(json.dumps({"checkpoint": str(path), "dataset": cfg.dataset, **results}))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from .query_cli import main as query_main

    check_device(args.device)
    _set_threads(args.threads)
    return query_main(args)


def cmd_data(args: argparse.Namespace) -> int:
    from .. import data

    if args.action == "fetch":
        if not args.names:
            raise OptionError(
                f"name the datasets to fetch, e.g. 'predcode data fetch mnist' "
                f"(known: {', '.join(data.known_datasets())})"
            )
        for name in args.names:
            path = data.fetch(name, force=args.force)
            print(f"{name}: {path}")
    elif args.action == "path":
        print(data.data_dir())
    elif args.action == "list":
        for name in data.known_datasets():
            print(name)
    return 0


def run_folder(name: str, protocol: str, full: bool) -> str:
    """The result folder of one run: ``NAME``, ``NAME-paper`` (another protocol), ``NAME-full``
    (the paper's size), so no run overwrites another kind of run."""
    return name + ("" if protocol == "ours" else f"-{protocol}") + ("-full" if full else "")


def cmd_repro(args: argparse.Namespace) -> int:
    from .. import experiments

    _set_threads(args.threads)
    if args.list or not (args.name or args.report):
        print("experiments (runtime of the default run, measured on 2 CPU cores; --full is longer):")
        print(_experiments_listing(args.out))
        return 0
    names = list(experiments.registry()) if args.name == "all" else [args.name] if args.name else []
    for name in names:  # `all`: every registered experiment; none: only --report
        experiments.get(name)  # an unknown name fails before anything runs
    protocol = getattr(args, "protocol", "ours")
    if protocol != "ours":  # only experiments whose run() takes protocol= have another one
        takes = {n for n in names if "protocol" in inspect.signature(experiments.get(n).run).parameters}
        if args.name != "all" and names and not takes:
            raise OptionError(
                f"experiment '{names[0]}' has no '{protocol}' protocol; "
                f"--protocol {protocol} works with continual and concept-drift"
            )
        names = [n for n in names if n in takes]
    for name in names:
        exp = experiments.get(name)
        out_dir = Path(args.out) / run_folder(exp.name, protocol, args.full)
        out_dir.mkdir(parents=True, exist_ok=True)
        if protocol == "ours":
            result = exp.run(out_dir, args.full, args.seed)
        else:  # the experiments left take protocol= (their signatures, read above); the registry types run without it
            run_with_protocol: Callable[..., dict[str, Any]] = exp.run
            result = run_with_protocol(out_dir, args.full, args.seed, protocol=protocol)
        print(json.dumps({"experiment": exp.name, "out_dir": str(out_dir), **result}, default=str))
    if args.report:  # REPORT.md beside the results folder (the repo root for --out results)
        from ..experiments.report import write_report

        print(f"wrote {write_report(Path(args.out), Path(args.out).resolve().parent / 'REPORT.md')}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .. import bench
    from ..bench import report
    from ..bench.common import BenchConfig, fresh_inductor_cache, pin
    from ..bench.machine import load_average, machine_info

    if args.list:
        for name, summary in bench.BENCHMARKS.items():
            print(f"{name:10s} {summary}")
        return 0
    names = args.names or list(bench.DEFAULT)
    unknown = [n for n in names if n not in bench.BENCHMARKS]
    if unknown:
        raise OptionError(f"unknown benchmark {unknown}; choose from {sorted(bench.BENCHMARKS)}")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise OptionError(f"--set takes BENCH.KEY=VALUE (e.g. mlp.steps=100), got '{item}'")
        overrides[key] = value
    try:
        cores = [int(c) for c in args.cores.split(",")] if args.cores else None
    except ValueError:
        raise OptionError(f"--cores takes core numbers separated by commas (e.g. 0,1), got '{args.cores}'") from None
    cores = pin(args.threads, cores)
    cold = args.cold_compile if args.cold_compile is not None else not args.quick
    if cold:
        fresh_inductor_cache()  # a first step's time is a cold compile
    cfg = BenchConfig(
        quick=args.quick,
        out=Path(args.out),
        threads=args.threads,
        cores=cores,
        pcx=not args.no_pcx,
        compile=not args.no_compile,
        isolate=not args.in_process,
        cold_compile=cold,
        seed=args.seed,
        overrides=overrides,
        progress=not args.quiet,
    )
    machine = machine_info(args.threads, cores, getattr(args, "argv", None))
    machine["quick"] = args.quick
    machine["cold_compile"] = cold
    load = machine.get("load_average_at_start")
    if load and load[0] > 0.5:
        print(
            f"warning: load average {load[0]} before starting: the machine is busy and the timings will be noisy",
            file=sys.stderr,
        )
    results = []
    for name in names:
        cfg.say(f"== running {name}{' (quick)' if args.quick else ''} ...")
        before = load_average()
        result = bench.run_one(name, cfg)
        result["load_average"] = {"before": before, "after": load_average()}
        if result.get("pcx_versions"):
            machine["pcx_versions"] = result["pcx_versions"]
        results.append(result)
        report.write_json(cfg.out / f"{name}.json", {"machine": machine, "result": result})
        print(report.format_text(result), flush=True)
    payload = {"machine": machine, "results": results}
    report.write_json(cfg.out / "bench.json", payload)
    summary = report.summary_markdown(machine, results)
    (cfg.out / "summary.md").write_text("# predcode bench results\n\n" + summary)
    if args.markdown:
        report.update_markdown(Path(args.markdown), summary)
        print(f"updated {args.markdown}")
    print(f"wrote {cfg.out / 'bench.json'} and {cfg.out / 'summary.md'}")
    return 1 if any(r.get("error") for r in results) else 0


# -- entry point -----------------------------------------------------------------------
def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit code (0 ok, 2 a usage or input error, 1 otherwise)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    args.argv = argv
    debug = getattr(args, "debug", False) or os.environ.get("PREDCODE_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except PredcodeError as exc:
        if debug:
            traceback.print_exc()
        print(f"predcode: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("predcode: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path that cannot be read or written, a full disk
        if debug:
            traceback.print_exc()
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"predcode: error: {exc.strerror or _one_line(exc)}{where}; check the path, its "
            "permissions and the free space",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug, or a failure predcode does not know yet
        if debug:
            traceback.print_exc()
        print(
            f"predcode: error: unexpected {type(exc).__name__}: {_one_line(exc)} (rerun with "
            "--debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Command line: ``predcode data fetch``, ``predcode train``, ``predcode eval``,
``predcode repro``, ``predcode bench``.

Thin by design: parse arguments, call the library, print.  Every field of
:class:`~predcode.config.TrainConfig` is a flag of ``train`` (``--state-lr 0.01``); a TOML
file given by ``--config`` sets the same keys, and flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from .config import TrainConfig
from .errors import OptionError, PredcodeError


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, type=int, nargs="+", default=None, metavar="N")
        else:
            parser.add_argument(flag, type=kind, default=None)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name) is not None}
    if args.config:
        return TrainConfig.from_toml(args.config, overrides)
    return TrainConfig.from_dict(overrides)


def _load_data(cfg: TrainConfig):
    from . import data

    from .train import flat_inputs

    flatten = flat_inputs(cfg)
    train_x, train_y = data.load(cfg.dataset, "train", normalize=cfg.normalize, flatten=flatten)
    test_x, test_y = data.load(cfg.dataset, "test", normalize=cfg.normalize, flatten=flatten)
    return train_x, train_y, test_x, test_y


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from . import distributed
    from .train import Trainer

    cfg = _config_from_args(args)
    torch.set_num_threads(args.threads) if args.threads else None
    # under torchrun: join the process group (see predcode.distributed); rank 0 talks
    world = distributed.from_env(args.distributed, cfg.device)
    say = (lambda msg: print(msg, file=sys.stderr)) if world.is_main else (lambda msg: None)
    trainer = Trainer(cfg, _load_data(cfg), progress=not args.quiet, world=world)
    restarted = distributed.restart_count() > 0  # torchrun's elastic agent restarted us
    if args.resume or restarted:
        if trainer.checkpoint_path.exists():
            trainer.resume()
            say(f"resumed from {trainer.checkpoint_path} at epoch {trainer.epoch + 1}, "
                f"batch {trainer.batch}" + (f" on {world.size} processes" if world.active else ""))
        else:
            say(f"no checkpoint at {trainer.checkpoint_path}; starting afresh")
    try:
        history = trainer.fit()
    finally:
        trainer.close()
    final = history[-1] if history else {}
    summary = {name: m["test_acc"] for name, m in final.items() if isinstance(m, dict)}
    if world.is_main:
        print(json.dumps({"run_dir": str(trainer.run_dir), "epochs": len(history),
                          "test_acc": summary}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from . import checkpoint
    from .graph import PCGraph
    from .inference import StopRule, Variables, make_solver
    from .query import predict
    from .train import DTYPES, build_model, evaluate

    state = checkpoint.load(args.checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    _, _, test_x, test_y = _load_data(cfg)
    test_x = test_x.to(DTYPES[cfg.dtype])
    results = {}
    for name, run in state["runs"].items():
        model = build_model(cfg).to(DTYPES[cfg.dtype])
        model.load_state_dict(run["model"])
        model.eval()  # batch norm: the running statistics; dropout off
        graph = PCGraph(model)
        result = evaluate(model, test_x, test_y)
        if args.inference and name != "bp":
            solver = make_solver("gd", args.state_lr)
            with torch.no_grad():
                out = predict(graph, test_x, inference=True, solver=solver,
                              stop=StopRule(max_steps=args.steps),
                              variables=Variables(args.relax))
            result["test_acc_inference"] = float((out.argmax(-1) == test_y).float().mean())
        results[name] = result
    print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": cfg.dataset, **results}))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from .query_cli import main as query_main

    return query_main(args)


def cmd_data(args: argparse.Namespace) -> int:
    from . import data

    if args.action == "fetch":
        for name in args.names:
            path = data.fetch(name, force=args.force)
            print(f"{name}: {path}")
    elif args.action == "path":
        print(data.data_dir())
    elif args.action == "list":
        for name in data.known_datasets():
            print(name)
    return 0


def cmd_repro(args: argparse.Namespace) -> int:
    from . import experiments

    if args.list or not (args.name or args.report):
        for exp in experiments.registry().values():
            print(f"{exp.name:24s} {exp.summary}")
        return 0
    names = list(experiments.registry()) if args.name == "all" else [args.name] if args.name else []
    for name in names:  # `all`: every registered experiment; none: only --report
        exp = experiments.get(name)
        out_dir = Path(args.out) / exp.name
        out_dir.mkdir(parents=True, exist_ok=True)
        result = exp.run(out_dir, args.full, args.seed)
        print(json.dumps({"experiment": exp.name, "out_dir": str(out_dir), **result}, default=str))
    if args.report:  # REPORT.md beside the results folder (the repo root for --out results)
        from .experiments.report import write_report

        print(f"wrote {write_report(Path(args.out), Path(args.out).resolve().parent / 'REPORT.md')}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .bench import report
    from .bench.common import BenchConfig, fresh_inductor_cache, pin
    from .bench.machine import load_average, machine_info

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
    cores = [int(c) for c in args.cores.split(",")] if args.cores else None
    cores = pin(args.threads, cores)
    cold = args.cold_compile if args.cold_compile is not None else not args.quick
    if cold:
        fresh_inductor_cache()  # a first step's time is a cold compile
    cfg = BenchConfig(quick=args.quick, out=Path(args.out), threads=args.threads, cores=cores,
                      pcx=not args.no_pcx, compile=not args.no_compile,
                      isolate=not args.in_process, cold_compile=cold, seed=args.seed,
                      overrides=overrides, progress=not args.quiet)
    machine = machine_info(args.threads, cores, getattr(args, "argv", None))
    machine["quick"] = args.quick
    machine["cold_compile"] = cold
    load = machine.get("load_average_at_start")
    if load and load[0] > 0.5:
        print(f"warning: load average {load[0]} before starting: the machine is busy and the "
              "timings will be noisy", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="predcode", description="Predictive coding networks on PyTorch.")
    parser.add_argument("--version", action="version", version=f"predcode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a network (and backprop beside it with --compare-bp)")
    train.add_argument("--config", type=Path, help="TOML file with TrainConfig keys")
    train.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    train.add_argument("--distributed", action=argparse.BooleanOptionalAction, default=None,
                       help="data-parallel over the processes torchrun started (default: "
                            "whenever torchrun's environment is set)")
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="test accuracy of a checkpoint")
    ev.add_argument("--checkpoint", type=Path, required=True)
    ev.add_argument("--inference", action="store_true", help="also predict by relaxation")
    ev.add_argument("--steps", type=int, default=50)
    ev.add_argument("--state-lr", type=float, default=0.1)
    ev.add_argument("--relax", choices=["states", "errors"], default="states",
                    help="with --inference: relax the states (sPC) or the errors (ePC)")
    ev.set_defaults(func=cmd_eval)

    query = sub.add_parser("query", help="clamp any nodes of a trained network, relax, read any node")
    from .query_cli import add_arguments as _query_arguments

    _query_arguments(query)
    query.set_defaults(func=cmd_query)

    repro = sub.add_parser("repro", help="reproduce a claim of the literature (JSON + PNG)")
    repro.add_argument("name", nargs="?", help="experiment name (see --list), or 'all'")
    repro.add_argument("--list", action="store_true", help="list the experiments")
    repro.add_argument("--full", action="store_true", help="the paper's full size")
    repro.add_argument("--seed", type=int, default=0)
    repro.add_argument("--out", default="results", help="parent folder of the outputs")
    repro.add_argument("--report", action="store_true",
                       help="write REPORT.md (next to --out) from every <out>/*/result.json")
    repro.set_defaults(func=cmd_repro)

    bench = sub.add_parser("bench", help="speed benchmarks (tables + JSON; see BENCHMARKS.md)")
    bench.add_argument("names", nargs="*", help="sub-benchmarks (default: all; see --list)")
    bench.add_argument("--list", action="store_true", help="list the sub-benchmarks")
    bench.add_argument("--quick", action="store_true", help="few steps, small grids (smoke test)")
    bench.add_argument("--out", default="results/bench", help="folder for the JSON and figures")
    bench.add_argument("--threads", type=int, default=2, help="CPU threads for both libraries")
    bench.add_argument("--cores", help="pin to these cores, e.g. 0,1 (default: the first THREADS)")
    bench.add_argument("--no-pcx", action="store_true", help="skip the pcx comparison")
    bench.add_argument("--no-compile", action="store_true", help="predcode PC steps eager only")
    bench.add_argument("--in-process", action="store_true",
                       help="time every method in this process (default: a fresh process each)")
    bench.add_argument("--cold-compile", action=argparse.BooleanOptionalAction, default=None,
                       help="compile with empty torch.compile caches (default: on, off with --quick)")
    bench.add_argument("--set", action="append", default=[], metavar="BENCH.KEY=VALUE",
                       help="override a setting, e.g. mlp.steps=100 or scaling.T=1,8,64")
    bench.add_argument("--markdown", metavar="PATH", help="also rewrite PATH's results section "
                       "(e.g. BENCHMARKS.md)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    bench.set_defaults(func=cmd_bench)

    data = sub.add_parser("data", help="fetch and locate datasets")
    data.add_argument("action", choices=["fetch", "path", "list"])
    data.add_argument("names", nargs="*", default=[])
    data.add_argument("--force", action="store_true", help="fetch again even if cached")
    data.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except PredcodeError as exc:
        print(f"predcode: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

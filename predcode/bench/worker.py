"""Run one benchmark function in a fresh process.

``run_isolated("predcode.bench.mlp:measure_method", spec, threads)`` starts
``python -m predcode.bench.worker predcode.bench.mlp:measure_method SPEC_FILE`` with a new,
empty torch.compile cache folder, pinned to the same cores, and returns the function's
JSON-able result.  A fresh process makes a first step's time a cold compile, as it is for
pcx (which always runs in its own process), and keeps one method's compiled code and
caches from colouring the next one's numbers.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

MARK = "BENCH_RESULT "


class WorkerError(RuntimeError):
    pass


def run_isolated(
    target: str,
    spec: dict,
    threads: int,
    timeout: float | None = None,
    cold: bool = True,
    cache_dir: str | Path | None = None,
) -> dict:
    """``target`` is ``"module:function"``; ``function(spec) -> dict`` runs in a child process
    that uses ``threads`` torch threads on the cores this process is pinned to.  With
    ``cold`` the child's torch.compile cache folder is new and empty; ``cache_dir`` names
    the cache folder instead (shared by several children: the first one fills it)."""
    with tempfile.TemporaryDirectory(prefix="predcode-bench-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        env = dict(os.environ)
        if cache_dir is not None:
            env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir) / "inductor")
            env["TRITON_CACHE_DIR"] = str(Path(cache_dir) / "triton")
        elif cold:
            env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
            env["TRITON_CACHE_DIR"] = str(Path(tmp) / "triton")
        else:  # the user's usual cache (warm after a first run): quick smoke runs
            for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
                if env.get(key, "").startswith(tempfile.gettempdir() + "/predcode-bench-"):
                    env.pop(key)
        env["PREDCODE_BENCH_THREADS"] = str(threads)
        cmd = [sys.executable, "-m", "predcode.bench.worker", target, str(spec_file)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise WorkerError(f"{target} ran past {timeout} s") from exc
    return parse_result(proc, MARK, target)


def parse_result(proc: subprocess.CompletedProcess, mark: str, what: str) -> dict:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(mark):
            return json.loads(line[len(mark) :])
    tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
    raise WorkerError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def main(argv: list[str]) -> int:
    target, spec_file = argv
    module_name, func_name = target.split(":")
    spec = json.loads(Path(spec_file).read_text())
    import torch

    threads = int(os.environ.get("PREDCODE_BENCH_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    try:
        result = getattr(importlib.import_module(module_name), func_name)(spec)
    except Exception as exc:  # reported to the parent as a failed measurement
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))

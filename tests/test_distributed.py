"""Data-parallel training: 2 processes under torchrun equal one process on the same global
batches; checkpoints resume on any world size; an elastic restart after a killed worker
loses nothing.

Each launch starts real processes (``python -m torch.distributed.run``, gloo on CPU) with
tests/dist_worker.py, which drives the real ``predcode train`` command line on small
synthetic data (float64, so the comparison tolerance is tight).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from predcode.app import checkpoint, distributed
from predcode.app.config import TrainConfig
from predcode.app.distributed import World
from predcode.app.train import Trainer
from predcode.exceptions import OptionError

sys.path.insert(0, str(Path(__file__).parent))
from dist_worker import synthetic  # noqa: E402

WORKER = Path(__file__).parent / "dist_worker.py"
# 93 examples in batches of 16: 5 full batches and a ragged one of 13 (slices of 6 and 7)
BASE = dict(sizes=[12, 16, 16, 3], batch_size=16, epochs=2, steps=4, lr=1e-2, dtype="float64", checkpoint_every=2)


def config(run_dir, **kw) -> TrainConfig:
    return TrainConfig(**{**BASE, "run_dir": str(run_dir), **kw})


def flags(cfg: TrainConfig) -> list[str]:
    """``predcode train`` flags for a config (only the keys BASE and the tests set)."""
    out = ["--quiet"]
    for key, value in cfg.to_dict().items():
        if value == getattr(TrainConfig(), key):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{r.name}.{n}": p.detach().clone() for r in trainer.runs for n, p in r.graph.model.named_parameters()}


def single(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    trainer = Trainer(cfg, synthetic(), progress=False)
    trainer.fit()
    return weights(trainer)


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-11, msg=key)


def torchrun(
    jobs: list[dict], nproc: int = 2, restarts: int = 0, env: dict | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """Launch the worker under torchrun; on a timeout the agent and its workers are
    killed and their output shown."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={restarts}",
        "--monitor-interval=0.2",
        str(WORKER),
        json.dumps(jobs),
    ]
    # a lost peer fails a collective after 60 s instead of 10 minutes
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PREDCODE_DIST_TIMEOUT": "60", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)  # torchrun starts each worker in a session of its own
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s\n{out[-3000:]}\n{err[-8000:]}")
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-8000:]
    return done


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process descended from it (found through /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def rank_weights(run_dir: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / f"weights-rank{rank}.pt")


# -- in-process units ------------------------------------------------------------------
@pytest.mark.parametrize("n,size", [(16, 2), (13, 2), (13, 3), (5, 4), (1, 3)])
def test_slices_cover_the_batch_once(n, size):
    batch = torch.randperm(100)[:n]
    parts = [World(rank=r, size=size).shard(batch) for r in range(size)]
    real = [p for p, w in parts if w > 0]
    assert torch.equal(torch.cat(real), batch)
    assert sum(w for _, w in parts) == pytest.approx(1.0)
    assert max(len(p) for p in real) - min(len(p) for p in real) <= 1
    assert all(w == 0 and len(p) == 1 for p, w in parts if w == 0)  # empty slice: dummy


def test_single_world_is_a_no_op(monkeypatch):
    for var in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    world = distributed.from_env(None)
    assert world.size == 1 and world.is_main and not world.active
    batch = torch.arange(7)
    assert world.shard(batch)[0] is not None and world.shard(batch)[1] == 1.0
    with pytest.raises(OptionError, match="torchrun"):
        distributed.from_env(True)


# -- launches --------------------------------------------------------------------------
def test_two_processes_equal_one_and_resume_on_any_world_size(tmp_path):
    want = single(config(tmp_path / "ref", compare_bp=True))
    # B: a single-process run interrupted right after a checkpoint, finished by 2 processes
    part = Trainer(config(tmp_path / "B", compare_bp=True), synthetic(), progress=False)
    part.fit(stop_after_batches=8)  # epoch 2, batch 2: checkpointed
    ipc = config(tmp_path / "D", rule="ipc", epochs=1, solver="gd", state_momentum=0.0, state_lr=0.1)
    epc = config(tmp_path / "E", rule="epc", epochs=1)
    jobs = [
        # A: 2 processes from scratch (and TensorBoard with angles, which must not change training)
        {"kind": "cli", "args": flags(config(tmp_path / "A", compare_bp=True, tensorboard=True, angle_every=3))},
        {"kind": "cli", "args": flags(config(tmp_path / "B", compare_bp=True)) + ["--resume"]},
        # C: 2 processes interrupted after a checkpoint, to be finished by one process
        {"kind": "partial", "config": config(tmp_path / "C", compare_bp=True).to_dict(), "stop": 8},
        # D: incremental PC all-reduces inside relaxation
        {"kind": "cli", "args": flags(ipc)},
        # E: error-based PC
        {"kind": "cli", "args": flags(epc)},
    ]
    done = torchrun(jobs)
    assert done.stdout.count('"run_dir"') == 4  # only rank 0 prints the summary
    for run in "ABDE":
        assert_same(rank_weights(tmp_path / run, 1), rank_weights(tmp_path / run, 0))
    assert_same(rank_weights(tmp_path / "A", 0), want)
    assert_same(rank_weights(tmp_path / "B", 0), want)
    assert_same(rank_weights(tmp_path / "D", 0), single(ipc))
    assert_same(rank_weights(tmp_path / "E", 0), single(epc))
    # the 2-process checkpoint resumes in one process
    state = checkpoint.load(tmp_path / "C" / "checkpoint.safetensors")
    assert (state["epoch"], state["batch"]) == (1, 2)
    rest = Trainer(config(tmp_path / "C", compare_bp=True), synthetic(), progress=False)
    rest.resume()
    rest.fit()
    assert_same(weights(rest), want)
    # metrics of the global batches, written once (by rank 0)
    lines = [json.loads(l) for l in (tmp_path / "A" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(l) for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    for got, exp in zip(lines, ref):
        for run in ("il", "bp"):
            assert got[run]["train_acc"] == exp[run]["train_acc"]
            assert got[run]["loss"] == pytest.approx(exp[run]["loss"], rel=1e-9)
            assert got[run]["test_acc"] == exp[run]["test_acc"]
    assert len(list((tmp_path / "A" / "tb").glob("events.out.tfevents.*"))) == 1


def test_elastic_restart_after_a_killed_worker_loses_nothing(tmp_path):
    cfg = config(tmp_path / "E")
    # rank 1 is killed before batch 9 (epoch 2, batch 3); the last checkpoint is at batch 8
    done = torchrun([{"kind": "cli", "args": flags(cfg)}], restarts=1, env={"PREDCODE_TEST_KILL_AT": "9"})
    assert "resumed from" in done.stderr and "epoch 2, batch 2" in done.stderr
    assert_same(rank_weights(tmp_path / "E", 0), single(config(tmp_path / "ref")))
    assert_same(rank_weights(tmp_path / "E", 1), rank_weights(tmp_path / "E", 0))
    lines = [json.loads(l) for l in (tmp_path / "E" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]

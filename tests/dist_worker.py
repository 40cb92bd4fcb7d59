"""Worker for tests/test_distributed.py, started by torchrun (not a test module itself).

Usage: ``torchrun --nproc-per-node=2 tests/dist_worker.py JOBS_JSON`` where JOBS_JSON is a
list of jobs run in order in the same process group:

- ``{"kind": "cli", "args": [...]}``: ``predcode train ARGS`` through the real command
  line, with the synthetic data below instead of MNIST;
- ``{"kind": "partial", "config": {...}, "stop": N}``: a Trainer on this world that stops
  after N batches (a run interrupted right after a checkpoint).

After every fit each rank writes its weights to ``RUN_DIR/weights-rank{R}.pt``.
``PREDCODE_TEST_KILL_AT=K`` makes rank 1 kill itself (SIGKILL) just before its K-th
batch, on torchrun's first attempt only (``TORCHELASTIC_RESTART_COUNT`` = 0).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch


def synthetic(n_train=93, n_test=40, features=12, classes=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=gen, dtype=dtype) * 2

    def make(n):
        y = torch.randint(0, classes, (n,), generator=gen)
        return centers[y] + torch.randn(n, features, generator=gen, dtype=dtype), y

    return (*make(n_train), *make(n_test))


def main() -> int:
    torch.set_num_threads(1)
    from predcode.app import cli, distributed
    from predcode.app.config import TrainConfig
    from predcode.app.train import Trainer

    cli._load_data = lambda cfg: synthetic()
    original_fit, original_step = Trainer.fit, Trainer._train_step
    kill_at = int(os.environ.get("PREDCODE_TEST_KILL_AT", "0"))
    calls = {"n": 0}

    def fit(self, *a, **kw):
        history = original_fit(self, *a, **kw)
        weights = {f"{r.name}.{n}": p.detach().clone() for r in self.runs for n, p in r.graph.model.named_parameters()}
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        torch.save(weights, Path(self.run_dir) / f"weights-rank{self.world.rank}.pt")
        return history

    def train_step(self, *a, **kw):
        calls["n"] += 1
        if kill_at and calls["n"] == kill_at and self.world.rank == 1 and distributed.restart_count() == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_step(self, *a, **kw)

    Trainer.fit, Trainer._train_step = fit, train_step
    for job in json.loads(sys.argv[1]):
        if job["kind"] == "cli":
            code = cli.main(["train", *job["args"]])
            if code:
                return code
        else:
            world = distributed.from_env(True)
            trainer = Trainer(TrainConfig(**job["config"]), synthetic(), progress=False, world=world)
            trainer.fit(stop_after_batches=job["stop"])
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

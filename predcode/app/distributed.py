r"""Data-parallel training across processes and machines (``torch.distributed``).

Launch with ``torchrun`` (gloo on CPU, NCCL on GPU); :func:`from_env` finds torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) and joins the process group::

    torchrun --nproc-per-node=2 -m predcode train --resume --run-dir runs/dp

One step of every rank ``r`` of ``W``:

1. the global index batch :math:`B` (from :class:`~predcode.app.train.EpochBatches`, which
   depends only on ``(seed, epoch)``) is cut into ``W`` contiguous, balanced slices
   :math:`B_r` (:meth:`World.shard`); their union is :math:`B`;
2. the learning rule computes its batch-mean gradient :math:`g_r` on :math:`B_r` alone
   (relaxation is per sample, so the relaxed states are those of the global batch);
3. the gradients are all-reduced with weights :math:`w_r = |B_r| / |B|`:

   .. math:: g = \sum_r w_r\, g_r = \frac{1}{|B|}\sum_{b\in B} g_b,

   the global batch mean, also for a ragged last batch;
4. every rank steps its own copy of the optimizer with the same :math:`g`, so the
   weights stay identical on every rank without being broadcast.

The all-reduce happens inside the optimizer's ``step`` (:class:`SyncedOptimizer`), so
every rule works unchanged, including those that step the optimizer themselves:
incremental PC all-reduces after each of its ``T`` inference steps (then every rank
must take the same number of steps: a fixed step count, which is what
:class:`~predcode.app.config.TrainConfig` builds; a tolerance stop rule would let ranks
disagree and is refused). A stop rule with a tolerance in plain IL is allowed, but each
rank then stops on its own slice's criterion, so the run equals a single-process run
only for a fixed step count.

Batch norm couples the samples of a batch: in train mode each rank normalises by its own
slice's statistics (as ``DistributedDataParallel`` without ``SyncBatchNorm`` does), so a
multi-process run of a model with batch norm is not the single-process run of the global
batch, and each rank records running statistics from its slice; evaluation and
checkpoints use rank 0's (:mod:`predcode.running_stats`).

Only rank 0 writes checkpoints, metrics, TensorBoard events and progress bars. A
checkpoint holds no trace of the world size, and batch order depends only on
``(seed, epoch)``, so a checkpoint resumes on any number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import Tensor

from ..exceptions import OptionError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its environment variables are set)."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def restart_count() -> int:
    """How often torchrun's elastic agent has restarted the workers (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


@dataclass
class World:
    """This process's place among the training processes.

    ``World()`` is a single process: no communication, every method is a no-op or the
    identity, so the training loop has one code path.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, metrics and progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether gradients and metrics are exchanged (more than one process)."""
        return self.size > 1

    @property
    def comm_device(self) -> torch.device:
        """Where communication buffers live (NCCL needs CUDA tensors)."""
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def device(self, name: str) -> torch.device:
        """The device of this rank for the configured device name: ``cuda`` becomes
        ``cuda:LOCAL_RANK`` (one GPU per process); anything else is unchanged."""
        dev = torch.device(name)
        if dev.type == "cuda" and dev.index is None and self.backend is not None:
            return torch.device("cuda", self.local_rank)
        return dev

    # the batch ------------------------------------------------------------------------
    def bounds(self, n: int) -> tuple[int, int]:
        """``[start, stop)`` of this rank's contiguous slice of ``n`` items: slices differ in
        length by at most one and their union is ``range(n)``."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    def shard(self, batch: Tensor) -> tuple[Tensor, float]:
        """This rank's part of a global index batch and its weight ``|B_r| / |B|``.

        A rank whose slice would be empty (a last batch smaller than the world) gets the
        batch's first item with weight 0, so every rank still takes part in every
        collective, and contributes nothing.
        """
        n = batch.shape[0]
        if n == 0:
            raise OptionError("an empty batch cannot be sharded")
        start, stop = self.bounds(n)
        if stop == start:
            return batch[:1], 0.0
        return batch[start:stop], (stop - start) / n

    # collectives ----------------------------------------------------------------------
    def all_reduce_grads(self, params: Iterable[Tensor], weight: float) -> None:
        """Replace every ``.grad`` by ``sum_r weight_r * grad_r`` over the ranks (the global
        batch mean when each rank's gradient is its slice's mean): one all-reduce of one
        flat buffer. A parameter with no gradient on any rank keeps ``None``."""
        if not self.active:
            return
        params = [p for p in params]
        if not params:
            return
        device = self.comm_device
        dtype = torch.promote_types(params[0].dtype, torch.float32)
        pieces = []
        for p in params:
            g = p.grad
            pieces.append(
                (g.detach() * weight).reshape(-1).to(device, dtype)
                if g is not None
                else torch.zeros(p.numel(), device=device, dtype=dtype)
            )
        flags = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=device, dtype=dtype)
        buffer = torch.cat(pieces + [flags])
        torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        present = buffer[-len(params) :].tolist()
        for k, p in enumerate(params):
            chunk = buffer[offset : offset + p.numel()]
            offset += p.numel()
            if present[k] > 0:
                p.grad = chunk.view_as(p).to(p.device, p.dtype).clone()
            else:
                p.grad = None

    def weighted_sum(self, values: Sequence[float], weight: float) -> list[float]:
        """``sum_r weight_r * values_r`` over the ranks (weighted mean of per-slice means);
        the values themselves in a single process (``weight`` is then 1)."""
        if not self.active:
            return [float(v) * weight for v in values]
        t = torch.tensor([float(v) * weight for v in values], dtype=torch.float64, device=self.comm_device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t.double().cpu().tolist()

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def check_rule(self, rule) -> None:
        """Refuse a rule whose collectives could differ between ranks: incremental PC
        all-reduces once per inference step, so it needs a fixed step count."""
        stop = getattr(rule, "stop", None)
        if self.active and type(rule).__name__ == "IncrementalPC" and stop is not None and stop.needs_checks:
            raise OptionError(
                "distributed incremental PC needs a fixed step count (a stop "
                "rule without grad_tol/energy_rtol): it all-reduces after every "
                "inference step, so every rank must take the same steps"
            )

    def synced(
        self, optimizer: torch.optim.Optimizer, weight: float, before_step: Callable[[list[Tensor]], None] | None = None
    ) -> SyncedOptimizer:
        return SyncedOptimizer(optimizer, self, weight, before_step)


class SyncedOptimizer:
    """An optimizer whose ``step`` first all-reduces the gradients (weighted by this
    rank's share of the batch), then calls ``before_step(params)`` if given, then steps
    the wrapped optimizer. Everything else is the wrapped optimizer's: a learning rule's
    ``step(graph, x, y, optimizer)`` takes it unchanged."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        world: World,
        weight: float,
        before_step: Callable[[list[Tensor]], None] | None = None,
    ) -> None:
        self.optimizer, self.world, self.weight = optimizer, world, weight
        self.before_step = before_step
        self.steps = 0

    @property
    def params(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        if closure is not None:
            raise OptionError("a synced optimizer cannot step with a closure")
        params = self.params
        self.world.all_reduce_grads(params, self.weight)
        if self.before_step is not None:
            self.before_step(params)
        self.steps += 1
        return self.optimizer.step()

    def __getattr__(self, name):  # param_groups, state, state_dict, ...
        return getattr(self.optimizer, name)


SINGLE = World()


def init(device: str = "cpu", backend: str | None = None, timeout: timedelta = timedelta(minutes=10)) -> World:
    """Join the process group torchrun described in the environment (idempotent).

    ``backend`` defaults to NCCL for a CUDA ``device`` and gloo otherwise.
    """
    if not launched_by_torchrun():
        raise OptionError(
            "distributed training needs torchrun's environment "
            f"({', '.join(TORCHRUN_VARS)}); launch with "
            "`torchrun --nproc-per-node=N -m predcode train ...`"
        )
    import torch.distributed as dist

    if not dist.is_available():
        raise OptionError("this PyTorch build has no torch.distributed")
    is_cuda = torch.device(device).type == "cuda"
    backend = backend or ("nccl" if is_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if is_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun shares its rendezvous store with the workers and keeps it across
            # elastic restarts, so a restarted worker could read the address a dead worker
            # left there (pytorch#135712): keep each attempt's keys apart.
            size = int(os.environ["WORLD_SIZE"])
            base = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, is_master=False, timeout=timeout
            )
            store = dist.PrefixStore(f"predcode/attempt{restart_count()}", base)
            dist.init_process_group(
                backend=backend, store=store, rank=int(os.environ["RANK"]), world_size=size, timeout=timeout
            )
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, backend=dist.get_backend())


def from_env(mode: bool | None = None, device: str = "cpu") -> World:
    """The world for a training command.

    ``mode``: ``None`` (auto) joins the process group when launched by torchrun and is a
    single process otherwise; ``True`` requires torchrun (a clear error without it);
    ``False`` ignores torchrun's environment (every process trains alone).
    ``PREDCODE_DIST_TIMEOUT`` (seconds, default 600) bounds how long a collective waits
    for a missing peer before failing.
    """
    if mode is False or (mode is None and not launched_by_torchrun()):
        return SINGLE
    seconds = float(os.environ.get("PREDCODE_DIST_TIMEOUT", "600"))
    return init(device, timeout=timedelta(seconds=seconds))


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

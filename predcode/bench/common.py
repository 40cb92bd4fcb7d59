"""What the sub-benchmarks share: settings, threads and cores, data, batch order, the
methods being timed (predcode PC / BP / fixed prediction) and the pcx hyperparameters.

Batch order: epoch ``e`` visits ``numpy.random.default_rng(seed * 100_003 + e).permutation(n)``
in batches of ``batch``, the last partial batch dropped (compiled steps want one shape; pcx's
examples drop it too).  The pcx script computes the same order, so both libraries see the
same batches in the same order.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..graph import PCGraph
    from ..learning import StepStats
    from ..rules import LearningRule

# pcx's MLP benchmark (examples/PC_SE.py and the MNIST configs): PC-SE and BP-SE.
MLP_SIZES = [784, 128, 128, 128, 10]
MLP_HP = {
    "T": 8,
    "batch": 128,
    "h_lr": 0.010534787245955935,
    "h_momentum": 0.65,
    "w_lr": 0.0002968930522737348,
    "w_wd": 0.0003550241114984682,
    "bp_lr": 2.749e-4,
    "bp_wd": 5.121e-3,
}
# pcx's VGG-5 (examples/discriminative_experiments/VGG5/cifar10/VGG5_PCN_SE.yaml)
VGG_HP = {
    "T": 7,
    "batch": 128,
    "h_lr": 0.02348681827141059,
    "h_momentum": 0.3,
    "w_lr": 0.0002657691155688603,
    "w_wd": 0.0066559627972820395,
    "bp_lr": 0.0002657691155688603,
    "bp_wd": 0.0066559627972820395,
}

METHODS = {
    "user-loop": "predcode PC, the README loop as a script",
    "user-loop-cold": "the README loop, native kernels not yet built",
    "pc-default": "predcode PC (default: rule.step, no flags)",
    "pc": "predcode PC (compile=True)",
    "pc-eager": "predcode PC (PyTorch eager, PREDCODE_NATIVE=0)",
    "pc-warm": "predcode PC (compiled, warm cache)",
    "bp": "predcode BP (eager)",
    "bp-compiled": "predcode BP (compiled forward)",
    "fixed-prediction": "predcode fixed prediction (lr 1, n = depth)",
    "pcx": "pcx 0.6.3 PC (jit)",
    "pc-products": "matrix products of the PC step alone",
}


@dataclass
class BenchConfig:
    """Settings every sub-benchmark sees (from the command line)."""

    quick: bool = False
    out: Path = Path("results/bench")
    threads: int = 2
    cores: list[int] | None = None  # CPU cores to pin to (default: the first `threads`)
    pcx: bool = True
    compile: bool = True  # False: every predcode PC step eager (smoke tests)
    isolate: bool = True  # run each timed method in a fresh process
    cold_compile: bool = True  # each process compiles with an empty torch.compile cache
    seed: int = 0
    device: str = "cpu"
    overrides: dict[str, str] = field(default_factory=dict)  # "mlp.steps" -> "100"
    progress: bool = True

    def param(self, bench: str, key: str, default):
        """An override ``--set bench.key=value`` cast to ``default``'s type, else ``default``."""
        raw = self.overrides.get(f"{bench}.{key}")
        if raw is None:
            return default
        return cast_like(raw, default)

    def say(self, msg: str) -> None:
        if self.progress:
            print(msg, flush=True)


def cast_like(raw: str, default):
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, (list, tuple)):
        inner = default[0] if default else 0
        return [cast_like(v, inner) for v in raw.split(",") if v]
    return raw


# -- threads and cores ---------------------------------------------------------------------
def pin(threads: int, cores: list[int] | None = None) -> list[int]:
    """Use ``threads`` torch threads on ``cores`` (default: the first ``threads`` cores this
    process may use).  Child processes inherit the affinity, so pcx gets the same cores."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cores is None:
        cores = allowed[:threads] if allowed else None
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(threads)
    return list(cores or [])


def xla_flags(threads: int) -> str:
    if threads <= 1:
        return "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"


def fresh_inductor_cache() -> str:
    """Point torch.compile's on-disk caches at a new empty folder, so that a first step's
    time is a cold compile (not a cache hit from an earlier run on this machine)."""
    import atexit
    import shutil

    path = tempfile.mkdtemp(prefix="predcode-bench-inductor-")
    atexit.register(shutil.rmtree, path, True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(path, "triton"))
    return path


def raise_recompile_limits() -> None:
    """Sweeps compile many shapes of one function; past dynamo's recompile limit it would
    silently fall back to eager."""
    import torch._dynamo.config as dcfg

    for key in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, key):
            setattr(dcfg, key, 1024)
    for key in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dcfg, key):
            setattr(dcfg, key, 1 << 16)


# -- data ----------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(seed * 100_003 + epoch).permutation(n)


def epoch_batches(n: int, batch: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    order = epoch_order(n, seed, epoch)
    for b in range(n // batch):
        yield order[b * batch : (b + 1) * batch]


def load_mnist(train_size: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST in [-1, 1], flattened (``predcode.data.load``); ``train_size`` keeps the first
    images of the training split."""
    from .. import data

    train_x, train_y = data.load("mnist", "train", normalize="[-1,1]")
    test_x, test_y = data.load("mnist", "test", normalize="[-1,1]")
    if train_size:
        train_x, train_y = train_x[:train_size], train_y[:train_size]
    return train_x, train_y, test_x, test_y


def write_npy(folder: Path, arrays: dict[str, Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, t in arrays.items():
        np.save(folder / f"{name}.npy", t.numpy())
    return folder


def synthetic_images(
    n: int, shape: tuple[int, ...], classes: int = 10, seed: int = 0, device: str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Random images in [-1, 1] with random labels (timing only: the cost of a step does not
    depend on the pixel values)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g) * 2 - 1
    y = torch.randint(0, classes, (n,), generator=g)
    return x.to(device), y.to(device)


class BatchSource:
    """Batches ``(x, y)`` of a dataset in the shared epoch order, as index gathers."""

    def __init__(self, x: Tensor, y: Tensor, batch: int, seed: int) -> None:
        self.x, self.y, self.batch, self.seed = x, y, batch, seed
        self.n = x.shape[0]
        self.per_epoch = self.n // batch
        if self.per_epoch < 1:
            raise ValueError(f"{self.n} examples make no batch of {batch}")
        self._orders: dict[int, np.ndarray] = {}

    def indices(self, k: int) -> Tensor:
        """The ``k``-th batch of the endless sequence epoch 0, epoch 1, ..."""
        epoch, b = divmod(k, self.per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.n, self.seed, epoch)}
        idx = self._orders[epoch][b * self.batch : (b + 1) * self.batch]
        return torch.from_numpy(idx).to(self.x.device)

    def __call__(self, k: int) -> tuple[Tensor, Tensor]:
        idx = self.indices(k)
        return self.x[idx], self.y[idx]


# -- models and methods --------------------------------------------------------------------
def build_mlp(sizes, seed: int, device: str = "cpu") -> nn.Module:
    from ..models import mlp

    torch.manual_seed(seed)
    return mlp(list(sizes), act="gelu-tanh", output_energy="se").to(device)


def depth_of(model: nn.Module) -> int:
    """Number of value nodes above the input (= weight layers of a plain chain)."""
    from ..node import Node

    return sum(isinstance(m, Node) for m in model.modules())


def compile_forward(model: nn.Module) -> None:
    """Compile ``model``'s forward in place (``model.forward = torch.compile(model.forward)``).

    ``nn.Module.compile()`` compiles ``_call_impl``; on torch 2.13 that ran nothing compiled
    for these models (the first call took milliseconds and no graph was produced), so the
    bound ``forward`` is compiled instead.  Call after :class:`~predcode.PCGraph` has traced
    the model (tracing needs the plain forward)."""
    model.forward = torch.compile(model.forward)


@dataclass
class TrainingStep:
    """``step(x, y)``: one training step, ``rule.step`` on ``graph`` with ``optimizer``."""

    graph: PCGraph
    rule: LearningRule
    optimizer: torch.optim.Optimizer

    def __call__(self, x: Tensor, y: Tensor) -> StepStats:
        return self.rule.step(self.graph, x, y, self.optimizer)


def make_step(method: str, model: nn.Module, hp: dict, compile: bool = True) -> TrainingStep:
    """``step(x, y)``: one training step of ``method`` on ``model`` (public API only)."""
    from .. import SGD, Backprop, FixedPrediction, InferenceLearning, PCGraph
    from ..app.train import build_optimizer

    # the native kernels are on unless the PyTorch eager path itself is being timed
    os.environ["PREDCODE_NATIVE"] = "0" if method == "pc-eager" else "1"
    graph = PCGraph(model)
    rule: LearningRule
    if method in ("pc-default", "pc", "pc-eager", "pc-warm"):
        rule = InferenceLearning(
            SGD(hp["h_lr"], momentum=hp["h_momentum"]), hp["T"], compile=compile and method in ("pc", "pc-warm")
        )
        lr, wd = hp["w_lr"], hp["w_wd"]
    elif method in ("bp", "bp-compiled"):
        rule = Backprop()
        lr, wd = hp["bp_lr"], hp["bp_wd"]
        if method == "bp-compiled" and compile:
            compile_forward(model)
    elif method == "fixed-prediction":
        rule = FixedPrediction(lr=1.0, steps=depth_of(model))
        lr, wd = hp["bp_lr"], hp["bp_wd"]
    else:
        raise ValueError(f"unknown method '{method}'; choose one of {sorted(METHODS)}")
    optimizer = build_optimizer("adamw", model.parameters(), lr, wd)
    return TrainingStep(graph, rule, optimizer)


def effective_method(method: str, compile: bool) -> str:
    """The method that actually runs when compilation is switched off."""
    if not compile and method in ("pc", "pc-warm"):
        return "pc-default"
    if not compile and method == "bp-compiled":
        return "bp"
    return method


def device_sync(device: str) -> Callable[[], None]:
    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


_NPY_DIRS: dict[tuple, Path] = {}


def mnist_npy_dir(train_size: int | None = None) -> Path:
    """MNIST from predcode's loader written once per process as ``.npy`` files for the pcx
    scripts (``train_x``, ``train_y``, ``test_x``, ``test_y``); removed at exit."""
    key = ("mnist", train_size)
    if key not in _NPY_DIRS:
        import atexit
        import shutil

        folder = Path(tempfile.mkdtemp(prefix="predcode-bench-data-"))
        atexit.register(shutil.rmtree, folder, True)
        train_x, train_y, test_x, test_y = load_mnist(train_size)
        _NPY_DIRS[key] = write_npy(folder, {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y})
    return _NPY_DIRS[key]


def write_init(model: nn.Module, path: Path) -> Path:
    """The weights of a plain MLP as ``w0, b0, w1, b1, ...`` (``[out, in]`` layout) for pcx."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    arrays = {}
    for k, lin in enumerate(linears):
        arrays[f"w{k}"] = lin.weight.detach().cpu().numpy()
        arrays[f"b{k}"] = lin.bias.detach().cpu().numpy()
    # weights are numbers, never pickled objects (named, the flag is not matched by **arrays for mypy)
    np.savez(path, allow_pickle=False, **arrays)
    return path


@torch.no_grad()
def test_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> float:
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += int((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum())
    return correct / x.shape[0]

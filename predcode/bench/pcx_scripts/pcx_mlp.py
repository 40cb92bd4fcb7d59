"""pcx 0.6.3 MLP benchmark, run by the pcx virtual environment's python (not predcode's).

Written like pcx's own MLP example (liukidar/pcx ``examples/PC_SE.py``): a ``Vode`` after
every layer (``x = vode(act(linear(x)))``, the last one SE and frozen to the label),
``pxu.step(model, STATUS.INIT)`` forward initialisation, ``T`` inference steps of
``optim_h`` (optax SGD with momentum, re-initialised per batch), then one weight step with
``optim_w`` (optax AdamW), the whole ``train_on_batch`` under ``pxf.jit``.

Usage (predcode's bench builds the JSON spec)::

    python pcx_mlp.py '{"mode": "speed", "data": "/tmp/dir", ...}'

Modes: ``speed`` (first step, median step, one timed epoch), ``train`` (train and evaluate
the test accuracy every ``eval_every`` steps until ``target`` or ``max_epochs``; wall time
excludes evaluation and includes compilation).  The result is one JSON line on stdout,
prefixed by ``PCX_RESULT``.

Data come from predcode's loader as ``.npy`` files in ``data`` (``train_x.npy`` float32 in
[-1, 1], ``train_y.npy`` int64, ``test_x.npy``, ``test_y.npy``); the batch order of epoch
``e`` is ``numpy.random.default_rng(seed * 100_003 + e).permutation(n)`` with the last
partial batch dropped (``predcode.bench.common.epoch_order`` computes the same).  Initial
weights may be given as ``init`` (an ``.npz`` with ``w0, b0, w1, b1, ...`` in PyTorch's
``[out, in]`` layout, which is also equinox's).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pcx as px
import pcx.functional as pxf
import pcx.nn as pxnn
import pcx.predictive_coding as pxc
import pcx.utils as pxu


class LinearModel(pxc.EnergyModule):
    def __init__(self, sizes, act_fn: Callable[[jax.Array], jax.Array]) -> None:
        super().__init__()
        self.act_fn = px.static(act_fn)
        self.layers = [pxnn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self.vodes = [pxc.Vode() for _ in range(len(sizes) - 2)] + [pxc.Vode(pxc.se_energy)]
        self.vodes[-1].h.frozen = True

    def __call__(self, x, y, beta=1.0):
        for v, l in zip(self.vodes[:-1], self.layers[:-1]):
            x = v(self.act_fn(l(x)))
        x = self.vodes[-1](self.layers[-1](x))
        if y is not None:
            self.vodes[-1].set("h", self.vodes[-1].get("u") - beta * (self.vodes[-1].get("u") - y))
        return self.vodes[-1].get("u")


@pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0, 0), out_axes=0, axis_name="batch")
def forward(x, y, *, model: LinearModel, beta=1.0):
    return model(x, y, beta=beta)


@pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0,), out_axes=(None, 0), axis_name="batch")
def energy(x, *, model: LinearModel):
    y_ = model(x, None)
    return jax.lax.psum(model.energy(), "batch"), y_


@pxf.jit(static_argnums=0)
def train_on_batch(
    T: int, x: jax.Array, y: jax.Array, *, model: LinearModel, optim_w: pxu.Optim, optim_h: pxu.Optim, beta: float = 1.0
):
    model.train()

    # Init step (forward pass; the output vode is set to the label)
    with pxu.step(model, (pxc.STATUS.INIT, None), clear_params=pxc.VodeParam.Cache):
        forward(x, y, model=model, beta=beta)
    optim_h.init(pxu.M_hasnot(pxc.VodeParam, frozen=True)(model))

    # Inference steps
    for _ in range(T):
        with pxu.step(model, clear_params=pxc.VodeParam.Cache):
            _, g = pxf.value_and_grad(pxu.M_hasnot(pxc.VodeParam, frozen=True).to([False, True]), has_aux=True)(energy)(
                x, model=model
            )
        optim_h.step(model, g["model"], True)
    optim_h.clear()

    # Learning step
    with pxu.step(model, clear_params=pxc.VodeParam.Cache):
        _, g = pxf.value_and_grad(pxu.M(pxnn.LayerParam).to([False, True]), has_aux=True)(energy)(x, model=model)
    optim_w.step(model, g["model"], scale_by=1.0 / x.shape[0])


@pxf.jit()
def eval_on_batch(x: jax.Array, y: jax.Array, *, model: LinearModel):
    model.eval()
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        y_ = forward(x, None, model=model).argmax(axis=-1)
    return (y_ == y).mean(), y_


# -- harness (not part of the pcx example) -------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(seed * 100_003 + epoch).permutation(n)


def batches(n: int, batch: int, seed: int, epoch: int):
    """The index batches of one epoch."""
    order = epoch_order(n, seed, epoch)
    for b in range(n // batch):  # drop the last partial batch (jit wants one shape)
        yield order[b * batch : (b + 1) * batch]


def sync(model: LinearModel) -> None:
    jax.block_until_ready(model.layers[-1].nn.weight.get())


def build(spec: dict, steps_total: int | None):
    sizes = spec["sizes"]
    px.RKG.seed(spec.get("seed", 0))
    model = LinearModel(sizes, act_fn=jax.nn.gelu)  # jax.nn.gelu: tanh approximation by default
    if spec.get("init"):
        w = np.load(spec["init"])
        for k, layer in enumerate(model.layers):
            layer.nn.weight.set(jnp.asarray(w[f"w{k}"]))
            layer.nn.bias.set(jnp.asarray(w[f"b{k}"]))
    batch = spec["batch"]
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(jnp.zeros((batch, sizes[0])), None, model=model)
    lr = spec["w_lr"]
    if steps_total:  # the pcx warmup-cosine schedule
        lr = optax.warmup_cosine_decay_schedule(
            init_value=spec["w_lr"],
            peak_value=1.1 * spec["w_lr"],
            warmup_steps=int(0.1 * steps_total),
            decay_steps=steps_total,
            end_value=0.1 * spec["w_lr"],
            exponent=1.0,
        )
    optim_h = pxu.Optim(lambda: optax.chain(optax.sgd(spec["h_lr"], momentum=spec["h_momentum"])))
    optim_w = pxu.Optim(lambda: optax.adamw(lr, weight_decay=spec["w_wd"]), pxu.M(pxnn.LayerParam)(model))
    return model, optim_w, optim_h


def load_data(spec: dict):
    d = spec["data"]
    train_x = np.load(os.path.join(d, "train_x.npy"))
    train_y = np.load(os.path.join(d, "train_y.npy"))
    test_x = np.load(os.path.join(d, "test_x.npy"))
    test_y = np.load(os.path.join(d, "test_y.npy"))
    n = spec.get("train_size") or len(train_x)
    return train_x[:n], train_y[:n], test_x, test_y


def one_hot(y: np.ndarray, k: int) -> jax.Array:
    return jax.nn.one_hot(jnp.asarray(y), k)


def evaluate(model, test_x, test_y, batch: int) -> float:
    """Test accuracy over the whole test set, in batches of the training batch size (the
    vodes keep that shape; the last batch is padded and the padding ignored)."""
    n = len(test_x)
    pad = (-n) % batch
    xs = np.concatenate([test_x, np.zeros((pad, *test_x.shape[1:]), test_x.dtype)])
    ys = np.concatenate([test_y, np.zeros(pad, test_y.dtype)])
    preds = []
    for i in range(0, n + pad, batch):
        _, y_ = eval_on_batch(jnp.asarray(xs[i : i + batch]), jnp.asarray(ys[i : i + batch]), model=model)
        preds.append(np.asarray(y_))
    return float((np.concatenate(preds)[:n] == test_y).mean())


def run_speed(spec: dict) -> dict:
    """First step apart, ``warmup`` untimed steps, ``steps`` timed steps, then the
    ``epoch_batches`` batches of epoch 1 timed as one loop.  Batch ``k`` of the run is batch
    ``k % per_epoch`` of epoch ``k // per_epoch`` (the order predcode's side uses)."""
    train_x, train_y, test_x, test_y = load_data(spec)
    T, batch, k_out = spec["T"], spec["batch"], spec["sizes"][-1]
    seed, n = spec.get("seed", 0), len(train_x)
    per_epoch = n // batch
    start = time.perf_counter()
    model, optim_w, optim_h = build(spec, None)
    setup = time.perf_counter() - start
    orders: dict[int, np.ndarray] = {}  # the current epoch's batch order

    def step(k):
        epoch, b = divmod(k, per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = epoch_order(n, seed, epoch)
        idx = orders[epoch][b * batch : (b + 1) * batch]
        train_on_batch(
            T, jnp.asarray(train_x[idx]), one_hot(train_y[idx], k_out), model=model, optim_w=optim_w, optim_h=optim_h
        )

    t0 = time.perf_counter()
    step(0)
    sync(model)
    first = time.perf_counter() - t0
    k = 1
    for _ in range(spec["warmup"]):
        step(k)
        k += 1
    sync(model)
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step(k)
        sync(model)
        times.append(time.perf_counter() - t0)
        k += 1
    count = min(spec.get("epoch_batches") or per_epoch, per_epoch)
    first_of_epoch = per_epoch * max(1, -(-k // per_epoch))  # the next epoch's first batch
    t0 = time.perf_counter()
    for j in range(first_of_epoch, first_of_epoch + count):
        step(j)
    sync(model)
    epoch = time.perf_counter() - t0
    acc = evaluate(model, test_x, test_y, batch)
    return {
        "first_step_s": first,
        "setup_s": setup,
        "step_times_s": times,
        "epoch_s": epoch,
        "epoch_batches": count,
        "batches_per_epoch": per_epoch,
        "steps_trained": first_of_epoch + count,
        "test_acc": acc,
    }


def run_train(spec: dict) -> dict:
    train_x, train_y, test_x, test_y = load_data(spec)
    T, batch, k = spec["T"], spec["batch"], spec["sizes"][-1]
    seed, n = spec.get("seed", 0), len(train_x)
    per_epoch = n // batch
    max_epochs = spec["max_epochs"]
    eval_every = spec.get("eval_every") or per_epoch
    target = spec.get("target")
    horizon = spec.get("schedule_epochs")
    clock = 0.0  # training wall time (evaluation excluded)
    t0 = time.perf_counter()
    model, optim_w, optim_h = build(spec, horizon * per_epoch if horizon else None)
    clock += time.perf_counter() - t0
    first_step = after_first = None
    history, reached = [], None
    step_no = 0
    for epoch in range(max_epochs):
        for idx in batches(n, batch, seed, epoch):
            t0 = time.perf_counter()
            train_on_batch(
                T, jnp.asarray(train_x[idx]), one_hot(train_y[idx], k), model=model, optim_w=optim_w, optim_h=optim_h
            )
            step_no += 1
            evaluate_now = step_no % eval_every == 0 or step_no % per_epoch == 0
            if first_step is None or evaluate_now:
                sync(model)
            clock += time.perf_counter() - t0
            if first_step is None:
                first_step, after_first = time.perf_counter() - t0, clock
            if evaluate_now:
                t1 = time.perf_counter()
                acc = evaluate(model, test_x, test_y, batch)
                eval_s = time.perf_counter() - t1
                history.append(
                    {"step": step_no, "epoch": step_no / per_epoch, "train_s": clock, "test_acc": acc, "eval_s": eval_s}
                )
                if target is not None and acc >= target:
                    reached = history[-1]
                    break
        if reached is not None:
            break
    return {
        "first_step_s": first_step,
        "after_first_s": after_first,
        "history": history,
        "reached": reached,
        "batches_per_epoch": per_epoch,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    info = {
        "pcx": _version("pcx"),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "optax": optax.__version__,
        "equinox": _version("equinox"),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "affinity": sorted(os.sched_getaffinity(0)),
    }
    if spec["mode"] == "speed":
        result = run_speed(spec)
    elif spec["mode"] == "train":
        result = run_train(spec)
    elif spec["mode"] == "info":
        result = {}
    else:
        raise SystemExit(f"unknown mode {spec['mode']!r}")
    print("PCX_RESULT " + json.dumps({**info, **result}))


def _version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()

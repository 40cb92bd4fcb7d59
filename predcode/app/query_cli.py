"""``predcode query``: load a trained network, clamp what the user names, relax, read nodes.

A query is :func:`predcode.query.infer` driven from the command line::

    predcode query runs/latest --clamp output=label:3 --read input --steps 200
    predcode query results/generation/decoder.safetensors \\
        --clamp image=data:test:0-7 --mask image=top-half --read image --read latent

Nodes are named as in the graph (``PCGraph.names``); ``input`` and ``output`` also name
the first input and the single output, and ``index:K`` names the K-th slot (0-based, in
``PCGraph.names`` order); a bare number is a name, never a position.  Value specs
(``--clamp NODE=SPEC``, ``--init NODE=SPEC``):

* ``PATH.npy``: an array of the node's shape, with or without a leading batch dimension
  (rows of a square number of pixels may also be given as ``[N, H, W]``);
* ``label:K`` or ``label:K1,K2,...``: one-hot rows (one per label) of a 1-D node;
* ``data:SPLIT:I`` or ``data:SPLIT:I-J``: image ``I``, or images ``I`` to ``J`` *inclusive*
  (``data:test:0-7`` is eight images), of the dataset the network was trained on,
  normalised as in training;
* ``zeros``, ``const:V``, ``randn`` (seeded by ``--seed``).

Mask specs (``--mask NODE=SPEC``; True marks the *known*, clamped units; the rest of the
node relaxes): ``top-half``, ``bottom-half``, ``left-half``, ``right-half`` (of a square
image node), ``random:P`` (each unit known with probability P, 0 <= P <= 1), or a
boolean ``PATH.npy``.  ``--mask-input SPEC`` masks the first input.  An input that is not
clamped starts at zeros (or ``--init``).  ``--read all`` reads every node.  Every read node
is written to ``OUT/NODE.npy`` (and ``OUT/NODE.png`` when its rows are images), and
``OUT/query.json`` records the query and its energies; an ``OUT`` that holds an earlier
query is refused unless ``--overwrite``.  A warning goes to stderr when the energy rose
during the relaxation or a node written is nearly constant (e.g. a classifier run in
reverse without a prior).
"""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..checks import require_positive
from ..exceptions import DivergenceError, InputError, OptionError, PredcodeError
from ..finite import LARGE_INPUT
from ..graph import PCGraph
from ..images import save_grid
from ..inference import StopRule, Variables, make_solver
from ..query import Clamp, infer
from . import checkpoint

_DIGITS = re.compile(r"[0-9]+")

NETWORK_KEY = "network"
"""Checkpoint key of a self-describing network (see :func:`save_network`)."""


@dataclass
class Network:
    """A loaded network: its graph, each input's shape (without the batch) and where the
    data it was trained on come from (``dataset``, ``normalize``)."""

    graph: PCGraph
    input_shapes: list[tuple[int, ...]]
    dataset: str | None = None
    normalize: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def node_shapes(self) -> list[tuple[int, ...]]:
        """Every slot's shape without the batch dimension."""
        like = next(iter(self.graph.parameters()), torch.zeros(()))
        return self.graph.node_shapes(
            [torch.zeros((1, *s), dtype=like.dtype, device=like.device) for s in self.input_shapes]
        )

    @property
    def dtype(self) -> torch.dtype:
        p = next(iter(self.graph.parameters()), None)
        return torch.float32 if p is None else p.dtype


# -- saving and loading ------------------------------------------------------------------
def save_network(
    path: str | Path,
    model: nn.Module,
    factory: str,
    kwargs: dict[str, Any],
    input_shapes: Sequence[Sequence[int]],
    *,
    dataset: str | None = None,
    normalize: str | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with how to rebuild it: ``factory`` is a name in
    :mod:`predcode.models` or ``"predcode.module:function"``, called as ``factory(**kwargs)``."""
    spec = {
        "factory": factory,
        "kwargs": kwargs,
        "input_shapes": [list(s) for s in input_shapes],
        "dataset": dataset,
        "normalize": normalize,
        "info": json.dumps(info or {}),
    }
    return checkpoint.save(path, {NETWORK_KEY: spec, "model": model.state_dict()})


def _factory(name: str):
    if ":" not in name:
        from .. import models

        if not hasattr(models, name):
            raise OptionError(f"unknown model factory '{name}' in the checkpoint")
        return getattr(models, name)
    module, _, fn = name.partition(":")
    if not module.startswith("predcode."):
        raise OptionError(f"model factory '{name}' is outside predcode; refusing to import it")
    return getattr(importlib.import_module(module), fn)


def load_network(path: str | Path, run: str | None = None) -> Network:
    """Load a run directory (its ``checkpoint.safetensors``), a ``predcode train``
    checkpoint (the run ``run``, default the first one, i.e. not backprop's twin) or a
    checkpoint written by :func:`save_network`."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    state = checkpoint.load(path)
    if NETWORK_KEY in state:
        spec = state[NETWORK_KEY]
        model = _factory(spec["factory"])(**spec["kwargs"])
        model.load_state_dict(state["model"])
        return Network(
            PCGraph(model),
            [tuple(s) for s in spec["input_shapes"]],
            spec.get("dataset"),
            spec.get("normalize"),
            json.loads(spec.get("info") or "{}"),
        )
    if "config" not in state or "runs" not in state:
        raise PredcodeError(f"{path} holds neither a training run nor a saved network")
    from .config import TrainConfig
    from .registry import IMAGE_SHAPES
    from .train import DTYPES, build_model, flat_inputs

    cfg = TrainConfig.from_dict(state["config"])
    runs = state["runs"]
    name = run or next(iter(runs))
    if name not in runs:
        raise OptionError(f"the checkpoint has runs {sorted(runs)}, not '{name}'")
    model = build_model(cfg).to(DTYPES[cfg.dtype])
    model.load_state_dict(runs[name]["model"])
    if flat_inputs(cfg):
        shape: tuple[int, ...] = (cfg.sizes[0],)
    else:
        channels, side = IMAGE_SHAPES[cfg.dataset.lower().replace("_", "-")]
        shape = (channels, side, side)
    return Network(PCGraph(model), [shape], cfg.dataset, cfg.normalize, {"run": name})


# -- value and mask specs ----------------------------------------------------------------
def _split_assignment(item: str, flag: str) -> tuple[str, str]:
    node, sep, spec = item.partition("=")
    if not sep or not node or not spec:
        raise OptionError(f"{flag} takes NODE=SPEC (e.g. {flag} output=label:3), got '{item}'")
    return node, spec


def _load_npy(path: Path, what: str, *, boolean: bool = False) -> Tensor:
    """A numeric (or boolean) array from an ``.npy`` file, as a tensor; anything else
    (a damaged file, pickled objects, strings, NaN) is an :class:`InputError`."""
    if not path.is_file():
        raise InputError(f"{what}: no file {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"{what}: {path} is not a readable numeric .npy file ({exc}); save it "
            "with numpy.save from a float or bool array"
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in ("b", "i", "u", "f"):
        kind = getattr(array, "dtype", type(array).__name__)
        raise InputError(
            f"{what}: {path} holds a {kind} array; give floats"
            f"{' or booleans' if boolean else ''} (numpy.save of a numeric array)"
        )
    tensor = torch.as_tensor(array)
    if boolean:
        return tensor.bool()
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise InputError(
            f"{what}: {path} contains {bad} NaN or infinite value(s); the values clamped or started from must be finite"
        )
    return tensor


def _fit_shape(a: Tensor, shape: tuple[int, ...], what: str) -> Tensor:
    """``a`` as ``[B, *shape]``: with or without the batch dim, or rows given as images."""
    if tuple(a.shape) == shape:
        return a.unsqueeze(0)
    if tuple(a.shape[1:]) == shape:
        return a
    if a.dim() >= 2 and math.prod(a.shape[1:]) == math.prod(shape):
        return a.reshape(a.shape[0], *shape)
    raise InputError(
        f"{what} has shape {tuple(a.shape)}; the node has shape {shape} (or [batch, {', '.join(map(str, shape))}])"
    )


def parse_value(spec: str, shape: tuple[int, ...], net: Network, *, seed: int = 0, what: str = "value") -> Tensor:
    """A value for a node of ``shape`` from its spec (see the module docstring); the result
    has a batch dimension (1 for specs that define none)."""
    dtype = net.dtype
    if spec.endswith(".npy"):
        p = Path(spec)
        value = _load_npy(p, what).to(dtype)
        if not bool(torch.isfinite(value).all()):
            raise InputError(
                f"{what}: {p} holds values beyond the range of {dtype}, the network's precision; scale them"
            )
        return _fit_shape(value, shape, f"{what} ({p})")
    kind, _, arg = spec.partition(":")
    if kind == "label":
        if len(shape) != 1:
            raise InputError(f"{what}: label:K needs a 1-D node, this one has shape {shape}")
        try:
            labels = [int(k) for k in arg.split(",")]
        except ValueError:
            raise InputError(f"{what}: label:K takes integers, got '{arg}'") from None
        bad = [k for k in labels if not 0 <= k < shape[0]]
        if bad:
            raise InputError(f"{what}: labels {bad} outside [0, {shape[0] - 1}]")
        return torch.nn.functional.one_hot(torch.tensor(labels), shape[0]).to(dtype)
    if kind == "data":
        return _data_value(arg, shape, net, what)
    if kind in ("zeros", "randn") and (arg or ":" in spec):
        raise InputError(f"{what}: '{kind}' takes no argument, got '{spec}'")
    if kind == "zeros":
        return torch.zeros((1, *shape), dtype=dtype)
    if kind == "const":
        try:
            number = float(arg)
        except ValueError:
            raise InputError(f"{what}: const:V takes a number, got '{arg}'") from None
        if not math.isfinite(number) or abs(number) > torch.finfo(dtype).max:
            raise InputError(f"{what}: const:V takes a finite number that fits {dtype}, got '{arg}'")
        return torch.full((1, *shape), number, dtype=dtype)
    if kind == "randn":
        g = torch.Generator().manual_seed(seed)
        return torch.randn((1, *shape), generator=g, dtype=torch.float64).to(dtype)
    raise InputError(
        f"{what}: unknown value spec '{spec}'; use PATH.npy, label:K, data:SPLIT:I-J, zeros, const:V or randn"
    )


def _data_value(arg: str, shape: tuple[int, ...], net: Network, what: str) -> Tensor:
    from .. import data

    if not net.dataset:
        raise InputError(f"{what}: the checkpoint names no dataset; give the values as .npy")
    split, _, rng = arg.partition(":")
    if split not in ("train", "test"):
        raise InputError(f"{what}: data:SPLIT:I-J takes the split 'train' or 'test', got '{split}'")
    first, last = inclusive_range(rng, f"{what}: data:SPLIT:I or data:SPLIT:I-J")
    images, _ = data.load(net.dataset, split, normalize=net.normalize, flatten=len(shape) == 1)
    if last >= images.shape[0]:
        raise InputError(
            f"{what}: rows {first} to {last} outside the {images.shape[0]} of "
            f"{net.dataset} {split} (0 to {images.shape[0] - 1})"
        )
    return _fit_shape(images[first : last + 1].to(net.dtype), shape, what)


def inclusive_range(text: str, what: str) -> tuple[int, int]:
    """``I`` or ``I-J`` (both ends included, ``0 <= I <= J``) as ``(I, J)``."""
    lo, sep, hi = text.partition("-")
    if not (_DIGITS.fullmatch(lo) and (_DIGITS.fullmatch(hi) if sep else True)):
        raise InputError(f"{what} takes row numbers I or I-J (0-based, J included), got '{text}'")
    first, last = int(lo), int(hi) if sep else int(lo)
    if last < first:
        raise InputError(f"{what}: the range {first}-{last} is empty; give I-J with I <= J")
    return first, last


def _image_hw(shape: tuple[int, ...], what: str) -> tuple[int, int]:
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        return math.isqrt(shape[0]), math.isqrt(shape[0])
    if len(shape) == 3:
        return shape[1], shape[2]
    raise InputError(f"{what}: half masks need a square image node (D = H*W, or [C, H, W]), this one has shape {shape}")


HALVES = ("top-half", "bottom-half", "left-half", "right-half")


def parse_mask(spec: str, shape: tuple[int, ...], *, seed: int = 0, what: str = "mask") -> Tensor:
    """A boolean mask (True = known, clamped) of ``shape`` (or ``[B, *shape]`` from a file)."""
    if spec.endswith(".npy"):
        p = Path(spec)
        return _fit_shape(_load_npy(p, what, boolean=True), shape, f"{what} ({p})")
    if spec in HALVES:
        h, w = _image_hw(shape, what)
        rows = torch.arange(h).view(h, 1).expand(h, w)
        cols = torch.arange(w).view(1, w).expand(h, w)
        known = {
            "top-half": rows < h // 2,
            "bottom-half": rows >= h // 2,
            "left-half": cols < w // 2,
            "right-half": cols >= w // 2,
        }[spec]
        known = known.reshape(-1) if len(shape) == 1 else known.expand(shape[0], h, w)
        return known.reshape(1, *shape)
    kind, _, arg = spec.partition(":")
    if kind == "random":
        try:
            prob = float(arg)
        except ValueError:
            raise InputError(f"{what}: random:P takes a probability, got '{arg}'") from None
        if not 0.0 <= prob <= 1.0:
            raise InputError(f"{what}: random:P takes a probability between 0 and 1, got '{arg}'")
        g = torch.Generator().manual_seed(seed)
        return torch.rand((1, *shape), generator=g) < prob
    raise InputError(f"{what}: unknown mask spec '{spec}'; use {', '.join(HALVES)}, random:P or a boolean PATH.npy")


# -- the query -----------------------------------------------------------------------
def _batch_of(values: dict[Any, Tensor], masks: dict[Any, Tensor], batch: int | None) -> int:
    sizes = {int(v.shape[0]) for v in list(values.values()) + list(masks.values()) if v.shape[0] != 1}
    if batch:
        sizes.add(batch)
    if len(sizes) > 1:
        raise InputError(
            f"the clamps define different batch sizes {sorted(sizes)}; give one "
            "row or the same number of rows everywhere"
        )
    return sizes.pop() if sizes else 1


def _expand(t: Tensor, batch: int) -> Tensor:
    return t.expand(batch, *t.shape[1:]).clone() if t.shape[0] == 1 else t


def node_index(graph: PCGraph, name: str) -> int:
    """The slot a query names: a node name, ``input`` / ``output`` (the first input, the
    single output) or ``index:K`` (the K-th slot, 0-based).  A bare number is a name only."""
    if name.startswith("index:"):
        k = name[len("index:") :]
        if not _DIGITS.fullmatch(k) or int(k) >= len(graph.slots):
            raise OptionError(f"'{name}': index:K takes a slot number 0 to {len(graph.slots) - 1}")
        return int(k)
    if name not in graph.names:
        if name == "input":
            return graph.inputs[0]
        if name == "output":
            if len(graph.outputs) != 1:
                raise OptionError(
                    f"the network has {len(graph.outputs)} outputs; name one of "
                    f"{[graph.names[o] for o in graph.outputs]}"
                )
            return graph.output
        hint = f" (for the slot at position {name} write index:{name})" if _DIGITS.fullmatch(name) else ""
        raise OptionError(
            f"no node named '{name}'{hint}; the nodes are {list(graph.names)}, 'input', 'output' or index:K"
        )
    return graph.index(name)


NEARLY_CONSTANT = 0.05
"""A node written whose values spread less than this fraction of the data's range (an
input of a network trained on a dataset) or of their own largest size (any other node) is
reported as nearly constant."""


def run_query(
    net: Network,
    *,
    clamps: Sequence[str] = (),
    masks: Sequence[str] = (),
    inits: Sequence[str] = (),
    reads: Sequence[str] = (),
    steps: int = 100,
    solver: str = "gd",
    state_lr: float = 0.1,
    momentum: float = 0.0,
    batch: int | None = None,
    seed: int = 0,
    variables: str = "states",
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Parse the specs (every name and value is checked before anything relaxes), run
    :func:`~predcode.query.infer` and return ``{"values": {node: tensor}, "predictions":
    {...}, "relaxation": ..., "summary": {...}, "warnings": [...]}``."""
    graph = net.graph
    if batch is not None and batch < 1:
        raise OptionError(f"--batch must be >= 1, got {batch}")
    if steps < 0:
        raise OptionError(f"--steps must be >= 0, got {steps}")
    require_positive(state_lr, "--state-lr")
    shapes = net.node_shapes()
    if "all" in reads:
        if len(reads) > 1:
            raise OptionError("--read all reads every node; give it alone")
        read = [s.index for s in graph.slots]
    else:
        read = [node_index(graph, r) for r in reads] if reads else list(graph.outputs)
    solver_obj = make_solver(solver, state_lr, momentum)
    relax_as = Variables(variables)

    clamp_vals = {}
    for item in clamps:
        name, spec = _split_assignment(item, "--clamp")
        i = node_index(graph, name)
        if i in clamp_vals:
            raise OptionError(f"--clamp {name} given twice; clamp each node once")
        clamp_vals[i] = parse_value(spec, shapes[i], net, seed=seed, what=f"--clamp {name}")
    mask_vals = {}
    for item in masks:
        name, spec = _split_assignment(item, "--mask")
        i = node_index(graph, name)
        if i not in clamp_vals:
            raise OptionError(f"--mask {name} needs the known values too: --clamp {name}=...")
        mask_vals[i] = parse_mask(spec, shapes[i], seed=seed, what=f"--mask {name}")
    init_vals = {}
    for item in inits:
        name, spec = _split_assignment(item, "--init")
        i = node_index(graph, name)
        if i in clamp_vals and i not in mask_vals:
            raise OptionError(f"--init {name}: the node is clamped; --init sets where a free node starts")
        init_vals[i] = parse_value(spec, shapes[i], net, seed=seed + 1, what=f"--init {name}")
    b = _batch_of({**clamp_vals, **init_vals}, mask_vals, batch)
    dev = torch.device(device)
    # keyed by node index; typed with infer's keys (names or indices)
    clamp: dict[str | int, Tensor | Clamp] = {}
    for i, v in clamp_vals.items():
        v = _expand(v, b).to(dev)
        clamp[i] = Clamp(v, _expand(mask_vals[i], b).to(dev)) if i in mask_vals else v
    init: dict[str | int, Tensor] = {i: _expand(v, b).to(dev) for i, v in init_vals.items()}
    for i in graph.inputs:  # a free input (or an input's free units) starts at zeros
        if i not in init and (i not in clamp or i in mask_vals):
            init[i] = torch.zeros((b, *shapes[i]), dtype=net.dtype, device=dev)
    try:
        relaxed = infer(graph, clamp, init=init, solver=solver_obj, stop=StopRule(max_steps=steps), variables=relax_as)
    except DivergenceError as exc:
        if exc.step != 0:
            raise exc.with_cause(exc.cause + " (--state-lr, --steps)") from None
        sizes = {graph.names[i]: float(v.abs().max()) for i, v in {**clamp_vals, **init_vals}.items()}
        name, size = max(sizes.items(), key=lambda kv: kv[1], default=("", 0.0))
        if size >= LARGE_INPUT:
            raise exc.with_cause(
                f"the value given for '{name}' reaches {size:.3g}, too large for its energy in {net.dtype}: scale it"
            ) from None
        raise
    values = {graph.names[i]: relaxed.values[i] for i in read}
    predictions = {graph.names[i]: relaxed.predictions[i] for i in read if relaxed.predictions[i] is not None}
    energy = relaxed.trace.energy
    summary = {
        "batch": b,
        "steps": relaxed.trace.steps,
        "relax": variables,
        "solver": solver,
        "state_lr": state_lr,
        "energy_initial": float(energy[0]),
        "energy_final": float(energy[-1]),
        "clamped": [graph.names[i] + (" (masked)" if i in mask_vals else "") for i in clamp_vals],
        "read": {n: list(v.shape) for n, v in values.items()},
    }
    outputs = {graph.names[i] for i in graph.outputs}  # class scores: their argmax per row
    argmax = {
        n: v.argmax(-1).tolist() for n, v in values.items() if n in outputs and v.dim() == 2 and v.shape[1] <= 100
    }
    if argmax:
        summary["argmax"] = argmax
    warnings = query_warnings(
        values,
        energy,
        {graph.names[i] for i in clamp_vals if i not in mask_vals},
        {graph.names[i] for i in graph.inputs},
        net,
    )
    if warnings:
        summary["warnings"] = warnings
    return {
        "values": values,
        "predictions": predictions,
        "relaxation": relaxed,
        "summary": summary,
        "warnings": warnings,
    }


def query_warnings(
    values: dict[str, Tensor], energy: Tensor, clamped: set[str], inputs: set[str], net: Network
) -> list[str]:
    """What a user should know about a query's result: the energy rose during the
    relaxation (the inference rate is too high, or the steps too few to settle), or a node
    written (not clamped) is nearly constant (the relaxation barely moved it: e.g. a
    classifier run in reverse without a prior gives a flat grey image)."""
    out = []
    e0, e1 = float(energy[0]), float(energy[-1])
    if e1 > e0 * (1 + 1e-6) + 1e-12:
        out.append(
            f"the energy rose during the relaxation ({e0:.4g} -> {e1:.4g}): lower --state-lr or check the clamps"
        )
    data_range = 2.0 if net.normalize == "[-1,1]" else 1.0
    for name, v in values.items():
        size = float(v.detach().abs().max()) if v.numel() else 0.0
        if name in inputs and net.dataset and size > 100 * data_range:
            out.append(
                f"node '{name}' reaches {size:.3g}, far outside the range of the data the "
                f"network was trained on ({net.normalize}): results are extrapolation"
            )
        if name in clamped or v.numel() < 2:
            continue
        v = v.detach().double()
        spread = float(v.max() - v.min())
        scale = max(float(v.abs().max()), data_range if name in inputs and net.dataset else 0.0, 1e-12)
        if spread <= NEARLY_CONSTANT * scale:
            out.append(
                f"node '{name}' is nearly constant (values {float(v.min()):.3g} to "
                f"{float(v.max()):.3g}): the relaxation barely moved it (more --steps, a "
                "larger --state-lr, or a prior on it)"
            )
    return out


IMAGE_SIZES = {"mnist": 784, "fashion-mnist": 784, "cifar10": 3072}
"""Pixels per image of the image datasets: a node of that size is drawn as images."""


def _is_image(shape: Sequence[int], dataset: str | None = None) -> bool:
    """Whether a node of this shape (without the batch) holds images of the network's data:
    ``[C, H, W]`` with 1 or 3 channels, or flat with the data's pixel count (without a
    known dataset, any square count of at least 16). Anything else (latent codes, hidden
    states, class scores) is drawn as a heat map."""
    if len(shape) == 3:
        return shape[0] in (1, 3)
    if len(shape) != 1:
        return False
    if dataset in IMAGE_SIZES:
        return shape[0] == IMAGE_SIZES[dataset]
    return shape[0] >= 16 and math.isqrt(shape[0]) ** 2 == shape[0]


QUERY_FILE = "query.json"


def check_out_dir(out: str | Path, overwrite: bool = False) -> Path:
    """The output folder of a query: a file there is an error; a folder holding an earlier
    query (``query.json``) is refused unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out} is a file; give a folder for the query's outputs")
    if (out / QUERY_FILE).exists() and not overwrite:
        raise OptionError(f"--out {out} holds an earlier query; give another --out or --overwrite to replace it")
    return out


def write_outputs(result: dict[str, Any], out: str | Path, net: Network) -> list[str]:
    """``NODE.npy`` (and ``NODE.png`` for images) per read node, and ``query.json``."""
    from ..atomic import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    low, high = (-1.0, 1.0) if net.normalize == "[-1,1]" else (0.0, 1.0)
    for name, v in result["values"].items():
        stem = name.replace(":", "_").replace("/", "_")
        np.save(out / f"{stem}.npy", v.detach().cpu().numpy())
        written.append(f"{stem}.npy")
        if _is_image(tuple(v.shape[1:]), net.dataset):
            save_grid(out / f"{stem}.png", v.detach().cpu(), low=low, high=high)
            written.append(f"{stem}.png")
        elif v.dim() >= 2 and v[0].numel() > 1:  # latent codes, hidden states: a heat map
            from ..plotting import value_map

            value_map(
                out / f"{stem}.png",
                v.detach().cpu(),
                xlabel=f"unit of node '{name}'",
                ylabel="example",
                title=f"node '{name}'",
            )
            written.append(f"{stem}.png")
    summary = dict(result["summary"], files=written)
    write_json(out / QUERY_FILE, summary)
    return written


def main(args) -> int:
    """Entry point of ``predcode query`` (arguments parsed by :mod:`predcode.app.cli`)."""
    out = check_out_dir(args.out, args.overwrite)
    net = load_network(args.checkpoint, args.run)
    net.graph.model.to(args.device)
    masks = list(args.mask)
    if args.mask_input:
        masks.append(f"index:{net.graph.inputs[0]}={args.mask_input}")
    result = run_query(
        net,
        clamps=args.clamp,
        masks=masks,
        inits=args.init,
        reads=args.read,
        steps=args.steps,
        solver=args.solver,
        state_lr=args.state_lr,
        momentum=args.momentum,
        batch=args.batch,
        seed=args.seed,
        variables=args.relax,
        device=args.device,
    )
    write_outputs(result, out, net)
    for warning in result["warnings"]:
        print(f"predcode: warning: {warning}", file=sys.stderr)
    print(json.dumps({"out": str(out), **result["summary"]}))
    return 0


def add_arguments(parser) -> None:
    """The flags of ``predcode query`` (--threads, --device and --debug come from the CLI)."""
    from ..inference import SOLVERS
    from .arguments import nonnegative_int, positive_float, positive_int, seed

    parser.add_argument("checkpoint", type=Path, help="run folder or .safetensors checkpoint")
    parser.add_argument("--run", help="which run of a training checkpoint (default: the first, not backprop's twin)")
    parser.add_argument(
        "--clamp",
        action="append",
        default=[],
        metavar="NODE=SPEC",
        help="clamp a node to PATH.npy, label:K[,K...], data:SPLIT:I[-J] (rows "
        "I to J, both included), zeros, const:V or randn (repeatable)",
    )
    parser.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="NODE=SPEC",
        help="clamp only these units of a clamped node: top-half, bottom-half, "
        "left-half, right-half, random:P (0 <= P <= 1), PATH.npy (True = "
        "known)",
    )
    parser.add_argument("--mask-input", metavar="SPEC", help="--mask for the first input")
    parser.add_argument(
        "--init",
        action="append",
        default=[],
        metavar="NODE=SPEC",
        help="start a free node here (free inputs start at zeros)",
    )
    parser.add_argument(
        "--read",
        action="append",
        default=[],
        metavar="NODE",
        help="node to write: a name, input, output, index:K, or all (repeatable; default: the outputs)",
    )
    parser.add_argument("--steps", type=nonnegative_int, default=100, help="inference steps (default: 100)")
    parser.add_argument(
        "--relax",
        choices=["states", "errors"],
        default="states",
        help="what inference moves: the states (sPC) or the errors (ePC: the "
        "same equilibria, far fewer steps on deep networks) (default: states)",
    )
    parser.add_argument("--solver", choices=sorted(SOLVERS), default="gd", help="inference solver (default: gd)")
    parser.add_argument(
        "--state-lr", type=positive_float, default=0.1, help="inference rate / step size (default: 0.1)"
    )
    parser.add_argument("--momentum", type=float, default=0.0, help="with --solver sgd: momentum (default: 0)")
    parser.add_argument("--batch", type=positive_int, help="rows, when no clamp defines them (default: 1)")
    parser.add_argument("--seed", type=seed, default=0, help="for randn and random:P (default: 0)")
    parser.add_argument("--out", type=Path, default=Path("query_out"), help="output folder (default: query_out)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier query in --out")

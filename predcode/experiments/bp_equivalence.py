r"""``predcode repro bp-equivalence``: how close PC's weight updates come to backprop's, per
layer, against inference steps (Rosenbaum 2022; ANCHORS claims 2-3).

Protocol: the MNIST CNN of Rosenbaum (2022) (:func:`predcode.models.rosenbaum_cnn`, five
blocks, a node after each, cross-entropy output), float64, one batch of MNIST training
images at the initial weights.  For every inference step ``t`` and every layer ``l`` the
relative error

.. math:: r_l(t) = \lVert \Delta\theta_l(t) - g_l \rVert \,/\, \lVert g_l \rVert,

where :math:`g_l` is autograd's gradient of the mean cross-entropy and
:math:`\Delta\theta_l(t) = -\mathrm{mean}_b\, e_l(t)^\top \partial\mu_l/\partial\theta_l` the
PC update if relaxation stopped after ``t`` steps, for

* strict PC (inference learning: the output clamped to the target, hidden nodes descend
  the energy with predictions recomputed; the update's Jacobian is taken at the current
  values) and
* fixed prediction (predictions and Jacobians held at the feed-forward pass),

each at inference rates 0.1 and 1.

The output error's scale matters for strict PC only.  Rosenbaum's code feeds the gradient
of the *batch-mean* loss, :math:`\varepsilon_L = \partial L/\partial \hat y / B`, into the
relaxation; predcode's states descend the energy summed over the batch, so each sample's
error is :math:`B` times larger and strict PC moves much further from the feed-forward
pass.  Both are run: ``strict`` weights the output energy by :math:`\beta = 1/B`
(Rosenbaum's scale; the update is divided by :math:`\beta` before comparing) and
``strict_per_sample`` uses :math:`\beta = 1` (predcode's inference learning as it trains).
Writes ``bp_equivalence.json`` and ``.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from pathlib import Path

import torch
from torch import Tensor

from ..energy import Energy
from ..exceptions import DivergenceError
from ..graph import PCGraph, prediction_of
from ..inference import GradientDescent, StopRule, relax
from ..learning import accumulate_weight_gradients
from ..models import rosenbaum_cnn
from ..rules import FixedPrediction
from . import experiment

RATES = (0.1, 1.0)


class ScaledEnergy(Energy):
    """``beta`` times another energy (same mode): a weakly clamped output."""

    def __init__(self, energy: Energy, beta: float) -> None:
        super().__init__()
        self.inner, self.beta = energy, beta

    def forward(self, value: Tensor, prediction: Tensor) -> Tensor:
        return self.beta * self.inner(value, prediction)

    def error(self, value: Tensor, prediction: Tensor) -> Tensor:
        return self.beta * self.inner.error(value, prediction)

    def mode(self, prediction: Tensor) -> Tensor:
        return self.inner.mode(prediction)


def with_output_scale(graph: PCGraph, beta: float) -> PCGraph:
    """The same graph (shared model) with the output energy multiplied by ``beta``."""
    slots = [dataclasses.replace(s, children=list(s.children)) for s in graph.slots]
    out = graph.output
    slots[out] = dataclasses.replace(slots[out], energy=ScaledEnergy(slots[out].node_energy, beta))
    return PCGraph.from_slots(graph.model, slots, graph.outputs)


def layer_groups(graph: PCGraph) -> list[tuple[str, list[torch.nn.Parameter]]]:
    """``(node name, parameters of its predictor)`` for every node with weights."""
    groups = []
    for slot in graph.slots:
        if slot.predictor is not None:  # not an input
            params = list(slot.predictor.parameters())
            if params:
                groups.append((slot.name, params))
    return groups


def relative_errors(got: list[list[Tensor]], want: list[list[Tensor]]) -> list[float]:
    """Per layer ``||a - b|| / ||b||`` over the layer's parameters together."""
    out = []
    for a, b in zip(got, want):
        diff = math.sqrt(sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b)))
        norm = math.sqrt(sum(float((y**2).sum()) for y in b))
        out.append(diff / norm if math.isfinite(diff) else float("nan"))
    return out


def backprop_grads(graph: PCGraph, groups, x: Tensor, labels: Tensor) -> list[list[Tensor]]:
    logits = graph.model(x)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    flat = torch.autograd.grad(loss, [p for _, ps in groups for p in ps])
    it = iter(flat)
    return [[next(it) for _ in ps] for _, ps in groups]


def strict_profile(
    graph: PCGraph, groups, x: Tensor, target: Tensor, want, lr: float, steps: int, beta: float = 1.0
) -> dict:
    """Relative error per layer after each strict-PC step (step 0 = feed-forward state),
    with the output energy weighted by ``beta`` (updates divided by ``beta``)."""
    graph = with_output_scale(graph, beta) if beta != 1.0 else graph
    values = graph.feedforward([x])
    out = graph.output
    values[out] = target
    free = graph.free_slots(out)
    rows: list[list[float]] = []

    def record(step: int, current: list[Tensor]) -> None:
        graph.model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            accumulate_weight_gradients(graph, current)
        rows.append(relative_errors([[p.grad / beta for p in ps] for _, ps in groups], want))

    record(-1, values)
    diverged = None
    try:
        relax(graph, values, free, GradientDescent(lr), StopRule(max_steps=steps), on_step=record)
    except DivergenceError as exc:
        diverged = exc.step
    bad = [t for t, row in enumerate(rows) if not all(math.isfinite(r) and r < 1e3 for r in row)]
    if diverged is None and bad:
        diverged = bad[0]
    return {"rel_error": rows, "diverged_at_step": diverged}


def fixed_prediction_profile(graph: PCGraph, groups, x: Tensor, target: Tensor, want, lr: float, steps: int) -> dict:
    rule = FixedPrediction(lr=lr, steps=steps)
    state = rule.forward_state(graph, x, target)
    owners = [i for i, mu in enumerate(state.mus) if mu is not None and mu.requires_grad]
    params = [p for _, ps in groups for p in ps]
    rows: list[list[float]] = []

    def record(step: int, errors: dict[int, Tensor]) -> None:
        flat = torch.autograd.grad(
            [prediction_of(state.mus, i) for i in owners],
            params,
            [-errors[i] / state.batch for i in owners],
            retain_graph=True,
            allow_unused=True,
        )
        it = iter(flat)
        rows.append(relative_errors([[next(it) for _ in ps] for _, ps in groups], want))

    zero = {i: torch.zeros_like(state.values[i]) for i in state.hidden}
    record(0, {state.output: state.output_error, **zero})
    rule.relax(graph, state, on_step=record)
    return {"rel_error": rows, "diverged_at_step": None}


def exact_from(rows: list[list[float]], tol: float = 1e-6) -> list[int | None]:
    """Per layer, the first step from which the relative error stays below ``tol``."""
    result = []
    for layer in range(len(rows[0])):
        series = [row[layer] for row in rows]
        first = None
        for t in range(len(series)):
            if all(math.isfinite(v) and v <= tol for v in series[t:]):
                first = t
                break
        result.append(first)
    return result


def run_profiles(
    batch: int = 64,
    strict_steps: int = 400,
    fp_steps: int = 200,
    strict_steps_at_rate_one: int = 100,
    fp_steps_at_rate_one: int = 12,
    seed: int = 0,
) -> dict:
    from .. import data

    torch.manual_seed(seed)
    model = rosenbaum_cnn().double()
    graph = PCGraph(model)
    images, labels = data.load("mnist", "train", normalize="[0,1]", flatten=False)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:batch]
    x, y = images[order].double(), labels[order]
    target = torch.nn.functional.one_hot(y, 10).double()
    groups = layer_groups(graph)
    want = backprop_grads(graph, groups, x, y)
    runs = {}
    for lr in RATES:
        steps = strict_steps if lr < 1 else strict_steps_at_rate_one
        runs[f"strict_{lr:g}"] = strict_profile(graph, groups, x, target, want, lr, steps, beta=1.0 / batch)
        runs[f"strict_per_sample_{lr:g}"] = strict_profile(graph, groups, x, target, want, lr, steps)
        steps = fp_steps if lr < 1 else fp_steps_at_rate_one
        runs[f"fixed_prediction_{lr:g}"] = fixed_prediction_profile(graph, groups, x, target, want, lr, steps)
    return {"layers": [name for name, _ in groups], "batch": batch, "seed": seed, "runs": runs}


def plot(result: dict, path: Path) -> None:
    from .. import plotting

    kinds = {
        "strict": f"strict PC, output error / B (B={result['batch']})",
        "strict_per_sample": "strict PC, per-sample output error",
        "fixed_prediction": "fixed prediction",
    }
    fig, axes = plotting.figure(2, 3, width=5.5, height=10 / 3, squeeze=True, sharey=True)
    for col, lr in enumerate(RATES):
        for row, kind in enumerate(kinds):
            ax = axes[row, col]
            run = result["runs"][f"{kind}_{lr:g}"]
            rows = torch.tensor(run["rel_error"], dtype=torch.float64)
            steps = torch.arange(rows.shape[0])
            for k, name in enumerate(result["layers"]):
                series = rows[:, k].clamp(min=1e-17)
                ax.plot(steps[torch.isfinite(series)], series[torch.isfinite(series)], label=f"layer {k + 1} ({name})")
            ax.set_yscale("log")
            ax.set_ylim(1e-17, 1e3)
            title = f"{kinds[kind]}, rate {lr:g}"
            if run["diverged_at_step"] is not None:
                title += f" (diverged at step {run['diverged_at_step']})"
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("inference step")
            if col == 0:
                ax.set_ylabel("relative error to backprop")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Rosenbaum (2022) MNIST CNN: PC weight update vs backprop, per layer")
    plotting.save(fig, path)


@experiment(
    "bp-equivalence",
    "relative error of PC updates to backprop per layer vs "
    "inference steps (strict PC, fixed prediction; rates 0.1, 1), MNIST CNN",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    result = run_profiles(batch=300 if full else 64, seed=seed)
    runs = result["runs"]
    headline = {
        "strict_0.1_final": runs["strict_0.1"]["rel_error"][-1],
        "strict_0.1_min": [min(r[k] for r in runs["strict_0.1"]["rel_error"]) for k in range(len(result["layers"]))],
        "strict_1_diverged_at_step": runs["strict_1"]["diverged_at_step"],
        "strict_per_sample_0.1_final": runs["strict_per_sample_0.1"]["rel_error"][-1],
        "strict_per_sample_1_diverged_at_step": runs["strict_per_sample_1"]["diverged_at_step"],
        "fixed_prediction_0.1_step_20": runs["fixed_prediction_0.1"]["rel_error"][20],
        "fixed_prediction_0.1_final": runs["fixed_prediction_0.1"]["rel_error"][-1],
        "fixed_prediction_1_exact_from_step": exact_from(runs["fixed_prediction_1"]["rel_error"]),
    }
    result.update(
        headline=headline,
        seconds=round(time.time() - start, 1),
        machine=f"{platform.node()} ({platform.processor() or platform.machine()}), torch {torch.__version__}",
        date=time.strftime("%Y-%m-%d"),
    )
    (out_dir / "bp_equivalence.json").write_text(json.dumps(result, indent=1))
    plot(result, out_dir / "bp_equivalence.png")
    return {
        k: ([round(v, 4) if isinstance(v, float) else v for v in val] if isinstance(val, list) else val)
        for k, val in headline.items()
    }

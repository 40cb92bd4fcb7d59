r"""Uncertainty from a trained predictive coding classifier: out-of-distribution scores
(relaxed energy, Monte-Carlo predictive entropy), their AUROC, and calibration (ECE).

**Relaxed energy as an OOD score.**  For a classifier whose input is clamped, the energy
with the output *free* relaxes to exactly zero for every input (the feed-forward pass is
the exact minimiser of a chain: every node sits at its prediction), so it carries no
information.  The score is therefore the energy after relaxing with the input clamped
*and the output clamped to the network's own answer* :math:`\hat y = \arg\max \mu_{out}`:

.. math:: s(x) = \min_{h} E(x, h, \hat y) \quad\text{(approximated by T solver steps from the feed-forward pass)}

the cost of the best hidden configuration that explains both the input and the label the
network itself gives.  It starts at the feed-forward cross-entropy
:math:`-\log \max_k p_k(x)` and falls as the hidden nodes move towards the label;
high energy = the network cannot reconcile the input with any confident answer.

**AUROC** (:func:`auroc`) is the probability that a random out-of-distribution example
scores higher than a random in-distribution one (ties count one half): the Mann-Whitney
statistic from average ranks.  **ECE** (:func:`expected_calibration_error`) with equal-width
confidence bins: :math:`\sum_b \frac{n_b}{N}\,|\mathrm{acc}_b - \mathrm{conf}_b|`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from .exceptions import InputError
from .graph import PCGraph, prediction_of
from .inference import GradientDescent, Solver, StopRule, relax
from .sampling import Langevin, sample


# -- metrics ----------------------------------------------------------------------------
def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    r"""Area under the ROC curve for separating ``scores_out`` (positives, expected higher)
    from ``scores_in``: :math:`P(s_{out} > s_{in}) + \tfrac12 P(s_{out} = s_{in})`,
    computed from average ranks in :math:`O(N \log N)`."""
    a = torch.as_tensor(scores_in, dtype=torch.float64).flatten()
    b = torch.as_tensor(scores_out, dtype=torch.float64).flatten()
    if len(a) == 0 or len(b) == 0:
        raise InputError("auroc needs at least one in- and one out-of-distribution score")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise InputError("auroc: scores must be finite")
    allv = torch.cat([a, b])
    sorted_v, order = torch.sort(allv)
    ranks = torch.empty_like(allv)
    ranks[order] = torch.arange(1, len(allv) + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    n_in, n_out = len(a), len(b)
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))


@dataclass
class Reliability:
    """Per confidence bin: lower/upper edge, count, mean confidence, accuracy."""

    edges: Tensor
    counts: Tensor
    confidence: Tensor
    accuracy: Tensor

    @property
    def ece(self) -> float:
        n = self.counts.sum()
        return float((self.counts / n * (self.accuracy - self.confidence).abs()).sum())


def reliability(probs: Tensor, labels: Tensor, bins: int = 15) -> Reliability:
    """Bin the predictions by confidence ``max_k p_k`` into ``bins`` equal-width bins of
    (0, 1] (a confidence on an edge goes to the lower bin); empty bins hold zeros."""
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise InputError(
            f"reliability needs probs [N, K] and labels [N], got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    probs = probs.double()
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    counts = torch.bincount(index, minlength=bins).double()
    sum_conf = torch.bincount(index, weights=conf, minlength=bins)
    sum_acc = torch.bincount(index, weights=correct, minlength=bins)
    safe = counts.clamp(min=1)
    return Reliability(edges, counts, sum_conf / safe, sum_acc / safe)


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    r""":math:`\mathrm{ECE} = \sum_b \frac{n_b}{N} |\mathrm{acc}_b - \mathrm{conf}_b|` over
    ``bins`` equal-width confidence bins (15, as in Guo et al. 2017)."""
    return reliability(probs, labels, bins).ece


def predictive_entropy(probs: Tensor) -> Tensor:
    r""":math:`H[p] = -\sum_k p_k \log p_k` per row."""
    return -(torch.xlogy(probs, probs)).sum(dim=-1)


# -- scores from a trained network ---------------------------------------------------------
def relaxed_energy(
    graph: PCGraph,
    inputs: Tensor,
    *,
    label: Tensor | None = None,
    solver: Solver | None = None,
    stop: StopRule | int = 20,
) -> Tensor:
    r"""Per-example energy :math:`\sum_i E_i` after relaxing the hidden nodes with the input
    clamped and the output clamped to ``label`` (default: the feed-forward argmax,
    one-hot for a categorical output).  Returns ``[B]``."""
    out = graph.output
    stop = StopRule(max_steps=stop) if isinstance(stop, int) else stop
    with torch.no_grad():
        values, preds = graph.forward_pass([inputs])
        mu_out = prediction_of(preds, out)
        if label is None:
            label = mu_out.argmax(dim=-1)
        values[out] = F.one_hot(label, mu_out.shape[-1]).to(mu_out.dtype)
        free = graph.free_slots(out)
        relaxed = relax(graph, values, free, solver or GradientDescent(0.1), stop)
        total = torch.zeros(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
        for s in graph.slots:
            if not s.is_input:
                total = total + s.node_energy(relaxed.values[s.index], prediction_of(relaxed.predictions, s.index))
    return total


def mc_predictive(
    graph: PCGraph,
    inputs: Tensor,
    solver: Langevin,
    *,
    chains: int = 8,
    burn_in: int = 20,
    samples: int = 20,
    thin: int = 1,
) -> Tensor:
    r"""Monte-Carlo PC predictive distribution :math:`\bar p(y|x) = \frac1S\sum_s
    \mathrm{softmax}(\mu_{out}(h^{(s)}))`: ``chains`` Langevin chains per input over the
    hidden nodes (input clamped, output free), averaged over ``samples`` recorded steps
    and the chains.  Returns ``[B, K]``."""
    out = graph.output
    b = inputs.shape[0]
    x = inputs.repeat_interleave(chains, dim=0)
    with torch.no_grad():
        values = graph.feedforward([x])
    free = [s.index for s in graph.slots if not s.is_input]
    drawn = sample(graph, values, free, solver, burn_in=burn_in, samples=samples, thin=thin)
    probs = torch.softmax(prediction_of(drawn.predictions, out), dim=-1)  # [S, B*chains, K]
    return probs.mean(0).reshape(b, chains, -1).mean(1)

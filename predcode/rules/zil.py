r"""Zero-divergence inference learning (Z-IL, Song et al. 2020): exact backprop from
strict PC energies.

Values start at the feed-forward pass, the output is clamped to the target, and the
hidden nodes relax by gradient descent on the full energy with rate 1.  The error reaches
a node at distance ``d`` from the output exactly at step ``d``, equal to backprop's
gradient there; Z-IL takes the weight gradient of that node's predictor at that step,

.. math:: \partial E/\partial\theta_i \text{ evaluated at step } t = d(i),

so every weight receives backprop's gradient.  This holds on *layered* graphs (every
path from a node to the output has the same length: MLPs, CNNs, many-to-one RNNs).

Why layering: at rate 1 a node's error is exact at the step the error wave from the output
first reaches it, *before* the consequences of its own and its neighbours' moves arrive.
If node ``i`` reaches the output by paths of lengths 1 and 2 (a skip connection), the
contribution through the long path arrives at step 2, but by then the short-path child's
prediction has already changed (its other parents moved at step 1), so no single step
holds backprop's gradient.  :func:`predcode.convert.layered` removes the obstacle: it
routes every skipping edge through identity relay nodes so that all paths from a node to
the output have one length, and Z-IL on that graph is exact (ResNets, many-to-many RNNs,
LSTMs).  :class:`~predcode.rules.FixedPrediction` is exact on any graph as it is.
"""

from __future__ import annotations

import math

import torch

from ..batch import Inputs, Targets, prepare_batch
from ..checks import require_positive
from ..exceptions import GraphError
from ..graph import PCGraph
from ..inference import GradientDescent, StopRule, relax
from ..learning import StepStats, accumulate_weight_gradients
from .base import LearningRule


class ZIL(LearningRule):
    """Z-IL with inference rate ``lr`` (1 is the exact setting)."""

    def __init__(self, lr: float = 1.0) -> None:
        require_positive(lr, "inference rate")
        self.lr = lr

    @staticmethod
    def schedule(graph: PCGraph) -> dict[int, list[int]]:
        """Step -> slots whose weights update at that step; error if the graph isn't layered."""
        by_step: dict[int, list[int]] = {}
        for slot, lengths in zip(graph.slots, graph.depth_to_outputs()):
            if slot.is_input or not lengths:
                continue
            if len(lengths) > 1:
                raise GraphError(
                    f"Z-IL needs a layered graph but node '{slot.name}' reaches the output by "
                    f"paths of lengths {lengths}; use FixedPrediction for this graph, or Z-IL on "
                    "predcode.convert.layered(graph) (relay nodes equalise the path lengths)"
                )
            by_step.setdefault(lengths[0], []).append(slot.index)
        return by_step

    def compute_gradients(self, graph: PCGraph, inputs: Inputs, target: Targets) -> StepStats:
        schedule = self.schedule(graph)
        batch = prepare_batch(graph, inputs, target)
        values = batch.clamped()
        hidden = graph.free_slots(batch.targets)
        accumulate_weight_gradients(graph, values, schedule.get(0, []))  # the output layer, at t = 0

        def update(step: int, current: list[torch.Tensor]) -> None:  # after step t = step + 1
            accumulate_weight_gradients(graph, current, schedule.get(step + 1, []))

        # the one relaxation loop: plain gradient descent at the Z-IL rate, each layer's
        # weights read at the step the error wave reaches it (the weights change only
        # after the step, through the optimizer, so the constant predictions stay valid)
        relax(
            graph,
            values,
            hidden,
            GradientDescent(self.lr),
            StopRule(max(schedule), divergence_factor=math.inf),
            on_step=update,
        )
        return StepStats(batch.loss, batch.prediction)

    def __repr__(self) -> str:
        return f"ZIL(lr={self.lr})"

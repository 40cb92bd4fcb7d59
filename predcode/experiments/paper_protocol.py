r"""The training step of Song et al. 2024's own code, on an :class:`~.ensemble.Ensemble`.

The paper's ``PCTrainer`` (``predictive_coding/predictive_coding/pc_trainer.py`` of
github.com/YuhangSong/Prospective-Configuration) differs from the engine's plain inference
learning (``Ensemble.relax`` / ``Ensemble.step("il")``) in three ways that the
``--protocol paper`` runs of ``continual`` and ``concept-drift`` reproduce here:

* **the state rate falls whenever the energy rises** (``x_lr_discount``, lines 811-844).
  At every inference step ``t`` the trainer computes the *overall* energy
  :math:`F_t = \sum_b \big(\tfrac12\lVert e_L\rVert^2 + \sum_{l<L}\tfrac12\lVert x_l -
  \mu_l\rVert^2\big)` of the whole batch at the current state, takes the state step with
  rate :math:`\gamma_t`, and then, if :math:`F_t < F_{t-1}` does **not** hold, multiplies the
  rate by ``discount`` for the following steps:

  .. math:: x_{t+1} = x_t - \gamma_t \nabla_x F(x_t), \qquad
            \gamma_{t+1} = \begin{cases} \gamma_t\,d & t \ge 1,\ \lnot(F_t < F_{t-1})\\
            \gamma_t & \text{otherwise}\end{cases}

  The rate is reset to ``state_lr`` for every batch (the trainer re-creates its state
  optimizer, ``is_reset_optimizer_x_at_batch_start=True``).  A rejected step is *not* undone.
  Here every run of the ensemble has its own rate (its own batch energy), so one run's
  rising energy never slows another's.
* **the weights are updated at the last of T inference steps** (``update_p_at: "last"``):
  the weight gradient is taken at :math:`x_{T-1}`, after ``T - 1`` state steps, so the
  paper's ``T = 64`` is ``steps = 63`` here.
* **the loss is summed over the batch** (``(outputs - target).pow(2).sum() * 0.5``), so the
  paper's weight learning rate is ``ours / batch`` (the engine's gradients are batch means);
  a partial last batch gets a proportionally smaller step (:func:`step`, ``full_batch``).

It also lets the output error be **masked**: the continual-learning code computes its loss
on ``outputs[:, 0:-1]`` (``error_end_index = -1`` in ``learn_code`` of
``experiments/nature_forgetting/base-shuffle-task-5-FashionMNIST.yaml``), so the last
output unit never receives an error, under either rule.

With ``discount = 1`` (or whenever no run's energy rises) :func:`relax` performs the same
floating-point operations as ``Ensemble.relax`` and its result is identical bit for bit
(tested in ``tests/test_paper_protocol.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..exceptions import OptionError
from . import common
from .ensemble import Ensemble
from .verdict import Expectation


@dataclass
class Relaxed:
    """What :func:`relax` returns: the relaxed errors ``e_l`` and presynaptic activities
    ``a_{l-1}`` (``l = 1..L``, as ``Ensemble.relax``), the feed-forward loss (batch mean,
    ``[R]``), the batch-summed energy before the first and after the last step (``[R]``),
    how many times each run's rate was cut (``[R]``) and its final rate (``[R]``)."""

    errors: list[Tensor]
    acts: list[Tensor]
    ff_loss: Tensor
    energy_start: Tensor
    energy_end: Tensor
    cuts: Tensor
    rate: Tensor


def _expand(net: Ensemble, x: Tensor) -> Tensor:
    return x.unsqueeze(0).expand(net.runs, *x.shape) if x.dim() == 2 else x


def _energy(errors: list[Tensor]) -> Tensor:
    """Batch-summed energy ``sum_l 1/2 ||e_l||^2`` of every run, in the errors' dtype (the
    paper sums in float32): ``[R]``."""
    flat = torch.cat([e.flatten(1) for e in errors], 1)
    return 0.5 * (flat * flat).sum(1)


def relax(
    net: Ensemble,
    x0: Tensor,
    y: Tensor,
    steps: int,
    state_lr: float,
    *,
    discount: float = 1.0,
    mask: Tensor | None = None,
) -> Relaxed:
    """Inference with the output clamped to ``y`` and the paper's rate cut (module doc).

    ``x0`` is ``[B, n_0]`` or ``[R, B, n_0]``, ``y`` ``[B, n_L]`` or ``[R, B, n_L]``;
    ``mask`` (``[n_L]``, 1 = unit has an error, 0 = unit is free) masks the output error.
    """
    if not 0.0 < discount <= 1.0:
        raise OptionError(f"discount must be in (0, 1], got {discount}")
    if steps < 0:
        raise OptionError(f"steps must be >= 0, got {steps}")
    x0, y = _expand(net, x0), _expand(net, y)
    W, f, back = net.W, net.f, net.back
    n = len(W)
    if n < 2:
        raise OptionError("relax needs at least one hidden layer")
    m = None if mask is None else mask.to(y.dtype)
    mu1 = torch.bmm(x0, W[0].transpose(1, 2))
    xs = [mu1]
    for w in W[1:-1]:
        xs.append(torch.bmm(f(xs[-1]), w.transpose(1, 2)))
    out = torch.bmm(f(xs[-1]), W[-1].transpose(1, 2))
    ff_err = y - out if m is None else (y - out) * m
    ff_loss = 0.5 * (ff_err**2).sum(-1).mean(-1)
    Wt = [w.transpose(1, 2) for w in W]

    def prediction_errors(acts: list[Tensor]) -> list[Tensor]:
        """The errors of the states ``xs`` given ``f(x_l)`` of every layer (``acts``)."""
        errors = [xs[0] - mu1]
        for l in range(1, n):
            target = xs[l] if l < n - 1 else y
            errors.append(torch.baddbmm(target, acts[l - 1], Wt[l], alpha=-1))
        if m is not None:
            errors[-1] = errors[-1] * m
        return errors

    rate = torch.full((net.runs,), float(state_lr), dtype=torch.float64)
    cuts = torch.zeros(net.runs, dtype=torch.long)
    energy_start, previous = None, None
    for t in range(steps):
        acts = [f(x) for x in xs]
        errors = prediction_errors(acts)
        if discount < 1.0 or t == 0:
            energy = _energy(errors)
            if t == 0:
                energy_start = energy
        if bool((rate == rate[0]).all()):  # one rate: the engine's own fused ops
            s = float(rate[0])
            xs = [
                x.sub(errors[l], alpha=s).add_(back(torch.bmm(errors[l + 1], W[l + 1]), x, acts[l]), alpha=s)
                for l, x in enumerate(xs)
            ]
        else:
            r = rate.to(mu1.dtype).view(-1, 1, 1)
            xs = [x - r * (errors[l] - back(torch.bmm(errors[l + 1], W[l + 1]), x, acts[l])) for l, x in enumerate(xs)]
        if discount < 1.0:
            if previous is not None:
                rose = ~(energy < previous)
                rate = torch.where(rose, rate * discount, rate)
                cuts += rose.long()
            previous = energy
    acts = [x0] + [f(x) for x in xs]
    errors = prediction_errors(acts[1:])
    energy_end = _energy(errors)
    if energy_start is None:
        energy_start = energy_end
    return Relaxed(errors, acts[:n], ff_loss, energy_start, energy_end, cuts, rate)


def _bp_forward(net: Ensemble, x0: Tensor) -> Tensor:
    """The output ``mu_L`` by the operations of ``Ensemble.bp_gradients`` (same rounding)."""
    h = torch.bmm(x0, net.W[0].transpose(1, 2))
    for w in net.W[1:]:
        h = torch.bmm(net.f(h), w.transpose(1, 2))
    return h


def gradients(
    net: Ensemble,
    rule: str,
    x0: Tensor,
    y: Tensor,
    *,
    steps: int,
    state_lr: float,
    discount: float = 1.0,
    mask: Tensor | None = None,
) -> tuple[list[Tensor], Tensor, Relaxed | None]:
    """Batch-mean weight gradients of ``rule`` (``"bp"``, ``"il"``, or the engine's ``"epc"``
    unchanged), the feed-forward loss
    and (for ``il``) the relaxation.  With ``mask``, backprop's masked output units are
    given their own output as target, so their error is exactly zero."""
    if rule == "bp":
        if mask is not None:
            x0e, ye = _expand(net, x0), _expand(net, y)
            y = torch.where(mask.bool(), ye, _bp_forward(net, x0e))
            x0 = x0e
        grads, loss = net.bp_gradients(x0, y)
        return grads, loss, None
    if rule == "epc":  # the engine's equilibrium rule, unchanged (it has no output mask)
        if mask is not None:
            raise OptionError("the equilibrium rule 'epc' has no output mask")
        grads, loss = net.gradients("epc", x0, y)
        return grads, loss, None
    if rule == "il":
        r = relax(net, x0, y, steps, state_lr, discount=discount, mask=mask)
        batch = r.acts[0].shape[1]
        grads = [-torch.bmm(e.transpose(1, 2), a) / batch for e, a in zip(r.errors, r.acts)]
        return grads, r.ff_loss, r
    raise OptionError(f"the paper protocol has rules 'bp', 'il' and 'epc', not '{rule}'")


def step(
    net: Ensemble,
    rule: str,
    x0: Tensor,
    y: Tensor,
    lr: Tensor,
    *,
    steps: int,
    state_lr: float,
    discount: float = 1.0,
    mask: Tensor | None = None,
    full_batch: int | None = None,
) -> Relaxed | None:
    """One SGD step of every run.  ``lr`` is in batch-mean units for a batch of
    ``full_batch`` (default: this batch); a smaller batch steps ``lr * B / full_batch``, as
    the paper's summed loss does."""
    grads, _, relaxed = gradients(net, rule, x0, y, steps=steps, state_lr=state_lr, discount=discount, mask=mask)
    batch = x0.shape[-2]
    scale = 1.0 if full_batch is None else batch / full_batch
    net.sgd(grads, lr * scale)
    return relaxed


def error_rate(net: Ensemble, x: Tensor, labels: Tensor, chunk: int = 5000) -> Tensor:
    """Classification error of every run: ``[R]``.  ``labels`` is ``[N]`` (shared) or
    ``[R, N]`` (one labelling per run); a non-finite output counts as wrong."""
    wrong = torch.zeros(net.runs, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        out = net.forward(x[start : start + chunk])
        lab = labels[..., start : start + chunk]
        ok = (out.argmax(-1) == lab) & torch.isfinite(out).all(-1)
        wrong += (~ok).sum(-1).double()
    return wrong / x.shape[0]


def signed_onehot(labels: Tensor, classes: int, low: float) -> Tensor:
    """One-hot targets with ``low`` in place of 0 (the paper's ``np_idx2onehot(idx, size,
    target_min=low)`` in ``utils.py``): ``[..., classes]`` float32."""
    onehot = torch.nn.functional.one_hot(labels, classes).float()
    return onehot if low == 0.0 else onehot * (1.0 - low) + low


def wants_paper(experiment: str, protocol: str) -> bool:
    """Whether ``protocol`` names the paper's protocol (``"paper"``) rather than ours
    (``"ours"``); any other name is an :class:`OptionError` that names ``experiment``."""
    if protocol not in ("ours", "paper"):
        raise OptionError(f"{experiment} has protocols 'ours' and 'paper', not '{protocol}'")
    return protocol == "paper"


def compare_paper(
    claim: str, metric: str, main: dict, paper: dict, expected: Expectation, *, batch: int, on_test: str
) -> dict:
    """The report row of a run under the paper's protocol: sPC (and ePC when ``main`` has it)
    against backprop, each at its rate chosen on validation; the paper has PC ahead.  The note
    names those rates (batch-mean units, ``batch`` times the paper's summed-loss ones) and then
    ``on_test``: the errors at the rates the test metric itself chooses, as the paper chose."""
    return common.compare(
        claim,
        metric,
        main["il"]["test"],
        main["bp"]["test"],
        epc=main["epc"]["test"] if "epc" in main else None,
        paper=paper,
        paper_order="pc<bp",
        expected=expected,
        note=f"the paper's code's protocol (module doc); best lr on validation: PC {main['il']['best_lr']}, "
        f"BP {main['bp']['best_lr']} (batch-mean units = paper's x {batch}); chosen on the test metric as the "
        f"paper did: {on_test}",
    )


def plot_ablation(ax, ablation: dict[str, dict], paper: dict[str, float], xlabel: str) -> None:
    """Horizontal bars of PC's and BP's mean test error (± std) under every variant of
    ``ablation`` (variant -> rule -> ``{"mean", "std", ...}``), the paper's numbers dotted."""
    names = list(ablation)
    for j, rule in enumerate(("il", "bp")):
        ax.barh(
            [i + 0.4 * j for i in range(len(names))],
            [ablation[n][rule]["mean"] for n in names],
            height=0.4,
            xerr=[ablation[n][rule]["std"] for n in names],
            color=common.COLORS[rule],
            label=common.LABELS[rule],
        )
    ax.axvline(paper["pc"], color=common.COLORS["il"], ls=":", lw=1)
    ax.axvline(paper["bp"], color=common.COLORS["bp"], ls=":", lw=1)
    ax.set_yticks([i + 0.2 for i in range(len(names))], names, fontsize=7)
    ax.set(xlabel=xlabel, title="one difference switched off")
    ax.legend(fontsize=7)


def gather_rows(table: Tensor, idx: Tensor) -> Tensor:
    """``table[r, idx[r]]`` for every run: ``table`` ``[R, N, ...]``, ``idx`` ``[R, B]``."""
    return table[torch.arange(idx.shape[0]).unsqueeze(1), idx]

r"""Many layered PC networks trained in lockstep: the fast engine behind the claim experiments.

The networks are the library's act-first chains, ``mlp(sizes, act, bias=False,
act_first=True)`` (the form of Song et al. 2024 and pcx), with a squared-error output:

.. math:: \mu_1 = W_1 x_0,\qquad \mu_l = W_l\, f(x_{l-1})\;(l \ge 2),\qquad
          E = \sum_{l=1}^{L} \tfrac12 \lVert x_l - \mu_l \rVert^2 \text{ per sample.}

An :class:`Ensemble` holds ``R`` such networks of one shape as stacked weights
``W_l`` of shape ``[R, n_l, n_{l-1}]`` (``R`` = seeds x learning rates x ...), and trains
them all at once with batched matrix products.  On a CPU a batch-1 step of a 784-32-32-10
net is dominated by per-operation overhead, so ``R`` networks cost about as much as one.

The rules are the library's, written out in closed form for this one architecture:

* ``"bp"``: backprop on :math:`L = \mathrm{mean}_b \tfrac12\lVert y - \mu_L\rVert^2`
  (:class:`~predcode.rules.Backprop`);
* ``"il"``: inference learning (:class:`~predcode.rules.InferenceLearning` with
  ``GradientDescent(state_lr)`` and ``StopRule(T)``): the output is clamped to the target,
  the hidden nodes start at the feed-forward pass and take ``T`` synchronous steps

  .. math:: x_l \leftarrow x_l - \gamma\,\big(e_l - f'(x_l) \odot W_{l+1}^\top e_{l+1}\big),
            \qquad e_l = x_l - \mu_l,

  then every weight takes :math:`\partial E/\partial W_l = -\mathrm{mean}_b\, e_l\, a_{l-1}^\top`
  with :math:`a_0 = x_0`, :math:`a_l = f(x_l)`;
* ``"il-prox"``: the same relaxation, then each layer takes the *proximal* step of its own
  energy at the relaxed state (:class:`~predcode.rules.ProximalInferenceLearning`):

  .. math:: W_l \leftarrow \arg\min_W\, \tfrac12\lVert x_l - W a_{l-1}\rVert^2
            + \tfrac{1}{2\eta}\lVert W - W_l\rVert^2
            = W_l + \frac{\eta\, e_l a_{l-1}^\top}{1 + \eta \lVert a_{l-1}\rVert^2},

  applied per sample and averaged over the batch.  As :math:`\eta\to 0` this is IL; for
  large :math:`\eta` it is the *normalised* update that moves each prediction onto its
  relaxed target and no further, so its steps stay bounded (Alonso et al. 2022);
* ``"epc"`` and ``"epc-prox"``: the same two weight updates at the *exact* equilibrium of
  the energy instead of after ``T`` state steps.  The relaxation is error-based PC
  (:class:`~predcode.rules.ErrorPC`, Goemaere et al. 2025) run to convergence
  (:class:`Equilibrium`): the hidden errors :math:`e_l` are the variables, the states are
  :math:`x_l = \mu_l(x_{l-1}) + e_l` and the output error is
  :math:`e_L = y - \mu_L(x_{L-1})`; every run descends

  .. math:: E(e) = \tfrac12 \sum_{l<L} \lVert e_l\rVert^2 + \tfrac12\lVert y - \mu_L\rVert^2,
            \qquad e_l \leftarrow e_l - \gamma\,\big(e_l + f'(x_l)\odot W_{l+1}^\top
            \partial E/\partial\mu_{l+1}\big),

  with :math:`\partial E/\partial\mu_L = -e_L` and
  :math:`\partial E/\partial\mu_l = f'(x_l)\odot W_{l+1}^\top\partial E/\partial\mu_{l+1}`,
  (each run with its own step size, see :class:`Equilibrium`) until a step changes its
  batch-mean energy by less than ``energy_rtol`` (1e-6) of its value.  The equilibrium is
  the one the library's :class:`~predcode.rules.ErrorPC` and sPC reach when run long
  enough (same energy), so these rules are PC as the theory describes it, where ``"il"``
  is PC as the papers simulate it.

``tests/test_experiments_claims.py`` checks that these closed forms give the same
gradients as the library's rules on a :class:`~predcode.PCGraph` of the same model, to
float64 precision, so the experiments measure the library's algorithms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..exceptions import OptionError
from ..models import mlp

RULES = ("bp", "il", "il-prox", "epc", "epc-prox")


@dataclass(frozen=True)
class Equilibrium:
    """How the ``"epc"`` rules relax: gradient descent on the errors, each run with its own
    step size (starting at ``error_lr``, x1.5 after a step that lowers the energy; a step
    that would raise it is not taken and the step size halves, so the energy never rises),
    until a step changes the energy by at most ``energy_rtol`` of its value, or
    ``max_steps`` trials.

    When the network can fit the target exactly the equilibrium energy is 0 and the energy
    decays geometrically, so its relative change per step never falls below a tolerance;
    a run whose energy has fallen to ``energy_floor`` times its starting energy is at the
    equilibrium to about ``sqrt(energy_floor)`` in its errors and stops there too."""

    error_lr: float = 0.5
    energy_rtol: float = 1e-6
    max_steps: int = 3000
    energy_floor: float = 1e-14

    def __post_init__(self) -> None:
        if not (self.error_lr > 0 and self.energy_rtol > 0 and self.max_steps >= 1):
            raise OptionError(f"an equilibrium needs error_lr > 0, energy_rtol > 0 and max_steps >= 1, got {self}")


@dataclass
class EquilibriumLog:
    """What the equilibrium relaxations of an ensemble did: relaxations (one per run per
    batch), steps summed over them, the most steps one took, and how many ended at
    ``max_steps`` without meeting the tolerance (or diverged)."""

    relaxations: int = 0
    steps: int = 0
    max_steps_taken: int = 0
    unconverged: int = 0

    def add(self, steps: Tensor, converged: Tensor) -> None:
        self.relaxations += int(steps.numel())
        self.steps += int(steps.sum())
        self.max_steps_taken = max(self.max_steps_taken, int(steps.max()) if steps.numel() else 0)
        self.unconverged += int((~converged).sum())

    def summary(self) -> dict[str, float]:
        return {
            "relaxations": self.relaxations,
            "mean_steps": self.steps / max(self.relaxations, 1),
            "max_steps": self.max_steps_taken,
            "unconverged_fraction": self.unconverged / max(self.relaxations, 1),
        }


Backward = Callable[[Tensor, Tensor, Tensor], Tensor]


def _activation(name: str) -> tuple[Callable[[Tensor], Tensor], Backward]:
    """``(f, back)`` with ``back(g, x, a) = f'(x) * g`` given ``a = f(x)``, as one fused op
    (at batch 1 the cost of a step is the number of torch calls)."""
    aten = torch.ops.aten
    if name == "sigmoid":
        return torch.sigmoid, lambda g, x, a: aten.sigmoid_backward(g, a)
    if name == "tanh":
        return torch.tanh, lambda g, x, a: aten.tanh_backward(g, a)
    if name == "relu":
        return torch.relu, lambda g, x, a: aten.threshold_backward(g, x, 0.0)
    if name == "identity":
        return (lambda x: x), (lambda g, x, a: g)
    raise OptionError(f"the ensemble engine supports sigmoid, tanh, relu and identity, not '{name}'")


def init_weights(model: nn.Module, init: str) -> None:
    """Initialise every ``nn.Linear`` weight of ``model`` in place (``xavier_uniform``,
    ``xavier_normal`` or ``default`` = PyTorch's own)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if init == "xavier_uniform":
                nn.init.xavier_uniform_(m.weight)
            elif init == "xavier_normal":
                nn.init.xavier_normal_(m.weight)
            elif init != "default":
                raise OptionError(f"unknown init '{init}'")


def make_model(
    sizes: Sequence[int], act: str, seed: int, init: str = "xavier_uniform", dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The library model every experiment uses, with its initial weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = mlp(sizes, act=act, output_energy="se", bias=False, act_first=True)
    init_weights(model, init)
    return model.to(dtype)


class Ensemble:
    """``R`` act-first MLPs without biases, trained together.

    Args:
        weights: ``W_l`` of shape ``[R, n_l, n_{l-1}]`` for ``l = 1..L``.
        act: activation ``f`` applied to every node before the next layer.
        equilibrium: how the ``"epc"`` rules relax (:class:`Equilibrium`); what they did
            accumulates in :attr:`equilibrium_log`.
    """

    def __init__(self, weights: Sequence[Tensor], act: str, equilibrium: Equilibrium | None = None) -> None:
        if not weights:
            raise OptionError("an ensemble needs at least one layer")
        runs = weights[0].shape[0]
        for a, b in zip(weights, weights[1:]):
            if b.shape[0] != runs or b.shape[2] != a.shape[1]:
                raise OptionError(f"layer shapes do not chain: {a.shape} then {b.shape}")
        self.W = [w.detach().clone() for w in weights]
        self.act = act
        self.f, self.back = _activation(act)
        self.equilibrium_spec = equilibrium or Equilibrium()
        self.equilibrium_log = EquilibriumLog()

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_models(cls, models: Sequence[nn.Module], act: str) -> Ensemble:
        """Stack the ``nn.Linear`` weights of library models built by :func:`make_model`."""
        per_model = [[m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
        return cls([torch.stack(ws) for ws in zip(*per_model)], act)

    @classmethod
    def from_seeds(
        cls,
        sizes: Sequence[int],
        act: str,
        seeds: Sequence[int],
        init: str = "xavier_uniform",
        dtype: torch.dtype = torch.float32,
    ) -> Ensemble:
        """One network per entry of ``seeds`` (repeat a seed to give several runs one init)."""
        cache: dict[int, nn.Module] = {}
        for s in set(seeds):
            cache[s] = make_model(sizes, act, s, init, dtype)
        return cls.from_models([cache[s] for s in seeds], act)

    def load_into(self, model: nn.Module, run: int) -> nn.Module:
        """Copy run ``run``'s weights into a library model of the same shape."""
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for m, w in zip(linears, self.W):
                m.weight.copy_(w[run])
        return model

    @property
    def runs(self) -> int:
        return self.W[0].shape[0]

    @property
    def sizes(self) -> list[int]:
        return [self.W[0].shape[2]] + [w.shape[1] for w in self.W]

    def clone(self) -> Ensemble:
        return Ensemble(self.W, self.act, self.equilibrium_spec)

    # -- passes ------------------------------------------------------------------------
    def _expand(self, x: Tensor) -> Tensor:
        """Inputs as ``[R, B, n]``: a shared ``[B, n]`` batch is broadcast to every run."""
        return x.unsqueeze(0).expand(self.runs, *x.shape) if x.dim() == 2 else x

    def forward(self, x0: Tensor) -> Tensor:
        """Feed-forward output ``mu_L`` of every run: ``[R, B, n_L]``.  ``x0`` is ``[B, n_0]``
        (shared) or ``[R, B, n_0]``."""
        h = torch.matmul(x0, self.W[0].transpose(1, 2))
        for w in self.W[1:]:
            h = torch.matmul(self.f(h), w.transpose(1, 2))
        return h

    def error_rate(self, x: Tensor, labels: Tensor, chunk: int = 5000) -> Tensor:
        """Classification error of every run on ``(x, labels)`` (shared data): ``[R]``;
        a run with non-finite outputs counts as all wrong."""
        wrong = torch.zeros(self.runs, dtype=torch.float64)
        for start in range(0, x.shape[0], chunk):
            out = self.forward(x[start : start + chunk])
            ok = (out.argmax(-1) == labels[start : start + chunk]) & torch.isfinite(out).all(-1)
            wrong += (~ok).sum(-1).double()
        return wrong / x.shape[0]

    def loss(self, x0: Tensor, y: Tensor) -> Tensor:
        """Backprop's loss ``mean_b 1/2 ||y - mu_L||^2`` per run: ``[R]``."""
        out = self.forward(x0)
        return 0.5 * ((self._expand(y) - out) ** 2).sum(-1).mean(-1)

    # -- gradients ---------------------------------------------------------------------
    def bp_gradients(self, x0: Tensor, y: Tensor) -> tuple[list[Tensor], Tensor]:
        r"""Backprop: :math:`\delta_L = \mu_L - y`, :math:`\delta_l = f'(h_l) \odot W_{l+1}^\top
        \delta_{l+1}`, :math:`\partial L/\partial W_l = \mathrm{mean}_b\, \delta_l a_{l-1}^\top`."""
        x0 = self._expand(x0)
        y = self._expand(y)
        batch = x0.shape[1]
        hs, acts = [], [x0]
        h = torch.bmm(x0, self.W[0].transpose(1, 2))
        for w in self.W[1:]:
            hs.append(h)
            a = self.f(h)
            acts.append(a)
            h = torch.bmm(a, w.transpose(1, 2))
        delta = h - y
        loss = 0.5 * (delta * delta).sum(-1).mean(-1)
        grads: list[Tensor] = [None] * len(self.W)  # type: ignore[list-item]
        for l in range(len(self.W) - 1, -1, -1):
            grads[l] = torch.bmm(delta.transpose(1, 2), acts[l]) / batch
            if l > 0:
                delta = self.back(torch.bmm(delta, self.W[l]), hs[l - 1], acts[l])
        return grads, loss

    def relax(self, x0: Tensor, y: Tensor, steps: int, state_lr: float) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Inference with the output clamped: returns the relaxed errors ``e_l``, the
        presynaptic activities ``a_{l-1}`` (both for ``l = 1..L``) and the feed-forward loss."""
        x0 = self._expand(x0)
        y = self._expand(y)
        W, f, back = self.W, self.f, self.back
        n = len(W)
        mu1 = torch.bmm(x0, W[0].transpose(1, 2))  # constant: its parent is clamped
        xs = [mu1]
        for w in W[1:-1]:
            xs.append(torch.bmm(f(xs[-1]), w.transpose(1, 2)))
        out = torch.bmm(f(xs[-1]), W[-1].transpose(1, 2)) if n > 1 else mu1
        ff_loss = 0.5 * ((y - out) ** 2).sum(-1).mean(-1)
        # xs holds the free nodes x_1..x_{L-1}; x_L = y.  Written with fused ops
        # (baddbmm, addcmul): at batch 1 the cost is the number of torch calls.
        Wt = [w.transpose(1, 2) for w in W]
        for _ in range(steps if n > 1 else 0):
            acts = [f(x) for x in xs]
            errors = [xs[0] - mu1]
            for l in range(1, n):
                target = xs[l] if l < n - 1 else y
                errors.append(torch.baddbmm(target, acts[l - 1], Wt[l], alpha=-1))
            xs = [
                x.sub(errors[l], alpha=state_lr).add_(
                    back(torch.bmm(errors[l + 1], W[l + 1]), x, acts[l]), alpha=state_lr
                )
                for l, x in enumerate(xs)
            ]
        acts = [x0] + [f(x) for x in xs]
        errors = [(xs[0] if n > 1 else y) - mu1]
        for l in range(1, n):
            target = xs[l] if l < n - 1 else y
            errors.append(torch.baddbmm(target, acts[l], Wt[l], alpha=-1))
        return errors, acts[:n], ff_loss

    def equilibrium(self, x0: Tensor, y: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Inference with the output clamped, to the energy's equilibrium by error-based PC
        (:class:`Equilibrium`; the equation is in the module docstring).  Returns what
        :meth:`relax` returns: the errors ``e_l`` and presynaptic activities ``a_{l-1}`` at
        the equilibrium, and the feed-forward loss."""
        spec = self.equilibrium_spec
        x0 = self._expand(x0)
        y = self._expand(y)
        W, f, back = self.W, self.f, self.back
        Wt = [w.transpose(1, 2) for w in W]
        n, runs, batch = len(W), x0.shape[0], x0.shape[1]
        mu1 = torch.bmm(x0, Wt[0])  # constant: its parent is clamped
        errors = [torch.zeros_like(mu1)] + [x0.new_zeros(runs, batch, w.shape[1]) for w in W[1:-1]]
        errors = errors if n > 1 else []

        def forward(errors: list[Tensor]) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
            """States, activities ``[x0, f(x_1), ...]``, output error and the batch-mean
            energy ``[R]`` (float64) of the errors."""
            xs, acts = [], [x0]
            for l, e in enumerate(errors):
                x = mu1 + e if l == 0 else torch.baddbmm(e, acts[-1], Wt[l])
                xs.append(x)
                acts.append(f(x))
            e_out = y - torch.bmm(acts[-1], Wt[-1])
            squares = [(e * e).flatten(1).sum(1, dtype=torch.float64) for e in (e_out, *errors)]
            return xs, acts, e_out, 0.5 * torch.stack(squares).sum(0) / batch

        def gradient(errors, xs, acts, e_out) -> list[Tensor]:
            """dE/de_l (per sample: the gradient of the batch-summed energy)."""
            grad_mu = -e_out  # dE/dmu_L
            grads: list[Tensor] = list(errors)
            for l in range(len(errors) - 1, -1, -1):
                grad_mu = back(torch.bmm(grad_mu, W[l + 1]), xs[l], acts[l + 1])
                grads[l] = errors[l] + grad_mu
            return grads

        xs, acts, e_out, energy = forward(errors)
        ff_loss = 0.5 * (e_out * e_out).sum(-1).mean(-1)
        first = energy
        rate = torch.full((runs,), spec.error_lr, dtype=x0.dtype)
        active = torch.ones(runs, dtype=torch.bool)
        converged = torch.zeros(runs, dtype=torch.bool) | (energy <= 0) | (not errors)
        active &= ~converged
        steps = torch.zeros(runs, dtype=torch.long)
        grads = gradient(errors, xs, acts, e_out) if errors else []
        for _ in range(spec.max_steps if errors else 0):
            if not bool(active.any()):
                break
            scale = rate.view(-1, 1, 1)
            trial = [e - scale * g for e, g in zip(errors, grads)]
            t_xs, t_acts, t_out, t_energy = forward(trial)
            accept = active & (t_energy <= energy)
            steps += active
            met = accept & (
                ((energy - t_energy).abs() <= spec.energy_rtol * energy.abs()) | (t_energy <= spec.energy_floor * first)
            )
            if bool(accept.all()):  # the common case: every run moves
                errors, xs, acts, e_out, energy = trial, t_xs, t_acts, t_out, t_energy
            else:
                keep = accept.view(-1, 1, 1)
                errors = [torch.where(keep, t, e) for t, e in zip(trial, errors)]
                xs = [torch.where(keep, t, e) for t, e in zip(t_xs, xs)]
                acts = [torch.where(keep, t, e) for t, e in zip(t_acts, acts)]
                e_out = torch.where(keep, t_out, e_out)
                energy = torch.where(accept, t_energy, energy)
            rate = torch.where(accept, rate * 1.5, rate * 0.5)
            stalled = active & ~torch.isfinite(t_energy) & (rate < 1e-12)
            converged |= met
            active &= ~(met | stalled)
            if bool(active.any()):
                grads = gradient(errors, xs, acts, e_out)
        self.equilibrium_log.add(steps, converged)
        return errors + [e_out], acts[:n], ff_loss

    def local_gradients(
        self, errors: Sequence[Tensor], acts: Sequence[Tensor], prox_lr: Tensor | None = None
    ) -> list[Tensor]:
        r"""The weight gradients :math:`-\mathrm{mean}_b\, e_l a_{l-1}^\top` of relaxed errors
        and activities; with ``prox_lr`` (``[R]``) every sample's term is divided by
        :math:`1 + \eta\lVert a_{l-1}\rVert^2` (the proximal step, see the module docstring)."""
        batch = acts[0].shape[1]
        grads = []
        for e, a in zip(errors, acts):
            if prox_lr is not None:
                norm2 = (a * a).sum(-1, keepdim=True)  # [R, B, 1]
                e = e / (1 + prox_lr.view(-1, 1, 1) * norm2)
            grads.append(-torch.bmm(e.transpose(1, 2), a) / batch)
        return grads

    def il_gradients(
        self, x0: Tensor, y: Tensor, steps: int, state_lr: float, prox_lr: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor]:
        r"""IL weight gradients :math:`-\mathrm{mean}_b\, e_l a_{l-1}^\top` at the relaxed state.

        With ``prox_lr`` (``[R]``, the weight learning rate :math:`\eta` of each run) every
        sample's term is divided by :math:`1 + \eta\lVert a_{l-1}\rVert^2`, so that an SGD
        step of size :math:`\eta` is the per-sample proximal step of each layer's energy.
        """
        errors, acts, loss = self.relax(x0, y, steps, state_lr)
        return self.local_gradients(errors, acts, prox_lr), loss

    def gradients(
        self, rule: str, x0: Tensor, y: Tensor, *, steps: int = 64, state_lr: float = 0.1, lr: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Gradients of ``rule`` (one of :data:`RULES`; the ``-prox`` rules need ``lr``).
        ``steps`` and ``state_lr`` are the sPC relaxation's (``il``, ``il-prox``); the
        ``epc`` rules relax as :attr:`equilibrium_spec` says."""
        if rule == "bp":
            return self.bp_gradients(x0, y)
        if rule not in RULES:
            raise OptionError(f"unknown rule '{rule}'; choose one of {RULES}")
        prox = rule.endswith("-prox")
        if prox and lr is None:
            raise OptionError(f"{rule} needs the weight learning rate of every run")
        if rule.startswith("epc"):
            errors, acts, loss = self.equilibrium(x0, y)
        else:
            errors, acts, loss = self.relax(x0, y, steps, state_lr)
        return self.local_gradients(errors, acts, lr if prox else None), loss

    def sgd(self, grads: Sequence[Tensor], lr: Tensor) -> None:
        """``W_l <- W_l - lr_r * grad_l`` for every run ``r`` (``lr`` is ``[R]``)."""
        scale = lr.view(-1, 1, 1).to(self.W[0].dtype)
        self.W = [w - scale * g for w, g in zip(self.W, grads)]

    def step(self, rule: str, x0: Tensor, y: Tensor, lr: Tensor, *, steps: int = 64, state_lr: float = 0.1) -> Tensor:
        """One SGD step of ``rule`` on every run; returns the feed-forward loss ``[R]``.
        Runs that have become non-finite stay non-finite (they are reported as diverged)."""
        grads, loss = self.gradients(rule, x0, y, steps=steps, state_lr=state_lr, lr=lr)
        self.sgd(grads, lr)
        return loss

    def finite(self) -> Tensor:
        """Which runs still have finite weights: ``[R]`` bool."""
        ok = torch.ones(self.runs, dtype=torch.bool)
        for w in self.W:
            ok &= torch.isfinite(w).flatten(1).all(1)
        return ok

    def parameters_flat(self) -> Tensor:
        """All weights of every run as one row per run: ``[R, P]``."""
        return torch.cat([w.flatten(1) for w in self.W], dim=1)


TIGHT = Equilibrium(energy_rtol=1e-13, max_steps=20000, energy_floor=1e-26)
"""The equilibrium that :func:`check_against_library` compares (in float64): converged far
beyond the experiments' tolerance, so two solvers' equilibria must agree to ~1e-6."""


def library_rule(rule: str, steps: int, state_lr: float, lr: float):
    """The library's :class:`~predcode.rules.LearningRule` that ``rule`` writes out (for
    ``"epc"``: the library's :class:`~predcode.rules.ErrorPC` relaxed to :data:`TIGHT`'s
    tolerance, the reference equilibrium)."""
    from ..inference import GradientDescent, StopRule
    from ..rules import Backprop, ErrorPC, InferenceLearning, ProximalInferenceLearning

    if rule == "epc":  # the equilibrium, reached by the library's ePC with a fixed step
        return ErrorPC(
            GradientDescent(0.1), StopRule(max_steps=TIGHT.max_steps, energy_rtol=TIGHT.energy_rtol, grad_tol=1e-12)
        )
    if rule == "bp":
        return Backprop()
    if rule == "il":
        return InferenceLearning(GradientDescent(state_lr), StopRule(max_steps=steps))
    if rule == "il-prox":
        return ProximalInferenceLearning(GradientDescent(state_lr), StopRule(max_steps=steps), lr=lr)
    raise OptionError(f"unknown rule '{rule}'; choose one of {RULES}")


def check_against_library(
    ensemble: Ensemble,
    models: Sequence[nn.Module],
    rule: str,
    batches: Sequence[tuple[Tensor, Tensor]],
    lr: Tensor,
    *,
    steps: int,
    state_lr: float,
) -> float:
    """Train ``models`` (one library model per run, holding the ensemble's current weights)
    with the library's rule on a :class:`~predcode.PCGraph` and ``torch.optim.SGD``, and a
    copy of ``ensemble`` with :meth:`Ensemble.step`, on the same ``batches`` (each
    ``(x [R, B, n0], y [R, B, nL])``).  Returns the largest relative difference of the
    final weights: the engine is the library's algorithm when this is at rounding level.

    For ``"epc"`` both sides run in float64 and relax to :data:`TIGHT`'s tolerance (the
    engine with its own step-size control, the library with a fixed step), so the number
    says whether they reach the same equilibrium (about 1e-6 or less)."""
    from ..graph import PCGraph

    engine = ensemble.clone()
    if rule == "epc":
        models = [m.double() for m in models]
        batches = [(x.double(), y.double()) for x, y in batches]
        lr = lr.double()
        engine = Ensemble([w.double() for w in ensemble.W], ensemble.act, TIGHT)
    worst = 0.0
    for r, model in enumerate(models):
        graph = PCGraph(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(lr[r]))
        rule_obj = library_rule(rule, steps, state_lr, float(lr[r]))
        for x, y in batches:
            rule_obj.step(graph, x[r], y[r], optimizer)
    for x, y in batches:
        engine.step(rule, x, y, lr, steps=steps, state_lr=state_lr)
    for r, model in enumerate(models):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for m, w in zip(linears, engine.W):
            ref = m.weight.detach()
            worst = max(worst, float((ref - w[r]).abs().max() / ref.abs().max().clamp_min(1e-30)))
    return worst

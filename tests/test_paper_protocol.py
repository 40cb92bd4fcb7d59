"""The paper-protocol step (predcode.experiments.paper_protocol) and the ``--protocol``
option of ``predcode repro``: the state-rate cut against a reference written from the
paper's trainer with autograd, bit-for-bit equality with the engine when no energy rises,
per-run rates, the output mask, the continual mapping, the drift schedule and targets."""

from __future__ import annotations

import torch

from predcode.app.cli import main
from predcode.experiments import concept_drift, continual
from predcode.experiments import paper_protocol as pp
from predcode.experiments.ensemble import Ensemble


def _net(seeds, sizes=(6, 5, 4, 3), dtype=torch.float64, scale=1.0):
    net = Ensemble.from_seeds(list(sizes), "sigmoid", seeds, "xavier_normal", dtype)
    net.W = [w * scale for w in net.W]
    return net


def _data(runs, batch=7, sizes=(6, 5, 4, 3), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(runs, batch, sizes[0], generator=g, dtype=dtype)
    y = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (runs, batch), generator=g), sizes[-1]).to(dtype)
    return x, y


def _reference(W, x0, y, steps, lr, discount, mask=None):
    """The paper's PCTrainer loop for one run, by autograd: energy F_t of the whole batch at
    x_t, one SGD step on x, then the rate times ``discount`` if not F_t < F_{t-1}.
    Returns the relaxed states and the energies."""
    n = len(W)
    xs = [x0 @ W[0].T]
    for w in W[1:-1]:
        xs.append(torch.sigmoid(xs[-1]) @ w.T)
    xs = [x.clone().requires_grad_(True) for x in xs]
    m = torch.ones(y.shape[-1], dtype=y.dtype) if mask is None else mask.to(y.dtype)

    def energy(xs):
        e = 0.5 * ((xs[0] - x0 @ W[0].T) ** 2).sum()
        for l in range(1, n - 1):
            e = e + 0.5 * ((xs[l] - torch.sigmoid(xs[l - 1]) @ W[l].T) ** 2).sum()
        return e + 0.5 * (((y - torch.sigmoid(xs[-1]) @ W[-1].T) * m) ** 2).sum()

    energies = []
    for _ in range(steps):
        f = energy(xs)
        grads = torch.autograd.grad(f, xs)
        with torch.no_grad():
            for x, g in zip(xs, grads):
                x -= lr * g
        if energies and not (f.item() < energies[-1]):
            lr *= discount
        energies.append(f.item())
    energies.append(energy(xs).item())
    return [x.detach() for x in xs], energies


def test_relax_matches_autograd_reference_with_rate_cut():
    net = _net([0, 1, 2], scale=4.0)  # large weights: the energy rises at a big state rate
    x, y = _data(3)
    steps, lr, d = 25, 1.5, 0.5
    r = pp.relax(net, x, y, steps, lr, discount=d)
    assert int(r.cuts.sum()) > 0  # the case under test does cut
    for run in range(3):
        W = [w[run] for w in net.W]
        xs, energies = _reference(W, x[run], y[run], steps, lr, d)
        # e_1 = x_1 - mu_1 and e_2 = x_2 - mu_2 give back the reference's states
        assert torch.allclose(r.errors[0][run], xs[0] - x[run] @ W[0].T, atol=1e-10)
        assert torch.allclose(r.errors[1][run], xs[1] - torch.sigmoid(xs[0]) @ W[1].T, atol=1e-10)
        assert abs(float(r.energy_start[run]) - energies[0]) < 1e-9
        assert abs(float(r.energy_end[run]) - energies[-1]) < 1e-9
        cuts = sum(not (b < a) for a, b in zip(energies[:-2], energies[1:-1]))
        assert int(r.cuts[run]) == cuts


def test_output_mask_matches_reference_and_frees_the_unit():
    net = _net([3])
    x, y = _data(1)
    mask = torch.tensor([1.0, 1.0, 0.0])
    r = pp.relax(net, x, y, 12, 0.1, discount=0.9, mask=mask)
    W = [w[0] for w in net.W]
    xs, energies = _reference(W, x[0], y[0], 12, 0.1, 0.9, mask)
    assert torch.allclose(r.errors[1][0], xs[1] - torch.sigmoid(xs[0]) @ W[1].T, atol=1e-10)
    assert torch.all(r.errors[-1][..., 2] == 0)
    grads, _, _ = pp.gradients(net, "il", x, y, steps=12, state_lr=0.1, mask=mask)
    assert torch.all(grads[-1][:, 2] == 0) and grads[-1][:, :2].abs().sum() > 0
    # backprop: the masked unit's error is exactly zero, the rest is autograd's gradient
    grads, _, _ = pp.gradients(net, "bp", x, y, steps=0, state_lr=0.0, mask=mask)
    Wr = [w[0].clone().requires_grad_(True) for w in net.W]
    h = x[0] @ Wr[0].T
    for w in Wr[1:]:
        h = torch.sigmoid(h) @ w.T
    loss = 0.5 * (((h - y[0]) * mask) ** 2).sum(-1).mean()
    ref = torch.autograd.grad(loss, Wr)
    assert torch.all(grads[-1][0, 2] == 0)
    for g, gr in zip(grads, ref):
        assert torch.allclose(g[0], gr, atol=1e-12)


def test_without_a_rise_equals_the_engine_bit_for_bit():
    net = _net(list(range(4)), sizes=(8, 6, 6, 4), dtype=torch.float32)
    x, y = _data(4, sizes=(8, 6, 6, 4), dtype=torch.float32)
    for discount in (1.0, 0.5):  # 10 steps at rate 0.1: the energy falls at every step
        r = pp.relax(net, x, y, 10, 0.1, discount=discount)
        assert int(r.cuts.sum()) == 0
        errors, acts, loss = net.relax(x, y, 10, 0.1)
        assert all(torch.equal(a, b) for a, b in zip(errors, r.errors))
        assert all(torch.equal(a, b) for a, b in zip(acts, r.acts))
        assert torch.equal(loss, r.ff_loss)
    a, b = net.clone(), net.clone()
    lr = torch.tensor([0.1, 0.2, 0.3, 0.4])
    a.step("il", x, y, lr, steps=10, state_lr=0.1)
    pp.step(b, "il", x, y, lr, steps=10, state_lr=0.1, discount=0.5)
    assert all(torch.equal(u, v) for u, v in zip(a.W, b.W))


def test_energy_never_ends_above_its_start():
    net = _net(list(range(8)), scale=4.0)
    x, y = _data(8)
    for lr in (0.5, 1.5, 3.0):
        plain = pp.relax(net, x, y, 60, lr)
        cut = pp.relax(net, x, y, 60, lr, discount=0.5)
        assert torch.all(cut.energy_end <= cut.energy_start)
        if lr == 3.0:  # the plain relaxation does end higher here: the cut is what helps
            assert torch.any(~(plain.energy_end <= plain.energy_start))


def test_the_rate_is_cut_per_run():
    big, small = _net([0], scale=4.0), _net([1])
    both = Ensemble([torch.cat([a, b]) for a, b in zip(big.W, small.W)], "sigmoid")
    x, y = _data(2)
    r = pp.relax(both, x, y, 30, 1.0, discount=0.5)
    alone = [pp.relax(n, x[i : i + 1], y[i : i + 1], 30, 1.0, discount=0.5) for i, n in enumerate((big, small))]
    assert int(r.cuts[0]) > 0 and int(r.cuts[1]) == 0 and float(r.rate[1]) == 1.0
    for i in range(2):
        assert int(r.cuts[i]) == int(alone[i].cuts[0])
        assert float(r.rate[i]) == float(alone[i].rate[0])
        for e, ea in zip(r.errors, alone[i].errors):
            assert torch.allclose(e[i], ea[0], atol=1e-12)


def test_partial_batch_takes_a_proportional_step():
    net = _net([0, 1])
    x, y = _data(2, batch=4)
    a, b = net.clone(), net.clone()
    lr = torch.tensor([0.5, 0.5], dtype=torch.float64)
    pp.step(a, "bp", x, y, lr, steps=0, state_lr=0.0, full_batch=8)
    pp.step(b, "bp", x, y, lr * 0.5, steps=0, state_lr=0.0)
    assert all(torch.allclose(u, v, atol=1e-15) for u, v in zip(a.W, b.W))


def test_continual_mapping():
    for seed in range(20):
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(continual.output_map(seed, "mod5"), perm % 5)
        distinct = continual.output_map(seed, "distinct")
        for t in range(2):
            assert sorted(distinct[5 * t : 5 * t + 5].tolist()) == [0, 1, 2, 3, 4]
            # the same order as the paper's shuffled labels within the task
            shuffled = perm[5 * t : 5 * t + 5]
            assert torch.equal(distinct[5 * t : 5 * t + 5].argsort(), shuffled.argsort())
    collide = [len(set(continual.output_map(s, "mod5")[:5].tolist())) < 5 for s in range(50)]
    assert any(collide) and not all(collide)
    assert continual.PaperSetup().mask_last and continual.PaperSetup().steps == 63


def test_drift_schedule_and_targets():
    assert concept_drift.paper_schedule(0, 64, -1.0) == (0, 1, 0.0)
    assert concept_drift.paper_schedule(1, 64, -1.0) == (1, 1, -1.0)
    assert concept_drift.paper_schedule(63, 64, -1.0) == (1, 1, -1.0)
    assert concept_drift.paper_schedule(64, 64, -1.0) == (1, 2, -1.0)
    assert concept_drift.paper_schedule(65, 64, -1.0) == (2, 2, -1.0)
    t = pp.signed_onehot(torch.tensor([0, 3, 9]), 10, -1.0)
    assert set(t.unique().tolist()) == {-1.0, 1.0} and torch.equal(t.argmax(1), torch.tensor([0, 3, 9]))
    assert set(pp.signed_onehot(torch.tensor([2]), 10, 0.0).unique().tolist()) == {0.0, 1.0}
    m = concept_drift.drift_mapping(5, 3)
    assert torch.equal(m[:5], torch.arange(5)) and sorted(m[5:].tolist()) == [5, 6, 7, 8, 9]
    setup = concept_drift.PaperSetup()
    assert (setup.low_target, setup.discount, setup.steps, setup.period) == (-1.0, 0.5, 127, 64)


def test_cli_protocol_errors(capsys):
    assert main(["repro", "continual", "--protocol", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--protocol" in err[0]
    assert main(["repro", "interference", "--protocol", "paper"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'paper' protocol" in err[0]


def test_experiments_refuse_an_unknown_protocol(tmp_path):
    import pytest

    from predcode.exceptions import OptionError

    for module in (continual, concept_drift):
        with pytest.raises(OptionError):
            module.run(tmp_path, False, 0, protocol="theirs")

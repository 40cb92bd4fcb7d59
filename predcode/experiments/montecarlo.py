r"""Monte Carlo predictive coding generates MNIST digits (Oliviers, Bogacz & Meulemans 2024).

One decoder ``latent[20] -> 128 -> 128 -> 784`` (ReLU, Gaussian hidden nodes of unit
variance, a latent with the prior :math:`\mathcal N(0, I)`, Bernoulli pixels; the paper's
sizes) is trained twice from the same initial weights on the same batches:

* **MCPC** (:class:`predcode.rules.MonteCarloPC`): the image clamped, ``mcpc_map_steps``
  of state SGD from the feed-forward pass, then Langevin dynamics on the latent and hidden
  nodes (step ``langevin_lr``, temperature 1) for ``burn_in`` steps, after which each of
  ``samples`` chain states adds its local weight gradient; Adam on the mean;
* **PC** (:class:`predcode.rules.InferenceLearning`): the same ``map_steps`` of state SGD
  (the MAP estimate), then the local weight gradient there; the same Adam.

New digits come from the learned generative model by ancestral sampling
(:func:`predcode.sampling.ancestral`: :math:`z \sim \mathcal N(0, I)`, each hidden node
:math:`\mu + \xi`, the image the Bernoulli mean :math:`\sigma(\mu)`), as in the paper.
They are scored by an independently trained classifier (a small CNN trained by backprop
on the MNIST training set; its test accuracy is recorded): the share of samples it
classifies with confidence above 0.9, the entropy of the histogram of its predicted
classes (in bits; uniform over 10 classes is 3.32), and the Fréchet distance between its
penultimate-layer features of the samples and of 5000 real test digits.  Real digits
(the other 5000 test digits) give the floor of each score.

The paper's Table 1 scores MCPC, PC and a deep latent Gaussian model by the Fréchet
Inception distance (pytorch-fid, 5000 samples; its ``table_1.py``); its values were not
retrievable here, so no paper number stands beside ours.  Our Fréchet distance uses the
MNIST classifier's features instead (Inception is an ImageNet network, and downloading its
weights is not part of a run), so only the ordering MCPC below PC is compared.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..graph import PCGraph
from ..inference import SGD
from ..models import decoder
from ..rules import InferenceLearning, MonteCarloPC
from ..sampling import Langevin, ancestral
from . import common, experiment

HP = {
    "sizes": [20, 128, 128, 784],
    "act": "relu",
    "batch": 128,
    "lr": 1e-3,
    "map_steps": 50,
    "map_lr": 0.1,
    "map_momentum": 0.5,
    "mcpc_map_steps": 20,
    "langevin_lr": 0.1,
    "burn_in": 20,
    "samples": 20,
}
SETTINGS = {
    "quick": {"epochs": 5, "seeds": [0], "n_samples": 5000, "judge_epochs": 2},
    "full": {"epochs": 20, "seeds": [0, 1, 2], "n_samples": 5000, "judge_epochs": 3},
}
CONFIDENT = 0.9


class Judge(nn.Module):
    """The independent classifier: two 5x5 convolutions (16, 32 channels, ReLU, 2x2 max
    pooling), a 128-unit ReLU layer (the features) and 10 logits; trained by backprop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.conv(x.reshape(-1, 1, 28, 28))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_judge(train_x: Tensor, train_y: Tensor, epochs: int, seed: int) -> Judge:
    """Adam (lr 1e-3), batch 128, ``epochs`` passes."""
    torch.manual_seed(seed)
    net = Judge()
    common.fit_classifier(net, train_x, train_y, epochs, seed)  # trains net in place and returns it
    return net.eval()


@torch.no_grad()
def judge_outputs(judge: Judge, images: Tensor, batch: int = 1000) -> tuple[Tensor, Tensor]:
    """``(class probabilities, features)`` of ``images`` ``[N, 784]``."""
    probs, feats = [], []
    for k in range(0, len(images), batch):
        f = judge.features(images[k : k + batch])
        feats.append(f)
        probs.append(F.softmax(judge.head(f), dim=1))
    return torch.cat(probs), torch.cat(feats)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``:

    .. math:: \|\mu_a - \mu_b\|^2 + \mathrm{tr}\,\Sigma_a + \mathrm{tr}\,\Sigma_b
              - 2\,\mathrm{tr}\big(\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2}\big)^{1/2}

    (float64; the matrix square roots from symmetric eigendecompositions)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(cov_a)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * middle)


def scores(judge: Judge, images: Tensor, reference_features: Tensor) -> dict:
    """Share classified with confidence > 0.9, the predicted-class histogram and its
    entropy (bits), the mean confidence, and the Fréchet distance to the reference."""
    probs, feats = judge_outputs(judge, images)
    conf, cls = probs.max(1)
    hist = torch.bincount(cls, minlength=10).double() / len(cls)
    entropy = float(-(hist[hist > 0] * hist[hist > 0].log2()).sum())
    return {
        "confident_share": float((conf > CONFIDENT).double().mean()),
        "mean_confidence": float(conf.double().mean()),
        "class_entropy_bits": entropy,
        "class_histogram": hist.tolist(),
        "frechet_distance": frechet_distance(feats, reference_features),
        "n": len(images),
    }


def train(
    graph: PCGraph, rule, train_x: Tensor, epochs: int, seed: int, hp: dict, say=print, limit: int | None = None
) -> list[float]:
    """``epochs`` passes in the order drawn from ``seed`` (incomplete last batch dropped);
    returns the mean relaxed energy per epoch."""
    opt = torch.optim.Adam(graph.model.parameters(), lr=hp["lr"])
    b, latent = hp["batch"], hp["sizes"][0]
    n = len(train_x) if limit is None else min(limit, len(train_x))
    energies = []
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        total = 0.0
        for k in range(n // b):
            idx = order[k * b : (k + 1) * b]
            stats = rule.step(graph, torch.zeros(b, latent), train_x[idx], opt)
            total += float(stats.energy_final)
        energies.append(total / (n // b))
        say(f"    epoch {epoch + 1}/{epochs}: relaxed energy {energies[-1]:.2f}")
    return energies


def rules(hp: dict, seed: int) -> dict:
    """The two rules, MCPC's chain seeded."""
    map_solver = SGD(hp["map_lr"], hp["map_momentum"])
    chain = Langevin(hp["langevin_lr"], generator=torch.Generator().manual_seed(seed + 7))
    return {
        "mcpc": MonteCarloPC(
            chain, burn_in=hp["burn_in"], samples=hp["samples"], map_solver=map_solver, map_stop=hp["mcpc_map_steps"]
        ),
        "pc": InferenceLearning(map_solver, hp["map_steps"]),
    }


def generate(graph: PCGraph, n: int, latent: int, seed: int, noise: bool = True) -> Tensor:
    """``n`` images (the Bernoulli means) by ancestral sampling; ``noise=False``: a latent
    drawn from the prior fed forward through the hidden nodes' means."""
    g = torch.Generator().manual_seed(seed)
    if noise:
        return ancestral(graph, [torch.zeros(n, latent)], g)[graph.output]
    z = torch.randn(n, latent, generator=g)
    with torch.no_grad():
        values = graph.feedforward([z])  # the latent's prediction is its prior mean, here z
        return graph.slots[graph.output].node_energy.mode(graph.node_prediction(graph.output, values))


def labelled_grid(path: Path, panels: dict[str, Tensor], judge: Judge, per_panel: int = 64) -> None:
    """One PNG: a grid of digits per panel, each titled with the judge's class and
    confidence (red when the confidence is at most 0.9)."""
    import matplotlib.pyplot as plt

    cols = 8
    rows = math.ceil(per_panel / cols)
    fig, axes = plt.subplots(rows, cols * len(panels), figsize=(1.05 * cols * len(panels), 1.2 * rows), squeeze=False)
    for p, (name, images) in enumerate(panels.items()):
        images = images[:per_panel]
        probs, _ = judge_outputs(judge, images)
        conf, cls = probs.max(1)
        for k in range(rows * cols):
            ax = axes[k // cols, p * cols + k % cols]
            ax.axis("off")
            if k >= len(images):
                continue
            ax.imshow(images[k].reshape(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(
                f"{int(cls[k])} {float(conf[k]):.2f}", fontsize=7, color="black" if conf[k] > CONFIDENT else "red"
            )
        axes[0, p * cols + cols // 2].text(
            0, -0.6, name, transform=axes[0, p * cols + cols // 2].transAxes, fontsize=11, ha="center", va="bottom"
        )
    fig.suptitle("judge's class and confidence above each digit (red: confidence <= 0.9)", fontsize=9, y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def score_bar_figure(out_dir: Path, table: dict) -> str:
    fig, axes = common.figure(3, 1, width=3.6, height=3.0)
    names = list(table)
    for ax, (metric, label) in zip(
        axes[0],
        [
            ("confident_share", "share with confidence > 0.9"),
            ("class_entropy_bits", "class-histogram entropy (bits)"),
            ("frechet_distance", "Fréchet distance (judge features)"),
        ],
    ):
        means = [table[n][metric]["mean"] for n in names]
        stds = [table[n][metric]["std"] for n in names]
        ax.bar(
            range(len(names)),
            means,
            yerr=stds,
            color=["#555555", "#1f77b4", "#d62728", "#9467bd", "#8c564b"][: len(names)],
        )
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(label, fontsize=9)
    return common.save(fig, out_dir, "scores.png")


@experiment(
    "monte-carlo-pc",
    "Monte Carlo PC (Langevin on latent and hidden nodes) vs plain PC: "
    "the same MNIST decoder, samples scored by an independent classifier",
)
def run(out_dir: Path, full: bool, seed: int, settings: dict | None = None, hp: dict | None = None) -> dict:
    job = common.Job("monte-carlo-pc", out_dir, full, seed)
    st = dict(settings or SETTINGS["full" if full else "quick"])
    hp = dict(hp or HP)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    train_set, test_set = common.load("mnist", "train"), common.load("mnist", "test")
    limit = st.get("train_limit")
    say(f"judge: CNN by backprop, {st['judge_epochs']} epochs")
    judge = train_judge(train_set.x, train_set.y, st["judge_epochs"], seed=1234)
    with torch.no_grad():
        judge_acc = float((judge(test_set.x).argmax(1) == test_set.y).double().mean())
    say(f"  judge test accuracy {judge_acc:.4f}")
    half = len(test_set) // 2
    _, ref_feats = judge_outputs(judge, test_set.x[:half])
    real = test_set.x[half : half + st["n_samples"]]
    per_seed: dict[str, list[dict]] = {
        "real digits": [],
        "MCPC": [],
        "PC": [],
        "MCPC, no hidden noise": [],
        "PC, no hidden noise": [],
    }
    energies, panels = {}, {}
    latent = hp["sizes"][0]
    for s in [seed + k for k in st["seeds"]]:
        torch.manual_seed(s)
        base = decoder(hp["sizes"], act=hp["act"], output_energy="bernoulli")
        for name, rule in rules(hp, s).items():
            model = copy.deepcopy(base)  # the same initial weights for both rules
            graph = PCGraph(model)
            say(f"seed {s}: {name}, {st['epochs']} epochs, {rule}")
            energies[(name, s)] = train(graph, rule, train_set.x, st["epochs"], s, hp, say, limit)
            label = "MCPC" if name == "mcpc" else "PC"
            images = generate(graph, st["n_samples"], latent, seed=s + 100)
            per_seed[label].append(scores(judge, images, ref_feats))
            flat = generate(graph, st["n_samples"], latent, seed=s + 100, noise=False)
            per_seed[f"{label}, no hidden noise"].append(scores(judge, flat, ref_feats))
            say(
                f"  {label}: {per_seed[label][-1]['confident_share']:.3f} confident, entropy "
                f"{per_seed[label][-1]['class_entropy_bits']:.3f} bits, FD "
                f"{per_seed[label][-1]['frechet_distance']:.2f}"
            )
            if s == seed + st["seeds"][0]:
                panels[label] = images
        per_seed["real digits"].append(scores(judge, real, ref_feats))
    panels = {"real digits": real, **panels}
    table = {
        name: {
            m: common.stats([r[m] for r in rows])
            for m in ("confident_share", "mean_confidence", "class_entropy_bits", "frechet_distance")
        }
        for name, rows in per_seed.items()
    }
    labelled_grid(out_dir / "samples.png", panels, judge)
    figures = ["samples.png", score_bar_figure(out_dir, table)]
    m, p, r = table["MCPC"], table["PC"], table["real digits"]
    holds = m["frechet_distance"]["mean"] < p["frechet_distance"]["mean"]
    summary = (
        f"MCPC samples: {m['confident_share']['mean']:.3f} classified with confidence > 0.9, "
        f"class entropy {m['class_entropy_bits']['mean']:.2f} bits, Fréchet distance "
        f"{m['frechet_distance']['mean']:.1f}; the same decoder by plain PC: "
        f"{p['confident_share']['mean']:.3f}, {p['class_entropy_bits']['mean']:.2f} bits, "
        f"{p['frechet_distance']['mean']:.1f}; real digits {r['confident_share']['mean']:.3f}, "
        f"{r['class_entropy_bits']['mean']:.2f} bits, {r['frechet_distance']['mean']:.1f} "
        f"({len(st['seeds'])} seed(s), {st['epochs']} epochs)"
    )
    notes = [
        f"Judge: a CNN trained by backprop ({st['judge_epochs']} epochs), test accuracy "
        f"{judge_acc:.4f}; Fréchet distances on its 128 penultimate features against test digits "
        f"0-{half - 1}; 'real digits' are test digits {half}-{half + st['n_samples'] - 1}.",
        "Paper (Oliviers, Bogacz & Meulemans 2024, Table 1): Fréchet Inception distances of MCPC, "
        "PC and a DLGM on MNIST; its values were not retrievable here, so none is set beside ours. "
        "Ours uses the judge's features (see the module docstring), so only the ordering is "
        f"compared: MCPC below PC {'holds' if holds else 'does not hold'} here.",
        "Rows 'no hidden noise' feed the latent sample forward without the hidden nodes' noise "
        "(for plain PC this is its best case: MAP learning does not fit the hidden variance).",
        "MCPC costs about (map_steps + burn_in + samples) relaxation steps and `samples` weight "
        "gradients per batch, PC map_steps steps and one weight gradient.",
    ]
    data = {
        "judge_test_accuracy": judge_acc,
        "scores": table,
        "per_seed": per_seed,
        "relaxed_energy_per_epoch": {f"{n} seed {s}": e for (n, s), e in energies.items()},
        "mcpc_fd_below_pc": holds,
    }
    job.write(
        hyperparameters={"model": hp, "settings": st},
        comparisons=[],
        data=data,
        figures=figures,
        summary=summary,
        notes=notes,
    )
    return {
        "runtime_s": round(job.clock(), 1),
        "mcpc": {k: v["mean"] for k, v in m.items()},
        "pc": {k: v["mean"] for k, v in p.items()},
        "real": {k: v["mean"] for k, v in r.items()},
    }

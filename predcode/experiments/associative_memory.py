r"""Associative memory with a generative PC network (Salvatori et al. 2021, anchor claim 13).

Protocol (Salvatori et al. 2021, "Associative memories via predictive coding", as in
pcx's ``examples/associative_memory``): a generative network ``latent[128] -> 256 ->
784`` (tanh; the latent node has a Gaussian prior) is trained by inference learning on
``N`` MNIST training images only (batch 50, T = 20 state steps at rate 0.1, AdamW 1e-3,
``EPOCHS`` epochs): the memories are stored in the weights; no latent is kept per image,
every presentation infers it afresh from the prior mean.  Recall, with the weights fixed:

* **noisy cue** ``c = s + N(0, 0.2^2)`` per pixel: Salvatori's iterated map: clamp the
  image node to the cue, relax (200 steps, rate 0.02), replace the cue by the image
  node's prediction; 5 times;
* **half-masked cue** (bottom half missing, zeros): clamp the known top half exactly
  (:class:`~predcode.query.Clamp` with a mask), relax the bottom half and every hidden
  node (2000 steps, rate 0.02), read the image node.

An image counts as recalled when the pixel MSE between the recall (clipped to [0, 1]) and
the stored image is below **0.005** (Salvatori's threshold).  Baseline: an autoencoder
``784 -> 256 -> 128 -> 256 -> 784`` (tanh, linear output) trained by backprop (Adam 1e-3,
MSE) on the same images for the same number of epochs; recall iterates it 50 times,
``x <- AE(x)`` (with the known half re-imposed after each pass for masked cues), as
overparameterised autoencoders are used as associative memories (Radhakrishnan et al.
2020); the one-pass result is recorded too.  Quick mode: ``N`` in 10..250 on MNIST;
``--full``: ``N`` up to 1000, MNIST and Fashion-MNIST.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypedDict

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as _data
from .. import plotting
from ..graph import PCGraph, prediction_of
from ..inference import SGD, GradientDescent
from ..models import decoder
from ..query import Clamp, infer
from ..rules import InferenceLearning
from . import common, experiment

SIZES = [128, 256, 784]


class Hyperparameters(TypedDict):
    """Storage: batch, state steps ``T`` and rate, AdamW's rate.  Recall: the cue noise,
    the MSE under which an image counts as recalled, the clamp-relax-predict iterations and
    steps per noisy cue, the steps for a masked cue, the recall rate and the autoencoder's
    passes."""

    batch: int
    T: int
    state_lr: float
    lr: float
    noise_std: float
    threshold: float
    noise_iterations: int
    noise_steps: int
    mask_steps: int
    recall_lr: float
    ae_iterations: int


class Settings(TypedDict):
    """Datasets, numbers of stored images N and training epochs."""

    datasets: list[str]
    sizes: list[int]
    epochs: int


RecallKey = Literal["pc_noise", "pc_mask", "ae_noise", "ae_mask", "ae_one_pass_noise", "ae_one_pass_mask"]


class Recall(TypedDict):
    """One recall method on one cue kind: the fraction of images recalled (MSE under the
    threshold) and the mean and median MSE to the stored images."""

    fraction_recalled: float
    mean_mse: float
    median_mse: float


class Row(TypedDict):
    """The recall of ``n`` stored images (one point of a curve): the autoencoder's training
    MSE and every method's recall from noisy and from half-masked cues."""

    n: int
    ae_train_mse: float
    pc_noise: Recall
    pc_mask: Recall
    ae_noise: Recall
    ae_mask: Recall
    ae_one_pass_noise: Recall
    ae_one_pass_mask: Recall


HP: Hyperparameters = {
    "batch": 50,
    "T": 20,
    "state_lr": 0.1,
    "lr": 1e-3,
    "noise_std": 0.2,
    "threshold": 0.005,
    "noise_iterations": 5,
    "noise_steps": 200,
    "mask_steps": 2000,
    "recall_lr": 0.02,
    "ae_iterations": 50,
}
SETTINGS: dict[str, Settings] = {
    "quick": {"datasets": ["mnist"], "sizes": [10, 50, 100, 250], "epochs": 200},
    "full": {"datasets": ["mnist", "fashion-mnist"], "sizes": [10, 50, 100, 250, 500, 1000], "epochs": 500},
}


def store_pc(images: Tensor, epochs: int, seed: int) -> PCGraph:
    """Train the generative PC network on ``images`` (the memories)."""
    torch.manual_seed(seed)
    graph = PCGraph(decoder(SIZES, act="tanh"))
    rule = InferenceLearning(SGD(HP["state_lr"]), HP["T"])
    opt = torch.optim.AdamW(graph.model.parameters(), lr=HP["lr"], weight_decay=0.0)
    n = images.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for k in range(0, n, HP["batch"]):
            idx = order[k : k + HP["batch"]]
            rule.step(graph, torch.zeros(len(idx), SIZES[0]), images[idx], opt)
    return graph


def store_ae(images: Tensor, epochs: int, seed: int) -> nn.Module:
    """The backprop autoencoder baseline, trained on the same images and batches."""
    torch.manual_seed(seed)
    ae = nn.Sequential(
        nn.Linear(784, 256),
        nn.Tanh(),
        nn.Linear(256, SIZES[0]),
        nn.Tanh(),
        nn.Linear(SIZES[0], 256),
        nn.Tanh(),
        nn.Linear(256, 784),
    )
    opt = torch.optim.Adam(ae.parameters(), lr=HP["lr"])
    n = images.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for k in range(0, n, HP["batch"]):
            idx = order[k : k + HP["batch"]]
            opt.zero_grad()
            F.mse_loss(ae(images[idx]), images[idx]).backward()
            opt.step()
    return ae


def cues(images: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Noisy cues, half-masked cues (bottom half zero) and the known-pixel mask."""
    noisy = images + HP["noise_std"] * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros_like(images, dtype=torch.bool)
    mask[:, :392] = True  # the top 14 rows of 28
    return noisy, torch.where(mask, images, torch.zeros_like(images)), mask


def recall_pc(graph: PCGraph, noisy: Tensor, masked: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """PC recall of the noisy (iterated clamp-relax-predict) and masked (partial clamp) cues."""
    n = noisy.shape[0]
    prior = torch.zeros(n, SIZES[0])
    image = graph.index("image")
    solver = GradientDescent(HP["recall_lr"])
    x = noisy
    for _ in range(HP["noise_iterations"]):
        r = infer(graph, {"input": prior, "image": x}, solver=solver, stop=HP["noise_steps"])
        x = prediction_of(r.predictions, image)
    r = infer(graph, {"input": prior, "image": Clamp(masked, mask)}, solver=solver, stop=HP["mask_steps"])
    return x.clamp(0, 1), r.values[image].clamp(0, 1)


@torch.no_grad()
def recall_ae(ae: nn.Module, noisy: Tensor, masked: Tensor, mask: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """Autoencoder recall: ``iterations`` passes (known half re-imposed for masked cues)."""
    x, y = noisy, masked
    for _ in range(iterations):
        x = ae(x)
        y = torch.where(mask, masked, ae(y))
    return x.clamp(0, 1), y.clamp(0, 1)


def mse(a: Tensor, b: Tensor) -> Tensor:
    return ((a - b) ** 2).mean(dim=1)


RECALL_ROWS = (
    "stored image",
    "noisy cue",
    "PC, from noisy",
    "AE, from noisy",
    "half-masked cue",
    "PC, from masked",
    "AE, from masked",
)


def recall_grid(path: Path, rows: list[Tensor], dataset: str, n: int) -> str:
    """The recall figure: one labelled row per entry of :data:`RECALL_ROWS` (stored images,
    the noisy cue and both networks' recall of it, the masked cue and both recalls), one
    column per stored image."""
    plotting.image_grid(
        path,
        rows,
        RECALL_ROWS,
        [f"#{k + 1}" for k in range(rows[0].shape[0])],
        title=f"{dataset}, {n} stored images (PC: predictive coding, AE: backprop autoencoder)",
    )
    return path.name


def plot_curves(curves: dict[str, list[Row]], out_dir: Path) -> str:
    """``recall_vs_n.png``: fraction recalled against N per dataset (PC solid, AE dashed
    iterated and dotted one pass)."""
    thr = HP["threshold"]
    lines: tuple[tuple[RecallKey, str, str], ...] = (  # (recall, line style, legend name)
        ("pc_noise", "-o", "PC"),
        ("pc_mask", "-s", "PC"),
        ("ae_noise", "--o", "backprop AE x50"),
        ("ae_mask", "--s", "backprop AE x50"),
        ("ae_one_pass_noise", ":o", "backprop AE x1"),
        ("ae_one_pass_mask", ":s", "backprop AE x1"),
    )
    fig, axes = common.figure(ncols=len(curves))
    for ax, (dataset, rows) in zip(axes[0], curves.items()):
        ns = [r["n"] for r in rows]
        for key, style, name in lines:
            ax.plot(
                ns,
                [r[key]["fraction_recalled"] for r in rows],
                style,
                color=common.COLORS["pc" if key.startswith("pc") else "bp"],
                alpha=0.5 if "one_pass" in key else 1.0,
                label=name + (", noisy cue" if key.endswith("noise") else ", half-masked cue"),
            )
        ax.set_xscale("log")
        ax.set_xlabel("stored images N")
        ax.set_ylabel(f"fraction recalled (MSE < {thr})")
        ax.set_title(dataset)
        ax.set_ylim(-0.03, 1.03)
        ax.legend(fontsize=7)
    return common.save(fig, out_dir, "recall_vs_n.png")


@experiment(
    "associative-memory",
    "store N MNIST images in a generative PC net, recall from noisy "
    "and half-masked cues vs a backprop autoencoder (Salvatori et al. 2021)",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("associative-memory", out_dir, full, seed)
    st = SETTINGS["full" if full else "quick"]
    thr = HP["threshold"]
    figures: list[str] = []
    curves: dict[str, list[Row]] = {}  # per dataset, one row per N
    for dataset in st["datasets"]:
        pool, _ = _data.load(dataset, "train", normalize="[0,1]")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        rows: list[Row] = []
        for n in st["sizes"]:
            images = pool[order[:n]]
            noisy, masked, mask = cues(images, seed + n)
            pc = store_pc(images, st["epochs"], seed)
            pc_noise, pc_mask = recall_pc(pc, noisy, masked, mask)
            ae = store_ae(images, st["epochs"], seed)
            ae_noise, ae_mask = recall_ae(ae, noisy, masked, mask, HP["ae_iterations"])
            ae1_noise, ae1_mask = recall_ae(ae, noisy, masked, mask, 1)
            with torch.no_grad():
                train_mse_ae = float(mse(ae(images), images).mean())
            errors: dict[RecallKey, Tensor] = {
                "pc_noise": mse(pc_noise, images),
                "pc_mask": mse(pc_mask, images),
                "ae_noise": mse(ae_noise, images),
                "ae_mask": mse(ae_mask, images),
                "ae_one_pass_noise": mse(ae1_noise, images),
                "ae_one_pass_mask": mse(ae1_mask, images),
            }
            recall: dict[RecallKey, Recall] = {
                k: {
                    "fraction_recalled": float((e < thr).float().mean()),
                    "mean_mse": float(e.mean()),
                    "median_mse": float(e.median()),
                }
                for k, e in errors.items()
            }
            row: Row = {
                "n": n,
                "ae_train_mse": train_mse_ae,
                "pc_noise": recall["pc_noise"],
                "pc_mask": recall["pc_mask"],
                "ae_noise": recall["ae_noise"],
                "ae_mask": recall["ae_mask"],
                "ae_one_pass_noise": recall["ae_one_pass_noise"],
                "ae_one_pass_mask": recall["ae_one_pass_mask"],
            }
            rows.append(row)
            print(
                f"{dataset} N={n}: " + ", ".join(f"{k} {row[k]['fraction_recalled']:.2f}" for k in errors), flush=True
            )
            if n == st["sizes"][min(1, len(st["sizes"]) - 1)]:
                show = slice(0, 10)
                figures.append(
                    recall_grid(
                        out_dir / f"recall_{dataset}_N{n}.png",
                        [
                            images[show],
                            noisy[show].clamp(0, 1),
                            pc_noise[show],
                            ae_noise[show],
                            masked[show],
                            pc_mask[show],
                            ae_mask[show],
                        ],
                        dataset,
                        n,
                    )
                )
        curves[dataset] = rows
    figures.append(plot_curves(curves, out_dir))
    job.write(
        hyperparameters={"sizes": SIZES, **HP, **st},
        comparisons=[],
        data={"curves": curves},
        figures=figures,
        summary="fraction recalled (MSE < 0.005), PC vs backprop AE: "
        + "; ".join(
            f"{d} N={r['n']}: noise {r['pc_noise']['fraction_recalled']:.2f} vs "
            f"{r['ae_noise']['fraction_recalled']:.2f}, mask {r['pc_mask']['fraction_recalled']:.2f}"
            f" vs {r['ae_mask']['fraction_recalled']:.2f}"
            for d, rows in curves.items()
            for r in rows
        ),
        notes=["recall grids: rows = stored, noisy cue, PC recall, AE recall, masked cue, PC recall, AE recall"],
    )
    return {
        "runtime_s": round(job.clock(), 1),
        "fraction_recalled": {
            d: {
                r["n"]: {k: r[k]["fraction_recalled"] for k in ("pc_noise", "pc_mask", "ae_noise", "ae_mask")}
                for r in rows
            }
            for d, rows in curves.items()
        },
    }

r"""Generation with predictive coding networks.

A PC network is a generative model: after training it can be conditioned on any subset of
its nodes.  This experiment shows four uses of one call, :func:`predcode.query.infer`.

1. **Generative decoder** (pcx's ``examples/autoencoders/linear`` benchmark, MNIST config):
   ``latent[64] -> 128 -> 128 -> 784``, hard-tanh, linear squared-error output, trained by
   inference learning with the image clamped: batch 200, T = 20 state-SGD steps (lr
   0.01985, momentum 0.15, per-sample gradients as pcx's ``scale_by_batch_size``), AdamW
   lr 3.401e-4, weight decay 1.25e-5, 30 epochs, images in [0, 1], incomplete last batch
   dropped.  Metric (pcx's ``eval``): test reconstruction MSE per pixel, the latent
   inferred by the same T = 20 steps with the image clamped, the reconstruction being the
   feed-forward pass from that latent.  Differences from pcx: our latent node keeps its
   Gaussian prior :math:`\tfrac12\|z\|^2` (pcx's has no energy), and hidden nodes start
   at the feed-forward pass from :math:`z = 0` (pcx starts them at zero).
   Pictures: reconstructions, samples from the prior :math:`N(0, I)` and from a Gaussian
   fitted to the inferred latents of training images.
2. **Label-conditioned decoder**: the same decoder whose first layer also reads the
   one-hot label (an input), trained the same way; generation clamps the label and feeds
   a latent.
3. **A discriminative network run in reverse**: an MLP 784-128-128-10 trained by IL as a
   classifier; clamp its output to a one-hot label and relax the image, which is free.
   Without a prior the image only has to explain the hidden layer (any image the first
   layer maps there will do); with a **pixel prior** the image becomes a node predicted by
   the data mean with per-pixel precision :math:`1/(\sigma_i^2 + 0.05)` fitted to the
   training set; with a **decoder prior** the trained decoder of part 1 is placed on top
   (``latent -> decoder -> image -> classifier -> label``, one graph) so the image must be
   one the decoder can produce.  For the query the classifier's nodes get precision 10
   (same weights), so the label is explained by the image instead of being absorbed by
   hidden-node errors; 2000 gradient steps at rate 0.02.  Plausibility is measured by an independent backprop
   classifier (the fraction of generated images it labels as clamped) and by the pixel
   MSE to the nearest of 10,000 training images.

Quick mode trains the decoders for fewer epochs (``SETTINGS``); ``--full`` uses pcx's 30.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as _data
from .. import plotting
from ..app.query_cli import save_network
from ..energy import Gaussian
from ..graph import PCGraph
from ..inference import SGD, GradientDescent
from ..models import decoder, mlp
from ..models.mlp import activation
from ..node import Node
from ..query import infer
from ..rules import InferenceLearning
from . import common, experiment


class NetworkHP(TypedDict):
    """A network trained by inference learning: layer sizes, activation, batch, state steps
    ``T``, the state SGD's rate and momentum, AdamW's rate and weight decay."""

    sizes: list[int]
    act: str
    batch: int
    T: int
    state_lr: float
    state_momentum: float
    lr: float
    weight_decay: float


class DecoderHP(NetworkHP):
    """The decoder's :class:`NetworkHP` and the epochs of pcx's protocol."""

    epochs: int


class Settings(TypedDict):
    """Epochs of the decoder, the label-conditioned decoder and the classifier; test images."""

    epochs: int
    cond_epochs: int
    clf_epochs: int
    test: int


class ReverseHP(TypedDict):
    """The reverse queries: relaxation steps and rate, the classifier nodes' precision, the
    pixel prior's variance floor and the queries per label."""

    steps: int
    state_lr: float
    precision: float
    prior_eps: float
    batch_per_label: int


class Plausibility(TypedDict):
    """How real images look: the independent judge's accuracy on their labels and the mean
    pixel MSE to the nearest of 10,000 training images."""

    judge_accuracy: float
    nearest_train_mse: float


PCX: DecoderHP = {
    "sizes": [64, 128, 128, 784],
    "act": "hard-tanh",
    "batch": 200,
    "T": 20,
    "state_lr": 0.019849750737164974,
    "state_momentum": 0.15,
    "lr": 3.401383559476183e-4,
    "weight_decay": 1.2514685116492747e-05,
    "epochs": 30,
}
CLASSIFIER: NetworkHP = {
    "sizes": [784, 128, 128, 10],
    "act": "gelu-tanh",
    "batch": 128,
    "T": 8,
    "state_lr": 0.010535,
    "state_momentum": 0.65,
    "lr": 2.969e-4,
    "weight_decay": 3.55e-4,
}
SETTINGS: dict[str, Settings] = {
    "quick": {"epochs": 2, "cond_epochs": 2, "clf_epochs": 1, "test": 2000},
    "full": {"epochs": 30, "cond_epochs": 30, "clf_epochs": 10, "test": 10000},
}
REVERSE: ReverseHP = {"steps": 2000, "state_lr": 0.02, "precision": 10.0, "prior_eps": 0.05, "batch_per_label": 2}


class ConditionalDecoder(nn.Module):
    """``[label, latent] -> hidden -> ... -> image``: the label is a model input (clamped),
    the latent a node with a Gaussian prior around the second input."""

    def __init__(self, classes: int = 10, sizes=(64, 128, 128, 784), act: str = "hard-tanh") -> None:
        super().__init__()
        self.latent = Node(name="latent")
        dims = [classes + sizes[0], *sizes[1:]]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.acts = nn.ModuleList(activation(act) for _ in dims[1:-1])
        self.nodes = nn.ModuleList([*(Node(name=f"h{k + 1}") for k in range(len(dims) - 2)), Node(name="image")])

    def forward(self, label: Tensor, prior: Tensor) -> Tensor:
        h = torch.cat([label, self.latent(prior)], dim=-1)
        for k, layer in enumerate(self.layers):
            h = layer(h)
            if k < len(self.acts):
                h = self.acts[k](h)
            h = self.nodes[k](h)
        return h


def conditional_decoder(classes: int = 10, sizes=(64, 128, 128, 784), act: str = "hard-tanh"):
    """Factory of :class:`ConditionalDecoder` (used by ``predcode query`` checkpoints)."""
    return ConditionalDecoder(classes, tuple(sizes), act)


def train_il(
    graph: PCGraph, inputs_fn, targets: Tensor, epochs: int, seed: int, hp: NetworkHP, say=print
) -> list[float]:
    """Inference learning with state SGD and AdamW, incomplete last batch dropped; returns
    the mean feed-forward loss per epoch."""
    rule = InferenceLearning(SGD(hp["state_lr"], hp["state_momentum"]), hp["T"])
    opt = torch.optim.AdamW(graph.model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    losses = []
    n, b = targets.shape[0], hp["batch"]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        total, count = 0.0, 0
        for k in range(n // b):
            idx = order[k * b : (k + 1) * b]
            stats = rule.step(graph, inputs_fn(idx), targets[idx], opt)
            total, count = total + float(stats.loss), count + 1
        losses.append(total / count)
        say(f"  epoch {epoch + 1}/{epochs}: feed-forward loss {losses[-1]:.4f}")
    return losses


def infer_latents(
    graph: PCGraph, inputs: list[Tensor], images: Tensor, hp: NetworkHP, steps: int | None = None, batch: int = 1000
) -> Tensor:
    """Latents with the image clamped: ``steps`` (default T) of the training solver."""
    out = []
    latent = graph.index("latent")
    for i in range(0, images.shape[0], batch):
        clamp: dict[str | int, Tensor] = {graph.inputs[k]: x[i : i + batch] for k, x in enumerate(inputs)}
        clamp[graph.index("image")] = images[i : i + batch]
        r = infer(
            graph, clamp, solver=SGD(hp["state_lr"], hp["state_momentum"]), stop=steps if steps is not None else hp["T"]
        )
        out.append(r.values[latent])
    return torch.cat(out)


def nearest_mse(images: Tensor, reference: Tensor) -> Tensor:
    """Per image, the pixel MSE to the nearest reference image."""
    d = torch.cdist(images.double(), reference.double()) ** 2 / images.shape[1]
    return d.min(dim=1).values


def judge(train_x: Tensor, train_y: Tensor, seed: int) -> nn.Module:
    """An independent backprop classifier (784-256-10 ReLU, Adam, 3 epochs)."""
    torch.manual_seed(seed + 17)
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    return common.fit_classifier(net, train_x, train_y, 3, seed)


def with_precision(model: nn.Sequential, precision: float) -> nn.Sequential:
    """The same layers (shared weights) with every node's Gaussian precision set to
    ``precision``: a confident classifier path, so that a clamped label is explained by
    the image rather than absorbed by the hidden nodes' errors."""
    return nn.Sequential(*[Node(Gaussian(precision), name=m.name) if isinstance(m, Node) else m for m in model])


def reverse_queries(
    clf: nn.Sequential,
    dec: nn.Sequential,
    mean: Tensor,
    var: Tensor,
    labels: Tensor,
    seed: int,
    steps: int,
    state_lr: float = 0.02,
    precision: float = 10.0,
    prior_eps: float = 0.05,
) -> dict[str, Tensor]:
    """Images for ``labels`` from the classifier run in reverse, under three priors; the
    classifier's nodes get ``precision`` (:func:`with_precision`)."""
    clf = with_precision(clf, precision)
    g = torch.Generator().manual_seed(seed)
    b = labels.shape[0]
    onehot = F.one_hot(labels, 10).float()
    start = mean.expand(b, -1) + 0.1 * torch.randn(b, 784, generator=g)
    out = {}
    # (a) no prior: the input is a free input slot, nothing but the first layer's error acts on it
    graph = PCGraph(clf)
    r = infer(graph, {graph.output: onehot}, init={"input": start}, solver=GradientDescent(state_lr), stop=steps)
    out["none"] = r.values[graph.inputs[0]]
    # (b) per-pixel Gaussian prior fitted to the data: the image is a node predicted by the mean
    prior = Gaussian(units=784)
    prior.log_precision.copy_(-torch.log(var + prior_eps))
    graph = PCGraph(nn.Sequential(Node(prior, name="image"), *clf))
    r = infer(
        graph,
        {"input": mean.expand(b, -1), graph.output: onehot},
        init={"image": start},
        solver=GradientDescent(state_lr),
        stop=steps,
    )
    out["pixel-prior"] = r.values[graph.index("image")]
    # (c) the trained PC decoder as the prior: latent -> decoder -> image -> classifier -> label
    graph = PCGraph(nn.Sequential(*dec, *clf))
    first = dec[1]
    assert isinstance(first, nn.Linear), "decoder(): [latent node, first linear layer, ...]"
    z0 = torch.randn(b, first.in_features, generator=g)
    r = infer(
        graph,
        {"input": torch.zeros(b, first.in_features), graph.output: onehot},
        init={"latent": z0},
        solver=GradientDescent(state_lr),
        stop=steps,
    )
    out["decoder-prior"] = r.values[graph.index("image")]
    return out


def sample_grid(path: Path, samples: Tensor, title: str) -> None:
    """Samples as rows of 16, labelled by their index range."""
    rows = list(samples.split(16))
    plotting.image_grid(
        path,
        rows,
        [f"samples {16 * k + 1}-{16 * k + len(r)}" for k, r in enumerate(rows)],
        title=f"PC decoder, {title}",
    )


@experiment(
    "generation",
    "PC decoder [64,128,128,784] on MNIST (pcx protocol), label-conditioned "
    "generation, a classifier run in reverse with and without a prior",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    job = common.Job("generation", out_dir, full, seed)
    st = SETTINGS["full" if full else "quick"]
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    train_x, train_y = _data.load("mnist", "train", normalize="[0,1]")
    test_x, _ = _data.load("mnist", "test", normalize="[0,1]")
    test_x = test_x[: st["test"]]
    latent_dim = PCX["sizes"][0]
    figures: list[str] = []
    data: dict[str, object] = {}  # result.json's data, one entry per part

    # 1. the generative decoder ---------------------------------------------------------
    torch.manual_seed(seed)
    dec = decoder(PCX["sizes"], act=PCX["act"])
    graph = PCGraph(dec)
    say(f"decoder {PCX['sizes']}: {st['epochs']} epochs")
    zeros = lambda idx: torch.zeros(len(idx), latent_dim)  # noqa: E731
    losses = train_il(graph, zeros, train_x, st["epochs"], seed, PCX, say)
    with torch.no_grad():
        z_test = infer_latents(graph, [torch.zeros(len(test_x), latent_dim)], test_x, PCX)
        recon = dec(z_test)
        mse = float(((recon - test_x) ** 2).mean())
        z_long = infer_latents(graph, [torch.zeros(len(test_x), latent_dim)], test_x, PCX, steps=200)
        mse_long = float(((dec(z_long) - test_x) ** 2).mean())
        mean_image_mse = float(((train_x.mean(0) - test_x) ** 2).mean())
        z_train = infer_latents(graph, [torch.zeros(5000, latent_dim)], train_x[:5000], PCX)
        mu, cov = z_train.mean(0), torch.cov(z_train.T) + 1e-6 * torch.eye(latent_dim)
        g = torch.Generator().manual_seed(seed + 1)
        eps = torch.randn(64, latent_dim, generator=g)
        samples_prior = dec(eps)
        samples_fit = dec(mu + eps @ torch.linalg.cholesky(cov).T)
    save_network(
        out_dir / "decoder.safetensors",
        dec,
        "decoder",
        {"sizes": PCX["sizes"], "act": PCX["act"]},
        [[latent_dim]],
        dataset="mnist",
        normalize="[0,1]",
        info={"experiment": "generation"},
    )
    plotting.image_grid(
        out_dir / "reconstructions.png",
        [test_x[:16], recon[:16]],
        ["test image", "reconstruction"],
        title="PC decoder: test images and their reconstructions (latent relaxed, T = 20)",
    )
    sample_grid(out_dir / "samples_prior.png", samples_prior, "latent drawn from N(0, I)")
    sample_grid(
        out_dir / "samples_fitted.png", samples_fit, "latent drawn from a Gaussian fitted to the training latents"
    )
    figures += ["reconstructions.png", "samples_prior.png", "samples_fitted.png"]
    data["decoder"] = {
        "epochs": st["epochs"],
        "train_loss_per_epoch": losses,
        "test_mse_T20": mse,
        "test_mse_T200": mse_long,
        "test_mse_of_the_mean_image": mean_image_mse,
        "test_images": len(test_x),
        "latent_norm_mean": float(z_train.norm(dim=1).mean()),
    }
    say(f"decoder test MSE {mse:.5f} (T=20), {mse_long:.5f} (T=200); mean image {mean_image_mse:.5f}")

    # judge and nearest-neighbour reference --------------------------------------------
    bp = judge(train_x, train_y, seed)
    reference = train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:10000]]

    def plausibility(images: Tensor, labels: Tensor) -> Plausibility:
        with torch.no_grad():
            acc = float((bp(images).argmax(1) == labels).float().mean())
        return {"judge_accuracy": acc, "nearest_train_mse": float(nearest_mse(images, reference).mean())}

    # 2. label-conditioned decoder -------------------------------------------------------
    torch.manual_seed(seed + 2)
    cdec = conditional_decoder(10, PCX["sizes"], PCX["act"])
    cgraph = PCGraph(cdec)
    onehot_train = F.one_hot(train_y, 10).float()
    say(f"label-conditioned decoder: {st['cond_epochs']} epochs")
    closses = train_il(
        cgraph,
        lambda idx: [onehot_train[idx], torch.zeros(len(idx), latent_dim)],
        train_x,
        st["cond_epochs"],
        seed + 2,
        PCX,
        say,
    )
    with torch.no_grad():
        zc = infer_latents(cgraph, [onehot_train[:5000], torch.zeros(5000, latent_dim)], train_x[:5000], PCX)
        cmu, ccov = zc.mean(0), torch.cov(zc.T) + 1e-6 * torch.eye(latent_dim)
        labels = torch.arange(10).repeat_interleave(8)
        eps = torch.randn(len(labels), latent_dim, generator=torch.Generator().manual_seed(seed + 3))
        zs = cmu + eps @ torch.linalg.cholesky(ccov).T
        cond = cdec(F.one_hot(labels, 10).float(), zs)
        cond_zero = cdec(F.one_hot(torch.arange(10), 10).float(), torch.zeros(10, latent_dim))
    save_network(
        out_dir / "conditional_decoder.safetensors",
        cdec,
        "predcode.experiments.generation:conditional_decoder",
        {"classes": 10, "sizes": PCX["sizes"], "act": PCX["act"]},
        [[10], [latent_dim]],
        dataset="mnist",
        normalize="[0,1]",
        info={"experiment": "generation"},
    )
    plotting.image_grid(
        out_dir / "conditional.png",
        list(cond.view(10, -1, cond.shape[-1])),
        [f"label {k}" for k in range(10)],
        title="label-conditioned decoder: 8 samples per clamped label",
    )
    figures.append("conditional.png")
    cond_samples = plausibility(cond, labels)
    data["conditional_decoder"] = {
        "epochs": st["cond_epochs"],
        "train_loss_per_epoch": closses,
        "samples": cond_samples,
        "at_latent_zero": plausibility(cond_zero, torch.arange(10)),
    }
    say(f"conditional samples: {cond_samples}")

    # 3. a discriminative network run in reverse -----------------------------------------
    torch.manual_seed(seed + 4)
    clf = mlp(CLASSIFIER["sizes"], act=CLASSIFIER["act"])
    say(f"classifier {CLASSIFIER['sizes']} by IL: {st['clf_epochs']} epochs")
    train_il(PCGraph(clf), lambda idx: train_x[idx], train_y, st["clf_epochs"], seed + 4, CLASSIFIER, say)
    with torch.no_grad():
        clf_acc = float((clf(test_x).argmax(1) == _data.load("mnist", "test")[1][: len(test_x)]).float().mean())
    labels = torch.arange(10).repeat(REVERSE["batch_per_label"])
    mean, var = train_x.mean(0), train_x.var(0)
    images = reverse_queries(
        clf,
        dec,
        mean,
        var,
        labels,
        seed + 5,
        REVERSE["steps"],
        REVERSE["state_lr"],
        REVERSE["precision"],
        REVERSE["prior_eps"],
    )
    reverse = {}
    for name, imgs in images.items():
        with torch.no_grad():
            own = float((clf(imgs).argmax(1) == labels).float().mean())
        reverse[name] = {
            "classifier_own_accuracy": own,
            **plausibility(imgs.clamp(0, 1), labels),
            "pixel_range": [float(imgs.min()), float(imgs.max())],
        }
        plotting.image_grid(
            out_dir / f"reverse_{name}.png",
            [imgs[:10], imgs[10:20]],
            ["query 1", "query 2"],
            [f"label {int(k)}" for k in labels[:10]],
            title=f"classifier run in reverse, prior on the image: {name}",
        )
        figures.append(f"reverse_{name}.png")
    data["reverse"] = {"classifier_test_accuracy": clf_acc, "steps": REVERSE["steps"], "per_prior": reverse}
    say(f"reverse: {reverse}")
    data["real_test_images"] = plausibility(test_x[:200], _data.load("mnist", "test")[1][:200])

    job.write(
        hyperparameters={"decoder": PCX, "classifier": CLASSIFIER, "settings": st, "reverse": REVERSE},
        comparisons=[],
        data=data,
        figures=figures,
        summary=(
            f"PC decoder test reconstruction MSE {mse:.4f} after {st['epochs']} epochs "
            f"(mean image {mean_image_mse:.4f}); label-conditioned samples judged "
            f"{cond_samples['judge_accuracy']:.2f} correct; classifier "
            "run in reverse: judge accuracy " + ", ".join(f"{k} {v['judge_accuracy']:.2f}" for k, v in reverse.items())
        ),
        notes=[
            "pcx publishes the protocol (examples/autoencoders/linear, MNIST config), not a "
            "number we could anchor to; the test MSE here is ours only.",
            "Images in the reverse grids: first two rows of each prior, labels 0-9.",
        ],
    )
    return {
        "runtime_s": round(job.clock(), 1),
        "test_mse": mse,
        "test_mse_T200": mse_long,
        "conditional_judge_accuracy": cond_samples["judge_accuracy"],
        "reverse_judge_accuracy": {k: v["judge_accuracy"] for k, v in reverse.items()},
    }

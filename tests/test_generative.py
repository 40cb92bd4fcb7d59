"""Generation and associative memory: the mechanics the experiments
rely on, on tiny networks (the experiments themselves: ``predcode repro generation``,
``predcode repro associative-memory``)."""

from __future__ import annotations

import pytest
import torch

from predcode import PCGraph
from predcode.app.query_cli import load_network, save_network
from predcode.experiments import associative_memory as am
from predcode.experiments.generation import conditional_decoder, nearest_mse, reverse_queries
from predcode.models import decoder, mlp

torch.set_num_threads(1)


def test_conditional_decoder_graph_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = conditional_decoder(10, (4, 8, 16), "hard-tanh")
    graph = PCGraph(model)
    assert graph.names == ["label", "prior", "latent", "h1", "image"]
    assert graph.slots[graph.index("h1")].parents == (graph.index("label"), graph.index("latent"))
    path = save_network(
        tmp_path / "c.safetensors",
        model,
        "predcode.experiments.generation:conditional_decoder",
        {"classes": 10, "sizes": [4, 8, 16], "act": "hard-tanh"},
        [[10], [4]],
    )
    net = load_network(path)
    label = torch.eye(10)[:3]
    z = torch.randn(3, 4)
    torch.testing.assert_close(net.graph.model(label, z), model(label, z))


def test_reverse_query_priors_keep_images_near_the_data():
    """With the label clamped and the image free, the pixel prior keeps the image closer
    to the data mean than no prior does; the decoder prior puts it near the decoder's range."""
    torch.manual_seed(1)
    clf = mlp([784, 16, 10], act="tanh")
    dec = decoder((4, 16, 784), act="tanh")
    mean = torch.rand(784) * 0.5
    var = torch.full((784,), 0.05)
    labels = torch.arange(4)
    out = reverse_queries(clf, dec, mean, var, labels, seed=0, steps=100)
    dist = {k: float(((v - mean) ** 2).mean()) for k, v in out.items()}
    assert dist["pixel-prior"] < dist["none"]
    assert all(v.shape == (4, 784) and torch.isfinite(v).all() for v in out.values())


def test_nearest_mse_is_zero_for_stored_images():
    ref = torch.rand(20, 784)
    assert float(nearest_mse(ref[:5], ref).max()) < 1e-12
    assert float(nearest_mse(ref[:5] + 0.1, ref).min()) > 0


def test_associative_memory_cues_and_recall_keep_the_known_half():
    torch.manual_seed(2)
    images = torch.rand(3, 784)
    noisy, masked, mask = am.cues(images, seed=0)
    assert torch.equal(masked[:, :392], images[:, :392]) and masked[:, 392:].abs().sum() == 0
    assert 0.15 < float((noisy - images).std()) < 0.25
    graph = PCGraph(decoder(am.SIZES, act="tanh"))
    old = dict(am.HP)
    am.HP.update(noise_iterations=1, noise_steps=5, mask_steps=5)
    try:
        rec_noise, rec_mask = am.recall_pc(graph, noisy, masked, mask)
    finally:
        am.HP.clear()
        am.HP.update(old)
    assert torch.equal(rec_mask[:, :392], images[:, :392].clamp(0, 1))
    ae = torch.nn.Sequential(torch.nn.Linear(784, 784))
    _, ae_mask = am.recall_ae(ae, noisy, masked, mask, iterations=3)
    assert torch.equal(ae_mask[:, :392], images[:, :392])


@pytest.mark.slow  # ~40 s on a busy core: 1260 IL steps of a 128-256-784 decoder
def test_pc_memory_stores_a_few_images():
    """A handful of images trained for a few hundred IL steps are recalled from noisy cues
    better than the cue itself."""
    g = torch.Generator().manual_seed(3)
    images = (torch.rand(5, 784, generator=g) > 0.7).float()
    graph = am.store_pc(images, epochs=60, seed=0)
    noisy, masked, mask = am.cues(images, seed=1)
    old = dict(am.HP)
    am.HP.update(noise_iterations=2, noise_steps=100, mask_steps=1)
    try:
        rec_noise, _ = am.recall_pc(graph, noisy, masked, mask)
    finally:
        am.HP.clear()
        am.HP.update(old)
    assert float(am.mse(rec_noise, images).mean()) < float(am.mse(noisy.clamp(0, 1), images).mean())

"""Queries: clamp any nodes or masked parts of nodes, relax the rest, read any
node; ``predcode query`` end to end on tiny checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from predcode import GraphError, InputError, Node, PCGraph
from predcode.app import checkpoint
from predcode.app.cli import main
from predcode.app.config import TrainConfig
from predcode.app.query_cli import load_network, parse_mask, save_network
from predcode.inference import GradientDescent, StopRule
from predcode.models import decoder, mlp
from predcode.query import Clamp, infer

torch.set_num_threads(1)


def _decoder(seed: int = 0) -> PCGraph:
    torch.manual_seed(seed)
    return PCGraph(decoder((3, 8, 16), act="tanh").double())


def _half_mask(batch: int, d: int = 16) -> torch.Tensor:
    mask = torch.zeros(batch, d, dtype=torch.bool)
    mask[:, : d // 2] = True
    return mask


def test_masked_clamp_stays_exact_and_free_units_move():
    graph = _decoder()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 16, generator=g, dtype=torch.float64)
    mask = _half_mask(4)
    prior = torch.zeros(4, 3, dtype=torch.float64)
    start = graph.feedforward([prior])
    out = infer(graph, {"input": prior, "image": Clamp(x, mask)}, stop=100)
    image = out.values[graph.index("image")]
    assert torch.equal(image[mask], x[mask])  # exactly, not approximately
    assert (image[~mask] - start[graph.index("image")][~mask]).abs().max() > 1e-3
    for name in ("latent", "h1"):  # unclamped hidden nodes move away from the forward pass
        assert (out.values[graph.index(name)] - start[graph.index(name)]).abs().max() > 1e-3


def test_energy_decreases_monotonically():
    graph = _decoder(seed=2)
    x = torch.rand(5, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = infer(
        graph, {"input": torch.zeros(5, 3, dtype=torch.float64), "image": x}, solver=GradientDescent(0.05), stop=200
    )
    e = out.trace.energy
    assert float(e[-1]) < 0.9 * float(e[0])
    assert torch.all(e[1:] <= e[:-1] + 1e-12)


def test_linear_gaussian_completion_is_the_exact_posterior():
    """For ``x = W z + b`` with prior ``z ~ N(0, I)`` and unit-variance pixels, clamping the
    known pixels ``k`` gives ``z* = (I + W_k^T W_k)^{-1} W_k^T (x_k - b_k)`` and the missing
    pixels ``W_m z* + b_m``: the relaxed query must reach these in closed form."""
    torch.manual_seed(4)
    model = nn.Sequential(Node(name="latent"), nn.Linear(3, 8), Node(name="image")).double()
    graph = PCGraph(model)
    x = torch.randn(2, 8, dtype=torch.float64)
    mask = _half_mask(2, 8)
    out = infer(
        graph,
        {"input": torch.zeros(2, 3, dtype=torch.float64), "image": Clamp(x, mask)},
        solver=GradientDescent(0.1),
        stop=StopRule(max_steps=20000, grad_tol=1e-11),
    )
    W, b = model[1].weight.detach(), model[1].bias.detach()
    Wk, Wm = W[:4], W[4:]
    A = torch.eye(3, dtype=torch.float64) + Wk.T @ Wk
    z = torch.linalg.solve(A, ((x[:, :4] - b[:4]) @ Wk).T).T  # one row per example
    torch.testing.assert_close(out.values[graph.index("latent")], z, atol=1e-9, rtol=0)
    torch.testing.assert_close(out.values[graph.index("image")][:, 4:], z @ Wm.T + b[4:], atol=1e-9, rtol=0)


def test_read_hidden_nodes_and_clamp_a_hidden_layer():
    torch.manual_seed(5)
    model = mlp([4, 6, 5, 3], act="tanh").double()
    graph = PCGraph(model)
    hidden = [s.name for s in graph.slots if not s.is_input and s.index != graph.output]
    h1, h2 = hidden
    g = torch.Generator().manual_seed(6)
    x1, x2 = (torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(2))
    h = torch.randn(3, 5, generator=g, dtype=torch.float64)
    a = infer(graph, {"input": x1, h2: h}, stop=300)
    b = infer(graph, {"input": x2, h2: h}, stop=300)
    assert torch.equal(a.values[graph.index(h2)], h)
    assert a.values[graph.index(h1)].shape == (3, 6)  # a hidden node can be read
    # the clamped layer cuts the graph: the output depends on the clamp, not on the input
    torch.testing.assert_close(a.values[graph.output], b.values[graph.output])
    torch.testing.assert_close(
        a.values[graph.output],
        model[-2](h) if isinstance(model[-2], nn.Linear) else graph.node_prediction(graph.output, a.values),
    )
    # and the node below it relaxes towards explaining it (it moves off the forward pass)
    ff = graph.feedforward([x1])
    assert (a.values[graph.index(h1)] - ff[graph.index(h1)]).abs().max() > 1e-3


def test_errors_name_the_problem():
    graph = _decoder()
    prior = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(GraphError, match="no node named 'pixels'"):
        infer(graph, {"input": prior, "pixels": torch.zeros(2, 16, dtype=torch.float64)})
    with pytest.raises(InputError, match=r"clamp for 'image' has shape \(2, 15\)"):
        infer(graph, {"input": prior, "image": torch.zeros(2, 15, dtype=torch.float64)})
    with pytest.raises(InputError, match="half masks need a square image"):
        parse_mask("top-half", (10,))


# -- the command line ----------------------------------------------------------------
def _train_checkpoint(path):
    """A checkpoint in ``predcode train``'s format (config + runs), tiny MLP."""
    cfg = TrainConfig(sizes=[784, 16, 10], activation="tanh", normalize="[0,1]")
    torch.manual_seed(0)
    model = mlp(cfg.sizes, act=cfg.activation)
    checkpoint.save(path, {"config": cfg.to_dict(), "runs": {"il": {"model": model.state_dict()}}})
    return model


def test_cli_query_label_clamped_input_free(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.safetensors"
    _train_checkpoint(ckpt)
    out = tmp_path / "q"
    assert (
        main(
            [
                "query",
                str(ckpt),
                "--clamp",
                "output=label:3,7",
                "--read",
                "input",
                "--read",
                "output",
                "--steps",
                "30",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["batch"] == 2 and summary["energy_final"] < summary["energy_initial"]
    image = np.load(out / "input.npy")
    assert image.shape == (2, 784) and np.abs(image).max() > 0  # the free input moved off zeros
    assert (out / "input.png").stat().st_size > 0
    label = np.load(out / f"{load_network(ckpt).graph.names[-1]}.npy")
    assert label.argmax(1).tolist() == [3, 7]
    assert json.loads((out / "query.json").read_text())["read"]["input"] == [2, 784]


def test_cli_query_masked_input_and_saved_network(tmp_path, capsys):
    torch.manual_seed(1)
    model = decoder((4, 8, 784), act="tanh")
    ckpt = save_network(tmp_path / "dec.safetensors", model, "decoder", {"sizes": [4, 8, 784], "act": "tanh"}, [[4]])
    x = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "q"
    assert (
        main(
            [
                "query",
                str(ckpt),
                "--clamp",
                f"image={tmp_path / 'x.npy'}",
                "--mask",
                "image=top-half",
                "--read",
                "image",
                "--read",
                "latent",
                "--steps",
                "20",
                "--state-lr",
                "0.01",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    image = np.load(out / "image.npy").reshape(3, 28, 28)
    assert np.array_equal(image[:, :14], x[:, :14])  # the known half is exactly the cue
    assert not np.allclose(image[:, 14:], x[:, 14:])
    assert np.load(out / "latent.npy").shape == (3, 4)


def test_cli_query_errors(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.safetensors"
    _train_checkpoint(ckpt)
    assert main(["query", str(ckpt), "--clamp", "pixels=zeros", "--out", str(tmp_path / "q")]) == 2
    assert "no node named 'pixels'" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((2, 783), np.float32))
    assert main(["query", str(ckpt), "--clamp", f"input={tmp_path / 'bad.npy'}", "--out", str(tmp_path / "q")]) == 2
    assert "has shape (2, 783)" in capsys.readouterr().err
    assert main(["query", str(ckpt), "--clamp", "output=label:12", "--out", str(tmp_path / "q")]) == 2
    assert "outside [0, 9]" in capsys.readouterr().err


def test_latent_nodes_are_drawn_as_heat_maps_images_as_images():
    """A node with the data's pixel count is an image; a 64-unit latent of an MNIST
    network is not (a heat map), even though 64 is a square."""
    from predcode.app.query_cli import _is_image

    assert _is_image((784,), "mnist") and _is_image((1, 28, 28), "mnist")
    assert not _is_image((64,), "mnist") and not _is_image((10,), "mnist")
    assert _is_image((3072,), "cifar10") and not _is_image((784,), "cifar10")
    assert _is_image((64,), None)  # unknown data: any square of at least 16

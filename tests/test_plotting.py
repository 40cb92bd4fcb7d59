"""The figure style module: Trace.plot draws what the trace holds, image grids carry their
labels, curves over seeds say how many seeds, and matplotlib's settings are restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

import matplotlib  # noqa: E402

import predcode as pc  # noqa: E402
from predcode import plotting  # noqa: E402
from predcode.inference import Trace  # noqa: E402
from predcode.query import infer  # noqa: E402


def relaxed_trace() -> Trace:
    torch.manual_seed(0)
    graph = pc.PCGraph(
        nn.Sequential(
            nn.Linear(4, 8), nn.Tanh(), pc.Node(), nn.Linear(8, 8), nn.Tanh(), pc.Node(), nn.Linear(8, 3), pc.Node()
        )
    )
    x, y = torch.randn(5, 4), torch.randn(5, 3)
    return infer(graph, {0: x, len(graph.slots) - 1: y}, stop=12).trace


def test_trace_plot_draws_each_node_and_the_total(tmp_path):
    trace = relaxed_trace()
    fig = trace.plot(path=tmp_path / "trace.png")
    ax = fig.axes[0]
    lines = {line.get_label(): np.asarray(line.get_ydata()) for line in ax.get_lines()}
    e = trace.node_energies.double().numpy()
    drawn = [n for i, n in enumerate(trace.names) if np.any(e[:, i] != 0)]
    assert set(lines) == set(drawn) | {"total"}
    for i, name in enumerate(trace.names):
        if name in lines:
            np.testing.assert_allclose(lines[name], e[:, i], rtol=1e-6)
    np.testing.assert_allclose(lines["total"], e.sum(axis=1), rtol=1e-6)
    assert ax.get_xlabel() == "inference step" and "energy" in ax.get_ylabel()
    assert (tmp_path / "trace.png").stat().st_size > 5000
    assert matplotlib.rcParams["font.size"] == matplotlib.rcParamsDefault["font.size"]


def test_energy_trace_rejects_a_name_count_that_does_not_match():
    with pytest.raises(ValueError, match="3 node names"):
        plotting.energy_trace(torch.ones(4, 2), ["a", "b", "c"])


def test_band_names_the_seed_count_and_spans_one_std():
    fig, axes = plotting.figure()
    runs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    plotting.band(axes[0, 0], [0, 1], runs, "bp")
    line = axes[0, 0].get_lines()[0]
    assert line.get_label() == "backprop (mean ± std, 3 seeds)"
    np.testing.assert_allclose(line.get_ydata(), [3.0, 4.0])
    verts = axes[0, 0].collections[0].get_paths()[0].vertices[:, 1]
    assert verts.min() == pytest.approx(1.0) and verts.max() == pytest.approx(6.0)
    plotting.finish(fig)


def test_image_grid_labels_rows_and_columns(tmp_path):
    rows = [torch.rand(3, 16), torch.rand(3, 16)]
    path = plotting.image_grid(tmp_path / "g.png", rows, ["original", "recall"], ["a", "b", "c"])
    assert path.exists()
    with pytest.raises(ValueError, match="2 rows but 1 row labels"):
        plotting.image_grid(tmp_path / "h.png", rows, ["original"])


def test_value_map_writes_vectors_as_a_heat_map(tmp_path):
    path = plotting.value_map(tmp_path / "latent.png", torch.randn(8, 64), xlabel="latent unit", ylabel="example")
    from PIL import Image

    w, h = Image.open(path).size
    assert w > 400 and h > 200
    assert matplotlib.rcParams["axes.grid"] == matplotlib.rcParamsDefault["axes.grid"]


def test_binomial_interval():
    assert plotting.binomial_interval(0.9, 10000) == pytest.approx(1.96 * 0.003)


def test_trace_figure_goes_to_tensorboard(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    trace = relaxed_trace()
    writer = tb.SummaryWriter(str(tmp_path))
    plotting.trace_figure_tensorboard(writer, "relaxation", trace.node_energies, trace.names, 3)
    writer.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (image,) = events.Images("relaxation")
    assert image.step == 3 and image.width > 300 and image.height > 200


def test_tensorboard_tracker_adds_the_convergence_layout(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from predcode.app.tracking import TensorBoardTracker

    tracker = TensorBoardTracker(tmp_path)
    tracker.batch("il", 1, {"energy/total_initial": 2.0, "energy/total_final": 0.5})
    tracker.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (tag,) = [t for t in events.Tags()["tensors"] if "custom_scalars" in t]
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors(tag)[0].tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    import re

    (pattern,) = charts["energy before and after relaxation"]
    assert re.match(pattern, "il/energy/total_initial") and re.match(pattern, "il/energy/total_final")

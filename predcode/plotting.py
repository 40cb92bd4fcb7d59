"""One figure style for every figure predcode writes (experiments, benchmarks, diagnostics).

Every figure is made with :func:`figure` and written with :func:`save`, so that sizes,
fonts, colours and resolution are the same everywhere; curves over seeds are drawn with
:func:`band` (mean with a ±1 standard-deviation band, the seed count in the legend) and
points over seeds with :func:`errorbars`.  Image grids carry row and column labels
(:func:`image_grid`); vectors that are not images (latent codes, say) are drawn as a
heat map with a colour bar (:func:`value_map`).  :func:`energy_trace` draws the energy
per inference step and per node of a relaxation (what :meth:`predcode.inference.Trace.plot`
shows).

Matplotlib is imported only when a figure is made (it comes with the ``plots`` extra:
``pip install 'predcode[plots]'``); figures are built on the Agg canvas without pyplot's
global figure list, so nothing is left open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: Matplotlib settings of every predcode figure (applied while a figure is built and saved).
STYLE: Mapping[str, Any] = MappingProxyType(
    {
        "font.size": 9.0,
        "axes.titlesize": 10.0,
        "axes.labelsize": 9.0,
        "legend.fontsize": 8.0,
        "xtick.labelsize": 8.0,
        "ytick.labelsize": 8.0,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "lines.linewidth": 1.6,
        "lines.markersize": 5.0,
        "errorbar.capsize": 3.0,
        "legend.frameon": False,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "savefig.pad_inches": 0.05,
        "image.interpolation": "nearest",
    }
)

#: One colour per method, the same in every figure.
COLORS: Mapping[str, str] = MappingProxyType(
    {
        "pc": "#1f77b4",
        "il": "#1f77b4",
        "spc": "#1f77b4",
        "epc": "#9467bd",
        "bp": "#d62728",
        "il-prox": "#2ca02c",
        "epc-prox": "#8c564b",
        "prox": "#222222",
        "ae": "#ff7f0e",
    }
)

#: How each method is named in legends.
LABELS: Mapping[str, str] = MappingProxyType(
    {
        "pc": "PC (inference learning)",
        "il": "PC (inference learning)",
        "bp": "backprop",
        "il-prox": "PC, proximal IL",
        "epc": "error-based PC (ePC)",
        "spc": "state-based PC (sPC)",
        "epc-prox": "proximal IL at the equilibrium (ePC)",
        "ae": "backprop autoencoder",
    }
)


def _mpl():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib comes with the plots extra
        raise ImportError("figures need matplotlib: pip install 'predcode[plots]'") from None
    return matplotlib, Figure, FigureCanvasAgg


def figure(
    ncols: int = 1, nrows: int = 1, width: float = 4.6, height: float = 3.4, *, squeeze: bool = False, **subplot_kw
):
    """A new figure of ``nrows`` x ``ncols`` panels, each ``width`` x ``height`` inches.

    Matplotlib's settings are :data:`STYLE` from here until :func:`save` writes the figure,
    so that titles, legends and ticks added in between take the style.

    Returns ``(fig, axes)`` with ``axes`` a 2-d array ``[nrows, ncols]`` (with
    ``squeeze=True``: as :func:`matplotlib.pyplot.subplots` returns it); ``subplot_kw``
    (``sharex``, ``sharey``, ...) go to :meth:`matplotlib.figure.Figure.subplots`.
    """
    matplotlib, Figure, FigureCanvasAgg = _mpl()
    style = matplotlib.rc_context(dict(STYLE))
    style.__enter__()  # left by save(): legends and labels added meanwhile take the style
    fig = Figure(figsize=(width * ncols, height * nrows))
    fig._predcode_style = style
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def save(fig, path: str | Path) -> Path:
    """Lay out ``fig`` and write it to ``path`` (PNG at 150 dpi, or any format matplotlib
    knows from the suffix); creates the folder."""
    matplotlib, _, _ = _mpl()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(dict(STYLE)):
        fig.tight_layout()
        fig.savefig(path)
    finish(fig)
    return path


def finish(fig) -> None:
    """Restore matplotlib's own settings after a figure made with :func:`figure` is drawn
    (:func:`save` does it; call it for a figure that is shown or saved otherwise)."""
    style = getattr(fig, "_predcode_style", None)
    if style is not None:
        fig._predcode_style = None
        style.__exit__(None, None, None)


def _runs(runs: Tensor | np.ndarray | Sequence) -> np.ndarray:
    r = np.asarray(torch.as_tensor(runs, dtype=torch.float64))
    return r[None] if r.ndim == 1 else r


def mean_std(runs: Tensor | np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and sample standard deviation (``ddof=1``; zero for one run) over the first
    axis of ``runs`` ``[seeds, ...]``, ignoring NaNs, and the number of seeds."""
    r = _runs(runs)
    mean = np.nanmean(r, axis=0)
    std = np.nanstd(r, axis=0, ddof=1) if r.shape[0] > 1 else np.zeros_like(mean)
    return mean, std, r.shape[0]


def seeds_label(label: str, n: int) -> str:
    """``label`` with the seed count, e.g. ``"backprop (mean ± std, 3 seeds)"``."""
    return f"{label} (mean ± std, {n} seeds)" if n > 1 else f"{label} (1 seed)"


def band(ax, x, runs: Tensor | np.ndarray | Sequence, method: str, label: str | None = None, **kw) -> None:
    """Mean over the first axis of ``runs`` ``[seeds, len(x)]`` as a line with a ±1 std
    band, in ``method``'s colour; the legend entry names the number of seeds."""
    mean, std, n = mean_std(runs)
    color = kw.pop("color", COLORS.get(method))
    ax.plot(x, mean, color=color, label=seeds_label(label or LABELS.get(method, method), n), **kw)
    if n > 1:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def errorbars(
    ax,
    x,
    means: Sequence[float],
    stds: Sequence[float] | None,
    method: str,
    label: str | None = None,
    seeds: int | None = None,
    **kw,
) -> None:
    """Points with ±1 std error bars (``stds`` over ``seeds`` seeds) in ``method``'s colour."""
    color = kw.pop("color", COLORS.get(method))
    name = label or LABELS.get(method, method)
    ax.errorbar(
        x,
        means,
        yerr=stds,
        marker=kw.pop("marker", "o"),
        color=color,
        label=seeds_label(name, seeds) if seeds else name,
        **kw,
    )


def binomial_interval(p: float | np.ndarray, n: int, z: float = 1.96) -> np.ndarray:
    """Half-width of the normal-approximation ``z``-interval of a proportion ``p`` measured
    on ``n`` independent examples (the test-set sampling error of an accuracy)."""
    p = np.asarray(p, dtype=np.float64)
    return z * np.sqrt(p * (1 - p) / n)


def _image_tiles(batch: Tensor | np.ndarray) -> np.ndarray:
    from .images import as_images

    return as_images(batch)


def image_grid(
    path: str | Path,
    rows: Sequence[Tensor | np.ndarray],
    row_labels: Sequence[str],
    col_labels: Sequence[str] | None = None,
    *,
    low: float | None = 0.0,
    high: float | None = 1.0,
    title: str | None = None,
    cell: float = 0.62,
) -> Path:
    """Write a grid of images: one row per entry of ``rows`` (each a batch ``[N, ...]`` that
    :func:`predcode.images.as_images` reads: flat squares, ``[N, H, W]`` or ``[N, C, H, W]``),
    labelled with ``row_labels`` on the left and ``col_labels`` on top; each image is
    ``cell`` inches wide.  Grey values map ``[low, high]`` to black..white (``None``: the
    grid's own minimum / maximum)."""
    if len(rows) != len(row_labels):
        raise ValueError(f"{len(rows)} rows but {len(row_labels)} row labels")
    tiles = [_image_tiles(r) for r in rows]
    ncols = max(t.shape[0] for t in tiles)
    lo = min(float(t.min()) for t in tiles) if low is None else low
    hi = max(float(t.max()) for t in tiles) if high is None else high
    label_w = 0.065 * max(len(s) for s in row_labels) + 0.2  # inches for 8-pt labels
    fig, axes = figure(ncols, len(rows), width=cell, height=cell)
    matplotlib, _, _ = _mpl()
    with matplotlib.rc_context(dict(STYLE)):
        for r, t in enumerate(tiles):
            for c in range(ncols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for side in ax.spines.values():
                    side.set_visible(False)
                if c < t.shape[0]:
                    img = t[c]
                    cmap = "gray" if img.shape[-1] == 1 else None
                    shown = np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)
                    ax.imshow(shown[..., 0] if img.shape[-1] == 1 else shown, cmap=cmap, vmin=0, vmax=1)
                if c == 0:
                    ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8, labelpad=4)
                if r == 0 and col_labels is not None and c < len(col_labels):
                    ax.set_title(col_labels[c], fontsize=8)
        if title:
            fig.suptitle(title, fontsize=STYLE["axes.titlesize"])
        fig.set_size_inches(cell * ncols + label_w, cell * len(rows) + (0.45 if title else 0.2))
    return save(fig, path)


def value_map(
    path: str | Path,
    values: Tensor | np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    colorbar: str = "value",
) -> Path:
    """Write a ``[rows, dims]`` array of values that are not images (latent codes, hidden
    states) as a heat map: one row per example, one column per dimension, a diverging
    colour scale symmetric about zero with a labelled colour bar."""
    v = np.asarray(torch.as_tensor(values).detach().cpu().double())
    if v.ndim == 1:
        v = v[None]
    v = v.reshape(v.shape[0], -1)
    scale = float(np.nanmax(np.abs(v))) or 1.0
    width = min(max(2.5 + 0.06 * v.shape[1], 4.0), 10.0)
    height = min(max(1.2 + 0.22 * v.shape[0], 2.2), 8.0)
    fig, axes = figure(width=width, height=height)
    ax = axes[0, 0]
    im = ax.imshow(v, aspect="auto", cmap="RdBu_r", vmin=-scale, vmax=scale)
    ax.grid(False)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.set_yticks(range(v.shape[0]))
    fig.colorbar(im, ax=ax, label=colorbar)
    return save(fig, path)


def energy_trace(
    node_energies: Tensor | np.ndarray,
    names: Sequence[str],
    ax=None,
    *,
    total: bool = True,
    log: bool | None = None,
    title: str | None = None,
):
    """Draw the energy of each node against the inference step, and their sum.

    ``node_energies[t, i]`` is node ``i``'s (batch-mean) energy before step ``t``
    (:class:`predcode.inference.Trace`); nodes whose energy is zero at every step (inputs,
    clamped nodes without a prediction) are left out.  A log scale is used when every
    drawn value is positive and they span more than a factor of 20 (``log`` forces it on
    or off).  Returns the figure (a new one when ``ax`` is not given).
    """
    e = np.asarray(torch.as_tensor(node_energies).detach().cpu().double())
    if e.ndim != 2 or e.shape[1] != len(names):
        raise ValueError(f"node_energies of shape {tuple(e.shape)} does not match {len(names)} node names")
    if ax is None:
        fig, axes = figure()
        ax = axes[0, 0]
    else:
        fig = ax.figure
    steps = np.arange(e.shape[0])
    drawn = []
    for i, name in enumerate(names):
        if np.any(e[:, i] != 0):
            ax.plot(steps, e[:, i], label=name, lw=1.2)
            drawn.append(e[:, i])
    if total and len(drawn) != 1:
        ax.plot(steps, e.sum(axis=1), color="k", lw=2.0, label="total")
        drawn.append(e.sum(axis=1))
    values = np.concatenate(drawn) if drawn else np.zeros(1)
    finite = values[np.isfinite(values)]
    if log is None:
        log = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 20)
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="inference step", ylabel="energy (batch mean)")
    ax.set_title(title or f"relaxation: {e.shape[0] - 1} steps")
    if drawn:
        ax.legend(ncol=1 if len(drawn) <= 6 else 2)
    finish(fig)
    return fig


def trace_figure_tensorboard(writer, tag: str, node_energies: Tensor, names: Sequence[str], step: int) -> None:
    """Add the :func:`energy_trace` figure of one relaxation to a TensorBoard
    ``SummaryWriter`` under ``tag`` at global step ``step`` (the IMAGES tab)."""
    fig = energy_trace(node_energies, names, title=f"relaxation at step {step}")
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    writer.add_image(tag, rgba[..., :3], step, dataformats="HWC")


def tensorboard_convergence_layout(writer) -> None:
    """Add a "convergence" section to TensorBoard's CUSTOM SCALARS tab of ``writer``: per
    training step, the total energy before and after each run's relaxation in one chart,
    the final energy of every node in another, and the inference steps taken (the scalars
    :class:`predcode.app.tracking.TensorBoardTracker` writes)."""
    writer.add_custom_scalars(
        {
            "convergence": {
                "energy before and after relaxation": ["Multiline", [r".*/energy/total_(initial|final)$"]],
                "final energy per node": ["Multiline", [r".*/energy/node/.*"]],
                "inference steps and final state-gradient norm": [
                    "Multiline",
                    [r".*/inference/(steps|grad_norm_final)$"],
                ],
            }
        }
    )

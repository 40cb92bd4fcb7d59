"""Image grids as PNG files (for queries, generation and associative memory).

``grid`` tiles a batch of images into one array; ``save_grid`` writes it as an 8-bit
greyscale (or RGB) PNG with Pillow.  Flat rows of a square number of pixels (784 for
MNIST) are read as square greyscale images; ``[N, C, H, W]`` batches keep their shape.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .exceptions import InputError


def as_images(batch: Tensor | np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` float array from ``[N, D]`` (``D`` a square, or 3 squares for RGB),
    ``[N, H, W]`` or ``[N, C, H, W]``; raises :class:`InputError` for other shapes."""
    a = np.asarray(torch.as_tensor(batch).detach().cpu().double())
    if a.ndim == 1:
        a = a[None]
    if a.ndim == 2:
        side = math.isqrt(a.shape[1])
        rgb = math.isqrt(a.shape[1] // 3) if a.shape[1] % 3 == 0 else 0
        if side * side == a.shape[1]:
            return a.reshape(a.shape[0], side, side, 1)
        if rgb and 3 * rgb * rgb == a.shape[1]:
            return a.reshape(a.shape[0], 3, rgb, rgb).transpose(0, 2, 3, 1)
        raise InputError(f"cannot show rows of {a.shape[1]} values as images (not a square)")
    if a.ndim == 3:
        return a[..., None]
    if a.ndim == 4 and a.shape[1] in (1, 3):
        return a.transpose(0, 2, 3, 1)
    raise InputError(f"cannot show a tensor of shape {tuple(a.shape)} as images")


def grid(
    batch: Tensor | np.ndarray,
    ncols: int | None = None,
    low: float | None = 0.0,
    high: float | None = 1.0,
    pad: int = 1,
) -> np.ndarray:
    """Tile ``batch`` row by row into one ``[H', W', C]`` array in [0, 1].

    Values are mapped linearly from ``[low, high]`` to [0, 1] and clipped; ``None`` takes
    the batch's own minimum / maximum.  Padding between tiles is mid-grey.
    """
    imgs = as_images(batch)
    n, h, w, c = imgs.shape
    lo = float(imgs.min()) if low is None else low
    hi = float(imgs.max()) if high is None else high
    imgs = np.clip((imgs - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 0.5)
    for k in range(n):
        r, q = divmod(k, ncols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = imgs[k]
    return out


def save_grid(
    path: str | Path,
    batch: Tensor | np.ndarray,
    ncols: int | None = None,
    low: float | None = 0.0,
    high: float | None = 1.0,
    scale: int = 4,
) -> Path:
    """Write :func:`grid` of ``batch`` as a PNG (each pixel ``scale`` x ``scale``: a 28x28
    digit is 112 pixels wide, a size to look at).  For labelled grids (row and column
    titles) use :func:`predcode.plotting.image_grid`."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with the plots extra
        raise ImportError("writing PNG images needs pillow: pip install 'predcode[plots]'") from None

    g = grid(batch, ncols, low, high)
    g = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1)
    pixels = np.round(g * 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
    return path

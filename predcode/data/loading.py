"""Decoded datasets as tensors, DataLoaders, and class/stratified subsets."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from .cache import maybe_gunzip, verify_sha256
from .cifar import read_cifar_split
from .exceptions import IDXFormatError
from .fetcher import locate
from .idx import parse_idx_bytes
from .registry import DatasetSpec, get_spec

NORMALIZATIONS = ("[-1,1]", "[0,1]", None)


def load(
    name: str,
    split: str = "train",
    *,
    normalize: str | None = "[-1,1]",
    flatten: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split of a cached dataset as tensors.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        split: ``"train"`` (60k for (Fashion-)MNIST, 50k for CIFAR-10) or ``"test"`` (10k).
        normalize: ``"[-1,1]"`` (x/127.5 - 1), ``"[0,1]"`` (x/255) or None / ``"none"`` (raw 0..255 values).
        flatten: images as ``[N, C*H*W]`` (784 for MNIST) instead of ``[N, C, H, W]``.
        dtype: dtype of the images.
        device: where to put both tensors.

    Returns:
        ``(images, labels)``; labels are int64 class indices.

    Raises:
        DatasetNotFoundError: files missing (the message says ``predcode data fetch NAME``).
        ChecksumMismatchError: a cached file does not match its recorded sha256.

    Decoding is cached in memory per file set, so repeated calls only redo the dtype conversion.
    """
    if isinstance(normalize, str) and normalize.lower() == "none":  # TOML configs have no null
        normalize = None
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    spec = get_spec(name)
    if spec.kind == "text":
        raise ValueError(
            f"{spec.name} is a text corpus, not images: read it with predcode.data.load_text({spec.name!r}, split)"
        )
    if normalize is not None and not dtype.is_floating_point:
        raise ValueError(f"normalize={normalize!r} needs a floating dtype, got {dtype}")
    raw_images, raw_labels = _raw_split(spec, split)
    images = raw_images.to(device=device)
    images = images.reshape(len(images), -1) if flatten else images
    shares_cache = images.untyped_storage().data_ptr() == raw_images.untyped_storage().data_ptr()
    images = images.to(dtype=dtype, copy=shares_cache)  # never hand out the cached tensor itself
    if normalize == "[0,1]":
        images = images.div_(255.0)
    elif normalize == "[-1,1]":
        images = images.div_(127.5).sub_(1.0)
    return images, raw_labels.to(device=device, copy=True)


def loaders(
    name: str,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    **load_kwargs,
) -> tuple[DataLoader, DataLoader]:
    """Train and test :class:`~torch.utils.data.DataLoader` over :class:`TensorDataset` s.

    The train loader is shuffled (when ``shuffle``) by a ``torch.Generator`` seeded with
    ``seed``: each epoch gets a new order, and the sequence of epoch orders is the same
    for the same seed (for loaders built by separate calls too). The test loader
    is never shuffled or truncated. ``drop_last`` applies to the train loader.
    Batches are sliced from the tensors in one step (a batch sampler, no per-sample
    collation), so iterating is cheap. ``load_kwargs`` go to :func:`load`.
    """
    train = TensorDataset(*load(name, "train", **load_kwargs))
    test = TensorDataset(*load(name, "test", **load_kwargs))
    generator = torch.Generator().manual_seed(seed)
    order = RandomSampler(train, generator=generator) if shuffle else SequentialSampler(train)
    return (
        _batched_loader(train, BatchSampler(order, batch_size, drop_last)),
        _batched_loader(test, BatchSampler(SequentialSampler(test), batch_size, False)),
    )


def _batched_loader(dataset: TensorDataset, batches: BatchSampler) -> DataLoader:
    """A DataLoader that indexes ``dataset`` with whole index lists (``batch_size=None``)."""
    return DataLoader(dataset, sampler=batches, batch_size=None)


def subset(
    images: torch.Tensor,
    labels: torch.Tensor,
    n: int | None = None,
    seed: int = 0,
    classes: list[int] | tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible, class-balanced subset.

    Args:
        n: total size; each selected class gets ``n // k`` examples and ``n % k`` randomly
            chosen classes get one more. None: every example of the selected classes.
        seed: seed for the choice.
        classes: labels to keep (default: all labels present). Labels are not renumbered.

    Returns:
        ``(images, labels)`` of the chosen examples, in their original order.
    """
    labels_np = labels.detach().cpu().numpy()
    chosen_classes = sorted(set(labels_np.tolist()) if classes is None else {int(c) for c in classes})
    pools = {c: np.flatnonzero(labels_np == c) for c in chosen_classes}
    if n is None:
        keep = np.concatenate([pools[c] for c in chosen_classes]) if pools else np.zeros(0, np.int64)
    else:
        keep = _stratified(pools, chosen_classes, n, np.random.default_rng(seed))
    index = torch.as_tensor(np.sort(keep), dtype=torch.long, device=labels.device)
    return images[index.to(images.device)], labels[index]


def _stratified(pools: dict[int, np.ndarray], classes: list[int], n: int, rng: np.random.Generator) -> np.ndarray:
    if not classes:
        raise ValueError("subset: no classes to choose from")
    per_class = np.full(len(classes), n // len(classes))
    per_class[rng.choice(len(classes), size=n % len(classes), replace=False)] += 1
    picks = []
    for cls, count in zip(classes, per_class, strict=True):
        if count > len(pools[cls]):
            raise ValueError(f"subset: class {cls} has {len(pools[cls])} examples, {count} requested")
        picks.append(rng.choice(pools[cls], size=count, replace=False))
    return np.concatenate(picks)


def clear_cache() -> None:
    """Drop the in-memory cache of decoded datasets."""
    _decode.cache_clear()


# --------------------------------------------------------------------------- decoding


def _raw_split(spec: DatasetSpec, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[N, C, H, W]`` and int64 labels, from the in-memory cache when possible."""
    if split not in spec.splits:
        raise ValueError(f"unknown split {split!r} for {spec.name}; choose from {sorted(spec.splits)}")
    paths = locate(spec, spec.splits[split])
    files = [paths[f] for f in spec.splits[split]]
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _decode(spec.name, split, stamp)


@functools.lru_cache(maxsize=8)
def _decode(name: str, split: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, verify and decode one split. ``stamp`` (paths, mtimes, sizes) keys the cache."""
    spec = get_spec(name)
    paths = [Path(entry[0]) for entry in stamp]
    if spec.kind == "cifar10":
        images, labels = read_cifar_split(paths)
    else:
        images, labels = _decode_idx_pair(spec, paths)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _decode_idx_pair(spec: DatasetSpec, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for path in paths:
        content = maybe_gunzip(path.read_bytes(), label=str(path))
        filename = path.name.removesuffix(".gz")
        hint = f"The cached file is corrupt; fetch it again with:  predcode data fetch {spec.name}"
        verify_sha256(content, spec.checksums.get(filename), label=str(path), hint=hint)
        arrays.append(parse_idx_bytes(content, label=str(path)))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IDXFormatError(f"{paths[0]}: images {images.shape} and labels {labels.shape} do not match")
    return images[:, None, :, :], labels

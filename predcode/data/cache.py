"""Where datasets live on disk, checksums, and atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zlib
from pathlib import Path

from .errors import ChecksumMismatchError, IDXFormatError

#: Environment variable that overrides the data directory.
DATA_ENV_VAR = "PREDCODE_DATA"

GZIP_MAGIC = b"\x1f\x8b"


def data_dir() -> Path:
    """Root directory for datasets: ``$PREDCODE_DATA`` or ``~/.cache/predcode/data``.

    Read on every call (not cached), so changing the variable takes effect at once.
    The directory is not created here.
    """
    override = os.environ.get(DATA_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "predcode" / "data"


def dataset_dir(name: str) -> Path:
    """Directory holding one dataset's files: ``data_dir() / name``."""
    return data_dir() / name


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def maybe_gunzip(data: bytes, *, label: str = "<bytes>") -> bytes:
    """Decompress ``data`` if it is a gzip stream (detected by magic bytes), else return it as is.

    Raises:
        IDXFormatError: a corrupt or truncated gzip stream (the message names ``label``).
    """
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise IDXFormatError(f"{label}: corrupt or truncated gzip stream ({exc})") from exc


def verify_sha256(data: bytes, expected: str | None, *, label: str, hint: str = "") -> None:
    """Raise :class:`ChecksumMismatchError` if ``sha256(data) != expected`` (no-op when ``expected`` is None).

    The message names ``label`` (the file), both hashes, and ``hint`` if given.
    """
    if expected is None:
        return
    actual = sha256_bytes(data)
    if actual != expected:
        raise ChecksumMismatchError(
            f"checksum mismatch for {label}:\n"
            f"  expected sha256 {expected}\n"
            f"  actual   sha256 {actual}" + (f"\n{hint}" if hint else "")
        )


def cached_file(directory: Path, filename: str) -> Path | None:
    """The cached copy of IDX file ``filename`` in ``directory``: ``filename.gz`` or plain ``filename``."""
    for candidate in (directory / f"{filename}.gz", directory / filename):
        if candidate.is_file():
            return candidate
    return None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``.

    Readers never see a half-written file, even if the process dies mid-write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; cached data is not secret
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise

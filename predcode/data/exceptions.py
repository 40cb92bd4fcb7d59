"""Exception types raised by :mod:`predcode.data`."""

from __future__ import annotations

from ..exceptions import PredcodeError


class DatasetNotFoundError(PredcodeError, FileNotFoundError):
    """A dataset's files are not in the data directory.

    The message always says how to get them (for downloadable datasets:
    ``predcode data fetch NAME``).
    """


class UnknownDatasetError(PredcodeError, ValueError):
    """The dataset name is not one this package knows; the message lists the known ones."""


class ChecksumMismatchError(PredcodeError, ValueError):
    """A file's sha256 differs from the recorded one; the message names the file and both hashes."""


class IDXFormatError(PredcodeError, ValueError):
    """A file is not a well-formed IDX file (bad magic number, truncated, trailing bytes...)."""


class DatasetFetchError(PredcodeError, RuntimeError):
    """Every source for a dataset failed; the message lists each source and why."""


class SourceUnavailable(Exception):
    """One download source cannot deliver the files (offline, tool missing, HTTP error...).

    Internal to the fetcher, which then tries the next source.
    """
